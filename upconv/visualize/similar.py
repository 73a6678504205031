"""Similarity search in feature space: "does this input resemble images the network was trained on?"

Index a data set's features at one layer, return each query's top-k nearest indexed images by cosine
similarity or Euclidean distance, and ``nn_ratio``: the query's nearest-neighbour distance divided by the
median nearest-neighbour distance *within* the index (a typical training image's distance to its
closest other training image). ``nn_ratio`` ≈ 1 looks like training data, ≫ 1 unlike anything indexed,
0 an exact copy (for cosine, distance = 1 - similarity).

Distances are exact to float32 rounding of the *difference*, so an exact copy is at distance 0 and a
near-duplicate's small distance keeps its digits. The expanded form ‖q‖² + ‖f‖² − 2q·f (what float32
``torch.cdist`` switches to beyond 25 rows) cancels catastrophically there: it put an exact copy at
≈ 0.01. Candidates are therefore ranked with that form in float64, one block of the index at a time
(memory stays bounded), and the k winners' distances are recomputed directly as ‖q − f‖. Cosine distance
uses the same path: for unit vectors, 1 − cos = ‖q̂ − f̂‖² / 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from upconv.core.runtime import progress
from upconv.nets.encoder import Encoder

METRICS = ("cosine", "euclidean")
_BLOCK_ELEMENTS = 1 << 24  # float64 elements of one index block (128 MB) converted at a time


@dataclass
class SearchResult:
    indices: Tensor  # (Q, k) positions in the index, nearest first
    scores: Tensor  # (Q, k) cosine similarity (higher is closer) or Euclidean distance (lower is closer)
    nn_ratio: Tensor  # (Q,) nearest distance / the index's median nearest-neighbour distance


def _batches(data: Tensor | Iterable, batch_size: int) -> Iterable[Tensor]:
    if isinstance(data, Tensor):
        yield from data.split(batch_size)
    else:
        for item in data:  # a DataLoader of images or of (images, labels)
            yield item[0] if isinstance(item, (tuple, list)) else item


def nearest(queries: Tensor, index: Tensor, k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact Euclidean k-nearest rows of ``index`` (N, D) for each row of ``queries`` (Q, D), nearest first:
    distances (Q, k) in float64 and positions (Q, k). ``exclude`` (Q,): a position each query must skip
    (itself, when the queries are index rows)."""
    q = queries.double()  # (Q, D)
    q_sq = q.pow(2).sum(1, keepdim=True)  # (Q, 1)
    block = max(1, _BLOCK_ELEMENTS // max(1, index.shape[1]))
    best_d = best_i = None
    for start in range(0, len(index), block):
        f = index[start : start + block].double()  # (b, D)
        d2 = q_sq + f.pow(2).sum(1)[None] - 2 * q @ f.T  # (Q, b): ranking only, float64 keeps it sound
        if exclude is not None:
            own = exclude - start
            hit = (own >= 0) & (own < len(f))
            d2[hit.nonzero().flatten(), own[hit]] = float("inf")
        pos = torch.arange(start, start + len(f), device=d2.device).expand_as(d2)
        if best_d is not None:
            d2, pos = torch.cat([best_d, d2], 1), torch.cat([best_i, pos], 1)
        best_d, order = d2.topk(min(k, d2.shape[1]), dim=1, largest=False)
        best_i = pos.gather(1, order)
    # Exact distances of the winners by the direct difference, then their final order.
    d = (q[:, None] - index[best_i].double()).norm(dim=2)  # (Q, k)
    d, order = d.sort(dim=1, stable=True)
    return d, best_i.gather(1, order)


class FeatureIndex:
    """Features (N, D) of indexed images at ``layer``, flattened and kept on the encoder's device."""

    def __init__(self, encoder: Encoder, layer: str, metric: str = "cosine", reference: int = 1000) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")
        self.encoder, self.layer, self.metric, self.reference = encoder, encoder.resolve(layer)[0], metric, reference
        self.features = torch.empty(0, encoder.layer(self.layer).numel, device=encoder.device)
        self._typical: Tensor | None = None

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Features (B, D) of images (B, C, H, W) in [0, 1]; unit length for the cosine metric."""
        self.encoder.check_images(images, finite=True)
        f = self.encoder(images.to(self.encoder.device), [self.layer])[self.layer].flatten(1).float()  # (B, D)
        return torch.nn.functional.normalize(f, dim=1) if self.metric == "cosine" else f

    def add(self, data: Tensor | Iterable, batch_size: int = 256) -> FeatureIndex:
        """Append images: a tensor (N, C, H, W) in [0, 1] or an iterable of batches (a DataLoader)."""
        if isinstance(data, Tensor):
            self.encoder.check_images(data, finite=True)  # up front, so errors give positions in ``data``
            total = -(-len(data) // batch_size)
        else:
            total = len(data) if hasattr(data, "__len__") else None
        feats = [self.embed(b) for b in progress(_batches(data, batch_size), "indexing", total, unit="batch")]
        self.features = torch.cat([self.features, *feats])
        self._typical = None
        return self

    def _nearest(self, q: Tensor, k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Distances (float64; cosine: 1 − similarity) and positions of the k nearest indexed features."""
        d, i = nearest(q, self.features, k, exclude)
        return (d.pow(2) / 2 if self.metric == "cosine" else d), i

    def typical_distance(self) -> Tensor:
        """Median distance from an indexed image to its nearest *other* indexed image (up to
        ``reference`` images, evenly spaced, stand in for the whole index)."""
        if self._typical is None:
            n = len(self.features)
            if n < 2:
                raise ValueError("the index needs at least 2 images to know a typical neighbour distance")
            pick = torch.linspace(0, n - 1, min(n, self.reference)).round().long().unique().to(self.features.device)
            d = torch.cat([self._nearest(self.features[c], 1, exclude=c)[0] for c in pick.split(256)])  # (R, 1)
            self._typical = d[:, 0].median()
        return self._typical

    @torch.no_grad()
    def search(self, queries: Tensor, k: int = 5, batch_size: int = 256) -> SearchResult:
        """Top-k nearest indexed images for each query image (Q, C, H, W)."""
        n = len(self.features)
        if not 1 <= k <= n:
            raise ValueError(f"k must be between 1 and the index size {n}; got {k}")
        self.encoder.check_images(queries, finite=True)
        idx, dist = [], []
        for qb in queries.split(batch_size):
            d, i = self._nearest(self.embed(qb), k)  # (q, k)
            idx.append(i)
            dist.append(d)
        d, i = torch.cat(dist), torch.cat(idx)
        scores = (1 - d if self.metric == "cosine" else d).float()
        ratio = d[:, 0] / self.typical_distance().clamp_min(1e-12)
        return SearchResult(i, scores, ratio.float())

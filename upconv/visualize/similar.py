"""Similarity search in feature space: "does this input resemble images the network was trained on?"

Index a data set's features at one layer, return each query's top-k nearest indexed images by cosine
similarity or Euclidean distance, and ``nn_ratio``: the query's nearest-neighbour distance divided by the
median nearest-neighbour distance *within* the index (a typical training image's distance to its
closest other training image). ``nn_ratio`` ≈ 1 looks like training data, ≫ 1 unlike anything indexed,
0 an exact copy (for cosine, distance = 1 - similarity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

from ..encoders import Encoder

METRICS = ("cosine", "euclidean")


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


class FeatureIndex:
    """Features (N, D) of indexed images at ``layer``, flattened and kept on the encoder's device."""

    def __init__(self, encoder: Encoder, layer: str, metric: str = "cosine", reference: int = 1000) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")
        self.encoder, self.layer, self.metric, self.reference = encoder, encoder.resolve(layer)[0], metric, reference
        self.features = torch.empty(0, encoder.layer(self.layer).numel, device=encoder.mean.device)
        self._typical: Tensor | None = None

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        f = self.encoder(images.to(self.encoder.mean.device), [self.layer])[self.layer].flatten(1).float()  # (B, D)
        return torch.nn.functional.normalize(f, dim=1) if self.metric == "cosine" else f

    def add(self, data: Tensor | Iterable, batch_size: int = 256) -> "FeatureIndex":
        """Append images: a tensor (N, C, H, W) in [0, 1] or an iterable of batches (a DataLoader)."""
        feats = [self.embed(b) for b in _batches(data, batch_size)]
        self.features = torch.cat([self.features, *feats])
        self._typical = None
        return self

    def _distances(self, q: Tensor) -> Tensor:
        if self.metric == "cosine":
            return 1 - q @ self.features.T  # (Q, N)
        return torch.cdist(q, self.features)  # (Q, N)

    def typical_distance(self) -> Tensor:
        """Median distance from an indexed image to its nearest *other* indexed image (up to
        ``reference`` images, evenly spaced, stand in for the whole index)."""
        if self._typical is None:
            n = len(self.features)
            if n < 2:
                raise ValueError("the index needs at least 2 images to know a typical neighbour distance")
            pick = torch.linspace(0, n - 1, min(n, self.reference)).round().long().unique()
            d = torch.cat([self._distances(self.features[c]) for c in pick.split(256)])  # (R, N)
            d[torch.arange(len(pick)), pick.to(d.device)] = float("inf")  # not itself
            self._typical = d.amin(1).median()
        return self._typical

    @torch.no_grad()
    def search(self, queries: Tensor, k: int = 5, batch_size: int = 256) -> SearchResult:
        """Top-k nearest indexed images for each query image (Q, C, H, W)."""
        n = len(self.features)
        if not 1 <= k <= n:
            raise ValueError(f"k must be between 1 and the index size {n}; got {k}")
        idx, dist = [], []
        for qb in queries.split(batch_size):
            d, i = self._distances(self.embed(qb)).topk(k, dim=1, largest=False)  # (q, k)
            idx.append(i)
            dist.append(d)
        d, i = torch.cat(dist), torch.cat(idx)
        scores = 1 - d if self.metric == "cosine" else d
        ratio = d[:, 0].clamp_min(0) / self.typical_distance().clamp_min(1e-12)
        return SearchResult(i, scores, ratio)

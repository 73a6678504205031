"""Re-identification: can a reconstruction pick its own original out of a line-up?

For reconstruction i, the line-up is the true original x_i plus N − 1 other originals drawn at random
(seeded) from the evaluated set; a hit is when x_i is the line-up member nearest to x̂_i in pixel-space
Euclidean distance (images in [0, 1]). Ties count as misses. The rate is the share of hits; a
reconstruction that carries no information about its original scores the chance rate 1/N.
"""

from __future__ import annotations

import torch
from torch import Tensor

METRIC = "pixel-space Euclidean (L2) distance, images in [0, 1]"


def check_candidates(n_candidates: int, n_images: int) -> None:
    """A line-up needs the original plus at least one other, all drawn from the evaluated images."""
    if int(n_candidates) != n_candidates or n_candidates < 2:
        raise ValueError(
            f"re-identification needs at least 2 candidates (the original and one other); "
            f"got n_candidates={n_candidates}"
        )
    if n_candidates > n_images:
        raise ValueError(
            f"re-identification with {n_candidates} candidates needs at least {n_candidates} evaluated "
            f"images; got {n_images}. Evaluate more images or lower n_candidates"
        )


def reid_hits(recon: Tensor, originals: Tensor, n_candidates: int, seed: int = 0) -> Tensor:
    """Per-image hit (1.0) or miss (0.0), shape (B,), for recon[i] against a line-up containing originals[i]."""
    if recon.shape != originals.shape or recon.dim() < 2:
        raise ValueError(
            f"reconstructions and originals must be batches of the same shape; got "
            f"{tuple(recon.shape)} and {tuple(originals.shape)}"
        )
    n = originals.shape[0]
    check_candidates(n_candidates, n)
    g = torch.Generator().manual_seed(seed)
    # Others for image i: a random draw from the n − 1 other indices (shift past i to exclude it).
    scores = torch.rand(n, n - 1, generator=g)  # (B, n−1)
    others = scores.argsort(1)[:, : n_candidates - 1]  # (B, N−1) in 0..n−2
    others = others + (others >= torch.arange(n)[:, None]).long()  # skip index i itself
    lineup = torch.cat([torch.arange(n)[:, None], others], 1)  # (B, N); column 0 is the true original
    flat_o = originals.flatten(1).double().cpu()
    flat_r = recon.flatten(1).double().cpu()
    d = (flat_o[lineup] - flat_r[:, None]).pow(2).sum(-1)  # (B, N)
    true = d[:, 0]
    return (d[:, 1:].min(1).values > true).double()  # strict: a tie is a miss

"""The one check for unit indices (classes, channels): "index in 0..n-1", given as a list or one per image.

Objectives, the visualisations and the commands all index classes or channels; they validate through
``check_indices`` so every such error reads the same and names the valid range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_indices(
    index: int | Sequence[int] | Tensor, size: int, what: str, where: str, batch: int | None = None
) -> Tensor:
    """Indices into ``size`` units as a long tensor (on ``index``'s device when it is a tensor).

    With ``batch``: one index per image of a batch of ``batch``, a single index serving every image; without:
    any non-empty list. ``what`` names the unit ("class", "channel"), ``where`` the thing indexed
    ("layer conv3", "alexnet_cifar").
    """
    idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)  # (K,)
    if batch is not None and idx.numel() == 1:
        idx = idx.expand(batch)
    if idx.numel() == 0 or (batch is not None and idx.numel() != batch):
        want = f"one {what} index for all images or one per image" if batch is not None else "at least one"
        found = f"a batch of {batch} images" if batch is not None else where
        raise ValueError(
            f"got {idx.numel()} {what} indices for {found}; give {want} "
            f"(valid {what} indices for {where} are 0..{size - 1})"
        )
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.numel():
        raise ValueError(
            f"{what} index {sorted(set(bad.tolist()))} out of range for {where}: valid {what} indices are 0..{size - 1}"
        )
    return idx

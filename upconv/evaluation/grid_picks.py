"""Which images a report's figure shows: a seeded sample spread over the classes, chosen while the data
streams past in batches (the first images of a split are often all one class: CIFAR-10's test folder starts
with 1,000 airplanes)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class GridPicks:
    """A seeded choice of ``n`` images for the figure, spread over the classes, made batch by batch.

    Each image draws a random key; within its class it gets a rank (0 for the class's smallest key). The
    grid shows the images with the smallest (rank, key): one per class first, then a second per class…
    Later batches can only push an image back, so one that drops out never returns, and only ``n``
    images (with their reconstructions) are ever held.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.generator = n, torch.Generator().manual_seed(seed)
        self.kept: list[dict[str, Any]] = []  # {"label", "key", "image", "recon": {(method, layer): image}}

    def admit(self, images: Tensor, labels: Tensor | None) -> list[int]:
        """Take in a batch (B, C, H, W); return the batch positions now in the grid (store their recons)."""
        keys = torch.rand(len(images), generator=self.generator).tolist()
        ys = labels.tolist() if isinstance(labels, Tensor) and labels.dim() == 1 else [0] * len(images)
        new = [{"label": y, "key": k, "pos": i, "recon": {}} for i, (y, k) in enumerate(zip(ys, keys))]
        pool = self.kept + new
        rank: dict[int, int] = {}
        for item in sorted(pool, key=lambda it: it["key"]):
            item["rank"] = rank[item["label"]] = rank.get(item["label"], -1) + 1
        self.kept = sorted(pool, key=lambda it: (it["rank"], it["key"]))[: self.n]
        picked = [it for it in self.kept if "image" not in it]
        for it in picked:
            it["image"] = images[it["pos"]].cpu()
        return [it["pos"] for it in picked]

    def store(self, key: tuple[str, str], recon: Tensor, positions: list[int]) -> None:
        """Keep the reconstructions (B, C, H, W) of this batch's admitted images."""
        for it in self.kept:
            if "pos" in it and it["pos"] in positions:
                it["recon"][key] = recon[it["pos"]].cpu()

    def end_batch(self) -> None:
        for it in self.kept:
            it.pop("pos", None)

    def result(self) -> tuple[Tensor, dict[tuple[str, str], Tensor]]:
        """Originals (N, C, H, W) ordered by (rank, class) and their reconstructions by (method, layer)."""
        items = sorted(self.kept, key=lambda it: (it["rank"], it["label"]))
        grid = {k: torch.stack([it["recon"][k] for it in items]) for k in items[0]["recon"]} if items else {}
        return torch.stack([it["image"] for it in items]), grid

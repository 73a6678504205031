"""The three image sets of a privacy run, drawn from one ``upconv.data.source.ImageSource``: the victim's
training images, the attacker's own images of the same distribution, and the held-out images attacked."""

from __future__ import annotations

from torch import Tensor

from upconv.data.source import ImageSource

Data = tuple[Tensor, Tensor]  # images (N, C, H, W), uint8 or [0, 1] float, labels (N,): every image set of a run


def load_splits(
    data: str,
    root: str | None,
    n_victim: int,
    n_attacker: int,
    n_eval: int,
    seed: int = 0,
    embedded_per_class: int = 250,
    num_workers: int = 0,
) -> tuple[Data, Data, Data]:
    """Disjoint victim / attacker training images (a seeded random subset of the training split, the victim's
    first) and ``n_eval`` held-out images, all uint8 (N, C, H, W) with labels."""
    for name, v in (("n_victim", n_victim), ("n_attacker", n_attacker), ("n_eval", n_eval)):
        if v < 1:
            raise ValueError(f"{name} must be a positive number of images; got {v}")
    d = ImageSource(
        source=data,
        root=root,
        image_size=32,
        limit_train=n_victim + n_attacker,
        limit_val=n_eval,
        in_memory=True,
        num_workers=num_workers,
        embedded_per_class=embedded_per_class,
        seed=seed,
    )
    (x, y), (xv, yv) = d.tensors("train"), d.tensors("val")
    if len(x) < n_victim + n_attacker or len(xv) < n_eval:
        raise ValueError(
            f"asked for {n_victim} + {n_attacker} training and {n_eval} held-out images; the data has "
            f"{len(x)} and {len(xv)}"
        )
    return (x[:n_victim], y[:n_victim]), (x[n_victim:], y[n_victim:]), (xv, yv)  # limits drew at random

"""``upconv privacy``: the command-line entry point (jsonargparse builds the parser from this signature)."""

from __future__ import annotations

import os
from typing import Any, Literal, Optional, Union

from torch import Tensor

from upconv.methods.mahendran_vedaldi import MV_STEPS


def load_splits(data: str, root: Optional[str], n_victim: int, n_attacker: int, n_eval: int,
                seed: int = 0, embedded_per_class: int = 250,
                num_workers: int = 0) -> tuple[tuple[Tensor, Tensor], ...]:
    """Disjoint victim / attacker training images (a seeded random subset of the training split, the victim's
    first) and ``n_eval`` held-out images, all uint8 (N, C, H, W) with labels."""
    from upconv.data.source import ImageSource

    for name, v in (("n_victim", n_victim), ("n_attacker", n_attacker), ("n_eval", n_eval)):
        if v < 1:
            raise ValueError(f"{name} must be a positive number of images; got {v}")
    d = ImageSource(source=data, root=root, image_size=32, limit_train=n_victim + n_attacker, limit_val=n_eval,
                    in_memory=True, num_workers=num_workers, embedded_per_class=embedded_per_class, seed=seed)
    (x, y), (xv, yv) = d.tensors("train"), d.tensors("val")
    if len(x) < n_victim + n_attacker or len(xv) < n_eval:
        raise ValueError(f"asked for {n_victim} + {n_attacker} training and {n_eval} held-out images; the data has "
                         f"{len(x)} and {len(xv)}")
    return (x[:n_victim], y[:n_victim]), (x[n_victim:], y[n_victim:]), (xv, yv)  # limits drew at random


def privacy(
    encoder: str = "he2019_cifar",
    encoder_weights: Optional[str] = None,
    encoder_kwargs: Optional[dict[str, Any]] = None,
    layers: list[str] = ["conv11", "relu22", "relu32"],  # noqa: B006 - read by jsonargparse, never mutated
    attacks: list[str] = ["white_box", "black_box_train", "black_box_dist", "black_box_noise", "query_free"],  # noqa: B006
    decoders: list[str] = ["paper", "upconvnet"],  # noqa: B006
    defenses: Optional[dict[str, list[float]]] = None,
    defense_attacks: list[str] = ["black_box_dist"],  # noqa: B006
    data: Literal["folder", "cifar10", "embedded"] = "folder",
    root: Optional[str] = None,
    n_victim: int = 25000,
    n_attacker: int = 25000,
    n_eval: int = 1000,
    num_classes: int = 10,
    victim_epochs: int = 30,
    shadow_epochs: int = 30,
    inverter_epochs: int = 20,
    inverter_width: int = 64,
    inverter_lr: Union[float, dict[str, float]] = 1e-3,
    n_noise: int = 50000,
    mv_steps: int = MV_STEPS,
    mv_optimizer: Literal["sgd", "adam"] = "sgd",
    mv_batch_size: Optional[int] = None,
    mv_tv_weight: Optional[float] = None,
    n_candidates: int = 10,
    batch_size: int = 128,
    lpips: bool = True,
    n_boot: int = 1000,
    grid_images: int = 8,
    seed: int = 0,
    device: str = "auto",
    num_workers: int = 0,
    out: str = "runs/privacy",
    overwrite: bool = False,
) -> None:
    """Attack the features at split layers (white-box, black-box, query-free; He et al. 2019), with defences
    at the split, and write a run folder with leakage (PSNR, SSIM, LPIPS, re-identification) against utility.

    Args:
        encoder: victim architecture (a built-in one is trained on the victim split without encoder_weights).
        encoder_weights: victim weights; the victim split is then taken to be its training data.
        encoder_kwargs: constructor arguments of a victim loaded from encoder_weights (e.g. {width: 0.25}).
        layers: split layers.
        attacks: white_box, black_box_train, black_box_dist, black_box_noise, query_free.
        decoders: paper (He et al.'s attack) and/or upconvnet.
        defenses: defence -> strength sweep, e.g. {noise: [0.1, 0.5], quantize: [4, 2], dropout: [0.5], topk: [0.1]}.
        defense_attacks: attacks run against defended features.
        data: folder (ImageFolder tree with train/ and test/), cifar10 or embedded.
        root: data folder.
        n_victim: victim training images (first part of a seeded shuffle of the training split).
        n_attacker: attacker images, disjoint from the victim's.
        n_eval: held-out images attacked.
        num_classes: classes of the victim and shadow classifiers.
        victim_epochs: epochs to train the victim (without encoder_weights).
        shadow_epochs: epochs to train the query-free shadow encoder.
        inverter_epochs: epochs to train each inverse network.
        inverter_width: UpconvNet width.
        inverter_lr: Adam learning rate of the inverse networks, one for all or one per kind, e.g.
            {paper: 0.01, upconvnet: 0.001}.
        n_noise: noise queries per epoch (black_box_noise).
        mv_steps: optimisation-inversion steps (M&V's schedule: 2100).
        mv_optimizer: sgd (M&V's momentum) or adam.
        mv_batch_size: images inverted together by optimisation (default: batch_size).
        mv_tv_weight: total-variation weight of optimisation inversion (default: M&V's schedule by depth).
        n_candidates: re-identification line-up size (≥ 2, ≤ n_eval).
        batch_size: images per batch.
        lpips: compute LPIPS when its weights are cached.
        n_boot: bootstrap resamples.
        grid_images: images per grid.
        seed: seeds data splits, training, noise and bootstrap.
        device: auto (the GPU when there is one), cpu, cuda or cuda:N.
        num_workers: processes decoding the image files.
        out: run folder, created only when complete.
        overwrite: replace an existing run folder.
    """
    from upconv.privacy.run import run_privacy

    victim, attacker, evaluation = load_splits(data, root, n_victim, n_attacker, n_eval, seed,
                                               num_workers=num_workers)
    result = run_privacy(encoder, layers, evaluation, victim_data=victim, attacker_data=attacker,
                         encoder_weights=encoder_weights, encoder_kwargs=encoder_kwargs, attacks=attacks,
                         decoders=decoders, defenses=defenses, defense_attacks=defense_attacks,
                         num_classes=num_classes, victim_epochs=victim_epochs, shadow_epochs=shadow_epochs,
                         inverter_epochs=inverter_epochs, inverter_width=inverter_width, inverter_lr=inverter_lr,
                         n_noise=n_noise, mv_steps=mv_steps, mv_optimizer=mv_optimizer, mv_batch_size=mv_batch_size,
                         mv_tv_weight=mv_tv_weight, n_candidates=n_candidates, batch_size=batch_size, lpips=lpips,
                         n_boot=n_boot, grid_images=grid_images, seed=seed, device=device, out=out,
                         overwrite=overwrite)
    print(os.path.join(result.out or out, "report.md"))

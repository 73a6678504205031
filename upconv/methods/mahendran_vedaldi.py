"""Optimisation-based inversion (Mahendran & Vedaldi, "Understanding deep image representations by
inverting them", CVPR 2015), run on the shared input-optimisation engine ``upconv.optim.engine``.

Find x̂ minimising  ‖Φ_L(x̂) − Φ_L(x)‖² / ‖Φ_L(x)‖²  +  λ_α R_α(x̂)  +  λ_TV R_TV^β(x̂)   (their eq. 3–6)

with the defaults of the authors' released code: α = 6, β = 2, λ_TV growing with depth (1 in the first conv
block, 10 in the middle blocks, 100 from the last conv block through the fully connected layers), SGD with
momentum 0.9 and a learning rate divided by 10 at fixed fractions of the run. Their code scales the data
term's step by x0_σ² / y0_σ² (image energy over feature energy); dividing the whole objective by the energy
of a typical image, x0_σ² = H·W·B², gives the normalised form used here: TV and the step size are measured
in units of B, the expected colour-vector norm of a mean-centred pixel (B = ‖std‖₂ of the encoder's input
normalisation). Everything is batched: image b's gradient depends only on image b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from upconv.methods.base import Batch, Method, features_of
from upconv.nets.encoder import Encoder
from upconv.optim.engine import FeatureMatch, OptimResult, OptimSettings, optimize
from upconv.optim.params import PixelParam
from upconv.optim.regularizers import AlphaNorm, TotalVariation

MV_ALPHA = 6.0
MV_BETA = 2.0
TV_BY_BLOCK = (1.0, 10.0, 100.0)  # first conv block, middle blocks, last conv block and fc layers
# Their schedule: 800 / 500 / 500 / 200 / 100 iterations at lr × 1, 0.1, 0.01, 0.001, 0.0001 (2100 in all);
# the same fractions are kept for any number of steps.
MV_LR_FRACTIONS = (800 / 2100, 1300 / 2100, 1800 / 2100, 2000 / 2100)
MV_STEPS = 2100  # the length of their schedule: the one default of every M&V attack (``upconv privacy``)
EVAL_STEPS = 200  # the depth evaluation's shorter default (a cost choice: 11 layers × every batch)
MV_LR = 0.01  # per unit of normalised objective; with momentum 0.9 the effective step is 10× this
MV_ALPHA_WEIGHT = 1e-3  # small: the pixel parameterisation already keeps x̂ in [0, 1]
ADAM_LR = 0.05


def image_scale(encoder: Encoder) -> float:
    """M&V's B: expected Euclidean norm of a mean-centred pixel's colour vector, ‖std‖₂ of the input."""
    return float(encoder.std.flatten().pow(2).sum().sqrt())


def conv_block(encoder: Encoder, layer: str) -> tuple[int, int]:
    """(block of ``layer``, number of blocks): a block ends at each layer that lowers the spatial resolution
    (pool1 is the last layer of block 0); vector layers belong to the last block."""
    table = encoder.layer_table
    name = encoder.resolve([layer])[0]
    drops, block, prev = 0, None, None
    for info in table:
        if info.name == name:
            block = drops if info.spatial else None
        if info.spatial:
            if prev is not None and info.shape[-1] < prev:
                drops += 1
            prev = info.shape[-1]
    n_blocks = max(1, drops)
    return (n_blocks - 1 if block is None else min(block, n_blocks - 1)), n_blocks


def default_tv_weight(encoder: Encoder, layer: str) -> float:
    """λ_TV by depth: 1 for the first conv block, 10 for the middle ones, 100 from the last conv block on."""
    block, n_blocks = conv_block(encoder, layer)
    if block == 0 and n_blocks > 1:
        return TV_BY_BLOCK[0]
    return TV_BY_BLOCK[2] if block >= n_blocks - 1 else TV_BY_BLOCK[1]


def lr_steps(steps: int) -> list[int]:
    """Steps at which the learning rate drops tenfold, at M&V's fractions of the run."""
    return sorted({max(1, round(f * steps)) for f in MV_LR_FRACTIONS if round(f * steps) < steps})


def noise_init(encoder: Encoder, batch: int, seed: int = 0) -> Tensor:
    """Their initialisation: Gaussian noise with the data's per-channel mean and spread, (B, C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, encoder.channels, *encoder.image_size)
    x = torch.randn(shape, generator=g).to(encoder.mean) * encoder.std + encoder.mean
    return x.clamp(0, 1)


def regularizers(
    encoder: Encoder,
    tv_weight: float,
    alpha_weight: float = MV_ALPHA_WEIGHT,
    alpha: float = MV_ALPHA,
    beta: float = MV_BETA,
) -> list:
    """λ_TV/2 · TV^β and λ_α · R_α, both in units of B (their eq. 5 and 6, normalised as their code)."""
    b_norm = image_scale(encoder)
    # TV normalised by the image energy, as their code scales the data term (see module docstring).
    return [
        TotalVariation(tv_weight / 2, beta=beta, bound=b_norm),
        AlphaNorm(alpha_weight, alpha=alpha, center=encoder.mean, bound=b_norm),
    ]


def objective(
    encoder: Encoder,
    layer: str,
    target: Tensor,
    images: Tensor,
    tv_weight: float | None = None,
    alpha_weight: float = MV_ALPHA_WEIGHT,
) -> Tensor:
    """The full per-image objective that ``invert`` minimises, (B,): feature loss plus both regularisers."""
    name = encoder.resolve([layer])[0]
    lam = default_tv_weight(encoder, name) if tv_weight is None else float(tv_weight)
    loss = -FeatureMatch(name, target)(encoder(images, [name]))
    return loss + sum(r(images) for r in regularizers(encoder, lam, alpha_weight))


@dataclass(frozen=True)
class MVSettings:
    """Settings of one M&V inversion run (the defaults are their released code's, see the module docstring).

    Args:
        steps: optimiser steps; the learning rate drops tenfold at M&V's fractions of the run (``lr_steps``).
        optimizer: ``sgd`` (their momentum SGD) or ``adam``.
        lr: in units of the normalised objective (None: ``MV_LR`` for SGD, ``ADAM_LR`` for Adam).
        momentum: SGD momentum.
        tv_weight: λ_TV (None: ``default_tv_weight`` of the layer).
        alpha_weight: λ_α of the α-norm prior.
        alpha: the prior's exponent α.
        beta: the TV exponent β.
        seed: seed of the noise initialisation (``noise_init``).
    """

    steps: int = 200
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    tv_weight: float | None = None
    alpha_weight: float = MV_ALPHA_WEIGHT
    alpha: float = MV_ALPHA
    beta: float = MV_BETA
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer '{self.optimizer}'; choose sgd (M&V's momentum) or adam")
        if self.tv_weight is not None and self.tv_weight < 0 or self.alpha_weight < 0:
            raise ValueError(
                f"regulariser weights must be ≥ 0; got tv_weight={self.tv_weight}, alpha_weight={self.alpha_weight}"
            )

    def engine_settings(self, encoder: Encoder) -> OptimSettings:
        """The engine's steps, optimiser and schedule; SGD's step is scaled to M&V's units."""
        lr = self.lr if self.lr is not None else MV_LR if self.optimizer == "sgd" else ADAM_LR
        if self.optimizer == "sgd":
            # M&V's step is lr · x0_σ² · ∇(normalised loss); x0_σ² = H·W·B² is the energy of a typical image.
            lr = lr * encoder.image_size[0] * encoder.image_size[1] * image_scale(encoder) ** 2
        return OptimSettings(
            steps=self.steps,
            lr=lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            lr_steps=lr_steps(self.steps),
            lr_gamma=0.1,
        )


def invert(
    encoder: Encoder, layer: str, target: Tensor, settings: MVSettings = MVSettings(), init: Tensor | None = None
) -> OptimResult:
    """Reconstruct images from ``target`` = Φ_L(x), shape (B, *layer shape), by M&V optimisation with
    ``settings`` (``MVSettings``), from ``init`` (B, C, H, W) or their noise initialisation.

    Returns the engine's ``OptimResult``; its ``history`` holds −(feature loss) per step, so a working
    inversion shows it rising towards 0.
    """
    name = encoder.resolve([layer])[0]
    want = encoder.layer(name).shape
    if target.dim() != len(want) + 1 or tuple(target.shape[1:]) != want:
        raise ValueError(
            f"target features for layer {name} must have shape (B, {', '.join(map(str, want))}); "
            f"got {tuple(target.shape)}"
        )
    lam_tv = default_tv_weight(encoder, name) if settings.tv_weight is None else float(settings.tv_weight)
    x0 = noise_init(encoder, target.shape[0], settings.seed) if init is None else init.detach().to(encoder.mean)
    regs = regularizers(encoder, lam_tv, settings.alpha_weight, settings.alpha, settings.beta)
    return optimize(
        encoder,
        FeatureMatch(name, target.to(encoder.mean)),
        PixelParam(x0),
        settings.engine_settings(encoder),
        regularizers=regs,
    )


class MVInversionMethod(Method):
    """Depth-evaluation method ``mahendran_vedaldi``: optimisation inversion of each batch's features.

    ``steps`` defaults to ``EVAL_STEPS`` (200, M&V's learning-rate schedule compressed to that length), not
    their 2100 (``MV_STEPS``): the evaluation inverts every image from every layer; pass
    ``method_options={"mahendran_vedaldi": {"steps": 2100}}`` for their full schedule.
    """

    name = "mahendran_vedaldi"
    reads_target = False  # sees only the features of the image it reconstructs

    def __init__(
        self,
        encoder: Encoder,
        steps: int = EVAL_STEPS,
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr: float | None = None,
        tv_weight: float | None = None,
        seed: int = 0,
    ) -> None:
        if steps < 1 or not math.isfinite(steps):
            raise ValueError(f"steps must be a positive integer; got {steps}")
        self.encoder = encoder
        self.settings = MVSettings(steps=int(steps), optimizer=optimizer, lr=lr, tv_weight=tv_weight, seed=seed)

    def reconstruct(self, batch: Batch, layer: str) -> Tensor:
        target = features_of(self.encoder, batch, layer)  # the evaluation's features: no second encoder pass
        return invert(self.encoder, layer, target, self.settings).images  # (B, C, H, W) in [0, 1]

"""Plain settings → engine parts. One dataclass so the CLI exposes every knob as ``--recipe.<field>``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from upconv.nets.encoder import Encoder
from upconv.optim.engine import Objective, OptimResult, OptimSettings, optimize
from upconv.optim.params import DenseParam, FourierParam, Parameterization, PixelParam
from upconv.optim.regularizers import (
    Blur,
    Jitter,
    L2Decay,
    RandomRotate,
    RandomScale,
    TotalVariation,
    ZeroSmallContribution,
    ZeroSmallNorm,
)

PARAMS = ("fourier", "pixel", "dense")


@dataclass
class Recipe:
    """Settings of an activation-maximisation run.

    Args:
        param: image parameterisation: fourier (decorrelated, Olah et al. 2017), pixel (raw pixels,
            Simonyan et al. 2014) or dense (a dense layer fed a constant input).
        steps: optimiser steps.
        lr: learning rate.
        optimizer: adam, sgd (momentum 0.9) or normalized (DeepDream's normalised gradient step).
        jitter: random shift of up to this many pixels each step (0: off).
        scale: random zoom by up to this fraction each step (0: off).
        rotate: random rotation of up to this many degrees each step (0: off).
        l2: weight λ of Simonyan's L2 penalty λ‖I - mean‖².
        tv: weight of the total-variation penalty (β = 2).
        blur_sigma: Gaussian blur width in pixels, applied every blur_every steps (0: off; Yosinski et al.).
        blur_every: blur period in steps.
        zero_norm: zero pixels whose norm is below this percentile (0: off; Yosinski et al.).
        zero_contrib: zero pixels whose contribution is below this percentile (0: off; Yosinski et al.).
        init_sd: spread of the random start (pixels: uniform around grey with this half-width).
        seed: random seed for starts and transforms (None: do not reseed).
    """

    param: str = "fourier"
    steps: int = 256
    lr: float = 0.05
    optimizer: str = "adam"
    jitter: int = 2
    scale: float = 0.05
    rotate: float = 5.0
    l2: float = 0.0
    tv: float = 0.0
    blur_sigma: float = 0.0
    blur_every: int = 4
    zero_norm: float = 0.0
    zero_contrib: float = 0.0
    init_sd: float = 0.01
    seed: int | None = 0

    def make_param(self, encoder: Encoder, batch: int, init: Tensor | None = None) -> Parameterization:
        dev, dtype = encoder.device, encoder.mean.dtype
        c, size = encoder.channels, encoder.image_size
        if self.param == "pixel":
            if init is None:
                init = 0.5 + self.init_sd * (2 * torch.rand(batch, c, *size, dtype=dtype) - 1)  # (B, C, H, W)
            return PixelParam(init).to(dev)
        if self.param == "fourier":
            p: Parameterization = FourierParam(batch, c, size, sd=self.init_sd, dtype=dtype)
        elif self.param == "dense":
            p = DenseParam(batch, c, size, sd=self.init_sd, dtype=dtype)
        else:
            raise ValueError(f"unknown param '{self.param}'; choose one of: {', '.join(PARAMS)}")
        p = p.to(dev)
        if init is not None:
            p.set_image(init.to(dev))
        return p

    def parts(self, encoder: Encoder) -> tuple[list, list]:
        center = encoder.mean  # (1, C, 1, 1): "zero" of the centred image
        transforms = [
            t
            for t, on in (
                (Jitter(self.jitter), self.jitter > 0),
                (RandomScale(self.scale), self.scale > 0),
                (RandomRotate(self.rotate), self.rotate > 0),
            )
            if on
        ]
        regs: list = []
        if self.l2 > 0:
            regs.append(L2Decay(self.l2, center))
        if self.tv > 0:
            regs.append(TotalVariation(self.tv))
        if self.blur_sigma > 0:
            regs.append(Blur(self.blur_sigma, self.blur_every))
        if self.zero_norm > 0:
            regs.append(ZeroSmallNorm(self.zero_norm, center))
        if self.zero_contrib > 0:
            regs.append(ZeroSmallContribution(self.zero_contrib, center))
        return transforms, regs

    def run(
        self,
        encoder: Encoder,
        objective: Objective,
        batch: int,
        init: Tensor | None = None,
        stop_at: float | None = None,
    ) -> OptimResult:
        """Optimise ``batch`` images for ``objective`` with these settings (RNG state restored after)."""
        devices = [encoder.device] if encoder.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            param = self.make_param(encoder, batch, init)
            transforms, regs = self.parts(encoder)
            settings = OptimSettings(steps=self.steps, lr=self.lr, optimizer=self.optimizer, stop_at=stop_at)
            return optimize(encoder, objective, param, settings, transforms=transforms, regularizers=regs)

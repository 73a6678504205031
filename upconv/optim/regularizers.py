"""Transforms and regularisers for ``optimize``.

Transforms (random, re-drawn every step, differentiable) make the image work under small shifts, zooms
and rotations, so it cannot rely on one pixel-exact pattern (Mordvintsev et al. 2015; Olah et al. 2017).
``Penalty``: a per-image term subtracted from the objective. ``Projection``: an edit of the image between
steps (Yosinski et al. 2015, "Understanding neural networks through deep visualization", sec. 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


# ---------------------------------------------------------------------- transforms
class Jitter:
    """Roll the image by a random offset of up to ``pixels`` in each direction."""

    def __init__(self, pixels: int) -> None:
        self.pixels = int(pixels)

    def __call__(self, x: Tensor) -> Tensor:
        dy, dx = torch.randint(-self.pixels, self.pixels + 1, (2,)).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))  # (B, C, H, W)


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class RandomScale:
    """Zoom each image by a factor drawn uniformly from [1/(1+s), 1+s]."""

    def __init__(self, amount: float) -> None:
        self.amount = float(amount)

    def __call__(self, x: Tensor) -> Tensor:
        lo, hi = math.log(1 / (1 + self.amount)), math.log(1 + self.amount)
        s = torch.empty(x.shape[0], dtype=x.dtype, device=x.device).uniform_(lo, hi).exp()  # (B,)
        theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
        return _affine(x, theta)


class RandomRotate:
    """Rotate each image by an angle drawn uniformly from [-degrees, degrees]."""

    def __init__(self, degrees: float) -> None:
        self.degrees = float(degrees)

    def __call__(self, x: Tensor) -> Tensor:
        a = torch.empty(x.shape[0], dtype=x.dtype, device=x.device).uniform_(-1, 1) * math.radians(self.degrees)
        c, s = a.cos(), a.sin()  # (B,)
        theta = torch.stack([torch.stack([c, -s, 0 * c], 1), torch.stack([s, c, 0 * c], 1)], 1)  # (B, 2, 3)
        return _affine(x, theta)


# ---------------------------------------------------------------------- penalties
class Penalty:
    """Per-image penalty, shape (B,), subtracted from the objective."""

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class L2Decay(Penalty):
    """Simonyan et al. (2014) eq. 1 regulariser λ‖I - c‖², I centred on ``center`` (the data mean)."""

    def __init__(self, weight: float, center: float | Tensor = 0.0) -> None:
        self.weight, self.center = weight, center

    def __call__(self, x: Tensor) -> Tensor:
        return self.weight * (x - self.center).flatten(1).pow(2).sum(1)


class AlphaNorm(Penalty):
    """Mahendran & Vedaldi (2015) eq. 5: λ_α ‖x - c‖_α^α / (H W B^α), B the expected pixel range."""

    def __init__(self, weight: float, alpha: float = 6.0, center: float | Tensor = 0.0, bound: float = 1.0) -> None:
        self.weight, self.alpha, self.center, self.bound = weight, alpha, center, bound

    def __call__(self, x: Tensor) -> Tensor:
        hw = x.shape[-2] * x.shape[-1]
        return self.weight * (x - self.center).abs().pow(self.alpha).flatten(1).sum(1) / (hw * self.bound**self.alpha)


class TotalVariation(Penalty):
    """Mahendran & Vedaldi (2015) eq. 6: λ_TV Σ ((∂x/∂u)² + (∂x/∂v)²)^(β/2) / (H W V^β), V the
    expected size of an image difference (B/6.5 in their paper)."""

    def __init__(self, weight: float, beta: float = 2.0, bound: float = 1.0) -> None:
        self.weight, self.beta, self.bound = weight, beta, bound

    def __call__(self, x: Tensor) -> Tensor:
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]  # (B, C, H-1, W-1)
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        d2 = dx.pow(2) + dy.pow(2)
        # β < 2 has an infinite gradient at 0; a tiny offset keeps it finite without changing β = 2.
        tv = d2.pow(self.beta / 2) if self.beta == 2 else (d2 + 1e-8).pow(self.beta / 2)
        hw = x.shape[-2] * x.shape[-1]
        return self.weight * tv.flatten(1).sum(1) / (hw * self.bound**self.beta)


# ---------------------------------------------------------------------- projections
class Projection:
    """``proj(image, grad, step) -> image``: an edit applied between optimiser steps."""

    def __call__(self, x: Tensor, grad: Tensor | None, step: int) -> Tensor:
        raise NotImplementedError


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Depthwise Gaussian blur, reflect-padded, kernel radius ⌈3σ⌉."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # (B, C, H+2r, W)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # (B, C, H, W)


class Blur(Projection):
    """Yosinski et al. (2015): Gaussian blur of width ``sigma`` every ``every`` steps."""

    def __init__(self, sigma: float, every: int = 4) -> None:
        if sigma <= 0 or every < 1:
            raise ValueError(f"blur needs sigma > 0 and every >= 1; got sigma={sigma}, every={every}")
        self.sigma, self.every = sigma, every

    def __call__(self, x: Tensor, grad: Tensor | None, step: int) -> Tensor:
        return gaussian_blur(x, self.sigma) if (step + 1) % self.every == 0 else x


def _zero_below(x: Tensor, score: Tensor, percentile: float, center: float | Tensor) -> Tensor:
    q = torch.quantile(score.flatten(1), percentile / 100, dim=1).view(-1, 1, 1)  # (B, 1, 1)
    keep = (score >= q)[:, None]  # (B, 1, H, W)
    return torch.where(keep, x, torch.as_tensor(center, dtype=x.dtype, device=x.device).expand_as(x))


class ZeroSmallNorm(Projection):
    """Yosinski et al. (2015): set pixels whose colour-vector norm ‖x - c‖ is below the given percentile
    to the centre ``c`` (the data mean, i.e. zero in normalised units)."""

    def __init__(self, percentile: float, center: float | Tensor = 0.0) -> None:
        if not 0 <= percentile < 100:
            raise ValueError(f"percentile must be in [0, 100); got {percentile}")
        self.percentile, self.center = percentile, center

    def __call__(self, x: Tensor, grad: Tensor | None, step: int) -> Tensor:
        return _zero_below(x, (x - self.center).norm(dim=1), self.percentile, self.center)


class ZeroSmallContribution(Projection):
    """Yosinski et al. (2015): set to ``c`` the pixels whose first-order contribution to the objective,
    |Σ_channels (x - c) · ∂score/∂x|, is below the given percentile."""

    def __init__(self, percentile: float, center: float | Tensor = 0.0) -> None:
        if not 0 <= percentile < 100:
            raise ValueError(f"percentile must be in [0, 100); got {percentile}")
        self.percentile, self.center = percentile, center

    def __call__(self, x: Tensor, grad: Tensor | None, step: int) -> Tensor:
        if grad is None:
            return x
        contribution = ((x - self.center) * grad).sum(1).abs()  # (B, H, W)
        return _zero_below(x, contribution, self.percentile, self.center)

"""Inference-time defences: applied to the victim's features at the split after training (the victim is
unchanged), and the rest of the network that utility is scored with.

Each defence maps features (B, *shape) and a strength to defended features of the same shape:

- ``noise``: add Gaussian noise of standard deviation σ · RMS(features of that image); strength σ ≥ 0.
- ``quantize``: uniform quantisation to b bits between each image's min and max; strength b ∈ {1, …, 16}.
- ``dropout``: zero each feature with probability p, survivors scaled by 1/(1−p) (inverted dropout, so the
  rest of the network sees the same expected activation); strength p ∈ [0, 1).
- ``topk``: keep each image's largest fraction k of activations, zero the rest; strength k ∈ (0, 1].

Noise and dropout draw from a seeded generator, so a run is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from upconv.nets.encoder import Encoder

RANGES = {
    "noise": "σ ≥ 0 (noise standard deviation in units of the feature RMS)",
    "quantize": "an integer number of bits from 1 to 16",
    "dropout": "a drop probability p with 0 ≤ p < 1",
    "topk": "a kept fraction k with 0 < k ≤ 1",
}


def check_strength(kind: str, strength: float) -> None:
    """Raise a ValueError naming the valid range when ``strength`` is outside it."""
    if kind not in RANGES:
        raise ValueError(f"unknown defence '{kind}'; choose one of: {', '.join(RANGES)}")
    s = float(strength)
    ok = (
        math.isfinite(s)
        and {
            "noise": s >= 0,
            "quantize": s == int(s) and 1 <= s <= 16,
            "dropout": 0 <= s < 1,
            "topk": 0 < s <= 1,
        }[kind]
    )
    if not ok:
        raise ValueError(
            f"defence strength {strength} is out of range for '{kind}': expected {RANGES[kind]}; "
            f"fix the sweep in the config"
        )


def _noise(f: Tensor, s: float, g: torch.Generator) -> Tensor:
    rms = f.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (f.dim() - 1))  # (B, 1, ...)
    return f + s * rms * torch.randn(f.shape, generator=g).to(f)


def _quantize(f: Tensor, s: float, g: torch.Generator) -> Tensor:
    flat = f.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values  # (B, 1)
    levels = 2 ** int(s) - 1
    step = (hi - lo).clamp_min(1e-12) / levels
    return (((flat - lo) / step).round() * step + lo).view_as(f)


def _dropout(f: Tensor, s: float, g: torch.Generator) -> Tensor:
    keep = (torch.rand(f.shape, generator=g) >= s).to(f)
    return f * keep / (1 - s)


def _topk(f: Tensor, s: float, g: torch.Generator) -> Tensor:
    flat = f.flatten(1)
    k = max(1, math.ceil(s * flat.shape[1]))
    idx = flat.topk(k, dim=1).indices  # (B, k)
    mask = torch.zeros_like(flat).scatter_(1, idx, 1.0)
    return (flat * mask).view_as(f)


DEFENSES: dict[str, Callable[[Tensor, float, torch.Generator], Tensor]] = {
    "noise": _noise,
    "quantize": _quantize,
    "dropout": _dropout,
    "topk": _topk,
}


def defend(features: Tensor, kind: str, strength: float, seed: int = 0) -> Tensor:
    """Apply defence ``kind`` at ``strength`` to features (B, *shape); same shape out."""
    check_strength(kind, strength)
    return DEFENSES[kind](features, float(strength), torch.Generator().manual_seed(seed))


def tail(encoder: Encoder, layer: str) -> nn.Module:
    """The rest of the network after ``layer`` (features → logits), for sequential encoders whose layers are
    their top-level stages (the built-in architectures)."""
    name = encoder.resolve([layer])[0]
    model = encoder.model
    node = encoder.layer(name).node
    names = [n for n, _ in model.named_children()]
    if not isinstance(model, nn.Sequential) or node not in names:
        raise ValueError(
            f"utility needs the rest of the network after {name}, which is only available for "
            f"sequential encoders whose layers are top-level stages (e.g. he2019_cifar); "
            f"{encoder.name} is not one"
        )
    return nn.Sequential(*[m for n, m in model.named_children()][names.index(node) + 1 :])

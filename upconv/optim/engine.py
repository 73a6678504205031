"""One input-optimisation engine: objective + parameterisation + transforms + regularisers.

Activation maximisation (Simonyan et al. 2014; Yosinski et al. 2015), class prototypes, DeepDream, fooling
images (Nguyen et al. 2015) and Mahendran & Vedaldi's optimisation inversion (2015) are all
``optimize(encoder, objective, param, ...)`` with different parts. Every part works on a batch: image ``b``
has its own objective term and its gradient depends only on itself (the batch loss is a sum), so a batch
of B images is B independent optimisations run in one forward pass per step.

An objective returns one score per image that the engine *maximises*; feature matching therefore scores
``-distance``. Penalties (``regularizers.Penalty``) are subtracted from that score; projections
(``regularizers.Projection``) edit the image between steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from upconv.core.metrics import relative_feature_error
from upconv.core.runtime import progress
from upconv.nets.encoder import Encoder
from upconv.optim.indices import check_indices
from upconv.optim.params import Parameterization
from upconv.optim.regularizers import Penalty, Projection


# ---------------------------------------------------------------------- objectives
class Objective:
    """A per-image score to maximise, read from the encoder's features at ``self.layers``."""

    layers: list[str]

    def __call__(self, feats: dict[str, Tensor]) -> Tensor:  # -> (B,)
        raise NotImplementedError

    def __add__(self, other: Objective) -> Objective:
        return Sum([self, other])

    def __mul__(self, w: float) -> Objective:
        return Sum([self], [w])

    __rmul__ = __mul__


def _units(index: int | Sequence[int], a: Tensor, what: str, layer: str) -> Tensor:
    """One index per image of ``a`` (B, K, ...) into its dim 1, on ``a``'s device."""
    return check_indices(index, a.shape[1], what, f"layer {layer}", batch=a.shape[0]).to(a.device)  # (B,)


class ClassScore(Objective):
    """Simonyan et al. (2014) eq. 1: the unnormalised class score S_c(I), before the softmax."""

    def __init__(self, classes: int | Sequence[int], layer: str) -> None:
        self.classes, self.layers = classes, [layer]

    def __call__(self, feats: dict[str, Tensor]) -> Tensor:
        s = feats[self.layers[0]].flatten(1)  # (B, K)
        idx = _units(self.classes, s, "class", self.layers[0])
        return s.gather(1, idx[:, None])[:, 0]  # (B,)


class ClassContrast(ClassScore):
    """ "This class up, all others down": log p_c = S_c - logsumexp_k S_k (the softmax objective that
    Simonyan et al. avoid for plain maximisation; used for prototypes and fooling images)."""

    def __call__(self, feats: dict[str, Tensor]) -> Tensor:
        s = feats[self.layers[0]].flatten(1)  # (B, K)
        idx = _units(self.classes, s, "class", self.layers[0])
        return s.log_softmax(1).gather(1, idx[:, None])[:, 0]  # (B,)


class ChannelMean(Objective):
    """Mean activation of one channel (per image) over all spatial positions."""

    def __init__(self, layer: str, channels: int | Sequence[int]) -> None:
        self.channels, self.layers = channels, [layer]

    def __call__(self, feats: dict[str, Tensor]) -> Tensor:
        a = feats[self.layers[0]]  # (B, C, H, W) or (B, C)
        idx = _units(self.channels, a, "channel", self.layers[0])
        return a[torch.arange(a.shape[0], device=a.device), idx].flatten(1).mean(1)  # (B,)


class Neuron(Objective):
    """One unit: channel ``c`` at spatial position (y, x); the centre when y/x are None."""

    def __init__(self, layer: str, channels: int | Sequence[int], y: int | None = None, x: int | None = None) -> None:
        self.channels, self.y, self.x, self.layers = channels, y, x, [layer]

    def __call__(self, feats: dict[str, Tensor]) -> Tensor:
        a = feats[self.layers[0]]  # (B, C, H, W) or (B, C)
        idx = _units(self.channels, a, "channel", self.layers[0])
        a = a[torch.arange(a.shape[0], device=a.device), idx]  # (B, H, W) or (B,)
        if a.dim() == 1:
            return a
        h, w = a.shape[1:]
        y = h // 2 if self.y is None else self.y
        x = w // 2 if self.x is None else self.x
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"neuron position ({y}, {x}) is outside the {h}×{w} map of layer {self.layers[0]}")
        return a[:, y, x]  # (B,)


class LayerNorm(Objective):
    """DeepDream (Mordvintsev et al. 2015): mean squared activation of a layer, i.e. its L2 norm²/size."""

    def __init__(self, layer: str) -> None:
        self.layers = [layer]

    def __call__(self, feats: dict[str, Tensor]) -> Tensor:
        return feats[self.layers[0]].flatten(1).pow(2).mean(1)  # (B,)


class FeatureMatch(Objective):
    """Mahendran & Vedaldi (2015) eq. 3 loss, negated: -‖Φ_L(x̂) - Φ_L(x)‖² / ‖Φ_L(x)‖², per image
    (``relative_feature_error`` squared)."""

    def __init__(self, layer: str, target: Tensor) -> None:
        self.layers, self.target = [layer], target.detach()

    def __call__(self, feats: dict[str, Tensor]) -> Tensor:
        return -relative_feature_error(feats[self.layers[0]], self.target, squared=True)  # (B,)


class Sum(Objective):
    """Weighted sum of objectives (layers are the union; one forward pass serves all)."""

    def __init__(self, parts: Sequence[Objective], weights: Sequence[float] | None = None) -> None:
        self.parts = list(parts)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.parts)
        self.layers = sorted({l for p in self.parts for l in p.layers})

    def __call__(self, feats: dict[str, Tensor]) -> Tensor:
        return sum(w * p(feats) for p, w in zip(self.parts, self.weights))


# ---------------------------------------------------------------------- engine
OPTIMIZERS = ("adam", "sgd", "normalized")


@dataclass(frozen=True)
class OptimSettings:
    """How ``optimize`` steps: the optimiser, its learning-rate schedule and when to stop.

    Args:
        steps: optimiser steps (at most; see ``stop_at``).
        lr: learning rate.
        optimizer: ``adam``; ``sgd`` (momentum ``momentum``, as in Mahendran & Vedaldi); or ``normalized``
            (DeepDream's step: the gradient divided by its mean absolute value, per image).
        momentum: SGD momentum.
        lr_steps: step numbers at which the learning rate is multiplied by ``lr_gamma``.
        lr_gamma: the factor applied at each of ``lr_steps``.
        stop_at: end early once every image's score reaches this (None: run all steps).
    """

    steps: int = 200
    lr: float = 0.05
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_steps: Sequence[int] = ()
    lr_gamma: float = 0.1
    stop_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer; got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number; got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{self.optimizer}'; choose adam, sgd or normalized")

    def lr_at(self, step: int) -> float:
        """The scheduled learning rate of step ``step`` (0-based): lr · gamma^(number of lr_steps ≤ step)."""
        return self.lr * self.lr_gamma ** sum(1 for s in set(self.lr_steps) if s <= step)

    def make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum if self.optimizer == "sgd" else 0.0)


@dataclass
class OptimResult:
    images: Tensor  # (B, C, H, W) in [0, 1], detached
    scores: Tensor  # (B,) objective on the final, untransformed images
    history: Tensor  # (steps, B) objective seen at each step (on transformed images)


def _normalize_gradients(params: list[Tensor]) -> None:
    """DeepDream's step: each image's gradient divided by its mean absolute value."""
    for p in params:
        p.grad /= p.grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *[1] * (p.dim() - 1))


def _project(param: Parameterization, projections: list[Projection], image: Tensor, step: int) -> None:
    """Apply the between-steps edits (Yosinski et al.) to the current image; ``image.grad`` is dScore/dImage."""
    with torch.no_grad():
        new = param().detach()
        for r in projections:
            new = r(new, image.grad, step)
        param.set_image(new)


def optimize(
    encoder: Encoder,
    objective: Objective,
    param: Parameterization,
    settings: OptimSettings = OptimSettings(),
    *,
    transforms: Sequence[Callable[[Tensor], Tensor]] = (),
    regularizers: Sequence[Penalty | Projection] = (),
) -> OptimResult:
    """Maximise ``objective(encoder(T(param()))) - Σ penalties`` over the parameters of ``param``, stepping as
    ``settings`` says (``OptimSettings``). ``T`` is the composition of ``transforms``, re-drawn every step;
    ``regularizers`` are penalties (subtracted from the score) and projections (applied between steps).
    """
    layers = encoder.resolve(objective.layers)
    params = [p for p in param.parameters() if p.requires_grad]
    opt = settings.make_optimizer(params)
    penalties = [r for r in regularizers if isinstance(r, Penalty)]
    projections = [r for r in regularizers if isinstance(r, Projection)]
    history = []
    for step in progress(range(settings.steps), "optimising", settings.steps, unit="step"):
        for g in opt.param_groups:
            g["lr"] = settings.lr_at(step)
        opt.zero_grad(set_to_none=True)
        image = param()  # (B, C, H, W) in [0, 1]
        image.retain_grad()  # Yosinski's contribution clipping needs dScore/dImage
        x = image
        for t in transforms:
            x = t(x)
        score = objective(encoder(x, layers))  # (B,)
        total = score - sum((p(image) for p in penalties), torch.zeros_like(score))
        (-total.sum()).backward()  # a sum keeps images independent
        history.append(score.detach())
        if settings.optimizer == "normalized":
            _normalize_gradients(params)
        opt.step()
        param.after_step()
        if projections:
            _project(param, projections, image, step)
        if settings.stop_at is not None and bool((history[-1] >= settings.stop_at).all()):
            break
    with torch.no_grad():
        final = param().detach()
        scores = objective(encoder(final, layers))
    return OptimResult(final, scores, torch.stack(history))

"""Adversarial and fooling images.

FGSM (Goodfellow et al. 2015): x' = clip(x + ε·sign(∇_x J(x, y)), 0, 1), J the cross-entropy.
PGD (Madry et al. 2018): repeated steps of size α, each projected back into the L∞ ball of radius ε.
Fooling images (Nguyen et al. 2015, gradient-ascent variant): from noise to ≥ 99 % confidence for a class.
Targeted attacks descend J(x, target) instead. Images are (B, C, H, W) in [0, 1]; ε is in those units.
Success is counted over the images an attack has to change (``AttackResult``), beside the clean accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from upconv.core.runtime import progress
from upconv.nets.encoder import Encoder
from upconv.optim.engine import ClassContrast
from upconv.optim.indices import check_indices
from upconv.visualize.recipe import Recipe


@dataclass
class AttackResult:
    """Outcome of an attack. ``success_rate`` counts only images the attack had to change: for an
    untargeted attack the images the net classified correctly before the attack (an image misclassified
    already is no success of the attack), for a targeted attack the images not already of the target class.
    """

    images: Tensor  # (B, C, H, W) adversarial images
    pred: Tensor  # (B,) predicted class of each adversarial image
    clean_pred: Tensor  # (B,) predicted class of each clean image
    eligible: Tensor  # (B,) bool: clean_pred == label (untargeted) or clean_pred != target (targeted)
    success: Tensor  # (B,) bool: eligible and pred != label (untargeted) or pred == target (targeted)
    linf: Tensor  # (B,) L∞ norm of the perturbation
    l2: Tensor  # (B,) L2 norm of the perturbation
    targeted: bool = False

    @property
    def success_rate(self) -> float:
        """Successes among eligible images; NaN when no image is eligible."""
        n = int(self.eligible.sum())
        return int(self.success.sum()) / n if n else math.nan

    @property
    def clean_accuracy(self) -> float | None:
        """Share of clean images classified as their label (untargeted attacks; None for targeted ones,
        whose labels are targets, not true classes)."""
        return None if self.targeted else self.eligible.float().mean().item()


def _labels(encoder: Encoder, images: Tensor, labels: int | Sequence[int] | Tensor) -> Tensor:
    k = encoder.layer(encoder.layers[-1]).shape[0]
    y = check_indices(labels, k, "class", encoder.name, batch=images.shape[0])  # (B,)
    return y.to(encoder.device)


def _check_eps(epsilon: float, name: str = "epsilon") -> None:
    if not (0 < epsilon <= 1) or math.isnan(epsilon):
        raise ValueError(f"{name} must be in (0, 1] (images are in [0, 1], e.g. 8/255 ≈ 0.031); got {epsilon}")


def _loss_grad(encoder: Encoder, x: Tensor, y: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(encoder.logits(x).flatten(1), y, reduction="sum")  # sum: per-image gradients
    return torch.autograd.grad(loss, x)[0]  # (B, C, H, W)


@torch.no_grad()
def _result(encoder: Encoder, x0: Tensor, x: Tensor, y: Tensor, targeted: bool, clean_pred: Tensor) -> AttackResult:
    pred = encoder.logits(x).flatten(1).argmax(1)  # (B,)
    eligible = clean_pred != y if targeted else clean_pred == y
    success = eligible & (pred == y if targeted else pred != y)
    d = (x - x0).flatten(1)  # (B, C·H·W)
    return AttackResult(x, pred, clean_pred, eligible, success, d.abs().amax(1), d.norm(dim=1), targeted)


@torch.no_grad()
def _clean_pred(encoder: Encoder, x0: Tensor) -> Tensor:
    return encoder.logits(x0).flatten(1).argmax(1)  # (B,)


def fgsm(
    encoder: Encoder, images: Tensor, labels: int | Sequence[int] | Tensor, epsilon: float, targeted: bool = False
) -> AttackResult:
    """One signed-gradient step of size ε; ``labels`` are the true classes (or the targets if ``targeted``).
    See ``AttackResult`` for which images count towards the success rate."""
    _check_eps(epsilon)
    encoder.check_images(images, finite=True)
    x0 = images.detach().to(encoder.device)  # (B, C, H, W)
    y = _labels(encoder, x0, labels)
    g = _loss_grad(encoder, x0, y)
    x = (x0 + (-epsilon if targeted else epsilon) * g.sign()).clamp(0, 1)
    return _result(encoder, x0, x, y, targeted, _clean_pred(encoder, x0))


def pgd(
    encoder: Encoder,
    images: Tensor,
    labels: int | Sequence[int] | Tensor,
    epsilon: float,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    targeted: bool = False,
) -> AttackResult:
    """Madry et al. (2018) L∞ PGD: x ← Π_{‖x-x₀‖∞≤ε, [0,1]}(x ± α·sign(∇J)); α defaults to 2.5ε/steps.
    See ``AttackResult`` for which images count towards the success rate."""
    _check_eps(epsilon)
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    alpha = 2.5 * epsilon / steps if alpha is None else alpha
    _check_eps(alpha, "alpha")
    encoder.check_images(images, finite=True)
    x0 = images.detach().to(encoder.device)  # (B, C, H, W)
    y = _labels(encoder, x0, labels)
    x = (x0 + torch.empty_like(x0).uniform_(-epsilon, epsilon)).clamp(0, 1) if random_start else x0.clone()
    sign = -1.0 if targeted else 1.0
    for _ in progress(range(steps), "PGD", steps, unit="step"):
        x = x + sign * alpha * _loss_grad(encoder, x, y).sign()
        x = torch.min(torch.max(x, x0 - epsilon), x0 + epsilon).clamp(0, 1)  # project onto the ε-ball ∩ [0, 1]
    return _result(encoder, x0, x.detach(), y, targeted, _clean_pred(encoder, x0))


@dataclass
class FoolingResult:
    images: Tensor  # (B, C, H, W)
    confidence: Tensor  # (B,) softmax probability of the chosen class
    success: Tensor  # (B,) bool: confidence >= the requested level


def fooling_images(
    encoder: Encoder,
    classes: Sequence[int],
    confidence: float = 0.99,
    max_steps: int = 500,
    recipe: Recipe | None = None,
) -> FoolingResult:
    """Optimise uniform noise until the net gives each class ≥ ``confidence`` (log p_c is the objective;
    the run stops as soon as every image is there). The default recipe: raw pixels, Adam lr 0.01, no
    transforms or priors, so the images stay noise-like as in Nguyen et al."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.99; got {confidence}")
    last = encoder.layers[-1]
    classes = check_indices(classes, encoder.layer(last).shape[0], "class", f"{encoder.name} ({last})").tolist()
    recipe = recipe or Recipe(param="pixel", lr=0.01, jitter=0, scale=0, rotate=0, init_sd=0.5)
    res = replace(recipe, steps=max_steps).run(
        encoder, ClassContrast(classes, last), len(classes), stop_at=math.log(confidence)
    )
    with torch.no_grad():
        p = encoder.logits(res.images).flatten(1).softmax(1)  # (B, K)
    conf = p[torch.arange(len(classes)), torch.as_tensor(classes, device=p.device)]
    return FoolingResult(res.images, conf, conf >= confidence)

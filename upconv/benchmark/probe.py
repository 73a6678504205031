"""Class information per layer: a linear probe (Alain & Bengio 2016) on the frozen features.

The probe is multinomial logistic regression, trained on the training split's features and scored on the
test split. Feature maps larger than ``dims`` numbers are average-pooled to the largest s×s grid with
channels × s² ≤ ``dims`` (a single global average when even 1×1 exceeds it), as linear-probe papers pool
large maps to a fixed size; each feature is standardised with the training split's mean and deviation. The
fit is full-batch L-BFGS on cross-entropy plus ``l2``·‖W‖² (a convex problem: its result does not depend on
a learning rate or on batch order). Accuracy comes with a 95 % bootstrap interval over test images, beside
chance: the accuracy of the best constant answer on the test split (its most frequent class's share; 1/K
for balanced classes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from upconv.core import metrics as M
from upconv.nets.encoder import Encoder


def pool_size(shape: tuple[int, ...], dims: int) -> int | None:
    """The side s of the pooled grid for a (C, H, W) map (None: a vector, or a map small enough as it is)."""
    if len(shape) != 3 or shape[0] * shape[1] * shape[2] <= dims:
        return None
    c, h, w = shape
    s = min(h, w)
    while s > 1 and c * s * s > dims:
        s -= 1
    return s


def describe_pooling(shape: tuple[int, ...], dims: int) -> str:
    s = pool_size(shape, dims)
    n = shape[0] * s * s if s else int(torch.tensor(shape).prod())
    return f"average-pooled to {s}×{s} ({n} features)" if s else f"as it is ({n} features)"


def pooled(features: Tensor, dims: int) -> Tensor:
    """(B, C, H, W) or (B, D) features -> (B, D') probe inputs (module docstring)."""
    s = pool_size(tuple(features.shape[1:]), dims)
    if s is not None:
        features = F.adaptive_avg_pool2d(features, s)  # (B, C, s, s)
    return features.flatten(1).float()


def probe_features(
    encoder: Encoder, batches: Iterable[tuple[Tensor, Tensor]], layers: list[str], dims: int
) -> tuple[dict[str, Tensor], Tensor]:
    """Pooled features of every layer (one encoder pass per batch) on the CPU, and the labels."""
    feats: dict[str, list[Tensor]] = {n: [] for n in layers}
    labels = []
    with torch.no_grad():
        for x, y in batches:
            out = encoder(x.to(encoder.device), layers)
            for n in layers:
                feats[n].append(pooled(out[n], dims).cpu())
            labels.append(y.cpu())
    return {n: torch.cat(v) for n, v in feats.items()}, torch.cat(labels).long()


AT_CHANCE = "at chance"  # a probe's verdict when its interval reaches chance


@dataclass
class ProbeResult:
    accuracy: tuple[float, float, float]  # mean, 95 % interval
    chance: float
    n: int
    inputs: int  # features the probe reads

    @property
    def at_chance(self) -> bool:
        """No better than chance: the interval reaches the best constant answer's accuracy."""
        return self.accuracy[1] <= self.chance


def fit_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, l2: float = 1e-4, steps: int = 50
) -> Tensor:
    """Per-test-image correctness (N,) of a logistic-regression probe fitted on the training features."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mu) / sd, (test_x - mu) / sd  # (N, D)
    k = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(a.shape[1], k, requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=steps, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, train_y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((b @ w + bias).argmax(1) == test_y).float()  # (N,)


def linear_probe(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *, n_boot: int = 1000, seed: int = 0
) -> ProbeResult:
    """Fit on ``train`` = (features, labels), score on ``test``; accuracy with its interval beside chance."""
    (tx, ty), (vx, vy) = train, test
    correct = fit_probe(tx, ty, vx, vy)
    chance = float(torch.bincount(vy).max() / len(vy))  # the best constant answer
    mean, lo, hi = M.bootstrap_ci(correct, n_boot=n_boot, seed=seed)
    return ProbeResult((float(mean), float(lo), float(hi)), chance, len(vy), int(tx.shape[1]))

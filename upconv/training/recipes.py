"""Training recipes in plain torch, shared by the Lightning modules and by code that must not import
Lightning (the privacy attacks train victims, shadows and inverse networks in plain loops).

Decoders (``DecoderRecipe``): AdamW, short warm-up, cosine decay, the health guard.
Classifier: SGD with Nesterov momentum, a one-cycle learning rate stepped every batch, label smoothing,
random crop + flip on the device, the architecture's own input normalisation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upconv.data.augment import random_crop_flip, to_unit
from upconv.nets.builtin import ARCHITECTURES, build_architecture
from upconv.nets.encoder import Encoder
from upconv.training.health import GuardSettings, HealthGuard


@dataclass(frozen=True)
class ClassifierRecipe:
    """How a built-in architecture is trained as a classifier (``ClassifierModule`` and ``train_classifier``)."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    pct_start: float = 0.15  # share of the one-cycle schedule spent warming up

    def optimizer(
        self, params: object, total_steps: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """SGD with Nesterov momentum and a one-cycle schedule over ``total_steps`` (stepped every batch)."""
        opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, pct_start=self.pct_start, total_steps=max(1, total_steps)
        )
        return opt, sched

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


def normalizer(arch: str, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The architecture's input normalisation, (1, C, 1, 1) mean and std (what its ``Encoder`` applies)."""
    spec = ARCHITECTURES[arch]
    return (
        torch.tensor(spec.mean, device=device).view(1, -1, 1, 1),
        torch.tensor(spec.std, device=device).view(1, -1, 1, 1),
    )


# A classifier's forward pass with an extra loss term: (model, normalised images, [0, 1] images) -> (logits, term).
# Trained defences (NoPeek's distance correlation, an adversarial inverse network's reward) come in here.
ExtraLoss = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


def _model_to_train(arch: str | Encoder, num_classes: int, device: str | torch.device) -> tuple[nn.Module, str]:
    """A fresh built-in architecture, or a trainable copy of an Encoder's model (a user's model, fine-tuned
    from its weights); and the name that says which."""
    if isinstance(arch, Encoder):
        return copy.deepcopy(arch.model).requires_grad_(True).to(device).train(), arch.name
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"a classifier to train must be a built-in architecture ({', '.join(ARCHITECTURES)}) or an Encoder; "
            f"got '{arch}'"
        )
    return build_architecture(arch, num_classes=num_classes).to(device).train(), arch


def train_classifier(
    arch: str | Encoder,
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int = 10,
    epochs: int = 10,
    batch_size: int = 128,
    recipe: ClassifierRecipe = ClassifierRecipe(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    extra_loss: ExtraLoss | None = None,
) -> nn.Module:
    """Train a built-in architecture on in-memory images (uint8 or [0, 1] float, (N, C, H, W)) with
    ``recipe``, in a plain loop; returns the network on the CPU in eval mode.

    ``arch`` may be an ``Encoder`` instead of a name: a copy of its model is fine-tuned from its weights with
    its own normalisation (``num_classes`` is then the model's). ``extra_loss`` replaces the forward pass with
    one that also returns a term added to the recipe's loss (a trained defence's penalty)."""
    if len(images) < 2:
        raise ValueError(f"training a classifier needs at least 2 images; got {len(images)}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model, name = _model_to_train(arch, num_classes, device)
    if isinstance(arch, Encoder):
        mean, std = arch.mean.to(device), arch.std.to(device)
    else:
        mean, std = normalizer(name, device)
    per_epoch = max(1, len(images) // batch_size)
    opt, sched = recipe.optimizer(model.parameters(), epochs * per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for i in range(per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = random_crop_flip(to_unit(images[idx]).to(device), pad=4)  # (B, C, H, W)
            if extra_loss is None:
                loss = recipe.loss(model((x - mean) / std), labels[idx].to(device))
            else:
                logits, term = extra_loss(model, (x - mean) / std, x)
                loss = recipe.loss(logits, labels[idx].to(device)) + term
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval().cpu()


class WarmupCosine:
    """Learning-rate factor: linear warm-up over ``warmup`` steps from ``1 / warmup``, then a cosine decay to
    ``floor`` at ``total_steps``. A callable object rather than a closure, so a scheduler's state (and with it
    the planned length, checked on resume) is saved in checkpoints."""

    def __init__(self, total_steps: int, warmup: int, floor: float = 0.0) -> None:
        self.total_steps, self.warmup, self.floor = max(1, total_steps), max(0, warmup), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class DecoderRecipe:
    """How every UpconvNet decoder is trained: ``InversionModule`` (``train.py``, where LightningCLI reads it as
    ``--model.init_args.recipe.lr`` and the like) and the privacy attacks' inverse networks
    (``upconv.privacy.attacks``) alike. Each knob has its one default here.

    AdamW at ``lr`` after a short linear warm-up (``warmup`` of the run, at most ``max_warmup`` steps), cosine
    decay to 0; each decoder in its own parameter group; optional per-decoder gradient clipping (``grad_clip``,
    off by default: under Adam it barely changes a blow-up's step, see docs/training.md); the ``HealthGuard``
    acting as ``guard`` says.
    """

    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05
    max_warmup: int = 500
    grad_clip: float | None = None
    guard: GuardSettings = GuardSettings()

    def __post_init__(self) -> None:
        if isinstance(self.guard, dict):  # read from a checkpoint's or a YAML's plain fields
            object.__setattr__(self, "guard", GuardSettings(**self.guard))
        if not self.grad_clip:
            object.__setattr__(self, "grad_clip", None)  # 0 means off, as None does
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.warmup <= 1 or (self.grad_clip or 1) < 0:
            raise ValueError(
                f"a decoder recipe needs lr > 0, weight_decay ≥ 0, 0 ≤ warmup ≤ 1 and grad_clip a positive "
                f"gradient norm (0 or None: no clipping); got lr={self.lr}, weight_decay={self.weight_decay}, "
                f"warmup={self.warmup}, grad_clip={self.grad_clip}"
            )

    @classmethod
    def of(cls, value: DecoderRecipe | dict[str, Any] | None) -> DecoderRecipe:
        """A recipe from itself, its plain fields (``as_dict``; a checkpoint's or a YAML's) or None (the default)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(
                    f"unknown decoder-recipe field(s) {', '.join(unknown)}; a recipe has "
                    f"{', '.join(f.name for f in fields(cls))}"
                )
            return cls(**value)
        raise ValueError(f"a decoder recipe must be a DecoderRecipe or a mapping of its fields; got {value!r}")

    @classmethod
    def from_legacy(cls, hparams: dict[str, Any]) -> DecoderRecipe:
        """The recipe of an older checkpoint or config, which kept its fields loose beside the model's (``lr``,
        ``skip_factor`` …); a field it did not have takes its default."""
        guard = {f.name: hparams[f.name] for f in fields(GuardSettings) if f.name in hparams}
        own = {f.name: hparams[f.name] for f in fields(cls) if f.name in hparams and f.name != "guard"}
        return cls(**own, guard=GuardSettings(**guard))

    def as_dict(self) -> dict[str, Any]:
        """Plain fields (what checkpoints and hparams.yaml keep: they load with ``weights_only=True``)."""
        return asdict(self)

    def warmup_steps(self, total_steps: int) -> int:
        return min(self.max_warmup, max(1, round(self.warmup * total_steps)))

    def optimizer(
        self, groups: list[dict], total_steps: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW over ``groups`` (one per decoder; fused on CUDA and CPU; a group's own ``lr`` replaces the
        recipe's) and its warm-up + cosine schedule, stepped every batch."""
        fused = torch.device(device).type in ("cuda", "cpu")
        opt = torch.optim.AdamW(
            groups, lr=self.lr, weight_decay=self.weight_decay, fused=fused or None, foreach=None if fused else True
        )
        shape = WarmupCosine(total_steps, self.warmup_steps(total_steps))
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, [shape] * len(groups))

    def health_guard(self, decoders: nn.ModuleDict) -> HealthGuard:
        return HealthGuard(decoders, self.guard)

    def clip_gradients(self, decoders: nn.ModuleDict) -> None:
        """Each decoder's gradient norm clipped to ``grad_clip`` on its own (nothing when clipping is off)."""
        if self.grad_clip:
            clip_grad_norms(decoders, self.grad_clip)


def clip_grad_norms(decoders: nn.ModuleDict, max_norm: float) -> None:
    """Clip each decoder's gradient norm to ``max_norm`` on its own (no host synchronisation): one decoder's
    spike never rescales another's step, which a global norm over all decoders would do."""
    for decoder in decoders.values():
        grads = [p for p in decoder.parameters() if p.grad is not None]
        if grads:
            torch.nn.utils.clip_grad_norm_(grads, max_norm, foreach=True)

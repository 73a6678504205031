"""Per-decoder training health: tame a spike's gradient on the device, restore a diverged decoder from a state
confirmed a few steps earlier, or mark it failed — and never act on a spike that is already over.

Every step, on the device (``gate``): a loss that is non-finite or above ``skip_factor`` × the layer's level (an
average of the losses it accepted) is rejected; the caller weights it by √(level / loss) (an ordinary step's
gradient norm, since an MSE gradient grows as √loss) or by 0 if non-finite, and it never moves the level. Every
``check_every`` steps (``check``, one read-back): ``patience`` rejections in a row, or a level above
``spike_factor`` × the best level, restore the last confirmed state (weights, buffers, optimizer moments) with
the learning rate × ``lr_backoff``; after ``max_recoveries``, the decoder is failed (learning rate 0). The
state at a check is confirmed by the next step's loss. Events go to the log and, via ``record()``, into
checkpoints. Under data parallelism the caller passes losses averaged over ranks, so every rank decides alike.
See docs/training.md, "Training health".
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # every learning-rate entry a scheduler may read back
# Rows of the guard's (9, L) device statistics; SKIPPED … FIRST_BAD describe the steps since the last check.
LEVEL, LATEST, STREAK, FROZEN, SKIPPED, NONFINITE, FIRST_OK, SEEN, FIRST_BAD = range(9)


@dataclass
class HealthEvent:
    step: int  # the check at which the guard acted
    layer: str
    kind: str  # "non-finite loss", "loss spike", "loss drift" or "skipped steps"
    loss: float | None  # latest loss at the check (None if it was not finite)
    reference: float  # the layer's reference level
    action: str  # "restored …", "failed …" or "dropped the gradient of N steps"
    since: int | None = None  # the first step whose loss the guard rejected in that stretch


@dataclass(frozen=True)
class GuardSettings:
    """When the ``HealthGuard`` acts; part of every decoder recipe (``DecoderRecipe.guard``), the one place its
    defaults are written.

    Args:
        skip_factor: a loss above this multiple of the layer's level (or non-finite) is rejected on the device.
        patience: a layer whose latest ``patience`` losses were all rejected has diverged.
        spike_factor: a level above this multiple of the reference (the level at the last good state) has
            diverged too (a slow drift that never triggers a rejection).
        lr_backoff: a recovered decoder's learning rate is multiplied by this.
        max_recoveries: recoveries allowed per decoder before it is marked failed.
        check_every: steps between checks (each check reads the statistics back once).
        ema_beta: smoothing of the per-layer level (0.9: about the last 10 accepted steps).
    """

    skip_factor: float = 10.0
    patience: int = 2
    spike_factor: float = 4.0
    lr_backoff: float = 0.5
    max_recoveries: int = 3
    check_every: int = 4
    ema_beta: float = 0.9

    def __post_init__(self) -> None:
        if (
            self.skip_factor <= 1
            or self.spike_factor <= 1
            or self.patience < 1
            or self.check_every < 1
            or self.max_recoveries < 0
            or not 0 < self.lr_backoff <= 1
            or not 0 <= self.ema_beta < 1
        ):
            raise ValueError(
                f"the health guard needs skip_factor, spike_factor > 1, patience, check_every ≥ 1, "
                f"max_recoveries ≥ 0, 0 < lr_backoff ≤ 1 and 0 ≤ ema_beta < 1; got {self}"
            )


class HealthGuard:
    """Health of the decoders in ``decoders``, whose parameters form one optimizer parameter group each,
    in the same order (see ``bind``), acting as ``settings`` say."""

    def __init__(self, decoders: nn.ModuleDict, settings: GuardSettings = GuardSettings()) -> None:
        self.decoders = decoders
        self.layers = list(decoders)
        self.settings = settings
        self.failed: set[str] = set()
        self.recoveries, self.skipped = {n: 0 for n in self.layers}, {n: 0 for n in self.layers}
        self.lr_scale = {name: 1.0 for name in self.layers}
        self.events: list[HealthEvent] = []
        self.reference: dict[str, float] = {}
        self.smoothed: dict[str, float] = {}
        self.snapshot_step = {name: 0 for name in self.layers}
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self._good: dict[str, dict[str, Any]] = {}  # last confirmed good state per decoder
        self._pending: dict[str, dict[str, Any]] = {}  # state at the last check, confirmed by the next loss
        self._stats: Tensor | None = None  # (9, L) on the device, rows LEVEL … FIRST_BAD
        self._window_start = 0  # the batch after the last check
        self.checked_step = -1  # the step of the last check

    def bind(self, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> None:
        """Attach the optimizer (parameter group i = decoder i) and, optionally, its scheduler, and take the
        first snapshot of every decoder. Call it once training state is in place (after a resume's optimizer
        state is loaded), e.g. from Lightning's ``on_train_start``."""
        if len(optimizer.param_groups) != len(self.layers):
            raise ValueError(
                f"the optimizer needs one parameter group per decoder ({len(self.layers)}); "
                f"got {len(optimizer.param_groups)}"
            )
        self.optimizer, self.scheduler = optimizer, scheduler
        for name in self.layers:
            self._good[name] = self._take(name, self.snapshot_step[name])
            self._pending.pop(name, None)
            if name in self.failed:
                self._scale_lr(self.layers.index(name), 0.0, record=False)

    @property
    def active(self) -> list[str]:
        """Layers still training (not failed), in order."""
        return [n for n in self.layers if n not in self.failed]

    def gate(self, losses: Tensor) -> Tensor:
        """Record one step's losses, one per decoder in order ((L,), detached, any device), and return the
        weight each decoder's loss gets this step ((L,)): 1 when accepted, √(level / loss) when far above its
        level, 0 when non-finite or failed (use ``torch.where(w > 0, loss * w, 0)``: 0 × NaN is NaN).
        No value is read back to the host."""
        values = losses.detach().float()  # (L,)
        if self._stats is None or self._stats.device != values.device:
            self._stats = self._fresh_stats(values.device)
        s = self._stats
        level = s[LEVEL]
        finite = torch.isfinite(values)
        skip, beta = self.settings.skip_factor, self.settings.ema_beta
        accept = finite & ((values <= skip * level) | torch.isnan(level)) & (s[FROZEN] == 0)
        s[LEVEL] = torch.where(
            accept, torch.where(torch.isnan(level), values, beta * level + (1 - beta) * values), level
        )
        s[LATEST] = values
        s[STREAK] = torch.where(accept, 0.0, s[STREAK] + 1)
        s[SKIPPED] += (~accept).float()
        s[NONFINITE] += (~finite).float()
        s[FIRST_OK] = torch.where(s[SEEN] == 0, accept.float(), s[FIRST_OK])
        s[FIRST_BAD] = torch.where(~accept & torch.isnan(s[FIRST_BAD]), s[SEEN], s[FIRST_BAD])
        s[SEEN] += 1
        tame = torch.sqrt(level / values.clamp_min(1e-30)).nan_to_num(0.0)  # < 1 where rejected
        return torch.where(accept, 1.0, torch.where(finite & (s[FROZEN] == 0), tame, 0.0))

    def _fresh_stats(self, device: torch.device) -> Tensor:
        stats = torch.zeros(9, len(self.layers), device=device)
        stats[FIRST_BAD] = float("nan")
        stats[LEVEL] = torch.tensor([self.reference.get(n, float("nan")) for n in self.layers])
        stats[LATEST] = stats[LEVEL]
        stats[FROZEN] = torch.tensor([float(n in self.failed) for n in self.layers])
        return stats

    def due(self, step: int) -> bool:
        """Whether ``step`` (optimizer steps taken) is a check."""
        return step % self.settings.check_every == 0

    def check(self, step: int) -> list[HealthEvent]:
        """Judge every active decoder; recover or fail the diverged ones; confirm and take good states."""
        self.checked_step = step
        if self._stats is None:
            return []
        stats = self._stats.tolist()  # the one host synchronisation
        new: list[HealthEvent] = []
        for i, name in enumerate(self.layers):
            level, latest, streak, _, skipped, nonfinite, first_ok, seen, first_bad = (row[i] for row in stats)
            if name in self.failed or seen == 0:
                continue
            self.smoothed[name] = level
            self.reference.setdefault(name, level)
            # steps are numbered by batch: the window began at batch _window_start; a streak of k rejections
            # began k steps before the last one
            since = self._window_start + int(seen - streak) if streak else None
            if first_ok:  # the first loss on the candidate state was accepted: it is good
                self._promote(name)
            if streak >= self.settings.patience:
                kind = "non-finite loss" if not math.isfinite(latest) else "loss spike"
                new.append(self._recover(i, name, step, kind, latest, since))
            elif level > self.settings.spike_factor * self.reference[name]:
                new.append(self._recover(i, name, step, "loss drift", level, since))
            else:
                if skipped:
                    self.skipped[name] += int(skipped)
                    n, bad = int(seen), int(nonfinite)
                    action = f"tamed the gradient of {int(skipped)} of {n} steps ({bad} non-finite, dropped)"
                    ref, first = self.reference[name], self._window_start + int(first_bad)
                    new.append(HealthEvent(step, name, "skipped steps", _finite(latest), ref, action, first))
                if streak == 0:  # accepted just now: the current state is the next candidate
                    self._pending[name] = self._take(name, step, into=self._pending.get(name))
                else:
                    self._pending.pop(name, None)
        self._stats[SKIPPED:] = 0  # a new window
        self._stats[FIRST_BAD] = float("nan")
        self._window_start = step  # the next loss is batch `step`'s (computed on the state after `step` updates)
        self.events += new
        return new

    def _recover(self, i: int, name: str, step: int, kind: str, loss: float, since: int | None) -> HealthEvent:
        self._restore(name)
        ref = self.reference[name]
        self._stats[LEVEL, i] = self._stats[LATEST, i] = ref
        self._stats[STREAK, i] = 0
        self.smoothed[name] = ref
        self.skipped[name] += int(self._stats[SKIPPED, i].item())
        if self.recoveries[name] >= self.settings.max_recoveries:
            self.failed.add(name)
            self._stats[FROZEN, i] = 1
            self._scale_lr(i, 0.0)
            action = (
                f"failed after {self.recoveries[name]} recoveries: kept its last good weights "
                f"(step {self.snapshot_step[name]}) and stopped training it"
            )
        else:
            self.recoveries[name] += 1
            self._scale_lr(i, self.settings.lr_backoff)
            action = (
                f"restored its state from step {self.snapshot_step[name]}, learning rate × "
                f"{self.lr_scale[name]:g} (recovery {self.recoveries[name]} of {self.settings.max_recoveries})"
            )
        log.warning(
            "decoder %s %s at step %d (loss %s, reference %.4g): %s",
            name,
            kind,
            step,
            f"{loss:.4g}" if math.isfinite(loss) else "non-finite",
            ref,
            action,
        )
        return HealthEvent(step, name, kind, _finite(loss), ref, action, since)

    def _take(self, name: str, step: int, into: dict[str, Any] | None = None) -> dict[str, Any]:
        return take_state(self.decoders[name], self.optimizer, step, into)

    def _promote(self, name: str) -> None:
        pending = self._pending.pop(name, None)
        if pending is not None:
            self._pending[name], self._good[name] = self._good[name], pending  # reuse the old buffers
            self.snapshot_step[name] = pending["step"]
            self.reference[name] = min(self.reference[name], self.smoothed[name])

    def _restore(self, name: str) -> None:
        self._pending.pop(name, None)
        restore_state(self.decoders[name], self.optimizer, self._good[name])

    def _scale_lr(self, i: int, factor: float, record: bool = True) -> None:
        name = self.layers[i]
        if record:
            self.lr_scale[name] *= factor
        if self.optimizer is not None and factor != 1.0:
            scale_lr(self.optimizer, self.scheduler, i, factor)

    def status(self, name: str) -> str:
        if name in self.failed:
            return "failed"
        return "recovered" if self.recoveries[name] else "ok"

    def record(self) -> dict[str, dict[str, Any]]:
        """Per layer: status (ok / recovered / failed), healthy flag, last level of the training loss,
        recoveries, steps whose gradient was dropped, learning-rate scale and events; plain types only
        (checkpoints load with ``weights_only=True``)."""
        out = {}
        for name in self.layers:
            out[name] = {
                "status": self.status(name),
                "healthy": name not in self.failed,
                "final_loss": self.smoothed.get(name),
                "recoveries": self.recoveries[name],
                "skipped_steps": self.skipped[name],
                "lr_scale": self.lr_scale[name],
                "events": [asdict(e) for e in self.events if e.layer == name],
            }
        return out

    def load_record(self, record: dict[str, dict[str, Any]]) -> None:
        """Resume from ``record()``: failures, recovery counts, events and rate scales (the optimizer's own
        state already holds the lowered rates)."""
        for name, r in record.items():
            if name not in self.recoveries:
                continue
            self.recoveries[name] = int(r.get("recoveries", 0))
            self.skipped[name] = int(r.get("skipped_steps", 0))
            self.lr_scale[name] = float(r.get("lr_scale", 1.0))
            if r.get("final_loss") is not None:
                self.smoothed[name] = self.reference[name] = float(r["final_loss"])
            if r.get("status") == "failed":
                self.failed.add(name)
            self.events += [HealthEvent(**e) for e in r.get("events", [])]
        self._stats = None  # rebuilt from the references at the next step


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------- what the guard keeps and changes of a decoder


def take_state(
    decoder: nn.Module, optimizer: torch.optim.Optimizer | None, step: int, into: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Copy a decoder's weights and optimizer state (into ``into``'s buffers when they fit)."""
    weights = decoder.state_dict()
    if into is not None and into["weights"].keys() == weights.keys():
        for k, v in weights.items():
            into["weights"][k].copy_(v)
    else:
        into = {"weights": {k: v.detach().clone() for k, v in weights.items()}}
    into["state"], into["step"] = {}, step
    if optimizer is not None:
        for j, p in enumerate(decoder.parameters()):
            if optimizer.state.get(p):
                into["state"][j] = {
                    k: v.detach().clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()
                }
    return into


def restore_state(decoder: nn.Module, optimizer: torch.optim.Optimizer | None, snap: dict[str, Any]) -> None:
    """Put back what ``take_state`` copied; parameters without optimizer state start afresh at the next step."""
    with torch.no_grad():
        decoder.load_state_dict(snap["weights"])
    for j, p in enumerate(decoder.parameters()):
        if optimizer is not None:
            if j in snap["state"]:
                optimizer.state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in snap["state"][j].items()}
            else:
                optimizer.state.pop(p, None)  # re-initialised at the next step, as at the start
        p.grad = None


def scale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, group: int, factor: float) -> None:
    """Multiply parameter group ``group``'s learning rate, and the scheduler's base rate for it, by ``factor``."""
    entries = optimizer.param_groups[group]
    for key in LR_KEYS:
        if key in entries:
            entries[key] = entries[key] * factor
    base = getattr(scheduler, "base_lrs", None)
    if base is not None:
        base[group] *= factor

"""Per-decoder training health: keep each decoder's divergence its own, recover it, or mark it failed.

Decoders trained in one run share nothing but the frozen encoder's features, so one decoder's blow-up must
never reach another (each has its own gradient clipping and its own optimizer parameter group) and must
never be published as "information lost at that layer". ``HealthGuard`` watches every decoder's loss:

- every step, on the device and without reading anything back (no host synchronisation): a smoothed loss
  (EMA) per layer and a count of non-finite losses;
- every check (once per logging interval and at the end of each epoch: one small read-back), a layer has
  **diverged** when it saw a non-finite loss, or when its smoothed or its latest loss is above
  ``spike_factor`` × its reference level (the smoothed loss at its last good snapshot; at first, its first
  loss). A diverged decoder gets its last good weights *and optimizer state* back and its learning rate
  multiplied by ``lr_backoff``; after ``max_recoveries`` recoveries it is marked **failed**: it keeps its
  last good weights and trains no more. A decoder whose smoothed and latest losses are both within
  ``accept`` × its reference is good: its weights and optimizer state become the new snapshot (both
  losses, because a rising loss runs ahead of its moving average). In between, nothing changes.

Every event is kept (step, layer, what, action), logged, and written into checkpoints by ``record()``, so
evaluation can say beside a layer's number that its decoder recovered or failed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # every learning-rate entry a scheduler may read back


@dataclass
class HealthEvent:
    step: int
    layer: str
    kind: str  # "non-finite loss" or "loss spike"
    loss: Optional[float]  # smoothed loss at the check (None if it was not finite)
    reference: float  # the layer's reference level
    action: str  # "restored …, lr × …" or "failed …"


def clip_grad_norms(decoders: nn.ModuleDict, max_norm: float) -> None:
    """Clip each decoder's gradient norm to ``max_norm`` on its own (no host synchronisation): one decoder's
    spike never rescales another's step, which a global norm over all decoders would do."""
    for decoder in decoders.values():
        grads = [p for p in decoder.parameters() if p.grad is not None]
        if grads:
            torch.nn.utils.clip_grad_norm_(grads, max_norm, foreach=True)


class HealthGuard:
    """Health of the decoders in ``decoders``, whose parameters form one optimizer parameter group each,
    in the same order (see ``bind``).

    Args:
        spike_factor: a smoothed loss above this multiple of the layer's reference level is a divergence.
        lr_backoff: a recovered decoder's learning rate is multiplied by this.
        max_recoveries: recoveries allowed per decoder before it is marked failed.
        accept: a state is snapshotted as good while its losses stay within this multiple of the reference.
        ema_beta: smoothing of the per-layer loss (0.9: about the last 10 steps).
    """

    def __init__(self, decoders: nn.ModuleDict, spike_factor: float = 4.0, lr_backoff: float = 0.5,
                 max_recoveries: int = 3, accept: float = 1.5, ema_beta: float = 0.9) -> None:
        if spike_factor <= 1:
            raise ValueError(f"spike_factor must be > 1 (a multiple of the layer's usual loss); got {spike_factor}")
        if not 0 < lr_backoff <= 1:
            raise ValueError(f"lr_backoff must be in (0, 1]; got {lr_backoff}")
        if not 1 <= accept < spike_factor:
            raise ValueError(f"accept must be in [1, spike_factor); got {accept} with spike_factor {spike_factor}")
        if max_recoveries < 0:
            raise ValueError(f"max_recoveries must be ≥ 0; got {max_recoveries}")
        self.decoders = decoders
        self.layers = list(decoders)
        self.spike_factor, self.lr_backoff, self.max_recoveries, self.accept, self.ema_beta = (
            spike_factor, lr_backoff, max_recoveries, accept, ema_beta)
        self.failed: set[str] = set()
        self.recoveries = {name: 0 for name in self.layers}
        self.lr_scale = {name: 1.0 for name in self.layers}
        self.events: list[HealthEvent] = []
        self.reference: dict[str, float] = {}
        self.smoothed: dict[str, float] = {}
        self.snapshot_step = {name: 0 for name in self.layers}
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Any = None
        self._good: dict[str, dict[str, Any]] = {}  # last confirmed good state per decoder
        self._pending: dict[str, dict[str, Any]] = {}  # state at the last good check, not yet vouched for
        self._stats: Optional[Tensor] = None  # (5, L) on the device: EMA, latest, first, non-finite count, steps
        self._index: dict[tuple[tuple[str, ...], str], Tensor] = {}

    # ------------------------------------------------------------------ wiring
    def bind(self, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> None:
        """Attach the optimizer (parameter group i = decoder i) and, optionally, its scheduler, and take the
        first snapshot of every decoder. Call it once training state is in place (after a resume's optimizer
        state is loaded), e.g. from Lightning's ``on_train_start``."""
        if len(optimizer.param_groups) != len(self.layers):
            raise ValueError(f"the optimizer needs one parameter group per decoder ({len(self.layers)}); "
                             f"got {len(optimizer.param_groups)}")
        self.optimizer, self.scheduler = optimizer, scheduler
        for name in self.layers:
            self._good[name] = self._take(name, self.snapshot_step[name])
            self._pending.pop(name, None)

    @property
    def active(self) -> list[str]:
        """Layers still training (not failed), in order."""
        return [n for n in self.layers if n not in self.failed]

    # ------------------------------------------------------------------ every step (device only)
    def observe(self, losses: Tensor, layers: list[str]) -> None:
        """Record one step's per-layer losses (detached, any device). No value is read back to the host."""
        values = losses.detach().float()  # (k,)
        if self._stats is None or self._stats.device != values.device:
            self._stats = torch.zeros(5, len(self.layers), device=values.device)
            self._stats[:3] = float("nan")
        key = (tuple(layers), str(values.device))
        if key not in self._index:  # made once per set of layers: a fresh host→device copy could stall
            self._index[key] = torch.tensor([self.layers.index(n) for n in layers], device=values.device)
        idx = self._index[key]
        ema, latest, first, bad, seen = self._stats[:, idx]  # each (k,)
        finite, fresh = torch.isfinite(values), seen == 0
        blended = torch.where(fresh, values, self.ema_beta * ema + (1 - self.ema_beta) * values)
        self._stats[:, idx] = torch.stack([
            torch.where(finite, blended, ema), torch.where(finite, values, latest),
            torch.where(finite & fresh, values, first), bad + (~finite).float(), seen + finite.float()])

    # ------------------------------------------------------------------ checks (one read-back)
    def check(self, step: int) -> list[HealthEvent]:
        """Judge every active decoder; recover or fail the diverged ones; snapshot the good ones."""
        if self._stats is None:
            return []
        ema, latest, first, bad, seen = self._stats.tolist()  # the one host synchronisation
        new: list[HealthEvent] = []
        for i, name in enumerate(self.layers):
            if name in self.failed or (seen[i] == 0 and bad[i] == 0):
                continue
            level = max(ema[i], latest[i]) if seen[i] > 0 else None  # a rising loss runs ahead of its EMA
            if level is not None:
                self.smoothed[name] = ema[i]
                self.reference.setdefault(name, first[i])
            ref = self.reference.get(name, float("nan"))
            if bad[i] > 0:
                kind = "non-finite loss"
            elif level > self.spike_factor * ref:
                kind = "loss spike"
            else:
                if level <= self.accept * ref:
                    # The losses since the last check were computed on the state snapshotted then: it is
                    # confirmed good. Today's state is only a candidate until the next check's losses vouch for it.
                    self._promote(name, step)
                    self.reference[name] = ema[i]
                else:
                    self._pending.pop(name, None)  # neither good nor bad: keep the last confirmed state
                continue
            new.append(self._recover(i, name, step, kind, level, ref))
        self.events += new
        return new

    def _recover(self, i: int, name: str, step: int, kind: str, level: Optional[float], ref: float) -> HealthEvent:
        self._restore(name)
        self._stats[:2, i] = ref if math.isfinite(ref) else float("nan")
        self._stats[3, i] = 0
        self._stats[4, i] = 1 if math.isfinite(ref) else 0
        self.smoothed[name] = ref
        if self.recoveries[name] >= self.max_recoveries:
            self.failed.add(name)
            for p in self.decoders[name].parameters():
                p.grad = None  # an optimizer skips parameters without gradients: it trains no more
            action = (f"failed after {self.recoveries[name]} recoveries: kept its last good weights "
                      f"(step {self.snapshot_step[name]}) and stopped training it")
            log.warning("decoder %s %s at step %d (loss %s, reference %.4g): %s", name, kind, step,
                        "non-finite" if level is None else f"{level:.4g}", ref, action)
        else:
            self.recoveries[name] += 1
            self._scale_lr(i, self.lr_backoff)
            action = (f"restored its state from step {self.snapshot_step[name]}, learning rate × "
                      f"{self.lr_scale[name]:g} (recovery {self.recoveries[name]} of {self.max_recoveries})")
            log.warning("decoder %s %s at step %d (loss %s, reference %.4g): %s", name, kind, step,
                        "non-finite" if level is None else f"{level:.4g}", ref, action)
        return HealthEvent(step, name, kind, level, ref, action)

    # ------------------------------------------------------------------ snapshots
    def _take(self, name: str, step: int, into: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """Copy a decoder's weights and optimizer state (into ``into``'s buffers when they fit)."""
        weights = self.decoders[name].state_dict()
        if into is not None and into["weights"].keys() == weights.keys():
            for k, v in weights.items():
                into["weights"][k].copy_(v)
        else:
            into = {"weights": {k: v.detach().clone() for k, v in weights.items()}}
        into["state"], into["step"] = {}, step
        if self.optimizer is not None:
            for j, p in enumerate(self.decoders[name].parameters()):
                if self.optimizer.state.get(p):
                    into["state"][j] = {k: v.detach().clone() if torch.is_tensor(v) else v
                                        for k, v in self.optimizer.state[p].items()}
        return into

    def _promote(self, name: str, step: int) -> None:
        pending = self._pending.pop(name, None)
        if pending is not None:
            self._pending[name], self._good[name] = self._good[name], pending  # reuse the old buffers
            self.snapshot_step[name] = pending["step"]
        self._pending[name] = self._take(name, step, into=self._pending.get(name))

    def _restore(self, name: str) -> None:
        snap = self._good[name]
        self._pending.pop(name, None)
        with torch.no_grad():
            self.decoders[name].load_state_dict(snap["weights"])
        for j, p in enumerate(self.decoders[name].parameters()):
            if self.optimizer is not None:
                if j in snap["state"]:
                    self.optimizer.state[p] = {k: v.clone() if torch.is_tensor(v) else v
                                               for k, v in snap["state"][j].items()}
                else:
                    self.optimizer.state.pop(p, None)  # re-initialised at the next step, as at the start
            p.grad = None

    def _scale_lr(self, i: int, factor: float) -> None:
        name = self.layers[i]
        self.lr_scale[name] *= factor
        if self.optimizer is None or factor == 1.0:
            return
        group = self.optimizer.param_groups[i]
        for key in LR_KEYS:
            if key in group:
                group[key] = group[key] * factor
        base = getattr(self.scheduler, "base_lrs", None)
        if base is not None:
            base[i] *= factor

    # ------------------------------------------------------------------ records
    def status(self, name: str) -> str:
        if name in self.failed:
            return "failed"
        return "recovered" if self.recoveries[name] else "ok"

    def record(self) -> dict[str, dict[str, Any]]:
        """Per layer: status (ok / recovered / failed), healthy flag, last smoothed training loss, recoveries,
        learning-rate scale and events; plain types only (checkpoints load with ``weights_only=True``)."""
        out = {}
        for name in self.layers:
            out[name] = {
                "status": self.status(name), "healthy": name not in self.failed,
                "final_loss": self.smoothed.get(name), "recoveries": self.recoveries[name],
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
            self.lr_scale[name] = float(r.get("lr_scale", 1.0))
            if r.get("final_loss") is not None:
                self.smoothed[name] = self.reference[name] = float(r["final_loss"])
            if r.get("status") == "failed":
                self.failed.add(name)
            self.events += [HealthEvent(**e) for e in r.get("events", [])]

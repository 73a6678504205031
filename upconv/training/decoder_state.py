"""What the health guard keeps and changes of a decoder: a copy of its weights and optimizer moments, a
restore from that copy, its learning rate (and its scheduler's base rate), and its own gradient clip."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # every learning-rate entry a scheduler may read back


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


def clip_grad_norms(decoders: nn.ModuleDict, max_norm: float) -> None:
    """Clip each decoder's gradient norm to ``max_norm`` on its own (no host synchronisation): one decoder's
    spike never rescales another's step, which a global norm over all decoders would do."""
    for decoder in decoders.values():
        grads = [p for p in decoder.parameters() if p.grad is not None]
        if grads:
            torch.nn.utils.clip_grad_norm_(grads, max_norm, foreach=True)

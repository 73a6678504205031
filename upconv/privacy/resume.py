"""Resumable privacy runs: every trained part and every finished point of ``upconv privacy``,
``privacy-frontier`` and ``privacy-budget`` is a unit of ``upconv.core.units`` under ``<out>/points/``, written
atomically with the settings that produced it. A killed run keeps each finished unit; re-running the same
command reuses them (and says how many), a unit whose settings changed is refused with one line naming them
(redone under ``--overwrite``), and the report is written from the units at the end. The trained networks in
a unit are plain state dicts (read back with ``weights_only=True``), rebuilt around the encoder they belong to.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from upconv.core.files import check_out, load_torch_file
from upconv.core.units import Unit, UnitStore, plain
from upconv.nets.encoder import Encoder
from upconv.privacy.attacks import build_inverter
from upconv.privacy.sweep import by_key, by_name

POINTS = "points"  # the unit store's folder inside a run folder


def open_store(out: str | os.PathLike | None, overwrite: bool = False) -> UnitStore | None:
    """The unit store of run folder ``out`` (None without one), after the one-line check that ``out`` is new,
    empty, or a run folder with units to resume, whose report is then written anew (any other non-empty
    folder needs ``overwrite``)."""
    if out is None:
        return None
    if not os.path.isdir(os.path.join(out, POINTS)):
        check_out(out, overwrite)
    return UnitStore(os.path.join(out, POINTS), overwrite=overwrite)


class Resume:
    """Runs units through ``store`` (None: nothing is kept, every unit is computed), recording which were
    reused and which computed, and the wall time per stage, a reused unit's as it was recorded."""

    def __init__(self, store: UnitStore | None, clock: Any = None) -> None:
        self.store = store
        self.clock = clock  # times each computed unit's stage (``upconv.privacy.stages.Clock``)
        self.reused: list[str] = []
        self.computed: list[str] = []
        self.timings: dict[str, float] = clock.timings if clock is not None else {}

    def run(
        self,
        unit: Unit,
        stage: str | None,
        compute: Callable[[], Any],
        save: Callable[[Any, str], dict[str, Any]],
        load: Callable[[str, dict[str, Any]], Any],
    ) -> Any:
        """``load(folder, results)`` of ``unit``: of the finished one, or of the one that ``compute()`` makes now
        (timed as ``stage``), whose value ``save(value, folder)`` writes into the unit's folder, returning what
        the unit reports (plain JSON values). Both ways go through ``load``, so a resumed run sees exactly what
        an uninterrupted one does."""
        if self.store is not None and self.store.done(unit):
            record = self.store.record(unit.key)
            self.reused.append(unit.key)
            self.add_times(record["results"].get("timings_s", {}))
            return load(self.store.folder(unit.key), record["results"])
        before = dict(self.timings)
        with self._writing(unit) as w:
            value = self.clock.timed(stage, compute) if stage and self.clock else compute()
            w["results"].update(save(value, w["folder"]))
            w["results"]["timings_s"] = {
                k: v - before.get(k, 0.0) for k, v in self.timings.items() if v != before.get(k)
            }
            out = load(w["folder"], plain(w["results"]))
        self.computed.append(unit.key)
        return out

    def add_times(self, timings: dict[str, float]) -> None:
        for k, v in timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v

    def summary(self) -> dict[str, list[str]]:
        return {"reused": list(self.reused), "computed": list(self.computed)}

    @contextlib.contextmanager
    def _writing(self, unit: Unit) -> Iterator[dict[str, Any]]:
        if self.store is not None:
            with self.store.writing(unit) as w:
                yield w
        else:  # no run folder: the unit's files go to a folder that is dropped
            with tempfile.TemporaryDirectory() as tmp:
                yield {"folder": tmp, "results": {}}


def resumed_line(units: dict[str, list[str]], out: str | None) -> str | None:
    """One line for the command: how many units (points among them) were reused from ``out``; None if none."""
    reused = units.get("reused", [])
    if not reused:
        return None
    total = len(reused) + len(units.get("computed", []))
    points = sum(k.startswith(("points/", "budgets/")) for k in reused)
    where = os.path.join(out, POINTS) if out else "the run folder"
    return f"resumed {where}: reused {len(reused)} of {total} units ({points} points), computed {total - len(reused)}"


# ---------------------------------------------------------------- the networks a unit holds
Nets = dict[tuple[str, str], nn.Module]  # (kind, layer) -> inverse network


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_nets(nets: Nets, folder: str, name: str = "inverters.pt") -> None:
    """Every inverse network's weights in one file, keyed "kind layer"."""
    torch.save(by_name({key: cpu_state(net) for key, net in nets.items()}), os.path.join(folder, name))


def load_nets(encoder: Encoder, folder: str, width: int, name: str = "inverters.pt") -> Nets:
    """The inverse networks of ``save_nets``, rebuilt for ``encoder``'s layers, frozen, on its device."""
    states = load_torch_file(os.path.join(folder, name), "inverse networks of a finished unit")
    nets = {}
    for (kind, layer), state in by_key(states).items():
        net = build_inverter(kind, encoder, layer, width)
        net.load_state_dict(state)
        nets[(kind, layer)] = net.to(encoder.device).eval().requires_grad_(False)
    return nets


def load_state(folder: str, name: str) -> dict[str, Tensor]:
    return load_torch_file(os.path.join(folder, name), "weights of a finished unit")


def with_state(template: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """A copy of ``template`` (the same architecture) holding ``state``, in eval mode on the CPU."""
    model = copy.deepcopy(template).cpu()
    model.load_state_dict(state)
    return model.eval()

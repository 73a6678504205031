"""The points of a privacy run, each one unit of the run folder (``upconv.privacy.resume``): a point is
(defence, strength, split layer), the undefended one first, and its unit holds the adaptive attackers trained
on its features, the grids' reconstructions (undefended) and the rows of every attack on it (leakage and
utility). A trained defence's retrained victim is a unit of its own (``defended/...``), so a run killed while
attacking keeps it; so are each layer's Jacobian samples (``fisher/<layer>``), from which the
Fisher-information bound beside a noise point's rows is derived (``upconv.privacy.bounds``).

A point's settings name everything its rows depend on: the victim's weights, the evaluated images, the
attacks, the clean attackers' own settings, the defended victim's, the adaptive attackers' training and the
scoring; a change to any of them is a changed point.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from upconv.core.files import load_torch_file
from upconv.core.runtime import progress
from upconv.core.units import Unit, fingerprint
from upconv.privacy.bounds import bound_row, estimate, mark
from upconv.privacy.config import PrivacyConfig, adaptive_attacks, attack_plan
from upconv.privacy.fisher import JacobianSamples
from upconv.privacy.leakage import Scene, attack_point, scene
from upconv.privacy.point_training import adaptive_record, defended_unit, defended_victim, train_adaptive
from upconv.privacy.resume import Resume, save_nets
from upconv.privacy.splits import Data
from upconv.privacy.stages import Trained, health_notes
from upconv.privacy.sweep import MV_ATTACKS, TRAINED, AttackerKey, Point, by_key


def points(c: PrivacyConfig, layers: list[str]) -> list[Point]:
    """Every point of the run in order: the undefended one per layer, then each defence's strengths per layer."""
    defended = [Point(k, float(s), L) for k, ss in (c.defenses or {}).items() for s in ss for L in layers]
    return [Point("none", None, L) for L in layers] + defended


def point_key(point: Point) -> str:
    kind, s, L = point
    return f"points/none-{L}" if kind == "none" else f"points/{kind}-{s:g}-{L}"


def has_bound(c: PrivacyConfig, point: Point) -> bool:
    return point.defense == "noise" and point.strength > 0 and c.fisher_probes > 0


def point_unit(c: PrivacyConfig, t: Trained, point: Point, data: tuple[Data | None, Data | None], eval_id: str) -> Unit:
    kind, s, L = point
    plan = attack_plan(c, point)
    clean = sorted({a for a, _, who in plan if who == "clean" and a in t.trained_with})
    settings: dict[str, Any] = {"victim": t.victim.weights_hash, "point": [kind, s, L], "eval": eval_id}
    settings |= {"plan": [list(p) for p in plan], "clean": {a: t.trained_with[a] for a in clean}}
    settings["scoring"] = {"n_candidates": c.n_candidates, "n_boot": c.n_boot, "lpips": c.lpips, "seed": c.seed}
    settings["scoring"] |= {"batch_size": c.batch_size, "grid_images": c.grid_images if kind == "none" else None}
    if any(a in MV_ATTACKS and d == "paper" for a, d, _ in plan):
        mv = {"steps": c.mv_steps, "optimizer": c.mv_optimizer, "batch_size": c.mv_batch_size, "tv": c.mv_tv_weight}
        settings["mv"] = mv
    if kind in TRAINED and s != 0:
        settings["defended"] = defended_unit(c, t, point, data[0]).settings
    settings["adaptive"] = adaptive_record(c, point, data)
    return Unit(point_key(point), settings)


class PointRunner:
    """Runs (or reuses) every point of ``c`` on the evaluated images; collects rows, grids and bounds."""

    def __init__(self, c: PrivacyConfig, t: Trained, data: tuple[Data | None, Data | None], resume: Resume) -> None:
        self.c, self.t, self.data, self.resume = c, t, data, resume
        self.rows: list[dict[str, Any]] = []
        self.grid: dict[tuple[str, str, str], Tensor] = {}
        self.bounds: list[dict[str, Any]] = []
        self.fisher: dict[str, JacobianSamples] = {}

    def run(self, layers: list[str], eval_data: tuple[Tensor, Tensor]) -> Scene:
        """Every point in order; returns the scene the attacks shared (its LPIPS model is the run's)."""
        c, t = self.c, self.t
        eval_id = fingerprint(*eval_data)
        s = scene(t, c, layers, eval_data)
        todo = points(c, layers)
        for point in progress(todo, desc="privacy: attacks", total=len(todo), unit="point"):
            unit = point_unit(c, t, point, self.data, eval_id)
            out = self.resume.run(unit, None, lambda p=point: self._compute(p, s), self._save, self._load)
            rows = out["rows"]
            bound = self._bound(point, rows, s.x, eval_id) if has_bound(c, point) else None
            mark(rows, bound)
            self.rows += rows
            self.bounds += [bound] if bound else []
        return s

    def _bound(self, point: Point, rows: list[dict[str, Any]], x: Tensor, eval_id: str) -> dict[str, Any]:
        """The bound at a noise point, from its layer's Jacobian samples (a unit of their own, shared by every
        σ): derived, not stored with the point, so the bound's options never make its attacks run again."""
        _, sigma, L = point
        if L not in self.fisher:
            self.fisher[L] = estimate(self.t, self.c, L, x, eval_id, self.resume)
        return bound_row(self.fisher[L], self.c, L, sigma, rows)

    def _compute(self, point: Point, s: Scene) -> dict[str, Any]:
        c, t = self.c, self.t
        kind = point.defense
        if kind in TRAINED:
            defended_victim(t, c, point, self.data[0], self.resume)
        health = {}
        if adaptive_attacks(c, kind):
            health = self.resume.clock.timed("train adaptive inverters", train_adaptive, t, c, point, self.data)
        rows, grid = attack_point(t, c, point, s, self.resume.clock)
        nets = {}  # this point's adaptive networks (its attackers' keys hold every layer's)
        for a in adaptive_attacks(c, kind):
            trained = t.nets[AttackerKey.adaptive(a, point)].items()
            nets |= {(f"{a}-{k}", layer): n for (k, layer), n in trained if layer == point.layer}
        return {"rows": rows, "grid": grid, "health": health, "point": point, "nets": nets}

    def _save(self, value: dict[str, Any], folder: str) -> dict[str, Any]:
        if value["grid"]:
            torch.save({f"{a} {d}": g for (a, d, _), g in value["grid"].items()}, os.path.join(folder, "grid.pt"))
        if value["nets"]:
            save_nets(value["nets"], folder, "adaptive.pt")
        kind, s, L = value["point"]
        return {"rows": value["rows"], "health": value["health"], "point": [kind, s, L]}

    def _load(self, folder: str, results: dict[str, Any]) -> dict[str, Any]:
        kind, s, L = results["point"]
        if os.path.exists(os.path.join(folder, "grid.pt")):
            for key, g in load_torch_file(os.path.join(folder, "grid.pt"), "grid of a finished point").items():
                a, d = key.split(" ")
                self.grid[(a, d, L)] = g
        fresh = {}
        for attack, records in results["health"].items():
            key = AttackerKey.adaptive(attack, Point(kind, s, L))
            fresh[key] = by_key(records)
            self.t.health.setdefault(key, {}).update(fresh[key])
        self.t.notes += health_notes(fresh)
        return results

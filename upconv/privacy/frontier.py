"""The privacy–utility frontier (``upconv privacy-frontier``): sweep each defence's strength, and plot the
utility the victim keeps (accuracy with its interval) against what each attack recovers (PSNR, SSIM, LPIPS when
cached, re-identification), for clean and adaptive attackers, beside the no-information floors.

It is a privacy run (``run_privacy``) whose points are regrouped into curves: one per (defence, layer, attack,
inverse network, attacker), each starting from the undefended victim (strength "none"). The run folder holds
``frontier.csv`` / ``frontier.json`` (the points and floors), ``frontier_<attack>.png``, ``report.md``, and the
whole privacy run under ``privacy/`` (its report, grids, inverse-network health).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

from upconv.core.files import atomic_folder
from upconv.privacy.bounds import bound_table
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.report import bound_notes, write_privacy_report
from upconv.privacy.result import PrivacyResult
from upconv.privacy.resume import POINTS, open_store
from upconv.privacy.run import run_privacy
from upconv.privacy.splits import Data
from upconv.privacy.sweep import LEAKAGE
from upconv.privacy.sweep_files import plot_curves, write_csv

KEYS = ("defense", "strength", "layer", "attack", "decoder", "attacker")
FIGURES = [c for k in (*LEAKAGE, "utility") for c in (k, f"{k}_lo", f"{k}_hi")]
COLS = [*KEYS, *FIGURES, "psnr_bound", "bound_verdict", "utility_verdict", "floor_verdict", "inverter_health"]


@dataclass
class FrontierConfig(PrivacyConfig):
    """The privacy–utility frontier: a privacy run whose ``defenses`` sweep is read as curves of utility against
    leakage, attacked by clean and adaptive attackers. Every option of ``upconv privacy`` applies; these differ.

    Args:
        attacks: attacks run on the undefended victim (the frontier's attacks are defense_attacks).
        attackers: clean and/or adaptive attackers of every defended point.
        out: run folder (None: write nothing); each finished unit is kept under out/points and reused when the
            same command runs again.
    """

    attacks: list[str] = field(default_factory=lambda: ["black_box_dist"])
    attackers: list[str] = field(default_factory=lambda: ["clean", "adaptive"])
    out: str | None = "runs/privacy_frontier"


def frontier_points(result: PrivacyResult) -> list[dict[str, Any]]:
    """Every defended row as a point, plus each curve's undefended anchor (strength None), ordered by curve."""
    chance = result.settings.get("chance")
    none = {(r["layer"], r["attack"], r["decoder"]): r for r in result.rows if r["defense"] == "none"}
    points, anchored = [], set()
    for r in result.rows:
        if r["defense"] == "none":
            continue
        curve = (r["defense"], r["layer"], r["attack"], r["decoder"], r["attacker"])
        if curve not in anchored:
            anchored.add(curve)
            anchor = none[(r["layer"], r["attack"], r["decoder"])]
            points.append({**anchor, "defense": r["defense"], "strength": None, "attacker": r["attacker"]})
        points.append(dict(r))
    for p in points:
        at_chance = chance is not None and p["utility_lo"] <= chance
        p["utility_verdict"] = "at chance" if at_chance else "ok"
    return [{c: p.get(c) for c in COLS} for p in points]


def _markdown(result: PrivacyResult, points: list[dict[str, Any]]) -> str:
    s = result.settings
    lines = [
        f"# Privacy–utility frontier: {s['encoder']} (weights {s['encoder_weights_hash']})",
        "",
        f"- defences: {s['defenses']}; layers {', '.join(s['layers'])}; attacks {', '.join(s['defense_attacks'])}; "
        f"attackers {', '.join(s['attackers'])}; n = {s['n_eval']} evaluated images; seed {s['seed']}",
        f"- undefended victim accuracy {s['victim_accuracy'][0]:.3f}; chance {s['chance']:.3f}",
        "",
    ]
    lines += [f"> {n}" for n in result.notes] + ([""] if result.notes else [])
    lines += [
        "| defence | strength | layer | attack | inverter | attacker | utility | PSNR dB | PSNR ≤ (unbiased) | SSIM "
        "| re-id | verdicts |",
        "|---|---:|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in points:
        strength = "none" if p["strength"] is None else f"{p['strength']:g}"
        verdicts = [p["floor_verdict"], p["utility_verdict"], p["bound_verdict"]]
        verdicts = ", ".join(v for v in verdicts if v and v != "ok") or "—"
        bound = "—" if p["psnr_bound"] is None else f"{p['psnr_bound']:.2f}"
        lines.append(
            f"| {p['defense']} | {strength} | {p['layer']} | {p['attack']} | {p['decoder']} | {p['attacker']} | "
            f"{p['utility']:.3f} [{p['utility_lo']:.3f}, {p['utility_hi']:.3f}] | {p['psnr']:.2f} | {bound} | "
            f"{p['ssim']:.4f} | {p['reid']:.3f} | {verdicts} |"
        )
    floors = "; ".join(f"{f['attack']}: PSNR {f['psnr']:.2f}, SSIM {f['ssim']:.4f}" for f in result.floor_rows)
    lines += ["", f"Floors ({s.get('floors_source')}): {floors}; re-identification chance {s['reid_chance']:.3f}."]
    if result.bounds:
        lines += ["", "## Fisher-information bound", "", bound_table(result.bounds), "", *bound_notes(result)]
    lines += ["", *[f"![{a}](frontier_{a}.png)" for a in s["defense_attacks"]], ""]
    lines += ["The whole privacy run (grids, inverse-network health, definitions): [privacy/](privacy/report.md)."]
    return "\n".join(lines)


def bound_points(result: PrivacyResult, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The unbiased PSNR bound as a curve per layer of the noise defence, at each point's utility (for plots)."""
    utility = {(p["layer"], p["strength"]): p for p in points if p["defense"] == "noise"}
    out = []
    for b in result.bounds:
        u = utility[(b["layer"], b["strength"])]
        point = {k: u[k] for k in ("utility", "utility_lo", "utility_hi", "layer")}
        point |= {"defense": "noise", "decoder": "unbiased bound", "attacker": "(dFIL)", "psnr": b["psnr_bound"]}
        out.append(point | {"psnr_lo": b["psnr_bound_lo"], "psnr_hi": b["psnr_bound_hi"]})
    return out


def write_frontier(result: PrivacyResult, out: str, overwrite: bool = False) -> str:
    """The frontier's files in ``out``, written to a hidden sibling and moved in together when complete; the
    run's units (``points/``) stay."""
    points = result.points
    with atomic_folder(out, overwrite, keep=(POINTS,)) as tmp:
        write_csv(os.path.join(tmp, "frontier.csv"), COLS, points + result.floor_rows)
        with open(os.path.join(tmp, "frontier.json"), "w") as f:
            body = {"settings": result.settings, "notes": result.notes, "points": points}
            json.dump({**body, "floor_rows": result.floor_rows, "bounds": result.bounds}, f, indent=2)
        for a in result.settings["defense_attacks"]:
            curves = [p for p in points if p["attack"] == a] + bound_points(result, points)
            path = os.path.join(tmp, f"frontier_{a}.png")
            axis = ("utility", f"utility: victim accuracy ({a}'s curves)", False)
            s = result.settings
            plot_curves(curves, result.floor_rows, s["reid_chance"], axis, ("defense", "decoder", "attacker"), path)
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(_markdown(result, points))
        write_privacy_report(result, os.path.join(tmp, "privacy"))
    return os.path.abspath(out)


def run_frontier(
    config: FrontierConfig,
    eval_data: Data,
    victim_data: Data | None = None,
    attacker_data: Data | None = None,
    victim: Any = None,
) -> PrivacyResult:
    """Run the sweep of ``config.defenses`` (as ``run_privacy``), its curves' points in ``result.points``, and,
    with ``config.out``, write the frontier."""
    c = config
    if not c.defenses:
        raise ValueError("the frontier sweeps a defence's strength: give defenses, e.g. {nopeek: [0, 0.5, 2]}")
    store = open_store(c.out, c.overwrite)  # its units: the frontier's points are the privacy run's
    plain = PrivacyConfig(**{f.name: getattr(c, f.name) for f in fields(PrivacyConfig)})
    plain.out = None
    result = run_privacy(plain, eval_data, victim_data, attacker_data, victim, store=store)
    result.points = frontier_points(result)
    if c.out is not None:
        result.out = write_frontier(result, c.out, overwrite=True)  # checked by open_store
    return result

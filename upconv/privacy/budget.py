"""The attacker's budget (``upconv privacy-budget``): leakage against the number of image–feature pairs a
black-box attacker holds (black_box_dist: its own images of the victim's distribution, sent through the
victim), one curve per split layer and inverse network.

Budgets are nested prefixes of one seeded shuffle of the attacker's images, so a larger budget holds every
pair of a smaller one. Every budget trains for the same number of optimisation steps (``inverter_epochs``
epochs of the largest budget), so a curve measures data, not training length: a small budget sees its pairs
many times. The victim is trained (or loaded) once; the floors and verdicts are the privacy run's.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from upconv.core.files import atomic_folder
from upconv.core.runtime import progress, resolve_device
from upconv.core.units import Unit, fingerprint
from upconv.data.augment import to_unit
from upconv.privacy.attacks import train_inverters
from upconv.privacy.config import PrivacyConfig, check_config
from upconv.privacy.leakage import lpips_model, reconstruct, score
from upconv.privacy.result import PrivacyResult
from upconv.privacy.resume import POINTS, Resume, open_store, save_nets
from upconv.privacy.splits import Data
from upconv.privacy.stages import Clock, Trained, given_victim, inverter_record, inverter_settings, train_victim
from upconv.privacy.sweep import AttackerKey
from upconv.privacy.sweep_files import plot_curves, write_csv
from upconv.privacy.verdicts import judge

COLS = ["n_pairs", "layer", "decoder", "epochs", "steps"]
COLS += [c for k in ("psnr", "ssim", "lpips", "reid") for c in (k, f"{k}_lo", f"{k}_hi")]
COLS += ["floor_verdict", "inverter_health"]


@dataclass
class BudgetConfig(PrivacyConfig):
    """Leakage against the attacker's number of image–feature pairs (black_box_dist, undefended victim). The
    options of ``upconv privacy`` that apply keep their meaning; these differ.

    Args:
        budgets: numbers of image–feature pairs (each ≤ n_attacker), e.g. [256, 1024, 4096, 16384].
        attacks: black_box_dist (the attacker's own images through the victim), the only budgeted attack.
        out: run folder (None: write nothing); the victim and each finished budget are kept under out/points and
            reused when the same command runs again.
    """

    budgets: list[int] = field(default_factory=lambda: [256, 1024, 4096])
    attacks: list[str] = field(default_factory=lambda: ["black_box_dist"])
    out: str | None = "runs/privacy_budget"


def check_budget(c: BudgetConfig, n_attacker: int, n_eval: int) -> list[int]:
    """The budgets in increasing order, after one-line checks of everything a budget run reads."""
    if list(c.attacks) != ["black_box_dist"]:
        raise ValueError(
            f"the attacker budget is black_box_dist's (pairs of the attacker's own images); got {c.attacks}"
        )
    if c.defenses:
        raise ValueError("the attacker budget is measured on the undefended victim; use privacy-frontier for defences")
    if not c.budgets or any(int(b) != b or b < 1 for b in c.budgets):
        raise ValueError(f"budgets must be positive whole numbers of image–feature pairs; got {c.budgets}")
    if max(c.budgets) > n_attacker:
        raise ValueError(
            f"budget {max(c.budgets)} is larger than the attacker's {n_attacker} images; lower it or raise n_attacker"
        )
    check_config(c, n_eval)
    return sorted({int(b) for b in c.budgets})


def _budget_unit(c: BudgetConfig, t: Trained, n: int, queries: torch.Tensor, eval_id: str, s: Any) -> Unit:
    scoring = {"n_candidates": c.n_candidates, "n_boot": c.n_boot, "lpips": c.lpips, "batch_size": c.batch_size}
    settings = {"victim": t.victim.weights_hash, "n_pairs": n, "queries": fingerprint(queries), "eval": eval_id}
    return Unit(f"budgets/{n}", settings | {"inverters": inverter_record(s), "scoring": scoring})


def _curve(
    c: BudgetConfig,
    t: Trained,
    layers: list[str],
    budgets: list[int],
    images: torch.Tensor,
    x: torch.Tensor,
    resume: Resume,
) -> tuple[list, Any]:
    """One trained set of inverse networks per budget (unit ``budgets/<n>``; ``budgets`` in increasing
    order), scored on the evaluated images ``x`` ([0, 1])."""
    steps = c.inverter_epochs * max(1, max(budgets) // c.batch_size)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(c.seed))
    lp = lpips_model(c, t.notes, t.device)
    with torch.no_grad():
        feats = t.victim(x, layers)
    eval_id, rows = fingerprint(x), []
    for n in progress(budgets, desc="privacy-budget: attackers", unit="budget"):
        epochs = math.ceil(steps / max(1, n // c.batch_size))
        s = replace(inverter_settings(c), epochs=epochs)

        def compute(n: int = n, epochs: int = epochs, s: Any = s) -> tuple[list, Any]:
            trained = train_inverters(t.victim, layers, images[order[:n]], s)
            t.nets[AttackerKey("black_box_dist")] = trained.nets
            out = []
            for (dec, L), record in trained.health.items():
                xh = reconstruct(t, c, "black_box_dist", dec, L, feats[L]).float().clamp(0, 1)
                row = {"n_pairs": n, "layer": L, "decoder": dec, "epochs": epochs}
                row["steps"] = epochs * max(1, n // c.batch_size)
                out.append({**score(c, xh, x, lp, row), "inverter_health": record["status"]})
            return out, trained.nets

        def save(value: tuple[list, Any], folder: str) -> dict[str, Any]:
            save_nets(value[1], folder)
            return {"rows": value[0]}

        unit = _budget_unit(c, t, n, images[order[:n]], eval_id, s)
        rows += resume.run(unit, "train and score attackers", compute, save, lambda f, r: r["rows"])
    return rows, lp


def run_budget(
    config: BudgetConfig, eval_data: Data, victim_data: Data | None, attacker_data: Data, victim: Any = None
) -> PrivacyResult:
    """Train the victim once (unless given), then the attacker at every budget (a row per budget, layer and
    inverse network) and, with ``config.out``, write the run folder. The victim and every budget are
    units of ``<out>/points`` (``upconv.privacy.resume``): a finished one is reused, a changed one refused."""
    c = config
    budgets = check_budget(c, len(attacker_data[0]), len(eval_data[0]))
    store = open_store(c.out, c.overwrite)
    t = Trained(victim=given_victim(c, victim, victim_data), device=resolve_device(c.device))
    resume = Resume(store, Clock(t.device))
    if t.victim is None:
        train_victim(t, c, victim_data, resume)
    t.victim = t.victim.to(t.device)
    layers = t.victim.resolve(list(c.layers))
    x = to_unit(eval_data[0]).to(t.device)  # (N, C, H, W)
    t.victim.check_images(x, finite=True)
    rows, lp = _curve(c, t, layers, budgets, attacker_data[0], x, resume)
    ev = (x, eval_data[1].to(t.device))
    floors, checks, warnings = judge(c, t.victim, ev, (attacker_data, victim_data), rows, lp)
    settings = {"encoder": t.victim.name, "encoder_weights_hash": t.victim.weights_hash, "layers": layers}
    settings |= {"budgets": budgets, "decoders": list(c.decoders), "seed": c.seed}
    settings |= {"n_eval": len(x), "n_attacker": len(attacker_data[0]), "reid_chance": 1.0 / c.n_candidates, **checks}
    result = PrivacyResult(rows, settings, warnings + t.notes, floor_rows=floors, victim_state=t.victim_state)
    result.units = resume.summary()
    if c.out is not None:
        result.out = write_budget(result, c.out, overwrite=True)  # checked by open_store
    return result


def _markdown(result: PrivacyResult) -> str:
    s = result.settings
    lines = [f"# Attacker budget: {s['encoder']} (weights {s['encoder_weights_hash']})", ""]
    lines += [f"- black_box_dist at {', '.join(s['layers'])}; budgets {s['budgets']}; n = {s['n_eval']} evaluated"]
    lines += [f"- victim accuracy {s['victim_accuracy'][0]:.3f} (chance {s['chance']:.3f}); seed {s['seed']}", ""]
    lines += [f"> {n}" for n in result.notes] + ([""] if result.notes else [])
    lines += ["| pairs | layer | inverter | steps | PSNR dB | SSIM | re-id | verdict | health |"]
    lines += ["|---:|---|---|---:|---:|---:|---:|---|---|"]
    for r in result.rows:
        lines.append(
            f"| {r['n_pairs']} | {r['layer']} | {r['decoder']} | {r['steps']} | {r['psnr']:.2f} "
            f"[{r['psnr_lo']:.2f}, {r['psnr_hi']:.2f}] | {r['ssim']:.4f} | {r['reid']:.3f} | "
            f"{r['floor_verdict'] or '—'} | {r['inverter_health']} |"
        )
    floors = "; ".join(f"{f['attack']}: PSNR {f['psnr']:.2f}" for f in result.floor_rows)
    return "\n".join(
        [*lines, "", f"Floors: {floors}; re-id chance {s['reid_chance']:.3f}.", "", "![budget](budget.png)"]
    )


def write_budget(result: PrivacyResult, out: str, overwrite: bool = False) -> str:
    """The budget's files in ``out``, moved in together when complete; the run's units (``points/``) stay."""
    with atomic_folder(out, overwrite, keep=(POINTS,)) as tmp:
        write_csv(os.path.join(tmp, "budget.csv"), COLS, result.rows)
        with open(os.path.join(tmp, "budget.json"), "w") as f:
            body = {"settings": result.settings, "notes": result.notes, "rows": result.rows}
            json.dump({**body, "floor_rows": result.floor_rows}, f, indent=2)
        s = result.settings
        axis = ("n_pairs", "image–feature pairs the attacker holds", True)
        points = [{**r, "panel": "black_box_dist"} for r in result.rows]  # every layer's curve in one panel
        path = os.path.join(tmp, "budget.png")
        plot_curves(points, result.floor_rows, s["reid_chance"], axis, ("layer", "decoder"), path)
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(_markdown(result))
        if result.victim_state is not None:
            torch.save(result.victim_state, os.path.join(tmp, "victim.pt"))
    return os.path.abspath(out)

"""Print the markdown tables of docs/measurements.md's "Trained defences, frontiers and attacker budget" and
"The Fisher-information bound beside the noise frontier" sections from the run folders of
``upconv privacy-frontier`` and ``upconv privacy-budget``.

    python benchmarks/privacy_sweeps.py --frontier runs/frontier_he runs/frontier_resnet --budget runs/budget_he
    python benchmarks/privacy_sweeps.py --bounds runs/frontier_he46_fisher --load 8.0 --publish docs/measurements.md
        # the bound's table, also into the page's block "privacy-bounds" (--load: the run's load average)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from publish import publish, record, require, rounded  # noqa: E402

from upconv.privacy.bounds import bound_table  # noqa: E402

BOUND_KEYS = ["layer", "strength", "dfil", "dfil_lo", "dfil_hi", "mse_bound", "psnr_bound", "psnr_bound_lo"]
BOUND_KEYS += ["psnr_bound_hi", "van_trees_mse", "van_trees_psnr", "best", "best_psnr", "gap_db", "seconds"]
BOUND_KEYS += ["n_images", "n_probes"]


def _load(folder: str, name: str) -> dict:
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def _ci(p: dict, k: str, digits: int) -> str:
    return f"{p[k]:.{digits}f} [{p[k + '_lo']:.{digits}f}, {p[k + '_hi']:.{digits}f}]"


def frontier_table(folder: str) -> str:
    run = _load(folder, "frontier.json")
    s = run["settings"]
    lines = [
        f"**{s['encoder']} at {', '.join(s['layers'])}** (victim accuracy {s['victim_accuracy'][0]:.3f}; "
        f"floors: " + ", ".join(f"{f['attack']} {f['psnr']:.2f} dB" for f in run["floor_rows"]) + ")",
        "",
        "| defence | strength | attacker | utility (acc.) | PSNR dB | SSIM | re-id | verdicts |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for p in run["points"]:
        strength = "none" if p["strength"] is None else f"{p['strength']:g}"
        verdicts = ", ".join(v for v in (p["floor_verdict"], p["utility_verdict"]) if v and v != "ok") or "—"
        lines.append(
            f"| {p['defense']} | {strength} | {p['attacker']} | {_ci(p, 'utility', 3)} | {_ci(p, 'psnr', 2)} | "
            f"{p['ssim']:.3f} | {p['reid']:.3f} | {verdicts} |"
        )
    return "\n".join(lines)


def budget_table(folder: str) -> str:
    run = _load(folder, "budget.json")
    s = run["settings"]
    lines = [
        f"**{s['encoder']}, black_box_dist** (victim accuracy {s['victim_accuracy'][0]:.3f}; floors: "
        + ", ".join(f"{f['attack']} {f['psnr']:.2f} dB" for f in run["floor_rows"])
        + ")",
        "",
        "| pairs | layer | steps | PSNR dB | SSIM | re-id | verdict |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in run["rows"]:
        lines.append(
            f"| {r['n_pairs']} | {r['layer']} | {r['steps']} | {_ci(r, 'psnr', 2)} | {r['ssim']:.3f} | "
            f"{r['reid']:.3f} | {r['floor_verdict'] or '—'} |"
        )
    return "\n".join(lines)


def bound_figures(folder: str) -> dict:
    """What the bound's table shows, from a frontier's run folder."""
    run = _load(folder, "frontier.json")
    s = run["settings"]
    bounds = [{k: b[k] for k in BOUND_KEYS if k in b} for b in run["bounds"]]
    return rounded({"encoder": s["encoder"], "probes": s["fisher_probes"], "n_eval": s["n_eval"], "bounds": bounds})


def render(figures: dict) -> str:
    """The Fisher-information bound per noise point beside its best attack, as printed and as published."""
    head = f"**Fisher-information bound, {figures['encoder']}** ({figures['probes']} probes per image, "
    return "\n".join([head + f"n = {figures['n_eval']})", "", bound_table(figures["bounds"])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frontier", nargs="*", default=[])
    ap.add_argument("--budget", nargs="*", default=[])
    ap.add_argument("--bounds", nargs="*", default=[], help="frontier folders whose Fisher-information bound to print")
    ap.add_argument("--publish", metavar="PAGE", help="also write the (one) --bounds table into PAGE's marked block")
    ap.add_argument("--block", default="privacy-bounds", help="the block's name in PAGE")
    ap.add_argument("--device", default="CPU, 2 shared cores", help="where the run was made (for the block)")
    ap.add_argument("--load", type=float, help="the run's load average (for the block)")
    a = ap.parse_args()
    if a.publish:
        require(a.publish, a.block)
        if len(a.bounds) != 1:
            raise SystemExit("privacy_sweeps: error: --publish writes one table: give exactly one --bounds folder")
    bounds = [bound_figures(f) for f in a.bounds]
    tables = [*map(frontier_table, a.frontier), *map(budget_table, a.budget), *map(render, bounds)]
    print("\n\n".join(tables))
    if a.publish:
        publish(a.publish, a.block, render(bounds[0]), record("privacy_sweeps", bounds[0], a.device, a.load))


if __name__ == "__main__":
    main()

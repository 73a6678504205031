"""Print the markdown tables of docs/measurements.md's "Trained defences, frontiers and attacker budget" section
from the run folders of ``upconv privacy-frontier`` and ``upconv privacy-budget``.

    python benchmarks/privacy_sweeps.py --frontier runs/frontier_he runs/frontier_resnet --budget runs/budget_he
"""

from __future__ import annotations

import argparse
import json
import os


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frontier", nargs="*", default=[])
    ap.add_argument("--budget", nargs="*", default=[])
    a = ap.parse_args()
    print("\n\n".join([*map(frontier_table, a.frontier), *map(budget_table, a.budget)]))


if __name__ == "__main__":
    main()

"""Files shared by the sweeps of a privacy run (the frontier and the attacker budget): a CSV of points and one
figure of leakage curves, a panel per (leakage figure, split layer), with the no-information floors drawn in."""

from __future__ import annotations

import csv
from typing import Any

from upconv.privacy.sweep import LEAKAGE

LABELS = {"psnr": "PSNR dB", "ssim": "SSIM", "lpips": "LPIPS (lower: closer)", "reid": "re-identification rate"}
FLOOR_STYLES = ("--", ":")


def write_csv(path: str, cols: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r[c] for c in cols])


def _panel(ax: Any, points: list[dict[str, Any]], metric: str, x: str, group: tuple[str, ...]) -> None:
    curves: dict[tuple, list[dict[str, Any]]] = {}
    for p in points:
        curves.setdefault(tuple(p[g] for g in group), []).append(p)
    for key, ps in curves.items():
        ps = [p for p in ps if p.get(metric) is not None]  # the bound has a PSNR only
        if not ps:
            continue
        xs, ys = [p[x] for p in ps], [p[metric] for p in ps]
        xerr = [[p[x] - p[f"{x}_lo"] for p in ps], [p[f"{x}_hi"] - p[x] for p in ps]] if f"{x}_lo" in ps[0] else None
        yerr = [[p[metric] - p[f"{metric}_lo"] for p in ps], [p[f"{metric}_hi"] - p[metric] for p in ps]]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", ms=3, capsize=2, lw=1, label=" ".join(map(str, key)))


def plot_curves(
    points: list[dict[str, Any]],
    floors: list[dict[str, Any]],
    reid_chance: float,
    axis: tuple[str, str, bool],
    group: tuple[str, ...],
    path: str,
) -> None:
    """Leakage against ``axis`` = (point key, axis label, log scale), one curve per ``group`` of keys, a column
    per split layer; the floors (and re-identification's chance) as grey lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, xlabel, log = axis
    metrics = [m for m in LEAKAGE if any(p.get(m) is not None for p in points)]
    layers = list(dict.fromkeys(p.get("panel", p["layer"]) for p in points))  # a column per panel (layer)
    fig, axes = plt.subplots(len(metrics), len(layers), figsize=(4.2 * len(layers), 3.2 * len(metrics)), squeeze=False)
    for i, m in enumerate(metrics):
        for j, L in enumerate(layers):
            ax = axes[i][j]
            _panel(ax, [p for p in points if p.get("panel", p["layer"]) == L], m, x, group)
            for f, style in zip(floors, FLOOR_STYLES):
                if f.get(m) is not None:
                    ax.axhline(f[m], color="grey", ls=style, lw=1, label=f["attack"])
            if m == "reid":
                ax.axhline(reid_chance, color="black", ls="-.", lw=1, label="chance")
            ax.set_xscale("log" if log else "linear")
            ax.set_title(f"{L}: {LABELS[m]}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)

"""The report's figures: each metric against depth (depth.png) and the originals beside their
reconstructions (grid.png). Flagged rows are marked in both, never a silent point."""

from __future__ import annotations

from upconv.core.figures import row_grid
from upconv.core.floors import BELOW_FLOOR
from upconv.evaluation.result import METRICS, EvalResult
from upconv.evaluation.tables import LABELS, method_label

MARK = "× below a floor (PSNR panel) / decoder failed"


def depth_plot(result: EvalResult, path: str) -> None:
    """Each metric against depth, one line per method with its 95 % interval shaded, the floors dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in METRICS if any(r[k] is not None for r in result.rows)]
    layers, methods = result.settings["layers"], result.settings["methods"]
    cols = 4
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    x = list(range(len(layers)))
    for ax, k in zip(axes.flat, metrics):
        for m in methods:
            rs = [next(r for r in result.rows if r["method"] == m and r["layer"] == L) for L in layers]
            (line,) = ax.plot(
                x, [r[k] for r in rs], marker="o", ms=3, label=method_label(m, result.settings, long=True)
            )
            ax.fill_between(
                x, [r[k + "_lo"] for r in rs], [r[k + "_hi"] for r in rs], alpha=0.25, color=line.get_color()
            )
            # The floor verdict is by PSNR: marked on the PSNR panel only; a failed decoder on every panel.
            bad = [
                (i, r[k])
                for i, r in enumerate(rs)
                if r[k] is not None
                and ((k == "psnr" and r.get("floor_verdict")) or r.get("decoder_health") in ("failed", "recovered"))
            ]
            if bad:  # never a silent point
                ax.plot(*zip(*bad), "x", color="red", ms=7, mew=2, label=MARK)
        for r, style in zip(result.floor_rows, ("--", ":")):
            if r[k] is not None:
                ax.axhline(r[k], color="grey", ls=style, lw=1, label=r["method"])
        ax.set_title(LABELS[k], fontsize=10)
        ax.set_xticks(x, layers, rotation=60, fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    legend = {}  # one legend for every panel's entries: the × may be on the PSNR panel alone
    for ax in axes.flat:
        legend.update({label: h for h, label in zip(*ax.get_legend_handles_labels())})
    axes.flat[0].legend(legend.values(), legend.keys(), fontsize=8)
    fig.suptitle(
        f"{result.settings['encoder']}: reconstruction fidelity by layer "
        f"(n = {result.settings['n_images']}, 95 % bootstrap CI shaded)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def grid_plot(result: EvalResult, path: str) -> None:
    """The grid originals, the floors, then each (method, layer)'s reconstructions, one labelled row each."""
    methods, layers = result.settings["methods"], result.settings["layers"]
    s = result.settings
    by_key = {(r["method"], r["layer"]): r for r in result.rows}
    labels = (
        ["original"]
        + [r["method"] for r in result.floor_rows]
        + [
            ("⚠ " if by_key[(m, L)].get("floor_verdict") == BELOW_FLOOR else "")  # as in report.md
            + (f"{method_label(m, s, long=True)}: {L}" if len(methods) > 1 or s.get("method_caveats") else L)
            for m in methods
            for L in layers
        ]
    )
    floors = [result.grid[(r["method"], r["layer"])] for r in result.floor_rows]
    rows = [result.originals, *floors] + [result.grid[(m, L)] for m in methods for L in layers]  # each (N, C, H, W)
    row_grid(rows, labels, "originals and their reconstructions from each layer", path)

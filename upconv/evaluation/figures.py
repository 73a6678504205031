"""The report's figures: each metric against depth (depth.png) and the originals beside their
reconstructions (grid.png). Flagged rows are marked in both, never a silent point."""

from __future__ import annotations

from upconv.core.figures import legend_below, row_grid
from upconv.core.floors import uninformative
from upconv.evaluation.result import METRICS, EvalResult
from upconv.evaluation.tables import LABELS, method_label

# One marker per verdict, never one mark for two: (marker, colour, legend text).
MARKS = {
    "floor": ("x", "red", "× at or below a no-information floor (PSNR panel): not the layer's information"),
    "class": ("v", "darkorange", "▾ at or below the class-mean floor (PSNR panel)"),
    "health": ("s", "black", "□ decoder failed or recovered in training"),
}
MARK = MARKS["floor"][2]


def _marks(k: str, rs: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(position, value) of each point to mark on metric ``k``'s panel, by verdict. The floor verdicts are by
    PSNR: marked on the PSNR panel only; a failed or recovered decoder on every panel."""
    out: dict[str, list[tuple[int, float]]] = {"floor": [], "class": [], "health": []}
    for i, r in enumerate(rs):
        if r[k] is None:
            continue
        if k == "psnr" and r.get("floor_verdict"):
            out["floor" if uninformative(r["floor_verdict"]) else "class"].append((i, r[k]))
        if r.get("decoder_health") in ("failed", "recovered"):
            out["health"].append((i, r[k]))
    return out


def _panel(ax, result: EvalResult, k: str) -> None:  # a matplotlib Axes
    """One metric against depth: a line per method with its interval, its marks, its own floor, the floors."""
    layers, x = result.settings["layers"], list(range(len(result.settings["layers"])))
    for m in result.settings["methods"]:
        rs = [next(r for r in result.rows if r["method"] == m and r["layer"] == L) for L in layers]
        label = method_label(m, result.settings, long=True)
        (line,) = ax.plot(x, [r[k] for r in rs], marker="o", ms=3, label=label)
        ax.fill_between(x, [r[k + "_lo"] for r in rs], [r[k + "_hi"] for r in rs], alpha=0.25, color=line.get_color())
        if k == "psnr" and all(r.get("own_floors") for r in rs):  # the highest of its own floors, layer by layer
            own = [max(f["psnr"] for f in r["own_floors"].values()) for r in rs]
            ax.plot(x, own, ls=(0, (1, 2)), lw=1.2, color=line.get_color(), label=f"{m}: its own floor (highest)")
        for what, points in _marks(k, rs).items():
            if points:  # never a silent point
                marker, colour, text = MARKS[what]
                face = "none" if marker == "s" else colour
                ax.plot(*zip(*points), marker, color=colour, mfc=face, ms=7, mew=2, ls="none", label=text)
    for r, style in zip(result.floor_rows, ("--", ":")):
        if r[k] is not None:
            ax.axhline(r[k], color="grey", ls=style, lw=1, label=r["method"])
    ax.set_title(LABELS[k], fontsize=10)
    ax.set_xticks(x, layers, rotation=60, fontsize=7)
    ax.grid(alpha=0.3)


def depth_plot(result: EvalResult, path: str) -> None:
    """Each metric against depth, one line per method with its 95 % interval shaded, the floors dashed; one
    legend for every panel, below them, so it covers no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in METRICS if any(r[k] is not None for r in result.rows)]
    cols = 4
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, k in zip(axes.flat, metrics):
        _panel(ax, result, k)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(
        f"{result.settings['encoder']}: reconstruction fidelity by layer "
        f"(n = {result.settings['n_images']}, 95 % bootstrap CI shaded)",
        fontsize=11,
    )
    legend_below(fig, list(axes.flat))  # a mark may be on the PSNR panel alone
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
            ("⚠ " if uninformative(by_key[(m, L)].get("floor_verdict")) else "")  # as in report.md
            + (f"{method_label(m, s, long=True)}: {L}" if len(methods) > 1 or s.get("method_caveats") else L)
            for m in methods
            for L in layers
        ]
    )
    floors = [result.grid[(r["method"], r["layer"])] for r in result.floor_rows]
    rows = [result.originals, *floors] + [result.grid[(m, L)] for m in methods for L in layers]  # each (N, C, H, W)
    row_grid(rows, labels, "originals and their reconstructions from each layer", path)

"""Write an evaluation run folder: report.md, metrics.csv, metrics.json, depth.png and grid.png.

Files are written into a hidden sibling folder that is renamed into place only when every file is
complete, so a failure never leaves a half-written report behind. Nothing time- or host-dependent is
written, so the same seed gives byte-identical metrics files.
"""

from __future__ import annotations

import csv
import json
import os
from typing import TYPE_CHECKING, Any, Optional

from upconv.core.figures import row_grid
from upconv.core.files import atomic_folder
from upconv.core.metrics import SSIM_DEFINITION

if TYPE_CHECKING:
    from upconv.evaluation.run import EvalResult

LABELS = {
    "mse": "MSE ↓", "psnr": "PSNR dB ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "db_error": "D&B error ↓",
    "feature_error": "feature error ↓", "class_agreement": "class agreement ↑", "recon_accuracy": "accuracy on x̂ ↑",
}

DEFINITIONS = [
    "**MSE**: per image, the mean over pixels and channels of (x̂ − x)², images in [0, 1].",
    "**PSNR**: per image, 10·log10(1 / MSE) (torchmetrics, data range 1), capped at {cap:g} dB so an exact "
    "reconstruction stays finite; the table shows the mean of per-image PSNR, not the PSNR of the mean MSE.",
    "**SSIM**: " + SSIM_DEFINITION + ".",
    "**LPIPS**: per image, lpips v0.1 with the AlexNet trunk (Zhang et al. 2018), images rescaled to [−1, 1], "
    "at the native image size.",
    "**D&B error** (Dosovitskiy & Brox, CVPR 2016, normalised reconstruction error): per image "
    "‖x̂_i − x_i‖₂ / d̄, where d̄ = mean over pairs i < j of ‖x_i − x_j‖₂ over the n evaluated originals "
    "(here d̄ = {dbar:.6g}); 1 means as far from the original as a typical other image.",
    "**feature error**: per image ‖Φ_L(x̂) − Φ_L(x)‖₂ / ‖Φ_L(x)‖₂ at the inverted layer L (not squared).",
    "**class agreement**: share of reconstructions the encoder assigns the class it assigns the original.",
    "**accuracy on x̂**: {accuracy}",
    "Each figure is the mean over n images with a 95 % percentile-bootstrap interval ({boot} resamples, "
    "seed {seed}).",
]


BOUND = "†"  # marks a method whose figures are an optimistic bound (it reads the true image)


def method_label(name: str, settings: dict[str, Any], long: bool = False) -> str:
    """A method's name, marked † when it reads the true image (``long``: "† (optimistic bound)")."""
    if name not in settings.get("method_caveats", {}):
        return name
    return f"{name}{BOUND} (optimistic bound)" if long else f"{name}{BOUND}"


def caveat_lines(settings: dict[str, Any]) -> list[str]:
    """One line per method that reads the true image, saying what it reads."""
    return [f"{BOUND} **{m}**: {c}; its figures are not comparable with those of methods that see only the "
            f"features" for m, c in settings.get("method_caveats", {}).items()]


def _accuracy_text(s: dict[str, Any]) -> str:
    if s.get("encoder_accuracy_on_originals") is None:
        return "not computed (see the note above)."
    acc = s["encoder_accuracy_on_originals"]
    return (f"share of reconstructions the encoder assigns the true label, against "
            f"{s.get('accuracy_labels') or 'the data set labels'} (accuracy on the originals: "
            f"{acc[0]:.4f} [{acc[1]:.4f}, {acc[2]:.4f}]).")


def _fmt(metric: str, value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def cell(row: dict[str, Any], metric: str) -> str:
    """One table cell: ``mean [low, high]``, or ``—`` for a skipped metric."""
    if row.get(metric) is None:
        return "—"
    return f"{_fmt(metric, row[metric])} [{_fmt(metric, row[metric + '_lo'])}, {_fmt(metric, row[metric + '_hi'])}]"


def markdown_table(result: "EvalResult") -> str:
    """Layers as rows in network order; for each metric the methods side by side."""
    from upconv.evaluation.run import METRICS

    methods = result.settings["methods"]
    layers = result.settings["layers"]
    by_key = {(r["method"], r["layer"]): r for r in result.rows}
    metrics = [k for k in METRICS if any(r[k] is not None for r in result.rows)]
    s = result.settings
    head = ["layer", "n"] + [LABELS[k] + (f" ({method_label(m, s)})" if len(methods) > 1 or m != method_label(m, s)
                                          else "") for k in metrics for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    flagged = any(row_flags(r) for r in result.rows)
    if flagged:
        head.append("⚠ read before use")
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 3) + ["---"]) + "|"]
    for layer in layers:
        n = by_key[(methods[0], layer)]["n"]
        cells = [layer, str(n)] + [cell(by_key[(m, layer)], k) for k in metrics for m in methods]
        if flagged:
            cells.append("; ".join(f"{method_label(m, s)}: {f}" for m in methods if (f := row_flags(by_key[(m, layer)]))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_flags(row: dict[str, Any]) -> str:
    """Short warnings for a (method, layer) row: below a floor, decoder failed or recovered in training."""
    flags = []
    if row.get("decoder_health") in ("failed", "recovered"):
        flags.append(f"decoder {row['decoder_health']} in training")
    verdict = row.get("floor_verdict") or ""
    if "no-information" in verdict:
        flags.append("⚠ at/below the mean-image floor")
    elif verdict:
        flags.append("at/below the class-mean floor")
    return ", ".join(flags)


def floor_table(result: "EvalResult") -> str:
    """The no-information floors, one row each, the same metrics as the main table."""
    from upconv.evaluation.run import METRICS

    metrics = [k for k in METRICS if any(r[k] is not None for r in result.floor_rows)]
    lines = ["| floor | n | " + " | ".join(LABELS[k] for k in metrics) + " |",
             "|---|---|" + "---:|" * len(metrics)]
    for r in result.floor_rows:
        lines.append(f"| {r['method'].removeprefix('floor: ')} | {r['n']} | " + " | ".join(cell(r, k) for k in metrics) + " |")
    return "\n".join(lines)


def _write_csv(result: "EvalResult", path: str) -> None:
    from upconv.evaluation.run import METRICS

    cols = (["method", "layer", "depth", "n", "reads_target", "floor_verdict", "decoder_health"]
            + [c for k in METRICS for c in (k, f"{k}_lo", f"{k}_hi")])
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in [*result.rows, *result.floor_rows]:
            w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols])


def _write_json(result: "EvalResult", path: str) -> None:
    with open(path, "w") as f:
        json.dump({"settings": result.settings, "notes": result.notes, "rows": result.rows,
                   "floor_rows": result.floor_rows}, f, indent=2)
        f.write("\n")


def _depth_plot(result: "EvalResult", path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from upconv.evaluation.run import METRICS

    metrics = [k for k in METRICS if any(r[k] is not None for r in result.rows)]
    layers, methods = result.settings["layers"], result.settings["methods"]
    cols = 4
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    x = list(range(len(layers)))
    for ax, k in zip(axes.flat, metrics):
        for m in methods:
            rs = [next(r for r in result.rows if r["method"] == m and r["layer"] == L) for L in layers]
            (line,) = ax.plot(x, [r[k] for r in rs], marker="o", ms=3, label=method_label(m, result.settings, long=True))
            ax.fill_between(x, [r[k + "_lo"] for r in rs], [r[k + "_hi"] for r in rs], alpha=0.25,
                            color=line.get_color())
            bad = [(i, r[k]) for i, r in enumerate(rs) if row_flags(r) and r[k] is not None]
            if bad:  # below a floor, or a decoder that failed in training: never a silent point
                ax.plot(*zip(*bad), "x", color="red", ms=7, mew=2,
                        label="⚠ below a floor / decoder failed" if k == metrics[0] else None)
        for r, style in zip(result.floor_rows, ("--", ":")):
            if r[k] is not None:
                ax.axhline(r[k], color="grey", ls=style, lw=1, label=r["method"])
        ax.set_title(LABELS[k], fontsize=10)
        ax.set_xticks(x, layers, rotation=60, fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{result.settings['encoder']}: reconstruction fidelity by layer "
                 f"(n = {result.settings['n_images']}, 95 % bootstrap CI shaded)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _grid_plot(result: "EvalResult", path: str) -> None:
    methods, layers = result.settings["methods"], result.settings["layers"]
    s = result.settings
    by_key = {(r["method"], r["layer"]): r for r in result.rows}
    labels = ["original"] + [r["method"] for r in result.floor_rows] + [
        ("⚠ " if row_flags(by_key[(m, L)]) else "")
        + (f"{method_label(m, s, long=True)}: {L}" if len(methods) > 1 or s.get("method_caveats") else L)
        for m in methods for L in layers]
    floors = [result.grid[(r["method"], r["layer"])] for r in result.floor_rows]
    rows = [result.originals, *floors] + [result.grid[(m, L)] for m in methods for L in layers]  # each (N, C, H, W)
    row_grid(rows, labels, "originals and their reconstructions from each layer", path)


def _markdown(result: "EvalResult") -> str:
    s = result.settings
    defs = [d.format(cap=s["psnr_cap_db"], dbar=s["db_mean_pairwise_distance"], boot=s["n_boot"], seed=s["seed"],
                     accuracy=_accuracy_text(s)) for d in DEFINITIONS]
    settings = [
        f"encoder: `{s['encoder']}` (weights {s['encoder_weights_hash']})",
        f"methods: {', '.join(method_label(m, s) for m in s['methods'])}",
        f"checkpoints: {', '.join(f'`{c}`' for c in s['checkpoints']) or '—'}",
        f"data: {s['data']}" + (f" at `{s['root']}`" if s["root"] else "") + f"; {s['split_description']}; "
        f"n = {s['n_images']} images",
        f"seed: {s['seed']}; device: {s['device']}; torch {s['torch']}",
        f"image space: {s['image_space']}",
    ]
    parts = [f"# Reconstruction fidelity across depth: {s['encoder']}", "",
             "## Settings", "", *[f"- {x}" for x in settings], ""]
    if result.notes:
        parts += [*[f"> {note}" for note in result.notes], ""]
    parts += ["## Results", "", "Mean [95 % bootstrap CI] over n images; layers in network order.", "",
              markdown_table(result), ""]
    if result.floor_rows:
        f = s["floors"]
        count = "" if str(f["n_images"]) in f["source"] else f" ({f['n_images']} images)"
        parts += ["### No-information floors", "",
                  f"What a reconstruction scores that knows nothing of the image (the mean training image) or only "
                  f"its class (the mean training image of its class), from {f['source']}{count}. "
                  f"A layer at or below the first is not evidence that the layer lost the image: its decoder "
                  f"failed or learned nothing.", "", floor_table(result), ""]
    if caveat_lines(s):
        parts += [*caveat_lines(s), ""]
    parts += ["## Definitions", "", *[f"- {d}" for d in defs], "",
              "## Figures", "", "![metrics against depth](depth.png)", "",
              "![originals and reconstructions](grid.png)", ""]
    return "\n".join(parts)


def write_report(result: "EvalResult", out: str | os.PathLike, overwrite: bool = False) -> str:
    """Write the run folder ``out`` atomically (temporary sibling, then rename) and return its path."""
    with atomic_folder(out, overwrite) as tmp:
        _write_csv(result, os.path.join(tmp, "metrics.csv"))
        _write_json(result, os.path.join(tmp, "metrics.json"))
        _depth_plot(result, os.path.join(tmp, "depth.png"))
        _grid_plot(result, os.path.join(tmp, "grid.png"))
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(_markdown(result))
    return os.path.abspath(out)

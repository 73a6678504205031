"""The report's words and tables: metric labels and definitions, table cells, the results and floor tables and
the text of report.md. A method that reads the true image is marked † beside every number of it."""

from __future__ import annotations

from typing import Any, Optional

from upconv.core.metrics import SSIM_DEFINITION
from upconv.evaluation.result import METRICS, EvalResult

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


def markdown_table(result: EvalResult) -> str:
    """Layers as rows in network order; for each metric the methods side by side."""
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


def floor_table(result: EvalResult) -> str:
    """The no-information floors, one row each, the same metrics as the main table."""
    metrics = [k for k in METRICS if any(r[k] is not None for r in result.floor_rows)]
    lines = ["| floor | n | " + " | ".join(LABELS[k] for k in metrics) + " |",
             "|---|---|" + "---:|" * len(metrics)]
    for r in result.floor_rows:
        lines.append(f"| {r['method'].removeprefix('floor: ')} | {r['n']} | " + " | ".join(cell(r, k) for k in metrics) + " |")
    return "\n".join(lines)


def markdown(result: EvalResult) -> str:
    """The text of report.md: settings, notes, the results and floor tables, definitions, figures."""
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


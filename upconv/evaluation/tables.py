"""The report's words and tables: metric labels and definitions, table cells, the results and floor tables and
the text of report.md. A method that reads the true image is marked † beside every number of it."""

from __future__ import annotations

from typing import Any

from upconv.core.floors import BELOW_FLOOR, BELOW_OWN
from upconv.core.metrics import SSIM_DEFINITION
from upconv.evaluation.result import EvalResult

LABELS = {
    "mse": "MSE ↓",
    "psnr": "PSNR dB ↑",
    "ssim": "SSIM ↑",
    "lpips": "LPIPS ↓",
    "db_error": "D&B error ↓",
    "feature_error": "feature error ↓",
    "class_agreement": "class agreement ↑",
    "recon_accuracy": "accuracy on x̂ ↑",
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
    "Each figure is the mean over n images with a 95 % percentile-bootstrap interval ({boot} resamples, seed {seed}).",
]


BOUND = "†"  # marks a method whose figures are an optimistic bound (it reads the true image)


def method_label(name: str, settings: dict[str, Any], long: bool = False) -> str:
    """A method's name, marked † when it reads the true image (``long``: "† (optimistic bound)")."""
    if name not in settings.get("method_caveats", {}):
        return name
    return f"{name}{BOUND} (optimistic bound)" if long else f"{name}{BOUND}"


def caveat_lines(settings: dict[str, Any]) -> list[str]:
    """One line per method that reads the true image, saying what it reads."""
    return [
        f"{BOUND} **{m}**: {c}; its figures are not comparable with those of methods that see only the features"
        for m, c in settings.get("method_caveats", {}).items()
    ]


def _accuracy_text(s: dict[str, Any]) -> str:
    if s.get("encoder_accuracy_on_originals") is None:
        return "not computed (see the note above)."
    acc = s["encoder_accuracy_on_originals"]
    return (
        f"share of reconstructions the encoder assigns the true label, against "
        f"{s.get('accuracy_labels') or 'the data set labels'} (accuracy on the originals: "
        f"{acc[0]:.4f} [{acc[1]:.4f}, {acc[2]:.4f}])."
    )


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def cell(row: dict[str, Any], metric: str) -> str:
    """One table cell: ``mean [low, high]``, or ``—`` for a skipped metric."""
    if row.get(metric) is None:
        return "—"
    return f"{_fmt(metric, row[metric])} [{_fmt(metric, row[metric + '_lo'])}, {_fmt(metric, row[metric + '_hi'])}]"


MAX_COLUMNS = 8  # no table of report.md is wider, so it reads in a terminal; the full numbers are in metrics.csv
MAIN = ("psnr", "ssim")  # beside the verdict and the decoder's health in the main table
GROUPS = (
    ("Pixel and perceptual error", ("mse", "lpips", "db_error")),
    ("Features and class", ("feature_error", "class_agreement", "recon_accuracy")),
)


def _table(head: list[str], rows: list[list[str]], text: int, text_after: int = 0) -> str:
    """A markdown table: the first ``text`` and last ``text_after`` columns left-aligned, the numbers between
    right-aligned."""
    assert len(head) <= MAX_COLUMNS, head
    numbers = len(head) - text - text_after
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * text + ["---:"] * numbers + ["---"] * text_after) + "|",
    ]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _shown(rows: list[dict[str, Any]], metrics: tuple[str, ...]) -> list[str]:
    """The metrics of ``metrics`` that some row has (a skipped metric gets no column)."""
    return [k for k in metrics if any(r.get(k) is not None for r in rows)]


def verdict_cell(row: dict[str, Any], floors: bool) -> str:
    """The floor verdict of a row in a few words (``—`` when no floors were computed)."""
    verdict = row.get("floor_verdict") or ""
    if verdict == BELOW_FLOOR:
        return "⚠ at/below the mean-image floor"
    if verdict.startswith(BELOW_OWN):
        return "⚠ not above its own floor" + verdict.removeprefix(BELOW_OWN)
    if verdict:
        return "at/below the class-mean floor"
    return "above the floors" if floors else "—"


def health_cell(row: dict[str, Any]) -> str:
    """How the row's decoder fared in training (``—`` for a method without a trained decoder)."""
    health = row.get("decoder_health")
    if health in ("failed", "recovered"):
        return f"{'⚠ ' if health == 'failed' else ''}decoder {health} in training"
    return health or "—"


def _ordered(result: EvalResult) -> list[dict[str, Any]]:
    """The rows, each method's layers together in network order."""
    layers = result.settings["layers"]
    by_key = {(r["method"], r["layer"]): r for r in result.rows}
    return [by_key[(m, L)] for m in result.settings["methods"] for L in layers if (m, L) in by_key]


def markdown_table(result: EvalResult) -> str:
    """The main table: one row per method and layer with PSNR, SSIM, the floor verdict and the decoder's health."""
    s, floors = result.settings, bool(result.floor_rows)
    metrics = _shown(result.rows, MAIN)
    head = ["method", "layer", "n"] + [LABELS[k] for k in metrics] + ["floor verdict", "decoder"]
    rows = [
        [method_label(r["method"], s), r["layer"], str(r["n"])]
        + [cell(r, k) for k in metrics]
        + [verdict_cell(r, floors), health_cell(r)]
        for r in _ordered(result)
    ]
    return _table(head, rows, 2, 2)


def group_tables(result: EvalResult) -> list[tuple[str, str]]:
    """(title, table) for each further group of metrics that has a number: method and layer, then the metrics."""
    out = []
    for title, group in GROUPS:
        metrics = _shown(result.rows, group)
        if metrics:
            rows = [
                [method_label(r["method"], result.settings), r["layer"]] + [cell(r, k) for k in metrics]
                for r in _ordered(result)
            ]
            out.append((title, _table(["method", "layer"] + [LABELS[k] for k in metrics], rows, 2)))
    return out


def floor_tables(result: EvalResult) -> list[str]:
    """The no-information floors, one row each, in the same metric groups as the results."""
    out = []
    for group in (MAIN + GROUPS[0][1], GROUPS[1][1]):
        metrics = _shown(result.floor_rows, group)
        if metrics:
            rows = [
                [r["method"].removeprefix("floor: "), str(r["n"])] + [cell(r, k) for k in metrics]
                for r in result.floor_rows
            ]
            out.append(_table(["floor", "n"] + [LABELS[k] for k in metrics], rows, 1))
    return out


OWN_FLOORS_TEXT = (
    "A method that reads the true image beyond its features (marked †) is judged against its own floors as well: "
    "the same method on the same image with the features replaced by nothing — a **constant signal** (all ones) "
    "or a **shuffled signal** (another image's features), projected through this image's own switches — and, "
    "for a fit to the true image, the **fitted constant** (a flat image at the image's mean). A row is above "
    "them only when the low end of the 95 % interval of its paired per-image PSNR difference to each (Δ) exceeds "
    "the half-width of its own PSNR interval: a gain smaller than the figure's own uncertainty is not read off it."
)


def _own_cell(floor: dict[str, Any]) -> str:
    """A floor's mean PSNR and the row's paired difference to it: ``14.98 (Δ +0.03 [-0.02, +0.08])``."""
    return "{:.2f} (Δ {:+.2f} [{:+.2f}, {:+.2f}])".format(floor["psnr"], *floor["margin"])


def own_floor_table(result: EvalResult) -> str | None:
    """Per method and layer: its PSNR, the PSNR of each of its own floors, and its verdict (None: no such floor)."""
    if not result.own_floor_rows:
        return None
    kinds = list(dict.fromkeys(r["floor_kind"] for r in result.own_floor_rows))
    rows = [
        [method_label(r["method"], result.settings), r["layer"], cell(r, "psnr")]
        + [_own_cell(r["own_floors"][k]) if k in r["own_floors"] else "—" for k in kinds]
        + [verdict_cell(r, True)]
        for r in _ordered(result)
        if r.get("own_floors")
    ]
    head = ["method", "layer", LABELS["psnr"]] + [f"{k}: PSNR (Δ paired)" for k in kinds] + ["floor verdict"]
    return _table(head, rows, 2, 1)


def _definitions(s: dict) -> list[str]:
    return [
        d.format(
            cap=s["psnr_cap_db"],
            dbar=s["db_mean_pairwise_distance"],
            boot=s["n_boot"],
            seed=s["seed"],
            accuracy=_accuracy_text(s),
        )
        for d in DEFINITIONS
    ]


def _settings(s: dict) -> list[str]:
    return [
        f"encoder: `{s['encoder']}` (weights {s['encoder_weights_hash']})",
        f"methods: {', '.join(method_label(m, s) for m in s['methods'])}",
        f"checkpoints: {', '.join(f'`{c}`' for c in s['checkpoints']) or '—'}",
        f"data: {s['data']}" + (f" at `{s['root']}`" if s["root"] else "") + f"; {s['split_description']}; "
        f"n = {s['n_images']} images",
        f"seed: {s['seed']}; device: {s['device']}; torch {s['torch']}",
        f"image space: {s['image_space']}",
    ]


def markdown(result: EvalResult) -> str:
    """The text of report.md: settings, notes, the results and floor tables, definitions, figures."""
    s = result.settings
    defs, settings = _definitions(s), _settings(s)
    parts = [
        f"# Reconstruction fidelity across depth: {s['encoder']}",
        "",
        "## Settings",
        "",
        *[f"- {x}" for x in settings],
        "",
    ]
    if result.notes:
        parts += [*[f"> {note}" for note in result.notes], ""]
    parts += [
        "## Results",
        "",
        "Mean [95 % bootstrap CI] over n images; each method's layers in network order; "
        "every figure, unrounded, in metrics.csv and metrics.json.",
        "",
        markdown_table(result),
        "",
    ]
    for title, table in group_tables(result):
        parts += [f"### {title}", "", table, ""]
    if result.floor_rows:
        f = s["floors"]
        count = "" if str(f["n_images"]) in f["source"] else f" ({f['n_images']} images)"
        parts += [
            "### No-information floors",
            "",
            f"What a reconstruction scores that knows nothing of the image (the mean training image) or only "
            f"its class (the mean training image of its class), from {f['source']}{count}. "
            f"A layer at or below the first is not evidence that the layer lost the image: its decoder "
            f"failed or learned nothing.",
            "",
        ]
        for table in floor_tables(result):
            parts += [table, ""]
    own = own_floor_table(result)
    if own:
        parts += ["### Own floors", "", OWN_FLOORS_TEXT, "", own, ""]
    if caveat_lines(s):
        parts += [*caveat_lines(s), ""]
    parts += [
        "## Definitions",
        "",
        *[f"- {d}" for d in defs],
        "",
        "## Figures",
        "",
        "![metrics against depth](depth.png)",
        "",
        "![originals and reconstructions](grid.png)",
        "",
    ]
    return "\n".join(parts)

"""The benchmark's report, assembled from whatever units exist: one long-format table (model, layer, relative
depth, geometry, method, metric, mean, interval, floor verdict, decoder health) as results.csv, results.json
and report.md, plus depth.png and grid.png (``upconv.benchmark.figures``). Each file is written atomically, so
shards that finish at the same time never leave a half-written report."""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from upconv.benchmark.config import BenchmarkConfig
from upconv.benchmark.probe import AT_CHANCE
from upconv.benchmark.unit import PROBE, EncoderPlan
from upconv.core.files import atomic_file
from upconv.core.floors import BELOW_CLASS, BELOW_FLOOR, BELOW_OWN, MEAN_IMAGE
from upconv.core.units import UnitStore, changed, plain
from upconv.evaluation.run import chance_note

COLUMNS = (
    "model",
    "layer",
    "relative_depth",
    "features",
    "resolution",
    "compression",
    "method",
    "metric",
    "mean",
    "lo",
    "hi",
    "n",
    "floor",
    "floor_verdict",
    "decoder_health",
    "probe_input",
)


def collect(plans: list[EncoderPlan], store: UnitStore) -> dict[str, Any]:
    """The rows of every finished unit of the plan (with each layer's depth and geometry), the floors, each
    model's encoder accuracy and notes, and the keys of the units still missing."""
    rows, floors, models, missing, stale = [], [], {}, [], []
    for plan in plans:
        name = plan.entry.name
        info = models.setdefault(name, {"notes": [], "units": 0, "seconds": {}, "probe_inputs": {}})
        for unit in plan.units:
            rec = store.record(unit.key)
            if rec is None or changed(rec["settings"], plain(unit.settings)):
                (missing if rec is None else stale).append(unit.key)  # never report a unit of other settings
                continue
            res = rec["results"]
            info["units"] += 1
            info.setdefault("loads", []).append(res.get("load"))
            info["encoder_accuracy"], info["classes"] = res.get("encoder_accuracy"), res.get("classes")
            info["notes"] += res.get("notes", [])
            for k, v in res.get("seconds", {}).items():
                info["seconds"][k] = info["seconds"].get(k, 0.0) + v
            floors = floors or res.get("floors", [])
            for r in res["rows"]:
                if r.get("probe_input"):
                    info["probe_inputs"][r["layer"]] = r["probe_input"]
                lay = plan.layout[r["layer"]]
                g = lay.geometry
                rows.append(
                    {
                        "model": name,
                        "relative_depth": lay.depth,
                        **{k: g[k] for k in ("features", "resolution", "compression")},
                        **r,
                    }
                )
        if plan.encoder_unit is not None and (rec := store.record(plan.encoder_unit.key)):
            info["encoder_training"] = rec["results"]
            info.setdefault("loads", []).append(rec["results"].get("load"))
    _mark_floors(rows, floors)
    return {"rows": rows, "floors": floors, "models": models, "missing": missing, "stale": stale}


def _mark_floors(rows: list[dict[str, Any]], floors: list[dict[str, Any]]) -> None:
    """Give each reconstruction row the mean-image floor of its metric, for the table and the figure."""
    mean_image = {f["metric"]: f["mean"] for f in floors if f["method"] == MEAN_IMAGE}
    for r in rows:
        if r["method"] != PROBE:
            r.setdefault("floor", mean_image.get(r["metric"]))


# Short verdicts for the table's cells; the notes under each table say them in full.
MARKS = {BELOW_FLOOR: "⚠ ≤ floor", BELOW_CLASS: "≤ class floor", BELOW_OWN: "⚠ ≤ own floor", AT_CHANCE: "⚠ chance"}


def mark(r: dict[str, Any]) -> str:
    """The short marks of a row's verdict (``floor_verdict``), † when the method reads the true image
    (``reads_target``), and a decoder's failure or recovery."""
    v = r.get("floor_verdict") or ""
    tags = [m for k, m in MARKS.items() if v.startswith(k)] or ([f"⚠ {v}"] if v else [])
    if r.get("reads_target"):
        tags.append("†")
    if r.get("decoder_health") in ("failed", "recovered"):
        tags.append(f"decoder {r['decoder_health']}")
    return (" " + " ".join(tags)) if tags else ""


def _fmt(r: dict[str, Any]) -> str:
    digits = 3 if r["metric"] in ("ssim", "accuracy", "mse", "lpips", "feature_error") else 2
    return f"{r['mean']:.{digits}f} [{r['lo']:.{digits}f}, {r['hi']:.{digits}f}]"


def markdown(collected: dict[str, Any], config: BenchmarkConfig, shown: tuple[str, ...] = ("psnr", "ssim")) -> str:
    """report.md: per model, a table with a row per layer (depth, geometry, UpconvNet's and DeconvNet's
    fidelity, the probe), each figure beside its verdict; then the floors, notes and missing units."""
    out = [f"# Layer-information benchmark ({len(collected['models'])} models)", ""]
    out += [
        f"Data: {config.data}" + (f" at {config.root}" if config.root else "") + f"; {config.limit_train or 'all'} "
        f"training and {config.limit or 'all'} test images. Decoders: {config.decoder_epochs} epochs at batch "
        f"{config.decoder_batch}. Intervals: 95 % bootstrap over test images. Relative depth: share of the forward "
        "pass's multiply-adds up to the layer. Probe: logistic regression on pooled frozen features.",
        "",
        "Marks: ⚠ ≤ floor — at or below the mean-image floor (the figure does not measure the layer's "
        "information); ≤ class floor — no more than the class-mean image; ⚠ ≤ own floor — not above the method's own "
        "floors (DeconvNet: the same projection of a constant or another image's signal, the fitted constant); "
        "⚠ chance — the probe's interval reaches chance; † — the method reads the true image (an optimistic bound).",
        "",
    ]
    by = {}
    for r in collected["rows"]:
        by.setdefault(r["model"], {}).setdefault(r["layer"], []).append(r)
    for model, info in collected["models"].items():
        acc, k = info.get("encoder_accuracy"), info.get("classes")
        out += [f"## {model}", ""]
        # The evaluation's own warning for an encoder at chance, beside the accuracy instead of among the notes.
        at_chance = chance_note(acc, k) if acc and k else None
        if acc:
            out.append(f"Encoder accuracy on the test images: {acc[0]:.3f} [{acc[1]:.3f}, {acc[2]:.3f}].")
        out += [f"⚠ {at_chance}"] if at_chance else []
        cols = [(m, k) for m in ("upconvnet", "deconvnet") for k in shown] + [(PROBE, "accuracy")]
        head = ["layer", "depth", "features (res.)", "compression"] + [f"{m} {k}" for m, k in cols]
        out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for layer, rs in by.get(model, {}).items():
            cells = [layer, f"{rs[0]['relative_depth']:.3f}", f"{rs[0]['features']} ({rs[0]['resolution']})"]
            cells.append(f"{rs[0]['compression']:.3f}")
            for m, k in cols:
                r = next((x for x in rs if x["method"] == m and x["metric"] == k), None)
                cells.append("—" if r is None else _fmt(r) + mark(r))
            out.append("| " + " | ".join(cells) + " |")
        probe = "; ".join(f"{k} {v}" for k, v in info["probe_inputs"].items())
        out += ["", *[f"- {n}" for n in dict.fromkeys(info["notes"]) if n != at_chance]]
        out += [f"- probe input: {probe}" if probe else "- no linear probe", ""]
    out += ["## No-information floors", ""]
    out += [f"- {f['method']}: {f['metric']} {_fmt(f)}" for f in collected["floors"] if f["metric"] in shown]
    if collected["missing"]:
        out += ["", f"Units not finished yet ({len(collected['missing'])}): {', '.join(collected['missing'])}."]
    if collected["stale"]:
        out += [
            "",
            f"⚠ Units left out, made with other settings ({len(collected['stale'])}): "
            f"{', '.join(collected['stale'])}; run them again with --overwrite true.",
        ]
    return "\n".join(out) + "\n"


def write_report(collected: dict[str, Any], config: BenchmarkConfig, out: str) -> None:
    """results.csv, results.json and report.md in ``out``, each written atomically."""
    with atomic_file(os.path.join(out, "results.csv")) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(collected["rows"])
    with atomic_file(os.path.join(out, "results.json")) as tmp, open(tmp, "w") as f:
        json.dump(collected, f, indent=1, default=str)
    with atomic_file(os.path.join(out, "report.md")) as tmp, open(tmp, "w") as f:
        f.write(markdown(collected, config))

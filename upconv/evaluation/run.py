"""Evaluation across depth: reconstruct a data split from every chosen layer with every chosen method and
summarise each fidelity metric per (method, layer) as mean, 95 % bootstrap interval and n.

Methods (``upconv.methods.base``: any callable ``(images, layer) -> reconstructions`` with a ``.name``) are
built by name from one registry; one that reads the true image (``reads_target``) is reported as an
optimistic bound. The stages: ``plan.prepare`` (encoder, methods, layers, data, floors) → ``scoring``
(every batch) → ``summarise`` (rows) → notes and settings → ``report.write_report``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from upconv.core import metrics as M
from upconv.core.floors import BELOW_OWN, FLOOR_METHODS, own_floor_name, uninformative, verdict
from upconv.evaluation.config import EvalConfig
from upconv.evaluation.grid_picks import GridPicks
from upconv.evaluation.plan import Plan, prepare
from upconv.evaluation.report import write_report
from upconv.evaluation.result import FLOOR_LAYER, EvalResult
from upconv.evaluation.scoring import Scores, score_batches
from upconv.methods.base import Method
from upconv.nets.encoder import Encoder


def evaluate(
    config: EvalConfig | None = None,
    *,
    encoder: Encoder | None = None,
    methods: Sequence[str | Method] | None = None,
    data: Any = None,
) -> EvalResult:
    """Evaluate inversion methods layer by layer and, with ``config.out``, write the report folder.

    ``config`` holds every option by name (``EvalConfig``, the same as ``upconv evaluate``'s). Objects
    stand in for names: ``encoder`` an already built ``Encoder`` (instead of ``config.encoder`` or the
    checkpoints' record), ``methods`` names and/or ``Method`` objects (instead of ``config.methods``), ``data``
    an ``ImageSource`` / ``ImageData`` (instead of ``config.data``; ``root``, ``limit`` and
    ``embedded_per_class`` then do not apply). Everything is computed before anything is written, and the
    folder appears only once complete.
    """
    config = config if config is not None else EvalConfig()
    plan = prepare(config, encoder, methods, data)
    scores, picks = Scores(plan), GridPicks(config.grid_images, config.seed)
    originals, orig_acc = score_batches(plan, scores, picks, config.split, config.batch_size)
    if not originals:
        raise ValueError(f"the {config.split} split has no images; check the data root and limit")
    all_x = torch.cat(originals)  # (N, C, H, W)
    n = len(all_x)
    d_bar = float(M.mean_pairwise_distance(all_x.to(plan.device)))
    rows, floor_rows, own_floor_rows = summarise(plan, scores, n, d_bar, config)
    acc = (
        M.bootstrap_ci(torch.cat(orig_acc), n_boot=config.n_boot, seed=config.seed)
        if plan.accuracy_basis is not None
        else None
    )
    notes = evaluation_notes(plan, rows, floor_rows, acc)
    grid_x, grid = picks.result()
    result = EvalResult(
        rows=rows,
        settings=settings_of(plan, config, n, d_bar, acc),
        notes=notes,
        originals=grid_x,
        grid=grid,
        floor_rows=floor_rows,
        own_floor_rows=own_floor_rows,
    )
    if config.out is not None:
        result.out = write_report(result, config.out, overwrite=config.overwrite)
    return result


def summarise(
    plan: Plan, scores: Scores, n: int, d_bar: float, config: EvalConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(one row per method × layer in network order, one row per no-information floor, one row per method ×
    layer × kind of the method's own floors)."""
    boot = dict(d_bar=d_bar, n_boot=config.n_boot, seed=config.seed)
    floor_rows = [
        scores.summary(
            (f, FLOOR_LAYER), {"method": f, "layer": FLOOR_LAYER, "depth": 0, "n": n, "reads_target": False}, **boot
        )
        for f in FLOOR_METHODS
    ]
    floor_psnr = {r["method"]: r["psnr"] for r in floor_rows}
    caveats = _caveats(plan.methods)
    rows, own_rows = [], []
    for m in plan.methods:
        for L in plan.layers:
            base = {"layer": L, "depth": plan.encoder.layers.index(L) + 1, "n": n, "reads_target": m.name in caveats}
            row = scores.summary((m.name, L), {"method": m.name, **base}, **boot)
            own = own_floors(m, L, scores, base, config)
            own_rows += [scores.summary((r["method"], L), r, **boot) for r in own]
            row["own_floors"] = {r["floor_kind"]: {"psnr": r["psnr"], "margin": r["margin"]} for r in own} or None
            margins = {r["floor_kind"]: r["margin"][1] for r in own}
            half = (row["psnr_hi"] - row["psnr_lo"]) / 2  # a gain below the figure's own uncertainty is not one
            row["floor_verdict"] = verdict(row["psnr"], floor_psnr, margins, half)
            health = m.health(L)
            row["decoder_health"] = health.get("status") if health else None
            rows.append(row)
    return rows, floor_rows, own_rows


def own_floors(m: Method, layer: str, scores: Scores, base: dict[str, Any], config: EvalConfig) -> list[dict[str, Any]]:
    """The rows of ``m``'s own floors at ``layer`` (not yet summarised), each with ``margin``: the paired per-image
    PSNR difference method − floor, mean and 95 % interval, over the same images."""
    rows = []
    for kind in m.floor_kinds:
        name = own_floor_name(m.name, kind)
        margin = scores.paired((m.name, layer), (name, layer), config.n_boot, config.seed)
        rows.append(
            {"method": name, **base, "reads_target": True, "floor_of": m.name, "floor_kind": kind, "margin": margin}
        )
    return rows


def _caveats(methods: list[Method]) -> dict[str, str]:
    """Method name -> what it reads of the true image, for the methods whose figures are an optimistic bound."""
    return {m.name: m.describe_caveat() for m in methods if m.describe_caveat()}


def chance_note(accuracy: tuple[float, float, float], n_classes: int) -> str | None:
    """A warning when the encoder's accuracy on the originals is no better than chance (CI reaches 1/K)."""
    if accuracy[1] > 1.0 / n_classes:
        return None
    return (
        f"the encoder's accuracy on the originals, {accuracy[0]:.3f} [{accuracy[1]:.3f}, {accuracy[2]:.3f}], is "
        f"no better than chance (1/{n_classes} = {1 / n_classes:.3f}): the data's labels probably do not "
        f"correspond to its classes, so accuracy on x̂ says nothing"
    )


def health_notes(rows: list[dict[str, Any]], floor_rows: list[dict[str, Any]]) -> list[str]:
    """One line per row that must not be read as a measure of the layer's information."""
    floor = {r["method"]: r["psnr"] for r in floor_rows}
    notes = []
    for r in rows:
        what = []
        if r.get("decoder_health") == "failed":
            what.append("its decoder diverged in training and was marked failed (its last good weights are used)")
        elif r.get("decoder_health") == "recovered":
            what.append("its decoder diverged in training and was recovered")
        if r.get("floor_verdict"):
            what.append(f"PSNR {r['psnr']:.2f} dB is {r['floor_verdict']}: {_floor_figures(r, floor)}")
        if what:
            warn = r.get("decoder_health") == "failed" or uninformative(r.get("floor_verdict"))
            notes.append(
                f"{'⚠ ' if warn else ''}{r['method']} at {r['layer']}: "
                + "; ".join(what)
                + ("; this figure does not measure the layer's information" if warn else "")
            )
    return notes


def _floor_figures(row: dict[str, Any], floor: dict[str, float]) -> str:
    """The floors a flagged row is set against, in words: its own floors with the paired difference when it
    has them, the mean-image floors otherwise."""
    if not row.get("own_floors") or not row["floor_verdict"].startswith(BELOW_OWN):
        return ", ".join(f"{k} {v:.2f} dB" for k, v in floor.items())
    return ", ".join(
        f"{kind} {f['psnr']:.2f} dB (paired difference {f['margin'][0]:+.2f} [{f['margin'][1]:+.2f}, "
        f"{f['margin'][2]:+.2f}] dB)"
        for kind, f in row["own_floors"].items()
    )


def evaluation_notes(
    plan: Plan, rows: list[dict[str, Any]], floor_rows: list[dict[str, Any]], acc: tuple[float, float, float] | None
) -> list[str]:
    """The report's notes, in order: LPIPS skipped, rows not to be read as information, accuracy caveats."""
    notes = [plan.lpips_note] if plan.lpips_note else []
    notes += health_notes(rows, floor_rows)
    if plan.accuracy_note:
        notes.append(plan.accuracy_note)
    elif acc is not None:
        enc = plan.encoder
        notes += [n for n in [chance_note(acc, enc.layer(enc.layers[-1]).shape[0])] if n]
    return notes


def settings_of(
    plan: Plan, config: EvalConfig, n: int, d_bar: float, acc: tuple[float, float, float] | None
) -> dict[str, Any]:
    """Everything a reader needs to reproduce or interpret the numbers (nothing time- or host-dependent)."""
    enc, data = plan.encoder, plan.data
    src = data.source if not isinstance(getattr(data, "source", ""), str) else data  # ImageData wraps a source
    describe = getattr(data, "describe", None)
    return {
        "encoder": enc.name,
        "encoder_weights_hash": enc.weights_hash,
        "encoder_spec": enc.spec,
        "checkpoints": [str(c) for c in plan.checkpoints],
        "methods": [m.name for m in plan.methods],
        "layers": plan.layers,
        "method_caveats": _caveats(plan.methods),
        "data": getattr(src, "source", type(data).__name__),
        "root": getattr(src, "root", None),
        "split": config.split,
        "n_images": n,
        "split_description": describe(config.split) if callable(describe) else f"split {config.split}: {n} images",
        "limit": config.limit,
        "seed": config.seed,
        "n_boot": config.n_boot,
        "ci_level": 0.95,
        "psnr_cap_db": M.PSNR_CAP_DB,
        "db_mean_pairwise_distance": d_bar,
        "encoder_accuracy_on_originals": list(acc) if acc is not None else None,
        "accuracy_labels": plan.accuracy_basis,
        "lpips": "computed (v0.1, AlexNet trunk)" if plan.lpips_model is not None else "skipped",
        "image_space": "[0, 1] RGB; the encoder normalises internally and decoders predict [0, 1] images, "
        "so no de-normalisation is needed; reconstructions clamped to [0, 1]",
        "device": str(plan.device.type),
        "torch": torch.__version__,
        "floors": {"source": plan.floors.source, "n_images": plan.floors.n, "methods": list(FLOOR_METHODS)},
        "own_floors": {m.name: list(m.floor_kinds) for m in plan.methods if m.floor_kinds},
    }


def run_evaluate(config: EvalConfig) -> None:
    """``upconv evaluate``: evaluate, then print the split evaluated and the report's path (stdout only)."""
    result = evaluate(config)
    print(f"evaluated {result.settings['split_description']}")
    if result.out is not None:
        print(os.path.join(result.out, "report.md"))

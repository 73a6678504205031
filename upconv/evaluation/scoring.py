"""Scoring: every method reconstructs every batch from every layer, and every per-image metric is kept per
(method, layer); then each is summarised as mean, 95 % bootstrap interval and n."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from upconv.core import metrics as M
from upconv.core.floors import FLOOR_METHODS, own_floor_name
from upconv.core.runtime import progress
from upconv.evaluation.grid_picks import GridPicks
from upconv.evaluation.plan import Plan
from upconv.evaluation.result import FLOOR_LAYER, METRICS
from upconv.methods.base import Batch, Method


class Scores:
    """Per-image metric values for each (method, layer) key, batch by batch."""

    def __init__(self, plan: Plan) -> None:
        self.encoder = plan.encoder
        self.last = plan.encoder.layers[-1]
        self.with_accuracy = plan.accuracy_basis is not None
        self.lpips_model = plan.lpips_model
        keys = [(m.name, L) for m in plan.methods for L in plan.layers] + [(f, FLOOR_LAYER) for f in FLOOR_METHODS]
        keys += [(own_floor_name(m.name, k), L) for m in plan.methods for L in plan.layers for k in m.floor_kinds]
        self.per: dict[tuple[str, str], dict[str, list[Tensor]]] = {key: {k: [] for k in METRICS} for key in keys}

    def add(self, key: tuple[str, str], xh: Tensor, x: Tensor, y: Tensor, feats: dict[str, Tensor]) -> None:
        """Every per-image metric of reconstructions ``xh`` against ``x`` (B, C, H, W), kept under ``key``."""
        L = key[1] if key[1] in feats else None
        last = self.last
        with torch.no_grad():
            fh = self.encoder(xh, [L, last] if L else [last])
            row = self.per[key]
            row["mse"].append(M.mse(xh, x))
            row["psnr"].append(M.psnr(xh, x))
            row["ssim"].append(M.ssim(xh, x))
            row["db_error"].append(M.db_error(xh, x, 1.0))  # normalised in ``summary``, once d̄ is known
            if L:
                row["feature_error"].append(M.feature_error(fh[L], feats[L]))
            row["class_agreement"].append(M.class_agreement(fh[last], feats[last]))
            if self.with_accuracy:
                row["recon_accuracy"].append(M.accuracy(fh[last], y))
            if self.lpips_model is not None:
                row["lpips"].append(M.lpips_distance(self.lpips_model, xh, x))

    def summary(
        self, key: tuple[str, str], row: dict[str, Any], d_bar: float, n_boot: int, seed: int
    ) -> dict[str, Any]:
        """``row`` with each metric's mean and 95 % bootstrap interval (None for a metric not computed)."""
        for k in METRICS:
            vals = self.per[key][k]
            if not vals:
                row.update({k: None, f"{k}_lo": None, f"{k}_hi": None})
                continue
            v = torch.cat([t.double().cpu() for t in vals])  # (N,)
            if k == "db_error":
                v = v / d_bar  # Dosovitskiy & Brox's normaliser: the mean distance between two originals
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = M.bootstrap_ci(v, n_boot=n_boot, seed=seed)
        return row

    def paired(self, key: tuple[str, str], other: tuple[str, str], n_boot: int, seed: int) -> list[float]:
        """Mean per-image PSNR difference ``key`` − ``other`` over the same images and its 95 % bootstrap interval."""
        a, b = (torch.cat([t.double().cpu() for t in self.per[k]["psnr"]]) for k in (key, other))  # (N,)
        return list(M.bootstrap_ci(a - b, n_boot=n_boot, seed=seed))


def _units(
    plan: Plan, split: str, batch_size: int
) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor], bool, bool, Method, str]]:
    """One unit of work per batch × method × layer (the progress bar counts these): the batch, its features
    (one encoder pass), whether this unit opens and closes the batch, the method and the layer. It records
    nothing; ``score_batches`` does."""
    enc, last = plan.encoder, plan.encoder.layers[-1]
    work = [(m, L) for m in plan.methods for L in plan.layers]
    for x, y in plan.data.images(split, batch_size=batch_size, device=plan.device):  # (B, C, H, W) in [0, 1], (B,)
        enc.check_images(x, finite=True)  # a NaN pixel would otherwise surface as a NaN metric
        with torch.no_grad():
            feats = enc(x, [*plan.layers, last])
        for i, (m, L) in enumerate(work):
            yield x, y, feats, i == 0, i == len(work) - 1, m, L


def _open_batch(
    plan: Plan, scores: Scores, picks: GridPicks, batch: tuple[Tensor, Tensor, dict[str, Tensor]], seen: tuple
) -> list[int]:
    """Record a batch's originals, the encoder's accuracy on them, its floors and its grid candidates; returns
    the batch's grid positions."""
    x, y, feats = batch
    originals, orig_acc = seen
    originals.append(x.cpu())
    if plan.accuracy_basis is not None:
        orig_acc.append(M.accuracy(feats[plan.encoder.layers[-1]], y).cpu())
    positions = picks.admit(x, y)
    for f in FLOOR_METHODS:  # the same reference for every layer: scored once per batch
        xh = plan.floors.reconstruct(f, y).to(x)  # (B, C, H, W)
        picks.store((f, FLOOR_LAYER), xh, positions)
        scores.add((f, FLOOR_LAYER), xh, x, y, feats)
    return positions


def score_batches(
    plan: Plan, scores: Scores, picks: GridPicks, split: str, batch_size: int
) -> tuple[list[Tensor], list[Tensor]]:
    """Reconstruct and score the whole split; returns the originals' batches (on the CPU) and the encoder's
    per-image accuracy on them (empty when accuracy is skipped)."""
    seen: tuple[list[Tensor], list[Tensor]] = ([], [])
    size = plan.data.split_size(split) if hasattr(plan.data, "split_size") else None
    total = -(-size // batch_size) * len(plan.methods) * len(plan.layers) if size is not None else None
    units = _units(plan, split, batch_size)
    for x, y, feats, opens, closes, m, L in progress(units, desc="evaluate", total=total, unit="step"):
        if opens:
            positions = _open_batch(plan, scores, picks, (x, y, feats), seen)
        xh, own = m.reconstruct_with_floors(Batch(x, feats, y), L)
        xh = xh.detach().float().clamp(0, 1)  # (B, C, H, W)
        if xh.shape != x.shape:
            raise ValueError(
                f"method '{m.name}' returned shape {tuple(xh.shape)} for layer {L}; "
                f"expected the input's shape {tuple(x.shape)}"
            )
        picks.store((m.name, L), xh, positions)
        scores.add((m.name, L), xh, x, y, feats)
        for kind in m.floor_kinds:  # the method's own floors: the same image, nothing of the features
            scores.add((own_floor_name(m.name, kind), L), own[kind].detach().float().clamp(0, 1), x, y, feats)
        if closes:
            picks.end_batch()
    return seen

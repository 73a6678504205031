"""The attack stage of a privacy run: every attack on the clean features at each split layer, then the chosen
attacks on each defended point of the sweep, scored for leakage (PSNR, SSIM, LPIPS, re-identification) and
for the utility the rest of the network keeps on the same features. Every figure is a per-image mean with a
95 % bootstrap interval (``upconv.core.metrics.bootstrap_ci``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from upconv.core import metrics as M
from upconv.methods.mahendran_vedaldi import MVSettings, invert
from upconv.privacy.config import PrivacyConfig, attack_plan
from upconv.privacy.inference_defenses import defend, tail
from upconv.privacy.reid import reid_hits
from upconv.privacy.stages import Clock, Trained
from upconv.privacy.sweep import MV_ATTACKS, AttackerKey, Point


def reconstruct(
    t: Trained, c: PrivacyConfig, attack: str, decoder: str, layer: str, feats: Tensor, point: Point | None = None
) -> Tensor:
    """Images (N, C, H, W) from features: optimisation inversion for white_box / query_free's ``paper``, the
    setting's trained inverse network otherwise; with ``point``, its adaptive one (trained on that point's
    defended features)."""
    if point is None and decoder == "paper" and attack in MV_ATTACKS:
        target = t.victim if attack == "white_box" else t.shadow
        mv = MVSettings(steps=c.mv_steps, optimizer=c.mv_optimizer, tv_weight=c.mv_tv_weight, seed=c.seed)
        chunks = [invert(target, layer, f, mv).images for f in feats.split(c.mv_batch_size or c.batch_size)]
        return torch.cat(chunks)
    net = t.nets[AttackerKey(attack) if point is None else AttackerKey.adaptive(attack, point)][(decoder, layer)]
    with torch.no_grad():
        return torch.cat([net(f) for f in feats.split(c.batch_size)]).clamp(0, 1)


def lpips_model(c: PrivacyConfig, notes: list[str], device: torch.device) -> nn.Module | None:
    """LPIPS when enabled and its weights are cached; otherwise None, with a note saying why."""
    model, note = M.load_lpips() if c.lpips else (None, "LPIPS skipped: disabled (lpips=False)")
    if note:
        notes.append(note)
    return model.to(device) if model is not None else None


def score(c: PrivacyConfig, xh: Tensor, x: Tensor, lp: nn.Module | None, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with each leakage figure (mean, lo, hi) of reconstructions ``xh`` against originals ``x``."""
    vals = {
        "mse": (xh.float() - x.float()).pow(2).flatten(1).mean(1),
        "psnr": M.psnr(xh, x),
        "ssim": M.ssim(xh, x),
        "lpips": M.lpips_distance(lp, xh, x) if lp is not None else None,
        "reid": reid_hits(xh, x, c.n_candidates, seed=c.seed),
    }
    for k, v in vals.items():
        row[k], row[f"{k}_lo"], row[f"{k}_hi"] = (
            M.bootstrap_ci(v, n_boot=c.n_boot, seed=c.seed) if v is not None else (None,) * 3
        )
    return row


@dataclass
class Scene:
    """What every point's attacks share: the evaluated [0, 1] images and labels on the device, the clean
    features per layer, the rest of the network after each layer, and LPIPS (None when skipped)."""

    x: Tensor  # (N, C, H, W)
    y: Tensor  # (N,)
    clean: dict[str, Tensor]
    tails: dict[str, nn.Module]
    lp: nn.Module | None


def scene(t: Trained, c: PrivacyConfig, layers: list[str], eval_data: tuple[Tensor, Tensor]) -> Scene:
    x, y = eval_data[0].to(t.device), eval_data[1].to(t.device)
    tails = {L: tail(t.victim, L) for L in layers}
    with torch.no_grad():
        clean = t.victim(x, layers)
    return Scene(x, y, clean, tails, lpips_model(c, t.notes, t.device))


def view(t: Trained, c: PrivacyConfig, point: Point, s: Scene) -> tuple[Tensor, Tensor]:
    """(features the attacker sees (N, ...), logits utility is scored on (N, K)) at ``point``: the retrained
    victim's for a training-time defence, else the victim's features, defended at an inference-time one."""
    kind, strength, L = point
    with torch.no_grad():
        v = t.defended.get(point)
        if v is not None:
            return v(s.x, [L])[L], v.logits(s.x).flatten(1)
        f = s.clean[L] if kind == "none" else defend(s.clean[L], kind, strength, seed=c.seed)
        return f, s.tails[L](f)


def attack_point(
    t: Trained, c: PrivacyConfig, point: Point, s: Scene, clock: Clock
) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], Tensor]]:
    """Rows of leakage and utility of every attack of ``attack_plan`` on ``point`` and, undefended, the
    reconstructions for the grids."""
    kind, strength, L = point
    f, logits = view(t, c, point, s)
    utility = M.bootstrap_ci(M.accuracy(logits, s.y), n_boot=c.n_boot, seed=c.seed)
    rows, grid = [], {}
    for attack, dec, who in attack_plan(c, point):
        adaptive = point if who == "adaptive" else None
        stage = f"reconstruct {attack} {dec}" + (" adaptive" if adaptive else "")
        xh = clock.timed(stage, reconstruct, t, c, attack, dec, L, f, adaptive)
        xh = xh.detach().float().clamp(0, 1)
        if kind == "none":
            grid[(attack, dec, L)] = xh[: c.grid_images].cpu()
        row = {"attack": attack, "decoder": dec, "layer": L, "defense": kind, "strength": strength, "n": len(s.x)}
        row = score(c, xh, s.x, s.lp, row)
        row["attacker"] = who
        if who == "adaptive":
            row["inverter_health"] = t.health[AttackerKey.adaptive(attack, point)][(dec, L)]["status"]
        row["utility"], row["utility_lo"], row["utility_hi"] = utility
        rows.append(row)
    return rows, grid

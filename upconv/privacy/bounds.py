"""The Fisher-information bound (``upconv.privacy.fisher``) beside the empirical attacks of a privacy run: at
every point of the ``noise`` defence (σ > 0), the unbiased attacker's PSNR upper bound, van Trees' bound for
biased attackers when the prior's Fisher information is given, and how far the best attack is from them.

The Jacobian samples of a split layer do not depend on σ, so they are estimated once per layer (unit
``fisher/<layer>``, on the evaluated images) and every σ of the sweep reuses them.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from upconv.core.units import Unit
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.fisher import JacobianSamples, bound_summary, jacobian_samples, layer_fn, psnr_of, van_trees_mse
from upconv.privacy.resume import Resume, load_state
from upconv.privacy.stages import Trained

BIASED = "above the unbiased bound: a biased attacker (it uses a prior)"
ASSUMPTIONS = (
    "Bounds at the noise defence's points (Maeng et al., NeurIPS 2023): the released features are f(x) + "
    "σ·RMS(f(x))·N(0, I) (the defence as applied here), f differentiable at x, x in [0, 1] pixel space (d = C·H·W "
    "numbers; PSNR with peak 1). *Unbiased* (Cramér–Rao): any attacker whose estimate is unbiased for every image "
    "has per-pixel MSE ≥ 1/dFIL (and ≥ (d − 1)²/(d·tr(JᵀJ/s²)), which discounts the noise scale's one direction); "
    "the PSNR bound is per image, of the attacker's expected MSE, averaged over images like the attacks' PSNR. "
    "Learned inverters clamp to [0, 1] and learn the image distribution: they are biased, and may beat it. "
    "*Biased* (van Trees): any attacker at all, averaged over images drawn from a prior π with a differentiable "
    "density that vanishes at the edge of its support, has per-pixel MSE ≥ 1/(E dFIL + tr J(π)/d); tr J(π)/d "
    "(fisher_prior) is an assumption about the image distribution, not measured here. Intervals: 95 % bootstrap "
    "over images and Hutchinson probes."
)


def fisher_unit(c: PrivacyConfig, t: Trained, layer: str, eval_id: str) -> Unit:
    """The Jacobian samples of one split layer on the evaluated images (``eval_id``: their fingerprint)."""
    settings = {"victim": t.victim.weights_hash, "layer": layer, "eval": eval_id, "probes": c.fisher_probes}
    return Unit(f"fisher/{layer}", {**settings, "batch_size": c.batch_size, "seed": c.seed})


def estimate(t: Trained, c: PrivacyConfig, layer: str, x: Tensor, eval_id: str, resume: Resume) -> JacobianSamples:
    """Hutchinson samples of ``layer`` at the [0, 1] images ``x`` (N, C, H, W): estimated, or a finished unit's."""

    def compute() -> JacobianSamples:
        return jacobian_samples(layer_fn(t.victim, layer), x, c.fisher_probes, c.batch_size, c.seed)

    def save(s: JacobianSamples, folder: str) -> dict[str, Any]:
        torch.save(s.state(), os.path.join(folder, "jacobian.pt"))
        return {"seconds": s.seconds, "n_images": len(s.sq), "n_probes": s.sq.shape[1], "inputs": s.inputs}

    def load(folder: str, r: dict[str, Any]) -> JacobianSamples:
        return JacobianSamples.from_state(load_state(folder, "jacobian.pt"), r["inputs"], r["seconds"])

    return resume.run(fisher_unit(c, t, layer, eval_id), "estimate Fisher information", compute, save, load)


def bound_row(s: JacobianSamples, c: PrivacyConfig, layer: str, sigma: float, rows: list[dict]) -> dict[str, Any]:
    """The bounds at noise σ and ``layer``, the best attack's PSNR and MSE there, and the gap in dB."""
    b = {"layer": layer, "defense": "noise", "strength": float(sigma)}
    b |= bound_summary(s, sigma, "relative", n_boot=c.n_boot, seed=c.seed)
    b["seconds"] = round(s.seconds, 3)
    if c.fisher_prior is not None:
        b["prior_fisher"] = float(c.fisher_prior)
        b["van_trees_mse"] = van_trees_mse(b["dfil"], c.fisher_prior)
        b["van_trees_psnr"] = psnr_of(b["van_trees_mse"])
    best = max(rows, key=lambda r: r["psnr"], default=None)
    if best is not None:
        b["best"] = f"{best['attack']} {best['decoder']} ({best.get('attacker', 'clean')})"
        b["best_psnr"], b["best_mse"] = best["psnr"], best.get("mse")
        b["gap_db"] = b["psnr_bound"] - best["psnr"]
    return b


def mark(rows: list[dict[str, Any]], bound: dict[str, Any] | None) -> None:
    """Each row of a point gets the unbiased PSNR bound (None without one) and a verdict where it beats it."""
    for r in rows:
        r["psnr_bound"] = None if bound is None else bound["psnr_bound"]
        above = bound is not None and r["psnr"] > bound["psnr_bound_hi"]
        r["bound_verdict"] = BIASED if above else None


def bound_table(bounds: list[dict[str, Any]]) -> str:
    """Markdown: per noise point, dFIL, the bounds, the best attack and its distance to the unbiased bound."""
    vt = any("van_trees_mse" in b for b in bounds)
    head = "| layer | σ | dFIL [95 %] | MSE ≥ (unbiased) | PSNR ≤ dB (unbiased) [95 %] |"
    head += " MSE ≥ (van Trees) |" if vt else ""
    head += " best attack | its PSNR | bound − best dB | estimate (per layer, every σ) |"
    lines = [head, "|---|---:|---:|---:|---:|" + ("---:|" if vt else "") + "---|---:|---:|---|"]
    for b in bounds:
        cells = [
            b["layer"],
            f"{b['strength']:g}",
            f"{b['dfil']:.4g} [{b['dfil_lo']:.4g}, {b['dfil_hi']:.4g}]",
            f"{b['mse_bound']:.3g}",
            f"{b['psnr_bound']:.2f} [{b['psnr_bound_lo']:.2f}, {b['psnr_bound_hi']:.2f}]",
        ]
        cells += [f"{b['van_trees_mse']:.3g} ({b['van_trees_psnr']:.2f} dB)"] if vt else []
        gap = b.get("gap_db")
        verdict = " (attack above: biased)" if gap is not None and b["best_psnr"] > b["psnr_bound_hi"] else ""
        cells += [
            b.get("best", "—"),
            "—" if gap is None else f"{b['best_psnr']:.2f}",
            "—" if gap is None else f"{gap:+.2f}{verdict}",
            f"{b['seconds']:.1f} s, {b['n_images']} images × {b['n_probes']} probes",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""Fisher information leakage of features released with Gaussian noise (Maeng, Guo, Kariyappa & Suh, "Bounding
the Invertibility of Privacy-preserving Instance Encoding using Fisher Information", NeurIPS 2023): a bound on
the reconstruction error of *every* attacker of a given kind, beside the empirical attacks that show only what
one attacker achieved.

Features f(x) ∈ ℝᴰ of an image x ∈ [0, 1]ᵈ (the pixel space the attackers reconstruct and PSNR is measured in,
d = C·H·W) are released as z = f(x) + s(x)·ε, ε ~ N(0, I_D). The Fisher information of x is

    I(x) = JᵀJ / s² + (D/2)·∇log s² ∇log s²ᵀ          (J = ∂f/∂x, D × d)

- ``absolute`` noise, s = σ: I = JᵀJ / σ² (the paper's setting);
- ``relative`` noise, s = σ·RMS(f(x)), the package's ``noise`` defence (``upconv.privacy.inference_defenses``): the
  second, rank-one term is 2D·(Jᵀf)(Jᵀf)ᵀ / ‖f‖⁴, because the noise's own scale depends on the image.

dFIL = tr(I) / d. Cramér–Rao with the AM–HM inequality: any unbiased attacker has E‖x̂ − x‖²/d ≥ d / tr(I)
= 1/dFIL. With relative noise the rank-one term can inflate tr(I) while informing one direction only; by
eigenvalue interlacing E‖x̂ − x‖² ≥ (d − 1)² / tr(JᵀJ/s²) as well, and the bound is the larger of the two.
For biased attackers (every learned decoder: it uses a prior) van Trees' inequality gives
E‖x̂ − x‖²/d ≥ 1 / (E dFIL + tr J(π)/d), with J(π) the Fisher information of the image prior π.

tr(JᵀJ) = E_v ‖J v‖² for Rademacher v (Hutchinson 1989): one forward-mode Jacobian–vector product
(``torch.func.jvp``) per probe and batch; ‖Jᵀf‖ is exact, one vector–Jacobian product per batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torch.func import jvp, vjp

from upconv.nets.encoder import Encoder

Noise = Literal["absolute", "relative"]


@dataclass
class JacobianSamples:
    """What the Fisher information of one layer needs, per evaluated image and independent of σ.

    ``sq`` (N, P): ‖J v‖² for P Rademacher probes v; ``energy`` (N,): ‖f(x)‖²; ``pull`` (N,): ‖Jᵀf(x)‖²;
    ``features`` D and ``inputs`` d per image; ``seconds`` the wall time of the estimate."""

    sq: Tensor
    energy: Tensor
    pull: Tensor
    features: int
    inputs: int
    seconds: float = 0.0

    def state(self) -> dict[str, Any]:
        return {"sq": self.sq, "energy": self.energy, "pull": self.pull, "features": self.features}

    @classmethod
    def from_state(cls, state: dict[str, Any], inputs: int, seconds: float) -> JacobianSamples:
        return cls(state["sq"], state["energy"], state["pull"], int(state["features"]), inputs, seconds)


def layer_fn(encoder: Encoder, layer: str) -> Callable[[Tensor], Tensor]:
    """x ↦ the features at ``layer`` of [0, 1] images x (B, C, H, W): each image's features depend on that image
    only (the encoder is in eval mode), so a batched product gives every image's own J v."""
    name = encoder.resolve([layer])[0]
    return lambda x: encoder(x, [name])[name]


def jacobian_samples(
    fn: Callable[[Tensor], Tensor], x: Tensor, n_probes: int = 8, batch_size: int = 128, seed: int = 0
) -> JacobianSamples:
    """Hutchinson samples ‖J v‖² of ``fn`` at every image of ``x`` (N, ...), with ‖f‖² and ‖Jᵀf‖², computed on
    ``x``'s device. A product runs on up to ``batch_size`` inputs: a batch of images, or a few images repeated
    once per probe. Probes are drawn from a generator seeded with ``seed``."""
    if n_probes < 1:
        raise ValueError(f"the Fisher information needs n_probes ≥ 1 Hutchinson probes; got {n_probes}")
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    sq, energy, pull = [], [], []
    for xb in x.split(batch_size):  # (B, C, H, W)
        per_call = max(1, batch_size // len(xb))  # probes stacked into one product
        rows = []
        for start in range(0, n_probes, per_call):
            k = min(per_call, n_probes - start)
            v = (torch.randint(0, 2, (k, *xb.shape), generator=g) * 2 - 1).to(xb)  # Rademacher (k, B, C, H, W)
            repeated = xb.repeat(k, *[1] * (xb.dim() - 1))  # (k·B, C, H, W), probe-major as v.flatten(0, 1)
            _, jv = jvp(fn, (repeated,), (v.flatten(0, 1),))  # (k·B, *features)
            rows.append(jv.detach().flatten(1).pow(2).sum(1).view(k, len(xb)).T)  # (B, k)
        f, back = vjp(fn, xb)
        (jtf,) = back(f.detach())  # Jᵀf per image (B, C, H, W)
        sq.append(torch.cat(rows, 1))  # (B, P)
        energy.append(f.detach().flatten(1).pow(2).sum(1))
        pull.append(jtf.detach().flatten(1).pow(2).sum(1))
        features = f[0].numel()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    cat = [torch.cat(t).double().cpu() for t in (sq, energy, pull)]
    return JacobianSamples(*cat, features=features, inputs=x[0].numel(), seconds=time.perf_counter() - t0)


def fisher_parts(s: JacobianSamples, sigma: float, noise: Noise = "relative") -> tuple[Tensor, Tensor]:
    """(tr(JᵀJ)/s² per image and probe (N, P), the exact rank-one scale term per image (N,)) at noise σ."""
    if not sigma > 0:
        raise ValueError(f"the Fisher information is finite only for noise σ > 0; got {sigma}")
    if noise == "absolute":
        return s.sq / sigma**2, torch.zeros_like(s.energy)
    if noise != "relative":
        raise ValueError(f"noise is absolute (s = σ) or relative (s = σ·RMS of the features); got {noise!r}")
    if not (s.energy > 0).all():
        raise ValueError("relative noise needs features that are not all zero; some image's features are")
    var = sigma**2 * s.energy / s.features  # s² per image (N,)
    return s.sq / var[:, None], 2 * s.features * s.pull / s.energy**2


def _per_image(feature: Tensor, scale: Tensor, d: int) -> dict[str, Tensor]:
    """Per-image dFIL and unbiased MSE bound from the probe-averaged feature part (N,) and scale term (N,)."""
    full = feature + scale
    mse = torch.maximum(d / full, (d - 1) ** 2 / (d * feature))
    return {"dfil": full / d, "mse": mse, "psnr": 10 * torch.log10(1 / mse)}


def bound_summary(
    s: JacobianSamples, sigma: float, noise: Noise = "relative", n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """dFIL and the unbiased attacker's MSE lower bound and PSNR upper bound (peak 1), each a mean over images
    with a 95 % interval that resamples the images and, within each, its probes (percentile bootstrap)."""
    feature, scale = fisher_parts(s, sigma, noise)
    n, p = feature.shape
    point = {k: float(v.mean()) for k, v in _per_image(feature.mean(1), scale, s.inputs).items()}
    g = torch.Generator().manual_seed(seed)
    boots: dict[str, list[Tensor]] = {k: [] for k in point}
    for start in range(0, max(n_boot, 0), 100):  # blocks bound memory at 100·N·P indices
        b = min(100, n_boot - start)
        img = torch.randint(0, n, (b, n), generator=g)  # (b, N)
        probe = torch.randint(0, p, (b, n, p), generator=g)  # (b, N, P)
        f = feature[img[..., None], probe].mean(-1)  # (b, N)
        for k, v in _per_image(f, scale[img], s.inputs).items():
            boots[k].append(v.mean(1))
    out: dict[str, Any] = {"sigma": float(sigma), "noise": noise, "n_images": n, "n_probes": p}
    for k, v in point.items():
        name = {"dfil": "dfil", "mse": "mse_bound", "psnr": "psnr_bound"}[k]
        out[name], (out[f"{name}_lo"], out[f"{name}_hi"]) = v, _interval(boots[k], v)
    out["scale_share"] = float(scale.sum() / (feature.mean(1) + scale).sum())  # of tr(I), from the noise's scale
    return out


def _interval(boots: list[Tensor], value: float) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of bootstrapped means; (value, value) without resamples."""
    if not boots:
        return value, value
    lo, hi = torch.quantile(torch.cat(boots), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


def van_trees_mse(dfil: float, prior_fisher: float) -> float:
    """The per-pixel MSE lower bound of *any* attacker (biased ones included), averaged over images drawn from a
    prior π whose Fisher information per pixel is tr J(π)/d = ``prior_fisher``: 1 / (E dFIL + tr J(π)/d)
    (van Trees 1968; Maeng et al. 2023, with AM–HM as for the unbiased bound)."""
    if not prior_fisher >= 0 or not math.isfinite(prior_fisher):
        raise ValueError(f"the prior's Fisher information per pixel must be finite and ≥ 0; got {prior_fisher}")
    return 1.0 / (dfil + prior_fisher)


def psnr_of(mse: float) -> float:
    """PSNR (dB, peak 1) of a per-pixel MSE: 10·log10(1/MSE)."""
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf

"""The Fisher-information bound (``upconv.privacy.fisher``) against closed forms: a linear encoder, whose
Fisher information is WᵀW/σ² and whose best unbiased attacker (least squares) and Bayes attacker (Wiener)
have known errors; an explicit Jacobian of a tiny CNN for Hutchinson's estimate; the Monte-Carlo score of
the package's own noise defence for the relative-noise formula."""

import math

import pytest
import torch
from torch import nn
from torch.func import grad, vmap

from upconv.privacy.fisher import (
    JacobianSamples,
    bound_summary,
    fisher_parts,
    jacobian_samples,
    psnr_of,
    van_trees_mse,
)
from upconv.privacy.inference_defenses import defend

D_IN, D_OUT = 12, 20  # an image of 3 × 2 × 2 numbers, 20 features


def _linear(W):
    return lambda x: x.flatten(1) @ W.T  # (B, D_OUT)


def _images(n, seed=0):
    return torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthonormal(c, seed=0):
    """W with WᵀW = c·I: √c times orthonormal columns."""
    q, _ = torch.linalg.qr(torch.randn(D_OUT, D_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return math.sqrt(c) * q


def test_a_linear_encoder_s_dfil_is_the_closed_form_and_least_squares_sits_above_the_bound():
    W = torch.randn(D_OUT, D_IN, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = 0.3
    s = jacobian_samples(_linear(W), _images(5), n_probes=400, batch_size=2000, seed=2)
    b = bound_summary(s, sigma, "absolute", n_boot=500)
    M = W.T @ W
    dfil = float(torch.trace(M)) / sigma**2 / D_IN
    assert b["dfil_lo"] <= dfil <= b["dfil_hi"]
    assert b["dfil"] == pytest.approx(dfil, rel=0.05)
    assert b["dfil_hi"] - b["dfil_lo"] > 0  # a non-diagonal WᵀW: Rademacher probes do vary
    least_squares = sigma**2 * float(torch.trace(torch.linalg.inv(M))) / D_IN  # the best unbiased attacker
    assert least_squares >= b["mse_bound_hi"]  # strictly above: WᵀW is far from a multiple of I
    assert b["psnr_bound"] == pytest.approx(10 * math.log10(dfil), abs=0.25)


def test_the_bound_is_attained_when_w_t_w_is_a_multiple_of_the_identity():
    """Least squares on z = W x + σ ε attains σ² tr((WᵀW)⁻¹)/d, which equals 1/dFIL exactly when WᵀW = c·I; the
    attacker's Monte-Carlo error agrees with both."""
    c, sigma = 2.0, 0.5
    W = _orthonormal(c)
    x = _images(2000, seed=3)
    s = jacobian_samples(_linear(W), x, n_probes=4, batch_size=2000, seed=0)
    b = bound_summary(s, sigma, "absolute", n_boot=100)
    assert b["dfil"] == pytest.approx(c / sigma**2, rel=1e-9)  # diagonal WᵀW: Rademacher probes are exact
    assert b["mse_bound"] == pytest.approx(sigma**2 / c, rel=1e-9)
    z = _linear(W)(x) + sigma * torch.randn(
        2000, D_OUT, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    xhat = torch.linalg.solve(W.T @ W, W.T @ z.T).T  # (N, d) least squares: unbiased
    mse = float((xhat - x.flatten(1)).pow(2).mean())
    assert mse == pytest.approx(b["mse_bound"], rel=0.03)  # 2000 × 12 squared errors: ±1.8 % at 2 s.d.


def test_a_biased_attacker_beats_the_unbiased_bound_and_meets_van_trees():
    """Images from the prior N(0.5, τ²I): the Wiener attacker (the posterior mean; biased) has per-pixel error
    1/(c/σ² + 1/τ²), below the unbiased bound σ²/c and equal to van Trees' bound with tr J(π)/d = 1/τ²."""
    c, sigma, tau = 1.0, 1.0, 0.25
    W = _orthonormal(c, seed=5)
    g = torch.Generator().manual_seed(6)
    x = 0.5 + tau * torch.randn(4000, D_IN, generator=g, dtype=torch.float64)
    z = x @ W.T + sigma * torch.randn(4000, D_OUT, generator=g, dtype=torch.float64)
    gain = torch.linalg.inv(W.T @ W / sigma**2 + torch.eye(D_IN, dtype=torch.float64) / tau**2) / sigma**2
    xhat = 0.5 + (z - 0.5 * torch.ones(D_IN, dtype=torch.float64) @ W.T) @ (gain @ W.T).T
    mse = float((xhat - x).pow(2).mean())
    b = bound_summary(jacobian_samples(_linear(W), x[:10].view(10, 3, 2, 2), 2), sigma, "absolute", n_boot=10)
    assert mse < b["mse_bound"] / 2  # the prior buys far more than any unbiased attacker can have
    assert mse == pytest.approx(van_trees_mse(b["dfil"], 1 / tau**2), rel=0.05)
    assert van_trees_mse(b["dfil"], 0.0) == pytest.approx(b["mse_bound"])  # a flat prior: the unbiased bound
    assert psnr_of(0.01) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="≥ 0"):
        van_trees_mse(1.0, -1.0)


def test_hutchinson_converges_to_the_exact_trace_of_a_tiny_cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1)).double()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    exact = []
    for i in range(2):
        J = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x[i]).reshape(-1, x[i].numel())  # (D, d)
        exact.append(float((J**2).sum()))  # tr(JᵀJ) = ‖J‖²_F
    few, many = (jacobian_samples(net, x, n_probes=p, batch_size=4096, seed=1) for p in (16, 4096))
    for i, tr in enumerate(exact):
        est = many.sq[i]
        se = float(est.std() / math.sqrt(len(est)))
        assert abs(float(est.mean()) - tr) <= 4 * se and se < 0.01 * tr  # converged, within its error
        assert float(few.sq[i].std() / 4) > 5 * se  # sixteen probes are far from it: the error falls as 1/√P
    b = bound_summary(many, 1.0, "absolute", n_boot=200)
    assert b["dfil_lo"] <= sum(exact) / 2 / x[0].numel() <= b["dfil_hi"]


def test_the_relative_noise_formula_is_the_score_variance_of_the_package_s_defence():
    """tr I(x) = E‖∇ₓ log p(z | x)‖² with z drawn by ``defend(f(x), "noise", σ)`` itself (σ × each image's
    feature RMS), the noise scale's own information included."""
    W = torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    f = lambda x: x.flatten(1) @ W.T  # noqa: E731
    x, sigma = torch.tensor([[0.2, 0.9, 0.4]], dtype=torch.float64), 0.7
    feature, scale = fisher_parts(jacobian_samples(f, x, n_probes=3000, batch_size=3000), sigma, "relative")
    z = torch.stack([defend(f(x), "noise", sigma, seed=k)[0] for k in range(20000)])  # (n, D)

    def log_p(x1, z1):
        mu = x1 @ W.T
        v = sigma**2 * mu.pow(2).mean()
        return -(z1 - mu).pow(2).sum() / (2 * v) - 2 * torch.log(v)  # D/2 · log v with D = 4

    scores = vmap(grad(log_p), in_dims=(None, 0))(x[0], z)  # (n, d)
    mc = float(scores.pow(2).sum(1).mean())
    assert float(feature.mean() + scale[0]) == pytest.approx(mc, rel=0.03)
    assert float(scale[0]) > 0.05 * mc  # the scale term matters here, so the check has teeth


def test_larger_noise_gives_smaller_dfil_and_a_lower_psnr_bound():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
    s = jacobian_samples(net, torch.rand(6, 3, 8, 8), n_probes=4)
    for noise in ("absolute", "relative"):
        bounds = [bound_summary(s, sigma, noise, n_boot=50) for sigma in (0.25, 0.5, 1.0, 2.0)]
        dfil, psnr = [b["dfil"] for b in bounds], [b["psnr_bound"] for b in bounds]
        assert dfil == sorted(dfil, reverse=True) and len(set(dfil)) == 4, noise
        assert psnr == sorted(psnr, reverse=True), noise
    assert bound_summary(s, 0.5, "absolute")["dfil"] == pytest.approx(4 * bound_summary(s, 1.0, "absolute")["dfil"])
    with pytest.raises(ValueError, match="σ > 0"):
        fisher_parts(s, 0.0)


def test_the_samples_survive_a_round_trip_through_their_state():
    s = jacobian_samples(_linear(_orthonormal(1.0)), _images(3), n_probes=2)
    back = JacobianSamples.from_state(s.state(), s.inputs, s.seconds)
    assert bound_summary(back, 0.5, n_boot=20) == bound_summary(s, 0.5, n_boot=20)


def test_the_noise_scale_s_own_information_costs_the_relative_bound_one_direction_only():
    """Relative noise on W x with WᵀW = c·I: the Fisher matrix is (c/v)·I + u uᵀ (v = s², u from the noise scale),
    so the Cramér–Rao bound tr(I⁻¹)/d is known exactly. Where u uᵀ dominates the trace (σ = 4), the bound used
    is the interlacing one, (d − 1)²/(d·tr(c/v·I)): still below Cramér–Rao, far above d/tr(I)."""
    c, sigma = 2.0, 4.0
    W = _orthonormal(c, seed=8)
    x = _images(1, seed=9)
    b = bound_summary(jacobian_samples(_linear(W), x, n_probes=2), sigma, "relative", n_boot=0)
    f = _linear(W)(x)[0]
    v = sigma**2 * float(f.pow(2).mean())
    u = math.sqrt(2 * D_OUT) * (W.T @ f) / f.pow(2).sum()
    fisher = c / v * torch.eye(D_IN, dtype=torch.float64) + torch.outer(u, u)
    cramer_rao = float(torch.trace(torch.linalg.inv(fisher))) / D_IN
    trace_bound = D_IN / float(torch.trace(fisher))
    assert b["mse_bound"] == pytest.approx((D_IN - 1) ** 2 / (D_IN * D_IN * c / v), rel=1e-9)
    assert trace_bound * 2 < b["mse_bound"] <= cramer_rao
    assert b["dfil"] == pytest.approx(float(torch.trace(fisher)) / D_IN, rel=1e-9)  # dFIL: the whole trace

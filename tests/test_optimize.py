"""The input-optimisation engine: objectives, parameterisations, transforms and regularisers."""

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from upconv.nets.encoder import Encoder
from upconv.optim.engine import (
    ChannelMean,
    ClassContrast,
    ClassScore,
    FeatureMatch,
    LayerNorm,
    Neuron,
    OptimSettings,
    optimize,
)
from upconv.optim.params import DenseParam, FourierParam, OctaveParam, PixelParam
from upconv.optim.regularizers import (
    AlphaNorm,
    Blur,
    Jitter,
    L2Decay,
    RandomRotate,
    RandomScale,
    TotalVariation,
    ZeroSmallContribution,
    ZeroSmallNorm,
    gaussian_blur,
)


def small_cnn(dtype=torch.float64) -> Encoder:
    torch.manual_seed(1)
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()),
            conv2=nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()),
            pool=nn.AdaptiveAvgPool2d(2),
            flat=nn.Flatten(),
            fc=nn.Linear(32, 5),
        )
    )
    return Encoder(net, name="small", image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3).to(dtype)


@pytest.fixture
def enc():
    return small_cnn()


# ---------------------------------------------------------------- objectives (hand-built features)
def test_objectives_match_their_formulas():
    a = torch.randn(2, 3, 4, 5, dtype=torch.float64)  # (B, C, H, W)
    s = torch.randn(2, 4, dtype=torch.float64)
    f = {"a": a, "s": s}
    assert torch.equal(ClassScore([1, 3], "s")(f), torch.stack([s[0, 1], s[1, 3]]))
    lp = ClassContrast(2, "s")(f)
    assert torch.allclose(lp, s[:, 2] - torch.logsumexp(s, 1))
    assert torch.allclose(ChannelMean("a", [0, 2])(f), torch.stack([a[0, 0].mean(), a[1, 2].mean()]))
    assert torch.equal(Neuron("a", 1)(f), a[:, 1, 2, 2])  # centre of a 4×5 map
    assert torch.equal(Neuron("a", [1, 0], y=3, x=4)(f), torch.stack([a[0, 1, 3, 4], a[1, 0, 3, 4]]))
    assert torch.allclose(LayerNorm("a")(f), (a**2).flatten(1).mean(1))
    mixed = 2 * ClassScore(0, "s") + LayerNorm("a")
    assert sorted(mixed.layers) == ["a", "s"]
    assert torch.allclose(mixed(f), 2 * s[:, 0] + (a**2).flatten(1).mean(1))
    target = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    fm = FeatureMatch("a", target)(f)
    want = -((a - target) ** 2).flatten(1).sum(1) / (target**2).flatten(1).sum(1)
    assert torch.allclose(fm, want)
    assert torch.allclose(FeatureMatch("a", a)(f), torch.zeros(2, dtype=torch.float64))


def test_objective_rejects_out_of_range_units():
    f = {"s": torch.zeros(2, 4)}
    with pytest.raises(ValueError, match=r"class index \[4\] out of range for layer s: valid class indices are 0..3"):
        ClassScore(4, "s")(f)
    with pytest.raises(ValueError, match="got 3 class indices for a batch of 2 images"):
        ClassScore([0, 1, 2], "s")(f)


# ---------------------------------------------------------------- regularisers (hand-computed)
def test_penalties_match_hand_computation():
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    assert torch.allclose(L2Decay(0.3, 0.5)(x), 0.3 * ((x - 0.5) ** 2).sum((1, 2, 3)))
    assert torch.allclose(
        AlphaNorm(2.0, alpha=6, center=0.5, bound=0.5)(x), 2.0 * ((x - 0.5).abs() ** 6).sum((1, 2, 3)) / (20 * 0.5**6)
    )
    for beta in (2.0, 1.0):
        want = torch.zeros(2, dtype=torch.float64)
        for b in range(2):
            for c in range(3):
                for i in range(3):
                    for j in range(4):
                        d2 = (x[b, c, i, j + 1] - x[b, c, i, j]) ** 2 + (x[b, c, i + 1, j] - x[b, c, i, j]) ** 2
                        want[b] += (d2 + (0 if beta == 2 else 1e-8)) ** (beta / 2)
        assert torch.allclose(TotalVariation(0.7, beta=beta, bound=2.0)(x), 0.7 * want / (20 * 2.0**beta))


def test_blur_is_a_normalised_separable_gaussian():
    x = torch.zeros(1, 1, 15, 15, dtype=torch.float64)
    x[0, 0, 7, 7] = 1
    y = gaussian_blur(x, 1.0)[0, 0]
    t = torch.arange(-3, 4, dtype=torch.float64)
    k = torch.exp(-(t**2) / 2)
    k = k / k.sum()
    assert torch.allclose(y[4:11, 4:11], k[:, None] * k[None, :])
    const = torch.full((2, 3, 8, 8), 0.3, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(const, 2.0), const)  # reflect padding keeps a flat image flat
    b = Blur(1.0, every=3)
    assert torch.equal(b(x, None, 0), x) and not torch.equal(b(x, None, 2), x)


def test_zeroing_small_norm_and_small_contribution():
    x = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    x[0, :, 0, 0] = torch.tensor([0.6, 0.5, 0.5])  # norm 0.1 from the centre
    x[0, :, 0, 1] = torch.tensor([0.9, 0.1, 0.5])  # norm ≈ 0.57
    x[0, :, 1, 0] = torch.tensor([0.8, 0.8, 0.8])  # norm ≈ 0.52
    x[0, :, 1, 1] = torch.tensor([0.55, 0.5, 0.5])  # norm 0.05
    out = ZeroSmallNorm(50, center=0.5)(x, None, 0)
    assert torch.equal(out[0, :, 0, 1], x[0, :, 0, 1]) and torch.equal(out[0, :, 1, 0], x[0, :, 1, 0])
    assert torch.all(out[0, :, 0, 0] == 0.5) and torch.all(out[0, :, 1, 1] == 0.5)
    # Contribution |Σ_c (x - c)·g|: a large pixel with zero gradient contributes nothing.
    g = torch.zeros_like(x)
    g[0, 0, 0, 0], g[0, 0, 1, 1] = 10.0, 10.0
    out = ZeroSmallContribution(50, center=0.5)(x, g, 0)
    assert torch.equal(out[0, :, 0, 0], x[0, :, 0, 0]) and torch.equal(out[0, :, 1, 1], x[0, :, 1, 1])
    assert torch.all(out[0, :, 0, 1] == 0.5) and torch.all(out[0, :, 1, 0] == 0.5)
    with pytest.raises(ValueError, match="percentile"):
        ZeroSmallNorm(100)


def test_transforms_are_identity_at_zero_and_jitter_is_a_roll():
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    for t in (Jitter(0), RandomScale(0.0), RandomRotate(0.0)):
        assert torch.allclose(t(x), x)
    j = Jitter(2)(x)
    assert any(torch.equal(j, torch.roll(x, (dy, dx), (2, 3))) for dy in range(-2, 3) for dx in range(-2, 3))


def _ramp(batch: int, n: int) -> torch.Tensor:
    """x[b, 0, i, j] = j: bilinear sampling of a linear image is exact, so a resampled pixel's value is the
    column it was read from."""
    return torch.arange(n, dtype=torch.float64).expand(batch, 1, n, n).clone()


@pytest.mark.parametrize("kind", ["scale", "rotate"])
def test_zoom_and_rotation_read_each_pixel_where_the_drawn_factor_and_angle_say(kind):
    """Output pixel (i, j) of an n×n image samples input column c + (j − c)/s (zoom s) or
    c + cos a·(j − c) − sin a·(i − c) (angle a), c = (n − 1)/2, with s and a drawn as documented."""
    b, n = 6, 9
    c = (n - 1) / 2
    i, j = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    torch.manual_seed(4)
    if kind == "scale":
        u = torch.empty(b, dtype=torch.float64).uniform_(math.log(1 / 1.5), math.log(1.5)).exp()  # the zoom s
        col = c + (j - c) / u[:, None, None]  # (B, n, n)
        t = RandomScale(0.5)
    else:
        u = torch.empty(b, dtype=torch.float64).uniform_(-1, 1) * math.radians(30)  # the angle a
        col = c + u.cos()[:, None, None] * (j - c) - u.sin()[:, None, None] * (i - c)
        t = RandomRotate(30)
    assert (u - (1 if kind == "scale" else 0)).abs().min() > 0.01  # a visible zoom / angle for every image
    torch.manual_seed(4)
    out = t(_ramp(b, n))[:, 0]  # (B, n, n)
    inside = (col >= 0) & (col <= n - 1)  # beyond the border the transform reflects; not modelled here
    assert inside.float().mean() > 0.6
    assert torch.allclose(out[inside], col[inside], atol=1e-9)


# ---------------------------------------------------------------- parameterisations
@pytest.mark.parametrize(
    "make",
    [
        lambda: FourierParam(2, 3, (8, 6), dtype=torch.float64),
        lambda: DenseParam(2, 3, (8, 6), dtype=torch.float64),
        lambda: OctaveParam(torch.rand(2, 3, 8, 6, dtype=torch.float64), (8, 6)),
        lambda: PixelParam(torch.rand(2, 3, 8, 6, dtype=torch.float64)),
    ],
)
def test_set_image_round_trips(make):
    p = make()
    target = 0.05 + 0.9 * torch.rand(2, 3, 8, 6, dtype=torch.float64)
    p.set_image(target)
    assert torch.allclose(p(), target, atol=1e-6)


# ---------------------------------------------------------------- the engine
@pytest.mark.parametrize("param", ["pixel", "fourier", "dense"])
def test_objective_rises(enc, param):
    if param == "pixel":
        p = PixelParam(0.5 + 0.05 * torch.randn(2, 3, 8, 8, dtype=torch.float64))
    elif param == "fourier":
        p = FourierParam(2, 3, (8, 8), dtype=torch.float64)
    else:
        p = DenseParam(2, 3, (8, 8), dtype=torch.float64)
    obj = ChannelMean("conv2", [0, 3])
    with torch.no_grad():
        before = obj(enc(p(), ["conv2"]))
    res = optimize(enc, obj, p, OptimSettings(steps=25, lr=0.05))
    assert torch.all(res.scores > before + 1e-3), (before, res.scores)
    assert res.history.shape == (25, 2)
    assert res.images.min() >= 0 and res.images.max() <= 1


def test_all_parts_combined_still_rise(enc):
    p = PixelParam(0.5 + 0.05 * torch.randn(2, 3, 8, 8, dtype=torch.float64))
    obj = ClassScore([1, 4], "fc") + 0.1 * LayerNorm("conv1")
    with torch.no_grad():
        before = obj(enc(p(), obj.layers))
    regs = [
        L2Decay(1e-3, enc.mean),
        TotalVariation(1e-2),
        Blur(0.5, every=5),
        ZeroSmallNorm(5, enc.mean),
        ZeroSmallContribution(5, enc.mean),
    ]
    res = optimize(
        enc,
        obj,
        p,
        OptimSettings(steps=30, lr=0.05),
        transforms=[Jitter(1), RandomScale(0.1), RandomRotate(5)],
        regularizers=regs,
    )
    assert torch.all(res.scores > before)


def test_batch_is_independent_optimisations(enc):
    """A batch of two equals two separate runs: the loss is a sum and Adam is per-element."""
    init = 0.5 + 0.1 * torch.randn(2, 3, 8, 8, dtype=torch.float64)
    obj = lambda c: ClassScore(c, "fc")  # noqa: E731
    both = optimize(
        enc, obj([0, 2]), PixelParam(init), OptimSettings(steps=8, lr=0.02), regularizers=[L2Decay(1e-2, 0.5)]
    )
    for b, c in enumerate([0, 2]):
        one = optimize(
            enc, obj(c), PixelParam(init[b : b + 1]), OptimSettings(steps=8, lr=0.02), regularizers=[L2Decay(1e-2, 0.5)]
        )
        assert torch.allclose(both.images[b], one.images[0], atol=1e-10)


def test_feature_matching_inversion_closes_the_gap(enc):
    """Mahendran & Vedaldi setting: SGD momentum 0.9, stepped lr, α-norm and TV^β priors."""
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    x0 = x.clone()
    with torch.no_grad():
        target = enc(x, ["conv2"])["conv2"]
    obj = FeatureMatch("conv2", target)
    p = PixelParam(torch.full_like(x, 0.5))
    with torch.no_grad():
        before = obj(enc(p(), ["conv2"]))
    res = optimize(
        enc,
        obj,
        p,
        OptimSettings(steps=40, lr=0.5, optimizer="sgd", momentum=0.9, lr_steps=[30]),
        regularizers=[AlphaNorm(1e-3, 6, 0.5, 0.5), TotalVariation(1e-3, 2)],
    )
    assert torch.all(res.scores > 0.5 * before), (before, res.scores)  # relative error at least halved
    assert torch.equal(x, x0)


def test_normalized_step_moves_each_image_by_lr_on_average(enc):
    """DeepDream's step: x += lr · g / mean|g|, so the mean absolute change of each image is exactly lr."""
    base = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    p = OctaveParam(base, (8, 8))
    optimize(enc, LayerNorm("conv2"), p, OptimSettings(steps=1, lr=1e-3, optimizer="normalized"))
    assert torch.allclose(p.delta.detach().abs().flatten(1).mean(1), torch.full((2,), 1e-3, dtype=torch.float64))


def linear_score(k: int = 3) -> Encoder:
    """flat → fc: S_c(x) = w_c·x + b_c, linear in the image."""
    torch.manual_seed(2)
    net = nn.Sequential(OrderedDict(flat=nn.Flatten(), fc=nn.Linear(3 * 4 * 4, k)))
    return Encoder(net, name="lin", image_size=(4, 4), mean=(0.0,) * 3, std=(1.0,) * 3).double()  # x is the net input


def test_class_score_ascent_reaches_the_known_optimum_of_a_linear_net():
    """max over x ∈ [0, 1]ⁿ of w_c·x + b_c is at x = 1[w_c > 0]: each pixel at 1 where its weight is positive
    and 0 where negative, score Σ max(w_c, 0) + b_c."""
    enc = linear_score()
    w, bias = enc.model.fc.weight.detach(), enc.model.fc.bias.detach()  # (K, 48), (K,)
    classes = [0, 2]
    res = optimize(
        enc,
        ClassScore(classes, "fc"),
        PixelParam(torch.full((2, 3, 4, 4), 0.5, dtype=torch.float64)),
        OptimSettings(steps=40, lr=0.05),
    )
    best = (w[classes] > 0).double()  # (2, 48)
    assert torch.equal(res.images.flatten(1), best)
    assert torch.allclose(res.scores, w[classes].clamp_min(0).sum(1) + bias[classes])


def test_scheduled_learning_rate_follows_the_formula():
    """lr_t = lr · γ^(number of lr_steps ≤ t); plain SGD on a linear score moves x by lr_t · w_c at step t."""
    s = OptimSettings(steps=7, lr=0.1, optimizer="sgd", momentum=0.0, lr_steps=[3, 5], lr_gamma=0.5)
    want = [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    assert [s.lr_at(t) for t in range(7)] == pytest.approx(want, rel=1e-15)
    enc = linear_score()
    w = enc.model.fc.weight.detach()[1]  # (48,)
    x0 = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    step = 0.2 / w.abs().max() / sum(want)  # keeps every pixel inside [0, 1]: no clamping
    s = OptimSettings(steps=7, lr=float(step) * 0.1, optimizer="sgd", momentum=0.0, lr_steps=[3, 5], lr_gamma=0.5)
    res = optimize(enc, ClassScore(1, "fc"), PixelParam(x0), s)
    assert torch.allclose(res.images.flatten() - 0.5, w * float(step) * sum(want), rtol=1e-10, atol=1e-14)


def test_engine_stops_early_and_leaves_init_untouched(enc):
    init = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    saved = init.clone()
    res = optimize(enc, ChannelMean("conv1", 0), PixelParam(init), OptimSettings(steps=500, lr=0.05, stop_at=-1e9))
    assert res.history.shape[0] == 1
    assert torch.equal(init, saved) and not init.requires_grad


def test_engine_rejects_bad_settings(enc):
    p = PixelParam(torch.rand(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        OptimSettings(optimizer="rmsprop")
    with pytest.raises(ValueError, match="steps must be a positive"):
        OptimSettings(steps=0)
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*conv1"):
        optimize(enc, ChannelMean("conv9", 0), p)


def test_one_relative_feature_distance_behind_the_metric_the_training_loss_and_feature_match():
    """‖a − b‖ / ‖b‖ per image (float64 hand formula); the loss and FeatureMatch use its square, and an
    all-zero target stays finite in each."""
    from upconv.core import metrics as M
    from upconv.training.module import feature_loss

    a, b = torch.randn(3, 4, 5, 5, dtype=torch.float64), torch.randn(3, 4, 5, 5, dtype=torch.float64)
    want = torch.stack([(a[i] - b[i]).norm() / b[i].norm() for i in range(3)])  # (B,)
    assert torch.allclose(M.feature_error(a, b), want)
    assert torch.allclose(feature_loss(a, b), want**2)
    assert torch.allclose(-FeatureMatch("l", b)({"l": a}), want**2)
    zero = torch.zeros_like(b)
    for value in (M.feature_error(a, zero), feature_loss(a, zero), FeatureMatch("l", zero)({"l": a})):
        assert torch.isfinite(value).all()

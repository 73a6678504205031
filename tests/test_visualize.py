"""Classic visualisations: hand-computable oracles on toy nets, side effects, errors, the CLI."""

import math
import os
from collections import OrderedDict

import pytest
import torch
from conftest import hook_count
from torch import nn

from upconv.nets.encoder import Encoder
from upconv.visualize import (
    FeatureIndex,
    Recipe,
    channel_images,
    class_images,
    deep_dream,
    fgsm,
    fooling_images,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    neuron_images,
    pgd,
    prototypes,
    saliency,
)
from upconv.visualize.gradcam import guided_relus
from upconv.visualize.similar import nearest

D = torch.float64


def toy_cnn() -> tuple[Encoder, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1×1 conv (2 channels) → ReLU → global mean → linear (3 classes); every gradient is hand-computable."""
    w = torch.tensor([1.0, -1.0], dtype=D)  # conv weights
    b = torch.tensor([0.0, 0.625], dtype=D)  # conv bias (exact in float32): channel 1 is relu(0.625 - x)
    v = torch.tensor([[2.0, 1.0], [-1.0, 3.0], [0.5, -2.0]], dtype=D)  # fc weights (class, channel)
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 2, 1),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(2, 3, bias=False),
        )
    )
    with torch.no_grad():
        (
            net.conv.weight.copy_(w.view(2, 1, 1, 1).float()),
            net.conv.bias.copy_(b.float()),
            net.fc.weight.copy_(v.float()),
        )
    enc = Encoder(net, name="toy", image_size=(4, 4), mean=(0.0,), std=(1.0,)).to(D)
    return enc, w, b, v


def linear_classifier(k: int = 3) -> Encoder:
    torch.manual_seed(3)
    net = nn.Sequential(OrderedDict(flat=nn.Flatten(), fc=nn.Linear(3 * 4 * 4, k)))
    with torch.no_grad():
        net.fc.weight.mul_(20)
    return Encoder(net, name="linear", image_size=(4, 4), mean=(0.0,) * 3, std=(1.0,) * 3).to(D)


# ---------------------------------------------------------------- gradient maps: numerical oracles
def test_grad_cam_matches_hand_computation():
    enc, w, b, v = toy_cnn()
    x = torch.rand(2, 1, 4, 4, dtype=D)
    classes = [0, 2]
    a = torch.relu(w.view(1, 2, 1, 1) * x + b.view(1, 2, 1, 1))  # (B, 2, 4, 4)
    alpha = v[classes] / 16  # ∂y_c/∂A_k,ij = v_ck / (H W): its spatial mean is the same
    want = torch.relu((alpha[:, :, None, None] * a).sum(1))  # (B, 4, 4)
    got = grad_cam(enc, x, "relu", classes, upsample=False, normalize=False)
    assert torch.allclose(got, want)
    norm = grad_cam(enc, x, "relu", classes)
    assert torch.allclose(norm, want / want.flatten(1).amax(1).view(-1, 1, 1))


def test_saliency_and_guided_backprop_match_hand_computation():
    enc, w, b, v = toy_cnn()
    x = torch.rand(2, 1, 4, 4, dtype=D)
    c = torch.tensor([1, 2])
    on = (w.view(1, 2, 1, 1) * x + b.view(1, 2, 1, 1)) > 0  # (B, 2, 4, 4) ReLU gates
    grad = (v[c][:, :, None, None] * w.view(1, 2, 1, 1) * on).sum(1) / 16  # ∂y_c/∂x (B, 4, 4)
    assert torch.allclose(saliency(enc, x, c), grad.abs())
    # Guided: the ReLU passes back only positive gradients, so negative v_ck are cut.
    guided = (v[c].clamp(min=0)[:, :, None, None] * w.view(1, 2, 1, 1) * on).sum(1) / 16
    assert torch.allclose(guided_backprop(enc, x, c)[:, 0], guided)
    assert not torch.allclose(guided, grad)  # the toy is built so the two differ
    cam = grad_cam(enc, x, "relu", c, normalize=False)  # 4×4 layer: upsampling is the identity here
    assert torch.allclose(guided_grad_cam(enc, x, "relu", c)[:, 0], guided * cam)


def test_predicted_class_is_the_default():
    enc, *_ = toy_cnn()
    x = torch.rand(3, 1, 4, 4, dtype=D)
    pred = enc.logits(x).argmax(1)
    assert torch.equal(saliency(enc, x), saliency(enc, x, pred))
    assert torch.equal(grad_cam(enc, x, "relu"), grad_cam(enc, x, "relu", pred))


def test_guided_relus_removes_hooks_even_on_error():
    enc, *_ = toy_cnn()
    with pytest.raises(RuntimeError, match="boom"), guided_relus(enc.model):
        assert hook_count(enc) > 0
        raise RuntimeError("boom")
    assert hook_count(enc) == 0


# ---------------------------------------------------------------- adversarial
def test_fgsm_flips_a_linear_classifier_exactly_as_the_formula_says():
    """Two classes, x at mid-grey so clipping is inactive: FGSM lowers the margin (w_y - w_o)·x by exactly
    ε‖w_y - w_o‖₁, so it flips the prediction iff ε > margin / ‖w_y - w_o‖₁."""
    enc = linear_classifier(k=2)
    x = torch.full((1, 3, 4, 4), 0.5, dtype=D)
    wt, bias = enc.model.fc.weight, enc.model.fc.bias
    y = int(enc.logits(x).argmax())
    dw = (wt[y] - wt[1 - y]).detach()
    margin = float(dw @ x.flatten() + bias[y] - bias[1 - y])
    eps_flip = margin / float(dw.abs().sum())
    assert eps_flip < 0.5  # the ball stays inside [0, 1]
    below, above = fgsm(enc, x, y, 0.99 * eps_flip), fgsm(enc, x, y, 1.01 * eps_flip)
    assert not below.success.item() and above.success.item()
    assert torch.allclose(above.images, x - 1.01 * eps_flip * dw.sign().view(1, 3, 4, 4))  # x + ε sign(∇J)
    assert torch.allclose(above.linf, torch.tensor([1.01 * eps_flip], dtype=D))
    assert torch.allclose(above.l2, torch.tensor([1.01 * eps_flip * math.sqrt(48)], dtype=D))


def test_pgd_stays_in_the_ball_and_beats_fgsm():
    enc = linear_classifier(k=4)
    x = torch.rand(6, 3, 4, 4, dtype=D)
    y = enc.logits(x).argmax(1)
    eps = 0.02
    f, p = fgsm(enc, x, y, eps), pgd(enc, x, y, eps, steps=20)
    assert torch.all(p.linf <= eps + 1e-12) and p.images.min() >= 0 and p.images.max() <= 1
    assert p.success_rate >= f.success_rate
    t = pgd(enc, x, 3, 0.5, steps=30, targeted=True)
    assert torch.equal(t.eligible, t.clean_pred != 3) and t.success[t.eligible].all() and torch.all(t.pred == 3)


def two_pixel_classifier() -> Encoder:
    """Images of 1×1×2 pixels (a, b); logits (a − b, b − a): class 0 iff a > b, so FGSM with ε moves the
    margin a − b by exactly 2ε."""
    net = nn.Sequential(OrderedDict(flat=nn.Flatten(), fc=nn.Linear(2, 2, bias=False)))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    return Encoder(net, name="two-pixel", image_size=(1, 2), mean=(0.0,), std=(1.0,)).to(D)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_success_rate_counts_only_images_the_attack_had_to_change(attack):
    enc = two_pixel_classifier()
    # margins a − b: 0.8 (correct, robust to ε 0.1), 0.04 (correct, flips), −0.5 and −0.1 (already wrong)
    x = torch.tensor([[0.9, 0.1], [0.52, 0.48], [0.2, 0.7], [0.45, 0.55]], dtype=D).view(4, 1, 1, 2)
    run = (
        (lambda t, **kw: fgsm(enc, x, t, 0.1, **kw))
        if attack == "fgsm"
        else (lambda t, **kw: pgd(enc, x, t, 0.1, steps=5, random_start=False, **kw))
    )
    r = run(0)  # true class 0 for every image
    assert r.clean_pred.tolist() == [0, 0, 1, 1] and r.pred.tolist() == [0, 1, 1, 1]
    assert r.clean_accuracy == 0.5
    assert r.eligible.tolist() == [True, True, False, False] and r.success.tolist() == [False, True, False, False]
    assert r.success_rate == 0.5  # 1 of the 2 initially correct; counting all images would say 3 of 4
    t = run(1, targeted=True)  # target class 1: images 2 and 3 are there already and do not count
    assert t.clean_accuracy is None
    assert t.eligible.tolist() == [True, True, False, False] and t.success.tolist() == [False, True, False, False]
    assert t.success_rate == 0.5
    none_correct = run(torch.tensor([1, 1, 0, 0]))  # every label wrong: nothing to attack
    assert none_correct.clean_accuracy == 0.0 and math.isnan(none_correct.success_rate)


def test_fooling_images_reach_the_confidence():
    enc = linear_classifier(k=3)
    r = fooling_images(enc, [0, 2], confidence=0.99, max_steps=300)
    assert r.success.all() and torch.all(r.confidence >= 0.99)
    assert torch.allclose(r.confidence, enc.logits(r.images).softmax(1)[[0, 1], [0, 2]])


# ---------------------------------------------------------------- similarity search
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_similarity_finds_the_exact_duplicate(metric):
    enc = linear_classifier(k=3)
    enc2 = Encoder(
        nn.Sequential(OrderedDict(flat=nn.Flatten())), name="pixels", image_size=(4, 4), mean=(0.0,) * 3, std=(1.0,) * 3
    ).to(D)
    data = torch.rand(40, 3, 4, 4, dtype=D)
    for e, layer in ((enc, "fc"), (enc2, "flat")):
        idx = FeatureIndex(e, layer, metric).add(data, batch_size=16)
        r = idx.search(data[[7, 23]], k=4)
        assert r.indices[:, 0].tolist() == [7, 23]
        assert torch.allclose(
            r.scores[:, 0].double(), torch.full((2,), 1.0 if metric == "cosine" else 0.0, dtype=D), atol=1e-5
        )
        assert torch.all(r.nn_ratio < 1e-2)
    # Brute-force oracle on raw pixels: ranking and the typical nearest-neighbour distance.
    q = torch.rand(3, 3, 4, 4, dtype=D)
    fq, fd = q.flatten(1), data.flatten(1)
    if metric == "cosine":
        dist = 1 - nn.functional.normalize(fq, dim=1) @ nn.functional.normalize(fd, dim=1).T
        self_d = 1 - nn.functional.normalize(fd, dim=1) @ nn.functional.normalize(fd, dim=1).T
    else:
        dist, self_d = torch.cdist(fq, fd), torch.cdist(fd, fd)
    typical = (self_d + torch.diag(torch.full((40,), float("inf"), dtype=D))).amin(1).median()
    r = FeatureIndex(enc2, "flat", metric).add(data).search(q, k=5)
    assert torch.equal(r.indices, dist.topk(5, largest=False).indices)
    assert torch.allclose(r.nn_ratio.double(), dist.amin(1) / typical, rtol=1e-4)


def _pixel_index_data():
    """An index of 61 float32 images (more than the 25 rows where float32 cdist turns to the expanded form):
    60 random images plus a near-duplicate of image 5; queries: exact copies of 7 and 23, a near-duplicate
    of 40, a random image. Features are (x − 0.5) / 0.1, so ‖f‖² ≈ 2.5e4 and float32 cancellation shows."""
    g = torch.Generator().manual_seed(11)
    enc = Encoder(
        nn.Sequential(OrderedDict(flat=nn.Flatten())),
        name="pixels",
        image_size=(16, 16),
        mean=(0.5,) * 3,
        std=(0.1,) * 3,
    )
    data = torch.rand(60, 3, 16, 16, generator=g)
    index = torch.cat([data, _nudge(data[5], 1e-3)[None]])  # (61, 3, 16, 16)
    queries = torch.stack([data[7], data[23], _nudge(data[40], -2e-3), torch.rand(3, 16, 16, generator=g)])
    return enc, index, queries


def _nudge(image: torch.Tensor, step: float) -> torch.Tensor:
    """A near-duplicate: the first 10 diagonal pixels of channel 0 moved by ``step``."""
    out, i = image.clone(), torch.arange(10)
    out[0, i, i] += step
    return out


def test_euclidean_index_distances_are_exact_for_copies_and_near_duplicates():
    enc, index, queries = _pixel_index_data()
    r = FeatureIndex(enc, "flat", "euclidean").add(index, batch_size=16).search(queries, k=3)
    # float64 oracle on the same features
    feat = lambda x: ((x.double() - 0.5) / 0.1).flatten(1)  # noqa: E731
    dist = torch.cdist(feat(queries), feat(index), compute_mode="donot_use_mm_for_euclid_dist")  # (4, 61)
    self_d = torch.cdist(feat(index), feat(index), compute_mode="donot_use_mm_for_euclid_dist")
    typical = (self_d + torch.diag(torch.full((61,), float("inf"), dtype=D))).amin(1).median()
    assert typical > 1  # random images are far apart; the near-duplicate pair does not set the median
    assert torch.equal(r.indices, dist.topk(3, largest=False).indices)
    assert r.indices[:, 0].tolist()[:3] == [7, 23, 40]
    assert torch.equal(r.scores[:2, 0], torch.zeros(2)) and torch.equal(r.nn_ratio[:2], torch.zeros(2))
    assert torch.allclose(r.scores.double(), dist.topk(3, largest=False).values, rtol=1e-4, atol=0)
    assert torch.allclose(r.nn_ratio.double(), dist.amin(1) / typical, rtol=1e-4, atol=0)
    # The index's own near-duplicate pair (5, 60), found from either side.
    idx = FeatureIndex(enc, "flat", "euclidean").add(index)
    d, i = nearest(idx.embed(index[[5, 60]]), idx.features, 2)
    assert i.tolist() == [[5, 60], [60, 5]] and torch.equal(d[:, 0], torch.zeros(2, dtype=D))
    assert torch.allclose(d[:, 1], self_d[5, 60].expand(2), rtol=1e-4, atol=0)


def test_cosine_index_gives_copies_similarity_one_and_near_duplicates_their_small_distance():
    enc, index, queries = _pixel_index_data()
    r = FeatureIndex(enc, "flat", "cosine").add(index).search(queries, k=2)
    unit = lambda x: nn.functional.normalize(((x.double() - 0.5) / 0.1).flatten(1), dim=1)  # noqa: E731
    cos_d = 1 - unit(queries) @ unit(index).T  # (4, 61), float64
    assert r.indices[:, 0].tolist()[:3] == [7, 23, 40]
    assert torch.equal(r.scores[:2, 0], torch.ones(2)) and torch.equal(r.nn_ratio[:2], torch.zeros(2))
    near = cos_d[2, 40]  # ≈ 1e-8: below float32 resolution of 1 − q·f
    assert near < 1e-6
    self_d = 1 - unit(index) @ unit(index).T + torch.diag(torch.full((61,), float("inf"), dtype=D))
    assert torch.allclose(r.nn_ratio[2].double(), near / self_d.amin(1).median(), rtol=1e-2, atol=0)


# ---------------------------------------------------------------- activation maximisation and DeepDream
def test_activation_methods_raise_their_objective():
    enc, *_ = toy_cnn()
    for make in (
        lambda r: class_images(enc, [0, 2], starts=2, recipe=r),
        lambda r: channel_images(enc, "relu", [0, 1], recipe=r),
        lambda r: neuron_images(enc, "conv", [0, 1], y=1, x=2, recipe=r),
        lambda r: prototypes(enc, recipe=r),
    ):
        start = make(Recipe(param="pixel", steps=1, jitter=0, scale=0, rotate=0, init_sd=0.2, lr=0.02))
        end = make(Recipe(param="pixel", steps=20, jitter=0, scale=0, rotate=0, init_sd=0.2, lr=0.02))
        assert torch.all(end.scores > start.scores + 1e-3), (start.labels, start.scores, end.scores)
    assert class_images(enc, [0, 2], starts=2, recipe=Recipe(steps=1)).labels == ["class 0"] * 2 + ["class 2"] * 2


def test_deep_dream_step_matches_hand_computation_and_keeps_the_input():
    """One octave, one step: x' = x + lr · g / mean|g| with g = ∂E/∂x, E = mean_k,ij relu(w_k x_ij + b_k)²,
    so g_ij = Σ_k 2 a_k,ij w_k / 32 (2 channels × 16 pixels)."""
    enc, w, b, _ = toy_cnn()
    x = 0.2 + 0.6 * torch.rand(2, 1, 4, 4, dtype=D)
    x0 = x.clone()
    a = torch.relu(w.view(1, 2, 1, 1) * x + b.view(1, 2, 1, 1))  # (B, 2, 4, 4)
    g = (2 * a * w.view(1, 2, 1, 1)).sum(1, keepdim=True) / 32  # (B, 1, 4, 4)
    want = x + 0.02 * g / g.abs().flatten(1).mean(1).view(-1, 1, 1, 1)
    assert want.min() > 0 and want.max() < 1  # no clipping in play
    out = deep_dream(enc, x, "relu", octaves=1, steps=1, lr=0.02, jitter=0)
    assert torch.allclose(out, want, atol=1e-12)
    assert torch.equal(x, x0)
    energy = lambda z: enc(z, ["relu"])["relu"].pow(2).flatten(1).mean(1)  # noqa: E731
    coarse = deep_dream(enc, x, "relu", octaves=2, octave_scale=2.0, steps=5, lr=0.02, jitter=1)
    assert torch.all(energy(coarse) > energy(x))


# ---------------------------------------------------------------- side effects and errors
def test_no_hook_left_and_input_untouched_after_every_method():
    enc, *_ = toy_cnn()
    x = torch.rand(2, 1, 4, 4, dtype=D)
    x0 = x.clone()
    quick = Recipe(steps=2)
    calls = [
        lambda: grad_cam(enc, x, "relu"),
        lambda: saliency(enc, x),
        lambda: guided_backprop(enc, x),
        lambda: guided_grad_cam(enc, x, "relu"),
        lambda: fgsm(enc, x, 0, 0.1),
        lambda: pgd(enc, x, 0, 0.1, 2),
        lambda: deep_dream(enc, x, "relu", steps=2),
        lambda: FeatureIndex(enc, "relu").add(x).search(x, 1),
        lambda: class_images(enc, [1], recipe=quick),
        lambda: prototypes(enc, recipe=quick),
        lambda: channel_images(enc, "relu", [1], recipe=quick),
        lambda: neuron_images(enc, "relu", [0], recipe=quick),
        lambda: fooling_images(enc, [0], max_steps=2),
    ]
    for call in calls:
        call()
        assert hook_count(enc) == 0
        assert torch.equal(x, x0) and not x.requires_grad and x.grad is None
        assert all(not p.requires_grad and p.grad is None for p in enc.parameters())


def test_bad_inputs_give_actionable_errors():
    enc, *_ = toy_cnn()
    x = torch.rand(1, 1, 4, 4, dtype=D)
    with pytest.raises(ValueError, match=r"class index \[3\] out of range.*0..2"):
        class_images(enc, [3])
    with pytest.raises(ValueError, match=r"channel index \[5\] out of range for layer relu.*0..1"):
        channel_images(enc, "relu", [5])
    with pytest.raises(ValueError, match="unknown layer 'conv9' for toy; choose one of: conv, relu"):
        grad_cam(enc, x, "conv9")
    with pytest.raises(ValueError, match="Grad-CAM needs a spatial.*fc is"):
        grad_cam(enc, x, "fc")
    with pytest.raises(ValueError, match=r"class index \[7\] out of range for toy: valid class indices are 0..2"):
        saliency(enc, x, 7)
    with pytest.raises(ValueError, match=r"epsilon must be in \(0, 1\]"):
        fgsm(enc, x, 0, 8.0)
    with pytest.raises(ValueError, match=r"outside the 4×4 map"):
        neuron_images(enc, "relu", [0], y=9)
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        FeatureIndex(enc, "relu", "manhattan")
    with pytest.raises(ValueError, match="k must be between 1 and the index size 1"):
        FeatureIndex(enc, "relu").add(x).search(x, 2)
    with pytest.raises(ValueError, match="unknown param 'wavelet'"):
        class_images(enc, [0], recipe=Recipe(param="wavelet"))
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 1, 4, 4\)"):
        saliency(enc, torch.rand(1, 3, 4, 4, dtype=D))


def test_every_index_is_checked_by_one_rule_with_one_message(tmp_path, capsys):
    """Objectives, activation maximisation, gradient maps, attacks and the deconv command all say the same."""
    from upconv.cli.main import main
    from upconv.optim.engine import ClassScore

    enc, *_ = toy_cnn()
    x = torch.rand(2, 1, 4, 4, dtype=D)
    out_of_range = r"class index \[3\] out of range for toy( \(fc\))?: valid class indices are 0..2"
    for call in (
        lambda: class_images(enc, [0, 3]),
        lambda: prototypes(enc, [3]),
        lambda: saliency(enc, x, 3),
        lambda: grad_cam(enc, x, "relu", [3, 0]),
        lambda: fgsm(enc, x, [0, 3], 0.1),
        lambda: fooling_images(enc, [3]),
    ):
        with pytest.raises(ValueError, match=out_of_range):
            call()
    with pytest.raises(ValueError, match=r"class index \[3\] out of range for layer fc: valid class indices are 0..2"):
        ClassScore(3, "fc")(enc(x, ["fc"]))
    for call in (lambda: saliency(enc, x, [0, 1, 2]), lambda: pgd(enc, x, [0, 1, 2], 0.1)):
        with pytest.raises(
            ValueError,
            match="got 3 class indices for a batch of 2 images; give one class index for all images or one per image",
        ):
            call()
    with pytest.raises(ValueError, match=r"got 0 channel indices for layer relu; give at least one"):
        channel_images(enc, "relu", [])
    with pytest.raises(SystemExit):
        main(
            [
                "deconv",
                "alexnet_cifar",
                "conv1",
                str(tmp_path),
                "--channels",
                "[999]",
                "--encoder.kwargs",
                '{"width": 0.25}',
                "--device",
                "cpu",
            ]
        )
    assert "channel index [999] out of range for layer conv1: valid channel indices are 0.." in capsys.readouterr().err


# ---------------------------------------------------------------- non-finite inputs and progress
def test_every_image_entry_point_refuses_non_finite_pixels():
    enc, *_ = toy_cnn()
    x = torch.rand(3, 1, 4, 4, dtype=D)
    x[1, 0, 2, 2] = float("nan")
    x[2, 0, 0, 1] = float("inf")
    index = FeatureIndex(enc, "relu").add(torch.rand(4, 1, 4, 4, dtype=D))
    calls = {
        "grad_cam": lambda: grad_cam(enc, x, "relu"),
        "saliency": lambda: saliency(enc, x),
        "guided_grad_cam": lambda: guided_grad_cam(enc, x, "relu", 0),
        "deep_dream": lambda: deep_dream(enc, x, "relu", steps=1),
        "fgsm": lambda: fgsm(enc, x, 0, 0.1),
        "pgd": lambda: pgd(enc, x, 0, 0.1, 2),
        "index.add": lambda: FeatureIndex(enc, "relu").add(x, batch_size=1),
        "index.search": lambda: index.search(x, 1),
    }
    for call in calls.values():
        with pytest.raises(
            ValueError,
            match=r"2 of 3 input images contain NaN or infinite pixels "
            r"\(batch positions 1, 2\)",
        ):
            call()
    assert len(index.features) == 4  # a refused query or add leaves the index as it was


def test_long_loops_report_progress_on_stderr_only(capsys, monkeypatch):
    monkeypatch.setenv("UPCONV_PROGRESS", "1")
    enc, *_ = toy_cnn()
    x = torch.rand(2, 1, 4, 4, dtype=D)
    class_images(enc, [0, 1], recipe=Recipe(param="pixel", steps=7))  # the optimisation engine's step loop
    pgd(enc, x, 0, 0.1, steps=3)
    FeatureIndex(enc, "relu").add(torch.rand(5, 1, 4, 4, dtype=D), batch_size=2)
    captured = capsys.readouterr()
    assert captured.out == ""
    for bar in ("optimising", "/7 [", "PGD", "/3 [", "indexing", "/3 ["):
        assert bar in captured.err, bar
    monkeypatch.setenv("UPCONV_PROGRESS", "0")
    pgd(enc, x, 0, 0.1, steps=3)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- CLI: one vocabulary for encoders
ENCODER_ARGS = ("encoder.name", "encoder.weights", "encoder.kwargs", "encoder.pretrained", "encoder.download", "device")
PARTIAL = {
    c: ENCODER_ARGS for c in ("evaluate", "privacy", "privacy-frontier", "privacy-budget")
}  # one EncoderSpec everywhere
PARTIAL["benchmark"] = ("device",)  # many encoders: a list whose entries each hold one EncoderSpec (``encoder:``)


def _subcommands(parser, path=()):
    """(path, parser) for every leaf subcommand of a jsonargparse parser."""
    action = parser._subcommands_action
    if action is None:
        yield path, parser
        return
    for name, sub in action.choices.items():
        yield from _subcommands(sub, path + (name,))


def test_every_subcommand_speaks_the_same_encoder_vocabulary_with_help():
    from jsonargparse import CLI, capture_parser

    from upconv.cli.main import COMMANDS

    parser = capture_parser(lambda: CLI(COMMANDS, args=[], as_positional=True))
    leaves = dict(_subcommands(parser))
    want = {("layers",), ("deconv",), *[("visualize", v) for v in COMMANDS["visualize"]], *[(k,) for k in PARTIAL]}
    assert want <= set(leaves)
    for path, sub in leaves.items():
        actions = {a.dest: a for a in sub._actions if a.dest not in ("help", "config", "print_config")}
        names = PARTIAL.get(path[0], ENCODER_ARGS)
        assert set(names) <= set(actions), (path, sorted(set(names) - set(actions)))
        assert actions["device"].default == "auto", path
        assert not {"weights", "encoder_weights", "pretrained"} & set(actions), path  # the old spellings are gone
        for dest, action in actions.items():
            assert action.help and action.help.strip() and action.help != "==SUPPRESS==", (path, dest)


# ---------------------------------------------------------------- CLI end to end
@pytest.mark.parametrize("bars", ["0", "1"])
def test_corrupt_images_are_one_line_naming_the_file(tmp_path, capsys, monkeypatch, bars, image_folder):
    from upconv.cli.main import main

    monkeypatch.setenv("UPCONV_PROGRESS", bars)

    data = image_folder(tmp_path / "data", per_class=3, size=(40, 36), seed=2)
    good = (tmp_path / "data" / "a" / "0.png").read_bytes()
    bad = tmp_path / "data" / "b" / "1.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # a JPEG header and nothing decodable
    (tmp_path / "q.png").write_bytes(good[: len(good) // 2])  # a truncated PNG
    small = ["--encoder.kwargs", '{"width": 0.25}', "--out", str(tmp_path / "out")]
    query = tmp_path / "q.png"
    for argv, culprit in (
        (["visualize", "saliency", "alexnet_cifar", f"[{data}]", *small], bad),
        (["visualize", "saliency", "alexnet_cifar", f"[{query}]", *small], query),
        (["deconv", "alexnet_cifar", "conv1", data, "--channels", "[0]", "--top", "2", *small], bad),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        if bars == "1":  # the bar that was drawing is erased; the error is the last line on the terminal
            assert "\r" in err
            err = err.rsplit("\r", 1)[1]
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"upconv: error: cannot decode image {culprit} ("), err


def test_adversarial_command_prints_clean_accuracy_and_success_over_correct_images(tmp_path, capsys, image_folder):
    import re

    from upconv.cli.main import main
    from upconv.data.folders import load_images
    from upconv.nets.zoo import build_encoder

    data = image_folder(tmp_path / "data", per_class=4, size=(40, 36), seed=2)
    main(
        [
            "visualize",
            "adversarial",
            "alexnet_cifar",
            f"[{data}]",
            "--method",
            "fgsm",
            "--epsilon",
            "0.05",
            "--encoder.kwargs",
            '{"width": 0.25}',
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    line = capsys.readouterr().out.splitlines()[0]
    m = re.match(
        r"fgsm ε=0\.0500: clean accuracy \S+ \((\d)/8\)  success \S+ "
        r"\((\d) of the (\d) initially correct\)",
        line,
    )
    assert m, line
    enc = build_encoder("alexnet_cifar", kwargs={"width": 0.25})
    x, y, _ = load_images([data], enc.image_size)
    correct = enc.logits(x).argmax(1) == y
    assert int(m.group(1)) == int(m.group(3)) == int(correct.sum())
    r = fgsm(enc, x, y, 0.05)
    assert int(m.group(2)) == int((correct & (r.pred != y)).sum())
    common = [
        "--method",
        "fgsm",
        "--encoder.kwargs",
        '{"width": 0.25}',
        "--out",
        str(tmp_path / "out"),
        "--overwrite",
        "true",
    ]
    main(["visualize", "adversarial", "alexnet_cifar", f"[{data}]", "--targeted", "true", "--labels", "[3]", *common])
    line = capsys.readouterr().out.splitlines()[0]
    away = int((enc.logits(x).argmax(1) != 3).sum())  # images not already of class 3
    assert f"clean accuracy {correct.float().mean():.1%} ({int(correct.sum())}/8)" in line
    assert re.search(rf"success \S+ \(\d of the {away} not already of the target class\)", line), line
    main(["visualize", "adversarial", "alexnet_cifar", f"[{data}/a/0.png]", *common])  # a file: no true label
    assert "clean accuracy n/a (labels are the clean predictions)  success" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["visualize", "adversarial", "alexnet_cifar", f"[{data}]", "--targeted", "true"])
    assert "a targeted attack needs --labels" in capsys.readouterr().err


def test_gradcam_titles_name_the_folders_classes_else_their_index(tmp_path, image_folder, monkeypatch):
    import matplotlib.figure

    from upconv.cli.main import main

    titles, real = [], matplotlib.figure.Figure.savefig

    def recording(fig, path, **kw):  # the titles of the saved figure, read off the figure itself
        titles.append([ax.get_title() for ax in fig.axes if ax.get_title()])
        return real(fig, path, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    data = image_folder(tmp_path / "data", per_class=2, size=(40, 36), classes=("cat", "dog"), seed=3)
    common = ["alexnet_cifar", f"[{data}]", "conv5", "--encoder.weights", "null", "--guided", "false"]
    two = ["--encoder.kwargs", '{"width": 0.25, "num_classes": 2}']  # one output per folder
    main(["visualize", "gradcam", *common, *two, "--classes", "[1]", "--out", str(tmp_path / "given")])
    main(["visualize", "gradcam", *common, *two, "--out", str(tmp_path / "predicted")])
    main(
        [
            "visualize",
            "gradcam",
            *common,
            "--encoder.kwargs",
            '{"width": 0.25}',
            "--classes",
            "[1]",
            "--out",
            str(tmp_path / "ten"),
        ]
    )  # 10 outputs, 2 folders: names would be a guess
    files = ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    assert titles[0] == [f"{f} → dog" for f in files] * 2  # the images, then their Grad-CAM overlays
    assert {t.split(" → ")[1] for t in titles[1]} <= {"cat", "dog"} and len(titles[1]) == 8
    assert titles[2] == [f"{f} → 1" for f in files] * 2


@pytest.mark.slow
def test_cli_writes_pngs_from_an_image_folder(tmp_path, capsys, image_folder):
    from upconv.cli.main import main

    data = image_folder(tmp_path / "data", per_class=3, size=(40, 36), seed=2)
    common = ["--encoder.weights", "null", "--encoder.kwargs", '{"width": 0.25}']
    main(["visualize", "gradcam", "alexnet_cifar", f"[{data}]", "conv5", "--out", str(tmp_path / "gradcam"), *common])
    main(
        [
            "visualize",
            "class",
            "alexnet_cifar",
            "[1,2]",
            "--recipe.steps",
            "2",
            "--out",
            str(tmp_path / "class"),
            *common,
        ]
    )
    main(
        [
            "visualize",
            "similar",
            "alexnet_cifar",
            data,
            f"[{data}/a/0.png]",
            "fc7",
            "--k",
            "2",
            "--out",
            str(tmp_path / "similar"),
            *common,
        ]
    )
    main(
        [
            "visualize",
            "adversarial",
            "alexnet_cifar",
            f"[{data}]",
            "--method",
            "fgsm",
            "--out",
            str(tmp_path / "fgsm"),
            *common,
        ]
    )
    printed = capsys.readouterr().out
    assert "0.png 1.000" in printed.replace("a/0.png", "0.png")  # the query is its own top-1, score 1
    assert "fgsm ε=0.0314: clean accuracy" in printed
    for name in ("gradcam", "class", "similar", "fgsm"):
        assert os.listdir(tmp_path / name) == [f"{name}.png"]
        assert (tmp_path / name / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit) as e:
        main(["visualize", "channel", "alexnet_cifar", "conv3", "[999]", "--out", str(tmp_path / "channel"), *common])
    assert e.value.code == 2
    assert "channel index [999] out of range for layer conv3" in capsys.readouterr().err

"""Mahendran & Vedaldi optimisation inversion on the shared engine: the objective falls, images are
independent within a batch, depth-dependent defaults, registry entry, bad input."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from upconv.methods.mahendran_vedaldi import (
    MVInversionMethod,
    MVSettings,
    default_tv_weight,
    image_scale,
    invert,
    lr_steps,
    noise_init,
    objective,
)
from upconv.methods.registry import build_method, method_names
from upconv.nets.encoder import Encoder
from upconv.nets.zoo import build_encoder


def small_cnn() -> Encoder:
    torch.manual_seed(1)
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(8, 8, 3, padding=1),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            conv3=nn.Conv2d(8, 8, 3, padding=1),
            flat=nn.Flatten(),
            fc=nn.Linear(8 * 2 * 2, 4),
        )
    )
    return Encoder(net, name="small", image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3).double()


@pytest.fixture
def enc():
    return small_cnn()


@pytest.mark.parametrize("layer", ["conv1", "relu2", "fc"])
def test_full_objective_falls(enc, layer):
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        target = enc(x, [layer])[layer]
    init = noise_init(enc, 3)
    res = invert(enc, layer, target, MVSettings(steps=100), init=init)
    with torch.no_grad():
        before = objective(enc, layer, target, init)
        after = objective(enc, layer, target, res.images)
    assert (after < 0.7 * before).all()
    assert res.images.min() >= 0 and res.images.max() <= 1


def test_without_tv_a_conv_layer_is_inverted_almost_exactly(enc):
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        target = enc(x, ["conv1"])["conv1"]
    res = invert(enc, "conv1", target, MVSettings(steps=300, tv_weight=0.0))
    loss = -res.history  # (steps, B): the normalised feature loss per image
    assert (loss[-1] < 0.02 * loss[0]).all()
    assert (res.images - x).pow(2).mean() < 0.1 * (noise_init(enc, 3) - x).pow(2).mean()


def test_batch_of_images_is_independent_optimisations(enc):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        target = enc(x, ["relu2"])["relu2"]
    init = noise_init(enc, 2, seed=3)
    both = invert(enc, "relu2", target, MVSettings(steps=20), init=init).images
    for b in range(2):
        one = invert(enc, "relu2", target[b : b + 1], MVSettings(steps=20), init=init[b : b + 1]).images
        assert torch.allclose(one[0], both[b], atol=1e-10)


def test_adam_option_also_lowers_the_loss(enc):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        target = enc(x, ["relu2"])["relu2"]
    init = noise_init(enc, 2)
    res = invert(enc, "relu2", target, MVSettings(steps=60, optimizer="adam"), init=init)
    with torch.no_grad():
        assert (objective(enc, "relu2", target, res.images) < 0.7 * objective(enc, "relu2", target, init)).all()


def test_tv_weight_grows_with_depth_as_in_their_code():
    he = build_encoder("he2019_cifar")
    got = {
        L.lower(): default_tv_weight(he, L)
        for L in ("conv11", "ReLU12", "pool1", "conv21", "relu22", "pool2", "conv31", "relu32", "fc1", "fc2")
    }
    assert got == {
        "conv11": 1,
        "relu12": 1,
        "pool1": 1,
        "conv21": 10,
        "relu22": 10,
        "pool2": 10,
        "conv31": 100,
        "relu32": 100,
        "fc1": 100,
        "fc2": 100,
    }


def test_stepped_schedule_and_image_scale(enc):
    assert lr_steps(2100) == [800, 1300, 1800, 2000]  # their 800 / 500 / 500 / 200 / 100 iterations
    assert lr_steps(21) == [8, 13, 18, 20]
    assert image_scale(enc) == pytest.approx((3 * 0.25**2) ** 0.5)


def linear_encoder() -> Encoder:
    """A 1×1 convolution with a full-rank 4×3 weight: Φ(x) = Wx + b pixel by pixel, so x is the one image
    with those features and an inversion without the TV prior must find it."""
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 1), flat=nn.Flatten()))
    w = torch.tensor([[1.0, 0.2, -0.1], [0.1, 1.0, 0.3], [-0.2, 0.1, 1.0], [0.5, 0.5, 0.5]])
    with torch.no_grad():
        net.conv.weight.copy_(w.view(4, 3, 1, 1))
    return Encoder(net, name="linear", image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3).double()


def test_registered_method_recovers_the_image_a_linear_encoder_saw():
    assert "mahendran_vedaldi" in method_names()
    enc = linear_encoder()
    x = 0.1 + 0.8 * torch.rand(2, 3, 8, 8, dtype=torch.float64)
    m = build_method("mahendran_vedaldi", enc, steps=300, tv_weight=0.0, seed=1)
    assert isinstance(m, MVInversionMethod)
    out = m(x, "CONV")
    assert not out.requires_grad
    assert (noise_init(enc, 2, seed=1) - x).abs().max() > 0.5  # the start is far from x
    assert (out - x).abs().max() < 0.01
    with torch.no_grad():  # the method is invert with its settings, nothing more
        target = enc(x, ["conv"])["conv"]
    assert torch.equal(out, invert(enc, "conv", target, MVSettings(steps=300, tv_weight=0.0, seed=1)).images)


def test_bad_input_is_rejected_clearly(enc):
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        invert(enc, "conv9", torch.zeros(1, 8, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"must have shape \(B, 8, 8, 8\)"):
        invert(enc, "conv1", torch.zeros(1, 8, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        MVSettings(optimizer="lbfgs")
    with pytest.raises(ValueError, match="must be ≥ 0"):
        MVSettings(tv_weight=-1)

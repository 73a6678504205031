"""DeconvNet / guided backpropagation: float64 oracles, a second (autograd) formulation, the overlap rule,
side effects, receptive fields, the evaluation adapter, figures and the CLI."""

from __future__ import annotations

import copy
import os
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from conftest import hook_count, write_image_folder
from torch import nn

from upconv import Encoder, build_encoder
from upconv.methods.base import Batch
from upconv.methods.deconvnet import DeconvNet, DeconvNetMethod, to_unit_range
from upconv.visualize.deconv import channel_figure, image_folder, top_activating

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def small_net() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 4, 3, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(4, 5, 3, padding=1),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flat=nn.Flatten(),
            fc1=nn.Linear(5 * 2 * 2, 6),
            relu3=nn.ReLU(),
            fc2=nn.Linear(6, 3),
        )
    )


def small_encoder(net: nn.Module | None = None, size: int = 8) -> Encoder:
    return Encoder(net or small_net(), name="small", image_size=(size, size), mean=MEAN, std=STD).double()


# ---------------------------------------------------------------------- float64 oracle
def oracle(enc: Encoder, images: torch.Tensor, layer: str, select, guided: bool) -> torch.Tensor:
    """The method written out: forward with saved switches, then MaxUnpool2d / ReLU / conv_transpose2d."""
    m = enc.model
    x = enc.normalize(images)
    a1 = F.conv2d(x, m.conv1.weight, m.conv1.bias, padding=1)
    p1, i1 = F.max_pool2d(F.relu(a1), 2, return_indices=True)
    a2 = F.conv2d(p1, m.conv2.weight, m.conv2.bias, padding=1)
    p2, i2 = F.max_pool2d(F.relu(a2), 2, return_indices=True)
    a3 = p2.flatten(1) @ m.fc1.weight.T + m.fc1.bias
    out = F.relu(a3) @ m.fc2.weight.T + m.fc2.bias
    s = select({"relu2": F.relu(a2), "pool2": p2, "relu3": F.relu(a3), "fc2": out}[layer])

    def rectify(s, pre):
        return F.relu(s) * (pre > 0) if guided else F.relu(s)

    if layer == "fc2":
        s, layer = s @ m.fc2.weight, "relu3"
    if layer == "relu3":
        s, layer = (rectify(s, a3) @ m.fc1.weight).view(p2.shape), "pool2"
    if layer == "pool2":
        s, layer = F.max_unpool2d(s, i2, 2, output_size=a2.shape[-2:]), "relu2"
    s = F.conv_transpose2d(rectify(s, a2), m.conv2.weight, padding=1)
    s = F.max_unpool2d(s, i1, 2, output_size=a1.shape[-2:])
    s = F.conv_transpose2d(rectify(s, a1), m.conv1.weight, padding=1)
    return s * enc.std


def keep_channel(c, k=None):
    def select(a):
        out = torch.zeros_like(a)
        for b in range(a.shape[0]):
            vals = a[b, c].flatten()
            order = vals.argsort(descending=True)[: (k or vals.numel())]
            kept = torch.zeros_like(vals)
            kept[order] = vals[order]
            out[b, c] = kept.view_as(a[b, c])
        return out

    return select


def keep_position(y, x):
    def select(a):
        out = torch.zeros_like(a)
        out[:, :, y, x] = a[:, :, y, x]
        return out

    return select


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("layer", ["relu2", "pool2", "relu3", "fc2"])
def test_matches_float64_oracle(layer, guided):
    enc = small_encoder()
    net = DeconvNet(enc, guided=guided)
    images = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    got = net.project(images, layer)
    want = oracle(enc, images, layer, lambda a: a, guided)
    assert want.abs().max() > 0
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    # each of several channels separately, batched in one call (chunk=3 splits them into two passes)
    chans = [1, 0, 2] if layer.startswith(("relu2", "pool2")) else [2, 1]
    got = net.project(images, layer, channels=chans, chunk=3)
    assert got.shape == (3, len(chans), 3, 8, 8)
    for k, c in enumerate(chans):
        assert torch.allclose(got[:, k], oracle(enc, images, layer, keep_channel(c), guided), atol=1e-12)
    if layer in ("relu2", "pool2"):
        got = net.project(images, layer, channels=[3, 1], top_k=2)
        for k, c in enumerate([3, 1]):
            assert torch.allclose(got[:, k], oracle(enc, images, layer, keep_channel(c, 2), guided), atol=1e-12)
        got = net.project(images, layer, position=(1, 0))
        assert torch.allclose(got, oracle(enc, images, layer, keep_position(1, 0), guided), atol=1e-12)


def test_layer_top_k_keeps_the_strongest_activations():
    enc = small_encoder()
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64)

    def top3(a):
        out = torch.zeros_like(a)
        for b in range(a.shape[0]):
            order = a[b].flatten().argsort(descending=True)[:3]
            out[b].view(-1)[order] = a[b].flatten()[order]
        return out

    assert torch.allclose(DeconvNet(enc).project(images, "relu2", top_k=3), oracle(enc, images, "relu2", top3, False))


# ---------------------------------------------------------------------- second formulation: autograd
class _RectifiedBackward(torch.autograd.Function):
    """ReLU forward; backward replaced by ReLU of the incoming signal (× forward mask when guided)."""

    @staticmethod
    def forward(ctx, x, guided):
        ctx.save_for_backward(x)
        ctx.guided = guided
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        g = g.clamp(min=0)
        return (g * (x > 0) if ctx.guided else g), None


class _SwappedReLU(nn.Module):
    def __init__(self, guided: bool) -> None:
        super().__init__()
        self.guided = guided

    def forward(self, x):
        return _RectifiedBackward.apply(x, self.guided)


def autograd_projection(enc: Encoder, images, layer: str, select, guided: bool) -> torch.Tensor:
    """Gradient of the selected activations, on a private copy whose every ReLU has the swapped backward."""
    model = copy.deepcopy(enc.model)
    for _, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, child_name, _SwappedReLU(guided))
    captured = {}
    model.get_submodule(enc.layer(layer).node).register_forward_hook(lambda m, i, o: captured.update(out=o))
    x = enc.normalize(images).requires_grad_()
    with torch.enable_grad():
        model(x)
        out = captured["out"]
        (g,) = torch.autograd.grad(out, x, select(out.detach()))
    return g * enc.std


def bn_net() -> nn.Sequential:
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 4, 3, padding=1, stride=2),
            bn1=nn.BatchNorm2d(4),
            relu1=nn.ReLU(),
            pool1=nn.AvgPool2d(2),
            conv2=nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2),
            relu2=nn.ReLU(),
            gap=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(4, 2),
        )
    )
    net.bn1.running_mean.uniform_(-1, 1)
    net.bn1.running_var.uniform_(0.5, 2)
    net.bn1.weight.data.uniform_(0.5, 2)
    return net


def random_bn_stats(enc: Encoder) -> Encoder:
    """Batch norms with non-trivial running statistics and scales, so the BN rule is really exercised."""
    g = torch.Generator().manual_seed(1)
    for m in enc.model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return enc


def tv_resnet18(size: int = 32) -> Encoder:
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    return random_bn_stats(Encoder(net, name="resnet18", image_size=(size, size), mean=MEAN, std=STD).double())


CASES = {  # name: (encoder factory, layers)
    "alexnet_cifar": (
        lambda: build_encoder("alexnet_cifar", kwargs={"width": 0.25}).double(),
        ["conv2", "conv5", "fc7", "fc8"],
    ),
    "he2019": (lambda: build_encoder("he2019_cifar").double(), ["conv11", "relu32", "fc1"]),
    # torchvision AlexNet: overlapping 3×3/2 pools, adaptive average pool, torch.flatten (224×224: slow on CPU)
    "tv_alexnet": (lambda: build_encoder("alexnet", pretrained=False).double(), ["conv5", "fc7"]),
    "bn_avgpool": (lambda: small_encoder(bn_net(), size=12), ["relu1", "pool1", "relu2", "fc"]),
    # residual blocks: identity shortcuts, strided 1×1 conv + BN shortcuts (layer2…4), the signal summed
    # where a block's input feeds both branches
    "tv_resnet18": (tv_resnet18, ["layer1", "layer2", "layer4", "fc"]),
    # timm's ResNet-D: deep stem, average-pool + 1×1 conv shortcuts; timm's own FX graph
    "timm_resnet18d": (
        lambda: random_bn_stats(
            build_encoder("timm:resnet18d", pretrained=False, kwargs={"image_size": 32, "num_classes": 10}).double()
        ),
        ["act1", "layer1", "layer3", "logits"],
    ),
}


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "tv_alexnet" else c for c in CASES])
def test_matches_autograd_formulation(case, guided):
    make, layers = CASES[case]
    enc = make()
    net = DeconvNet(enc, guided=guided)
    images = torch.rand(1 if case == "tv_alexnet" else 2, 3, *enc.image_size, dtype=torch.float64)
    for layer in layers:
        want = autograd_projection(enc, images, layer, lambda a: a, guided)
        got = net.project(images, layer)
        assert want.abs().max() > 0, layer
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-10), layer
        # one channel's strongest activation; on a fully connected layer the channel is one value
        c = min(2, enc.layer(layer).shape[0] - 1)
        got = net.project(images, layer, channels=[c], top_k=1)[:, 0]
        assert torch.allclose(
            got, autograd_projection(enc, images, layer, keep_channel(c, 1), guided), rtol=1e-8, atol=1e-10
        ), layer


def test_fully_connected_channel_top_1_is_the_channel_itself():
    enc = build_encoder("alexnet_cifar", kwargs={"width": 0.25}).double()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    net = DeconvNet(enc)
    for layer in ("fc6", "fc8"):
        c = int(enc(images, [layer])[layer][0].argmax())  # a channel active for image 0
        got = net.project(images, layer, channels=c, top_k=1)  # an int channel: (B, C, H, W)
        assert got.shape == (2, 3, 32, 32) and got[0].abs().max() > 0
        assert torch.equal(got, net.project(images, layer, channels=c))
        assert torch.allclose(
            got, autograd_projection(enc, images, layer, keep_channel(c, 1), False), rtol=1e-8, atol=1e-10
        )


# ---------------------------------------------------------------------- overlapping pools, by hand
def toy_overlap_encoder() -> Encoder:
    # identity 1×1 conv → ReLU → 3×3 stride-2 max pool: on a 5×5 image the four windows share the centre
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 1, 1, bias=False), relu=nn.ReLU(), pool=nn.MaxPool2d(3, 2)))
    net.conv.weight.data.fill_(1.0)
    return Encoder(net, name="toy", image_size=(5, 5), mean=(0.0,), std=(1.0,)).double()


def test_overlapping_switches_add_up():
    enc = toy_overlap_encoder()
    image = torch.full((1, 1, 5, 5), 0.1, dtype=torch.float64)
    image[0, 0, 2, 2] = 0.9  # the maximum of all four windows
    got = DeconvNet(enc).project(image, "pool")
    want = torch.zeros_like(image)
    want[0, 0, 2, 2] = 4 * 0.9  # four pooled units, each 0.9, all switched to the centre: summed
    assert torch.allclose(got, want)

    image[0, 0, 0, 0] = 1.0  # now the top-left window picks its corner; the other three keep the centre
    got = DeconvNet(enc).project(image, "pool")
    want = torch.zeros_like(image)
    want[0, 0, 0, 0], want[0, 0, 2, 2] = 1.0, 3 * 0.9
    assert torch.allclose(got, want)
    # one spatial position selects one pooled unit: only its own switch receives the signal
    got = DeconvNet(enc).project(image, "pool", position=(1, 1))
    want = torch.zeros_like(image)
    want[0, 0, 2, 2] = 0.9
    assert torch.allclose(got, want)


# ---------------------------------------------------------------------- side effects
@pytest.mark.parametrize("guided", [False, True])
def test_no_hooks_or_changes_left_and_input_untouched(guided):
    enc = build_encoder("alexnet_cifar", kwargs={"width": 0.25})
    before_modules = [(n, type(m), m.training) for n, m in enc.model.named_modules()]
    before_state = {k: v.clone() for k, v in enc.model.state_dict().items()}
    images = torch.rand(2, 3, 32, 32)
    pristine, version = images.clone(), images._version
    net = DeconvNet(enc, guided=guided)
    net.project(images, "conv5", channels=[0, 3], top_k=2)
    net.project(images, "fc8")
    DeconvNetMethod(enc, guided=guided)(images, "pool2")
    assert hook_count(enc.model) == 0
    assert [(n, type(m), m.training) for n, m in enc.model.named_modules()] == before_modules
    assert all(torch.equal(v, before_state[k]) for k, v in enc.model.state_dict().items())
    assert all(not p.requires_grad for p in enc.model.parameters())
    assert torch.equal(images, pristine) and images._version == version


def test_batched_channels_equal_one_at_a_time():
    enc = build_encoder("alexnet_cifar", kwargs={"width": 0.25})
    net = DeconvNet(enc)
    images = torch.rand(3, 3, 32, 32)
    chans = [0, 5, 7, 11, 63]
    batched = net.project(images, "conv5", channels=chans, top_k=4, chunk=6)  # (3, 5, 3, 32, 32)
    for k, c in enumerate(chans):
        single = net.project(images, "conv5", channels=c, top_k=4)
        assert torch.allclose(batched[:, k], single, atol=1e-6)
    for b in range(3):
        assert torch.allclose(
            batched[b], net.project(images[b : b + 1], "conv5", channels=chans, top_k=4)[0], atol=1e-6
        )


# ---------------------------------------------------------------------- errors
def test_bad_input_errors():
    net = DeconvNet(build_encoder("alexnet_cifar", kwargs={"width": 0.25}))
    images = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*choose one of: conv1"):
        net.project(images, "conv9")
    with pytest.raises(ValueError, match=r"channels .* 0\.\.63"):
        net.project(images, "conv5", channels=[64])
    with pytest.raises(ValueError, match=r"top_k must be in 1\.\.64"):
        net.project(images, "conv5", channels=[0], top_k=65)
    with pytest.raises(ValueError, match=r"top_k must be in 1\.\.4096"):
        net.project(images, "conv5", top_k=0)
    with pytest.raises(ValueError, match="position"):
        net.project(images, "conv5", position=(8, 0))
    with pytest.raises(ValueError, match="position.*non-spatial"):
        net.project(images, "fc6", position=(0, 0))
    with pytest.raises(ValueError, match="expects images of shape"):
        net.project(torch.rand(1, 3, 16, 16), "conv5")


class ToyResidual(nn.Module):
    """relu(relu(conv(x)) + x) with a 1×1 conv of weight 2: hand-computable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu = nn.Conv2d(1, 1, 1, bias=False), nn.ReLU()
        self.conv.weight.data.fill_(2.0)
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(self.relu(self.conv(x)) + x)


@pytest.mark.parametrize("guided", [False, True])
def test_residual_addition_by_hand(guided):
    enc = Encoder(ToyResidual(), name="toy", image_size=(2, 2), mean=(0.0,), std=(1.0,), layers={"out": "out"}).double()
    x = torch.tensor([[[[0.5, -0.25], [1.0, 0.2]]]], dtype=torch.float64)
    # y = relu(2x + x) = 3x where x > 0, else 0. Going down: the output ReLU passes y ≥ 0; the addition sends y
    # down both branches: through relu and the conv (×2) and unchanged through the shortcut; at the input the
    # two arrive summed: 2y + y = 9x where x > 0.
    want = torch.where(x > 0, 9 * x, torch.zeros_like(x))
    assert torch.allclose(DeconvNet(enc, guided=guided).project(x, "out"), want)
    # a negative signal at one output unit: DeconvNet rectifies it away at the top ReLU
    net = DeconvNet(enc, guided=guided)
    graph = net.graph("out")
    rec = graph.forward(x, guided)
    signal = torch.tensor([[[[[-1.0, 0.0], [0.0, 1.0]]]]], dtype=torch.float64)  # (B, K, C, H, W)
    got = net._backward(signal, graph, rec)
    want = torch.zeros_like(signal)
    want[..., 1, 1] = 3.0  # shortcut 1 + conv branch 2 (guided: the conv branch's ReLU input 0.4 > 0)
    assert torch.allclose(got, want)


def test_resnet_receptive_field_by_hand_and_support():
    enc = tv_resnet18(size=64)
    dn = DeconvNet(enc)
    # conv1 7/s2/p3: (7, 2, 3); maxpool 3/s2/p1: (11, 4, 5); each 3×3 conv in layer1 adds 2·4 to the size and
    # 4 to the offset, and the shortcut's smaller field is contained: 4 convs → (43, 4, 21)
    rf = dn.receptive_field("layer1")
    assert (rf.size, rf.stride, rf.offset) == ((43, 43), (4, 4), (21, 21))
    rf2 = dn.receptive_field("layer2")  # first conv 3/s2/p1: +8, ×2 → (51, 8, 25); 3 more 3×3 convs: +16 each
    assert (rf2.size, rf2.stride, rf2.offset) == ((99, 99), (8, 8), (49, 49))
    assert dn.receptive_field("fc").size == (64, 64)
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    for y, x in [(0, 0), (7, 9)]:
        support = dn.project(images, "layer1", channels=[0, 5, 9], position=(y, x))[0].abs().sum((0, 1)) > 0
        assert support.any()
        t, l, h, w = rf.window(y, x, (64, 64))
        assert support[t : t + h, l : l + w].sum() == support.sum()


def test_unsupported_modules_are_named():
    he = DeconvNet(build_encoder("he2019_cifar"))
    with pytest.raises(ValueError, match="Sigmoid module 'sigmoid1' has no projection rule.*fc1"):
        he.project(torch.rand(1, 3, 32, 32), "fc2")
    resnet = DeconvNet(tv_resnet18())
    assert resnet.supported_layers == resnet.encoder.layers  # residual networks are projected end to end
    vit = DeconvNet(build_encoder("timm:test_vit", pretrained=False, kwargs={"img_size": 32}))
    assert vit.supported_layers == []
    with pytest.raises(
        ValueError,
        match="layer_norm has no projection rule: layer normalisation divides by a "
        "statistic.*also uses attention: attention multiplies two input-dependent",
    ):
        vit.project(torch.rand(1, 3, 32, 32), "blocks_0")


# ---------------------------------------------------------------------- receptive fields
def test_receptive_field_of_alexnet_cifar_by_hand():
    net = DeconvNet(build_encoder("alexnet_cifar", kwargs={"width": 0.25}))
    # size += (k-1)·jump, offset += pad·jump, jump *= stride: conv 5/p2, pool 2/s2, conv 5/p2, pool 2/s2, 3× conv 3/p1
    want = {
        "conv1": (5, 1, 2),
        "pool1": (6, 2, 2),
        "conv2": (14, 2, 6),
        "pool2": (16, 4, 6),
        "conv3": (24, 4, 10),
        "conv4": (32, 4, 14),
        "conv5": (40, 4, 18),
        "pool5": (44, 8, 18),
    }
    for layer, (size, jump, offset) in want.items():
        rf = net.receptive_field(layer)
        assert (rf.size, rf.stride, rf.offset) == ((size,) * 2, (jump,) * 2, (offset,) * 2), layer
    assert net.receptive_field("fc6").size == (32, 32)


def test_single_unit_projection_fills_exactly_its_receptive_field():
    # no pools and positive weights: nothing is rectified away, so the support is the whole (clipped) field
    net = nn.Sequential(
        OrderedDict(
            c1=nn.Conv2d(3, 2, 5, padding=2),
            r1=nn.ReLU(),
            c2=nn.Conv2d(2, 2, 3, padding=1, stride=2),
            r2=nn.ReLU(),
            c3=nn.Conv2d(2, 2, 3, padding=0, dilation=2),
        )
    )
    for p in net.parameters():
        p.data.uniform_(0.1, 1.0)
    enc = small_encoder(net, size=16)
    dn = DeconvNet(enc)
    rf = dn.receptive_field("c3")
    images = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    for y, x in [(0, 0), (2, 3), (3, 3)]:
        support = dn.project(images, "c3", channels=0, position=(y, x))[0].abs().sum(0) > 0  # (H, W)
        rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
        top, left = y * rf.stride[0] - rf.offset[0], x * rf.stride[1] - rf.offset[1]
        assert (rows.min(), rows.max()) == (max(top, 0), min(top + rf.size[0], 16) - 1)
        assert (cols.min(), cols.max()) == (max(left, 0), min(left + rf.size[1], 16) - 1)
        t, l, h, w = rf.window(y, x, (16, 16))
        assert support[t : t + h, l : l + w].sum() == support.sum()


def test_pooled_unit_projection_stays_inside_its_window():
    enc = build_encoder("alexnet_cifar", kwargs={"width": 0.25})
    dn = DeconvNet(enc)
    rf = dn.receptive_field("conv2")
    images = torch.rand(2, 3, 32, 32)
    acts = enc(images, "conv2")["conv2"]
    proj = dn.project(images, "conv2", channels=[0, 1, 2], top_k=1)
    for b in range(2):
        for k in range(3):
            y, x = divmod(int(acts[b, k].argmax()), 16)
            t, l, h, w = rf.window(y, x, (32, 32))
            inside = proj[b, k, :, t : t + h, l : l + w].abs().sum()
            assert inside > 0 and torch.isclose(inside, proj[b, k].abs().sum())


# ---------------------------------------------------------------------- evaluation adapter
def test_unit_range_mappings():
    images = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(to_unit_range(2.5 * images - 7.0, images), images)  # an exact affine copy is recovered
    flat = to_unit_range(-images, images)  # anti-correlated: scale 0, the image mean
    assert torch.allclose(flat, images.mean((1, 2, 3), keepdim=True).expand_as(images))
    mm = to_unit_range(torch.randn(3, 3, 8, 8), mapping="minmax").flatten(1)
    assert torch.allclose(mm.min(1).values, torch.zeros(3)) and torch.allclose(mm.max(1).values, torch.ones(3))
    with pytest.raises(ValueError, match="mapping"):
        to_unit_range(images, images, mapping="sigmoid")


def test_deconvnet_method_projects_all_activations():
    enc = build_encoder("alexnet_cifar", kwargs={"width": 0.25})
    images = torch.rand(2, 3, 32, 32)
    method = DeconvNetMethod(enc)
    assert method.name == "deconvnet" and DeconvNetMethod(enc, guided=True).name == "guided-backprop"
    rec = method(images, "conv3")
    assert rec.shape == images.shape and rec.min() >= 0 and rec.max() <= 1
    assert torch.allclose(rec, to_unit_range(DeconvNet(enc).project(images, "conv3"), images))
    assert DeconvNetMethod(enc, mapping="minmax").name == "deconvnet+minmax"


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("mapping", ["affine", "minmax"])
def test_own_floors_project_nothing_through_the_true_images_switches(guided, mapping):
    """DeconvNet's own floors against the float64 oracle: a constant signal and another image's activations,
    carried down through THIS image's switches (and, guided, its ReLU masks); the fitted constant is a flat
    image at the image's mean. Every variant reads the true image, so every variant says so."""
    enc = small_encoder()
    images = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    method = DeconvNetMethod(enc, guided=guided, mapping=mapping)
    assert method.reads_target and "switches" in method.describe_caveat()
    recon, floors = method.reconstruct_with_floors(Batch(images), "fc2")
    target = images if mapping == "affine" else None
    assert torch.allclose(recon, method(images, "fc2"))
    assert list(floors) == list(method.floor_kinds)
    for kind, select in (("constant signal", torch.ones_like), ("shuffled signal", lambda a: a.roll(1, 0))):
        want = to_unit_range(oracle(enc, images, "fc2", select, guided), target, mapping)
        assert torch.allclose(floors[kind], want, atol=1e-10), kind
    assert not torch.allclose(floors["shuffled signal"], recon)  # another image's features, not its own
    if mapping == "affine":
        flat = images.mean((1, 2, 3), keepdim=True).expand_as(images)
        assert torch.allclose(floors["fitted constant"], flat)
    else:
        assert "fitted constant" not in floors  # min-max fits nothing to the target


# ---------------------------------------------------------------------- figures and CLI
@pytest.fixture()
def folder(tmp_path):
    return write_image_folder(tmp_path, per_class=7, size=(40, 36), seed=1)


def test_top_activating_and_channel_figure(folder):
    enc = build_encoder("alexnet_cifar", kwargs={"width": 0.25})
    ds = image_folder(str(folder), enc.image_size, limit=10)
    assert len(ds) == 10 and ds[0][0].shape == (3, 32, 32)
    values, index = top_activating(enc, "conv2", ds, [3, 7], top=4, batch_size=3)
    all_images = torch.stack([ds[i][0] for i in range(len(ds))])
    brute = enc(all_images, "conv2")["conv2"][:, [3, 7]].flatten(2).amax(2)  # (N, 2)
    for k in range(2):
        assert torch.allclose(values[k], brute[:, k].sort(descending=True).values[:4])
        assert torch.allclose(brute[index[k], k], values[k])
    imgs = all_images[index[0]]
    fig = channel_figure(DeconvNet(enc), imgs, "conv2", 3, searched=10)
    assert fig["tiles"].shape == (4, 3, 14, 28)
    assert fig["caption"].startswith("alexnet_cifar conv2, channel 3: the top 4 of 10 images")
    assert "DeconvNet projection" in fig["caption"] and "receptive-field crop" in fig["caption"]
    assert (
        "guided backpropagation projection" in channel_figure(DeconvNet(enc, guided=True), imgs, "conv2", 3)["caption"]
    )
    for n, (t, l, h, w) in enumerate(fig["windows"]):
        assert torch.equal(fig["tiles"][n, :, :, 14:], imgs[n, :, t : t + h, l : l + w])  # the matching crop


@pytest.mark.slow
def test_cli_writes_pngs(folder, tmp_path, capsys):
    from upconv.cli.main import main

    out = tmp_path / "figs"
    main(
        [
            "deconv",
            "alexnet_cifar",
            "pool2",
            str(folder),
            "--out",
            str(out),
            "--channels",
            "[1, 4]",
            "--per_folder",
            "12",
            "--images",
            "3",
            "--encoder.kwargs",
            '{"width": 0.25}',
            "--zoom",
            "2",
        ]
    )
    names = sorted(os.listdir(out))
    assert names == [
        "pool2_channel0001.png",
        "pool2_channel0004.png",
        "pool2_image0000.png",
        "pool2_image0001.png",
        "pool2_image0002.png",
    ]
    from PIL import Image

    width, height = Image.open(out / "pool2_image0000.png").size
    assert width >= 2 * 64 and height > 32 * 2  # the tile at zoom 2, under its caption
    assert "2 channel figures" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["deconv", "he2019_cifar", "fc2", str(folder), "--out", str(out), "--overwrite", "true"])


def test_cli_runs_on_a_fully_connected_layer_with_progress_on_stderr(folder, tmp_path, capsys, monkeypatch):
    import matplotlib.figure

    from upconv.cli.main import main

    titles, real = {}, matplotlib.figure.Figure.savefig

    def recording(fig, path, **kw):  # the caption each saved figure carries, read off the figure itself
        titles[os.path.basename(path)] = fig._suptitle.get_text() if fig._suptitle else ""
        return real(fig, path, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    monkeypatch.setenv("UPCONV_PROGRESS", "1")
    out = tmp_path / "figs"
    main(
        [
            "deconv",
            "alexnet_cifar",
            "fc6",
            str(folder),
            "--out",
            str(out),
            "--channels",
            "[0, 5]",
            "--per_folder",
            "6",
            "--top",
            "3",
            "--images",
            "2",
            "--encoder.kwargs",
            '{"width": 0.25}',
            "--zoom",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert sorted(os.listdir(out)) == [
        "fc6_channel0000.png",
        "fc6_channel0005.png",
        "fc6_image0000.png",
        "fc6_image0001.png",
    ]
    assert sorted(titles) == ["fc6_channel0000.png", "fc6_channel0005.png", "fc6_image0000.png", "fc6_image0001.png"]
    for i in (0, 1):  # every figure says what it shows
        text = " ".join(titles[f"fc6_image{i:04d}.png"].split())
        assert text.startswith(f"alexnet_cifar fc6, image {i}: the image (left) beside the DeconvNet projection")
    for c in (0, 5):
        text = " ".join(titles[f"fc6_channel{c:04d}.png"].split())  # as wrapped onto lines
        assert text.startswith(f"alexnet_cifar fc6, channel {c}: the top 3 of 6 images"), text
        assert "DeconvNet projection" in text and "receptive-field crop" in text
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"2 channel figures (top 3 of 6 images) and 2 image figures for alexnet_cifar fc6 written to {out}/"
    ]
    for bar in ("searching 6 images", "channel figures", "/2 ["):
        assert bar in captured.err, bar


def test_projection_refuses_non_finite_pixels():
    enc = small_encoder()
    images = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    images[2, 1, 0, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"1 of 3 input images contain NaN or infinite pixels \(batch positions 2\)"):
        DeconvNet(enc).project(images, "relu2")

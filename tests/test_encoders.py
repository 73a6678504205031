import os
import sys

import pytest
import torch
from torch import nn

from upconv.nets.builtin import CIFAR_MEAN, CIFAR_STD
from upconv.nets.encoder import Encoder
from upconv.nets.zoo import build_encoder

SMALL = {"width": 0.25}


@pytest.fixture(scope="module")
def alex():
    return build_encoder("alexnet_cifar", kwargs=SMALL)


def manual_features(enc: Encoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Oracle: walk the Sequential's children by hand, recording every stage."""
    h = enc.normalize(x)
    out = {}
    for name, child in enc.model.named_children():
        h = child(h)
        out[name] = h
    return out


def test_alexnet_cifar_layer_table_matches_published_shapes():
    enc = build_encoder("alexnet_cifar")
    shapes = {i.name: i.shape for i in enc.layer_table}
    assert list(shapes) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
    assert shapes["conv1"] == (64, 32, 32) and shapes["conv2"] == (192, 16, 16)
    assert shapes["conv3"] == (384, 8, 8) and shapes["pool5"] == (256, 4, 4)
    assert shapes["fc6"] == (1024,) and shapes["fc8"] == (10,)


def test_he2019_split_points_are_selectable():
    enc = build_encoder("he2019_cifar")
    assert enc.resolve(["ReLU32", "conv11", "ReLU22"]) == ["conv11", "relu22", "relu32"]
    feats = enc(torch.rand(2, 3, 32, 32), ["conv11", "relu22"])
    assert (feats["conv11"] < 0).any()  # conv11 is the pre-activation output
    assert (feats["relu22"] >= 0).all() and feats["relu22"].shape == (2, 128, 16, 16)
    assert enc.layer("sigmoid1").shape == (512,)


@pytest.mark.parametrize("name", ["alexnet_cifar", "he2019_cifar"])
def test_one_pass_features_match_layer_by_layer_oracle(name):
    enc = build_encoder(name)
    x = torch.rand(3, 3, 32, 32)
    want = manual_features(enc, x)
    got = enc(x, enc.layers)
    for layer in enc.layers:
        torch.testing.assert_close(got[layer], want[layer], rtol=1e-5, atol=1e-6)


def test_forward_stops_after_deepest_requested_layer(alex):
    x = torch.rand(1, 3, 32, 32)
    alex(x, ["pool1", "conv1"])  # build (trace) the extractor before counting executed modules
    ran = []
    leaves = [(n, m) for n, m in alex.model.named_modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda *a, n=n: ran.append(n.split(".")[0])) for n, m in leaves]
    try:
        alex(x, ["pool1", "conv1"])
        assert ran == ["conv1", "conv1", "pool1"]  # conv + ReLU, then the pool; nothing deeper
        alex(x, ["fc8"])
        ran.clear()
        alex(x, ["fc8"])
        assert ran[-1] == "fc8" and "conv5" in ran
    finally:
        for h in hooks:
            h.remove()


def test_inplace_relu_does_not_corrupt_tapped_features():
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("relu", nn.ReLU(inplace=True))
    model.add_module("conv2", nn.Conv2d(4, 4, 3, padding=1))
    enc = Encoder(model, name="toy", image_size=(8, 8), mean=(0.0,) * 3, std=(1.0,) * 3)
    x = torch.rand(2, 3, 8, 8)
    alone = enc(x, ["conv"])["conv"]
    both = enc(x, ["conv", "conv2"])
    assert (alone < 0).any()
    torch.testing.assert_close(both["conv"], alone)
    assert model.relu.inplace  # the user's model is not modified; the encoder works on a copy


def test_frozen_encoder_ignores_train_and_has_no_trainable_weights(alex):
    alex.train()
    assert not alex.training and not any(m.training for m in alex.model.modules())
    assert not any(p.requires_grad for p in alex.parameters())
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(alex(x, ["fc7"])["fc7"], alex(x, ["fc7"])["fc7"])  # dropout is off


def test_gradients_reach_the_input(alex):
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    alex(x, ["conv5"])["conv5"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_names_and_images_raise_clear_errors(alex):
    with pytest.raises(ValueError, match=r"unknown layer 'conv9' for alexnet_cifar; choose one of: conv1, pool1"):
        alex(torch.rand(1, 3, 32, 32), ["conv9"])
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 32, 32\).*got \(1, 3, 64, 64\)"):
        alex(torch.rand(1, 3, 64, 64), ["conv1"])
    with pytest.raises(ValueError, match=r"got \(1, 1, 32, 32\)"):
        alex(torch.rand(1, 1, 32, 32), ["conv1"])
    with pytest.raises(ValueError, match="float images"):
        alex(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), ["conv1"])
    with pytest.raises(
        ValueError,
        match="unknown encoder 'alexnet_cifra'.*alexnet_cifar, he2019_cifar, resnet18_cifar, alexnet"
        ".*timm:<model_name>",
    ):
        build_encoder("alexnet_cifra")


def test_non_finite_images_are_refused_at_boundaries_only(alex):
    x = torch.rand(3, 3, 32, 32)
    alex.check_images(x, finite=True)  # finite images pass
    x[1, 0, 4, 4] = float("nan")
    x[2, 2, 0, 0] = float("inf")
    with pytest.raises(
        ValueError, match=r"2 of 3 input images contain NaN or infinite pixels \(batch positions 1, 2\)"
    ):
        alex.check_images(x, finite=True)
    assert torch.isnan(alex(x, ["conv1"])["conv1"][1]).any()  # the hot path does not read the tensor back


def test_weights_hash_is_reproducible_and_tracks_weights(tmp_path):
    a, b = build_encoder("alexnet_cifar", kwargs=SMALL), build_encoder("alexnet_cifar", kwargs=SMALL)
    assert a.weights_hash == b.weights_hash
    state = {k: v.clone() for k, v in a.model.state_dict().items()}
    state["conv1.0.bias"][0] += 1e-3
    torch.save(state, tmp_path / "w.pt")
    c = build_encoder("alexnet_cifar", str(tmp_path / "w.pt"), kwargs=SMALL)
    assert c.weights_hash != a.weights_hash
    torch.testing.assert_close(c.model.conv1[0].bias, state["conv1.0.bias"])


def test_num_classes_is_read_from_weights(tmp_path):
    from upconv.nets.builtin import alexnet_cifar

    torch.save(alexnet_cifar(num_classes=7, width=0.25).state_dict(), tmp_path / "w.pt")
    enc = build_encoder("alexnet_cifar", str(tmp_path / "w.pt"), kwargs=SMALL)
    assert enc.layer("fc8").shape == (7,)


def test_torchvision_alexnet_names_and_offline_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=r"not in the local torch cache \(expected .*alexnet-owt-7be5be79.pth\)"
    ):
        build_encoder("alexnet")
    # Place a (random) checkpoint where torchvision's weight enum looks; it must be picked up, not fetched.
    ref = torchvision.models.alexnet()
    url = torchvision.models.AlexNet_Weights.DEFAULT.url
    os.makedirs(tmp_path / "hub" / "checkpoints")
    path = tmp_path / "hub" / "checkpoints" / os.path.basename(url)
    torch.save(ref.state_dict(), path)
    monkeypatch.setattr(torchvision.models.AlexNet_Weights.DEFAULT.value, "url", url)
    enc = build_encoder("alexnet") if _hash_ok(path, url) else build_encoder("alexnet", str(path))
    torch.testing.assert_close(enc.model.features[0].weight, ref.features[0].weight)
    table = {i.name: i.node for i in enc.layer_table}
    assert table["conv1"] == "features.1" and table["conv5"] == "features.11" and table["pool5"] == "features.12"
    assert table["fc6"] == "classifier.2" and table["fc7"] == "classifier.5" and table["fc8"] == "classifier.6"
    assert enc.resolve(["features.11"]) == ["conv5"]  # module names work beside the friendly ones


def _hash_ok(path, url):
    # torchvision checks the file's hash prefix against the name; a random checkpoint cannot match it,
    # so the cached-file branch is exercised with check_hash and the explicit-file branch otherwise.
    import hashlib

    prefix = os.path.basename(url).split("-")[-1].split(".")[0]
    return hashlib.sha256(path.read_bytes()).hexdigest().startswith(prefix)


@pytest.mark.parametrize("name,first,last", [("vgg11", "conv1_1", "fc8"), ("resnet18", "conv1", "fc")])
def test_torchvision_random_weights_build_a_layer_table(name, first, last):
    enc = build_encoder(name, pretrained=False)
    assert enc.layers[0] == first and enc.layers[-1] == last
    assert enc.layer(last).shape == (1000,)


def test_user_class_path_with_state_dict(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n"
        "class Tiny(nn.Sequential):\n"
        "    def __init__(self, c=4):\n"
        "        super().__init__()\n"
        "        self.add_module('conv', nn.Conv2d(3, c, 3))\n"
        "        self.add_module('pool', nn.MaxPool2d(2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mynets", None)
    import mynets

    ref = mynets.Tiny(c=5)
    torch.save(ref.state_dict(), tmp_path / "tiny.pt")
    enc = build_encoder("mynets.Tiny", str(tmp_path / "tiny.pt"), kwargs={"c": 5, "image_size": [16, 16]})
    assert enc.layers == ["conv", "pool"] and enc.layer("pool").shape == (5, 7, 7)
    x = torch.rand(2, 3, 16, 16)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(enc(x, ["pool"])["pool"], ref((x - mean) / std))
    with pytest.raises(ValueError, match="cannot import encoder class 'mynets.Nope'"):
        build_encoder("mynets.Nope")
    with pytest.raises(ValueError, match="do not fit mynets.Tiny"):
        build_encoder("mynets.Tiny", str(tmp_path / "tiny.pt"), kwargs={"c": 3, "image_size": [16, 16]})


# ---------------------------------------------------------------------- batch norm encoders
BN_NETS = (
    "from torch import nn\n"
    "class TinyBN(nn.Sequential):\n"
    "    def __init__(self, c=4):\n"
    "        super().__init__()\n"
    "        self.add_module('conv', nn.Conv2d(3, c, 3, padding=1))\n"
    "        self.add_module('bn', nn.BatchNorm2d(c))\n"
    "        self.add_module('relu', nn.ReLU())\n"
    "        self.add_module('pool', nn.MaxPool2d(2))\n"
)


def _sha256_oracle(model: nn.Module) -> str:
    """The documented hash, written out with numpy (which has no trouble with 0-dim arrays)."""
    import hashlib

    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def test_weights_hash_covers_batch_norm_buffers():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    a = Encoder(net, name="bn", image_size=(8, 8), mean=(0.0,) * 3, std=(1.0,) * 3)
    assert a.model[1].num_batches_tracked.dim() == 0
    assert a.weights_hash == _sha256_oracle(a.model)
    net[1].num_batches_tracked.fill_(7)  # only the 0-dim buffer changes
    b = Encoder(net, name="bn", image_size=(8, 8), mean=(0.0,) * 3, std=(1.0,) * 3)
    assert b.weights_hash == _sha256_oracle(b.model) != a.weights_hash
    alex = build_encoder("alexnet_cifar", kwargs=SMALL)  # no 0-dim tensors: the hash is what it always was
    assert alex.weights_hash == _sha256_oracle(alex.model)


def test_layers_command_lists_resnet18(capsys):
    from upconv.cli.main import main

    main(["layers", "resnet18", "--encoder.pretrained", "false"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("resnet18  input 3×224×224  weights ") and len(out[0].split()[-1]) == 16
    rows = {line.split()[0]: line.split()[1:] for line in out[2:]}
    assert list(rows) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert rows["layer4"] == ["layer4", "512×7×7", "25088"] and rows["fc"] == ["fc", "1000", "1000"]


def test_decoders_of_a_batch_norm_encoder_save_and_reload(tmp_path, monkeypatch):
    import lightning.pytorch as L

    from upconv.nets.checkpoints import load_decoders
    from upconv.training.module import InversionModule

    (tmp_path / "bnnets.py").write_text(BN_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bnnets", None)
    module = InversionModule(
        encoder={"name": "bnnets.TinyBN", "kwargs": {"c": 4}},
        layers=["bn", "pool"],
        width=8,
        fc_width=16,
        max_width=16,
        log_images=0,
    )
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.zeros(8)), batch_size=4)
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(module, train_dataloaders=loader)
    path = tmp_path / "bn.ckpt"
    trainer.save_checkpoint(path)
    dec = load_decoders(path)  # rebuilds TinyBN from its recorded spec; the weights hash must match
    assert dec.encoder.weights_hash == module.encoder.weights_hash
    with torch.no_grad():
        for layer in ("bn", "pool"):
            torch.testing.assert_close(dec(images[:3], layer), module.cpu().eval()(images[:3])[layer].clamp(0, 1))

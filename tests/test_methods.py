"""One contract for every registered inversion method (as timm runs the same checks on every model): a new
entry of ``upconv.methods.registry`` is tested by default."""

import pytest
import torch
from conftest import hook_count

from upconv.methods.base import Batch
from upconv.methods.registry import build_method, method_names
from upconv.nets.zoo import build_encoder

ENC_KWARGS = {"width": 0.25, "num_classes": 8}
LAYER = "pool2"
# Options a method needs to be built at all, or to run in a test's time; every other method gets none.
OPTIONS = {"upconvnet": lambda ckpt: {"checkpoints": ckpt}, "mahendran_vedaldi": lambda ckpt: {"steps": 3}}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Untrained decoders for LAYER, saved through the module's own checkpoint hook."""
    from upconv.training.module import InversionModule

    torch.manual_seed(0)
    model = InversionModule(
        encoder={"name": "alexnet_cifar", "kwargs": ENC_KWARGS}, layers=[LAYER], width=8, fc_width=64
    )
    state = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(state)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("name", method_names())
def test_every_registered_method_keeps_the_contract(name, ckpt):
    enc = build_encoder("alexnet_cifar", kwargs=ENC_KWARGS)
    method = build_method(name, enc, **OPTIONS.get(name, lambda c: {})(ckpt))
    assert method.name == name
    assert method.reads_target == (method.describe_caveat() is not None)  # a method that reads x says so
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, C, H, W)
    before = images.clone()
    torch.manual_seed(2)
    called = method(images, LAYER)
    assert called.shape == images.shape and torch.isfinite(called).all()
    assert called.min() >= 0 and called.max() <= 1  # images in [0, 1], as every metric expects
    torch.manual_seed(2)
    with torch.no_grad():
        features = {LAYER: enc(images, [LAYER])[LAYER]}
    batch = Batch(images, features, torch.zeros(3, dtype=torch.long))
    assert torch.allclose(method.reconstruct(batch, LAYER), called, atol=1e-6)
    assert torch.equal(images, before)  # the input is not mutated
    assert hook_count(enc.model) == 0  # no hook left behind on the encoder

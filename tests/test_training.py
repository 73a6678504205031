import copy
import pickle

import lightning.pytorch as L
import pytest
import torch

from upconv.checkpoints import load_decoders
from upconv.classifier import ClassifierModule
from upconv.data import ImageData
from upconv.encoders import build_encoder
from upconv.module import InversionModule

TINY = dict(encoder="alexnet_cifar", encoder_kwargs={"width": 0.25}, width=8, fc_width=32, max_width=32)


def tiny_module(layers=("conv1", "pool2", "fc6"), **kw):
    return InversionModule(layers=list(layers), **{**TINY, **kw})


def test_one_encoder_forward_feeds_every_decoder():
    m = tiny_module()
    calls = []
    real = m.encoder.forward
    m.encoder.forward = lambda x, layers: calls.append(list(layers)) or real(x, layers)
    m.training_step((torch.rand(4, 3, 32, 32), None), 0)
    assert calls == [["conv1", "pool2", "fc6"]]


def test_joint_training_equals_separate_training():
    """Summed losses + one Adam step over all decoders == each decoder trained on its own."""
    torch.manual_seed(0)
    joint = tiny_module(("conv1", "pool2"))
    solo = {n: copy.deepcopy(joint.decoders[n]) for n in joint.layers}
    opt = torch.optim.Adam(joint.decoders.parameters(), lr=1e-2)
    opts = {n: torch.optim.Adam(d.parameters(), lr=1e-2) for n, d in solo.items()}
    for _ in range(3):
        x = torch.rand(4, 3, 32, 32)
        losses, _ = joint._losses(x)
        opt.zero_grad()
        torch.stack(list(losses.values())).sum().backward()
        opt.step()
        for n, d in solo.items():
            f = joint.encoder(x, [n])[n]
            opts[n].zero_grad()
            torch.nn.functional.mse_loss(d(f), x).backward()
            opts[n].step()
    for n, d in solo.items():
        for p, q in zip(joint.decoders[n].parameters(), d.parameters()):
            torch.testing.assert_close(p, q)


def test_loss_falls_and_feature_term_trains_decoders_only():
    m = tiny_module(("pool2",), feature_loss_weight=1.0)
    enc_before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    opt = torch.optim.Adam(m.decoders.parameters(), lr=3e-3)
    x = torch.rand(8, 3, 32, 32)
    first = None
    for _ in range(40):
        loss = m.training_step((x, None), 0)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert all(torch.equal(v, m.encoder.state_dict()[k]) for k, v in enc_before.items())
    assert not m.encoder.training


def _fit(module, tmp_path, **trainer_kw):
    data = ImageData(source="embedded", embedded_per_class=12, batch_size=16)
    trainer = L.Trainer(max_steps=3, limit_val_batches=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, **trainer_kw)
    trainer.fit(module, data)
    return trainer


def test_checkpoint_roundtrip_is_weights_only_and_checks_the_encoder(tmp_path):
    m = tiny_module()
    trainer = _fit(m, tmp_path)
    path = tmp_path / "dec.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert not any(k.startswith("encoder.") for k in raw["state_dict"])  # the frozen encoder is not stored
    assert raw["upconv"]["layers"] == ["conv1", "pool2", "fc6"]
    dec = load_decoders(path)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dec(x, "pool2"), m.cpu()(x)["pool2"].clamp(0, 1))
    other = build_encoder("alexnet_cifar", kwargs={"width": 0.5})
    with pytest.raises(ValueError, match=r"trained for encoder alexnet_cifar \(weights [0-9a-f]+\), not alexnet_cifar"):
        load_decoders(path, encoder=other)
    with pytest.raises(ValueError, match=r"no decoder for layer\(s\) conv5; it holds: conv1, pool2, fc6"):
        load_decoders(path, layers=["conv5"])
    reloaded = InversionModule.load_from_checkpoint(path)  # resume path re-attaches the encoder
    assert reloaded.layers == m.layers


def test_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"upconv": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_decoders(path)


def test_classifier_export_loads_as_encoder_weights(tmp_path):
    export = tmp_path / "enc.pt"
    clf = ClassifierModule(arch="alexnet_cifar", num_classes=8, arch_kwargs={"width": 0.25}, export=str(export))
    _fit(clf, tmp_path)
    enc = build_encoder("alexnet_cifar", str(export), kwargs={"width": 0.25})
    x = torch.rand(4, 3, 32, 32)
    clf.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc.logits(x), clf.cpu()(x))
    ckpt = tmp_path / "clf.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in clf.model.state_dict().items()}}, ckpt)
    assert build_encoder("alexnet_cifar", str(ckpt), kwargs={"width": 0.25}).weights_hash == enc.weights_hash

import copy
import os
import pickle

import lightning.pytorch as L
import pytest
import torch

from upconv.core.files import UnreadableFileError
from upconv.data.source import ImageSource
from upconv.nets.checkpoints import load_decoders
from upconv.nets.zoo import build_encoder
from upconv.training.classifier import ClassifierModule
from upconv.training.datamodule import ImageData
from upconv.training.module import InversionModule

TINY = dict(encoder={"name": "alexnet_cifar", "kwargs": {"width": 0.25}}, width=8, fc_width=32, max_width=32)


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
    data = ImageData(images=ImageSource(source="embedded", embedded_per_class=12), batch_size=16)
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_kw,
    )
    trainer.fit(module, data)
    return trainer


def test_a_layers_decoder_does_not_depend_on_the_layers_trained_beside_it(tmp_path):
    """pool2's decoder starts from the same weights and, trained through Lightning on the same batches, ends
    with the same weights whether conv1 and fc6 train beside it or not; other layers start elsewhere."""
    states = {}
    for layers in (("conv1", "pool2", "fc6"), ("pool2",)):
        L.seed_everything(3)
        m = tiny_module(layers)
        start = {k: v.clone() for k, v in m.decoders["pool2"].state_dict().items()}
        _fit(m, tmp_path / "-".join(layers))
        states[layers] = (start, m.decoders["pool2"].state_dict(), m)
    (start_all, end_all, m_all), (start_one, end_one, _) = states.values()
    assert all(torch.equal(start_all[k], start_one[k]) for k in start_all)
    assert not all(torch.equal(start_all[k], end_all[k]) for k in start_all)  # it did train
    for k in end_all:
        torch.testing.assert_close(end_all[k], end_one[k], rtol=1e-5, atol=1e-6)
    first = lambda name: next(iter(m_all.decoders[name].parameters())).flatten()[:8]  # noqa: E731
    assert not torch.equal(first("conv1")[:4], first("pool2")[:4])  # not one seed for every layer


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
        torch.testing.assert_close(dec(x, "pool2"), m.cpu().eval()(x)["pool2"].clamp(0, 1))  # eval: BN running stats
    other = build_encoder("alexnet_cifar", kwargs={"width": 0.5})
    with pytest.raises(ValueError, match=r"trained for encoder alexnet_cifar \(weights [0-9a-f]+\), not alexnet_cifar"):
        load_decoders(path, encoder=other)
    with pytest.raises(ValueError, match=r"no decoder for layer\(s\) conv5; it holds: conv1, pool2, fc6"):
        load_decoders(path, layers=["conv5"])
    reloaded = InversionModule.load_from_checkpoint(path)  # resume path re-attaches the encoder
    assert reloaded.layers == m.layers


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_checkpoint_cannot_run_code(tmp_path, writer):
    marker = tmp_path / "code-ran"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path = tmp_path / "evil.ckpt"
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump({"upconv": Evil()}, f)
    else:
        torch.save({"upconv": Evil()}, path)
    with pytest.raises(
        UnreadableFileError, match=f"decoder checkpoint {path}|refused to load decoder checkpoint {path}"
    ):
        load_decoders(path)
    assert not marker.exists()  # refused before anything ran
    if writer == "pickle":
        with open(path, "rb") as f:
            pickle.load(f)  # the file is live: plain unpickling does run its code
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "not a checkpoint"])
def test_unreadable_checkpoint_is_one_clear_error(tmp_path, kind):
    m = tiny_module(("conv1",))
    state = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(state)
    good = tmp_path / "good.ckpt"
    torch.save(state, good)
    bad = tmp_path / "bad.ckpt"
    content = {"empty": b"", "truncated": good.read_bytes()[:3000], "garbage": b"\x00\x01 not torch"}.get(kind)
    if content is None:
        torch.save({"weights": torch.zeros(2)}, bad)
    else:
        bad.write_bytes(content)
    error = ValueError if kind == "not a checkpoint" else UnreadableFileError
    with pytest.raises(error) as e:
        load_decoders(bad)
    assert str(bad) in str(e.value) and len(str(e.value).splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="decoder checkpoint not found"):
        load_decoders(tmp_path / "missing.ckpt")


def _checkpoint_with_relative_weights(project):
    """Train-time layout: encoder weights saved under project/, a checkpoint recording them relatively."""
    from upconv.nets.builtin import ARCHITECTURES

    (project / "checkpoints" / "enc").mkdir(parents=True)
    (project / "checkpoints" / "run").mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(
        ARCHITECTURES["alexnet_cifar"].build(width=0.25).state_dict(), project / "checkpoints" / "enc" / "encoder.pt"
    )
    spec = {**TINY["encoder"], "weights": "checkpoints/enc/encoder.pt"}  # relative to the cwd
    m = tiny_module(("conv1", "fc6"), encoder=spec)
    state = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(state)
    torch.save(state, project / "checkpoints" / "run" / "last.ckpt")
    return m


def test_moved_project_still_finds_the_recorded_encoder_weights(tmp_path, monkeypatch):
    from upconv.evaluation.config import EvalConfig
    from upconv.evaluation.run import evaluate

    (tmp_path / "old").mkdir()
    monkeypatch.chdir(tmp_path / "old")
    m = _checkpoint_with_relative_weights(tmp_path / "old")
    assert m.encoder.spec["weights"] == "checkpoints/enc/encoder.pt"
    (tmp_path / "old").rename(tmp_path / "moved")  # the tree moves, and work goes on elsewhere
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ckpt = tmp_path / "moved" / "checkpoints" / "run" / "last.ckpt"
    dec = load_decoders(ckpt)
    assert dec.encoder.weights_hash == m.encoder.weights_hash
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dec(x, "conv1"), m.eval()(x)["conv1"].clamp(0, 1))
    res = evaluate(
        EvalConfig(out=None, checkpoints=[str(ckpt)], layers=["conv1"], n_boot=5, lpips=False),
        data=ImageData(images=ImageSource(source="embedded", embedded_per_class=4)),
    )
    assert res.settings["encoder_weights_hash"] == m.encoder.weights_hash


def test_missing_recorded_weights_say_where_they_were_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _checkpoint_with_relative_weights(tmp_path)
    os.remove(tmp_path / "checkpoints" / "enc" / "encoder.pt")
    ckpt = tmp_path / "checkpoints" / "run" / "last.ckpt"
    with pytest.raises(FileNotFoundError) as e:
        load_decoders(ckpt)
    text = str(e.value)
    assert len(text.splitlines()) == 1 and "--encoder.weights FILE" in text
    for tried in (
        tmp_path / "checkpoints" / "run" / "checkpoints/enc/encoder.pt",
        tmp_path / "checkpoints/enc/encoder.pt",
    ):
        assert str(tried) in text


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


def test_the_validation_reconstruction_png_is_captioned_and_its_rows_labelled(tmp_path, monkeypatch):
    import matplotlib.figure
    from lightning.pytorch.loggers import CSVLogger

    saved, real = {}, matplotlib.figure.Figure.savefig

    def recording(fig, path, *args, **kwargs):  # the caption and row labels, read off the figure itself
        ticks = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
        saved[os.path.basename(str(path))] = (fig._suptitle.get_text() if fig._suptitle else "", ticks)
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    torch.manual_seed(0)
    m = InversionModule(layers=["conv1", "fc6"], log_images=4, **TINY)
    data = ImageData(images=ImageSource(source="embedded", embedded_per_class=6), batch_size=16)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=CSVLogger(tmp_path, name="run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(m, data)
    assert os.path.isfile(os.path.join(trainer.log_dir, "reconstructions_epoch000.png"))
    caption, rows = saved["reconstructions_epoch000.png"]
    assert caption.startswith("epoch 0: 4 validation images (top row) and their reconstruction from each layer")
    assert rows == ["originals", "conv1", "fc6"]

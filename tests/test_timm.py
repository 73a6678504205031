"""timm encoders: layer tables from timm's own metadata, ViT tokens as grids (checked against timm's
``forward_intermediates``), weights only from files or the local cache, and the decoders' training step and the
depth evaluation running on a timm CNN and a timm ViT. timm's ``test_*`` models are tiny and random."""

from __future__ import annotations

import sys

import pytest
import torch

from upconv.nets.zoo import build_encoder

timm = pytest.importorskip("timm")  # a dev dependency: installed wherever the suite runs

CNN = ("timm:test_resnet", {"image_size": 32, "num_classes": 10})
VIT = ("timm:test_vit", {"img_size": 32, "num_classes": 10})


def _enc(spec):
    name, kwargs = spec
    return build_encoder(name, pretrained=False, kwargs=kwargs)


def test_cnn_layer_table_is_timms_feature_stages_plus_logits():
    enc = _enc(CNN)
    assert enc.layers == [i["module"].replace(".", "_") for i in enc.model.feature_info] + ["logits"]
    assert enc.layers[:5] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = enc(x, enc.layers)
        want = enc.model.forward_intermediates(enc.normalize(x), intermediates_only=True)  # timm's own stages
        logits = enc.model(enc.normalize(x))
    for name, w in zip(enc.layers[:5], want):
        torch.testing.assert_close(feats[name], w)
        assert enc.layer(name).shape == tuple(w.shape[1:])
    torch.testing.assert_close(feats["logits"], logits)
    reductions = [i["reduction"] for i in enc.model.feature_info]
    assert [enc.layer(n).shape[1] for n in enc.layers[:5]] == [32 // r for r in reductions]


def test_vit_tokens_become_the_grid_timm_itself_reports():
    enc = _enc(VIT)
    blocks = [n for n in enc.layers if n.startswith("blocks_")]
    assert blocks == [f"blocks_{i}" for i in range(len(enc.model.blocks))] and enc.layers[-1] == "logits"
    assert enc.resolve(["blocks.3", "BLOCKS_1"]) == ["blocks_1", "blocks_3"]  # timm's module name works too
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = enc(x, enc.layers)
        # timm drops the class token and reshapes patch tokens to NCHW itself: an independent oracle
        want = enc.model.forward_intermediates(enc.normalize(x), intermediates_only=True, output_fmt="NCHW")
    grid = tuple(enc.model.patch_embed.grid_size)
    for name, w in zip(blocks, want):
        assert feats[name].shape == (2, enc.model.embed_dim, *grid)
        torch.testing.assert_close(feats[name], w)
    # and by hand: token 1 + (row · w + col) is patch (row, col)
    with torch.no_grad():
        tokens = enc.graph("blocks_0")(enc.normalize(x))["blocks.0"]  # (B, 1 + h·w, D)
    assert torch.equal(feats["blocks_0"][:, :, 1, 0], tokens[:, 1 + grid[1]])


def test_gradients_reach_the_input_through_a_vit_grid():
    enc = _enc(VIT)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    enc(x, ["blocks_1"])["blocks_1"].square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_weights_are_reproducible_and_files_load(tmp_path):
    a, b = _enc(CNN), _enc(CNN)
    assert a.weights_hash == b.weights_hash
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in a.model.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for f in ("w.pth", "w.safetensors"):
        c = build_encoder(CNN[0], str(tmp_path / f), kwargs=CNN[1])
        assert c.weights_hash != a.weights_hash
        torch.testing.assert_close(c.model.state_dict()["fc.weight"], state["fc.weight"])
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors is not a readable .safetensors file"):
        build_encoder(CNN[0], str(tmp_path / "bad.safetensors"), kwargs=CNN[1])


def test_nothing_downloads_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(timm.models, "load_pretrained", lambda *a, **k: pytest.fail("tried to fetch weights"))
    with pytest.raises(FileNotFoundError, match="not in the local cache.*download=True.*pretrained=False"):
        build_encoder("timm:resnet18", kwargs={"image_size": 32})


def test_unknown_model_and_missing_timm_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="timm has no model 'resnet_nope'.*similar names: .*resnet"):
        build_encoder("timm:resnet_nope", pretrained=False)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ValueError, match="pip install timm"):
        build_encoder("timm:test_resnet", pretrained=False)


def test_layers_command_prints_a_timm_table(capsys):
    from upconv.cli.main import main

    main(["layers", "timm:test_vit", "--encoder.pretrained", "false", "--encoder.kwargs", '{"img_size": 32}'])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("timm:test_vit  input 3×32×32  weights ")
    rows = {line.split()[0]: line.split()[1:] for line in out[2:]}
    assert rows["blocks_0"] == ["blocks.0", "64×2×2", "256"] and rows["logits"] == ["head", "1000", "1000"]


def test_layers_command_without_cached_weights_prints_the_table_for_random_ones(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as hc

    from upconv.cli.main import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    main(["layers", "timm:resnet18", "--encoder.kwargs", '{"image_size": 64}'])
    out = capsys.readouterr().out.splitlines()
    assert (
        "weights random (pretrained weights not loaded: timm's pretrained weights for resnet18 are not in "
        "the local cache" in out[0]
    )
    assert [line.split()[0] for line in out[2:]] == ["act1", "layer1", "layer2", "layer3", "layer4", "logits"]


def _decoders(spec):
    """Tiny decoders for a middle stage and the logits of a timm encoder."""
    from upconv.training.module import InversionModule

    name, kwargs = spec
    layers = ["layer2", "logits"] if spec is CNN else ["blocks_1", "logits"]
    return InversionModule(
        encoder={"name": name, "kwargs": kwargs, "pretrained": False}, layers=layers, width=8, fc_width=32, max_width=32
    ), layers


def _save(module, path):
    state = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(state)  # what Lightning calls: records the encoder's identity and the layers
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("spec", [CNN, VIT], ids=["cnn", "vit"])
def test_one_decoder_training_step_and_checkpoint_roundtrip(spec, tmp_path):
    from upconv.nets.checkpoints import load_decoders

    m, layers = _decoders(spec)
    before = {k: v.clone() for k, v in m.decoders.state_dict().items()}
    enc_before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    opt = torch.optim.Adam(m.decoders.parameters(), lr=1e-3)
    x = torch.rand(4, 3, 32, 32)
    losses, _ = m._losses(x)
    assert set(losses) == set(layers) and all(torch.isfinite(v) for v in losses.values())
    torch.stack(list(losses.values())).sum().backward()
    opt.step()
    changed = {k for k, v in m.decoders.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith(layers[0]) for k in changed) and any(k.startswith("logits") for k in changed)
    assert all(torch.equal(v, enc_before[k]) for k, v in m.encoder.state_dict().items())
    dec = load_decoders(_save(m, tmp_path / "d.ckpt"))  # rebuilds the timm encoder from its recorded spec
    assert dec.encoder.weights_hash == m.encoder.weights_hash
    m.decoders.eval()
    for name in layers:
        with torch.no_grad():
            f = m.encoder(x, [name])[name]
            torch.testing.assert_close(dec.decode(f, name), m.decoders[name](f).clamp(0, 1))


@pytest.mark.parametrize("spec", [CNN, VIT], ids=["cnn", "vit"])
def test_depth_evaluation_runs_on_timm_encoders(spec, tmp_path):
    from upconv.data.source import ImageSource
    from upconv.evaluation.config import EvalConfig
    from upconv.evaluation.run import evaluate
    from upconv.nets.checkpoints import load_decoders
    from upconv.training.datamodule import ImageData

    m, layers = _decoders(spec)
    ckpt = _save(m, tmp_path / "d.ckpt")
    data = ImageData(images=ImageSource(source="embedded", embedded_per_class=6, seed=0), batch_size=16)
    data.setup()
    res = evaluate(EvalConfig([ckpt], out=str(tmp_path / "run"), n_boot=20, lpips=False, grid_images=2), data=data)
    assert [(r["method"], r["layer"]) for r in res.rows] == [("upconvnet", n) for n in layers]
    assert spec[0] in (tmp_path / "run" / "report.md").read_text()
    x = torch.cat([b for b, _ in data.images("val")])
    dec = load_decoders(ckpt)
    for row, layer in zip(res.rows, layers):  # the table's number is the one computed directly
        assert row["mse"] == pytest.approx((dec(x, layer) - x).pow(2).mean().item(), rel=1e-5)

"""End-to-end evaluation: the report folder, its consistency, determinism, methods side by side, bad input."""

import csv
import json
import os
import re

import pytest
import torch
import yaml

from upconv import report
from upconv.checkpoints import load_decoders
from upconv.data import ImageData
from upconv.evaluate import METRICS, build_method, evaluate

FILES = {"report.md", "metrics.csv", "metrics.json", "depth.png", "grid.png"}
LAYERS = ["conv1", "pool2", "fc6"]


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """Untrained tiny decoders saved through the module's own checkpoint hook (what Lightning calls)."""
    from upconv.module import InversionModule

    torch.manual_seed(0)
    model = InversionModule(encoder="alexnet_cifar", encoder_kwargs={"width": 0.25}, layers=LAYERS, width=8,
                            fc_width=64)
    state = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(state)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="session")
def data():
    d = ImageData(source="embedded", embedded_per_class=12, batch_size=32, seed=0)  # 9 val images
    d.setup()
    return d


def _no_partials(parent):
    return [p for p in os.listdir(parent) if ".partial-" in p or ".old-" in p] == []


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


class Oracle:
    """Returns the originals: every figure is known exactly."""

    name = "oracle"

    def __call__(self, images, layer):
        return images.clone()


def test_report_folder_is_complete_and_csv_matches_table(ckpt, data, tmp_path):
    out = tmp_path / "run"
    res = evaluate(ckpt, out=str(out), data=data, n_boot=100, seed=0, grid_images=4)
    assert set(os.listdir(out)) == FILES and _no_partials(tmp_path)
    rows = _csv_rows(out / "metrics.csv")
    assert [(r["method"], r["layer"]) for r in rows] == [("upconvnet", L) for L in LAYERS]  # network order
    assert json.loads((out / "metrics.json").read_text())["rows"] == res.rows
    table = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    shown = [k for k in METRICS if rows[0][k] != ""]
    assert header == ["layer", "n"] + [report.LABELS[k] for k in shown]
    for line, row in zip(table[1:], rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["layer"] and int(cells[1]) == int(row["n"]) == 9
        for k, text in zip(shown, cells[2:]):
            mean, lo, hi = map(float, re.match(r"(\S+) \[(\S+), (\S+)\]", text).groups())
            tol = 0.006 if k == "psnr" else 6e-5  # table rounds to 2 / 4 decimals
            assert mean == pytest.approx(float(row[k]), abs=tol)
            assert (lo, hi) == (pytest.approx(float(row[k + "_lo"]), abs=tol), pytest.approx(float(row[k + "_hi"]), abs=tol))
            assert float(row[k + "_lo"]) <= float(row[k]) <= float(row[k + "_hi"])
    md = (out / "report.md").read_text()
    assert "![metrics against depth](depth.png)" in md and "![originals and reconstructions](grid.png)" in md
    assert "‖x̂_i − x_i‖₂ / d̄" in md and "100 dB" in md
    if rows[0]["lpips"] == "":  # no cached AlexNet here: the skip is stated in one line
        assert sum("LPIPS skipped: place alexnet-owt-7be5be79.pth" in line for line in md.splitlines()) == 1


def test_figures_agree_with_metrics_computed_directly(ckpt, data, tmp_path):
    res = evaluate(ckpt, data=data, layers=["pool2"], n_boot=10, lpips=False)
    dec = load_decoders(ckpt)
    x = torch.cat([b for b, _ in data.images("val")])  # (9, 3, 32, 32)
    xh = dec(x, "pool2")
    row = res.rows[0]
    assert row["mse"] == pytest.approx((xh - x).pow(2).mean().item(), rel=1e-5)
    feats = dec.encoder(x, ["pool2"])["pool2"]
    refeats = dec.encoder(xh, ["pool2"])["pool2"]
    ratio = (refeats - feats).flatten(1).norm(dim=1) / feats.flatten(1).norm(dim=1)
    assert row["feature_error"] == pytest.approx(ratio.mean().item(), rel=1e-5)
    d = torch.cdist(x.flatten(1).double(), x.flatten(1).double())  # (9, 9)
    d_bar = d.sum() / (9 * 8)
    db = ((xh - x).flatten(1).double().norm(dim=1) / d_bar).mean()
    assert row["db_error"] == pytest.approx(db.item(), rel=1e-6)


def test_same_seed_gives_byte_identical_csv(ckpt, data, tmp_path):
    a = evaluate(ckpt, out=str(tmp_path / "a"), data=data, n_boot=50, seed=1).out
    b = evaluate(ckpt, out=str(tmp_path / "b"), data=data, n_boot=50, seed=1).out
    read = lambda p: open(os.path.join(p, "metrics.csv"), "rb").read()  # noqa: E731
    assert read(a) == read(b)
    other = evaluate(ckpt, data=data, n_boot=50, seed=2, lpips=False).rows  # the seed drives the bootstrap
    assert [r["mse_lo"] for r in other] != [float(r["mse_lo"]) for r in _csv_rows(os.path.join(a, "metrics.csv"))]


def test_methods_side_by_side_with_an_exact_oracle(ckpt, data, tmp_path):
    res = evaluate(ckpt, out=str(tmp_path / "run"), data=data, methods=["upconvnet", Oracle()], n_boot=20)
    oracle = [r for r in res.rows if r["method"] == "oracle"]
    assert [r["layer"] for r in oracle] == LAYERS
    for r in oracle:
        assert r["mse"] == 0 and r["psnr"] == 100.0 and r["db_error"] == 0 and r["feature_error"] == 0
        assert r["ssim"] == pytest.approx(1, abs=1e-5) and r["class_agreement"] == 1
        assert r["recon_accuracy"] == pytest.approx(res.settings["encoder_accuracy_on_originals"][0])
    header = (tmp_path / "run" / "report.md").read_text().split("## Results")[1]
    assert "PSNR dB ↑ (upconvnet) | PSNR dB ↑ (oracle)" in header
    assert len(_csv_rows(tmp_path / "run" / "metrics.csv")) == 2 * len(LAYERS)


@pytest.mark.parametrize("case, match", [
    ("other_encoder", "trained for encoder"),
    ("missing_layer", "cannot reconstruct from layer"),
    ("image_size", r"expects images of shape \(B, 3, 32, 32\)"),
    ("empty_split", "no images found"),
    ("unknown_method", "unknown method 'nope'; choose one of: .*upconvnet"),
])
def test_bad_input_fails_clearly_and_writes_nothing(ckpt, tmp_path, case, match):
    kwargs = dict(out=str(tmp_path / "run"), data="embedded", embedded_per_class=2, n_boot=5)
    if case == "other_encoder":
        kwargs["encoder"] = "alexnet_cifar"  # full width: other weights than the decoders were trained on
    elif case == "missing_layer":
        kwargs["layers"] = ["conv3"]
    elif case == "image_size":
        kwargs["data"] = ImageData(source="embedded", embedded_per_class=2, image_size=24)
    elif case == "empty_split":
        for split in ("train", "test"):
            (tmp_path / "imgs" / split).mkdir(parents=True)
        kwargs.update(data="folder", root=str(tmp_path / "imgs"))
    else:
        kwargs["methods"] = ["upconvnet", "nope"]
    with pytest.raises(ValueError, match=match):
        evaluate(ckpt, **kwargs)
    assert not (tmp_path / "run").exists() and _no_partials(tmp_path)


def test_failure_while_writing_leaves_no_folder(ckpt, data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_grid_plot", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate(ckpt, out=str(tmp_path / "run"), data=data, layers=["fc6"], n_boot=5)
    assert os.listdir(tmp_path) == []


def test_existing_report_is_kept_unless_overwrite(ckpt, data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="already exists"):
        evaluate(ckpt, out=str(out), data=data, layers=["fc6"], n_boot=5)
    assert os.listdir(out) == ["keep.txt"]
    evaluate(ckpt, out=str(out), data=data, layers=["fc6"], n_boot=5, overwrite=True)
    assert set(os.listdir(out)) == FILES and _no_partials(tmp_path)


def test_cli_runs_from_a_config_and_reports_errors(ckpt, tmp_path, capsys):
    from upconv.cli import main

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"checkpoints": [ckpt], "out": str(tmp_path / "run"), "layers": ["fc6", "conv1"],
                                   "embedded_per_class": 4, "n_boot": 10, "device": "cpu"}))
    main(["evaluate", "--config", str(cfg)])
    assert capsys.readouterr().out.strip() == str(tmp_path / "run" / "report.md")
    assert [r["layer"] for r in _csv_rows(tmp_path / "run" / "metrics.csv")] == ["conv1", "fc6"]
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "run2"), "--methods", "[nope]"])
    assert e.value.code == 2 and "upconv: error: unknown method 'nope'" in capsys.readouterr().err


def test_benchmark_config_covers_every_alexnet_cifar_layer_in_order():
    import inspect

    from upconv.encoders import build_encoder
    from upconv.evaluate import evaluate_cli

    path = os.path.join(os.path.dirname(__file__), "..", "configs", "eval", "alexnet_cifar_depth.yaml")
    cfg = yaml.safe_load(open(path))
    assert set(cfg) <= set(inspect.signature(evaluate_cli).parameters)
    assert cfg["layers"] == build_encoder("alexnet_cifar", kwargs={"width": 0.25}).layers
    assert len(cfg["layers"]) == 11 and cfg["data"] == "folder" and cfg["split"] == "val"


def test_deconvnet_is_found_through_the_registry_when_installed():
    pytest.importorskip("upconv.deconvnet")
    from upconv.encoders import build_encoder

    method = build_method("deconvnet", build_encoder("alexnet_cifar", kwargs={"width": 0.25}))
    assert method.name == "deconvnet"

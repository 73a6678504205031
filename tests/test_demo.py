import csv
import glob
import os

import pytest

import upconv.training.cli
from upconv.cli.demo import run
from upconv.nets.checkpoints import load_decoders


def test_quick_demo_trains_both_stages_and_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("UPCONV_WANDB", "0")
    real_main = upconv.training.cli.main

    def main_after_a_killed_run(args):
        # A decoders.ckpt left by an earlier run is there when the decoder stage starts.
        if any(a.endswith("demo.yaml") for a in args):
            (tmp_path / "ck" / "decoders.ckpt").write_bytes(b"stale")
        return real_main(args)

    monkeypatch.setattr(upconv.training.cli, "main", main_after_a_killed_run)
    report = run(out=str(tmp_path / "runs" / "demo"), checkpoints=str(tmp_path / "ck"), quick=True)
    folder = os.path.dirname(report)
    assert sorted(os.listdir(folder)) == ["depth.png", "grid.png", "metrics.csv", "metrics.json", "report.md"]
    assert {"encoder.pt", "decoders.ckpt"} <= set(os.listdir(tmp_path / "ck"))
    assert not [f for f in os.listdir(tmp_path / "ck") if "-v" in f]  # overwritten, never versioned
    assert load_decoders(tmp_path / "ck" / "decoders.ckpt").layers  # this run's decoders, not the stale file
    rows = list(csv.DictReader(open(os.path.join(folder, "metrics.csv"))))
    layers = ["conv1", "pool1", "conv2", "pool2", "conv5", "fc6", "fc8"]
    assert [r["layer"] for r in rows if r["method"] == "upconvnet"] == layers
    assert {r["method"]: r["reads_target"] for r in rows} == {
        "upconvnet": "False",
        "deconvnet": "True",  # both variants replay the true image's switches
        "deconvnet+minmax": "True",
        "floor: mean image": "False",
        "floor: class mean": "False",
        **{f"floor: deconvnet, {k}": "True" for k in ("constant signal", "shuffled signal", "fitted constant")},
        **{f"floor: deconvnet+minmax, {k}": "True" for k in ("constant signal", "shuffled signal")},
    }
    assert [r["layer"] for r in rows if r["method"] == "floor: deconvnet, constant signal"] == layers
    assert os.path.isdir(tmp_path / "runs" / "demo_encoder") and os.path.isdir(tmp_path / "runs" / "demo")


def test_each_demo_stage_is_its_own_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("UPCONV_WANDB", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("UPCONV_PROGRESS", "0")
    run(out=str(tmp_path / "runs" / "demo"), checkpoints=str(tmp_path / "ck"), quick=True)
    runs = glob.glob(str(tmp_path / "runs" / "wandb" / "offline-run-*"))
    assert len(runs) == 2  # the encoder's and the decoders'

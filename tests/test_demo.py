import csv
import os

from upconv.demo import run


def test_quick_demo_trains_both_stages_and_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("UPCONV_WANDB", "0")
    report = run(out=str(tmp_path / "runs" / "demo"), checkpoints=str(tmp_path / "ck"), quick=True)
    folder = os.path.dirname(report)
    assert sorted(os.listdir(folder)) == ["depth.png", "grid.png", "metrics.csv", "metrics.json", "report.md"]
    assert {"encoder.pt", "decoders.ckpt"} <= set(os.listdir(tmp_path / "ck"))
    rows = list(csv.DictReader(open(os.path.join(folder, "metrics.csv"))))
    layers = ["conv1", "pool1", "conv2", "pool2", "conv5", "fc6", "fc8"]
    assert [r["layer"] for r in rows if r["method"] == "upconvnet"] == layers
    assert {r["method"] for r in rows} == {"upconvnet", "deconvnet"}
    assert os.path.isdir(tmp_path / "runs" / "demo_encoder") and os.path.isdir(tmp_path / "runs" / "demo")

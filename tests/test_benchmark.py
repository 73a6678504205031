"""``upconv benchmark``: the linear probe, relative depth, and the command end to end — its outputs, resuming
after a kill, shards, refused changes and one-line errors before any training."""

from __future__ import annotations

import csv
import glob
import json
import os

import pytest
import torch
from torch import nn

import upconv.benchmark.run as bench_run
from upconv.benchmark.config import BenchmarkConfig
from upconv.benchmark.depth import forward_flops, relative_depths, spread
from upconv.benchmark.probe import linear_probe, pool_size, pooled
from upconv.benchmark.run import run_benchmark
from upconv.cli.main import main
from upconv.nets.encoder import Encoder
from upconv.nets.zoo import build_encoder


# ---------------------------------------------------------------------- the probe
def test_the_probe_separates_linearly_separable_classes():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 32, generator=g) * 4  # (K, D)
    y = torch.arange(400) % 4
    x = centres[y] + torch.randn(400, 32, generator=g)  # well separated clusters
    r = linear_probe((x[:200], y[:200]), (x[200:], y[200:]), n_boot=200)
    assert r.accuracy[0] >= 0.99 and not r.at_chance
    assert r.chance == pytest.approx(0.25)


def test_label_independent_features_land_at_chance():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1200, 16, generator=g), torch.randint(0, 4, (1200,), generator=g)
    r = linear_probe((x[:600], y[:600]), (x[600:], y[600:]), n_boot=500)
    assert r.at_chance  # the interval reaches the best constant answer
    assert r.accuracy[1] <= r.chance + 0.02 and r.accuracy[0] < 0.35


def test_large_maps_are_pooled_to_the_largest_grid_within_the_budget():
    assert pool_size((16, 8, 8), 256) == 4  # 16·4² = 256
    assert pool_size((16, 8, 8), 2000) is None  # 1024 numbers fit as they are
    assert pool_size((512, 4, 4), 256) == 1  # even 1×1 exceeds: a global average
    f = torch.arange(2 * 4 * 4 * 4, dtype=torch.float).view(2, 4, 4, 4)
    p = pooled(f, 16)  # (2, 4·2·2)
    assert p.shape == (2, 16)
    assert p[0, 0] == f[0, 0, :2, :2].mean()


# ---------------------------------------------------------------------- relative depth
class Toy(nn.Module):
    """conv 3→4 (1×1) on 4×4 images: 3·4·16 = 192 multiply-adds; linear 64→2: 128."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.act = nn.ReLU()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False))

    def forward(self, x):
        return self.fc(self.act(self.conv(x)))


def test_relative_depth_is_the_share_of_multiply_adds_on_a_hand_computable_net():
    enc = Encoder(Toy(), name="toy", image_size=(4, 4), mean=(0, 0, 0), std=(1, 1, 1))
    assert relative_depths(enc) == pytest.approx({"conv": 192 / 320, "act": 192 / 320, "fc": 1.0})
    assert [forward_flops(enc, n) for n in enc.layers] == [2 * 192, 2 * 192, 2 * 320]  # FLOPs = 2 × MACs


def test_one_hooked_pass_counts_what_passes_truncated_at_each_layer_count():
    """Two paths that must agree: the running count at each module's output in one forward pass, and a
    separate pass of the feature extractor cut at that layer."""
    enc = build_encoder("alexnet_cifar", pretrained=False, kwargs={"width": 0.25})
    total = forward_flops(enc, enc.layers[-1])
    assert relative_depths(enc) == {n: forward_flops(enc, n) / total for n in enc.layers}


@pytest.mark.parametrize("name", ["alexnet_cifar", "he2019_cifar", "resnet18_cifar"])
def test_relative_depth_never_decreases_along_the_layer_table(name):
    enc = build_encoder(name, pretrained=False)
    d = [relative_depths(enc)[n] for n in enc.layers]
    assert all(0 < a <= b for a, b in zip(d, d[1:])) and d[-1] == 1.0
    assert d[0] < 0.5  # the first layer is shallow by any measure


def test_layers_spread_over_depth_pick_the_nearest_to_even_targets():
    depths = {"a": 0.1, "b": 0.15, "c": 0.5, "d": 0.55, "e": 0.9, "f": 1.0}
    assert spread(depths, 3) == ["a", "d", "f"]  # targets 0.1, 0.55, 1.0
    assert spread(depths, 10) == list(depths)


# ---------------------------------------------------------------------- the command
def tiny(out, **over) -> BenchmarkConfig:
    """Two small networks, two layers each, on the embedded photographs."""
    cfg = dict(
        encoders=[
            {"encoder": {"name": "alexnet_cifar", "kwargs": {"width": 0.125}}, "train_epochs": 1, "layers": {"n": 2}},
            {
                "encoder": {"name": "alexnet_cifar", "kwargs": {"width": 0.25}},
                "label": "wide",
                "train_epochs": 1,
                "layers": ["pool2", "fc6"],
            },
        ],
        embedded_per_class=4,
        decoder_epochs=1,
        decoder_batch=16,
        decoder={"width": 4, "fc_width": 16, "max_width": 8},
        probe_dims=256,
        n_boot=50,
        grid_images=3,
        workers=0,
        out=str(out),
    )
    return BenchmarkConfig(**{**cfg, **over})


def table(out) -> list[dict]:
    with open(os.path.join(out, "results.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """One uninterrupted run: the reference the resumed and sharded runs must reproduce."""
    out = tmp_path_factory.mktemp("whole") / "bench"
    result = run_benchmark(tiny(out))
    return out, result


def test_a_two_model_run_writes_the_table_and_figures(whole):
    out, result = whole
    assert sorted(os.listdir(out)) == sorted(
        ["depth.png", "grid.png", "report.md", "results.csv", "results.json", "encoders", "units"]
    )
    rows = table(out)
    for model, layers in (("alexnet_cifar", ["conv1", "fc8"]), ("wide", ["pool2", "fc6"])):
        mine = [r for r in rows if r["model"] == model]
        for layer in layers:
            kinds = {(r["method"], r["metric"]) for r in mine if r["layer"] == layer}
            assert {("upconvnet", "psnr"), ("upconvnet", "ssim"), ("linear probe", "accuracy")} <= kinds
            assert ("deconvnet", "psnr") in kinds  # both graphs can be projected
        depths = [float(r["relative_depth"]) for r in mine if r["metric"] == "psnr" and r["method"] == "upconvnet"]
        assert depths == sorted(depths) and depths[-1] > depths[0]
    first = next(r for r in rows if r["model"] == "alexnet_cifar" and r["layer"] == "conv1")
    assert int(first["features"]) == 8 * 32 * 32 and first["resolution"] == "32×32"  # width 0.125: 8 channels
    assert float(first["compression"]) == pytest.approx(8 * 32 * 32 / (3 * 32 * 32))
    data = json.load(open(os.path.join(out, "results.json")))
    assert len(data["rows"]) == len(rows) and data["missing"] == []
    assert "## wide" in open(os.path.join(out, "report.md")).read()
    assert len(result.ran) == 2 and result.reused == []


def _key(rows):
    drop = ("n",)
    return sorted(tuple((k, v) for k, v in r.items() if k not in drop) for r in rows)


def test_a_killed_run_resumes_reusing_its_finished_unit(tmp_path, whole, monkeypatch):
    out = tmp_path / "bench"
    calls = []
    real = bench_run.run_unit

    def dies_on_the_second(plan, unit, *a, **k):
        calls.append(unit.key)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while its second unit trains
        return real(plan, unit, *a, **k)

    monkeypatch.setattr(bench_run, "run_unit", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(tiny(out))
    first = out / "units" / "alexnet_cifar" / "conv1-fc8"
    stamps = {p: os.stat(first / p).st_mtime_ns for p in os.listdir(first)}
    assert not (out / "units" / "wide").exists() or os.listdir(out / "units" / "wide") == []
    calls.clear()
    result = run_benchmark(tiny(out))
    assert calls == ["units/wide/pool2-fc6"]  # the finished unit is not retrained
    assert result.reused == ["units/alexnet_cifar/conv1-fc8"]
    assert {p: os.stat(first / p).st_mtime_ns for p in os.listdir(first)} == stamps
    assert _key(table(out)) == _key(table(whole[0]))


def test_shards_and_the_report_step_give_the_unsharded_table(tmp_path, whole):
    out = tmp_path / "bench"
    a = run_benchmark(tiny(out, shard="0/2"))
    assert a.ran == ["units/alexnet_cifar/conv1-fc8"] and a.missing == ["units/wide/pool2-fc6"]
    assert "not finished yet" in open(out / "report.md").read()
    b = run_benchmark(tiny(out, shard="1/2"))
    assert b.ran == ["units/wide/pool2-fc6"]
    r = run_benchmark(tiny(out, report_only=True))
    assert r.ran == [] and r.missing == []
    assert _key(table(out)) == _key(table(whole[0]))


def test_a_changed_unit_is_refused_before_training_and_redone_under_overwrite(tmp_path, whole, monkeypatch, capsys):
    out = tmp_path / "bench"
    run_benchmark(tiny(out, encoders=tiny(out).encoders[:1]))
    changed = tiny(out, encoders=tiny(out).encoders[:1], decoder_epochs=2)
    monkeypatch.setattr(bench_run, "run_unit", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ValueError, match=r"changed: decoder_epochs\).*--overwrite true"):
        run_benchmark(changed)
    report = run_benchmark(tiny(out, encoders=tiny(out).encoders[:1], decoder_epochs=2, report_only=True))
    assert report.rows == []  # a unit of other settings is never reported as this config's
    assert "made with other settings (1): units/alexnet_cifar/conv1-fc8" in open(out / "report.md").read()
    monkeypatch.undo()
    # Redone under overwrite, now also with optimisation inversion on two test images.
    mv = dict(methods=["upconvnet", "mahendran_vedaldi"], inversion_images=2, inversion_steps=3)
    redo = run_benchmark(tiny(out, encoders=tiny(out).encoders[:1], decoder_epochs=2, overwrite=True, **mv))
    assert redo.ran == ["units/alexnet_cifar/conv1-fc8"]
    rec = json.load(open(out / "units" / "alexnet_cifar" / "conv1-fc8" / "unit.json"))
    assert rec["settings"]["decoder_epochs"] == 2
    inverted = [r for r in redo.rows if r["method"] == "mahendran_vedaldi" and r["metric"] == "psnr"]
    assert [(r["layer"], r["n"]) for r in inverted] == [("conv1", 2), ("fc8", 2)]


@pytest.mark.parametrize(
    "encoders, message",
    [
        ([{"encoder": {"name": "nosuchnet"}, "train_epochs": 1}], "cannot train 'nosuchnet'|unknown encoder"),
        ([{"encoder": {"name": "alexnet_cifar"}, "train_epochs": 1, "layers": ["conv9"]}], "conv9"),
        ([{"encoder": {"name": "alexnet_cifar"}}], "no pretrained weights"),
        ([{"encoder": {"name": "timm:resnet18", "kwargs": {"no_such_arg": 1}}, "train_epochs": 1}], "no_such_arg"),
    ],
)
def test_bad_input_is_one_line_before_any_training(tmp_path, capsys, encoders, message):
    cfg = tmp_path / "b.yaml"
    cfg.write_text(json.dumps({"encoders": encoders, "out": str(tmp_path / "out"), "embedded_per_class": 2}))
    with pytest.raises(SystemExit) as e:
        main(["benchmark", "--config", str(cfg)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("upconv: error:")
    assert __import__("re").search(message, err)
    assert not (tmp_path / "out").exists()


def test_a_timm_model_without_timm_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_timm(name, *a, **k):
        if name == "timm" or name.startswith("timm."):
            raise ImportError("No module named 'timm'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    cfg = tmp_path / "b.yaml"
    cfg.write_text(json.dumps({"encoders": [{"encoder": {"name": "timm:vit_tiny_patch16_224"}, "train_epochs": 1}]}))
    with pytest.raises(SystemExit):
        main(["benchmark", "--config", str(cfg), "--out", str(tmp_path / "out")])
    assert "pip install timm" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- shipped configs
CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "benchmark", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_shipped_benchmark_config_parses(path):
    from jsonargparse import CLI

    config = CLI(BenchmarkConfig, args=["--config", path])
    assert config.encoders and all(e.encoder.name for e in config.encoders)
    assert len({e.name for e in config.encoders}) == len(config.encoders)


@pytest.mark.slow
def test_the_smoke_config_runs_through_the_command(tmp_path, capsys):
    smoke = next(p for p in CONFIGS if p.endswith("smoke.yaml"))
    main(["benchmark", "--config", smoke, "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "units: 2 run, 0 reused" in out
    rows = table(tmp_path / "b")
    assert {r["model"] for r in rows} == {"alexnet_cifar", "resnet18_cifar"}
    assert {r["layer"] for r in rows if r["model"] == "resnet18_cifar"} == {"layer1", "layer3"}
    main(["benchmark", "--config", smoke, "--out", str(tmp_path / "b")])
    assert "units: 0 run, 2 reused" in capsys.readouterr().out


@pytest.mark.slow
def test_a_unit_trains_data_parallel_and_rank_zero_alone_writes_it(tmp_path):
    """Two gloo ranks launched by Lightning's ddp strategy train the encoder and the decoders together; the
    unit folders are complete (the encoder's weights included) and written once; the report is rank 0's."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    out = tmp_path / "bench"
    trainer = '{"accelerator": "cpu", "devices": 2, "strategy": "ddp"}'
    cmd = [sys.executable, "-m", "upconv.cli.main", "benchmark", "--config", os.path.join(here, "ddp_benchmark.yaml")]
    env = {**os.environ, "UPCONV_PROGRESS": "0", "PYTHONPATH": os.path.dirname(here)}
    done = subprocess.run(
        [*cmd, "--out", str(out), "--trainer", trainer],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stderr  # Lightning started the second rank
    assert done.stdout.count("units: 1 run, 0 reused") == 1  # rank 0 reports; rank 1 prints nothing
    assert (out / "encoders" / "alexnet_cifar" / "encoder.pt").is_file()
    rows = table(out)
    assert {r["layer"] for r in rows} == {"conv1", "fc6"}
    assert [p for p in os.listdir(out / "units" / "alexnet_cifar") if p.startswith(".")] == []  # nothing half-written


def test_a_time_budget_sizes_the_epochs_from_a_timed_probe(monkeypatch):
    from upconv.data.source import ImageSource
    from upconv.nets.spec import EncoderSpec
    from upconv.training import runs
    from upconv.training.datamodule import ImageData
    from upconv.training.module import InversionModule

    data = ImageData(ImageSource(embedded_per_class=4, num_workers=0), batch_size=4, augment=False)
    data.setup()
    spec = EncoderSpec("alexnet_cifar", kwargs={"width": 0.125}, pretrained=False)
    make = lambda: InversionModule(encoder=spec, layers=["conv1"], width=4, log_images=0)  # noqa: E731
    steps = data.split_size("train") // 4
    assert runs.sized_epochs(runs.RunOptions(), 7, steps, make, data) == (7, None)  # no budget: the epochs given
    timed = []
    monkeypatch.setattr(runs.StepTimer, "on_train_batch_end", lambda self, *a: timed.append(1) or self.times.append(0))
    monkeypatch.setattr(runs.StepTimer, "per_step", property(lambda self: 0.01))  # a machine-independent cost
    assert runs.sized_epochs(runs.RunOptions(seconds=1e-6), 7, steps, make, data) == (1, 0.01)  # at least one
    assert len(timed) == 25  # the probe ran its 25 steps
    budget = 0.01 * steps * 3.5 * 1.05  # 3.5 epochs of the measured cost, 5 % kept for validation and logging
    assert runs.sized_epochs(runs.RunOptions(seconds=budget), 7, steps, make, data) == (3, 0.01)


def test_other_images_under_the_same_options_are_a_changed_setting(tmp_path, image_folder):
    for split in ("train", "test"):
        image_folder(tmp_path / "data" / split, per_class=4, size=(32, 32), classes=("a", "b"), seed=len(split))
    cfg = lambda: tiny(  # noqa: E731
        tmp_path / "bench",
        encoders=[
            {"encoder": {"name": "alexnet_cifar", "kwargs": {"width": 0.125}}, "train_epochs": 1, "layers": ["conv1"]}
        ],
        data="folder",
        root=str(tmp_path / "data"),
        methods=["upconvnet"],
        probe=False,
    )
    run_benchmark(cfg())
    image_folder(tmp_path / "data" / "test", per_class=4, size=(32, 32), classes=("a", "b"), seed=99)  # new pixels
    with pytest.raises(ValueError, match=r"changed: data\.images"):
        run_benchmark(cfg())

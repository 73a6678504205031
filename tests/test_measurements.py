"""docs/measurements.md's script-written tables are what their scripts render from the data kept beside them.

Every marked block (``<!-- begin: NAME -->`` … ``<!-- end: NAME -->``, written by ``benchmarks/publish.py``)
holds a table and, in a ``<!-- data: … -->`` line, the figures it was rendered from. Each block is re-rendered
here by its script's ``render``: a number edited by hand, or a renderer changed without republishing, fails.
Every script that takes ``--publish`` is checked on a small hand-made result.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
PAGE = REPO / "docs" / "measurements.md"
sys.path.insert(0, str(BENCHMARKS))
import publish  # noqa: E402

BLOCKS = publish.read_blocks(PAGE.read_text())


def render(script: str, figures: dict) -> str:
    return importlib.import_module(script).render(figures)


# ---------------------------------------------------------------- the page


def test_the_page_has_script_written_blocks_and_each_name_once():
    names = [b.name for b in BLOCKS]
    assert "reproduce-medium" in names
    assert len(names) == len(set(names))
    # a begin marker without its end (or a typo in either) would silently drop a block from the checks
    assert len(re.findall(r"^<!-- begin: ", PAGE.read_text(), re.M)) == len(BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_every_block_is_its_scripts_rendering_of_its_data(block):
    data = block.data
    assert set(data) == {"script", "command", "date", "device", "load", "figures"}, block.name
    assert (BENCHMARKS / f"{data['script']}.py").exists(), f"{block.name}: no benchmarks/{data['script']}.py"
    assert data["command"].startswith(f"python benchmarks/{data['script']}.py"), data["command"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", data["date"])
    assert render(data["script"], data["figures"]) == block.table, (
        f"{block.name}: the table differs from what benchmarks/{data['script']}.py renders from its data; "
        "republish it with the script's --publish (a table is never edited by hand)"
    )


def test_a_hand_edited_number_is_caught():
    text = PAGE.read_text()
    (block,) = [b for b in BLOCKS if b.name == "reproduce-medium"]
    assert "| conv1 | 25.93 [25.76, 26.09] |" in block.table
    edited = text.replace("| conv1 | 25.93 [25.76, 26.09] |", "| conv1 | 25.98 [25.76, 26.09] |", 1)
    (changed,) = [b for b in publish.read_blocks(edited) if b.name == "reproduce-medium"]
    assert render("reproduce", changed.data["figures"]) != changed.table


# ---------------------------------------------------------------- publishing

PAGE_TEXT = "# Page\n\nText before.\n<!-- begin: t -->\nold table\n<!-- end: t -->\n\nText after.\n"


def _data(**figures) -> dict:
    return publish.record("zoo_cost", figures, "CPU, 2 threads", None, command="python benchmarks/zoo_cost.py")


def test_publish_replaces_only_its_block_and_keeps_the_data(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(PAGE_TEXT)
    data = _data(rows=[], note="a --> inside a value")  # '>' is escaped: no value can close the comment
    publish.publish(page, "t", "| a |\n|---|\n| 1 |\n", data)
    text = page.read_text()
    assert text.startswith("# Page\n\nText before.\n<!-- begin: t -->\n<!-- data: {")
    assert text.endswith("| a |\n|---|\n| 1 |\n\n<!-- end: t -->\n\nText after.\n")
    (block,) = publish.read_blocks(text)
    assert (block.name, block.table, block.data) == ("t", "| a |\n|---|\n| 1 |", data)
    publish.publish(page, "t", "| a |\n|---|\n| 1 |\n", data)
    assert page.read_text() == text  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.md"]  # the temporary file was renamed over it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# Page\n", r"has no line '<!-- begin: t -->'; add '<!-- begin: t -->' and '<!-- end: t -->'"),
        ("<!-- begin: t -->\n", r"has no line '<!-- end: t -->'; add"),
        ("<!-- begin: t -->\n<!-- end: t -->\n<!-- end: t -->\n", r"has 2 lines '<!-- end: t -->'; keep one"),
        ("<!-- end: t -->\n<!-- begin: t -->\n", r"'<!-- end: t -->' comes before '<!-- begin: t -->'"),
    ],
)
def test_a_missing_or_repeated_marker_is_one_line_and_the_page_is_untouched(tmp_path, text, message):
    page = tmp_path / "p.md"
    page.write_text(text)
    with pytest.raises(SystemExit, match=message) as e:
        publish.publish(page, "t", "| a |", _data(rows=[]))
    assert "\n" not in str(e.value)
    assert page.read_text() == text


def smoke_results(tmp_path: Path) -> Path:
    """A finished smoke run's results.json, made by hand (what the table reads; no training)."""
    import reproduce

    row = {
        "layer": "conv1",
        "psnr": [20.931, 20.74, 21.11],
        "ssim": 0.8491,
        "eval_psnr": 20.931,
        "floor_psnr": [12.82, 12.62, 13.05],
        "health": "recovered",
        "recoveries": 1,
        "skipped_steps": 0,
        "events": ["loss spike at step 4"],
        "below_floor": False,
        "baseline_psnr": [15.48, 15.33, 15.64],
        "difference": [5.451, 5.24, 5.66],
    }
    log = {
        "preset_name": "smoke",
        "command": "python benchmarks/reproduce.py --preset smoke",
        "preset": reproduce.asdict(reproduce.PRESETS["smoke"]),
        "device": "CPU (x86_64, 2 threads)",
        "date": "2025-01-02",
        "load": 0.5,
        "train_images": 160,
        "test_images": 40,
        "decoders": {"epochs": 2, "seconds": 3.0, "images_per_s": 100.0},
        "baseline": {"epochs": 2, "seconds": 2.0, "images_per_s": 160.0},
        "total_seconds": 9.0,
        "rows": [row, {**row, "layer": "fc6", "below_floor": True, "events": [], "health": "ok"}],
    }
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps(log))
    return path


def test_reproduce_render_rebuilds_table_md_and_publishes_the_same_table(tmp_path, capsys):
    import reproduce

    results = smoke_results(tmp_path)
    page = tmp_path / "p.md"
    page.write_text(PAGE_TEXT.replace(": t -->", ": reproduce-smoke -->"))
    reproduce.main(["--render", str(results), "--publish", str(page)])
    table_md = (results.parent / "table.md").read_text()
    assert table_md == capsys.readouterr().out.removesuffix("\n")  # printed as written
    (block,) = publish.read_blocks(page.read_text())
    assert block.name == "reproduce-smoke" and block.table in table_md
    assert block.table.splitlines()[2:] == [
        "| conv1 | 20.93 [20.74, 21.11] | 0.849 | 15.48 [15.33, 15.64] | +5.45 [+5.24, +5.66] "
        "| 12.82 [12.62, 13.05] | recovered (loss spike at step 4) |",
        "| fc6 | 20.93 [20.74, 21.11] ⚠ at or below the floor | 0.849 | 15.48 [15.33, 15.64] "
        "| +5.45 [+5.24, +5.66] | 12.82 [12.62, 13.05] | ok |",
    ]
    assert {k: block.data[k] for k in ("script", "command", "date", "device", "load")} == {
        "script": "reproduce",
        "command": "python benchmarks/reproduce.py --preset smoke",
        "date": "2025-01-02",
        "device": "CPU (x86_64, 2 threads)",
        "load": 0.5,
    }
    assert "eval_psnr" not in block.data["figures"]["rows"][0]  # only what the table shows


def test_reproduce_checks_the_markers_before_it_runs_anything(tmp_path):
    import reproduce

    page = tmp_path / "p.md"
    page.write_text("# Page\n")
    with pytest.raises(SystemExit, match="add '<!-- begin: reproduce-smoke -->'"):
        reproduce.main(["--preset", "smoke", "--out", str(tmp_path / "run"), "--publish", str(page)])
    assert not (tmp_path / "run").exists()


def test_a_run_from_before_dates_were_recorded_is_published_with_its_command_rebuilt(tmp_path):
    import reproduce

    results = smoke_results(tmp_path)
    log = json.loads(results.read_text())
    for key in ("preset_name", "command", "date", "load"):
        del log[key]
    log["preset"]["layers"] = ["conv1", "fc6"]
    results.write_text(json.dumps(log))
    page = tmp_path / "p.md"
    page.write_text(PAGE_TEXT.replace(": t -->", ": reproduce-smoke -->"))
    reproduce.main(["--render", str(results), "--publish", str(page)])
    (block,) = publish.read_blocks(page.read_text())
    assert block.data["command"] == "python benchmarks/reproduce.py --preset smoke --set layers=conv1,fc6"
    assert block.data["load"] is None  # not recorded, so not invented
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", block.data["date"])  # the file's date


# ---------------------------------------------------------------- every publishing script

EXAMPLES = {  # script -> (figures, a line its table must hold); the lines are the page's own layout
    "clipping": (
        {
            "rows": [
                {
                    "setting": "guard, no clipping",
                    "layer": "fc8",
                    "max": 199000.0,
                    "last10": 0.18,
                    "held_out": 0.1843,
                    "status": "recovered",
                    "events": ["skipped steps@4", "loss spike@8"],
                }
            ]
        },
        "| guard, no clipping | fc8 | 1.99e+05 | 0.18 | 0.1843 | recovered (skipped steps@4, loss spike@8) |",
    ),
    "zoo_cost": (
        {
            "rows": [
                {
                    "encoder": "alexnet_cifar",
                    "input": "32×32",
                    "layers": 11,
                    "table_s": 0.076,
                    "decoders": ["conv4", "fc7"],
                    "batch": 8,
                    "step_s": 0.161,
                }
            ]
        },
        "| `alexnet_cifar` | 32×32 | 11 | 0.076 | 0.161 | conv4, fc7 |",
    ),
    "deconv_speed": (
        {
            "rows": [
                {"method": "`DeconvNet.project`, batched (one call)", "seconds": 3.56},
                {"method": "autograd, one forward, then a backward per channel", "seconds": 2.39},
            ]
        },
        "| autograd, one forward, then a backward per channel | 2.39 | 0.7 |",
    ),
    "layer_benchmark": (
        {
            "rows": [
                {
                    "model": "alexnet_cifar",
                    "layer": "conv1",
                    "relative_depth": 0.0218,
                    "features": 65536,
                    "resolution": "32×32",
                    "method": "upconvnet",
                    "metric": "psnr",
                    "ci": [12.5, 12.3, 12.7],
                    "verdict": "at or below the no-information floor (the mean training image)",
                    "reads": False,
                },
                {
                    "model": "alexnet_cifar",
                    "layer": "conv1",
                    "relative_depth": 0.0218,
                    "features": 65536,
                    "resolution": "32×32",
                    "method": "linear probe",
                    "metric": "accuracy",
                    "ci": [0.31, 0.27, 0.35],
                    "verdict": None,
                    "reads": False,
                },
            ],
            "models": {"alexnet_cifar": {"accuracy": [0.29, 0.25, 0.33], "seconds": {"encoder": 94.0}}},
        },
        "| alexnet_cifar | conv1 | 0.02 | 65536 (32×32) | 12.50 [12.30, 12.70] ⚠ ≤ floor | — | — "
        "| 0.310 [0.270, 0.350] |",
    ),
    "privacy_sweeps": (
        {
            "encoder": "he2019_cifar",
            "probes": 8,
            "n_eval": 200,
            "bounds": [
                {
                    "layer": "relu22",
                    "strength": 2.0,
                    "dfil": 18.69,
                    "dfil_lo": 16.39,
                    "dfil_hi": 20.72,
                    "mse_bound": 0.0858,
                    "psnr_bound": 11.48,
                    "psnr_bound_lo": 11.04,
                    "psnr_bound_hi": 11.84,
                    "best": "black_box_dist paper (adaptive)",
                    "best_psnr": 10.03,
                    "gap_db": 1.45,
                    "seconds": 26.4,
                    "n_images": 200,
                    "n_probes": 8,
                }
            ],
        },
        "| relu22 | 2 | 18.69 [16.39, 20.72] | 0.0858 | 11.48 [11.04, 11.84] | black_box_dist paper (adaptive) "
        "| 10.03 | +1.45 | 26.4 s, 200 images × 8 probes |",
    ),
    "privacy_he2019": (
        {
            "label": "t",
            "layers": ["relu22"],
            "attacks": ["white_box"],
            "rows": [{"attack": "white_box", "decoder": "paper", "layer": "relu22", "psnr": 17.0, "ssim": 0.5}],
        },
        "| white_box | 19.47 / 0.6940 | 17.00 / 0.5000 | — |",
    ),
}


def test_every_script_that_publishes_is_checked_here():
    publishers = {p.stem for p in BENCHMARKS.glob("*.py") if '"--publish"' in p.read_text()}
    assert publishers == {*EXAMPLES, "reproduce"}


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_a_scripts_table_round_trips_through_a_block(tmp_path, script):
    figures, line = EXAMPLES[script]
    table = render(script, figures)
    assert line in table.splitlines()
    page = tmp_path / "p.md"
    page.write_text(PAGE_TEXT)
    publish.publish(page, "t", table, publish.record(script, figures, "CPU", 1.0))
    (block,) = publish.read_blocks(page.read_text())
    assert block.table == table == render(script, block.data["figures"])
    assert block.data["command"].startswith(f"python benchmarks/{script}.py")


def test_zoo_cost_publishes_what_it_measured(tmp_path, monkeypatch, capsys):
    import zoo_cost

    page = tmp_path / "p.md"
    page.write_text(PAGE_TEXT.replace(": t -->", ": zoo-cost -->"))
    argv = ["zoo_cost.py", "--models", "he2019_cifar", "--batch", "2", "--steps", "1", "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", [*argv, "--publish", str(page)])
    zoo_cost.main()
    (block,) = publish.read_blocks(page.read_text())
    assert block.table in capsys.readouterr().out  # the printed table is the published one
    (row,) = block.data["figures"]["rows"]
    assert row["encoder"] == "he2019_cifar" and row["step_s"] > 0
    assert block.data["command"] == f"python benchmarks/zoo_cost.py {' '.join(argv[1:])} --publish {page}"


def test_the_reproduce_table_flags_an_encoder_at_chance():
    """An encoder whose test accuracy is within two binomial standard errors of chance is flagged beside it."""
    reproduce = importlib.import_module("reproduce")
    se = (0.1 * 0.9 / 500) ** 0.5  # 0.0134
    assert "⚠ not distinguishable from chance" in reproduce.encoder_line(0.092, 500)
    assert "⚠" in reproduce.encoder_line(0.1 + 1.9 * se, 500)
    assert "⚠" not in reproduce.encoder_line(0.1 + 2.1 * se, 500)
    assert "⚠" not in reproduce.encoder_line(0.278, 500)


TINY_BENCHMARK = """\
encoders:
  - encoder: {name: alexnet_cifar, kwargs: {width: 0.125}}
    train_epochs: 1
    layers: [conv1]
data: embedded
embedded_per_class: 4
decoder_epochs: 1
decoder_batch: 16
decoder: {width: 4, fc_width: 16, max_width: 8}
methods: [upconvnet]
probe_dims: 256
n_boot: 50
grid_images: 3
workers: 0
"""


def test_the_benchmark_publishes_each_seeds_run_and_their_spread(tmp_path):
    layer_benchmark = importlib.import_module("layer_benchmark")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_BENCHMARK + f"out: {tmp_path / 'run'}\n")
    page = tmp_path / "p.md"
    page.write_text(PAGE_TEXT.replace(": t -->", ": benchmark-tiny -->"))
    layer_benchmark.main(["--config", str(config), "--seeds", "0,1", "--publish", str(page)])
    runs = [json.loads((tmp_path / f"run-seed{s}" / "results.json").read_text()) for s in (0, 1)]
    (block,) = publish.read_blocks(page.read_text())
    figures = block.data["figures"]
    # the table is seed 0's; the spread holds every seed's mean, read back from each run's own results
    psnr = [[r["mean"] for r in run["rows"] if (r["method"], r["metric"]) == ("upconvnet", "psnr")] for run in runs]
    (shown,) = [r for r in figures["rows"] if (r["method"], r["metric"]) == ("upconvnet", "psnr")]
    assert shown["ci"][0] == pytest.approx(psnr[0][0], abs=1e-4)
    (spread,) = [r for r in figures["spread"]["rows"] if (r["method"], r["metric"]) == ("upconvnet", "psnr")]
    assert spread["means"] == pytest.approx([psnr[0][0], psnr[1][0]], abs=1e-4)
    assert psnr[0][0] != psnr[1][0]  # another seed is another run: the spread is not a copy of one
    lo, hi = sorted(spread["means"])
    assert f"{lo:.2f}–{hi:.2f} (±{(hi - lo) / 2:.2f})" in block.table
    with pytest.raises(SystemExit, match="--seeds must be distinct"):
        layer_benchmark.main(["--config", str(config), "--seeds", "1,1"])

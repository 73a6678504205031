"""`make reproduce`'s pipeline (benchmarks/reproduce.py) at its smoke scale: every stage, one table, one JSON,
the package's and the baseline's PSNR from one definition, and nothing half-written."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import plain_loop  # noqa: E402
import publish  # noqa: E402
import reproduce  # noqa: E402


@pytest.mark.slow
def test_the_smoke_preset_runs_every_stage_and_its_two_psnr_paths_agree(tmp_path):
    out = tmp_path / "smoke"
    log = reproduce.run(reproduce.PRESETS["smoke"], str(out))
    assert sorted(os.listdir(tmp_path)) == ["smoke"]  # the .partial folder became the result
    saved = json.load(open(out / "results.json"))
    assert [r["layer"] for r in saved["rows"]] == reproduce.PRESETS["smoke"].layers
    for stage in ("data", "encoder", "decoders", "evaluation", "baseline"):
        assert saved[stage]["seconds"] > 0
    for r in log["rows"]:
        # per_image_psnr (the table's, shared with the baseline) and `upconv evaluate` (the report's) are two
        # independent paths over the same decoders and images: they must agree
        assert r["psnr"][0] == pytest.approx(r["eval_psnr"], abs=1e-4)
        assert r["psnr"][1] <= r["psnr"][0] <= r["psnr"][2]
        lo, mid, hi = r["difference"][1], r["difference"][0], r["difference"][2]
        assert lo <= mid <= hi and mid == pytest.approx(r["psnr"][0] - r["baseline_psnr"][0], abs=1e-4)
    table = open(out / "table.md").read()
    assert all(f"| {layer} |" in table for layer in reproduce.PRESETS["smoke"].layers)
    # published from the run's results.json: the page's block is the table.md's per-layer table
    page = tmp_path / "page.md"
    page.write_text("# Page\n<!-- begin: reproduce-smoke -->\n<!-- end: reproduce-smoke -->\n")
    reproduce.main(["--render", str(out / "results.json"), "--publish", str(page)])
    assert open(out / "table.md").read() == table  # re-rendered from results.json, unchanged
    (block,) = publish.read_blocks(page.read_text())
    assert block.table in table and block.data["load"] == log["load"]
    assert block.data["command"].startswith("python benchmarks/reproduce.py")
    os.remove(page)
    with pytest.raises(SystemExit, match="exists; choose another --out or pass --overwrite"):
        reproduce.run(reproduce.PRESETS["smoke"], str(out))


def test_the_same_encoder_stage_twice_gives_the_same_encoder(tmp_path, monkeypatch):
    """`make reproduce PRESET=cpu` gave encoder accuracy 27.4 % and 29.8 % on two runs of the same code: the
    encoder stage was not seeded (its initialisation and augmentation drew from wherever the global generator
    stood). Two encoder stages of one preset must give the same weights and the same accuracy, whatever ran
    before them."""
    from upconv.data.source import ImageSource
    from upconv.training.datamodule import ImageData

    p = reproduce.replace(reproduce.PRESETS["smoke"], encoder_epochs=2, encoder_batch=32)
    results = []
    for k in range(2):
        torch.manual_seed(100 + k)  # what ran before differs
        dm = ImageData(images=ImageSource(source="embedded", embedded_per_class=6, num_workers=0), batch_size=32)
        dm.setup()
        log = {}
        path = reproduce.train_encoder(p, dm, str(tmp_path / str(k)), log)
        results.append((torch.load(path, weights_only=True), log["encoder"]["val_accuracy"]))
    (first, acc_first), (second, acc_second) = results
    assert acc_first == acc_second
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_failing_run_leaves_no_folder(tmp_path):
    bad = reproduce.PRESETS["smoke"]
    bad = reproduce.replace(bad, layers=["conv9"], encoder_epochs=1)
    with pytest.raises(ValueError, match="conv9"):
        reproduce.run(bad, str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_the_mean_image_floor_is_the_psnr_of_the_training_mean():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (20, 3, 8, 8), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (5, 3, 8, 8), generator=g, dtype=torch.uint8)
    mean = train.double().div(255).mean(0)  # (3, 8, 8)
    expected = [10 * torch.log10(1 / ((mean - t.double() / 255) ** 2).mean()).item() for t in test]
    torch.testing.assert_close(
        plain_loop.mean_image_floor(train, test).double(),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-4,
    )


def test_a_preset_field_can_be_overridden_from_the_command_line_and_a_typo_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown field 'layerz'; choose one of: .*layers"):
        reproduce.main(["--preset", "smoke", "--set", "layerz=conv1", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()

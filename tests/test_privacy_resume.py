"""Resumable privacy runs and the Fisher-information bound beside the attacks: a sweep stopped after its first
point and run again reuses that point (its files untouched, nothing retrained) and ends with the table of one
uninterrupted sweep; a changed setting is refused in one line or redone under overwrite; the bound on every
noise point is the one ``upconv.privacy.fisher`` computes for the victim, and the report reads it."""

import csv
import json
import os

import pytest
import torch
from test_privacy_defences import smooth, tiny_victim

from upconv.privacy import point_training as point_training_module
from upconv.privacy import points as points_module
from upconv.privacy import stages as stages_module
from upconv.privacy.bounds import BIASED
from upconv.privacy.budget import BudgetConfig, run_budget
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.fisher import bound_summary, jacobian_samples, layer_fn
from upconv.privacy.frontier import FrontierConfig, run_frontier
from upconv.privacy.run import run_privacy

SMALL = dict(
    layers=["relu2"],
    decoders=["paper"],
    inverter_epochs=2,
    batch_size=8,
    n_candidates=4,
    n_boot=20,
    lpips=False,
    fisher_probes=4,
)
DATA = dict(eval_data=smooth(16, 1), victim_data=smooth(32, 0), attacker_data=smooth(32, 2))


def _frontier(out, **kw):
    config = FrontierConfig(**{**SMALL, **kw}, defenses={"noise": [0.5, 2.0]}, out=str(out))
    return run_frontier(config, **DATA, victim=tiny_victim())


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """One uninterrupted sweep."""
    out = tmp_path_factory.mktemp("whole") / "f"
    result = _frontier(out)
    return out, result, result.points


def _count(monkeypatch, module):
    calls = []
    real = module.train_inverters
    monkeypatch.setattr(module, "train_inverters", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    return calls


def test_a_sweep_stopped_after_its_first_point_resumes_it_untouched_and_ends_as_one_uninterrupted(
    whole, tmp_path, monkeypatch
):
    out = tmp_path / "f"
    real = points_module.attack_point
    seen = []

    def killed_at_the_second_defended_point(t, c, point, *rest):
        if point[0] == "noise" and point[1] == 2.0:
            raise KeyboardInterrupt  # the job is killed
        seen.append(point)
        return real(t, c, point, *rest)

    monkeypatch.setattr(points_module, "attack_point", killed_at_the_second_defended_point)
    with pytest.raises(KeyboardInterrupt):
        _frontier(out)
    assert seen == [("none", None, "relu2"), ("noise", 0.5, "relu2")]
    first = out / "points" / "points" / "noise-0.5-relu2"
    assert not (out / "report.md").exists() and not (out / "points" / "points" / "noise-2-relu2").exists()
    stamps = {p.name: os.stat(p).st_mtime_ns for p in first.iterdir()}
    assert {"unit.json", "adaptive.pt"} <= set(stamps)

    monkeypatch.setattr(points_module, "attack_point", real)
    clean, adaptive = _count(monkeypatch, stages_module), _count(monkeypatch, point_training_module)
    result = _frontier(out)
    points = result.points
    assert {p.name: os.stat(p).st_mtime_ns for p in first.iterdir()} == stamps  # reused, not rewritten
    assert clean == [] and adaptive == [["relu2"]]  # only the unfinished point's adaptive attacker is trained
    assert result.units["computed"] == ["points/noise-2-relu2"]
    assert {"attackers/black_box_dist", "points/none-relu2", "points/noise-0.5-relu2", "fisher/relu2"} == set(
        result.units["reused"]
    )
    whole_out, whole_result, whole_points = whole
    assert points == whole_points
    untimed = [[{k: v for k, v in b.items() if k != "seconds"} for b in r.bounds] for r in (result, whole_result)]
    assert untimed[0] == untimed[1]  # all but the wall time of the estimate
    assert (out / "frontier.csv").read_text() == (whole_out / "frontier.csv").read_text()
    rows = json.loads((out / "privacy" / "metrics.json").read_text())["rows"]
    assert rows == json.loads((whole_out / "privacy" / "metrics.json").read_text())["rows"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_bound_beside_every_noise_attack_is_the_victim_s_and_the_report_reads_it(whole):
    out, result, points = whole
    victim = tiny_victim()
    x = smooth(16, 1)[0].float() / 255
    samples = jacobian_samples(layer_fn(victim, "relu2"), x, n_probes=4, batch_size=8, seed=0)
    assert [b["strength"] for b in result.bounds] == [0.5, 2.0]
    for b in result.bounds:
        want = bound_summary(samples, b["strength"], "relative", n_boot=20, seed=0)
        assert b["psnr_bound"] == pytest.approx(want["psnr_bound"], rel=1e-6)
        assert b["dfil"] == pytest.approx(want["dfil"], rel=1e-6)
        at = [p for p in points if p["defense"] == "noise" and p["strength"] == b["strength"]]
        assert at and all(p["psnr_bound"] == b["psnr_bound"] for p in at)
        assert b["gap_db"] == pytest.approx(b["psnr_bound"] - max(p["psnr"] for p in at))
        for p in at:
            assert (p["bound_verdict"] == BIASED) == (p["psnr"] > b["psnr_bound_hi"])
    assert result.bounds[0]["psnr_bound"] > result.bounds[1]["psnr_bound"]  # more noise, less allowed
    assert all(p["psnr_bound"] is None for p in points if p["strength"] is None)  # undefended: no noise, no bound
    with open(out / "frontier.csv") as f:
        assert {r["psnr_bound"] != "" for r in csv.DictReader(f) if r["strength"] in ("0.5", "2.0")} == {True}
    for report in (out / "report.md", out / "privacy" / "report.md"):
        text = report.read_text()
        assert "## Fisher-information bound" in text and "Cramér–Rao" in text and "van Trees" in text
        assert f"{result.bounds[1]['psnr_bound']:.2f} [" in text
    above = [p for p in points if p["bound_verdict"]]
    if above:  # the report says what an attack above the bound means
        assert "attackers are biased" in (out / "privacy" / "report.md").read_text()


def _privacy(out, **kw):
    config = PrivacyConfig(**{**SMALL, "attacks": ["black_box_dist"], "attackers": ["clean"], **kw})
    config.defenses, config.out = {"noise": [1.0]}, str(out)
    return run_privacy(config, **DATA, victim=tiny_victim())


def test_a_changed_setting_is_refused_in_one_line_and_redone_under_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _privacy(out)
    unit = out / "points" / "points" / "noise-1-relu2" / "unit.json"
    before = unit.read_text()
    with pytest.raises(ValueError) as e:
        _privacy(out, n_boot=30)
    message = str(e.value)
    assert len(message.splitlines()) == 1 and "changed: scoring.n_boot" in message and "--overwrite true" in message
    assert unit.read_text() == before
    clean = _count(monkeypatch, stages_module)
    result = _privacy(out, n_boot=30, overwrite=True)
    assert clean == []  # the attackers did not change: reused
    assert result.units["computed"] == ["points/none-relu2", "points/noise-1-relu2"]
    assert json.loads(unit.read_text())["settings"]["scoring"]["n_boot"] == 30
    with pytest.raises(ValueError, match=r"unit attackers/black_box_dist .*changed: inverters\.epochs"):
        _privacy(out, n_boot=30, inverter_epochs=3)
    prior = _privacy(out, n_boot=30, fisher_prior=16.0)  # the bound is derived from its units: nothing reruns
    assert prior.units["computed"] == [] and clean == []
    assert prior.bounds[0]["van_trees_mse"] == pytest.approx(1 / (prior.bounds[0]["dfil"] + 16.0))
    assert prior.rows == result.rows
    assert "MSE ≥ (van Trees)" in (out / "report.md").read_text()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run folder")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        _privacy(other)


def test_a_budget_run_again_reuses_every_budget(tmp_path, monkeypatch):
    config = BudgetConfig(**SMALL, budgets=[8, 16], out=str(tmp_path / "b"))
    first = run_budget(config, smooth(16, 1), smooth(32, 0), smooth(32, 2), victim=tiny_victim())
    calls = _count(monkeypatch, __import__("upconv.privacy.budget", fromlist=["x"]))
    again = run_budget(config, smooth(16, 1), smooth(32, 0), smooth(32, 2), victim=tiny_victim())
    assert calls == [] and again.rows == first.rows
    assert again.units["reused"] == ["budgets/8", "budgets/16"] and again.units["computed"] == []


def test_the_command_says_what_it_reused(capsys, monkeypatch):
    from upconv.cli import privacy as cli
    from upconv.privacy.result import PrivacyResult

    units = {"reused": ["victim", "attackers/black_box_dist", "points/none-relu22"], "computed": ["points/noise-1"]}
    result = PrivacyResult(rows=[], settings={}, notes=[], originals=torch.zeros(0), out="/r", units=units)
    runs = []
    monkeypatch.setattr(cli, "from_config", lambda config, run: runs.append(run) or result)
    for command, config in ((cli.privacy, PrivacyConfig), (cli.frontier, FrontierConfig), (cli.budget, BudgetConfig)):
        command(config(out="/r"))
        out, err = capsys.readouterr()
        assert out == "/r/report.md\n"
        assert err.strip() == "resumed /r/points: reused 3 of 4 units (1 points), computed 1"
    assert runs == [run_privacy, run_frontier, run_budget]  # one loader, each command's own run

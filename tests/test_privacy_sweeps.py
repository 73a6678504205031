"""The privacy–utility frontier and the attacker budget: their points against the privacy run's own figures,
the exact numbers of pairs, the run folders, the command line and bad input."""

import csv
import json

import pytest
import torch
from test_privacy_defences import smooth, tiny_victim

from upconv.privacy import budget as budget_module
from upconv.privacy.budget import BudgetConfig, run_budget
from upconv.privacy.frontier import FrontierConfig, run_frontier

SMALL = dict(
    layers=["relu2"],
    decoders=["paper"],
    inverter_epochs=2,
    batch_size=8,
    n_candidates=4,
    n_boot=20,
    lpips=False,
    victim_epochs=2,
)


def test_the_frontier_starts_at_the_undefended_utility_and_writes_its_points(tmp_path):
    config = FrontierConfig(**SMALL, defenses={"noise": [0.0, 1.0], "nopeek": [0.0, 20.0]}, out=str(tmp_path / "f"))
    result = run_frontier(config, smooth(16, 1), smooth(32, 0), smooth(32, 2), victim=tiny_victim())
    points = result.points
    undefended = next(r for r in result.rows if r["defense"] == "none")["utility"]
    assert undefended == pytest.approx(result.settings["victim_accuracy"][0])
    curves = {(p["defense"], p["attacker"]) for p in points}
    assert curves == {(k, a) for k in ("noise", "nopeek") for a in ("clean", "adaptive")}
    for kind, who in curves:
        curve = [p for p in points if (p["defense"], p["attacker"]) == (kind, who)]
        assert [p["strength"] for p in curve] == [None, 0.0, {"noise": 1.0, "nopeek": 20.0}[kind]]
        assert curve[0]["utility"] == curve[1]["utility"] == undefended  # strength 0 is the undefended victim
    out = tmp_path / "f"
    # Strength 0 is the undefended victim itself, not a victim retrained with a zero penalty: only strength 20
    # has a defended victim of its own.
    assert {p.name for p in out.rglob("defended/*") if p.is_dir()} == {"nopeek-20-relu2"}
    assert {"frontier.csv", "frontier.json", "frontier_black_box_dist.png", "report.md"} <= {
        p.name for p in out.iterdir()
    }
    assert (out / "privacy" / "report.md").exists()
    with open(out / "frontier.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["attacker"] for r in rows if r["attack"] == "black_box_dist"} == {"clean", "adaptive"}
    assert json.loads((out / "frontier.json").read_text())["points"] == points
    assert [r["attack"] for r in rows[-2:]] == ["floor: mean image", "floor: class mean"]


def test_the_budget_curve_uses_exactly_the_requested_numbers_of_pairs(tmp_path, monkeypatch):
    seen = []
    real = budget_module.train_inverters

    def spy(encoder, layers, images, settings):
        seen.append(images.clone())
        return real(encoder, layers, images, settings)

    monkeypatch.setattr(budget_module, "train_inverters", spy)
    config = BudgetConfig(**SMALL, budgets=[16, 8, 32], out=str(tmp_path / "b"))
    attacker = smooth(40, 2)
    res = run_budget(config, smooth(16, 1), smooth(32, 0), attacker, victim=tiny_victim())
    assert [len(s) for s in seen] == [8, 16, 32]
    assert [r["n_pairs"] for r in res.rows] == [8, 16, 32]
    assert torch.equal(seen[1][:8], seen[0]) and torch.equal(seen[2][:16], seen[1])  # nested budgets
    flat = attacker[0].flatten(1)
    assert all(((s.flatten(1)[:, None] == flat[None]).all(-1)).any(1).all() for s in seen)  # the attacker's own
    assert len({r["steps"] for r in res.rows}) == 1  # the same training length at every budget
    assert all("floor_verdict" in r for r in res.rows) and "victim_accuracy" in res.settings
    names = {p.name for p in (tmp_path / "b").iterdir()}
    assert {"budget.csv", "budget.json", "budget.png", "report.md"} <= names
    assert list(json.loads((tmp_path / "b" / "budget.json").read_text())) == ["settings", "notes", "rows", "floor_rows"]
    with open(tmp_path / "b" / "budget.csv") as f:
        assert [int(r["n_pairs"]) for r in csv.DictReader(f)] == [8, 16, 32]


def test_bad_budgets_and_frontiers_say_what_to_do_and_write_nothing(tmp_path):
    out = str(tmp_path / "b")
    data = (smooth(8, 1), smooth(8, 0), smooth(16, 2))
    with pytest.raises(ValueError, match="budget 64 is larger than the attacker's 16 images; lower it or raise"):
        run_budget(BudgetConfig(**SMALL, budgets=[8, 64], out=out), *data, victim=tiny_victim())
    with pytest.raises(ValueError, match="positive whole numbers"):
        run_budget(BudgetConfig(**SMALL, budgets=[0], out=out), *data, victim=tiny_victim())
    with pytest.raises(ValueError, match="use privacy-frontier for defences"):
        run_budget(BudgetConfig(**SMALL, defenses={"noise": [1.0]}, out=out), *data, victim=tiny_victim())
    with pytest.raises(ValueError, match="give defenses, e.g."):
        run_frontier(FrontierConfig(**SMALL, out=out), *data, victim=tiny_victim())
    assert not (tmp_path / "b").exists()


def test_the_sweep_commands_fill_their_configs(monkeypatch):
    from upconv.cli import main as cli

    seen = []
    monkeypatch.setitem(cli.RUNS, FrontierConfig, seen.append)
    monkeypatch.setitem(cli.RUNS, BudgetConfig, seen.append)
    cli.main(["privacy-frontier", "--defenses", "{nopeek: [0, 1.0], noise: [0.5]}", "--out", "null"])
    cli.main(["privacy-budget", "--budgets", "[256, 1024]", "--layers", "[relu22]", "--out", "null"])
    assert seen == [
        FrontierConfig(defenses={"nopeek": [0, 1.0], "noise": [0.5]}, out=None),
        BudgetConfig(budgets=[256, 1024], layers=["relu22"], out=None),
    ]
    assert seen[0].attackers == ["clean", "adaptive"] and seen[0].attacks == ["black_box_dist"]

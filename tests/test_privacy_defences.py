"""Trained defences and adaptive attackers: distance correlation against its definition, NoPeek on a tiny
victim where the direction is certain, adaptive against clean attackers, and bad input."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from upconv.core import metrics as M
from upconv.nets.encoder import Encoder
from upconv.privacy.attacks import InverterSettings, train_inverters
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.dcor import distance_correlation
from upconv.privacy.run import run_privacy
from upconv.privacy.sweep import AttackerKey, Point, check_defense
from upconv.privacy.training_defenses import train_defended
from upconv.training.recipes import DecoderRecipe


def slow_dcor(x, z):
    """Székely et al.'s sample distance correlation, written out with loops in float64."""
    x, z = x.flatten(1).double(), z.flatten(1).double()
    n = len(x)
    a = [[float((x[i] - x[j]).norm()) for j in range(n)] for i in range(n)]
    b = [[float((z[i] - z[j]).norm()) for j in range(n)] for i in range(n)]

    def centred(d):
        row = [sum(r) / n for r in d]
        col = [sum(d[i][j] for i in range(n)) / n for j in range(n)]
        grand = sum(row) / n
        return [[d[i][j] - row[i] - col[j] + grand for j in range(n)] for i in range(n)]

    A, B = centred(a), centred(b)
    cov = sum(A[i][j] * B[i][j] for i in range(n) for j in range(n)) / n**2
    va = sum(A[i][j] ** 2 for i in range(n) for j in range(n)) / n**2
    vb = sum(B[i][j] ** 2 for i in range(n) for j in range(n)) / n**2
    return 0.0 if va * vb == 0 else (cov / (va * vb) ** 0.5) ** 0.5  # constant features: dCor = 0 by definition


def test_distance_correlation_matches_the_double_centred_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 4, 4, generator=g, dtype=torch.float64)
    z = x.flatten(1)[:, :5] ** 2 + 0.3 * torch.rand(12, 5, generator=g, dtype=torch.float64)
    assert float(distance_correlation(x, z)) == pytest.approx(slow_dcor(x, z), rel=1e-6)
    assert float(distance_correlation(x, 3 * x + 1)) == pytest.approx(1.0, abs=1e-6)  # a similarity: dCor = 1
    far = distance_correlation(torch.rand(400, 2, generator=g), torch.rand(400, 2, generator=g))
    assert float(far) < 0.15  # independent samples: near 0
    x.requires_grad_(True)
    distance_correlation(x, z).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same length ≥ 2; got 3 and 4"):
        distance_correlation(torch.rand(3, 2), torch.rand(4, 2))


def tiny_victim(seed=0):
    """A user's model (not a built-in architecture): 16×16 images, split at relu2 (8×8×8)."""
    torch.manual_seed(seed)
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(8, 8, 3, stride=2, padding=1),
        relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(8, 4),
    )
    return Encoder.from_model(nn.Sequential(layers), "tiny", image_size=(16, 16), mean=[0.5] * 3, std=[0.25] * 3)


def smooth(n, seed):
    """Images with structure to recover (bilinear upsampled noise), uint8 (n, 3, 16, 16), and 4 labels."""
    g = torch.Generator().manual_seed(seed)
    x = nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=16, mode="bilinear")
    return (x * 255).to(torch.uint8), torch.randint(0, 4, (n,), generator=g)


def _recon_mse(victim, attacker, evaluation):
    nets = train_inverters(
        victim,
        ["relu2"],
        attacker,
        InverterSettings(kinds=("paper",), epochs=20, batch_size=16, recipe=DecoderRecipe(lr=1e-2)),
    ).nets
    x = evaluation.float() / 255
    with torch.no_grad():
        return float(M.mse(nets[("paper", "relu2")](victim(x, ["relu2"])["relu2"]).clamp(0, 1), x).mean())


@pytest.mark.slow
def test_nopeek_lowers_the_distance_correlation_and_raises_the_reconstruction_error():
    """A large weight drives the split features towards independence of the input (here: constant ones, whose
    dCor is 0 by definition), and the same decoder recipe recovers less from them."""
    victim = tiny_victim()
    train, evaluation, attacker = smooth(64, 0), smooth(48, 1)[0], smooth(64, 2)[0]
    defended = train_defended(victim, "relu2", ("nopeek", 100.0), train, epochs=30, from_scratch=False)
    assert train_defended(victim, "relu2", ("nopeek", 0.0), train, epochs=8, from_scratch=False) is victim
    x = evaluation.float() / 255
    with torch.no_grad():
        before = slow_dcor(x, victim(x, ["relu2"])["relu2"])
        after = slow_dcor(x, defended(x, ["relu2"])["relu2"])
    assert after < before - 0.1, (before, after)
    assert _recon_mse(defended, attacker, evaluation) > 1.3 * _recon_mse(victim, attacker, evaluation)


def _config(**kw):
    base = dict(
        layers=["relu2"],
        attacks=["black_box_dist"],
        decoders=["paper"],
        attackers=["clean", "adaptive"],
        inverter_epochs=15,
        inverter_lr=1e-2,
        batch_size=16,
        n_candidates=4,
        n_boot=20,
        lpips=False,
        victim_epochs=4,
        out=None,
    )
    return PrivacyConfig(**{**base, **kw})


def test_an_adaptive_attacker_does_at_least_as_well_on_defended_features_as_a_clean_one(tmp_path):
    victim = tiny_victim()
    res = run_privacy(
        _config(defenses={"noise": [2.0], "nopeek": [0.0, 50.0]}, out=str(tmp_path / "run")),
        smooth(32, 1),
        victim_data=smooth(64, 0),
        attacker_data=smooth(64, 2),
        victim=victim,
    )
    by = {(r["defense"], r["strength"], r["attacker"]): r for r in res.rows}
    assert by[("none", None, "clean")]["utility"] == by[("nopeek", 0.0, "clean")]["utility"]
    for point in (("noise", 2.0), ("nopeek", 50.0)):
        clean, adaptive = by[(*point, "clean")], by[(*point, "adaptive")]
        assert adaptive["psnr"] >= clean["psnr"], (point, clean["psnr"], adaptive["psnr"])
        assert adaptive["inverter_health"] in ("ok", "recovered", "failed")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "attacker = adaptive: trained on the defended features" in report
    assert "| black_box_dist | paper | relu2 | nopeek | 50 | adaptive |" in report
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "strength,attacker," in header
    assert {"train defended victims", "train adaptive inverters"} <= set(res.settings["timings_s"])
    # each adaptive row's health is read under the name its attackers' record was written with (metrics.json's)
    names = {
        "black_box_dist",
        *(f"black_box_dist adaptive {k} {s}" for k, s in [("noise", 2), ("nopeek", 0), ("nopeek", 50)]),
    }
    assert set(res.settings["inverter_health"]) == names
    for point in (("noise", 2.0), ("nopeek", 50.0)):
        name = str(AttackerKey.adaptive("black_box_dist", Point(*point, "relu2")))
        status = res.settings["inverter_health"][name]["paper relu2"]["status"]
        assert by[(*point, "adaptive")]["inverter_health"] == status


def test_bad_defence_sweeps_say_what_to_do(tmp_path):
    data = dict(victim_data=smooth(8, 0), attacker_data=smooth(8, 2), victim=tiny_victim())
    out = str(tmp_path / "run")
    with pytest.raises(ValueError, match="unknown defence 'shredder'; choose one of: .*nopeek, adversarial"):
        run_privacy(_config(defenses={"shredder": [1.0]}, out=out), smooth(4, 1), **data)
    with pytest.raises(ValueError, match="out of range for 'nopeek': expected a distance-correlation weight"):
        check_defense("nopeek", -1.0)
    with pytest.raises(ValueError, match="unknown attackers \\['oracle'\\]"):
        run_privacy(_config(defenses={"noise": [1.0]}, attackers=["oracle"], out=out), smooth(4, 1), **data)
    with pytest.raises(ValueError, match="remove white_box from defense_attacks"):
        run_privacy(
            _config(defenses={"adversarial": [1.0]}, attacks=["white_box"], defense_attacks=["white_box"], out=out),
            smooth(4, 1),
            **data,
        )
    assert not (tmp_path / "run").exists()

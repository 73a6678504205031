"""Privacy evaluation: re-identification against hand-built cases, defences against their definitions,
the shallow inverse network's shape, an end-to-end run of every attack and defence, and bad input."""

import csv
import inspect
import json
import os

import pytest
import torch

from upconv.core import metrics as M
from upconv.nets.zoo import build_encoder
from upconv.privacy.attacks import InverterSettings, ShallowInverseNet, build_inverter, train_inverters
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.inference_defenses import check_strength, defend, tail
from upconv.privacy.reid import reid_hits
from upconv.privacy.run import run_privacy
from upconv.privacy.sweep import ATTACKS
from upconv.training.recipes import DecoderRecipe


@pytest.fixture(scope="module")
def he():
    return build_encoder("he2019_cifar")


# ---------------------------------------------------------------- re-identification
def test_reid_exact_copies_are_always_found():
    x = torch.rand(50, 3, 4, 4)
    assert reid_hits(x, x, n_candidates=10).mean() == 1.0
    assert reid_hits(x, x, n_candidates=50).mean() == 1.0  # every other image in the line-up


def test_reid_uninformative_reconstructions_score_chance():
    n, k = 3000, 4
    x = torch.rand(n, 3, 4, 4)
    recon = x[torch.randperm(n)] * 0 + torch.rand(n, 3, 4, 4)  # independent of the originals
    rate = float(reid_hits(recon, x, n_candidates=k, seed=1).mean())
    sd = (0.25 * 0.75 / n) ** 0.5
    assert abs(rate - 1 / k) < 4 * sd


def test_reid_hand_built_lineup():
    x = torch.tensor([0.0, 1.0, 2.0]).view(3, 1, 1, 1)
    recon = torch.tensor([0.1, 1.9, 2.1]).view(3, 1, 1, 1)  # image 1's reconstruction lies next to image 2
    assert reid_hits(recon, x, n_candidates=3).tolist() == [1.0, 0.0, 1.0]


def test_reid_needs_enough_candidates():
    x = torch.rand(5, 3, 4, 4)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        reid_hits(x, x, n_candidates=1)
    with pytest.raises(ValueError, match="candidates needs at least 6 evaluated images; got 5"):
        reid_hits(x, x, n_candidates=6)


# ---------------------------------------------------------------- defences
def test_defences_match_their_definitions():
    f = torch.randn(4, 8, 3, 3)
    assert torch.equal(defend(f, "noise", 0.0), f) and torch.equal(defend(f, "dropout", 0.0), f)
    assert torch.equal(defend(f, "topk", 1.0), f)
    q = defend(f, "quantize", 1).flatten(1)
    lo, hi = f.flatten(1).min(1).values, f.flatten(1).max(1).values
    ends = torch.stack([lo, hi], 1)[:, None, :]  # (B, 1, 2)
    assert ((q[:, :, None] - ends).abs().min(-1).values < 1e-5).all()  # every value is its image's min or max
    assert len(set(defend(f, "quantize", 3)[0].flatten().tolist())) <= 8
    t = defend(f, "topk", 0.25).flatten(1)  # 18 of 72 kept
    for b in range(4):
        kept = t[b][t[b] != 0]
        assert len(kept) == 18 and kept.min() >= f.flatten(1)[b].sort(descending=True).values[17]
    d = defend(torch.ones(2, 1000), "dropout", 0.5)
    assert set(d.unique().tolist()) == {0.0, 2.0} and 0.4 < (d == 0).double().mean() < 0.6


def test_stronger_noise_never_raises_leakage():
    # Toy where the answer is certain: the features are the image and the attacker inverts exactly (identity),
    # so the reconstruction error is the clamped noise, whose size grows with σ for the same draw.
    x = torch.rand(16, 3, 8, 8)
    psnr = [float(M.psnr(defend(x, "noise", s, seed=0).clamp(0, 1), x).mean()) for s in (0.05, 0.1, 0.3, 1.0, 3.0)]
    assert all(a > b for a, b in zip(psnr, psnr[1:]))


@pytest.mark.parametrize(
    "kind,bad", [("noise", -0.1), ("quantize", 0), ("quantize", 2.5), ("dropout", 1.0), ("topk", 0.0), ("topk", 1.5)]
)
def test_defence_strength_out_of_range(kind, bad):
    with pytest.raises(ValueError, match=f"out of range for '{kind}': expected"):
        check_strength(kind, bad)


def test_tail_continues_the_network(he):
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        for layer in ("conv11", "relu22", "relu32"):
            assert torch.allclose(tail(he, layer)(he(x, [layer])[layer]), he.logits(x), atol=1e-5)


# ---------------------------------------------------------------- attacks
def test_shallow_inverse_net_is_he_et_al_at_relu22(he):
    net = build_inverter("paper", he, "relu22")
    convs = [(m.in_channels, m.out_channels, m.stride[0]) for m in net.body if isinstance(m, torch.nn.ConvTranspose2d)]
    assert convs == [(128, 64, 2), (64, 3, 1)]
    assert isinstance(net.body[1], torch.nn.ReLU)
    assert net(torch.rand(2, 128, 16, 16)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="spatial features"):
        ShallowInverseNet((512,), (3, 32, 32), [])


def test_query_training_lowers_reconstruction_error(he):
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(32, 3, 8, 8, generator=g), size=32, mode="bilinear")
    x = (smooth * 255).to(torch.uint8)
    xf = x.float() / 255
    with torch.no_grad():
        f = he(xf, ["conv11"])["conv11"]
    torch.manual_seed(0)
    untrained = build_inverter("paper", he, "conv11")
    nets = train_inverters(
        he, ["conv11"], x, InverterSettings(kinds=("paper",), epochs=20, batch_size=8, recipe=DecoderRecipe(lr=1e-2))
    ).nets
    with torch.no_grad():
        before = M.mse(untrained(f).clamp(0, 1), xf).mean()
        after = M.mse(nets[("paper", "conv11")](f).clamp(0, 1), xf).mean()
    assert after < 0.75 * before


def test_inverter_rate_is_the_recipes_unless_a_kind_has_its_own(he):
    x = (torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    torch.manual_seed(0)
    init = {k: build_inverter(k, he, "conv11", 8).state_dict() for k in ("paper", "upconvnet")}
    # The recipe's rate (1e-12) is every network's, except the kind given its own (paper at 1e-2).
    s = InverterSettings(epochs=2, batch_size=8, width=8, recipe=DecoderRecipe(lr=1e-12), kind_lr={"paper": 1e-2})
    nets = train_inverters(he, ["conv11"], x, s).nets
    moved = {
        k: max((nets[(k, "conv11")].state_dict()[n] - v).abs().max().item() for n, v in init[k].items()) for k in init
    }
    assert moved["paper"] > 1e-3  # trained at 1e-2
    assert moved["upconvnet"] < 1e-8  # the recipe's 1e-12 rate leaves it where it started
    for bad in ({"shallow": 1e-3}, {"paper": 0.0}, {"paper": 1e-3, "upconvnet": -1.0}):
        with pytest.raises(ValueError, match="kind_lr must give positive rates for inverse-network kinds"):
            train_inverters(he, ["conv11"], x, InverterSettings(epochs=1, batch_size=8, width=8, kind_lr=bad))
    with pytest.raises(ValueError, match="a decoder recipe needs lr > 0"):
        DecoderRecipe(lr=0.0)


# ---------------------------------------------------------------- end to end
def _run(encoder, layers, eval_data, victim_data=None, attacker_data=None, **settings):
    """run_privacy on a config of ``settings``; it writes nothing unless ``out`` is given."""
    config = PrivacyConfig(encoder=encoder, layers=list(layers), **{"out": None, **settings})
    return run_privacy(config, eval_data, victim_data, attacker_data)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8), torch.randint(0, 10, (n,), generator=g)


def test_every_attack_and_defence_end_to_end(tmp_path):
    out = tmp_path / "run"
    defenses = {"noise": [0.5], "quantize": [2], "dropout": [0.5], "topk": [0.1]}
    res = _run(
        "he2019_cifar",
        ["conv11", "ReLU22"],
        _data(12, 2),
        victim_data=_data(32, 0),
        attacker_data=_data(32, 1),
        defenses=defenses,
        defense_attacks=["white_box", "black_box_noise"],
        victim_epochs=1,
        shadow_epochs=1,
        inverter_epochs=1,
        inverter_width=8,
        n_noise=32,
        mv_steps=3,
        n_candidates=4,
        batch_size=16,
        n_boot=20,
        grid_images=4,
        out=str(out),
    )
    files = set(os.listdir(out))
    assert {"report.md", "metrics.csv", "metrics.json"} <= files
    assert {f"grid_{a}.png" for a in ATTACKS} | {"tradeoff_white_box.png", "tradeoff_black_box_noise.png"} <= files
    assert [p for p in os.listdir(tmp_path) if "partial" in p] == []
    clean = [r for r in res.rows if r["defense"] == "none"]
    # defended: 4 defences × 2 layers × 2 attacks × 2 decoders by clean attackers, and black_box_noise's adaptive
    # attackers (optimisation inversion has none) on the same 4 × 2 points with both decoders
    adaptive = [r for r in res.rows if r["attacker"] == "adaptive"]
    assert len(clean) == len(ATTACKS) * 2 * 2 and len(adaptive) == 4 * 2 * 2
    assert len(res.rows) == len(clean) + 4 * 2 * 2 * 2 + len(adaptive)
    assert {r["attack"] for r in adaptive} == {"black_box_noise"}
    assert {r["layer"] for r in res.rows} == {"conv11", "relu22"}
    with open(out / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == len(res.rows) + len(res.floor_rows)
    assert json.loads((out / "metrics.json").read_text())["rows"] == res.rows
    for r in clean:
        assert 0 <= r["reid"] <= 1 and r["psnr_lo"] <= r["psnr"] <= r["psnr_hi"]
    report = (out / "report.md").read_text()
    assert "black_box_noise" in report and "chance = 0.250" in report
    ssim = [line for line in report.splitlines() if line.startswith("- SSIM:")]
    assert len(ssim) == 1 and "torchmetrics" not in report
    assert all(
        w in ssim[0]
        for w in (
            "Gaussian window 11×11",
            "σ = 1.5",
            "population",
            "valid windows only",
            "gaussian_weights=True, use_sample_covariance=False",
        )
    )
    # The victim trained by the run is saved, and reloads as the very encoder that was attacked.
    assert build_encoder("he2019_cifar", str(out / "victim.pt")).weights_hash == res.settings["encoder_weights_hash"]
    # Every training stage and every attack's reconstructions are timed, under the names the report shows.
    stages = (
        {"train victim", "train shadow", "train inverters query_free"}
        | {f"train inverters {a}" for a in ("black_box_train", "black_box_dist", "black_box_noise")}
        | {f"reconstruct {a} {d}" for a in ATTACKS for d in ("paper", "upconvnet")}
        | {"train adaptive inverters"}
        | {f"reconstruct black_box_noise {d} adaptive" for d in ("paper", "upconvnet")}
        | {"estimate Fisher information"}  # the bound beside the attacks at the noise point
    )
    assert set(res.settings["timings_s"]) == stages


def test_an_inverse_network_that_diverges_is_caught_by_the_guard_and_named_in_the_report(tmp_path):
    """The inverse networks train on the decoder recipe, health guard included: at a rate that blows UpconvNet
    up (1000 × the default here; 10 × does not diverge on a run this small), the guard restores it and the
    report says so beside its figures, while He et al.'s network, on its own rate, is left alone."""
    kw = dict(
        victim_data=_data(32, 0),
        attacker_data=_data(32, 1),
        attacks=["black_box_dist"],
        victim_epochs=1,
        inverter_epochs=4,
        inverter_width=8,
        batch_size=8,
        n_boot=10,
        n_candidates=4,
        lpips=False,
    )
    calm = _run("he2019_cifar", ["conv11"], _data(8, 2), **kw)
    assert [r["inverter_health"] for r in calm.rows] == ["ok", "ok"]
    assert not any("diverged" in n for n in calm.notes)
    out = tmp_path / "run"
    wild = _run(
        "he2019_cifar", ["conv11"], _data(8, 2), inverter_lr={"paper": 1e-3, "upconvnet": 1.0}, out=str(out), **kw
    )
    health = {r["decoder"]: r["inverter_health"] for r in wild.rows}
    assert health["paper"] == "ok" and health["upconvnet"] in ("recovered", "failed"), health
    record = wild.settings["inverter_health"]["black_box_dist"]["upconvnet conv11"]
    assert record["recoveries"] >= 1 and any(e["action"].startswith("restored") for e in record["events"])
    report = (out / "report.md").read_text()
    assert "## Inverse-network health" in report
    assert f"| black_box_dist | upconvnet | conv11 | {health['upconvnet']} |" in report
    assert any(
        n.lstrip("⚠ ").startswith("black_box_dist upconvnet at conv11: its inverse network diverged")
        for n in wild.notes
    )
    with open(out / "metrics.csv") as f:
        assert {r["decoder"]: r["inverter_health"] for r in csv.DictReader(f) if r["decoder"]} == health  # no floors
    assert all(r["psnr"] == r["psnr"] for r in wild.rows)  # finite figures from the guarded weights


def test_victim_and_attacker_splits_mix_the_classes(tmp_path):
    """Taking the whole training split leaves ImageFolder's class order; the split must still be random, or
    the victim learns the first classes and the attacker holds the rest (a different distribution)."""
    from PIL import Image

    from upconv.privacy.splits import load_splits

    for split, n in (("train", 8), ("test", 3)):
        for c in ("a_class", "b_class"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((torch.rand(32, 32, 3) * 255).byte().numpy()).save(tmp_path / split / c / f"{i}.png")
    victim, attacker, evaluation = load_splits("folder", str(tmp_path), 8, 8, 4)
    assert len(victim[0]) == len(attacker[0]) == 8 and len(evaluation[0]) == 4
    assert set(victim[1].tolist()) == set(attacker[1].tolist()) == {0, 1}
    # Disjoint: no training image is in both.
    flat_v, flat_a = victim[0].flatten(1), attacker[0].flatten(1)
    assert not (flat_v[:, None] == flat_a[None]).all(-1).any()


def test_bad_input_leaves_no_run_folder(tmp_path):
    kw = dict(
        victim_data=_data(8, 0), attacker_data=_data(8, 1), victim_epochs=1, n_candidates=4, out=str(tmp_path / "run")
    )
    with pytest.raises(ValueError, match="unknown layer 'relu99'.*choose one of"):
        _run("he2019_cifar", ["relu99"], _data(4, 2), attacks=["black_box_dist"], **kw)
    with pytest.raises(ValueError, match="out of range for 'quantize'"):
        _run("he2019_cifar", ["conv11"], _data(4, 2), defenses={"quantize": [0]}, **kw)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        _run("he2019_cifar", ["conv11"], _data(4, 2), **{**kw, "n_candidates": 1})
    with pytest.raises(ValueError, match="at least 10 evaluated images; got 4"):
        _run("he2019_cifar", ["conv11"], _data(4, 2), **{**kw, "n_candidates": 10})
    with pytest.raises(ValueError, match="unknown attack 'grey_box'"):
        _run("he2019_cifar", ["conv11"], _data(4, 2), attacks=["grey_box"], **kw)
    with pytest.raises(ValueError, match="mv_batch_size must be a positive number of images; got 0"):
        _run("he2019_cifar", ["conv11"], _data(4, 2), mv_batch_size=0, **{**kw, "n_candidates": 2})
    with pytest.raises(ValueError, match="mv_tv_weight must be ≥ 0"):
        _run("he2019_cifar", ["conv11"], _data(4, 2), mv_tv_weight=-1.0, **{**kw, "n_candidates": 2})
    assert not (tmp_path / "run").exists()


def test_mv_tv_weight_reaches_the_optimisation():
    """The white-box reconstructions are M&V's inversion run with the configured TV weight (oracle: the
    inversion called directly), and that weight changes them."""
    from upconv.methods.mahendran_vedaldi import MVSettings, invert

    victim = _victim()
    x = _data(4, 2)[0].float() / 255
    with torch.no_grad():
        feats = victim(x, ["conv11"])["conv11"]
    config = PrivacyConfig(
        layers=["conv11"],
        attacks=["white_box"],
        decoders=["paper"],
        mv_steps=5,
        n_candidates=2,
        n_boot=5,
        lpips=False,
        out=None,
        mv_tv_weight=1e4,
    )
    got = run_privacy(config, _data(4, 2), victim=victim).grid[("white_box", "paper", "conv11")]
    want = {
        w: invert(victim, "conv11", feats, MVSettings(steps=5, tv_weight=w, seed=0)).images.clamp(0, 1)
        for w in (1e4, 0.0)
    }
    assert torch.allclose(got, want[1e4], atol=1e-6)
    assert not torch.allclose(want[1e4], want[0.0], atol=1e-3)


def test_the_reproduction_config_runs_through_the_cli(tmp_path):
    """configs/privacy/he2019_cifar.yaml parses (per-kind rates, optimisation batch) and runs end to end
    through `upconv privacy`, shrunk to the embedded photographs."""
    from upconv.cli.main import main

    out = tmp_path / "run"
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "privacy", "he2019_cifar.yaml")
    main(
        [
            "privacy",
            "--config",
            config,
            "--data",
            "embedded",
            "--root",
            "null",
            "--n_victim",
            "16",
            "--n_attacker",
            "16",
            "--n_eval",
            "10",
            "--victim_epochs",
            "1",
            "--shadow_epochs",
            "1",
            "--inverter_epochs",
            "1",
            "--inverter_width",
            "8",
            "--n_noise",
            "16",
            "--mv_steps",
            "2",
            "--mv_batch_size",
            "5",
            "--n_boot",
            "10",
            "--lpips",
            "false",
            "--defenses",
            "{noise: [1.0]}",
            "--out",
            str(out),
        ]
    )
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["inverter_lr"] == {"paper": 0.01, "upconvnet": 0.001}
    assert settings["mv_batch_size"] == 5 and settings["defense_attacks"] == ["white_box", "black_box_dist"]
    assert (out / "victim.pt").exists()


def test_paper_comparison_matches_figures_by_layer_name():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "privacy_he2019.py")
    spec = importlib.util.spec_from_file_location("privacy_he2019", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"attack": "white_box", "decoder": "paper", "layer": "relu22", "defense": "none", "psnr": 17.0, "ssim": 0.5}
    table = bench.comparison({"settings": {"layers": ["relu22"], "attacks": ["white_box"]}, "rows": [row]}, "t")
    assert "| white_box | 19.47 / 0.6940 | 17.00 / 0.5000 | — |" in table  # ReLU22's figure, not conv11's


def test_the_cli_options_are_the_config_fields_with_their_defaults(capsys):
    """`upconv privacy` and run_privacy read one parameter list (PrivacyConfig): every option is a field with
    the field's default and help text, and M&V's schedule of 2100 steps is the default of both."""
    import dataclasses

    import yaml
    from docstring_parser import parse

    from upconv.cli.main import main
    from upconv.methods.mahendran_vedaldi import MV_STEPS, MVInversionMethod

    with pytest.raises(SystemExit):
        main(["privacy", "--print_config"])
    parsed = yaml.safe_load(capsys.readouterr().out)
    fields = dataclasses.fields(PrivacyConfig)
    defaults = PrivacyConfig()
    assert set(parsed) == {f.name for f in fields}
    plain = {f.name: getattr(defaults, f.name) for f in fields}
    assert parsed == {**plain, "encoder": dataclasses.asdict(defaults.encoder)}  # a group of options in YAML
    assert parsed["mv_steps"] == MV_STEPS == 2100
    documented = {p.arg_name: p.description for p in parse(PrivacyConfig.__doc__).params}
    assert [f.name for f in fields if not documented.get(f.name)] == []  # every option has help text
    # The depth evaluation's method keeps its own, documented, shorter default.
    assert inspect.signature(MVInversionMethod).parameters["steps"].default == 200
    assert "200" in MVInversionMethod.__doc__ and "2100" in MVInversionMethod.__doc__


def test_a_yaml_config_and_options_fill_the_config_dataclass(tmp_path, monkeypatch):
    """`--config file.yaml` then options, later ones winning, reach the run as one PrivacyConfig."""
    from upconv.cli import main as cli

    seen = []
    monkeypatch.setitem(cli.RUNS, PrivacyConfig, seen.append)
    config = tmp_path / "p.yaml"
    config.write_text(
        "layers: [conv11]\nmv_steps: 7\ninverter_lr: {paper: 0.01, upconvnet: 0.001}\ndefenses: {noise: [0.5, 1.0]}\n"
    )
    cli.main(["privacy", "--config", str(config), "--mv_steps", "9", "--out", "null", "--data", "embedded"])
    assert seen == [
        PrivacyConfig(
            layers=["conv11"],
            mv_steps=9,
            inverter_lr={"paper": 0.01, "upconvnet": 0.001},
            defenses={"noise": [0.5, 1.0]},
            out=None,
            data="embedded",
        )
    ]


def test_non_finite_evaluation_images_are_refused_before_any_training(tmp_path):
    x, y = _data(6, 2)
    x = x.float() / 255
    x[3, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"1 of 6 input images contain NaN or infinite pixels \(batch positions 3\)"):
        _run(
            "he2019_cifar",
            ["conv11"],
            (x, y),
            victim_data=_data(8, 0),
            attacks=["white_box"],
            decoders=["paper"],
            victim_epochs=1000,
            n_candidates=2,
            out=str(tmp_path / "run"),
        )
    assert not (tmp_path / "run").exists()


def test_encoder_kwargs_reach_the_victim_and_are_never_ignored(tmp_path):
    from upconv.nets.builtin import ARCHITECTURES

    torch.manual_seed(0)
    weights = tmp_path / "narrow.pt"
    torch.save(ARCHITECTURES["alexnet_cifar"].build(width=0.25).state_dict(), weights)
    kw = dict(attacks=["white_box"], decoders=["paper"], mv_steps=1, n_candidates=2, n_boot=5, lpips=False)
    res = _run(
        {"name": "alexnet_cifar", "weights": str(weights), "kwargs": {"width": 0.25}}, ["conv1"], _data(4, 2), **kw
    )
    assert (
        res.settings["encoder_weights_hash"]
        == build_encoder("alexnet_cifar", str(weights), kwargs={"width": 0.25}).weights_hash
    )
    with pytest.raises(ValueError, match="encoder kwargs apply to a victim loaded from its weights"):
        _run(
            {"name": "alexnet_cifar", "kwargs": {"width": 0.25}}, ["conv1"], _data(4, 2), victim_data=_data(8, 0), **kw
        )


def test_privacy_progress_goes_to_stderr_only(capfd, monkeypatch):
    monkeypatch.setenv("UPCONV_PROGRESS", "1")
    _run(
        "he2019_cifar",
        ["conv11"],
        _data(4, 2),
        victim_data=_data(8, 0),
        attacks=["white_box", "black_box_train"],
        decoders=["paper"],
        victim_epochs=1,
        inverter_epochs=1,
        mv_steps=1,
        n_candidates=2,
        n_boot=5,
        lpips=False,
        batch_size=4,
    )
    out, err = capfd.readouterr()
    assert out == ""
    assert "privacy: training" in err and "stage" in err and "privacy: attacks" in err


def test_a_built_victim_is_attacked_as_the_same_weights_loaded_by_name(tmp_path):
    """``victim=`` (a built Encoder) and the encoder's weights (the same weights saved) are the same attack."""
    from upconv.nets.builtin import ARCHITECTURES
    from upconv.nets.encoder import Encoder

    torch.manual_seed(0)
    model = ARCHITECTURES["he2019_cifar"].build()
    torch.save(model.state_dict(), tmp_path / "v.pt")
    config = PrivacyConfig(
        layers=["conv11"],
        attacks=["white_box"],
        decoders=["paper"],
        mv_steps=2,
        n_candidates=2,
        n_boot=5,
        lpips=False,
        out=None,
    )
    built = run_privacy(config, _data(4, 2), victim=Encoder.from_model(model, "he2019_cifar"))
    loaded = run_privacy(
        PrivacyConfig(**{**config.__dict__, "encoder": {"name": "he2019_cifar", "weights": str(tmp_path / "v.pt")}}),
        _data(4, 2),
    )
    assert (
        built.rows == loaded.rows and built.settings["encoder_weights_hash"] == loaded.settings["encoder_weights_hash"]
    )
    with pytest.raises(ValueError, match="two encoders"):
        run_privacy(
            PrivacyConfig(**{**config.__dict__, "encoder": {"name": "he2019_cifar", "kwargs": {"width": 0.5}}}),
            _data(4, 2),
            victim=Encoder.from_model(model, "he2019_cifar"),
        )


# ---------------------------------------------------------------- numbers that cannot mislead
def _victim():
    from upconv.nets.builtin import ARCHITECTURES
    from upconv.nets.encoder import Encoder

    torch.manual_seed(0)
    return Encoder.from_model(ARCHITECTURES["he2019_cifar"].build(), "he2019_cifar")


def _labelled(victim, n, seed, right):
    """``n`` images whose first ``right`` labels are the victim's own predictions and the rest are wrong."""
    x, _ = _data(n, seed)
    with torch.no_grad():
        pred = victim.logits(x.float() / 255).flatten(1).argmax(1)
    y = torch.where(torch.arange(n) < right, pred, (pred + 1) % 10)
    return x, y, pred


def _defended_run(tmp_path, victim, eval_data, layers=("conv11", "relu22"), defenses=None):
    config = PrivacyConfig(
        layers=list(layers),
        attacks=["white_box"],
        decoders=["paper"],
        mv_steps=1,
        n_candidates=2,
        n_boot=50,
        lpips=False,
        defense_attacks=["white_box"],
        defenses=defenses,
        out=str(tmp_path / "run"),
    )
    return run_privacy(config, eval_data, attacker_data=_data(16, 1), victim=victim)


def test_utility_is_the_victim_s_own_accuracy_on_the_defended_features(tmp_path):
    """Oracles: undefended, dropout p = 0 and top-k keeping everything give the victim's own accuracy on the
    evaluated images (computed here from its logits); any other point is the tail's accuracy on exactly the
    defended features."""
    victim = _victim()
    x, y, pred = _labelled(victim, 10, 2, right=7)
    res = _defended_run(tmp_path, victim, (x, y), defenses={"dropout": [0.0], "topk": [1.0, 0.1]})
    own = float((pred == y).double().mean())
    assert own == 0.7
    with torch.no_grad():
        clean = victim(x.float() / 255, ["conv11", "relu22"])
    for r in res.rows:
        if r["defense"] == "none" or (r["defense"], r["strength"]) in (("dropout", 0.0), ("topk", 1.0)):
            assert r["utility"] == pytest.approx(own, abs=1e-12), r
        else:
            f = defend(clean[r["layer"]], r["defense"], r["strength"], seed=0)
            with torch.no_grad():
                want = float(M.accuracy(tail(victim, r["layer"])(f), y).mean())
            assert r["utility"] == pytest.approx(want, abs=1e-12), r
    assert res.settings["victim_accuracy"][0] == pytest.approx(own)


def test_privacy_report_carries_floors_verdicts_and_what_the_attackers_saw(tmp_path):
    victim = _victim()
    x, y, _ = _labelled(victim, 10, 2, right=10)  # the victim is right on every image: no chance warning
    res = _defended_run(tmp_path, victim, (x, y), layers=["relu22"], defenses={"noise": [0.5]})
    attacker = _data(16, 1)[0].double() / 255
    want = float(M.psnr(attacker.mean(0, keepdim=True).expand(10, -1, -1, -1).float(), x.float() / 255).mean())
    floors = {r["attack"]: r for r in res.floor_rows}
    assert floors["floor: mean image"]["psnr"] == pytest.approx(want, abs=1e-4)
    assert "attacker's images, 16 images" in res.settings["floors_source"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "not distinguishable from chance" not in report
    below = [r for r in res.rows if r["psnr"] <= floors["floor: mean image"]["psnr"]]
    assert below, "one optimisation step leaves the reconstruction below the mean image"
    for r in res.rows:
        assert (r["floor_verdict"] is not None) == (r["psnr"] <= max(f["psnr"] for f in res.floor_rows))
    for r in below:
        assert f"{r['psnr']:.2f} ⚠" in report or f"{r['psnr']:.2f} [{r['psnr_lo']:.2f}, {r['psnr_hi']:.2f}] ⚠" in report
    assert "| floor: mean image | — |" in report and "⚠ beside a PSNR" in report
    assert "attacker = clean: inverse networks trained on the undefended victim's clean features" in report
    assert "attacker = adaptive: trained on the defended features" in report  # both, by default
    with open(tmp_path / "run" / "metrics.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["attack"] for r in csv_rows[-2:]] == ["floor: mean image", "floor: class mean"]


def test_a_victim_at_chance_is_flagged_before_any_leakage_figure(tmp_path):
    victim = _victim()
    x, y, _ = _labelled(victim, 10, 2, right=1)  # accuracy 0.1 on 10 classes: chance
    res = _defended_run(tmp_path, victim, (x, y), layers=["conv11"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert res.notes[0].startswith("⚠ the victim is not distinguishable from chance")
    assert "chance is 1/10 = 0.100" in res.notes[0]
    assert report.index("not distinguishable from chance") < report.index("## Leakage without defence")


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--inverter_epochs", "0", "inverter_epochs must be at least 1 (it trains each inverse network); got 0"),
        ("--victim_epochs", "0", "victim_epochs must be at least 1 (it trains the victim"),
        ("--shadow_epochs", "-1", "shadow_epochs must be at least 1 (it trains the query-free attack's shadow"),
    ],
)
def test_a_budget_of_no_epochs_is_refused_in_one_line(option, value, message, tmp_path, capsys, monkeypatch):
    """`--inverter_epochs 0` reported untrained inverse networks as leakage; it is refused before any image is
    decoded, in one line."""
    from upconv.cli.main import main
    from upconv.privacy import config

    monkeypatch.setattr(config, "load_splits", lambda *a, **k: pytest.fail("images decoded before the check"))
    with pytest.raises(SystemExit) as e:
        main(["privacy", "--data", "embedded", option, value, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"upconv: error: {message}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_tradeoff_legend_hides_no_line(tmp_path, monkeypatch):
    """The leakage–utility figure had its legend inside the first panel, over the curves; it sits below them."""
    from types import SimpleNamespace

    import matplotlib.figure

    from upconv.privacy import report

    seen, real = {}, matplotlib.figure.Figure.savefig

    def recording(fig, path, *args, **kwargs):
        fig.canvas.draw()
        boxes = [leg.get_window_extent() for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if leg]
        seen["legends"] = len(boxes)
        seen["overlap"] = any(b.overlaps(ax.get_window_extent()) for b in boxes for ax in fig.axes)
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording)
    defenses = {"noise": [0.5, 2.0], "quantize": [4, 2]}
    rows = []
    for d in ("paper", "upconvnet"):
        rows.append(dict(attack="black_box_dist", decoder=d, layer="relu22", defense="none", attacker="clean"))
        for kind, strengths in defenses.items():
            for who in ("clean", "adaptive"):
                rows += [
                    dict(attack="black_box_dist", decoder=d, layer="relu22", defense=kind, attacker=who, strength=s)
                    for s in strengths
                ]
    for i, r in enumerate(rows):
        r.update(utility=0.4 - 0.01 * i, psnr=18.0 - 0.2 * i)
    settings = {"layers": ["relu22"], "decoders": ["paper", "upconvnet"], "defenses": defenses}
    result = SimpleNamespace(
        settings={**settings, "attackers": ["clean", "adaptive"]},
        rows=rows,
        floor_rows=[{"attack": "floor: mean image", "psnr": 12.0}, {"attack": "floor: class mean", "psnr": 13.0}],
    )
    report._plot_tradeoff(result, "black_box_dist", str(tmp_path / "tradeoff.png"))
    assert seen == {"legends": 1, "overlap": False}

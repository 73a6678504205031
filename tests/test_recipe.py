"""The decoder recipe as one value: one default per knob, read by InversionModule, LightningCLI and the privacy
inverters alike; older checkpoints and configs still load; and the guard's spike weight wired into both training
loops (a finite spike moves a decoder no more than an ordinary step)."""

import dataclasses
import inspect
import sys
from pathlib import Path
from unittest import mock

import lightning
import pytest
import torch
import torch.nn.functional as F
import yaml
from test_privacy_defences import smooth, tiny_victim

from upconv.privacy import attacks
from upconv.privacy.attacks import InverterSettings, train_inverters
from upconv.training.health import GuardSettings, HealthGuard
from upconv.training.module import InversionModule
from upconv.training.recipes import DecoderRecipe

TINY = dict(encoder={"name": "alexnet_cifar", "kwargs": {"width": 0.25}}, width=8, fc_width=32, max_width=32)
RECIPE_FIELDS = {f.name for f in dataclasses.fields(DecoderRecipe)} | {
    f.name for f in dataclasses.fields(GuardSettings)
}


# ---------------------------------------------------------------------- one value, one default per knob
def test_every_knob_has_one_default_and_the_users_take_it_whole():
    module = inspect.signature(InversionModule)
    assert not (RECIPE_FIELDS - {"guard"}) & set(module.parameters)  # no loose copy of a recipe field
    assert module.parameters["recipe"].default == DecoderRecipe()
    assert inspect.signature(HealthGuard).parameters["settings"].default == DecoderRecipe().guard
    assert inspect.signature(InverterSettings).parameters["recipe"].default == DecoderRecipe()
    chosen = DecoderRecipe(lr=3e-4, grad_clip=0.5, guard=GuardSettings(patience=5, check_every=2))
    m = InversionModule(layers=["conv1"], **TINY, recipe=chosen)
    assert m.recipe == chosen and m.health.settings == chosen.guard
    assert InversionModule(layers=["conv1"], **TINY, recipe=chosen.as_dict()).recipe == chosen  # plain fields
    assert DecoderRecipe(grad_clip=0).grad_clip is None  # 0 means off, as None does


def test_bad_recipes_say_what_a_recipe_needs():
    for bad in (dict(lr=0.0), dict(warmup=2.0), dict(grad_clip=-1.0)):
        with pytest.raises(ValueError, match="a decoder recipe needs lr > 0"):
            DecoderRecipe(**bad)
    with pytest.raises(ValueError, match="the health guard needs skip_factor"):
        GuardSettings(patience=0)
    with pytest.raises(ValueError, match="unknown decoder-recipe field.*patience; a recipe has lr"):
        DecoderRecipe.of({"lr": 1e-3, "patience": 3})


def test_a_checkpoint_with_the_older_loose_recipe_fields_loads_with_that_recipe(tmp_path):
    torch.manual_seed(0)
    m = InversionModule(layers=["conv1"], **TINY, log_images=0)
    hparams = {k: v for k, v in m.hparams.items() if k != "recipe"}
    hparams |= dict(lr=1e-3, grad_clip=0.25, patience=5, max_recoveries=1)  # as written before DecoderRecipe
    ckpt = {
        "state_dict": m.state_dict(),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": lightning.__version__,
    }
    m.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "old.ckpt")
    loaded = InversionModule.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.recipe == DecoderRecipe(lr=1e-3, grad_clip=0.25, guard=GuardSettings(patience=5, max_recoveries=1))
    assert loaded.health.settings.patience == 5
    # and a new checkpoint keeps the recipe as plain fields (loads with weights_only=True)
    ckpt = {"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams), "pytorch-lightning_version": "2"}
    m.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "new.ckpt")
    assert torch.load(tmp_path / "new.ckpt", weights_only=True)["hyper_parameters"]["recipe"]["guard"]["patience"] == (
        GuardSettings().patience
    )


def _parse(args):
    """LightningCLI's parse and instantiation of ``args`` (no fit), as train.py does it."""
    from upconv.training.cli import UpconvCLI
    from upconv.training.datamodule import ImageData

    with mock.patch.object(sys, "argv", ["train.py"]):  # the test runner's own arguments are not the command's
        return UpconvCLI(datamodule_class=ImageData, subclass_mode_model=True, run=False, args=args)


def test_the_command_line_reads_the_recipe_nested_and_an_older_config_loose(tmp_path):
    model = {"class_path": "upconv.training.module.InversionModule", "init_args": {**TINY, "layers": ["conv1"]}}
    data = {"images": {"source": "embedded", "embedded_per_class": 2}, "batch_size": 4}
    new, old = tmp_path / "new.yaml", tmp_path / "old.yaml"
    new.write_text(yaml.safe_dump({"model": model | {"init_args": {**model["init_args"], "recipe": {"lr": 1e-3}}}}))
    old.write_text(yaml.safe_dump({"model": {**model, "init_args": {**model["init_args"], "lr": 1e-3, "patience": 5}}}))
    cli = _parse(["--config", str(new), "--data", yaml.safe_dump(data), "--model.init_args.recipe.guard.patience=5"])
    want = DecoderRecipe(lr=1e-3, guard=GuardSettings(patience=5))
    assert cli.model.recipe == want
    with pytest.warns(
        UserWarning, match=r"model.init_args.lr → model.init_args.recipe.lr.*patience → .*guard.patience"
    ):
        cli = _parse(["--config", str(old), "--data", yaml.safe_dump(data)])
    assert cli.model.recipe == want
    with pytest.warns(UserWarning, match="model.init_args.skip_factor → model.init_args.recipe.guard.skip_factor"):
        cli = _parse(["--config", str(new), "--data", yaml.safe_dump(data), "--model.init_args.skip_factor=20"])
    assert cli.model.recipe.guard.skip_factor == 20
    assert not list(tmp_path.parent.glob("upconv-config-*"))  # the translated copy is gone


def test_a_classifiers_own_lr_is_not_taken_for_a_decoder_recipe(tmp_path, recwarn):
    from upconv.training.cli import legacy_recipe_args

    config = Path(__file__).resolve().parents[1] / "configs" / "demo_encoder.yaml"
    assert "lr" in yaml.safe_load(config.read_text())["model"]["init_args"]  # a classifier config with its own lr
    args = ["--config", str(config), "--model.init_args.lr=0.1"]
    temporary = []
    assert legacy_recipe_args(args, temporary) == args and temporary == []
    assert not [w for w in recwarn if "decoder-recipe" in str(w.message)]


# ---------------------------------------------------------------------- the spike weight, wired in
def _residual_spike(pred, target):
    """The loss against a target whose error is 10× the true one: 100× the loss, 10× its gradient, as a bad
    batch gives (an MSE gradient grows as √loss)."""
    return F.mse_loss(pred, 10 * target - 9 * pred.detach())


def _drift(clean, spiked, ordinary_from=5):
    """How far each state after the spike (step 10) is from the spike-free run's, in ordinary steps (the
    spike-free run's largest step from step ``ordinary_from`` on)."""
    ordinary = max((clean[i] - clean[i - 1]).norm().item() for i in range(ordinary_from, len(clean)))
    return [(spiked[i] - clean[i]).norm().item() / ordinary for i in range(11, len(clean))]


def _module_states(spike_at=None, gate_on=True):
    """The decoder's parameters after each of 14 steps of InversionModule.training_step + the recipe's AdamW."""
    torch.manual_seed(0)
    m = InversionModule(layers=["conv1"], **TINY, log_images=0, recipe=DecoderRecipe(lr=1e-3))
    groups = [{"params": list(m.decoders[n].parameters())} for n in m.layers]
    opt, sched = m.recipe.optimizer(groups, 100)
    m.health.bind(opt, sched)
    if not gate_on:  # the control: the same run with the spike weight removed from training_step
        m.health.gate = lambda losses: torch.ones_like(losses)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    real, states = m._losses, []
    for step in range(14):
        if step == spike_at:
            _, recon = real(x)
            m._losses = lambda images, recon=recon: ({"conv1": _residual_spike(recon["conv1"], images)}, recon)
        opt.zero_grad()
        m.training_step((x, None), step).backward()
        opt.step()
        sched.step()
        m._losses = real
        states.append(torch.cat([p.detach().flatten().clone() for p in m.decoders.parameters()]))
    return states


def test_a_finite_spike_moves_an_inversion_module_decoder_no_more_than_an_ordinary_step():
    """A spike's gradient is weighted back to an ordinary step's on the device: after it, the decoder stays
    within a tenth of an ordinary step of where the spike-free run is; without the weight (control) AdamW's
    moments carry it a whole step away within three steps."""
    clean = _module_states()
    assert max(_drift(clean, _module_states(spike_at=10))) < 0.1
    assert _drift(clean, _module_states(spike_at=10, gate_on=False))[-1] > 0.5


def _inverter_states(monkeypatch, spike_at=None, gate_on=True):
    """The inverse network's parameters at the start of each of 18 steps of train_inverters' own loop."""
    built, states = [], []
    build = attacks.build_inverter
    monkeypatch.setattr(attacks, "build_inverter", lambda *a, **k: built.append(build(*a, **k)) or built[-1])

    class Spiking:  # torch.nn.functional as the loop sees it, with step ``spike_at``'s loss spiked
        def __getattr__(self, name):
            return getattr(F, name)

        @staticmethod
        def mse_loss(pred, target):
            states.append(torch.cat([p.detach().flatten().clone() for p in built[0].parameters()]))
            return _residual_spike(pred, target) if len(states) - 1 == spike_at else F.mse_loss(pred, target)

    monkeypatch.setattr(attacks, "F", Spiking())
    if not gate_on:
        monkeypatch.setattr(HealthGuard, "gate", lambda self, losses: torch.ones_like(losses))
    s = InverterSettings(kinds=("paper",), epochs=18, batch_size=8, recipe=DecoderRecipe(lr=1e-3))
    train_inverters(tiny_victim(), ["relu2"], smooth(8, 0)[0], s)
    return states[1:]  # states[k]: after step k


def test_a_finite_spike_moves_a_privacy_inverter_no_more_than_an_ordinary_step(monkeypatch):
    runs = {}
    for name, kw in {"clean": {}, "gated": dict(spike_at=10), "ungated": dict(spike_at=10, gate_on=False)}.items():
        with monkeypatch.context() as patch:
            runs[name] = _inverter_states(patch, **kw)
    assert max(_drift(runs["clean"], runs["gated"])) < 0.1
    assert _drift(runs["clean"], runs["ungated"])[-1] > 0.3  # the control: without the weight it drifts away

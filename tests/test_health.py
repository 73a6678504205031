"""Training health: per-decoder clipping, the divergence guard, and health records in checkpoints."""

import copy
import os
import re

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from upconv.data.source import ImageSource
from upconv.nets.checkpoints import load_decoders
from upconv.training.datamodule import ImageData
from upconv.training.health import GuardSettings, HealthGuard
from upconv.training.module import InversionModule
from upconv.training.recipes import DecoderRecipe, clip_grad_norms

TINY = dict(encoder={"name": "alexnet_cifar", "kwargs": {"width": 0.25}}, width=8, fc_width=32, max_width=32)


# ---------------------------------------------------------------------- the guard on a hand-computable toy
def toy_guard(**kw):
    decoders = nn.ModuleDict({"a": nn.Linear(1, 1, bias=False), "b": nn.Linear(1, 1, bias=False)})
    with torch.no_grad():
        decoders["a"].weight.fill_(1.0)
        decoders["b"].weight.fill_(2.0)
    opt = torch.optim.SGD([{"params": decoders[n].parameters()} for n in decoders], lr=0.1, momentum=0.9)
    guard = HealthGuard(decoders, GuardSettings(**kw))
    guard.bind(opt)
    return decoders, opt, guard


def drive(decoders, guard, losses_a, losses_b=None, start=0):
    """Feed per-step losses as a training loop would: the step's loss is computed on the current state, then
    the update (here: decoder "a"'s weight becomes the step number + 1, so a restored weight names the state's
    step), then the guard's check when due. Returns the gate weights of "a" and the events."""
    weights, events = [], []
    for k, la in enumerate(losses_a):
        step = start + k
        lb = 1.0 if losses_b is None else losses_b[k]
        weights.append(guard.gate(torch.tensor([la, lb]))[0].item())
        with torch.no_grad():
            decoders["a"].weight.fill_(step + 1.0)  # the state after update `step`
        if guard.due(step + 1):
            events += guard.check(step + 1)
    return weights, events


def test_a_self_correcting_one_step_spike_causes_no_restore():
    decoders, opt, guard = toy_guard(check_every=4, patience=2)
    losses = [1.0] * 6 + [360.0] + [0.9] * 9  # the step-6 spike is over at step 7
    weights, events = drive(decoders, guard, losses)
    assert [e.kind for e in events] == ["skipped steps"]  # recorded, but nothing restored
    assert events[0].since == 6 and "tamed the gradient of 1 of 4 steps" in events[0].action
    assert decoders["a"].weight.item() == 16.0  # trained on, never sent back
    assert weights[6] == pytest.approx((1.0 / 360.0) ** 0.5)  # its gradient tamed to an ordinary step's norm
    assert all(w == 1.0 for i, w in enumerate(weights) if i != 6)
    assert guard.smoothed["a"] < 1.0  # the spike never entered the level: a moving average would still be high
    rec = guard.record()["a"]
    assert rec["status"] == "ok" and rec["recoveries"] == 0 and rec["skipped_steps"] == 1
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # no learning-rate back-off either


def test_a_divergence_at_step_10_is_caught_before_step_15_and_loses_only_the_steps_since_the_last_good_state():
    decoders, opt, guard = toy_guard(check_every=4, patience=2)
    losses = [1.0] * 10 + [float("nan")] + [1e6] * 3  # blows up at step 10 and stays blown up
    weights, events = drive(decoders, guard, losses)
    restores = [e for e in events if e.kind != "skipped steps"]
    first = restores[0]
    assert first.step < 15 and first.since == 10 and first.layer == "a"
    assert weights[10] == 0.0 and weights[11] < 1e-2  # its gradients never reached the optimizer in full
    assert guard.snapshot_step["a"] == 8  # the state at the last check, confirmed by step 8's loss
    assert "restored its state from step 8" in first.action  # lost steps 8 … 12: no more than check_every + patience
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) and opt.param_groups[1]["lr"] == pytest.approx(0.1)
    assert guard.record()["b"]["events"] == []  # the other decoder is never touched


def test_a_decoder_that_stays_diverged_is_failed_keeps_its_last_good_weights_and_stops_learning():
    decoders, opt, guard = toy_guard(check_every=4, patience=2, max_recoveries=1)
    weights, events = drive(decoders, guard, [1.0] * 6 + [float("nan")] * 14)
    assert guard.failed == {"a"} and guard.active == ["b"]
    assert [e.kind for e in events] == ["non-finite loss", "non-finite loss"]
    assert "failed after 1 recoveries" in events[-1].action
    assert opt.param_groups[0]["lr"] == 0.0  # still in the graph (same on every rank), never updated
    assert guard.gate(torch.tensor([0.5, 1.0]))[0].item() == 0.0  # even a fine loss no longer trains it
    rec = guard.record()["a"]
    assert rec["status"] == "failed" and not rec["healthy"]


def test_a_slow_drift_that_never_spikes_is_caught_against_the_best_level():
    decoders, opt, guard = toy_guard(check_every=4, patience=2, spike_factor=4.0)
    losses = [1.0] * 8 + [1.0 * 1.25**k for k in range(1, 40)]  # +25 % a step: always within 10 × its level
    weights, events = drive(decoders, guard, losses)
    assert all(w == 1.0 for w in weights[:20])
    drift = [e for e in events if e.kind == "loss drift"]
    assert drift and drift[0].reference == pytest.approx(1.0) and drift[0].loss > 4.0


def test_a_healthy_noisy_run_is_never_touched():
    decoders, opt, guard = toy_guard(check_every=4, patience=2)
    g = torch.Generator().manual_seed(0)
    losses = (torch.linspace(1.0, 0.1, 200) * (1 + 0.5 * torch.rand(200, generator=g))).tolist()  # ±50 % noise
    weights, events = drive(decoders, guard, losses)
    assert events == [] and all(w == 1.0 for w in weights)
    assert guard.snapshot_step["a"] == 196  # good states confirmed all along


def test_the_guard_resumes_from_its_record():
    decoders, opt, guard = toy_guard(check_every=4, patience=2, max_recoveries=1)
    drive(decoders, guard, [1.0] * 6 + [float("nan")] * 14)
    fresh_decoders, fresh_opt, fresh = toy_guard(check_every=4, patience=2, max_recoveries=1)
    fresh.load_record(guard.record())
    fresh.bind(fresh_opt)
    assert fresh.failed == {"a"} and fresh_opt.param_groups[0]["lr"] == 0.0
    assert fresh.record() == guard.record()


# ---------------------------------------------------------------------- per-decoder clipping
def test_per_decoder_clipping_keeps_one_pass_equal_to_each_decoder_alone():
    """Summed losses, clipping per decoder and one AdamW step == each decoder trained alone with its own
    clipping; a global norm over all decoders (the control) would differ."""
    torch.manual_seed(0)
    joint = InversionModule(
        layers=["conv1", "pool2"], **TINY, recipe=DecoderRecipe(grad_clip=0.01)
    )  # small: clipping is active
    solo = {n: copy.deepcopy(joint.decoders[n]) for n in joint.layers}
    glob = copy.deepcopy(joint.decoders)
    groups = lambda ds: [{"params": ds[n].parameters()} for n in joint.layers]  # noqa: E731
    opt = torch.optim.AdamW(groups(joint.decoders), lr=1e-2, weight_decay=1e-4)
    opt_glob = torch.optim.AdamW(groups(glob), lr=1e-2, weight_decay=1e-4)
    opts = {n: torch.optim.AdamW(d.parameters(), lr=1e-2, weight_decay=1e-4) for n, d in solo.items()}
    for _ in range(3):
        x = torch.rand(4, 3, 32, 32)
        opt.zero_grad()
        joint.training_step((x, None), 0).backward()
        joint.configure_gradient_clipping(opt)
        opt.step()
        feats = joint.encoder(x, joint.layers)
        for n, d in solo.items():
            opts[n].zero_grad()
            F.mse_loss(d(feats[n]), x).backward()
            torch.nn.utils.clip_grad_norm_(d.parameters(), 0.01)
            opts[n].step()
        opt_glob.zero_grad()
        sum(F.mse_loss(glob[n](feats[n]), x) for n in joint.layers).backward()
        torch.nn.utils.clip_grad_norm_(glob.parameters(), 0.01)
        opt_glob.step()
    for n, d in solo.items():
        for p, q in zip(joint.decoders[n].parameters(), d.parameters()):
            torch.testing.assert_close(p, q)
    differs = any(not torch.allclose(p, q) for p, q in zip(joint.decoders.parameters(), glob.parameters()))
    assert differs, "the global-norm control should couple the decoders"


def test_clip_grad_norms_bounds_each_decoder_separately():
    decoders = nn.ModuleDict({"a": nn.Linear(3, 1), "b": nn.Linear(3, 1)})
    for p, g in zip(decoders.parameters(), (100.0, 100.0, 1e-3, 1e-3)):
        p.grad = torch.full_like(p, g)
    clip_grad_norms(decoders, 1.0)
    norm = lambda d: torch.cat([p.grad.flatten() for p in d.parameters()]).norm()  # noqa: E731
    assert norm(decoders["a"]) == pytest.approx(1.0, rel=1e-5)
    assert norm(decoders["b"]) == pytest.approx(2e-3, rel=1e-5)  # small gradients are left alone


def test_trainer_wide_clipping_is_refused(tmp_path):
    m = InversionModule(layers=["conv1"], **TINY)
    with pytest.raises(
        ValueError, match="clips all decoders' gradients together.*use model.init_args.recipe.grad_clip"
    ):
        _fit(m, tmp_path, gradient_clip_val=1.0)


# ---------------------------------------------------------------------- faults inside a real run
class Sabotage(L.Callback):
    """At ``step``, overwrite one decoder's last layer with NaN (a blow-up); with ``always``, also make every
    later gradient of that decoder NaN (a decoder that cannot recover)."""

    def __init__(self, layer: str, step: int, always: bool = False) -> None:
        self.layer, self.step, self.always = layer, step, always

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.decoders[self.layer].body[-1].weight.fill_(float("nan"))
            if self.always:
                for p in module.decoders[self.layer].parameters():
                    p.register_hook(lambda g: g * float("nan"))


def _fit(module, tmp_path, steps=12, callbacks=(), **trainer_kw):
    data = ImageData(images=ImageSource(source="embedded", embedded_per_class=12), batch_size=16)
    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        log_every_n_steps=3,
        callbacks=list(callbacks),
        **trainer_kw,
    )
    trainer.fit(module, data)
    return trainer


LAYERS = ["conv1", "pool2", "fc6"]


def _run(tmp_path, callbacks=(), **kw):
    torch.manual_seed(0)
    m = InversionModule(layers=LAYERS, **{**TINY, **kw})
    trainer = _fit(m, tmp_path, callbacks=callbacks)
    return m, trainer


def test_a_blow_up_in_one_decoder_is_recovered_and_never_touches_the_others(tmp_path):
    clean, _ = _run(tmp_path / "clean")
    assert [e for e in clean.health.events if e.kind != "skipped steps"] == []  # no false alarm on healthy training
    faulty, trainer = _run(tmp_path / "faulty", callbacks=[Sabotage("pool2", step=4)])
    for n in ("conv1", "fc6"):  # bit for bit what they are without the fault
        for p, q in zip(clean.decoders[n].parameters(), faulty.decoders[n].parameters()):
            assert torch.equal(p, q)
    assert all(torch.isfinite(p).all() for p in faulty.decoders["pool2"].parameters())
    health = faulty.health.record()
    assert health["pool2"]["status"] == "recovered" and health["pool2"]["healthy"]
    assert [e["kind"] for e in health["pool2"]["events"] if e["kind"] != "skipped steps"] == ["non-finite loss"], (
        health["pool2"]["events"]
    )
    assert health["conv1"]["status"] == health["fc6"]["status"] == "ok"
    path = tmp_path / "dec.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    dec = load_decoders(path)
    assert dec.health["pool2"]["status"] == "recovered" and dec.health["conv1"]["status"] == "ok"


def test_a_decoder_that_cannot_recover_is_marked_failed_and_the_run_goes_on(tmp_path):
    clean, _ = _run(tmp_path / "clean")
    faulty, trainer = _run(
        tmp_path / "faulty",
        callbacks=[Sabotage("fc6", step=4, always=True)],
        recipe=DecoderRecipe(guard=GuardSettings(max_recoveries=1)),
    )
    assert faulty.health.failed == {"fc6"}
    assert all(torch.isfinite(p).all() for p in faulty.decoders["fc6"].parameters())  # its last good weights
    for n in ("conv1", "pool2"):
        for p, q in zip(clean.decoders[n].parameters(), faulty.decoders[n].parameters()):
            assert torch.equal(p, q)
    path = tmp_path / "dec.ckpt"
    trainer.save_checkpoint(path)
    resumed = InversionModule.load_from_checkpoint(path)  # the resume path keeps the verdict
    assert resumed.health.failed == {"fc6"} and resumed.health.active == ["conv1", "pool2"]
    assert load_decoders(path).health["fc6"]["healthy"] is False


def _losses_on(module, images):
    with torch.no_grad():
        losses, _ = module._losses(images)
    return {n: v.item() for n, v in losses.items()}


def _ten_times_rate_run(layers, steps=30, guard=GuardSettings(), **kw):
    torch.manual_seed(0)
    m = InversionModule(
        encoder={"name": "alexnet_cifar", "kwargs": {"width": 0.25}},
        layers=layers,
        width=16,
        fc_width=512,
        recipe=DecoderRecipe(lr=1e-2, guard=guard),
        **kw,
    )  # 10 × the paper's rate (1e-3), 5 × the recipe's
    data = ImageData(images=ImageSource(source="embedded", embedded_per_class=40, seed=0), batch_size=16)
    data.setup()
    held_out = data.source.tensors("val")[0][:64].float() / 255  # (64, 3, 32, 32)
    before = _losses_on(m, held_out)
    L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
    ).fit(m, data)
    return m, before, _losses_on(m, held_out)


@pytest.mark.slow
def test_ten_times_the_default_rate_ends_below_the_initial_loss_or_names_the_failures():
    # The fault is real: the paper's decoders (no normalisation), unguarded, blow up at this rate.
    _, before, after = _ten_times_rate_run(
        ["fc6", "fc7"], norm="none", guard=GuardSettings(skip_factor=1e30, spike_factor=1e30)
    )
    assert any(after[n] > before[n] for n in before), (before, after)
    m, before, after = _ten_times_rate_run(["all"], norm="none")
    for n in m.layers:
        assert after[n] < before[n] or n in m.health.failed, (n, before[n], after[n], m.health.record()[n])
    assert m.health.events, "at this rate the guard should have had to act"


def test_the_shipped_recipe_saves_small_weights_each_epoch_and_resumes_from_its_full_state(
    tmp_path, monkeypatch, capsys
):
    """configs/cifar10_alexnet_all.yaml shrunk: decoders.ckpt (weights + health, no optimizer state) every
    epoch, last.ckpt (full state) every 5 epochs, and --ckpt_path resumes where the run stopped."""
    from upconv.training.cli import main

    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.chdir(tmp_path)
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "cifar10_alexnet_all.yaml")
    args = [
        "--config",
        config,
        "--data.images.source=embedded",
        "--data.images.root=null",
        "--data.images.embedded_per_class=2",
        "--data.batch_size=4",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_train_batches=1",  # one step an epoch: the cadence, not the training, is under test
        "--model.init_args.encoder.weights=null",
        "--model.init_args.width=4",
        "--model.init_args.fc_width=16",
        "--model.init_args.max_width=16",
        f"--runs_dir={tmp_path}/runs",
    ]

    class Killed(Exception):
        pass

    def kill_at_epoch_5(module):
        if module.current_epoch == 5:
            raise Killed

    with monkeypatch.context() as patch, pytest.raises(Killed):  # only the kill is undone, not the chdir
        patch.setattr(InversionModule, "on_train_epoch_start", kill_at_epoch_5, raising=False)
        main(["fit", *args, "--trainer.max_epochs=6"])
    ckpts = tmp_path / "checkpoints" / "alexnet_cifar_all"
    assert sorted(p.name for p in ckpts.iterdir()) == ["decoders.ckpt", "last.ckpt"]
    small = torch.load(ckpts / "decoders.ckpt", weights_only=True)
    full = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert "optimizer_states" not in small and "optimizer_states" in full and full["epoch"] == 4
    assert set(small["upconv"]["health"]) == set(small["upconv"]["layers"]) and len(small["upconv"]["layers"]) == 11
    assert os.path.getsize(ckpts / "decoders.ckpt") < 0.6 * os.path.getsize(ckpts / "last.ckpt")
    cli = main(["fit", *args, "--trainer.max_epochs=6", f"--ckpt_path={ckpts / 'last.ckpt'}"])
    assert cli.trainer.current_epoch == 6 and cli.trainer.global_step == 6 * full["global_step"] // 5
    with pytest.raises(SystemExit) as stop:  # a longer run cannot continue this schedule: one line, exit 2
        main(["fit", *args, "--trainer.max_epochs=7", f"--ckpt_path={ckpts / 'last.ckpt'}"])
    assert stop.value.code == 2
    assert re.search(
        r"train.py: error: the resumed run's learning-rate schedule was planned for \d+ steps.*resume "
        r"with the run's own",
        capsys.readouterr().err,
    )


@pytest.mark.slow
def test_compiled_decoders_match_eager_and_keep_checkpoint_names():
    torch.manual_seed(0)
    m = InversionModule(layers=["pool2"], **TINY, compile=True)
    names = list(m.state_dict())
    x = torch.rand(4, 3, 32, 32)
    m.eval()  # batch norm: running statistics, the same on both paths
    with torch.no_grad():
        eager = m(x)["pool2"]
        m.setup("fit")  # compiles in place
        compiled = m(x)["pool2"]
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    assert list(m.state_dict()) == names  # checkpoints of compiled runs load into eager decoders


def test_a_short_run_leaves_its_full_state_and_its_training_losses(tmp_path):
    """A run shorter than LastState's interval still ends with a resumable last.ckpt (written through a
    hidden sibling), and the guard's losses and counters reach metrics.csv although the run is shorter than
    the trainer's logging interval."""
    import csv

    from upconv.training.callbacks import LastState

    torch.manual_seed(0)
    m = InversionModule(layers=["conv1", "fc6"], **TINY)
    data = ImageData(images=ImageSource(source="embedded", embedded_per_class=12), batch_size=16)
    from lightning.pytorch.loggers import CSVLogger

    trainer = L.Trainer(
        max_epochs=2,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path, name="run"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[LastState(str(tmp_path / "ckpt"), every_n_epochs=5)],
    )
    trainer.fit(m, data)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["last.ckpt"]  # nothing half-written left beside it
    full = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert full["global_step"] == trainer.global_step and "optimizer_states" in full
    assert full["upconv"]["health"]["conv1"]["status"] == "ok"
    with open(os.path.join(trainer.logger.log_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get("train/loss_conv1_epoch")]
    assert len(logged) == 2 and trainer.log_every_n_steps > trainer.global_step  # one row per epoch
    assert all(r["train/skipped_steps_epoch"] != "" for r in logged)  # the counters are written, not just headed


class _Killed(RuntimeError):
    pass


class _KillAt(L.Callback):
    """Kills the run right after step ``step`` (and after the callbacks before it, LastState's save included)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise _Killed(f"killed at step {self.step}")


class _Batches(L.Callback):
    """Records (step, a fingerprint of the batch's images) of every training step."""

    def __init__(self) -> None:
        self.seen = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append((trainer.global_step, round(float(batch[0].double().sum()), 6)))


def test_a_run_killed_within_an_epoch_resumes_where_it_stopped(tmp_path):
    """LastState saves within an epoch by the clock (every_n_minutes=0: at every check), so a kill loses
    minutes, not the run; the resumed run takes exactly the rest of that epoch's batches, in the same order, and
    ends at the uninterrupted run's step."""
    from upconv.training.callbacks import LastState

    data = ImageData(images=ImageSource(source="embedded", embedded_per_class=12), batch_size=16, augment=False)

    def fit(folder, *extra, resume=None):
        torch.manual_seed(0)
        m = InversionModule(layers=["conv1"], **TINY)
        batches = _Batches()
        trainer = L.Trainer(
            max_epochs=2,
            limit_val_batches=0,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            callbacks=[LastState(str(folder), every_n_minutes=0, check_every=1), *extra, batches],
        )
        trainer.fit(m, data, ckpt_path=resume)
        return trainer, batches.seen

    t_whole, whole = fit(tmp_path / "whole")
    per_epoch = t_whole.global_step // 2
    assert per_epoch >= 4
    kill = per_epoch + 2  # in the second epoch, two batches in
    with pytest.raises(_Killed):
        fit(tmp_path / "killed", _KillAt(kill))
    saved = torch.load(tmp_path / "killed" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == kill  # the state of the last step, not of the last epoch's end
    t_resumed, resumed = fit(tmp_path / "killed", resume=str(tmp_path / "killed" / "last.ckpt"))
    assert t_resumed.global_step == t_whole.global_step  # the rest of the epoch, not the whole epoch again
    assert resumed == whole[kill:]  # the same batches at the same steps

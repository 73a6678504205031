"""Training health: per-decoder clipping, the divergence guard, and health records in checkpoints."""

import copy
import os
import re

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from upconv.nets.checkpoints import load_decoders
from upconv.training.datamodule import ImageData
from upconv.training.health import HealthGuard, clip_grad_norms
from upconv.training.module import InversionModule

TINY = dict(encoder="alexnet_cifar", encoder_kwargs={"width": 0.25}, width=8, fc_width=32, max_width=32)


# ---------------------------------------------------------------------- the guard on a hand-computable toy
def toy_guard(**kw):
    decoders = nn.ModuleDict({"a": nn.Linear(1, 1, bias=False), "b": nn.Linear(1, 1, bias=False)})
    with torch.no_grad():
        decoders["a"].weight.fill_(1.0)
        decoders["b"].weight.fill_(2.0)
    opt = torch.optim.SGD([{"params": decoders[n].parameters()} for n in decoders], lr=0.1, momentum=0.9)
    guard = HealthGuard(decoders, **kw)
    guard.bind(opt)
    return decoders, opt, guard


def test_guard_restores_a_spiking_decoder_and_leaves_the_other_alone():
    decoders, opt, guard = toy_guard(spike_factor=4.0, lr_backoff=0.5, accept=1.5)
    guard.observe(torch.tensor([1.0, 1.0]), ["a", "b"])
    assert guard.check(step=1) == []  # first losses: the reference levels, both snapshotted
    with torch.no_grad():
        decoders["a"].weight.fill_(7.0)  # a bad update to "a" …
        decoders["b"].weight.fill_(3.0)  # … and an ordinary one to "b"
    opt.state[decoders["a"].weight]["momentum_buffer"] = torch.tensor([[5.0]])
    guard.observe(torch.tensor([4.5, 1.2]), ["a", "b"])  # latest 4.5 > 4 × 1.0; b within accept × 1.0
    events = guard.check(step=2)
    assert [(e.layer, e.kind, e.step) for e in events] == [("a", "loss spike", 2)]
    assert decoders["a"].weight.item() == 1.0  # its last confirmed state
    assert decoders["a"].weight not in opt.state  # with the optimizer state it had then (none yet)
    assert decoders["b"].weight.item() == 3.0  # untouched
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) and opt.param_groups[1]["lr"] == pytest.approx(0.1)
    # b's state at step 1 is now confirmed by the losses since; a's last confirmed state is the start.
    assert guard.snapshot_step == {"a": 0, "b": 1}
    rec = guard.record()
    assert rec["a"]["status"] == "recovered" and rec["a"]["healthy"] and rec["a"]["recoveries"] == 1
    assert rec["b"]["status"] == "ok" and rec["b"]["events"] == []


def test_guard_marks_a_decoder_failed_after_its_recoveries():
    decoders, opt, guard = toy_guard(max_recoveries=1)
    guard.observe(torch.tensor([1.0, 1.0]), ["a", "b"])
    guard.check(step=1)
    for step in (2, 3):
        guard.observe(torch.tensor([float("nan"), 0.9]), ["a", "b"])
        guard.check(step=step)
    assert guard.failed == {"a"} and guard.active == ["b"]
    assert decoders["a"].weight.item() == 1.0 and decoders["a"].weight.grad is None
    rec = guard.record()["a"]
    assert rec["status"] == "failed" and not rec["healthy"]
    assert [e["kind"] for e in rec["events"]] == ["non-finite loss", "non-finite loss"]
    assert "failed after 1 recoveries" in rec["events"][-1]["action"]


def test_a_slowly_rising_loss_is_not_snapshotted_as_good():
    decoders, opt, guard = toy_guard(spike_factor=4.0, accept=1.5)
    for step in (1, 2):
        guard.observe(torch.tensor([1.0, 1.0]), ["a", "b"])
        guard.check(step=step)
    assert guard.snapshot_step["a"] == 1  # step 1's state, vouched for by the losses of step 2
    with torch.no_grad():
        decoders["a"].weight.fill_(5.0)  # drifting
    for step in (3, 4):  # above accept × 1, below 4 × 1: neither good nor bad, never confirmed
        guard.observe(torch.tensor([3.0, 1.0]), ["a", "b"])
        assert guard.check(step=step) == []
    guard.observe(torch.tensor([4.5, 1.0]), ["a", "b"])
    assert [e.layer for e in guard.check(step=5)] == ["a"]
    assert decoders["a"].weight.item() == 1.0 and guard.snapshot_step["a"] == 1  # not the drifting state


def test_the_state_after_the_last_update_is_confirmed_only_by_later_losses():
    """A loss describes the weights *before* the step's update: a state is kept as good only once the
    next check's losses, computed on it, are fine."""
    decoders, opt, guard = toy_guard()
    guard.observe(torch.tensor([1.0, 1.0]), ["a", "b"])
    with torch.no_grad():
        decoders["a"].weight.fill_(float("nan"))  # the update after a fine loss broke the weights
    guard.check(step=1)  # fine losses: step 1's (broken) state is only a candidate
    guard.observe(torch.tensor([float("nan"), 1.0]), ["a", "b"])
    guard.check(step=2)
    assert decoders["a"].weight.item() == 1.0  # back to the start, not to the broken candidate


# ---------------------------------------------------------------------- per-decoder clipping
def test_per_decoder_clipping_keeps_one_pass_equal_to_each_decoder_alone():
    """Summed losses, clipping per decoder and one AdamW step == each decoder trained alone with its own
    clipping; a global norm over all decoders (the control) would differ."""
    torch.manual_seed(0)
    joint = InversionModule(layers=["conv1", "pool2"], **TINY, grad_clip=0.01)  # small: clipping is active
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
    with pytest.raises(ValueError, match="clips all decoders' gradients together.*use model.grad_clip"):
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
    data = ImageData(source="embedded", embedded_per_class=12, batch_size=16)
    trainer = L.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        log_every_n_steps=3, callbacks=list(callbacks), **trainer_kw)
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
    faulty, trainer = _run(tmp_path / "faulty", callbacks=[Sabotage("pool2", step=4)])
    for n in ("conv1", "fc6"):  # bit for bit what they are without the fault
        for p, q in zip(clean.decoders[n].parameters(), faulty.decoders[n].parameters()):
            assert torch.equal(p, q)
    assert all(torch.isfinite(p).all() for p in faulty.decoders["pool2"].parameters())
    health = faulty.health.record()
    assert health["pool2"]["status"] == "recovered" and health["pool2"]["healthy"]
    assert health["pool2"]["events"][0]["kind"] == "non-finite loss"
    assert health["conv1"]["status"] == health["fc6"]["status"] == "ok"
    path = tmp_path / "dec.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    dec = load_decoders(path)
    assert dec.health["pool2"]["status"] == "recovered" and dec.health["conv1"]["status"] == "ok"


def test_a_decoder_that_cannot_recover_is_marked_failed_and_the_run_goes_on(tmp_path):
    clean, _ = _run(tmp_path / "clean")
    faulty, trainer = _run(tmp_path / "faulty", callbacks=[Sabotage("fc6", step=4, always=True)], max_recoveries=1)
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


def _ten_times_rate_run(layers, steps=30, **kw):
    torch.manual_seed(0)
    m = InversionModule(encoder="alexnet_cifar", encoder_kwargs={"width": 0.25}, layers=layers, width=16,
                        fc_width=512, lr=1e-2, **kw)  # 10 × the default rate (1e-3)
    data = ImageData(source="embedded", embedded_per_class=40, batch_size=16, seed=0)
    data.setup()
    held_out = data.source.tensors("val")[0][:64].float() / 255  # (64, 3, 32, 32)
    before = _losses_on(m, held_out)
    L.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, log_every_n_steps=10).fit(m, data)
    return m, before, _losses_on(m, held_out)


@pytest.mark.slow
def test_ten_times_the_default_rate_ends_below_the_initial_loss_or_names_the_failures():
    # The fault is real: without clipping and with spikes ignored, decoders at this rate blow up.
    _, before, after = _ten_times_rate_run(["fc6", "fc7"], grad_clip=0, spike_factor=1e30)
    assert any(after[n] > before[n] for n in before), (before, after)
    m, before, after = _ten_times_rate_run(["all"])
    for n in m.layers:
        assert after[n] < before[n] or n in m.health.failed, (n, before[n], after[n], m.health.record()[n])
    assert m.health.events, "at this rate the guard should have had to act"


def test_the_shipped_recipe_saves_small_weights_each_epoch_and_resumes_from_its_full_state(tmp_path, monkeypatch, capsys):
    """configs/cifar10_alexnet_all.yaml shrunk: decoders.ckpt (weights + health, no optimizer state) every
    epoch, last.ckpt (full state) every 5 epochs, and --ckpt_path resumes where the run stopped."""
    from upconv.training.cli import main

    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.chdir(tmp_path)
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "cifar10_alexnet_all.yaml")
    args = ["--config", config, "--data.source=embedded", "--data.root=null", "--data.embedded_per_class=2",
            "--data.batch_size=4", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
            "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=1",
            "--model.init_args.encoder_weights=null", "--model.init_args.width=4", "--model.init_args.fc_width=16",
            "--model.init_args.max_width=16", f"--runs_dir={tmp_path}/runs"]
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
    assert re.search(r"train.py: error: the resumed run's one-cycle schedule was planned for \d+ steps.*resume "
                     r"with the run's own", capsys.readouterr().err)


@pytest.mark.slow
def test_compiled_decoders_match_eager_and_keep_checkpoint_names():
    torch.manual_seed(0)
    m = InversionModule(layers=["pool2"], **TINY, compile=True)
    names = list(m.state_dict())
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        eager = m(x)["pool2"]
        m.setup("fit")  # compiles in place
        compiled = m(x)["pool2"]
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    assert list(m.state_dict()) == names  # checkpoints of compiled runs load into eager decoders

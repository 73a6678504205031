"""Every shipped training config runs one step through train.py's LightningCLI, with its data swapped for
a few embedded images and its weights for random ones (real data and weights are not needed to check that
the config parses, builds and trains)."""

import glob
import os
import re

import pytest

from upconv.training.cli import default_loggers, main

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_training_config_runs_one_step(path, tmp_path, monkeypatch):
    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.chdir(tmp_path)
    text = open(path).read()
    args = [
        "fit",
        "--config",
        path,
        "--data.images.source=embedded",
        "--data.images.root=null",
        "--data.images.embedded_per_class=2",
        "--data.batch_size=4",
        "--trainer.fast_dev_run=1",
        "--trainer.accelerator=cpu",
        "--trainer.precision=32-true",
        f"--runs_dir={tmp_path}",
    ]
    if "ClassifierModule" in text:
        args += [f"--model.init_args.export={tmp_path}/enc.pt", "--model.init_args.num_classes=8"]
    else:
        args += [
            "--model.init_args.encoder.weights=null",
            "--model.init_args.encoder.pretrained=false",
            "--model.init_args.width=4",
            "--model.init_args.fc_width=16",
            "--model.init_args.max_width=16",
        ]
    if "image_size: 224" in text:
        args += ["--data.images.image_size=224"]
    cli = main(args)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


def test_wandb_logger_is_offline_and_optional(monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("UPCONV_WANDB", "1")
    loggers = default_loggers("x", "runs")
    assert [l["class_path"].rsplit(".", 1)[1] for l in loggers] == ["CSVLogger", "WandbLogger"]
    assert loggers[1]["init_args"]["offline"] is True and os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("UPCONV_WANDB", "0")
    assert len(default_loggers("x")) == 1


# ---------------------------------------------------------------- mistakes end in one line
DEMO = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml")


def _train(tmp_path, *extra):
    # Not fast_dev_run: it replaces the loggers, and the run folders they write are part of what is tested.
    return main(
        [
            "fit",
            "--config",
            DEMO,
            "--data.images.embedded_per_class=2",
            "--data.batch_size=4",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu",
            "--model.init_args.width=4",
            "--model.init_args.fc_width=16",
            "--model.init_args.max_width=16",
            f"--runs_dir={tmp_path}/runs",
            "--trainer.callbacks.init_args.dirpath=" + str(tmp_path / "ck"),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--model.init_args.encoder.weights=null", "--model.init_args.layers=[conv9]"],
            "unknown layer 'conv9' for alexnet_cifar; choose one of: conv1, ",
        ),
        (
            ["--model.init_args.encoder.weights=nowhere/encoder.pt"],
            "encoder weights file not found: nowhere/encoder.pt",
        ),
        (
            [
                "--model.init_args.encoder.weights=null",
                "--data.images.source=folder",
                "--data.images.root=nowhere/images",
            ],
            "data folder not found: nowhere/images",
        ),
        (  # a shipped config reused for another encoder, its weights left in place
            ["--model.init_args.encoder.name=he2019_cifar", "--model.init_args.encoder.weights=alex.pt"],
            "he2019_cifar cannot be built with kwargs {'width': 0.25",
        ),
        (
            [
                "--model.init_args.encoder.name=he2019_cifar",
                "--model.init_args.encoder.weights=alex.pt",
                "--model.init_args.encoder.kwargs={}",
            ],
            "the weights in alex.pt do not fit he2019_cifar: 16 of its 16 tensors are not in the file",
        ),
        (
            ["--model.init_args.encoder.weights=null", "--ckpt_path=weights_only.ckpt"],
            "weights_only.ckpt holds weights only (no optimizer, schedule or loop state), so a run cannot resume",
        ),
    ],
    ids=["layer typo", "missing weights", "missing data folder", "other kwargs", "other weights", "weights only"],
)
def test_config_mistakes_are_one_line_and_leave_no_run_folder(tmp_path, monkeypatch, capsys, extra, message):
    import torch

    from upconv.nets.builtin import ARCHITECTURES

    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.chdir(tmp_path)
    torch.save(ARCHITECTURES["alexnet_cifar"].build(width=0.25, num_classes=8).state_dict(), "alex.pt")
    torch.save({"state_dict": {"decoders.conv1.w": torch.zeros(2)}, "epoch": 1}, "weights_only.ckpt")
    earlier = tmp_path / "runs" / "demo" / "version_0"  # an earlier run's results are kept
    earlier.mkdir(parents=True)
    (earlier / "metrics.csv").write_text("step\n")
    with pytest.raises(SystemExit) as e:
        _train(tmp_path, *extra)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("train.py: error:")]
    assert len(lines) == 1 and lines[0].startswith("train.py: error: " + message)
    assert os.listdir(tmp_path / "runs" / "demo") == ["version_0"]  # no empty version_1


def _decoders_of(path, name, weights_hash, kwargs=None):
    """A decoders.ckpt as training writes it, recording encoder ``name``."""
    import torch

    record = {"name": name, "weights_hash": weights_hash, "spec": {"name": name, "kwargs": kwargs}}
    torch.save({"state_dict": {}, "upconv": {"encoder": record, "layers": ["conv1"]}}, path)
    return path.read_bytes()


def test_decoders_of_another_encoder_are_never_replaced_without_a_word(tmp_path, monkeypatch, capsys, caplog):
    """A shipped config reused for another encoder wrote over checkpoints/alexnet_cifar_all/decoders.ckpt. Now
    the run stops before its first step, in one line, and the file is untouched; decoders of the same
    encoder with other weights (the encoder retrained) are replaced with a warning."""
    monkeypatch.setenv("UPCONV_WANDB", "0")
    (tmp_path / "ck").mkdir()
    target = tmp_path / "ck" / "decoders.ckpt"
    before = _decoders_of(target, "he2019_cifar", "0123abcd")
    with pytest.raises(SystemExit) as e:
        _train(
            tmp_path,
            "--model.init_args.encoder.weights=null",
            "--trainer.callbacks.init_args.enable_version_counter=false",
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"train.py: error: {target} holds decoders trained for encoder he2019_cifar")
    assert "--checkpoints_dir" in err and target.read_bytes() == before
    _decoders_of(target, "alexnet_cifar", "0123abcd", {"width": 0.25})  # this architecture, other weights
    _train(
        tmp_path, "--model.init_args.encoder.weights=null", "--trainer.callbacks.init_args.enable_version_counter=false"
    )
    assert any("replacing" in r.getMessage() and "0123abcd" in r.getMessage() for r in caplog.records)
    import torch

    assert torch.load(target, weights_only=True)["upconv"]["encoder"]["weights_hash"] != "0123abcd"


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    from upconv.training.datamodule import ImageData

    def broken(self, stage=None):
        raise KeyError("a bug, not a user's mistake")

    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.setattr(ImageData, "setup", broken)
    with pytest.raises(KeyError, match="a bug"):
        _train(tmp_path, "--model.init_args.encoder.weights=null")


# ---------------------------------------------------------------- resume, typos, where a run writes
@pytest.mark.parametrize("kind", ["empty", "truncated"])
def test_resuming_from_a_damaged_checkpoint_is_one_line(tmp_path, monkeypatch, capsys, kind):
    import torch

    monkeypatch.setenv("UPCONV_WANDB", "0")
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 3}, good)
    bad = tmp_path / "last.ckpt"  # what a kill during a save leaves
    bad.write_bytes(b"" if kind == "empty" else good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SystemExit) as e:
        _train(tmp_path, "--model.init_args.encoder.weights=null", f"--ckpt_path={bad}")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    want = "is empty (0 bytes)" if kind == "empty" else "is truncated or corrupt"
    assert err.startswith(f"train.py: error: checkpoint to resume from (--ckpt_path) {bad} {want}")


def test_a_checkpoint_save_cut_short_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    import torch

    from upconv.training import cli

    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1}, path)

    def killed(obj, f):
        open(f, "wb").write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the kill arrives mid-write

    monkeypatch.setattr(cli.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        cli.AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no partial file left beside it


@pytest.mark.parametrize(
    "where, extra, message",
    [
        (
            "command line",
            ["--model.init_args.widht=4"],
            "unknown config key model.init_args.widht; did you mean model.init_args.width?",
        ),
        ("config file", ["--config", "TYPO"], "unknown config key trainer.max_epoch; did you mean trainer.max_epochs?"),
        ("data key", ["--data.batch_sise=3"], "unknown config key data.batch_sise; did you mean data.batch_size?"),
    ],
)
def test_a_typo_in_a_config_key_is_one_line_with_the_nearest_key(tmp_path, monkeypatch, capsys, where, extra, message):
    monkeypatch.setenv("UPCONV_WANDB", "0")
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  max_epoch: 3\n")
    with pytest.raises(SystemExit) as e:
        _train(tmp_path, *[str(typo) if a == "TYPO" else a for a in extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip() == f"train.py: error: {message}"


def test_checkpoints_dir_redirects_every_checkpoint_of_a_shipped_config(tmp_path, monkeypatch):
    """cifar10_alexnet_all.yaml holds a ModelCheckpoint (decoders.ckpt) and a LastState (last.ckpt); one option
    moves both, and saves are atomic (AtomicCheckpointIO)."""
    from upconv.training.callbacks import LastState
    from upconv.training.cli import AtomicCheckpointIO

    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.chdir(tmp_path)
    config = os.path.join(os.path.dirname(DEMO), "cifar10_alexnet_all.yaml")
    cli = main(
        [
            "fit",
            "--config",
            config,
            "--data.images.source=embedded",
            "--data.images.root=null",
            "--data.images.embedded_per_class=2",
            "--data.batch_size=4",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            "--trainer.accelerator=cpu",
            "--trainer.precision=32-true",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.encoder.weights=null",
            "--model.init_args.width=4",
            "--model.init_args.fc_width=16",
            "--model.init_args.max_width=16",
            f"--runs_dir={tmp_path}/runs",
            f"--checkpoints_dir={tmp_path}/mine",
        ]
    )
    savers = [cb for cb in cli.trainer.callbacks if hasattr(cb, "dirpath")]
    assert {type(cb).__name__ for cb in savers} == {"ModelCheckpoint", "LastState"}
    assert {cb.dirpath for cb in savers} == {str(tmp_path / "mine")}
    assert sorted(os.listdir(tmp_path / "mine")) == ["decoders.ckpt", "last.ckpt"]
    assert not (tmp_path / "checkpoints").exists() and any(isinstance(cb, LastState) for cb in savers)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_the_warnings_the_package_causes_on_purpose_are_silenced_and_no_others(tmp_path, monkeypatch):
    import warnings

    from upconv.training.cli import OWN_WARNINGS

    monkeypatch.setenv("UPCONV_WANDB", "0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(tmp_path, "--model.init_args.encoder.weights=null")
        warnings.warn("a warning of someone else's", stacklevel=1)  # still shown: the filters are narrow and scoped
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if any(re.match(p, m) for p in OWN_WARNINGS)], messages
    assert "a warning of someone else's" in messages

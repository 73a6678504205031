"""Every shipped training config runs one step through train.py's LightningCLI, with its data swapped for
a few embedded images and its weights for random ones (real data and weights are not needed to check that
the config parses, builds and trains)."""

import glob
import os

import pytest

from upconv.training.cli import default_loggers, main

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_training_config_runs_one_step(path, tmp_path, monkeypatch):
    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.chdir(tmp_path)
    text = open(path).read()
    args = ["fit", "--config", path, "--data.source=embedded", "--data.root=null", "--data.embedded_per_class=2",
            "--data.batch_size=4", "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.precision=32-true",
            f"--runs_dir={tmp_path}"]
    if "ClassifierModule" in text:
        args += [f"--model.init_args.export={tmp_path}/enc.pt", "--model.init_args.num_classes=8"]
    else:
        args += ["--model.init_args.encoder_weights=null", "--model.init_args.pretrained=false",
                 "--model.init_args.width=4", "--model.init_args.fc_width=16", "--model.init_args.max_width=16"]
    if "image_size: 224" in text:
        args += ["--data.image_size=224"]
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
    return main(["fit", "--config", DEMO, "--data.embedded_per_class=2", "--data.batch_size=4",
                 "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
                 "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu", "--model.init_args.width=4",
                 "--model.init_args.fc_width=16", "--model.init_args.max_width=16", f"--runs_dir={tmp_path}/runs",
                 "--trainer.callbacks.init_args.dirpath=" + str(tmp_path / "ck"), *extra])


@pytest.mark.parametrize("extra, message", [
    (["--model.init_args.encoder_weights=null", "--model.init_args.layers=[conv9]"],
     "unknown layer 'conv9' for alexnet_cifar; choose one of: conv1, "),
    (["--model.init_args.encoder_weights=nowhere/encoder.pt"], "encoder weights file not found: nowhere/encoder.pt"),
    (["--model.init_args.encoder_weights=null", "--data.source=folder", "--data.root=nowhere/images"],
     "data folder not found: nowhere/images"),
], ids=["layer typo", "missing weights", "missing data folder"])
def test_config_mistakes_are_one_line_and_leave_no_run_folder(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.chdir(tmp_path)
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


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    from upconv.training.datamodule import ImageData

    def broken(self, stage=None):
        raise KeyError("a bug, not a user's mistake")

    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.setattr(ImageData, "setup", broken)
    with pytest.raises(KeyError, match="a bug"):
        _train(tmp_path, "--model.init_args.encoder_weights=null")

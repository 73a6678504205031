"""Every shipped training config runs one step through train.py's LightningCLI, with its data swapped for
a few embedded images and its weights for random ones (real data and weights are not needed to check that
the config parses, builds and trains)."""

import glob
import os

import pytest

from upconv.training_cli import default_loggers, main

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

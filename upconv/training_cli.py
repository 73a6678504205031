"""LightningCLI for training: ``python train.py fit --config configs/<name>.yaml``.

Loggers: CSV always; wandb as well when it is installed (offline unless WANDB_MODE says otherwise;
UPCONV_WANDB=0 turns it off). A progress bar and a checkpoint callback come from the configs.
"""

from __future__ import annotations

import os

from lightning.pytorch.cli import LightningCLI

from .data import ImageData


class UpconvCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.add_argument("--run_name", type=str, default="run", help="folder name for logs under runs_dir")
        parser.add_argument("--runs_dir", type=str, default="runs", help="where run folders (logs) are written")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.get("logger") in (None, True):
            cfg.trainer.logger = default_loggers(cfg.get("run_name", "run"), cfg.get("runs_dir", "runs"))


def default_loggers(name: str, save_dir: str = "runs") -> list[dict]:
    loggers = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": save_dir, "name": name}}]
    if os.environ.get("UPCONV_WANDB", "1") != "0":
        try:
            import wandb  # noqa: F401
        except ImportError:
            return loggers
        os.environ.setdefault("WANDB_MODE", "offline")  # never a login prompt, never the network by default
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append({"class_path": "lightning.pytorch.loggers.WandbLogger",
                        "init_args": {"save_dir": save_dir, "project": "upconv", "name": name,
                                      "offline": os.environ["WANDB_MODE"] == "offline"}})
    return loggers


def main(args: list[str] | None = None) -> UpconvCLI:
    return UpconvCLI(datamodule_class=ImageData, subclass_mode_model=True, save_config_kwargs={"overwrite": True},
                     args=args, auto_configure_optimizers=False)


if __name__ == "__main__":
    main()

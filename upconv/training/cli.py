"""LightningCLI for training: ``python train.py fit --config configs/<name>.yaml``.

Loggers: CSV always; wandb as well when it is installed (offline unless WANDB_MODE says otherwise;
UPCONV_WANDB=0 turns it off). A progress bar and a checkpoint callback come from the configs.

A mistake in the config or on the command line (an unknown layer, a missing file) ends in one line,
``train.py: error: <what is wrong>``, and exit status 2; jsonargparse and Lightning would otherwise wrap it in
some 70 lines of traceback. Errors raised anywhere else (bugs) keep their traceback. A run that fails
before logging anything leaves no empty ``runs/<name>/version_N`` folder behind.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
import warnings
from argparse import ArgumentError
from dataclasses import fields
from typing import Any

import lightning.pytorch as L
import torch
import yaml
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from upconv.core.errors import config_error
from upconv.core.files import UnreadableFileError, atomic_file, check_torch_file
from upconv.data.batches import worker_message
from upconv.training.datamodule import ImageData
from upconv.training.health import GuardSettings
from upconv.training.recipes import DecoderRecipe

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the upconv package
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError)
# What SaveConfigCallback / loggers write before the first step: a folder holding only these has no results.
NO_RESULTS = {"config.yaml", "hparams.yaml"}
DECODER_MODEL = "InversionModule"  # the model whose recipe older configs kept loose


class UpconvCLI(LightningCLI):
    def init_parser(self, **kwargs: Any) -> Any:
        """Parsers that raise their errors (``config_error`` makes each one line) instead of printing usage."""
        return super().init_parser(**{"exit_on_error": False, **kwargs})

    def add_arguments_to_parser(self, parser) -> None:  # jsonargparse parser
        parser.add_argument("--run_name", type=str, default="run", help="folder name for logs under runs_dir")
        parser.add_argument("--runs_dir", type=str, default="runs", help="where run folders (logs) are written")
        parser.add_argument(
            "--checkpoints_dir",
            type=str | None,
            default=None,
            help="where checkpoints are written: replaces the dirpath of every ModelCheckpoint "
            "callback and the folder of model.init_args.export (default: the config's)",
        )
        self.known_keys = getattr(self, "known_keys", set()) | set(parser.get_defaults().keys())

    def parse_arguments(self, parser, args) -> None:  # jsonargparse parser, LightningCLI's args
        """Parse, turning a parser's error into one line; read an older config's loose decoder-recipe fields
        as the recipe's (``legacy_recipe_args``); refuse an unreadable ``--ckpt_path`` before LightningCLI reads
        its hyperparameters (a damaged file would otherwise end in a traceback)."""
        temporary: list[str] = []  # translated copies of older configs, read once by the parser
        try:
            super().parse_arguments(parser, legacy_recipe_args(sys.argv[1:] if args is None else args, temporary))
        except ArgumentError as e:
            raise ValueError(config_error(e, self.known_keys)) from None
        finally:
            for path in temporary:
                os.remove(path)
        ckpt = self.config.get(self.config.get("subcommand") or "", {}).get("ckpt_path")
        if ckpt:
            check_torch_file(ckpt, "checkpoint to resume from (--ckpt_path)")
            check_resumable(ckpt)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.get("logger") in (None, True):
            cfg.trainer.logger = default_loggers(cfg.get("run_name", "run"), cfg.get("runs_dir", "runs"))
        callbacks = cfg.trainer.get("callbacks") or []
        if cfg.get("checkpoints_dir"):
            redirect_checkpoints(cfg, callbacks, cfg.checkpoints_dir)
        cfg.trainer.callbacks = [
            *callbacks,
            {"class_path": f"{__name__}.RemoveEmptyRunFolders"},
            {"class_path": "upconv.training.callbacks.KeepOtherEncodersDecoders"},
        ]
        cfg.trainer.plugins = cfg.trainer.get("plugins") or [{"class_path": f"{__name__}.AtomicCheckpointIO"}]


def _recipe_key(key: str) -> str | None:
    """Where an older config's loose ``InversionModule`` field ``key`` lives now (``recipe.lr``,
    ``recipe.guard.patience``), or None if it is not a recipe field."""
    if key in {f.name for f in fields(GuardSettings)}:
        return f"recipe.guard.{key}"
    return f"recipe.{key}" if key in {f.name for f in fields(DecoderRecipe)} - {"guard"} else None


def legacy_recipe_args(args: list[str] | Any, temporary: list[str]) -> list[str] | Any:
    """``args`` with an older decoder config's loose recipe fields (``model.init_args.lr``, ``skip_factor`` …,
    before they became one ``DecoderRecipe``) moved into ``model.init_args.recipe``, with a warning naming them:
    in ``--config`` files (read, translated into a temporary copy) and, when the model is ``InversionModule``,
    on the command line. Other models (a classifier's own ``lr``) are left alone. The copies' paths are added to
    ``temporary``, for the caller to remove once parsed."""
    if not isinstance(args, list):
        return args
    out, moved, decoders = [], [], False
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        prev = args[i - 1] if i else None
        if prev in ("--config", "-c") or (name in ("--config", "-c") and eq):
            config, is_decoder = _legacy_config(value if eq else arg, moved)
            decoders |= is_decoder
            if config != (value if eq else arg):
                temporary.append(config)
            arg = f"{name}={config}" if eq else config
        elif prev == "--model" or (name == "--model" and eq):
            decoders = (value if eq else arg).endswith(DECODER_MODEL)
        out.append(arg)
    for i, arg in enumerate(out if decoders else []):
        name, eq, value = arg.partition("=")
        where = _recipe_key(name.removeprefix("--model.init_args.")) if name.startswith("--model.init_args.") else None
        if where:
            moved.append(f"{name[2:]} → model.init_args.{where}")
            out[i] = f"--model.init_args.{where}{eq}{value}"
    if moved:
        warnings.warn(
            f"older decoder-recipe fields read as the recipe's: {'; '.join(moved)}; write them so", stacklevel=2
        )
    return out


def _legacy_config(path: str, moved: list[str]) -> tuple[str, bool]:
    """``path`` (or a temporary copy of it with its loose recipe fields moved into ``model.init_args.recipe``),
    and whether its model is ``InversionModule``."""
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return path, False  # the parser reports it
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(model, dict) or not str(model.get("class_path", "")).endswith(DECODER_MODEL):
        return path, False
    init = model.get("init_args") or {}
    loose = [k for k in init if _recipe_key(k)]
    if not loose:
        return path, True
    recipe = init.setdefault("recipe", {})
    for key in loose:
        where = _recipe_key(key)
        (recipe.setdefault("guard", {}) if where.startswith("recipe.guard.") else recipe)[key] = init.pop(key)
        moved.append(f"{path}: model.init_args.{key} → model.init_args.{where}")
    fd, tmp = tempfile.mkstemp(suffix=".yaml", prefix="upconv-config-")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return tmp, True


def check_resumable(path: str) -> None:
    """Refuse a checkpoint that holds weights alone (``save_weights_only``, e.g. ``decoders.ckpt``): Lightning
    would fail deep in its loops. Its tensors are mapped, not read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a file torch cannot map this way: Lightning reads it and decides
        return
    if isinstance(ckpt, dict) and "state_dict" in ckpt and "optimizer_states" not in ckpt:
        folder = os.path.dirname(path) or "."
        raise ValueError(
            f"{path} holds weights only (no optimizer, schedule or loop state), so a run cannot resume from it; "
            f"resume from the full state the run saves beside it ({os.path.join(folder, 'last.ckpt')}, "
            f"upconv.training.callbacks.LastState), or start a new run"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a hidden sibling file and renamed into place (``atomic_file``): a run killed
    while saving leaves the previous checkpoint whole, never a truncated one to resume from."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_file(path) as tmp:
            torch.save(checkpoint, tmp)


def redirect_checkpoints(cfg: Any, callbacks: list[Any], folder: str) -> None:
    """``--checkpoints_dir``: every ModelCheckpoint's and LastState's dirpath, and a classifier's export file,
    into ``folder``."""
    for cb in callbacks:
        if str(cb.get("class_path", "")).endswith(("ModelCheckpoint", "LastState")):
            if isinstance(cb, dict):
                cb["init_args"] = {**cb.get("init_args", {}), "dirpath": folder}
            else:  # a jsonargparse Namespace, addressed by dotted keys
                cb["init_args.dirpath"] = folder
    init = cfg.model.get("init_args") if cfg.get("model") else None
    if init is not None and init.get("export"):
        init.export = os.path.join(folder, os.path.basename(init.export))


class RemoveEmptyRunFolders(L.Callback):
    """A run that fails leaves no run folder holding nothing but its config (``remove_if_empty``)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        for logger in trainer.loggers:
            if getattr(logger, "log_dir", None):
                remove_if_empty(logger.log_dir)


def remove_if_empty(log_dir: str) -> None:
    """Remove a run's log folder (and its parent, if that is left empty) when it holds no results."""
    if not os.path.isdir(log_dir):
        return
    files = [f for _, _, fs in os.walk(log_dir) for f in fs]
    if set(files) <= NO_RESULTS:
        shutil.rmtree(log_dir, ignore_errors=True)
        parent = os.path.dirname(log_dir)
        if os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)


def default_loggers(name: str, save_dir: str = "runs") -> list[dict]:
    loggers = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": save_dir, "name": name}}]
    if os.environ.get("UPCONV_WANDB", "1") != "0":
        try:
            import wandb  # noqa: F401
        except ImportError:
            return loggers
        os.environ.setdefault("WANDB_MODE", "offline")  # never a login prompt, never the network by default
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(
            {
                "class_path": "lightning.pytorch.loggers.WandbLogger",
                "init_args": {
                    "save_dir": save_dir,
                    "project": "upconv",
                    "name": name,
                    "offline": os.environ["WANDB_MODE"] == "offline",
                },
            }
        )
    return loggers


def user_error(error: BaseException) -> BaseException | None:
    """The user's mistake behind ``error``, or None for a bug.

    jsonargparse re-raises a class's failed construction as "Does not validate against any of the Union
    subtypes" with the original as ``__cause__``; Lightning lets errors from fit through unchanged. The
    innermost cause counts as a user error when it is one of ``USER_ERRORS`` raised by this package's own
    checks (an unknown layer, a missing file, a NaN loss), never one raised inside a library; an unreadable
    file (``UnreadableFileError``) always is.
    """
    inner, seen = error, set()
    while inner.__cause__ is not None and id(inner) not in seen:
        seen.add(id(inner))
        inner = inner.__cause__
    if isinstance(inner, UnreadableFileError):  # ours wherever raised (a DataLoader worker re-raises it)
        return inner
    if not isinstance(inner, USER_ERRORS) or inner.__traceback__ is None:
        return None
    raised_in = traceback.extract_tb(inner.__traceback__)[-1].filename
    return inner if os.path.abspath(raised_in).startswith(PACKAGE + os.sep) else None


# Warnings about what the package does on purpose, silenced by message in this entry point only: the frozen
# encoder stays in eval mode through training, and ``upconv demo`` hands LightningCLI its own ``args``.
OWN_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"LightningCLI's args parameter is intended to run from within Python",
)


def main(args: list[str] | None = None) -> UpconvCLI:
    try:
        with warnings.catch_warnings():
            for message in OWN_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            return UpconvCLI(
                datamodule_class=ImageData,
                subclass_mode_model=True,
                save_config_kwargs={"overwrite": True},
                args=args,
                auto_configure_optimizers=False,
            )
    except Exception as e:  # sorted into the user's mistakes (one line) and bugs (re-raised)
        cause = user_error(e)
        if cause is None:
            raise
        message = " ".join(worker_message(cause).split()) or type(cause).__name__
        print(f"train.py: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

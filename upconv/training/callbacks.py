"""Callbacks the shipped training configs use beside Lightning's own."""

from __future__ import annotations

import os

import lightning.pytorch as L
import torch
from torch import Tensor

from upconv.core.files import atomic_file


class LastState(L.Callback):
    """The full training state (decoders, optimizer, schedule, health guard) as ``<dirpath>/<filename>.ckpt``
    every ``every_n_epochs`` epochs **and when training ends**, so every run, however short, can be resumed
    with ``--ckpt_path`` (Lightning's ``ModelCheckpoint(every_n_epochs=5)`` leaves nothing for a 4-epoch run).

    Written through ``core.files.atomic_file`` (a hidden sibling renamed into place): a kill during a save leaves
    the previous state intact, never a truncated file. Under DDP every rank takes part in the save and rank 0
    alone writes and renames.
    """

    def __init__(self, dirpath: str, filename: str = "last", every_n_epochs: int = 5) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be ≥ 1; got {every_n_epochs}")
        self.dirpath, self.filename, self.every_n_epochs = dirpath, filename, every_n_epochs
        self._saved_step = -1

    @property
    def path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step:  # not already saved at this epoch's end
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            with atomic_file(self.path) as partial:  # renamed into place only once complete
                trainer.save_checkpoint(partial)
        else:
            trainer.save_checkpoint(self.path)  # a collective call: the strategy writes on rank 0 only
        trainer.strategy.barrier("LastState")
        self._saved_step = trainer.global_step


def log_reconstruction_grid(module: L.LightningModule, images: Tensor, recon: dict[str, Tensor]) -> None:
    """The validation grid of an ``InversionModule``: originals in the first row, then one row per layer; saved as
    PNG beside the logs and sent to wandb when it logs."""
    from torchvision.utils import make_grid, save_image

    trainer = module.trainer
    if trainer is None or trainer.sanity_checking:
        return
    log_dir = trainer.log_dir or "."  # a broadcast under DDP: every rank asks, rank 0 alone writes
    if not trainer.is_global_zero:
        return
    n = min(module.hparams.log_images, len(images))
    rows = [images[:n]] + [recon[name][:n].float().clamp(0, 1) for name in module.layers]
    grid = make_grid(torch.cat(rows).cpu(), nrow=n, padding=1)
    for logger in module.loggers:
        if hasattr(logger, "log_image"):  # wandb
            logger.log_image("val/reconstructions", [grid], caption=["originals, " + ", ".join(module.layers)])
    os.makedirs(log_dir, exist_ok=True)
    save_image(grid, os.path.join(log_dir, f"reconstructions_epoch{module.current_epoch:03d}.png"))

"""Callbacks the shipped training configs use beside Lightning's own."""

from __future__ import annotations

import os

import lightning.pytorch as L


class LastState(L.Callback):
    """The full training state (decoders, optimizer, schedule, health guard) as ``<dirpath>/<filename>.ckpt``
    every ``every_n_epochs`` epochs **and when training ends**, so every run, however short, can be resumed
    with ``--ckpt_path`` (Lightning's ``ModelCheckpoint(every_n_epochs=5)`` leaves nothing for a 4-epoch run).

    Written to ``<file>.partial`` and renamed: a kill during a save leaves the previous state intact, never a
    truncated file. Under DDP every rank takes part in the save and rank 0 alone writes and renames.
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
        partial = self.path + ".partial"
        if trainer.is_global_zero:
            os.makedirs(self.dirpath, exist_ok=True)
        trainer.save_checkpoint(partial)  # every rank calls it; the strategy writes on rank 0 only
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier("LastState")
        self._saved_step = trainer.global_step

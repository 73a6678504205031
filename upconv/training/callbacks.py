"""Callbacks the shipped training configs use beside Lightning's own."""

from __future__ import annotations

import logging
import os
import time

import lightning.pytorch as L
import torch
from torch import Tensor

from upconv.core.files import atomic_file
from upconv.nets.checkpoints import CHECKPOINT_KEY

log = logging.getLogger(__name__)


class LastState(L.Callback):
    """The full training state (decoders, optimizer, schedule, health guard) as ``<dirpath>/<filename>.ckpt``
    every ``every_n_epochs`` epochs, every ``every_n_minutes`` of training within an epoch, **and when training
    ends**, so a killed run loses minutes, not the run, however long its epochs (Lightning's
    ``ModelCheckpoint(every_n_epochs=5)`` left nothing to resume before epoch 5).

    A run resumed from a state saved within an epoch continues that epoch at the batch after the last one
    trained, in the same order, when its training batches live in memory (``DeviceBatches`` saves its position);
    a streaming loader starts the epoch's data again (Lightning warns).

    Written through ``core.files.atomic_file`` (a hidden sibling renamed into place): a kill during a save leaves
    the previous state intact, never a truncated file. Under DDP every rank takes part in the save and rank 0
    alone writes and renames; the clock is rank 0's, read every ``check_every`` steps and broadcast.
    """

    def __init__(
        self,
        dirpath: str,
        filename: str = "last",
        every_n_epochs: int = 1,
        every_n_minutes: float | None = 10.0,
        check_every: int = 10,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be ≥ 1; got {every_n_epochs}")
        if every_n_minutes is not None and every_n_minutes < 0:
            raise ValueError(f"every_n_minutes must be ≥ 0 (or null: only at epoch ends); got {every_n_minutes}")
        self.dirpath, self.filename, self.every_n_epochs = dirpath, filename, every_n_epochs
        self.every_n_minutes, self.check_every = every_n_minutes, max(1, check_every)
        self._saved_step, self._saved_at = -1, time.monotonic()

    @property
    def path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The clock starts; after a resume from within an epoch, in-memory batches continue after the last one
        trained. (Lightning saves the loader's position, but it reads the loader for the schedule's length,
        ``estimated_stepping_batches``, before it restores the loops, and never hands the position back.)"""
        self._saved_at = time.monotonic()
        loader, done = trainer.train_dataloader, trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if trainer.fit_loop.restarted_mid_epoch and hasattr(loader, "load_state_dict") and 0 < done < len(loader):
            loader.load_state_dict({"epoch": trainer.current_epoch, "batches": done})

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if self.every_n_minutes is None or trainer.global_step % self.check_every or trainer.is_last_batch:
            return  # the epoch's end has its own save
        due = time.monotonic() - self._saved_at >= 60 * self.every_n_minutes
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due, src=0)  # every rank saves, or none
        if due and trainer.global_step != self._saved_step:
            self._save(trainer)

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
        self._saved_step, self._saved_at = trainer.global_step, time.monotonic()


class KeepOtherEncodersDecoders(L.Callback):
    """Refuse, before the first step, a decoder run whose checkpoint files would replace decoders trained for
    another encoder (a shipped config reused with ``--model.init_args.encoder.name …`` writes to the same
    ``checkpoints/<run>/decoders.ckpt``): one line saying which file, whose decoders it holds and what to do.
    Decoders of the same architecture with other weights (the encoder retrained) are replaced with a warning.
    A resumed run's own file (``--ckpt_path``) is its own: the resume checks it."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        encoder = getattr(pl_module, "encoder", None)
        if stage != "fit" or not hasattr(encoder, "identity"):
            return
        for path in checkpoint_files(trainer):
            if os.path.isfile(path) and os.path.abspath(path) != os.path.abspath(trainer.ckpt_path or ""):
                check_owner(path, encoder.identity)


def checkpoint_files(trainer: L.Trainer) -> list[str]:
    """The files the run's checkpoint callbacks will replace: ``LastState``'s, a ``ModelCheckpoint``'s ``save_last``
    file and its file of a fixed name (no ``{…}`` fields) unless it versions names (``decoders-v1.ckpt``)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    files = []
    for cb in trainer.callbacks:
        if isinstance(cb, LastState):
            files.append(cb.path)
        elif isinstance(cb, ModelCheckpoint) and cb.dirpath:
            if cb.filename and "{" not in cb.filename and not getattr(cb, "_enable_version_counter", False):
                files.append(os.path.join(cb.dirpath, cb.filename + cb.FILE_EXTENSION))
            if cb.save_last:
                files.append(os.path.join(cb.dirpath, cb.CHECKPOINT_NAME_LAST + cb.FILE_EXTENSION))
    return files


def check_owner(path: str, identity: dict) -> None:
    """Raise if ``path`` holds decoders of another encoder than ``identity`` (name and constructor arguments);
    warn if of the same one with other weights. A file that is no decoder checkpoint is left to the writer."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable or foreign: nothing of ours to protect
        return
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("encoder"), dict):
        return
    old = meta["encoder"]
    kwargs = lambda i: (i.get("spec") or {}).get("kwargs") or {}  # noqa: E731
    if old.get("name") != identity["name"] or kwargs(old) != kwargs(identity):
        raise ValueError(
            f"{path} holds decoders trained for encoder {old.get('name')} {kwargs(old) or ''}(weights "
            f"{old.get('weights_hash')}), and this run trains decoders for {identity['name']} "
            f"{kwargs(identity) or ''}— it would replace them. Write this run's checkpoints elsewhere "
            f"(--checkpoints_dir DIR) or move that file away"
        )
    if old.get("weights_hash") != identity["weights_hash"]:
        log.warning(
            "replacing %s: it holds decoders for %s weights %s; this run's encoder has weights %s",
            path,
            identity["name"],
            old.get("weights_hash"),
            identity["weights_hash"],
        )


def log_reconstruction_grid(module: L.LightningModule, images: Tensor, recon: dict[str, Tensor]) -> None:
    """The validation grid of an ``InversionModule``: originals in the first row, then one row per layer, each row
    labelled and the figure captioned (``core.figures.row_grid``); saved as PNG beside the logs and sent to wandb
    when it logs."""
    from torchvision.utils import make_grid

    from upconv.core.figures import row_grid

    trainer = module.trainer
    if trainer is None or trainer.sanity_checking:
        return
    log_dir = trainer.log_dir or "."  # a broadcast under DDP: every rank asks, rank 0 alone writes
    if not trainer.is_global_zero:
        return
    n = min(module.hparams.log_images, len(images))
    rows = [images[:n].float().cpu()] + [recon[name][:n].float().clamp(0, 1).cpu() for name in module.layers]
    caption = (
        f"epoch {module.current_epoch}: {n} validation images (top row) and their reconstruction from each "
        f"layer of {module.encoder.name} by its decoder"
    )
    for logger in module.loggers:
        if hasattr(logger, "log_image"):  # wandb
            grid = make_grid(torch.cat(rows), nrow=n, padding=1)
            logger.log_image("val/reconstructions", [grid], caption=[caption + ": " + ", ".join(module.layers)])
    os.makedirs(log_dir, exist_ok=True)
    path = os.path.join(log_dir, f"reconstructions_epoch{module.current_epoch:03d}.png")
    row_grid(rows, ["originals", *module.layers], caption, path)

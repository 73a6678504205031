"""One small decoder-training run, as the data-parallel tests and ``benchmarks/ddp_throughput.py`` need it:
``python tests/ddp_run.py settings.json``. With ``devices`` > 1 Lightning's ``ddp`` launcher starts this same
script once more per extra rank (gloo on the CPU), as ``python train.py fit --trainer.strategy ddp`` would.

Each rank writes ``rank<r>.pt`` into ``settings["out"]``: the images it was given (a hash per image, per epoch,
training and validation), its decoders' final weights, its health record and events, the logged validation
metrics and the wall time of ``fit``; ``settings["model"]`` overrides InversionModule's arguments. Every checkpoint
write is appended to ``saves.txt`` with the writer's
rank. A fault can be injected into one rank's batches only: ``fault = {"rank", "steps", "value"}`` puts
``value`` into one pixel of the first image of that rank's batch at each of those steps.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import sys
import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor

from upconv.data.source import ImageSource
from upconv.training.datamodule import ImageData
from upconv.training.module import InversionModule

TINY = dict(encoder={"name": "alexnet_cifar", "kwargs": {"width": 0.25}}, width=8, fc_width=32, max_width=32)


def image_hashes(x: Tensor) -> list[str]:
    """One short hash per image of a [0, 1] batch (B, C, H, W) that came from uint8 pixels."""
    pixels = (x.detach() * 255).round().to(torch.uint8).cpu()  # exact: the batch is uint8 / 255
    return [hashlib.sha1(im.numpy().tobytes()).hexdigest()[:16] for im in pixels]


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


class CountingIO(TorchCheckpointIO):
    """Torch's checkpoint writer, noting which rank wrote which file."""

    def __init__(self, log_path: str) -> None:
        super().__init__()
        self.log_path = log_path

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with open(self.log_path, "a") as f:
            f.write(f"{_rank()} {os.path.basename(str(path))}\n")
        super().save_checkpoint(checkpoint, path, storage_options)


class Probe(L.Callback):
    """Records the images each rank is given and injects the fault (after hashing: the hashes are the data's)."""

    def __init__(self, fault: dict[str, Any] | None) -> None:
        self.fault = fault
        self.train: dict[int, list[str]] = {}
        self.val: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.train.setdefault(trainer.current_epoch, []).extend(image_hashes(batch[0]))
        f = self.fault
        if f and trainer.global_rank == f["rank"] and trainer.global_step in f["steps"]:
            batch[0][0, 0, 0, 0] = f["value"]  # one huge pixel in one image of this rank's shard only

    def on_validation_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self.val.setdefault(trainer.current_epoch, []).extend(image_hashes(batch[0]))


def build(s: dict[str, Any]) -> tuple[InversionModule, ImageData]:
    torch.manual_seed(s.get("seed", 0))
    module = InversionModule(layers=s.get("layers", ["conv1", "fc6"]), **{**TINY, **s.get("model", {})})
    data = ImageData(images=ImageSource(seed=s.get("seed", 0), **s["data"]), augment=False, batch_size=s["batch_size"])
    return module, data


def run(s: dict[str, Any]) -> dict[str, Any]:
    """Train as ``s`` says; returns (and writes) this rank's record."""
    torch.set_num_threads(s.get("threads", 1))
    if "watchdog" in s:  # a rank stuck in a collective prints where it waits and ends, rather than hang CI
        faulthandler.dump_traceback_later(s["watchdog"], exit=True)
    module, data = build(s)
    probe = Probe(s.get("fault"))
    devices = s.get("devices", 1)
    out = s["out"]
    os.makedirs(out, exist_ok=True)
    saves = [L.callbacks.ModelCheckpoint(dirpath=os.path.join(out, "ckpt"))] if s.get("checkpoint") else []
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=s["epochs"],
        limit_val_batches=s.get("limit_val_batches", 1.0),
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(saves),
        callbacks=[probe, *saves],
        plugins=[CountingIO(os.path.join(out, "saves.txt"))],
        default_root_dir=out,
    )
    t0 = time.perf_counter()
    trainer.fit(module, data)
    record = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "seconds": time.perf_counter() - t0,
        "steps": trainer.global_step,
        "train": probe.train,
        "val": probe.val,
        "state": {k: v.detach().cpu().clone() for k, v in module.decoders.state_dict().items()},
        "params": {k: v.detach().cpu().clone() for k, v in module.decoders.named_parameters()},
        "health": module.health.record(),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
    }
    torch.save(record, os.path.join(out, f"rank{trainer.global_rank}.pt"))
    faulthandler.cancel_dump_traceback_later()
    return record


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        run(json.load(f))

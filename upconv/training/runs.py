"""Training runs as functions, for applications that compose them (``upconv benchmark``): a classifier trained
from scratch with the package's recipe, and UpconvNet decoders for many layers in one pass. Both go through
Lightning, so a unit of work uses whatever ``Trainer`` options it is given (a GPU, bf16, DDP over devices and
nodes under SLURM), and both are seeded: the same call on the same machine gives the same weights.

A stage may be given a time budget instead of a fixed length: a timed probe of a few steps sizes its epochs
(``sized_epochs``), as ``make reproduce PRESET=gpu`` did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as L
import torch

from upconv.nets.spec import EncoderSpec
from upconv.training.classifier import ClassifierModule
from upconv.training.datamodule import ImageData
from upconv.training.module import InversionModule


@dataclass(frozen=True)
class RunOptions:
    """What every training run of a benchmark shares: the seed, the precision, extra ``Trainer`` arguments
    (``{accelerator: gpu, devices: 4, strategy: ddp}``) and an optional time budget in seconds per stage."""

    seed: int = 0
    precision: str = "32-true"
    trainer: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None


def make_trainer(
    options: RunOptions,
    epochs: int,
    log_dir: str | None,
    name: str,
    *,
    max_steps: int = -1,
    callbacks: Sequence = (),
    validate: bool = True,
) -> L.Trainer:
    args: dict[str, Any] = dict(
        max_epochs=epochs,
        max_steps=max_steps,
        precision=options.precision,
        accelerator="auto",
        devices=1,
        logger=L.loggers.CSVLogger(log_dir, name=name) if log_dir else False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
        log_every_n_steps=10,
        callbacks=list(callbacks),
    )
    return L.Trainer(**{**args, **options.trainer})


class StepTimer(L.Callback):
    """Seconds per training step: the median gap between consecutive steps after ``skip`` warm-up steps
    (compilation, allocator, cuDNN autotuning); with fewer steps, the median of those there are."""

    def __init__(self, skip: int = 5) -> None:
        self.skip, self.times = skip, []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())

    @property
    def per_step(self) -> float:
        gaps = torch.tensor(self.times).diff()
        if len(gaps) == 0:
            raise RuntimeError("the timing probe ran fewer than two steps; lower the time budget or use more data")
        return float(gaps[min(self.skip, len(gaps) - 1) :].median())


def sized_epochs(
    options: RunOptions, epochs: int, steps_per_epoch: int, make: Callable[[], L.LightningModule], data: ImageData
) -> tuple[int, float | None]:
    """``epochs``, or fewer when ``options.seconds`` is set: as many as fit at the step cost a 25-step probe of a
    fresh module from ``make`` measures (5 % kept for validation and logging); at least one."""
    if not options.seconds or epochs <= 1:
        return epochs, None
    timer = StepTimer()
    make_trainer(options, 1000, None, "probe", max_steps=25, callbacks=[timer]).fit(make(), data)
    fit = int(options.seconds / (timer.per_step * steps_per_epoch * 1.05))
    return max(1, min(epochs, fit)), timer.per_step


def fit_classifier(
    arch: str,
    arch_kwargs: dict[str, Any] | None,
    num_classes: int,
    data: ImageData,
    epochs: int,
    export: str,
    options: RunOptions,
) -> dict[str, Any]:
    """Train ``arch`` (``num_classes`` outputs) from scratch (``ClassifierModule``'s recipe, augmented batches)
    on ``data``'s training split and write its weights to ``export``; returns epochs, seconds and the held-out
    accuracy."""
    L.seed_everything(options.seed, workers=True, verbose=False)
    make = lambda: ClassifierModule(arch=arch, num_classes=num_classes, arch_kwargs=arch_kwargs, export=export)  # noqa: E731
    data.hparams.augment = True
    epochs, per_step = sized_epochs(
        options, epochs, max(1, data.split_size("train") // data.hparams.batch_size), make, data
    )
    L.seed_everything(options.seed, workers=True, verbose=False)  # the probe drew from the generator
    t0 = time.perf_counter()
    trainer = make_trainer(options, epochs, None, "encoder")
    trainer.fit(make(), data)
    acc = trainer.callback_metrics.get("val/acc")
    return {
        "epochs": epochs,
        "seconds": time.perf_counter() - t0,
        "measured_step_s": per_step,
        "val_accuracy": float(acc) if acc is not None else None,
    }


def fit_decoders(
    encoder: EncoderSpec,
    layers: list[str],
    data: ImageData,
    epochs: int,
    overrides: dict[str, Any],
    options: RunOptions,
    log_dir: str | None = None,
) -> tuple[InversionModule, dict[str, Any]]:
    """UpconvNet decoders for ``layers`` of the frozen ``encoder``, trained in one pass with the shipped recipe
    (``InversionModule``'s defaults, ``overrides`` replacing some: width, recipe, …) on ``data``'s training split;
    returns the module (eval mode) and epochs, seconds and the probe's step cost."""
    L.seed_everything(options.seed, workers=True, verbose=False)
    make = lambda: InversionModule(encoder=encoder, layers=layers, log_images=0, **overrides)  # noqa: E731
    data.hparams.augment = False
    epochs, per_step = sized_epochs(
        options, epochs, max(1, data.split_size("train") // data.hparams.batch_size), make, data
    )
    L.seed_everything(options.seed, workers=True, verbose=False)  # each decoder draws from (seed, layer name)
    module = make()
    t0 = time.perf_counter()
    # No validation pass: the benchmark scores every decoder on the test split afterwards.
    trainer = make_trainer(options, epochs, log_dir, "decoders", validate=False)
    trainer.fit(module, data)
    info = {"epochs": epochs, "seconds": time.perf_counter() - t0, "measured_step_s": per_step}
    return module.eval(), info

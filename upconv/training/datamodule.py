"""The Lightning data module of training runs: an ``ImageSource`` (``upconv.data``) served as uint8 batches.

In memory (images ≤ 64 px), each split is one uint8 tensor moved to the training device once, where batches
are sliced and augmented, so no Python data loader starves the accelerator; larger images stream through
DataLoader workers. Every batch reaches the model as float images in [0, 1], (B, C, H, W), augmented (random
crop + horizontal flip) while training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader

from upconv.data.augment import random_crop_flip
from upconv.data.batches import DeviceBatches
from upconv.data.source import ImageSource, Split


class ImageData(L.LightningDataModule):
    """Images for encoder and decoder training: an ``ImageSource`` (``upconv.data``; the same object and
    parameters evaluation takes) served in training batches.

    Args:
        images: where the images come from and how they are split (``ImageSource``'s parameters, e.g.
            ``data.images.source``, ``data.images.root``, ``data.images.limit_train``); its seed also orders
            the training batches. Default: ``ImageSource()`` (the embedded photographs).
        batch_size: images per training batch.
        augment: random crop (padding 4 px at 32 px, scaled with size) and horizontal flip for training.
    """

    def __init__(self, images: ImageSource | None = None, batch_size: int = 128, augment: bool = True) -> None:
        super().__init__()
        self.source = ImageSource() if images is None else images
        # The source's parameters as plain values (never the object, which holds the decoded images).
        params = {f.name: getattr(self.source, f.name) for f in fields(ImageSource) if f.init}
        self.save_hyperparameters({"images": params, "batch_size": batch_size, "augment": augment})

    # The source's answers, for evaluation and tools that take a data module.
    @property
    def class_names(self) -> list[str]:
        return self.source.class_names

    def setup(self, stage: str | None = None) -> None:
        self.source.setup()

    def split_size(self, split: Split = "val") -> int:
        return self.source.split_size(split)

    def describe(self, split: Split = "val") -> str:
        return self.source.describe(split)

    def images(
        self, split: Split = "val", batch_size: int | None = None, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[Tensor, Tensor]]:
        return self.source.images(split, batch_size or self.hparams.batch_size, device)

    # ------------------------------------------------------------------ Lightning loaders
    def _loader(self, split: Literal["train", "val"], train: bool) -> Any:
        """Training batches shuffled anew every epoch; under data parallelism each process gets its own shard.

        In memory, ``DeviceBatches`` shards by rank itself (Lightning's distributed sampler only replaces the
        samplers of DataLoaders): disjoint shards of one permutation per epoch, the remainder of a global batch
        dropped. Streaming, training keeps Lightning's ``DistributedSampler``; validation gets an unpadded one,
        so every held-out image is scored exactly once and the sums reduced over processes are exact.
        """
        hp, src, part = self.hparams, self.source, self.source.part(split)
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if train and world > 1:
            rank_zero_info(
                f"data parallel: global batch {world * hp.batch_size} = {hp.batch_size} per device × "
                f"{world} processes; the learning rate is used as given: tuned for a k× smaller global batch, "
                f"scale it by √k (AdamW's square-root rule, docs/scale-out.md)"
            )
        if isinstance(part, tuple):
            x, y = part
            dev = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
            return DeviceBatches(
                x.to(dev),
                y.to(dev),
                hp.batch_size,
                shuffle=train,
                seed=src.seed,
                drop_last=train,
                rank=rank,
                world_size=world,
            )
        sampler = (
            None
            if train or world == 1
            else UnrepeatedDistributedSampler(part, num_replicas=world, rank=rank, shuffle=False)
        )
        return DataLoader(
            part,
            batch_size=hp.batch_size,
            shuffle=train,
            sampler=sampler,
            num_workers=src.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=train,
            persistent_workers=src.num_workers > 0,
        )

    def train_dataloader(self) -> Any:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", train=False)

    def test_dataloader(self) -> Any:
        return self._loader("val", train=False)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        x, y = batch
        x = x.float().div_(255)  # (B, C, H, W) in [0, 1]
        trainer = getattr(self, "trainer", None)
        if self.hparams.augment and trainer is not None and trainer.training:
            x = random_crop_flip(x, pad=max(1, self.source.image_size // 8))
        return x, y

"""The Lightning data module of training runs: an ``ImageSource`` (``upconv.data``) served as uint8 batches.

In memory (images ≤ 64 px), each split is one uint8 tensor moved to the training device once, where batches
are sliced and augmented, so no Python data loader starves the accelerator; larger images stream through
DataLoader workers. Every batch reaches the model as float images in [0, 1], (B, C, H, W), augmented (random
crop + horizontal flip) while training.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    """Images for encoder and decoder training (the arguments are ``ImageSource``'s, plus these):

    Args:
        source: ``embedded`` (scikit-image photographs, no download), ``folder`` (an ImageFolder tree at
            ``root``: ``root/train`` and ``root/test`` if present, else a random split), or ``cifar10``
            (torchvision's CIFAR-10 at ``root``; fetched only with ``download=True``).
        root: the data folder.
        image_size: side of the square images fed to the encoder (resize + centre crop).
        batch_size: images per training batch.
        augment: random crop (padding 4 px at 32 px, scaled with size) and horizontal flip for training.
        in_memory: decode everything into one uint8 tensor kept on the training device (default: when
            image_size ≤ 64).
        val_fraction: the held-out share when the source has no split of its own.
        limit_train / limit_val: use a seeded random subset of N images of each split.
        num_workers: processes decoding image files.
        download: let torchvision fetch CIFAR-10.
        embedded_per_class: crops per photograph for ``embedded``.
        seed: seeds the split, the subsets, the crops and the batch order.
    """

    def __init__(
        self,
        source: Literal["embedded", "folder", "cifar10"] = "embedded",
        root: str | None = None,
        image_size: int = 32,
        batch_size: int = 128,
        augment: bool = True,
        in_memory: bool | None = None,
        val_fraction: float = 0.1,
        limit_train: int | None = None,
        limit_val: int | None = None,
        num_workers: int = 2,
        download: bool = False,
        embedded_per_class: int = 250,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.source = ImageSource(
            source=source,
            root=root,
            image_size=image_size,
            in_memory=in_memory,
            val_fraction=val_fraction,
            limit_train=limit_train,
            limit_val=limit_val,
            num_workers=num_workers,
            download=download,
            embedded_per_class=embedded_per_class,
            seed=seed,
        )

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
        hp, part = self.hparams, self.source.part(split)
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if train and world > 1:
            rank_zero_info(
                f"data parallel: global batch {world * hp.batch_size} = {hp.batch_size} per device × "
                f"{world} processes; model.lr is used as given: tuned for a k× smaller global batch, "
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
                seed=hp.seed,
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
            num_workers=hp.num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=train,
            persistent_workers=hp.num_workers > 0,
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
            x = random_crop_flip(x, pad=max(1, self.hparams.image_size // 8))
        return x, y

"""Where images come from, in plain torch: an ImageFolder tree, torchvision's CIFAR-10, or the photographs
embedded in scikit-image (the offline default, no download), split into train and val.

Small images (≤ 64 px) are decoded once into one uint8 tensor per split (``tensors``); larger ones stay a
lazily decoded dataset. ``images(split)`` yields float batches in [0, 1] for evaluation and tools; the
training data module (``upconv.training.datamodule.ImageData``) wraps a source for Lightning.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets

from upconv.data.batches import DeviceBatches, decode_all, one_line_errors
from upconv.data.embedded import embedded_images
from upconv.data.folders import image_folder, transform

Split = Literal["train", "val", "all"]
Part = tuple[Tensor, Tensor] | Dataset  # in memory: (uint8 images (N, C, H, W), labels (N,))


@dataclass
class ImageSource:
    """Images of one source, split into ``train`` and ``val``.

    Args:
        source: ``embedded`` (scikit-image photographs, no download), ``folder`` (an ImageFolder tree at
            ``root``: ``root/train`` and ``root/test`` (or ``val``) if present, else a seeded split), or
            ``cifar10`` (torchvision's CIFAR-10 at ``root``; fetched only with ``download=True``).
        root: the data folder (not for ``embedded``).
        image_size: side of the square images (resize the shorter side, then centre crop).
        in_memory: decode every image once into one uint8 tensor (default: when image_size ≤ 64).
        val_fraction: the held-out share when the source has no split of its own.
        limit_train / limit_val: a seeded random subset of that many images of the split.
        num_workers: processes decoding image files.
        download: let torchvision fetch CIFAR-10.
        embedded_per_class: crops per photograph for ``embedded``.
        seed: seeds the split, the subsets and the crops.
    """

    source: Literal["embedded", "folder", "cifar10"] = "embedded"
    root: str | None = None
    image_size: int = 32
    in_memory: bool | None = None
    val_fraction: float = 0.1
    limit_train: int | None = None
    limit_val: int | None = None
    num_workers: int = 2
    download: bool = False
    embedded_per_class: int = 250
    seed: int = 0
    class_names: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.source not in ("embedded", "folder", "cifar10"):
            raise ValueError(f"unknown data source '{self.source}'; choose embedded, folder or cifar10")
        if self.source != "embedded" and not self.root:
            raise ValueError(f"data source '{self.source}' needs a root folder (root; data.images.root in training)")
        self.in_memory = self.image_size <= 64 if self.in_memory is None else self.in_memory
        self._parts: dict[str, Part] | None = None
        self._origin: dict[str, str] = {}  # split -> what it is, in words
        self._before_limit: dict[str, int] = {}
        self._pool: int | None = None  # images of a source split here (a held-out fraction)

    # ------------------------------------------------------------------ reading
    def setup(self) -> ImageSource:
        """Read (and, in memory, decode) both splits once; later calls do nothing."""
        if self._parts is not None:
            return self
        if self.source == "embedded":
            train, val = self._embedded()
        else:
            train, val = self._cifar10() if self.source == "cifar10" else self._folder_splits()
            self._before_limit = {"train": len(train), "val": len(val)}
            train, val = self._limit(train, self.limit_train), self._limit(val, self.limit_val)
            if len(train) == 0 or len(val) == 0:
                raise ValueError(f"empty split: {len(train)} training and {len(val)} validation images")
            if self.in_memory:
                train, val = decode_all(train, self.num_workers), decode_all(val, self.num_workers)
        self._parts = {"train": train, "val": val}
        return self

    def _embedded(self) -> tuple[Part, Part]:
        x, y, self.class_names = embedded_images(self.embedded_per_class, self.image_size, self.seed)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        x, y = x[perm], y[perm]
        n_val = max(1, int(len(x) * self.val_fraction))
        self._origin, self._pool = self._held_out("the embedded photographs' crops"), len(x)
        self._before_limit = {"train": len(x) - n_val, "val": n_val}
        self.in_memory = True
        return (x[n_val:][: self.limit_train], y[n_val:][: self.limit_train]), (
            x[:n_val][: self.limit_val],
            y[:n_val][: self.limit_val],
        )

    def _cifar10(self) -> tuple[Dataset, Dataset]:
        tf = transform(self.image_size)
        train = datasets.CIFAR10(self.root, train=True, transform=tf, download=self.download)
        val = datasets.CIFAR10(self.root, train=False, transform=tf, download=self.download)
        self.class_names = train.classes
        self._origin = {
            "train": "CIFAR-10's training set",
            "val": "CIFAR-10's test set",
            "all": "every image of CIFAR-10 (training and test sets)",
        }
        return train, val

    def _folder_splits(self) -> tuple[Dataset, Dataset]:
        root = self.root
        if os.path.isdir(os.path.join(root, "train")):
            val_dir = next((d for d in ("test", "val") if os.path.isdir(os.path.join(root, d))), None)
            if val_dir is None:
                raise ValueError(f"{root} has train/ but neither test/ nor val/; add one or point root at train/")
            self._origin = {
                "train": "the folder's train/",
                "val": f"the folder's {val_dir}/",
                "all": f"every image of the folder's train/ and {val_dir}/",
            }
            train = image_folder(os.path.join(root, "train"), self.image_size)
            self.class_names = train.classes
            return train, image_folder(os.path.join(root, val_dir), self.image_size)
        full = image_folder(root, self.image_size)
        self.class_names = full.classes
        self._origin, self._pool = self._held_out("a folder without train/ and test/"), len(full)
        n_val = max(1, int(len(full) * self.val_fraction))
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.seed)).tolist()
        return Subset(full, perm[n_val:]), Subset(full, perm[:n_val])

    def _held_out(self, what: str) -> dict[str, str]:
        pct = f"{self.val_fraction * 100:g} %"
        return {
            "val": f"a seeded {pct} hold-out of {what}",
            "train": f"the rest of {what} (all but a seeded {pct})",
            "all": f"every image of {what}",
        }

    def _limit(self, ds: Dataset, n: int | None) -> Dataset:
        # Shuffled even when n covers the whole split: "the first N" is a random draw, and a folder's order
        # is class order.
        if n is None:
            return ds
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.seed))
        return Subset(ds, perm[:n].tolist())

    # ------------------------------------------------------------------ access
    def part(self, split: Literal["train", "val"]) -> Part:
        """One split as read: ``(uint8 images (N, C, H, W), labels (N,))`` in memory, else a dataset."""
        if split not in ("train", "val"):
            raise ValueError(f"unknown split '{split}'; choose 'train' or 'val'")
        return self.setup()._parts[split]

    def tensors(self, split: Literal["train", "val"]) -> tuple[Tensor, Tensor]:
        """One split as uint8 images (N, C, H, W) and labels (N,), decoding it now if it is not in memory."""
        part = self.part(split)
        return part if isinstance(part, tuple) else decode_all(part, self.num_workers)

    def _splits(self, split: Split) -> list[Part]:
        if split not in ("train", "val", "all"):
            raise ValueError(f"unknown split '{split}'; choose 'train', 'val' or 'all'")
        return [self.part("train"), self.part("val")] if split == "all" else [self.part(split)]

    def split_size(self, split: Split = "val") -> int:
        """Number of images ``images(split)`` yields."""
        return sum(len(p[0]) if isinstance(p, tuple) else len(p) for p in self._splits(split))

    def describe(self, split: Split = "val") -> str:
        """What ``split`` is and how many images it holds, in words, e.g. "split val = a seeded 10 % hold-out
        of a folder without train/ and test/: 2 of 20 images"."""
        n = self.split_size(split)
        text = f"split {split} = {self._origin.get(split, split)}"
        limit = {"train": self.limit_train, "val": self.limit_val}.get(split)
        before = self._before_limit.get(split)
        if limit is not None and before is not None:
            if self._pool is not None:
                text += f" ({before} of {self._pool} images)"
            return text + f", a seeded random subset: {n} of {before} images"
        if self._pool is not None and split != "all":
            return text + f": {n} of {self._pool} images"
        return text + f": {n} images"

    def images(
        self, split: Split = "val", batch_size: int = 256, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Un-augmented, unshuffled float batches in [0, 1] (B, C, H, W) with labels (B,). ``val`` is the
        held-out split; ``all`` is the training split followed by ``val``."""
        for part in self._splits(split):
            if isinstance(part, tuple):
                batches = DeviceBatches(*part, batch_size, shuffle=False, seed=0, drop_last=False)
            else:
                batches = DataLoader(part, batch_size=batch_size, num_workers=self.num_workers)
            for x, y in one_line_errors(batches):
                yield x.to(device).float().div_(255), y.to(device)

"""Data modules yielding uint8 image batches: an ImageFolder tree, torchvision CIFAR-10, or photographs
embedded in scikit-image (the offline default, no download).

Small images (≤ 64 px) are decoded once into one uint8 tensor that moves to the training device; batches
are sliced and augmented there, so no Python data loader starves the accelerator. Larger images stream
through DataLoader workers. Every batch reaches the model as float images in [0, 1], (B, C, H, W).
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Iterator, Literal, Optional

import lightning.pytorch as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from upconv.core.files import UnreadableFileError, read_image

EMBEDDED_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                   "immunohistochemistry", "retina", "motorcycle")


def embedded_images(per_class: int, size: int, seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """Random crops of the colour photographs that ship inside scikit-image, one class per photograph.

    Crops cover 5–40 % of a photograph's shorter side squared, are resized to ``size``×``size`` with
    antialiasing and are deterministic for a seed. Returns (uint8 (N, 3, size, size), labels (N,), names).
    """
    import skimage.data

    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for k, name in enumerate(EMBEDDED_PHOTOS):
        photo = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        photo = torch.from_numpy(photo[..., :3].copy()).permute(2, 0, 1)  # (3, H, W) uint8
        _, h, w = photo.shape
        sides = (torch.empty(per_class).uniform_(0.22, 0.63, generator=g) * min(h, w)).long()
        for s in sides.tolist():
            top = int(torch.randint(0, h - s + 1, (1,), generator=g))
            left = int(torch.randint(0, w - s + 1, (1,), generator=g))
            images.append(v2.functional.resized_crop(photo, top, left, s, s, [size, size], antialias=True))
            labels.append(k)
    return torch.stack(images), torch.tensor(labels), list(EMBEDDED_PHOTOS)


def worker_message(error: BaseException) -> str:
    """The original message of an error a DataLoader worker re-raised: torch puts the worker's whole
    traceback into the message ("Caught X in DataLoader worker process 0. Original Traceback …")."""
    text = str(error)
    if not text.startswith("Caught "):
        return text
    found = re.findall(rf"{type(error).__name__}: (.+)", text)
    return found[-1] if found else text.splitlines()[0]


def one_line_errors(batches: Iterable) -> Iterator:
    """``batches`` with an unreadable file's one-line error kept one line when a worker re-raises it."""
    try:
        yield from batches
    except UnreadableFileError as e:
        if not str(e).startswith("Caught "):
            raise
        raise UnreadableFileError(worker_message(e)) from None


def _decode_all(ds: Dataset, num_workers: int) -> tuple[Tensor, Tensor]:
    """Decode a whole (small-image) dataset into one uint8 tensor."""
    loader = DataLoader(ds, batch_size=512, num_workers=num_workers)
    xs, ys = [], []
    for x, y in one_line_errors(loader):
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("the data set is empty")
    return torch.cat(xs), torch.cat(ys)


class DeviceBatches:
    """Shuffled uint8 batches sliced from one tensor that lives on the training device."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, shuffle: bool, seed: int,
                 drop_last: bool) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


def random_crop_flip(x: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Per-image random crop (after reflect-padding by ``pad``) and horizontal flip, vectorised."""
    b, _, h, w = x.shape  # (B, C, H, W)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    dy = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    rows = dy + torch.arange(h, device=x.device)  # (B, H)
    cols = dx + torch.arange(w, device=x.device)  # (B, W)
    flip = torch.rand(b, 1, device=x.device) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class ImageData(L.LightningDataModule):
    """Images for encoder and decoder training.

    Args:
        source: ``embedded`` (scikit-image photographs, no download), ``folder`` (an ImageFolder tree at
            ``root``: ``root/train`` and ``root/test`` if present, else a random split), or ``cifar10``
            (torchvision's CIFAR-10 at ``root``; fetched only with ``download=True``).
        image_size: side of the square images fed to the encoder (resize + centre crop).
        augment: random crop (padding 4 px at 32 px, scaled with size) and horizontal flip for training.
        in_memory: decode everything into one uint8 tensor kept on the training device (default: when
            image_size ≤ 64).
        limit_train / limit_val: use only the first N images of each split (seeded shuffle first).
    """

    def __init__(self, source: Literal["embedded", "folder", "cifar10"] = "embedded", root: Optional[str] = None,
                 image_size: int = 32, batch_size: int = 128, augment: bool = True,
                 in_memory: Optional[bool] = None, val_fraction: float = 0.1, limit_train: Optional[int] = None,
                 limit_val: Optional[int] = None, num_workers: int = 2, download: bool = False,
                 embedded_per_class: int = 250, seed: int = 0) -> None:
        super().__init__()
        if source != "embedded" and not root:
            raise ValueError(f"data source '{source}' needs a root folder (data.root)")
        self.save_hyperparameters()
        self.in_memory = image_size <= 64 if in_memory is None else in_memory
        self.class_names: list[str] = []
        self._train: object | None = None
        # What each split is and how many images it had before any limit (for reports): split -> text, size.
        self._origin: dict[str, str] = {}
        self._before_limit: dict[str, int] = {}
        self._pool: Optional[int] = None  # images in a source that is split here (held-out fraction)

    # ------------------------------------------------------------------ datasets
    def _transform(self) -> v2.Compose:
        s = self.hparams.image_size
        return v2.Compose([v2.PILToTensor(), v2.Resize(s, antialias=True), v2.CenterCrop(s)])

    def _folder_splits(self) -> tuple[Dataset, Dataset]:
        root = self.hparams.root
        if not os.path.isdir(root):
            raise FileNotFoundError(f"data folder not found: {root}")
        tf = self._transform()
        if os.path.isdir(os.path.join(root, "train")):
            val_dir = next((d for d in ("test", "val") if os.path.isdir(os.path.join(root, d))), None)
            if val_dir is None:
                raise ValueError(f"{root} has train/ but neither test/ nor val/; add one or point root at train/")
            self._origin = {"train": "the folder's train/", "val": f"the folder's {val_dir}/",
                            "all": "every image of the folder's train/ and " + val_dir + "/"}
            return (self._image_folder(os.path.join(root, "train"), tf),
                    self._image_folder(os.path.join(root, val_dir), tf))
        full = self._image_folder(root, tf)
        self._origin = self._held_out_origin("a folder without train/ and test/")
        self._pool = len(full)
        n_val = max(1, int(len(full) * self.hparams.val_fraction))
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
        return Subset(full, perm[n_val:]), Subset(full, perm[:n_val])

    def _held_out_origin(self, what: str) -> dict[str, str]:
        pct = f"{self.hparams.val_fraction * 100:g} %"
        return {"val": f"a seeded {pct} hold-out of {what}", "train": f"the rest of {what} (all but a seeded {pct})",
                "all": f"every image of {what}"}

    def _image_folder(self, path: str, tf: v2.Compose) -> datasets.ImageFolder:
        try:
            # read_image: a corrupt or foreign file is one error naming it, not a decoder's traceback.
            ds = datasets.ImageFolder(path, transform=tf, loader=read_image)
        except (FileNotFoundError, RuntimeError) as e:
            raise ValueError(f"no images found under {path}: expected {path}/<class>/<image>.jpg|png ({e})") from e
        self.class_names = ds.classes
        return ds

    def _limit(self, ds: Dataset, n: Optional[int]) -> Dataset:
        # Shuffled even when n covers the whole split: callers take "the first N" as a random draw, and the
        # folder order is class order.
        if n is None:
            return ds
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(self.hparams.seed))
        return Subset(ds, perm[:n].tolist())

    def setup(self, stage: Optional[str] = None) -> None:
        if self._train is not None:
            return
        hp = self.hparams
        if hp.source == "embedded":
            x, y, self.class_names = embedded_images(hp.embedded_per_class, hp.image_size, hp.seed)
            perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(hp.seed))
            n_val = max(1, int(len(x) * hp.val_fraction))
            x, y = x[perm], y[perm]
            self._origin, self._pool = self._held_out_origin("the embedded photographs' crops"), len(x)
            self._train, self._val = (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])
            self._before_limit = {"train": len(x) - n_val, "val": n_val}
            self._train = tuple(t[: hp.limit_train] for t in self._train)
            self._val = tuple(t[: hp.limit_val] for t in self._val)
            self.in_memory = True
            return
        if hp.source == "cifar10":
            tf = self._transform()
            train = datasets.CIFAR10(hp.root, train=True, transform=tf, download=hp.download)
            val = datasets.CIFAR10(hp.root, train=False, transform=tf, download=hp.download)
            self.class_names = train.classes
            self._origin = {"train": "CIFAR-10's training set", "val": "CIFAR-10's test set",
                            "all": "every image of CIFAR-10 (training and test sets)"}
        else:
            train, val = self._folder_splits()
        self._before_limit = {"train": len(train), "val": len(val)}
        train, val = self._limit(train, hp.limit_train), self._limit(val, hp.limit_val)
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"empty split: {len(train)} training and {len(val)} validation images")
        if self.in_memory:
            self._train, self._val = _decode_all(train, hp.num_workers), _decode_all(val, hp.num_workers)
        else:
            self._train, self._val = train, val

    # ------------------------------------------------------------------ loaders
    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _loader(self, split: object, train: bool) -> object:
        hp = self.hparams
        if self.in_memory:
            x, y = split
            dev = self._device()
            return DeviceBatches(x.to(dev), y.to(dev), hp.batch_size, shuffle=train, seed=hp.seed,
                                 drop_last=train and len(x) > hp.batch_size)
        return DataLoader(split, batch_size=hp.batch_size, shuffle=train, num_workers=hp.num_workers,
                          pin_memory=torch.cuda.is_available(), drop_last=train,
                          persistent_workers=hp.num_workers > 0)

    def train_dataloader(self) -> object:
        return self._loader(self._train, train=True)

    def val_dataloader(self) -> object:
        return self._loader(self._val, train=False)

    def test_dataloader(self) -> object:
        return self._loader(self._val, train=False)

    def _parts(self, split: str) -> list[object]:
        if split not in ("train", "val", "all"):
            raise ValueError(f"unknown split '{split}'; choose 'train', 'val' or 'all'")
        self.setup()
        return {"train": [self._train], "val": [self._val], "all": [self._train, self._val]}[split]

    def split_size(self, split: Literal["train", "val", "all"] = "val") -> int:
        """Number of images ``images(split)`` yields."""
        return sum(len(p[0]) if self.in_memory else len(p) for p in self._parts(split))

    def describe(self, split: Literal["train", "val", "all"] = "val") -> str:
        """What ``split`` is and how many images it holds, in words, e.g. "split val = a seeded 10 % hold-out
        of a folder without train/ and test/: 2 of 20 images"."""
        n = self.split_size(split)
        text = f"split {split} = {self._origin.get(split, split)}"
        limit = {"train": self.hparams.limit_train, "val": self.hparams.limit_val}.get(split)
        before = self._before_limit.get(split)
        if limit is not None and before is not None:
            if self._pool is not None:
                text += f" ({before} of {self._pool} images)"
            return text + f", a seeded random subset: {n} of {before} images"
        if self._pool is not None and split != "all":
            return text + f": {n} of {self._pool} images"
        return text + f": {n} images"

    def images(self, split: Literal["train", "val", "all"] = "val", batch_size: Optional[int] = None,
               device: torch.device | str = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
        """Un-augmented, unshuffled float batches in [0, 1] of a split, for evaluation and tools.

        ``val`` is the held-out split: ``root/test`` (or ``root/val``) for a folder tree, CIFAR-10's test set,
        else a seeded ``val_fraction`` of the images; ``all`` is the training split followed by ``val``.
        """
        bs = batch_size or self.hparams.batch_size
        for data in self._parts(split):
            if self.in_memory:
                x, y = data
                batches = DeviceBatches(x, y, bs, shuffle=False, seed=0, drop_last=False)
            else:
                batches = DataLoader(data, batch_size=bs, num_workers=self.hparams.num_workers)
            for x, y in one_line_errors(batches):
                yield x.to(device).float().div_(255), y.to(device)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        x, y = batch
        x = x.float().div_(255)  # (B, C, H, W) in [0, 1]
        trainer = getattr(self, "trainer", None)
        if self.hparams.augment and trainer is not None and trainer.training:
            x = random_crop_flip(x, pad=max(1, self.hparams.image_size // 8))
        return x, y

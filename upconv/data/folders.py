"""The one image reader of every command: an ImageFolder tree ``root/<class>/<image>``, or image files and
folders given on a command line, resized (shorter side) and centre-cropped to the encoder's size by one
``transform``, every file decoded through ``upconv.core.files.read_image`` (a corrupt file is one error
naming it)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from torchvision import datasets
from torchvision.transforms import v2

from upconv.core.files import read_image
from upconv.core.runtime import progress
from upconv.data.augment import to_unit

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def transform(size: int | tuple[int, int], dtype: Literal["uint8", "float"] = "uint8") -> v2.Compose:
    """PIL image → resized (shorter side), centre-cropped tensor: uint8 (0–255) or float in [0, 1]."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    steps = [v2.PILToTensor(), v2.Resize(min(size), antialias=True), v2.CenterCrop(size)]
    if dtype == "float":  # the very division evaluation applies to uint8 batches: equal tensors, not just close
        steps.append(v2.Lambda(to_unit))
    return v2.Compose(steps)


def image_folder(
    root: str, size: int | tuple[int, int], dtype: Literal["uint8", "float"] = "uint8", mode: str = "RGB"
) -> datasets.ImageFolder:
    """An ImageFolder tree at ``root``, images decoded lazily, resized and centre-cropped to ``size``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data folder not found: {root} (expected an ImageFolder tree root/<class>/<image>)")
    try:
        return datasets.ImageFolder(
            root, transform=transform(size, dtype), loader=functools.partial(read_image, mode=mode)
        )
    except (FileNotFoundError, RuntimeError) as e:
        raise ValueError(f"no images found under {root}: expected {root}/<class>/<image>.jpg|png ({e})") from e


def evenly_spaced(n: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(n)`` (all without a limit): in a class-sorted file list a
    small limit still covers every class."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images; got {limit}")
    k = n if limit is None else min(limit, n)
    return torch.linspace(0, n - 1, k).round().long().unique().tolist() if k else []


def load_images(
    inputs: Sequence[str], size: tuple[int, int], limit: int | None = None, channels: int = 3
) -> tuple[Tensor, Tensor | None, list[str]]:
    """Image files, plain folders of images and ImageFolder directories (``root/<class>/<image>``) as float
    images (N, C, H, W) in [0, 1], their folder labels (None when any input is a file or a plain folder) and
    their names; ``limit`` images per folder, evenly spaced."""
    mode = "L" if channels == 1 else "RGB"
    tf = transform(size, "float")  # the same resize and crop as image_folder: one file, one tensor everywhere
    picks: list[tuple[str, int, str]] = []  # (file, label, name)
    for path in inputs:
        if os.path.isdir(path) and plain_folder(path):  # photos/*.jpg: no classes, no labels
            files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXT))
            picks += [(os.path.join(path, files[i]), -1, files[i]) for i in evenly_spaced(len(files), limit)]
        elif os.path.isdir(path):
            ds = datasets.ImageFolder(path)  # lists files only; nothing is decoded here
            for i in evenly_spaced(len(ds), limit):
                file, label = ds.samples[i]
                picks.append((file, label, os.path.relpath(file, path)))
        elif os.path.isfile(path) and path.lower().endswith(IMAGE_EXT):
            picks.append((path, -1, os.path.basename(path)))
        else:
            raise FileNotFoundError(
                f"{path}: expected an image file ({', '.join(IMAGE_EXT)}) or an ImageFolder directory"
            )
    if not picks:
        raise ValueError(f"no images found in {list(inputs)}")
    images = [tf(read_image(f, mode)) for f, _, _ in progress(picks, "loading images", len(picks), unit="img")]
    y = torch.tensor([label for _, label, _ in picks])
    return torch.stack(images), (None if (y < 0).any() else y), [name for _, _, name in picks]


def plain_folder(path: str) -> bool:
    """A folder of images without class subfolders (read as files, unlabelled), not an ImageFolder tree."""
    return not any(e.is_dir() for e in os.scandir(path))


def folder_classes(inputs: Sequence[str]) -> list[str] | None:
    """The class names of the ImageFolder directories among ``inputs``, in label order (sorted folder names);
    None when there is no such directory or two have different classes."""
    found = {tuple(datasets.folder.find_classes(p)[0]) for p in inputs if os.path.isdir(p) and not plain_folder(p)}
    return list(found.pop()) if len(found) == 1 else None

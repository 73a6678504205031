"""Batching: uint8 batches sliced on the device, and a whole small-image dataset decoded into one tensor,
with an unreadable file's error kept to one line even when a DataLoader worker re-raises it."""

from __future__ import annotations

import re
from typing import Iterable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from upconv.core.files import UnreadableFileError


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


def decode_all(ds: Dataset, num_workers: int) -> tuple[Tensor, Tensor]:
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

"""Batching: uint8 batches sliced on the device, sharded over the processes of a data-parallel run; a whole
small-image dataset decoded into one tensor, with an unreadable file's error kept to one line even when a
DataLoader worker re-raises it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

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


class ShardedOrder:
    """Which images each batch of this process takes, epoch by epoch: the batch sampler of ``DeviceBatches``.

    The epoch's order is a pure function of ``seed`` and the epoch (``epoch_order``), so every process of a
    data-parallel run draws the same permutation without talking to the others. Process ``rank`` of
    ``world_size`` takes every ``world_size``-th image of it, the layout of torch's ``DistributedSampler``, so
    the shards are disjoint and together cover the order once.

    Training (``drop_last``): each step's global batch is ``batch_size × world_size`` consecutive images of the
    order, so step i of every process together holds ``order[i·G:(i+1)·G]`` (G the global batch): exactly the
    images one process with batch G takes at step i. The remainder (n mod G images) is dropped, the same on
    every process, so every process runs ``n // G`` steps; the next epoch's permutation brings them back.
    A split smaller than one global batch gives one step of ``n // world_size`` images per process.
    Evaluation (not ``drop_last``): every image exactly once, no padding, so sums over processes are exact;
    shards differ by at most one image, and the last batch may be smaller.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of images; got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
        if n < world_size:
            raise ValueError(
                f"the split has {n} images, fewer than the {world_size} data-parallel processes: "
                f"each process needs at least one; use more images or fewer devices"
            )
        self.n, self.shuffle, self.seed, self.drop_last = n, shuffle, seed, drop_last
        self.rank, self.world_size, self.device = rank, world_size, device
        self.batch_size = min(batch_size, n // world_size) if drop_last else batch_size  # per process
        self.epoch = 0
        self._taken = (0, 0)  # (epoch, batches) of the pass under way: what a checkpoint saved now has trained
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass draws (Lightning calls this at the start of every epoch, resumes included)."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // (self.batch_size * self.world_size)
        return -(-len(range(self.rank, self.n, self.world_size)) // self.batch_size)

    def shard(self, epoch: int) -> Tensor:
        """This process's image indices for ``epoch``, in the order its batches take them, (n_rank,)."""
        order = epoch_order(self.n, self.seed, epoch) if self.shuffle else torch.arange(self.n)  # (n,)
        if self.drop_last:
            order = order[: len(self) * self.batch_size * self.world_size]
        return order[self.rank :: self.world_size].to(self.device)  # moved once per epoch

    def __iter__(self) -> Iterator[Tensor]:
        epoch, self.epoch = self.epoch, self.epoch + 1  # a plain loop gets a new order every pass
        shard = self.shard(epoch)
        resume, self._resume = self._resume, None
        start = resume[1] if resume is not None and resume[0] == epoch else 0
        for i in range(start, len(self)):
            self._taken = (epoch, i + 1)
            yield shard[i * self.batch_size : (i + 1) * self.batch_size]  # (B,)

    def state_dict(self) -> dict[str, int]:
        """Where the pass under way stands (saved by Lightning in a checkpoint taken within an epoch)."""
        return {"epoch": self._taken[0], "batches": self._taken[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the pass over epoch ``state["epoch"]`` starts after its first ``state["batches"]`` batches, so a
        run resumed from within an epoch trains the rest of that epoch's order, not the whole epoch again."""
        self._resume = (int(state["epoch"]), int(state["batches"]))


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of ``n`` images in ``epoch`` of a run seeded ``seed``, (n,): the same on every process
    and every machine (a CPU generator), different for every (seed, epoch) pair."""
    # torch's CPU generator keeps 32 bits of its seed: hash the pair into them rather than add (seed + epoch
    # would give run seed 1's epoch 0 the order of run seed 0's epoch 1)
    mixed = int.from_bytes(hashlib.blake2b(f"{seed}/{epoch}".encode(), digest_size=4).digest(), "little")
    g = torch.Generator(device="cpu").manual_seed(mixed)
    return torch.randperm(n, generator=g)


class DeviceBatches:
    """Shuffled uint8 batches sliced from one tensor that lives on the training device, sharded over the
    processes of a data-parallel run by ``ShardedOrder``. That order is both ``sampler`` and ``batch_sampler``,
    the attributes a DataLoader has: Lightning sets the epoch through the first and, finding no RandomSampler
    in the second, does not mistake validation batches for shuffled ones."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.sampler = self.batch_sampler = ShardedOrder(
            len(images), batch_size, shuffle, seed, drop_last, rank, world_size, device=images.device
        )
        self.batch_size = self.sampler.batch_size

    def __len__(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> dict[str, int]:  # with load_state_dict: Lightning saves and restores the position
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for idx in self.sampler:  # (B,) on the images' device
            yield self.images[idx], self.labels[idx]

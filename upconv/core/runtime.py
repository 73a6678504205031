"""Run-time plumbing shared by every command: the device to run on, and progress bars for long loops."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; anything else as torch reads it (``cpu``, ``cuda:1``)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N ({e})") from None


_OPEN_BARS: weakref.WeakSet[Any] = weakref.WeakSet()  # bars of loops that have not finished


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``iterable`` with a progress bar on stderr (tqdm), so long work is never silent.

    ``UPCONV_PROGRESS=0`` turns every bar off (for logs and batch jobs); bars never write to stdout, so a
    command's printed results stay machine-readable.
    """
    from tqdm.auto import tqdm

    disable = os.environ.get("UPCONV_PROGRESS", "1") == "0"
    bar = tqdm(
        iterable, desc=desc, total=total, unit=unit, disable=disable, dynamic_ncols=True, mininterval=0.5, leave=False
    )
    _OPEN_BARS.add(bar)
    try:
        yield from bar
    finally:
        bar.close()
        _OPEN_BARS.discard(bar)


def close_progress_bars() -> None:
    """Erase the bars of loops a failure interrupted (its traceback keeps their generators alive), so an
    error message is the last thing on the terminal rather than text glued to a half-drawn bar."""
    for bar in list(_OPEN_BARS):
        bar.close()
        _OPEN_BARS.discard(bar)

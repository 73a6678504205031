"""Data-parallel helpers for the training module: one decision per step on every rank, one voice on rank 0."""

from __future__ import annotations

import logging

import torch
from torch import Tensor


def mean_over_ranks(values: Tensor) -> Tensor:
    """``values`` averaged over the processes of a data-parallel run (itself in a single process): the health
    guard then sees the whole global batch's losses and every rank takes the same decision."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        values = values.clone()
        torch.distributed.all_reduce(values)
        return values / torch.distributed.get_world_size()
    return values


def silent(record: logging.LogRecord) -> bool:
    """A logging filter that drops every record (the guard's warnings on ranks other than 0)."""
    return False

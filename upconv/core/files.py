"""Reading user files with one clear error: a corrupt, truncated, empty or foreign file is named, with what
was expected and what to do, instead of a library's traceback.

Weights and checkpoints are read with ``torch.load(weights_only=True)``: a file can hold tensors and plain
containers, never code to run.
"""

from __future__ import annotations

import os
import pickle
import warnings
from typing import Any


class UnreadableFileError(ValueError):
    """A file exists but cannot be read as what it should be."""


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``what`` names the file's role in errors
    ("decoder checkpoint", "encoder weights file")."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if os.path.getsize(path) == 0:
        raise UnreadableFileError(f"{what} {path} is empty (0 bytes); a run was probably killed while writing "
                                  f"it: re-create it, or point to another file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing anyway
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() and "unsupported global" in str(e).lower():
            raise UnreadableFileError(
                f"refused to load {what} {path}: it holds pickled Python objects, not just tensors, and upconv "
                f"never runs code from a file; save a plain state dict (torch.save(model.state_dict(), path))"
            ) from None
        raise UnreadableFileError(f"{what} {path} is not a PyTorch file (unrecognised contents); check the "
                                  f"path, or re-create the file") from None
    except (RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnreadableFileError(f"{what} {path} is truncated or corrupt ({first[:120]}); re-create it, or "
                                  f"point to another file") from None


def read_image(path: str | os.PathLike, mode: str = "RGB") -> Any:
    """A PIL image converted to ``mode``, decoded now (not lazily), or one error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableFileError(f"cannot decode image {os.fspath(path)} ({e}); remove or replace the file") from None

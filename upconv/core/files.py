"""Reading user files with one clear error: a corrupt, truncated, empty or foreign file is named, with what
was expected and what to do, instead of a library's traceback.

Weights and checkpoints are read with ``torch.load(weights_only=True)``: a file can hold tensors and plain
containers, never code to run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any


class UnreadableFileError(ValueError):
    """A file exists but cannot be read as what it should be."""


def _present(path: str | os.PathLike, what: str, remedy: str) -> str:
    """``path`` as a string, once it is known to be an existing, non-empty file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if os.path.getsize(path) == 0:
        raise UnreadableFileError(
            f"{what} {path} is empty (0 bytes); a run was probably killed while writing it: {remedy}"
        )
    return path


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``what`` names the file's role in errors
    ("decoder checkpoint", "encoder weights file")."""
    import torch

    path = _present(path, what, "re-create it, or point to another file")
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
        raise UnreadableFileError(
            f"{what} {path} is not a PyTorch file (unrecognised contents); check the path, or re-create the file"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = textwrap.shorten(first, 240, placeholder=" …")  # whole words: a cut cause must not read "If yo"
        raise UnreadableFileError(
            f"{what} {path} is truncated or corrupt ({first}); re-create it, or point to another file"
        ) from None


def check_torch_file(path: str | os.PathLike, what: str) -> None:
    """Refuse a missing, empty or truncated PyTorch file without loading it (its zip directory is read):
    for files a library loads itself, e.g. Lightning's resume checkpoint."""
    import zipfile

    path = _present(path, what, "point to an earlier checkpoint, or start without it")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        bad = str(e) or type(e).__name__
    if bad is not None:
        raise UnreadableFileError(
            f"{what} {path} is truncated or corrupt (not a complete PyTorch file: {bad}); "
            f"point to an earlier checkpoint, or start without it"
        )


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a hidden temporary sibling of ``path`` to write; it replaces ``path`` only if the block succeeds,
    so a reader (or a resumed run) never sees a half-written file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.partial-", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is ordinary
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_image(path: str | os.PathLike, mode: str = "RGB") -> Any:
    """A PIL image converted to ``mode``, decoded now (not lazily), or one error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableFileError(f"cannot decode image {os.fspath(path)} ({e}); remove or replace the file") from None


def check_out(out: str | os.PathLike, overwrite: bool = False, keep: tuple[str, ...] = ()) -> None:
    """Refuse an existing non-empty run folder unless ``overwrite``; called before any work starts. Entries
    named in ``keep`` (a resumable run's finished units) do not count."""
    if not os.path.exists(out) or overwrite:
        return
    if not os.path.isdir(out) or set(os.listdir(out)) - set(keep):
        raise ValueError(
            f"output folder {out} already exists and is not empty; choose another folder, or pass "
            f"--overwrite true (overwrite=True in Python) to replace it"
        )


@contextlib.contextmanager
def atomic_folder(out: str | os.PathLike, overwrite: bool = False, keep: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield a temporary sibling of ``out`` to write into; it becomes ``out`` only if the block succeeds.

    An existing non-empty ``out`` is an error unless ``overwrite``; on any exception nothing is left behind.
    Entries of an existing ``out`` named in ``keep`` (a resumable run's finished units, written before its
    report) stay where they are: the other entries are swapped for the new ones, one rename each.
    """
    out = os.path.abspath(out)
    check_out(out, overwrite, keep)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report folder is ordinary
        if not os.path.exists(out):
            os.rename(tmp, out)
            return
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
        if any(os.path.exists(os.path.join(out, k)) for k in keep):
            _swap_entries(tmp, out, old, keep)
        else:
            os.rename(out, os.path.join(old, "previous"))
            os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_entries(new: str, out: str, old: str, keep: tuple[str, ...]) -> None:
    """Move ``out``'s entries but ``keep`` into ``old``, then ``new``'s entries into ``out``."""
    clash = set(os.listdir(new)) & set(keep)
    if clash:
        raise ValueError(f"a report may not write {', '.join(sorted(clash))}: the run keeps its units there")
    for name in os.listdir(out):
        if name not in keep:
            os.rename(os.path.join(out, name), os.path.join(old, name))
    for name in os.listdir(new):
        os.rename(os.path.join(new, name), os.path.join(out, name))
    os.rmdir(new)

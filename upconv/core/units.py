"""Resumable units of a long job: the benchmark's (an encoder with a group of its layers) and the privacy sweeps'
points. Each unit is a folder written atomically with the settings that produced it, so a killed job keeps
every finished unit and leaves no half-written one; re-running reuses finished units, refuses a unit whose
settings changed (naming what changed) unless told to overwrite, and ``shard`` splits the list of units for a
SLURM job array over machines that share the folder.

A unit folder is complete exactly when it exists: it is filled under a hidden temporary name and renamed into
place with its ``unit.json`` (key, settings, and whatever the unit reports) already inside.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
RECORD = "unit.json"


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: ``key`` names its folder (``/`` nests), ``settings`` (plain JSON values) is
    everything that determines its result."""

    key: str
    settings: dict[str, Any] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists, numbers stay numbers), so settings compare alike
    whether they come from a config or from a file."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def changed(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two plain values (``a.b`` for nested mappings)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(name)
            else:
                out += changed(old[k], new[k], name)
        return out
    return [] if old == new else [prefix or "(the settings)"]


def fingerprint(*tensors: Any) -> str:
    """First 16 hex digits of a SHA-256 over the tensors' dtypes, shapes and bytes: a unit's settings name the
    data it was computed on by this, so other images under the same options are a changed setting."""
    import torch

    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def parse_shard(spec: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 ≤ i < n; None -> (0, 1)."""
    if spec is None or spec == "":
        return 0, 1
    try:
        i, n = (int(s) for s in str(spec).split("/"))
    except ValueError:
        raise ValueError(
            f"--shard takes i/n with whole numbers (e.g. 0/4, the first of 4 shards); got {spec!r}"
        ) from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard i/n needs 0 ≤ i < n (shards are numbered from 0, e.g. 0/4 … 3/4); got {spec!r}")
    return i, n


def shard(items: Sequence[T], spec: str | None) -> list[T]:
    """The share of ``items`` that shard ``i/n`` runs: every n-th item from the i-th, so the shards of one list
    are disjoint, cover it, and do not depend on which units are already finished."""
    i, n = parse_shard(spec)
    return list(items[i::n])


class UnitStore:
    """The finished units of one job, under ``root``.

    ``overwrite`` replaces a unit whose settings changed (and lets ``writing`` replace a finished one);
    without it a changed unit is refused with one line that names the changed settings.
    """

    def __init__(self, root: str | os.PathLike, overwrite: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.overwrite = overwrite

    def folder(self, key: str) -> str:
        if not key or key.startswith(("/", ".")) or ".." in key.split("/"):
            raise ValueError(f"a unit key is a relative name without '..' (e.g. alexnet_cifar/conv1-fc8); got {key!r}")
        return os.path.join(self.root, *key.split("/"))

    def record(self, key: str) -> dict[str, Any] | None:
        """The finished unit's ``unit.json``, or None if the unit is not finished."""
        path = os.path.join(self.folder(key), RECORD)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def done(self, unit: Unit) -> bool:
        """True when ``unit`` is finished with the same settings; False when it is not finished, or when its
        settings changed and ``overwrite`` lets it be redone. A changed unit without ``overwrite`` is an error."""
        rec = self.record(unit.key)
        if rec is None:
            return False
        diff = changed(rec.get("settings"), plain(unit.settings))
        if not diff:
            return True
        if self.overwrite:
            return False
        raise ValueError(
            f"unit {unit.key} in {self.root} was made with other settings (changed: {', '.join(diff)}); "
            f"use another out folder, restore the settings, or pass --overwrite true to redo it"
        )

    def sweep(self) -> list[str]:
        """Remove the hidden partial folders that processes of this machine left when they were killed (their
        process no longer runs); a live process's, or another machine's, are left alone. Returns the paths."""
        gone = []
        for folder, dirs, _ in os.walk(self.root):
            gone += _drop_stale(folder, [d for d in dirs if d.startswith(".")])
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        return gone

    def finished(self) -> list[dict[str, Any]]:
        """Every finished unit's record under the root, in key order."""
        out = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if RECORD in files:
                with open(os.path.join(folder, RECORD)) as f:
                    out.append(json.load(f))
        return sorted(out, key=lambda r: r["key"])

    @contextlib.contextmanager
    def writing(self, unit: Unit) -> Iterator[dict[str, Any]]:
        """Fill a unit: yields ``{"folder": tmp, "results": {}, "keep": True}``; write files into ``folder`` and
        put what the unit reports into ``results``. On success ``unit.json`` (key, settings, results) is written
        and the folder renamed into place; on any error, or when ``keep`` was set to False (a data-parallel rank
        other than the first), nothing is left. If another process (a shard) finished the same unit with the
        same settings first, its folder is kept and this one dropped."""
        final = self.folder(unit.key)
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        _drop_stale(parent, [n for n in os.listdir(parent) if n.startswith(f".{os.path.basename(final)}.partial-")])
        tag = f".{os.path.basename(final)}.partial-{socket.gethostname()}-{os.getpid()}-"
        tmp = tempfile.mkdtemp(prefix=tag, dir=parent)
        state: dict[str, Any] = {"folder": tmp, "results": {}, "keep": True}
        try:
            yield state
            if not state["keep"]:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            record = {"key": unit.key, "settings": plain(unit.settings), "results": plain(state["results"])}
            with open(os.path.join(tmp, RECORD), "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a result folder is ordinary
            self._place(tmp, final, unit)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _place(self, tmp: str, final: str, unit: Unit) -> None:
        if os.path.exists(final):
            rec = self.record(unit.key)
            if rec is not None and not changed(rec.get("settings"), plain(unit.settings)) and not self.overwrite:
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent shard finished it first: keep theirs
                return
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.old-", dir=os.path.dirname(final))
            os.rename(final, os.path.join(old, "previous"))
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)


def _drop_stale(parent: str, names: list[str]) -> list[str]:
    """Remove those of ``names`` (in ``parent``) that are partial folders a killed process of this machine left
    (``.<unit>.partial-<host>-<pid>-…`` whose process no longer exists: it will never finish them); other
    machines' partials, and live processes', are left alone. Returns the removed paths."""
    mark, gone = f".partial-{socket.gethostname()}-", []
    for name in names:
        pid = name.partition(mark)[2].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            gone.append(os.path.join(parent, name))
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True

"""The resumable unit store (``upconv.core.units``): atomic units, reuse, refusal of changed settings, shards."""

from __future__ import annotations

import os

import pytest

from upconv.core.units import Unit, UnitStore, changed, parse_shard, shard


def _fill(store: UnitStore, unit: Unit, text: str = "x") -> None:
    with store.writing(unit) as w:
        with open(os.path.join(w["folder"], "out.txt"), "w") as f:
            f.write(text)
        w["results"]["n"] = len(text)


def test_a_finished_unit_is_reused_and_its_files_untouched(tmp_path):
    store, unit = UnitStore(tmp_path), Unit("units/a", {"lr": 0.1, "layers": ("conv1", "fc8")})
    assert not store.done(unit)
    _fill(store, unit, "abc")
    path = tmp_path / "units" / "a" / "out.txt"
    stamp = os.stat(path).st_mtime_ns
    assert store.done(Unit("units/a", {"layers": ["conv1", "fc8"], "lr": 0.1}))  # tuples read back as lists
    assert os.stat(path).st_mtime_ns == stamp
    assert store.record("units/a")["results"] == {"n": 3}
    assert [r["key"] for r in UnitStore(tmp_path).finished()] == ["units/a"]


def test_a_changed_unit_is_refused_with_what_changed_or_redone_under_overwrite(tmp_path):
    store = UnitStore(tmp_path)
    _fill(store, Unit("u", {"lr": 0.1, "data": {"limit": 10}}))
    with pytest.raises(ValueError, match=r"changed: data\.limit, lr\).*--overwrite true"):
        store.done(Unit("u", {"lr": 0.2, "data": {"limit": 20}}))
    again = UnitStore(tmp_path, overwrite=True)
    new = Unit("u", {"lr": 0.2, "data": {"limit": 20}})
    assert not again.done(new)
    _fill(again, new, "replaced")
    assert (tmp_path / "u" / "out.txt").read_text() == "replaced"
    assert store.done(new)


def test_a_failing_unit_leaves_nothing_behind(tmp_path):
    store = UnitStore(tmp_path)
    with pytest.raises(RuntimeError), store.writing(Unit("units/b")) as w:
        open(os.path.join(w["folder"], "half.txt"), "w").close()
        raise RuntimeError("killed")
    assert store.record("units/b") is None
    assert os.listdir(tmp_path / "units") == []


def test_a_unit_another_shard_finished_first_is_kept(tmp_path):
    store, unit = UnitStore(tmp_path), Unit("u", {"a": 1})
    with store.writing(unit) as w:
        _fill(store, unit, "first")  # the other process finishes while this one is still writing
        open(os.path.join(w["folder"], "out.txt"), "w").write("second")
    assert (tmp_path / "u" / "out.txt").read_text() == "first"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_shards_are_disjoint_and_cover_the_list():
    items = list(range(7))
    parts = [shard(items, f"{i}/3") for i in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert shard(items, None) == items
    assert parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "x", "1/0", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_changed_names_nested_and_missing_settings():
    assert changed({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 0}) == ["b.c", "d"]
    assert changed({"a": [1, 2]}, {"a": [1, 2]}) == []


def test_partial_folders_of_killed_processes_are_swept_and_live_ones_kept(tmp_path):
    import socket

    host = socket.gethostname()
    dead = tmp_path / "units" / f".a.partial-{host}-999999999-x1"  # no such process
    live = tmp_path / "units" / f".b.partial-{host}-{os.getpid()}-x2"
    other = tmp_path / "units" / ".c.partial-elsewhere-1-x3"  # another machine's: it may still be writing
    for d in (dead, live, other):
        d.mkdir(parents=True)
    assert UnitStore(tmp_path).sweep() == [str(dead)]
    assert not dead.exists() and live.exists() and other.exists()


def test_a_fingerprint_names_the_data_exactly():
    import torch

    from upconv.core.units import fingerprint

    a = torch.arange(12, dtype=torch.uint8).view(3, 4)
    assert fingerprint(a) == fingerprint(a.clone()) == fingerprint(a.T.contiguous().T)  # values, not memory
    b = a.clone()
    b[2, 3] += 1
    others = {fingerprint(b), fingerprint(a.float()), fingerprint(a.view(4, 3)), fingerprint(a, a[:1])}
    assert fingerprint(a) not in others and len(others) == 4  # one value, the dtype, the shape, one more tensor


def test_a_killed_process_s_partial_unit_is_cleared_when_the_unit_is_written(tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / f".u.partial-{host}-{int(dead.stdout)}-abc"  # a killed writer of this machine
    live = tmp_path / f".u.partial-{host}-{os.getpid()}-def"  # this process, still writing
    other = tmp_path / ".u.partial-elsewhere-1-ghi"  # another machine's shard: not ours to judge
    for p in (stale, live, other):
        p.mkdir()
    _fill(UnitStore(tmp_path), Unit("u"))
    assert not stale.exists() and live.exists() and other.exists()
    assert (tmp_path / "u" / "unit.json").exists()

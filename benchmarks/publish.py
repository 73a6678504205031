"""Measurement tables written into the docs by the scripts that measure them.

A page marks where a script's table goes::

    <!-- begin: reproduce-cpu -->
    <!-- data: {"script": "reproduce", "command": "…", "date": "…", "device": "…", "load": 1.2, "figures": {…}} -->
    | layer | package PSNR | … |
    …

    <!-- end: reproduce-cpu -->

``publish`` replaces what lies between the two markers with the table and, above it, the data it was rendered
from (``figures``: the numbers the table shows, as the script's ``render(figures)`` reads them; plus the command,
date, device and load average of the run). The page is rewritten atomically. ``tests/test_measurements.py``
re-renders every block from its data with ``benchmarks/<script>.py``'s ``render`` and compares it with the text:
a number edited by hand, or a renderer changed without republishing, fails there.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from upconv.core.files import atomic_file  # noqa: E402

BEGIN, END, DATA = "<!-- begin: {} -->", "<!-- end: {} -->", "<!-- data: {} -->"
NAME = re.compile(r"^[\w.-]+$")
BLOCK = re.compile(r"^<!-- begin: (?P<name>[\w.-]+) -->\n(?P<body>.*?)^<!-- end: (?P=name) -->[ \t]*$", re.S | re.M)
DATA_LINE = re.compile(r"\A<!-- data: (?P<json>.*?) -->\n", re.S)


@dataclass
class Block:
    name: str
    data: dict[str, Any]  # script, command, date, device, load, figures
    table: str  # the rendered text, without surrounding blank lines


def rounded(value: Any, digits: int = 6) -> Any:
    """``value`` with every float cut to ``digits`` significant digits (tuples become lists): the figures as
    stored in a block, and as its table is rendered from, so the two cannot disagree."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def record(
    script: str,
    figures: dict,
    device: str,
    load: float | None,
    command: str | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    """A block's data: what ``script``'s ``render`` reads (``figures``) and how the run was made: ``device``,
    ``load`` (the 1-minute load average before the run, from ``load_now``; None when it was not recorded),
    ``command`` (default: this process's command line) and ``date`` (default: today)."""
    return {
        "script": script,
        "command": command or shlex.join(["python", f"benchmarks/{script}.py", *sys.argv[1:]]),
        "date": date or datetime.date.today().isoformat(),
        "device": device,
        "load": load,
        "figures": rounded(figures),
    }


def load_now() -> float:
    """The 1-minute load average: other jobs sharing the cores skew CPU timings, so a run records it."""
    return round(os.getloadavg()[0], 1)


def block(name: str, table: str, data: dict) -> str:
    """The lines of one block, markers included. ``>`` is escaped in the JSON so no value can close the comment."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace(">", "\\u003e")
    return "\n".join([BEGIN.format(name), DATA.format(payload), table.strip("\n"), "", END.format(name)])


def read_blocks(text: str) -> list[Block]:
    """Every marked block of a page, in order; a block without its data line is an error."""
    out = []
    for m in BLOCK.finditer(text):
        d = DATA_LINE.match(m["body"])
        if not d:
            raise ValueError(f"block '{m['name']}' has no '<!-- data: {{…}} -->' line under its begin marker")
        out.append(Block(m["name"], json.loads(d["json"]), m["body"][d.end() :].strip("\n")))
    return out


def _span(text: str, path: str | os.PathLike, name: str) -> tuple[int, int]:
    """Where block ``name`` starts (its begin marker) and ends (the end of its end marker's line) in ``text``."""
    if not NAME.match(name):
        raise SystemExit(f"publish: error: block name '{name}' may hold only letters, digits, '.', '_' and '-'")
    found = []
    for marker in (BEGIN.format(name), END.format(name)):
        at = [m.start() for m in re.finditer(rf"^{re.escape(marker)}[ \t]*$", text, re.M)]
        if not at:
            raise SystemExit(
                f"publish: error: {path} has no line '{marker}'; add '{BEGIN.format(name)}' and "
                f"'{END.format(name)}', each on its own line, where the table goes"
            )
        if len(at) > 1:
            raise SystemExit(f"publish: error: {path} has {len(at)} lines '{marker}'; keep one")
        found.append(at[0])
    start, end = found
    if end < start:
        raise SystemExit(f"publish: error: in {path}, '{END.format(name)}' comes before '{BEGIN.format(name)}'")
    return start, text.find("\n", end) if "\n" in text[end:] else len(text)


def require(path: str | os.PathLike, name: str) -> None:
    """Stop now, with ``publish``'s message, if ``path`` cannot take block ``name`` (call it before a long run)."""
    if not os.path.isfile(path):
        raise SystemExit(f"publish: error: no page {path} to publish into")
    with open(path, encoding="utf-8") as f:
        _span(f.read(), path, name)


def publish(path: str | os.PathLike, name: str, table: str, data: dict) -> None:
    """Replace block ``name`` of the markdown file ``path`` with ``table`` and ``data``; nothing else changes.
    A missing or repeated marker stops with one line saying what to add or remove."""
    require(path, name)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = _span(text, path, name)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text[:start] + block(name, table, data) + text[end:])

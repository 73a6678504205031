"""Write an evaluation run folder: report.md, metrics.csv, metrics.json, depth.png and grid.png.

Files are written into a hidden sibling folder that is renamed into place only when every file is
complete, so a failure never leaves a half-written report behind. Nothing time- or host-dependent is
written, so the same seed gives byte-identical metrics files.
"""

from __future__ import annotations

import csv
import json
import os

from upconv.core.files import atomic_folder
from upconv.evaluation import figures
from upconv.evaluation.result import METRICS, EvalResult
from upconv.evaluation.tables import markdown


def _write_csv(result: EvalResult, path: str) -> None:
    cols = ["method", "layer", "depth", "n", "reads_target", "floor_verdict", "decoder_health"] + [
        c for k in METRICS for c in (k, f"{k}_lo", f"{k}_hi")
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(cols)
        for r in [*result.rows, *result.floor_rows, *result.own_floor_rows]:
            w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r[c], float) else r[c] for c in cols])


def _write_json(result: EvalResult, path: str) -> None:
    with open(path, "w") as f:
        json.dump(
            {
                "settings": result.settings,
                "notes": result.notes,
                "rows": result.rows,
                "floor_rows": result.floor_rows,
                "own_floor_rows": result.own_floor_rows,
            },
            f,
            indent=2,
        )
        f.write("\n")


def write_report(result: EvalResult, out: str | os.PathLike, overwrite: bool = False) -> str:
    """Write the run folder ``out`` atomically (temporary sibling, then rename) and return its path."""
    with atomic_folder(out, overwrite) as tmp:
        _write_csv(result, os.path.join(tmp, "metrics.csv"))
        _write_json(result, os.path.join(tmp, "metrics.json"))
        figures.depth_plot(result, os.path.join(tmp, "depth.png"))
        figures.grid_plot(result, os.path.join(tmp, "grid.png"))
        with open(os.path.join(tmp, "report.md"), "w") as f:
            f.write(markdown(result))
    return os.path.abspath(out)

"""``upconv benchmark``: plan → (this shard's) units → report.

Every unit whose folder exists with the same settings is reused; a unit whose settings changed is refused
before anything trains (or redone under ``overwrite``); the others run one by one, each written atomically,
so a killed benchmark keeps every unit it finished. The report is then assembled from whatever units exist,
which is also all that ``report_only`` does (the step after a SLURM array's shards).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from upconv.benchmark.config import BenchmarkConfig
from upconv.benchmark.figures import depth_figure, grid_figure
from upconv.benchmark.plan import plan_benchmark
from upconv.benchmark.report import collect, write_report
from upconv.benchmark.unit import ensure_encoder, rank, run_unit
from upconv.core.runtime import progress
from upconv.core.units import UnitStore, shard

log = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    """What a benchmark call did and what its report holds."""

    out: str
    ran: list[str] = field(default_factory=list)  # unit keys run now
    reused: list[str] = field(default_factory=list)  # unit keys found finished
    missing: list[str] = field(default_factory=list)  # unit keys of the plan not finished (other shards)
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def run_benchmark(config: BenchmarkConfig) -> BenchmarkResult:
    t0 = time.perf_counter()
    plans, source = plan_benchmark(config)
    store = UnitStore(config.out, overwrite=config.overwrite)
    if rank() == 0:
        store.sweep()  # what killed runs of this machine left half-written
    result = BenchmarkResult(out=os.path.abspath(config.out), seconds={"plan": time.perf_counter() - t0})
    work = shard([(p, u) for p in plans for u in p.units], config.shard)
    if not config.report_only:
        # Every refusal (a unit made with other settings) comes before the first unit trains.
        pending = [(p, u) for p, u in work if not store.done(u)]
        for p, _ in pending:
            if p.encoder_unit is not None:
                store.done(p.encoder_unit)
        keys = {u.key for _, u in pending}
        result.reused = [u.key for _, u in work if u.key not in keys]
        for p, u in progress(pending, "benchmark units", unit="unit"):
            t = time.perf_counter()
            reused_encoder = ensure_encoder(p, store, source, config)
            if not reused_encoder:
                result.seconds[f"encoder {p.entry.name}"] = time.perf_counter() - t
            run_unit(p, u, store, source, config)
            result.ran.append(u.key)
            result.seconds[u.key] = time.perf_counter() - t
    if rank() != 0:  # a data-parallel rank: the units are written, rank 0 reports
        return result
    t = time.perf_counter()
    collected = collect(plans, store)
    result.rows, result.missing = collected["rows"], collected["missing"]
    os.makedirs(config.out, exist_ok=True)
    write_report(collected, config, config.out)
    if collected["rows"]:
        depth_figure(collected["rows"], collected["floors"], os.path.join(config.out, "depth.png"))
        grid_figure(plans, store, config.depths, os.path.join(config.out, "grid.png"))
    result.seconds["report"] = time.perf_counter() - t
    return result


def print_benchmark(config: BenchmarkConfig) -> None:
    """The command: run, then say what ran, what was reused and where the report is (stdout)."""
    r = run_benchmark(config)
    if rank() != 0:
        return
    print(
        f"units: {len(r.ran)} run, {len(r.reused)} reused"
        + (f", {len(r.missing)} not finished (other shards, or run again)" if r.missing else "")
    )
    print(os.path.join(r.out, "report.md"))

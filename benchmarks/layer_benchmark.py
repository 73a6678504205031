"""The layer-information benchmark as a measurement: run ``upconv benchmark`` on a shipped config (its units are
reused when they exist, so publishing a finished run re-runs nothing) and, with ``--publish PAGE``, write its
per-layer table, stage times and load into PAGE's block ``benchmark-<config name>`` and its figures beside it.

    python benchmarks/layer_benchmark.py --config configs/benchmark/cpu.yaml      # = make reproduce PRESET=cpu
    python benchmarks/layer_benchmark.py --config configs/benchmark/cpu.yaml --publish docs/measurements.md \
        --figures docs/images --seeds 0,1,2

With ``--seeds`` the config runs once per seed (into ``<out>-seed<s>``; every stage is seeded, so a seed's run
gives the same table again on the same machine) and the published block holds the first seed's table and,
beside it, how far each figure moves across the seeds: the spread a reader should expect between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jsonargparse import CLI  # noqa: E402
from publish import load_now, publish, record, require, rounded  # noqa: E402

from upconv.benchmark.config import BenchmarkConfig  # noqa: E402
from upconv.benchmark.report import mark  # noqa: E402
from upconv.benchmark.run import run_benchmark  # noqa: E402

SHOWN = (("upconvnet", "psnr"), ("upconvnet", "ssim"), ("deconvnet", "psnr"), ("linear probe", "accuracy"))


def figures(result: list[dict], models: dict) -> dict:
    """What the table shows: per model and layer, depth, geometry and each shown figure with its interval and
    verdict; per model, its encoder's accuracy and the seconds of each stage (encoder training, decoders,
    evaluation, probe), as its units recorded them."""
    rows = []
    for r in result:
        if (r["method"], r["metric"]) not in SHOWN:
            continue
        rows.append(
            {k: r.get(k) for k in ("model", "layer", "relative_depth", "features", "resolution", "method", "metric")}
            | {"ci": [r["mean"], r["lo"], r["hi"]], "verdict": r.get("floor_verdict"), "reads": r.get("reads_target")}
        )
    per_model = {}
    for m, info in models.items():
        train = info.get("encoder_training") or {}
        stages = {"encoder": train["seconds"]} if "seconds" in train else {}
        per_model[m] = {"accuracy": info.get("encoder_accuracy"), "seconds": {**stages, **info.get("seconds", {})}}
    return rounded({"rows": rows, "models": per_model})


def spread(runs: list[dict], seeds: list[int]) -> dict:
    """Per model and layer, each shown figure's mean in every seed's run, and each encoder's accuracy (runs
    are results.json contents, in ``seeds``' order)."""
    means: dict = {}
    for run in runs:
        for r in figures(run["rows"], run["models"])["rows"]:
            key = (r["model"], r["layer"], r["method"], r["metric"])
            means.setdefault(key, []).append(r["ci"][0])
    rows = [dict(zip(("model", "layer", "method", "metric"), k, strict=True), means=v) for k, v in means.items()]
    accuracy = {m: [run["models"][m]["encoder_accuracy"][0] for run in runs] for m in runs[0]["models"]}
    return rounded({"seeds": seeds, "rows": rows, "accuracy": accuracy})


def _range(r: dict | None) -> str:
    if r is None:
        return "—"
    d = 3 if r["metric"] != "psnr" else 2
    lo, hi = min(r["means"]), max(r["means"])
    return f"{lo:.{d}f}–{hi:.{d}f} (±{(hi - lo) / 2:.{d}f})"


def render_spread(spread: dict) -> str:
    """Across seeds: per model and layer, each shown figure's lowest–highest mean (± half that range)."""
    head = ["model", "layer", "UpconvNet PSNR", "UpconvNet SSIM", "DeconvNet PSNR †", "probe acc."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keyed: dict = {}
    for r in spread["rows"]:
        keyed.setdefault((r["model"], r["layer"]), {})[(r["method"], r["metric"])] = r
    for (model, layer), rs in keyed.items():
        lines.append("| " + " | ".join([model, layer] + [_range(rs.get(k)) for k in SHOWN]) + " |")
    lines.append("")
    for model, acc in spread["accuracy"].items():
        lines.append(f"- {model}: encoder accuracy {min(acc):.3f}–{max(acc):.3f} across seeds")
    return "\n".join(lines)


def _cell(r: dict | None) -> str:
    if r is None:
        return "—"
    m, lo, hi = r["ci"]
    d = 3 if r["metric"] != "psnr" else 2
    return f"{m:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]" + mark({"floor_verdict": r["verdict"], "reads_target": r["reads"]})


def render(figures: dict) -> str:
    """The per-layer table (one row per model × layer, deepest last) and the encoders' accuracy."""
    head = ["model", "layer", "depth", "features", "UpconvNet PSNR", "UpconvNet SSIM", "DeconvNet PSNR †", "probe acc."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keyed: dict = {}
    for r in figures["rows"]:
        keyed.setdefault((r["model"], r["layer"]), {})[(r["method"], r["metric"])] = r
    for (model, layer), rs in keyed.items():
        first = next(iter(rs.values()))
        cells = [model, layer, f"{first['relative_depth']:.2f}", f"{first['features']} ({first['resolution']})"]
        lines.append("| " + " | ".join(cells + [_cell(rs.get(k)) for k in SHOWN]) + " |")
    lines.append("")
    for model, info in figures["models"].items():
        acc = info["accuracy"]
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in info["seconds"].items())
        lines.append(
            f"- {model}: encoder accuracy "
            + (f"{acc[0]:.3f} [{acc[1]:.3f}, {acc[2]:.3f}]" if acc else "—")
            + f"; {stages}"
        )
    if "spread" in figures:
        seeds = ", ".join(str(s) for s in figures["spread"]["seeds"])
        lines += ["", f"Across seeds {seeds} (lowest–highest mean, ± half the range):", ""]
        lines.append(render_spread(figures["spread"]))
    return "\n".join(lines)


def device_name() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a benchmark config (configs/benchmark/<name>.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="an upconv benchmark option")
    ap.add_argument("--publish", metavar="PAGE", help="write the table into PAGE's block benchmark-<name>")
    ap.add_argument("--figures", metavar="DIR", help="with --publish: copy depth.png and grid.png here")
    ap.add_argument(
        "--seeds",
        type=lambda v: [int(x) for x in v.split(",")],
        help="comma-separated seeds: run the config once per seed (into <out>-seed<s>) and publish the spread",
    )
    ap.add_argument(
        "--load",
        type=float,
        help="with --publish: the load average while the units ran (default: the highest its units recorded)",
    )
    args = ap.parse_args(argv)
    name = os.path.splitext(os.path.basename(args.config))[0]
    if args.publish:
        require(args.publish, f"benchmark-{name}")
    config = CLI(BenchmarkConfig, args=["--config", args.config, *[f"--{s}" for s in args.set]])
    seeds = args.seeds or []
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"layer_benchmark: error: --seeds must be distinct; got {','.join(map(str, seeds))}")
    configs = [replace(config, seed=s, out=f"{config.out}-seed{s}") for s in seeds] or [config]
    load, t0 = load_now(), time.perf_counter()
    results = []
    for c in configs:
        result = run_benchmark(c)
        print(f"{c.out}: units {len(result.ran)} run, {len(result.reused)} reused; {time.perf_counter() - t0:.0f} s")
        results.append(result)
    result = results[0]
    if args.publish:
        runs = []
        for r in results:
            with open(os.path.join(r.out, "results.json")) as f:
                runs.append(json.load(f))
        collected = runs[0]
        figs = figures(collected["rows"], collected["models"])
        if seeds:
            figs["spread"] = spread(runs, seeds)
        command = shlex.join(["python", "benchmarks/layer_benchmark.py", *(sys.argv[1:] if argv is None else argv)])
        loads = [u for run in runs for m in run["models"].values() for u in m.get("loads", []) if u is not None]
        ran = any(r.ran for r in results)
        load = args.load if args.load is not None else (max(loads) if loads else load if ran else None)
        data = record("layer_benchmark", figs, device=device_name(), load=load, command=command)
        publish(args.publish, f"benchmark-{name}", render(data["figures"]), data)
        if args.figures:
            os.makedirs(args.figures, exist_ok=True)
            for f in ("depth.png", "grid.png"):
                shutil.copyfile(os.path.join(result.out, f), os.path.join(args.figures, f"benchmark-{name}-{f}"))


if __name__ == "__main__":
    main()

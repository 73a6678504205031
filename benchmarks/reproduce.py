"""The decoder recipe against a plain Dosovitskiy & Brox loop at equal budget, in one command: encoder → every
decoder → depth evaluation → the plain-loop baseline on the same images, written as one table (table.md) and one
JSON (results.json). (The headline product, the layer-information benchmark, is ``layer_benchmark.py``.)

    make baseline PRESET=smoke   # seconds-scale, embedded photographs, run by the test suite
    make baseline PRESET=cpu     # 800 CIFAR-10 images, 6 layers (medium: 2,000; short, long: other budgets)
    make baseline PRESET=gpu     # all of CIFAR-10, all 11 layers, sized for one 10-minute GPU call (not yet run)

Each run's table records its stage times and load; the published ones are in docs/measurements.md.

Each stage's epochs are the preset's, unless a ``budget`` (seconds) is set for it: then a few timed steps
size it first (epochs = min(preset, budget / measured epoch time)), and the table says what was run.
The baseline (``plain_loop.py``) sees the same training and test images; at equal epochs and batch size it is
the equal-budget comparison. Options override a preset: ``--set decoder_epochs=3 --set layers=conv1,fc8``.

``--publish docs/measurements.md`` also writes the per-layer table into that page's block ``reproduce-<preset>``
(see ``publish.py``); ``--render runs/reproduce-medium/results.json`` runs nothing and re-renders a finished run's
table.md (and, with ``--publish``, its block) from its results.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import lightning.pytorch as L
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plain_loop import interval, mean_image_floor, per_image_psnr, train_plain  # noqa: E402
from publish import load_now, publish, record, require, rounded  # noqa: E402

from upconv.core.files import atomic_file, atomic_folder  # noqa: E402
from upconv.data.source import ImageSource  # noqa: E402
from upconv.training.classifier import ClassifierModule  # noqa: E402
from upconv.training.datamodule import ImageData  # noqa: E402
from upconv.training.module import InversionModule  # noqa: E402
from upconv.training.runs import StepTimer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "configs", "cifar10_alexnet_all.yaml")  # the shipped decoder recipe
ALL = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
# Plain loop, 8 epochs per decoder, all 50 k CIFAR-10 training images, PSNR dB on the test set (H100).
REFERENCE = dict(zip(ALL, [37.0, 31.5, 26.5, 25.2, 21.8, 20.6, 18.2, 17.3, 14.8, 13.9, 13.6]))


@dataclass
class Preset:
    scale: str  # in words, printed on the table
    data: str = "folder"
    root: str | None = os.path.join(ROOT, "..", "shared", "data", "cifar10")
    train_images: int | None = None  # None: the whole split
    test_images: int | None = None
    embedded_per_class: int = 20
    encoder_kwargs: dict = field(default_factory=dict)
    encoder_weights: str | None = None  # a trained encoder to reuse (skips the encoder stage)
    encoder_epochs: int = 30
    encoder_batch: int = 256
    layers: list = field(default_factory=lambda: list(ALL))
    decoder_epochs: int = 20
    batch_size: int = 64
    model: dict = field(default_factory=dict)  # overrides of the shipped recipe's model.init_args
    baseline_epochs: int | None = None  # None: the decoders' (equal budget); 0: no baseline
    plain_width: int = 256
    precision: str = "32-true"
    budget: dict = field(default_factory=dict)  # stage -> seconds (encoder, decoders, baseline)
    workers: int = 2
    n_boot: int = 1000
    reference: bool = False  # print the full-scale reference beside the table
    # Every stage's initialisation and augmentation, and the plain loop's batch order; the data subsets and the
    # package's batch order come from the data's own seed (ImageSource), so they stay fixed.
    seed: int = 0


SIX_LAYERS = ["conv1", "pool2", "conv3", "conv5", "fc6", "fc8"]


def reduced(name: str, images: int, encoder_epochs: int) -> Preset:
    """A labelled CPU scale: ``images`` CIFAR-10 training images, 500 test images, six layers, 2 decoder epochs
    at batch 32, the plain loop at the package's decoder width."""
    return Preset(
        f"{name}: reduced — {images:,} CIFAR-10 training and 500 test images, 6 layers, 2 epochs at batch 32; "
        "plain loop at the package's decoder width (64)",
        train_images=images,
        test_images=500,
        encoder_epochs=encoder_epochs,
        encoder_batch=64,
        layers=list(SIX_LAYERS),
        decoder_epochs=2,
        batch_size=32,
        plain_width=64,
    )


PRESETS = {
    "smoke": Preset(
        "smoke: embedded photographs, a narrow encoder, 3 layers, 2 epochs",
        data="embedded",
        root=None,
        encoder_kwargs={"width": 0.25},
        encoder_epochs=1,
        layers=["conv1", "pool2", "fc6"],
        decoder_epochs=2,
        batch_size=32,
        model={"width": 8, "fc_width": 64, "max_width": 32},
        budget={"decoders": 600},  # generous: it exercises the timed probe without cutting epochs
        plain_width=16,
        n_boot=200,
        workers=0,
    ),
    "cpu": reduced("cpu", 800, encoder_epochs=10),  # 4 encoder epochs left it at chance on 800 images
    # The longer CPU budget of the equal-budget comparison: 2.5 × the cpu preset's images (124 decoder steps).
    "medium": reduced("medium", 2000, encoder_epochs=4),
    "gpu": Preset(
        "gpu: full — all 50,000 CIFAR-10 training and 10,000 test images, all 11 layers",
        encoder_epochs=30,
        decoder_epochs=30,
        batch_size=256,
        baseline_epochs=8,
        precision="bf16-mixed",
        budget={"encoder": 60, "decoders": 220, "baseline": 120},
        workers=16,
        reference=True,
        model={"channels_last": True},
    ),
    # Equal-budget comparisons (package vs plain loop, same images, epochs and batch). Give them a trained
    # encoder with --set encoder_weights=PATH (e.g. the cpu or gpu preset's encoder.pt).
    "short": Preset(
        "short budget: 640 CIFAR-10 training images, 2 epochs at batch 32, 500 test images, 6 layers",
        train_images=640,
        test_images=500,
        encoder_epochs=8,
        layers=list(SIX_LAYERS),
        decoder_epochs=2,
        batch_size=32,
    ),
    "long": Preset(
        "long budget: 10,000 CIFAR-10 training images, 5 epochs at batch 32, 1,000 test images, 6 layers",
        train_images=10000,
        test_images=1000,
        encoder_epochs=8,
        layers=list(SIX_LAYERS),
        decoder_epochs=5,
        batch_size=32,
    ),
}


# ---------------------------------------------------------------------- stages
def trainer(p: Preset, epochs: int, out: str, name: str, max_steps: int = -1, callbacks=()) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        max_steps=max_steps,
        precision=p.precision,
        accelerator="auto",
        devices=1,
        logger=L.loggers.CSVLogger(out, name=name),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0 if name == "decoders" else 1.0,
        log_every_n_steps=10,
        callbacks=list(callbacks),
    )


def sized(p: Preset, stage: str, epochs: int, steps_per_epoch: int, step_seconds) -> tuple[int, float | None]:
    """Epochs for ``stage``: the preset's, or as many as its time budget allows at the measured step cost."""
    budget = p.budget.get(stage)
    if not budget or epochs <= 1:
        return epochs, None
    per_step = step_seconds()
    fit = int(budget / (per_step * steps_per_epoch * 1.05))  # 5 % for validation and logging
    return max(1, min(epochs, fit)), per_step


def fit_probe(p: Preset, make, dm: ImageData, out: str) -> float:  # a module factory
    """Seconds per step of a fresh module from ``make`` over 25 steps of ``dm`` (warm-up steps excluded)."""
    timer = StepTimer()
    trainer(p, 1000, out, "probe", max_steps=25, callbacks=[timer]).fit(make(), dm)
    return timer.per_step


def train_encoder(p: Preset, dm: ImageData, out: str, log: dict) -> str:
    path = os.path.join(out, "encoder.pt")
    dm.hparams.batch_size, dm.hparams.augment = p.encoder_batch, True
    make = lambda: ClassifierModule(arch="alexnet_cifar", arch_kwargs=p.encoder_kwargs or None, export=path)  # noqa: E731
    n = dm.split_size("train")

    epochs, per_step = sized(
        p, "encoder", p.encoder_epochs, max(1, n // p.encoder_batch), lambda: fit_probe(p, make, dm, out)
    )
    L.seed_everything(p.seed, workers=True, verbose=False)  # initialisation and augmentation, after the probe
    t0 = time.perf_counter()
    tr = trainer(p, epochs, out, "encoder")
    tr.fit(make(), dm)
    seconds = time.perf_counter() - t0
    acc = tr.callback_metrics.get("val/acc")
    log["encoder"] = {
        "epochs": epochs,
        "seconds": seconds,
        "images_per_s": n * epochs / seconds,
        "measured_step_s": per_step,
        "val_accuracy": float(acc) if acc is not None else None,
    }
    return path


def recipe(p: Preset) -> dict[str, Any]:
    """The shipped recipe's model arguments (configs/cifar10_alexnet_all.yaml) with the preset's overrides."""
    with open(RECIPE) as f:
        args = dict(yaml.safe_load(f)["model"]["init_args"])
    for k in ("encoder", "layers"):
        args.pop(k, None)
    return {**args, **p.model}


def train_decoders(p: Preset, dm: ImageData, encoder_pt: str, out: str, log: dict) -> InversionModule:
    with open(RECIPE) as f:
        dm.hparams.augment = bool(yaml.safe_load(f)["data"].get("augment", False))
    dm.hparams.batch_size = p.batch_size
    make = lambda: InversionModule(
        encoder={"name": "alexnet_cifar", "weights": encoder_pt, "kwargs": p.encoder_kwargs or None},
        layers=p.layers,
        **recipe(p),
    )
    n = dm.split_size("train")

    epochs, per_step = sized(
        p, "decoders", p.decoder_epochs, max(1, n // p.batch_size), lambda: fit_probe(p, make, dm, out)
    )
    # Each decoder then draws from (seed, layer name) (upconv.training.module.layer_seed); the rest of the stage
    # (augmentation, if the recipe has it) from the seed too.
    L.seed_everything(p.seed, workers=True, verbose=False)
    module = make()
    t0 = time.perf_counter()
    trainer(p, epochs, out, "decoders").fit(module, dm)
    seconds = time.perf_counter() - t0
    log["decoders"] = {
        "epochs": epochs,
        "seconds": seconds,
        "images_per_s": n * epochs / seconds,
        "decoder_passes_per_s": n * epochs * len(p.layers) / seconds,
        "measured_step_s": per_step,
        "recipe": recipe(p),
        "augment": dm.hparams.augment,
        "batch_size": p.batch_size,
    }
    return module.eval()


def run_baseline(p: Preset, module: InversionModule, train: torch.Tensor, epochs: int, log: dict) -> dict:
    """The plain loop for every layer on the same images; per-image PSNR on the test images."""
    enc = module.encoder
    train = train.to(enc.device)
    n = len(train)

    def probe() -> float:
        _, info = train_plain(
            enc,
            p.layers[len(p.layers) // 2],
            train[: 25 * p.batch_size],
            1,
            p.batch_size,
            bf16=p.precision.startswith("bf16"),
        )
        return info["seconds"] / info["steps"]

    # All layers share one budget; the probe's middle layer stands for their average cost.
    epochs, per_step = sized(p, "baseline", epochs, max(1, n // p.batch_size) * len(p.layers), probe)
    out, t0 = {}, time.perf_counter()
    for layer in p.layers:
        decoder, info = train_plain(
            enc,
            layer,
            train,
            epochs,
            p.batch_size,
            seed=p.seed,
            bf16=p.precision.startswith("bf16"),
            width=p.plain_width,
        )
        out[layer] = (decoder, info)
    seconds = time.perf_counter() - t0
    log["baseline"] = {
        "epochs": epochs,
        "seconds": seconds,
        "images_per_s": n * epochs * len(p.layers) / seconds,
        "measured_step_s": per_step,
        "width": p.plain_width,
        "per_layer": {k: info for k, (_, info) in out.items()},
    }
    return {k: d for k, (d, _) in out.items()}


# ---------------------------------------------------------------------- the table
def summarise(
    p: Preset, module: InversionModule, baseline: dict, train: torch.Tensor, test: torch.Tensor, evaluation: Any
) -> list[dict[str, Any]]:
    """Per layer: the package's PSNR (with interval) and SSIM from the depth evaluation, the baseline's PSNR on
    the same images by the same code, the paired difference, the mean-image floor, and the decoder's health."""
    enc = module.encoder
    floor = interval(mean_image_floor(train, test), p.n_boot)
    health = module.health.record()
    by_layer = {r["layer"]: r for r in evaluation.rows if r["method"] == "upconvnet"}
    rows = []
    for layer in p.layers:
        ours = per_image_psnr(enc, module.decoders[layer], layer, test)  # (N,)
        row = {
            "layer": layer,
            "psnr": interval(ours, p.n_boot),
            "ssim": by_layer[layer]["ssim"],
            "eval_psnr": by_layer[layer]["psnr"],
            "floor_psnr": floor,
            "health": health[layer]["status"],
            "recoveries": health[layer]["recoveries"],
            "skipped_steps": health[layer]["skipped_steps"],
            "events": [e["kind"] + " at step " + str(e["step"]) for e in health[layer]["events"]],
            "below_floor": ours.mean().item() <= floor[2],
        }
        if layer in baseline:
            theirs = per_image_psnr(enc, baseline[layer], layer, test)
            row["baseline_psnr"] = interval(theirs, p.n_boot)
            row["difference"] = interval(ours - theirs, p.n_boot)  # paired: same images
        if p.reference:
            row["reference_psnr"] = REFERENCE.get(layer)
        rows.append(row)
    return rows


SHOWN = ("layer", "psnr", "ssim", "baseline_psnr", "difference", "floor_psnr", "health", "events", "below_floor")


def figures(p: Preset, rows: list[dict]) -> dict:
    """What the per-layer table shows, as ``render`` reads it (and as a published block stores it)."""
    keep = SHOWN + (("reference_psnr",) if p.reference else ())
    return rounded({"reference": p.reference, "rows": [{k: r[k] for k in keep if k in r} for r in rows]})


def render(figures: dict) -> str:
    """The per-layer table: package vs plain loop, paired difference, floor and health (table.md's and the
    measurements page's)."""
    ci = lambda t: f"{t[0]:.2f} [{t[1]:.2f}, {t[2]:.2f}]"  # noqa: E731
    reference = figures["reference"]
    head = [
        "layer",
        "package PSNR",
        "SSIM",
        "plain loop PSNR",
        "difference (paired)",
        "floor (mean image)",
        "health",
    ] + (["reference", "Δ reference"] if reference else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in figures["rows"]:
        verdict = " ⚠ at or below the floor" if r["below_floor"] else ""
        health = r["health"] + (f" ({', '.join(r['events'])})" if r["events"] else "")
        cells = [
            r["layer"],
            ci(r["psnr"]) + verdict,
            f"{r['ssim']:.3f}",
            ci(r["baseline_psnr"]) if "baseline_psnr" in r else "—",
            "{:+.2f} [{:+.2f}, {:+.2f}]".format(*r["difference"]) if "difference" in r else "—",
            ci(r["floor_psnr"]),
            health,
        ]
        if reference:
            ref = r.get("reference_psnr")
            cells += [f"{ref:.1f}" if ref else "—", f"{r['psnr'][0] - ref:+.2f}" if ref else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(p: Preset, rows: list[dict], log: dict) -> str:
    """table.md: the scale, the per-layer table (``render``), stage times and the probes' step costs."""
    lines = [
        f"# Decoder recipe vs plain loop — {p.scale}",
        "",
        f"Device: {log['device']}. Decoders: {log['decoders']['epochs']} epochs at batch {p.batch_size}; "
        f"plain loop: {log.get('baseline', {}).get('epochs', '—')} epochs per decoder at batch {p.batch_size}, "
        f"same training images ({log['train_images']}), same {log['test_images']} test images, same PSNR code "
        f"(mean of per-image PSNR; 95 % bootstrap intervals). Layers: {', '.join(p.layers)}; plain-loop "
        f"decoder width {p.plain_width}.",
        "",
        render(figures(p, rows)),
    ]
    lines += ["", "| stage | epochs | seconds | images/s |", "|---|---|---|---|"]
    for stage in ("data", "encoder", "decoders", "evaluation", "baseline"):
        s = log.get(stage)
        if s:
            lines.append(
                f"| {stage} | {s.get('epochs', '—')} | {s['seconds']:.1f} | {s['images_per_s']:.0f} |"
                if "images_per_s" in s
                else f"| {stage} | — | {s['seconds']:.1f} | — |"
            )
    lines.append(f"| total | | {log['total_seconds']:.1f} | |")
    if log.get("encoder", {}).get("val_accuracy") is not None:
        lines += ["", encoder_line(log["encoder"]["val_accuracy"], log.get("test_images"))]
    if any(s.get("measured_step_s") for s in log.values() if isinstance(s, dict)):
        lines += [
            "",
            "Stages with a time budget were sized from a timed probe of 25 steps: "
            + ", ".join(
                f"{k} {v['measured_step_s'] * 1e3:.1f} ms/step"
                for k, v in log.items()
                if isinstance(v, dict) and v.get("measured_step_s")
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def encoder_line(accuracy: float, n: int | None, classes: int = 10) -> str:
    """The encoder's test accuracy, flagged when it is not distinguishable from chance (1 / classes) at two
    binomial standard errors: its deep layers then keep only what a barely trained network keeps."""
    chance = 1 / classes
    line = f"Encoder accuracy on the test images: {accuracy:.3f}."
    if n and accuracy <= chance + 2 * math.sqrt(chance * (1 - chance) / n):
        line += (
            f" ⚠ not distinguishable from chance ({chance:.2f}, {n} images): the encoder has not learned, so the"
            " table measures a nearly untrained network's layers — train it longer (--set encoder_epochs=N)."
        )
    return line


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run(p: Preset, out: str, overwrite: bool = False, meta: dict | None = None) -> dict:
    """Every stage into a temporary folder beside ``out`` (``core.files.atomic_folder``), which becomes ``out``
    once complete; on any failure nothing is left behind. ``meta`` (the preset's name, the command) is kept in
    results.json for publishing."""
    if os.path.exists(out) and not overwrite:
        raise SystemExit(f"reproduce: error: {out} exists; choose another --out or pass --overwrite")
    with atomic_folder(out, overwrite=overwrite) as work:
        log = stages(p, work, meta or {})
    with open(os.path.join(out, "table.md")) as f:
        print(f.read())
    return log


def stages(p: Preset, work: str, meta: dict) -> dict:
    """Data → encoder → decoders → depth evaluation → baseline → table, all written into ``work``."""
    from upconv.evaluation.config import EvalConfig
    from upconv.evaluation.run import evaluate

    t_all = time.perf_counter()
    log: dict[str, Any] = {
        **meta,
        "preset": asdict(p),
        "device": device_name(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "load": load_now(),  # before the run: other jobs on the machine skew its times
    }
    t0 = time.perf_counter()
    dm = ImageData(
        images=ImageSource(
            source=p.data,
            root=p.root,
            limit_train=p.train_images,
            limit_val=p.test_images,
            embedded_per_class=p.embedded_per_class,
            num_workers=p.workers,
        ),
        batch_size=p.batch_size,
    )
    dm.setup()
    train, _ = dm.source.tensors("train")  # uint8 (N, C, H, W)
    test, _ = dm.source.tensors("val")
    log["data"] = {"seconds": time.perf_counter() - t0, "describe": dm.describe("val")}
    log["train_images"], log["test_images"] = len(train), len(test)
    encoder_pt = p.encoder_weights or train_encoder(p, dm, work, log)
    module = train_decoders(p, dm, encoder_pt, work, log)
    ckpt = os.path.join(work, "decoders.ckpt")
    module.trainer.save_checkpoint(ckpt, weights_only=True)
    t0 = time.perf_counter()
    evaluation = evaluate(
        EvalConfig(
            checkpoints=[ckpt], out=os.path.join(work, "evaluation"), lpips=False, n_boot=p.n_boot, overwrite=True
        ),
        data=dm.source,
    )
    log["evaluation"] = {"seconds": time.perf_counter() - t0, "images_per_s": len(test) / (time.perf_counter() - t0)}
    epochs = log["decoders"]["epochs"] if p.baseline_epochs is None else p.baseline_epochs  # None: equal budget
    baseline = run_baseline(p, module, train, epochs, log) if epochs else {}
    rows = summarise(p, module, baseline, train, test, evaluation)
    log["total_seconds"] = time.perf_counter() - t_all
    log["rows"] = rows
    text = table(p, rows, log)
    with open(os.path.join(work, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(log, f, indent=1, default=str)
    return log


def from_results(path: str) -> tuple[Preset, dict]:
    """The preset and log of a finished run, read back from its results.json (a run from before dates were
    recorded takes the file's date)."""
    if not os.path.isfile(path):
        raise SystemExit(f"reproduce: error: no results file {path}; give a run folder's results.json")
    with open(path) as f:
        log = json.load(f)
    if "rows" not in log or "preset" not in log:
        raise SystemExit(f"reproduce: error: {path} holds no finished run (no 'rows'); re-run reproduce.py")
    log.setdefault("date", datetime.date.fromtimestamp(os.path.getmtime(path)).isoformat())
    known = {f.name for f in fields(Preset)}
    return Preset(**{k: v for k, v in log["preset"].items() if k in known}), log


def command_for(name: str, preset: dict) -> str:
    """The reproduce.py command that runs ``preset`` (a results.json's): its preset's name plus a --set for
    each field that differs (a data root is compared as a path)."""
    base = asdict(PRESETS[name]) if name in PRESETS else {}
    same = lambda k, v: (  # noqa: E731
        os.path.normpath(v) == os.path.normpath(base[k]) if k == "root" and v and base.get(k) else v == base.get(k)
    )
    sets = [
        f"--set {k}={','.join(v) if isinstance(v, list) else json.dumps(v)}"
        for k, v in preset.items()
        if k != "scale" and not same(k, v)
    ]
    return " ".join(["python benchmarks/reproduce.py --preset", name, *sets])


def publish_run(page: str, block_name: str | None, p: Preset, log: dict) -> None:
    """Write the run's per-layer table into ``page``'s block (default ``reproduce-<preset>``)."""
    name = log.get("preset_name") or p.scale.split(":")[0]
    data = record(
        "reproduce",
        figures(p, log["rows"]),
        device=log["device"],
        load=log.get("load"),
        command=log.get("command") or command_for(name, log["preset"]),
        date=log.get("date"),
    )
    publish(page, block_name or f"reproduce-{name}", render(data["figures"]), data)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    ap.add_argument("--out", default=None, help="result folder (default runs/reproduce-<preset>)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing result folder")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"override a preset field ({', '.join(f.name for f in fields(Preset))}); lists by commas",
    )
    ap.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        help="run nothing: re-render table.md beside this results.json from it (and publish it with --publish)",
    )
    ap.add_argument(
        "--publish",
        metavar="PAGE",
        help="also write the per-layer table into PAGE's marked block (e.g. docs/measurements.md)",
    )
    ap.add_argument("--block", help="the block's name in PAGE (default reproduce-<preset>)")
    args = ap.parse_args(argv)
    if args.render:
        p, log = from_results(args.render)
        text = table(p, log["rows"], log)
        folder = os.path.dirname(os.path.abspath(args.render))
        with atomic_file(os.path.join(folder, "table.md")) as tmp, open(tmp, "w") as f:
            f.write(text)
        print(text)
    else:
        p = PRESETS[args.preset]
        for item in args.set:
            key, _, value = item.partition("=")
            if key not in {f.name for f in fields(Preset)}:
                raise SystemExit(
                    f"reproduce: error: unknown field '{key}'; "
                    f"choose one of: {', '.join(f.name for f in fields(Preset))}"
                )
            current = getattr(p, key)
            p = replace(p, **{key: value.split(",") if isinstance(current, list) else yaml.safe_load(value)})
        if args.publish:  # before a long run, not after it
            require(args.publish, args.block or f"reproduce-{args.preset}")
        meta = {
            "preset_name": args.preset,
            "command": shlex.join(["python", "benchmarks/reproduce.py", *(sys.argv[1:] if argv is None else argv)]),
        }
        log = run(p, args.out or f"runs/reproduce-{args.preset}", args.overwrite, meta)
    if args.publish:
        publish_run(args.publish, args.block, p, log)


if __name__ == "__main__":
    main()

"""One unit of the benchmark: an encoder with a group of its layers. It trains the group's UpconvNet decoders in
one pass (Lightning, seeded), scores them and the other methods on the test split (``upconv.evaluation``),
fits a linear probe per layer, and writes everything into its unit folder atomically (``upconv.core.units``):
``unit.json`` (settings and long-format rows), ``decoders.ckpt``, ``grid.pt`` (the grid images'
reconstructions) and the training log. A trained encoder is a unit of its own (``encoders/<label>``), shared
by that encoder's layer units and by every shard that needs it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from upconv.benchmark.config import BenchEncoder, BenchmarkConfig
from upconv.benchmark.probe import AT_CHANCE, describe_pooling, linear_probe, probe_features
from upconv.core.units import Unit, UnitStore
from upconv.data.source import ImageSource
from upconv.evaluation.config import EvalConfig
from upconv.evaluation.run import evaluate
from upconv.methods.registry import build_method
from upconv.nets.encoder import Encoder
from upconv.nets.spec import EncoderSpec
from upconv.training.datamodule import ImageData
from upconv.training.runs import RunOptions, fit_classifier, fit_decoders

PROBE = "linear probe"


@dataclass
class Layout:
    """What the plan knows of one layer before any training: its relative depth and geometry."""

    depth: float
    geometry: dict[str, Any]


@dataclass
class EncoderPlan:
    entry: BenchEncoder
    spec: EncoderSpec  # the encoder the layer units read (a trained one's weights in its unit folder)
    layers: list[str]
    layout: dict[str, Layout]  # every layer of the table
    encoder_unit: Unit | None  # None: the weights are given or pretrained
    units: list[Unit]


def rank() -> int:
    """This process's rank when a unit trains data-parallel (Lightning's DDP), else 0. Every rank trains; only
    rank 0 scores and writes the unit, the others wait for it at ``barrier``."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def options(config: BenchmarkConfig) -> RunOptions:
    return RunOptions(
        seed=config.seed, precision=config.precision, trainer=dict(config.trainer), seconds=config.decoder_seconds
    )


def train_data(source: ImageSource, batch_size: int) -> ImageData:
    data = ImageData(images=source, batch_size=batch_size, augment=False)
    data.setup()
    return data


def ensure_encoder(plan: EncoderPlan, store: UnitStore, source: ImageSource, config: BenchmarkConfig) -> bool:
    """Train the plan's encoder unless its unit is finished; True if it was reused."""
    unit, entry = plan.encoder_unit, plan.entry
    if unit is None or store.done(unit):
        return True
    with store.writing(unit) as w:
        export = os.path.join(w["folder"], "encoder.pt")
        w["results"]["load"] = os.getloadavg()[0]
        kwargs = dict(plan.spec.kwargs or {})
        k = kwargs.pop("num_classes")
        run = replace(options(config), seconds=None)
        data = train_data(source, entry.train_batch)
        w["results"].update(fit_classifier(str(entry.encoder.name), kwargs, k, data, entry.train_epochs, export, run))
        w["keep"] = rank() == 0  # rank 0 alone writes the weights (ClassifierModule exports on global zero)
    barrier()  # every rank reads the weights rank 0 placed
    return False


def _scores(config: BenchmarkConfig, encoder: Encoder, source: ImageSource, layers: list[str], **kw: Any) -> Any:
    ev = EvalConfig(
        out=None,
        layers=layers,
        n_boot=config.n_boot,
        seed=config.seed,
        grid_images=config.grid_images,
        lpips=config.lpips,
        device=config.device,
        **kw,
    )
    return evaluate(ev, encoder=encoder, data=source)


def method_rows(evaluated: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """An evaluation's rows in long format: one per method × layer × metric that was computed."""
    rows = []
    for r in evaluated:
        for k in metrics:
            if r.get(k) is None:
                continue
            rows.append(
                {
                    "layer": r["layer"],
                    "method": r["method"],
                    "metric": k,
                    "mean": r[k],
                    "lo": r[f"{k}_lo"],
                    "hi": r[f"{k}_hi"],
                    "n": r["n"],
                    "floor_verdict": r.get("floor_verdict"),
                    "decoder_health": r.get("decoder_health"),
                    "reads_target": r.get("reads_target", False),
                }
            )
    return rows


def probe_rows(config: BenchmarkConfig, encoder: Encoder, source: ImageSource, layers: list[str]) -> list[dict]:
    """The linear probe's accuracy per layer, in long format, beside chance."""
    batches = lambda split: source.images(split, 250, encoder.device)  # noqa: E731
    train = probe_features(encoder, batches("train"), layers, config.probe_dims)
    test = probe_features(encoder, batches("val"), layers, config.probe_dims)
    rows = []
    for name in layers:
        p = linear_probe((train[0][name], train[1]), (test[0][name], test[1]), n_boot=config.n_boot, seed=config.seed)
        rows.append(
            {
                "layer": name,
                "method": PROBE,
                "metric": "accuracy",
                "mean": p.accuracy[0],
                "lo": p.accuracy[1],
                "hi": p.accuracy[2],
                "n": p.n,
                "floor": p.chance,
                "floor_verdict": AT_CHANCE if p.at_chance else None,
                "probe_input": describe_pooling(encoder.layer(name).shape, config.probe_dims),
            }
        )
    return rows


def run_unit(plan: EncoderPlan, unit: Unit, store: UnitStore, source: ImageSource, config: BenchmarkConfig) -> None:
    """Train, score and probe one unit's layers; its folder appears only once all of it is done."""
    with store.writing(unit) as w:
        w["results"]["load"] = os.getloadavg()[0]  # other jobs on the machine stretch its times
        data = train_data(source, config.decoder_batch)
        module, w["results"]["decoders"] = fit_decoders(
            plan.spec,
            unit.settings["layers"],
            data,
            config.decoder_epochs,
            config.decoder,
            options(config),
            w["folder"],
        )
        ckpt = os.path.join(w["folder"], "decoders.ckpt")
        module.trainer.save_checkpoint(ckpt, weights_only=True)  # collective under DDP: every rank calls it
        w["keep"] = rank() == 0
        if w["keep"]:
            score(config, source, module, w)
            w["results"]["seconds"]["decoders"] = w["results"]["decoders"]["seconds"]
    barrier()


def score(config: BenchmarkConfig, source: ImageSource, module: Any, w: dict[str, Any]) -> None:
    """Score a unit's trained decoders and the other methods on the test split, probe its layers, and put the
    rows, floors, notes and grid into the unit being written (``w``)."""
    encoder, layers, folder, t1 = module.encoder, list(module.layers), w["folder"], time.perf_counter()
    ckpt = os.path.join(folder, "decoders.ckpt")
    up = _scores(config, encoder, source, layers, checkpoints=[ckpt], methods=["upconvnet"])
    rows, notes = method_rows(up.rows, config.metrics), []
    if "deconvnet" in config.methods:
        supported = build_method("deconvnet", encoder).deconvnet.supported_layers
        ok = [n for n in layers if n in supported]
        if ok:
            dn = _scores(config, encoder, source, ok, methods=["deconvnet"])
            rows += method_rows(dn.rows, config.metrics)
            notes += [n for n in dn.notes if n not in up.notes]  # its own floors' verdicts
        if len(ok) < len(layers):
            notes.append(f"deconvnet: no rule for the graph to {', '.join(n for n in layers if n not in ok)}")
    if "mahendran_vedaldi" in config.methods:
        few = replace(source, limit_val=config.inversion_images)
        opts = {"mahendran_vedaldi": {"steps": config.inversion_steps}}
        mv = _scores(config, encoder, few, layers, methods=["mahendran_vedaldi"], method_options=opts)
        rows += method_rows(mv.rows, config.metrics)
    t2 = time.perf_counter()
    rows += probe_rows(config, encoder, source, layers) if config.probe else []
    w["results"].update(
        rows=rows,
        floors=method_rows(up.floor_rows, config.metrics),
        encoder_accuracy=up.settings.get("encoder_accuracy_on_originals"),
        classes=len(source.class_names),
        notes=notes + list(up.notes),
        seconds={"evaluation": t2 - t1, "probe": time.perf_counter() - t2},
    )
    torch.save(
        {"originals": up.originals, **{f"upconvnet/{k[1]}": v for k, v in up.grid.items()}},
        os.path.join(folder, "grid.pt"),
    )

"""The benchmark's plan, made before any training: every encoder is built once (random weights where the
benchmark will train it) so that an unknown name, a missing weights file, a typo in a constructor argument, a
missing optional package or an unknown layer fails in one line before the first unit starts; then its layers
are chosen, their relative depths and geometry computed, and its work cut into units with their settings."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any

from upconv.benchmark.config import BenchEncoder, BenchmarkConfig
from upconv.benchmark.depth import geometry, relative_depths, spread
from upconv.benchmark.unit import EncoderPlan, Layout
from upconv.core.units import Unit, fingerprint
from upconv.data.source import ImageSource
from upconv.nets.builtin import ARCHITECTURES
from upconv.nets.encoder import Encoder
from upconv.nets.spec import EncoderSpec
from upconv.nets.timm_models import PREFIX as TIMM

# Settings of the config that change what a unit computes (shard, out, overwrite, device, workers do not).
DECODER_SETTINGS = (
    "decoder_epochs",
    "decoder_batch",
    "decoder_seconds",
    "decoder",
    "methods",
    "inversion_images",
    "inversion_steps",
    "metrics",
    "probe",
    "probe_dims",
    "n_boot",
    "grid_images",
    "lpips",
)


def data_source(config: BenchmarkConfig, image_size: int = 32, in_memory: bool | None = None) -> ImageSource:
    return ImageSource(
        source=config.data,
        root=config.root,
        image_size=image_size,
        in_memory=in_memory,
        limit_train=config.limit_train,
        limit_val=config.limit,
        embedded_per_class=config.embedded_per_class,
        num_workers=config.workers,
        seed=config.seed,
    )


def data_settings(config: BenchmarkConfig, source: ImageSource) -> dict[str, Any]:
    """The data a unit was computed on: the options, and (for images held in memory) a fingerprint of the
    images and labels themselves, so other images under the same options are a changed setting."""
    root = os.path.abspath(config.root) if config.root else None
    images = fingerprint(*source.tensors("train"), *source.tensors("val")) if source.in_memory else None
    return {
        "data": config.data,
        "root": root,
        "limit_train": config.limit_train,
        "limit": config.limit,
        "images": images,
    }


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def planned_spec(entry: BenchEncoder, n_classes: int) -> EncoderSpec:
    """The spec the plan builds: a trained encoder's architecture with random weights and the data's class
    count; a given or pretrained encoder as it is."""
    spec = entry.encoder
    if entry.train_epochs is None:
        if not spec.weights and spec.pretrained is not False and spec.name in ARCHITECTURES:
            raise ValueError(
                f"{entry.name}: a built-in encoder has no pretrained weights; give encoder.weights, train_epochs "
                f"to train it here, or encoder.pretrained: false for random weights (a control)"
            )
        if spec.weights and not os.path.isfile(spec.weights):
            raise FileNotFoundError(f"{entry.name}: encoder weights file {spec.weights} not found")
        return spec
    name = str(spec.name)
    if name not in ARCHITECTURES and not name.startswith(TIMM):
        raise ValueError(
            f"{entry.name}: cannot train '{name}' here: the benchmark trains built-in architectures "
            f"({', '.join(ARCHITECTURES)}) and timm: "
            f"models; give '{name}' weights (encoder.weights) or pretrained: true instead of train_epochs"
        )
    if spec.weights:
        raise ValueError(f"{entry.name}: give either encoder.weights or train_epochs, not both")
    return replace(spec, pretrained=False, kwargs={**(spec.kwargs or {}), "num_classes": n_classes})


def choose(entry: BenchEncoder, enc: Encoder, depths: dict[str, float]) -> list[str]:
    if entry.layers == "all" or entry.layers == ["all"]:
        return list(enc.layers)
    if isinstance(entry.layers, dict):
        return spread(depths, int(entry.layers["n"]))
    return enc.resolve([entry.layers] if isinstance(entry.layers, str) else list(entry.layers))


def build_planned(entry: BenchEncoder, n_classes: int) -> tuple[EncoderSpec, Encoder]:
    """The planned spec and its encoder (random weights where the benchmark will train it)."""
    spec = planned_spec(entry, n_classes)
    try:
        return spec, spec.build()
    except TypeError as e:  # a constructor argument the model does not take
        raise ValueError(f"{entry.name}: cannot build {spec.name} with kwargs {spec.kwargs}: {e}") from None


def plan_encoder(
    entry: BenchEncoder, spec: EncoderSpec, enc: Encoder, config: BenchmarkConfig, data: dict[str, Any]
) -> EncoderPlan:
    """An encoder's layers, their depth and geometry, and its units with the settings that produce them."""
    depths = relative_depths(enc)
    layers = choose(entry, enc, depths)
    layout = {n: Layout(depths[n], geometry(enc, n)) for n in enc.layers}
    common = {k: getattr(config, k) for k in ("seed", "precision", "trainer")} | {"data": data}
    enc_unit = None
    if entry.train_epochs is not None:
        key = f"encoders/{_safe(entry.name)}"
        settings = {"encoder": spec.as_dict(), "train_epochs": entry.train_epochs, "train_batch": entry.train_batch}
        enc_unit = Unit(key, {**settings, **common})
        spec = replace(spec, weights=os.path.join(os.path.abspath(config.out), *key.split("/"), "encoder.pt"))
        identity: dict[str, Any] = enc_unit.settings
    else:
        identity = {"encoder": spec.as_dict(), "weights_hash": enc.weights_hash}
    size = config.layers_per_unit or len(layers)
    units = []
    for i in range(0, len(layers), size):
        group = layers[i : i + size]
        settings = {"encoder": identity, "layers": group, **{k: getattr(config, k) for k in DECODER_SETTINGS}}
        units.append(Unit(f"units/{_safe(entry.name)}/{group[0]}-{group[-1]}", {**settings, **common}))
    return EncoderPlan(entry, spec, layers, layout, enc_unit, units)


def plan_benchmark(config: BenchmarkConfig) -> tuple[list[EncoderPlan], ImageSource]:
    """Every encoder's plan and the one image source they share (all encoders must take one image size). The
    class count comes from a listing of the data (nothing decoded); the images are read once, at the
    encoders' size."""
    n_classes = max(len(data_source(config, in_memory=False).setup().class_names), 2)
    built = [(entry, *build_planned(entry, n_classes)) for entry in config.encoders]
    sizes = {entry.name: enc.image_size for entry, _, enc in built}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"the encoders take different image sizes ({', '.join(f'{k} {v[0]}×{v[1]}' for k, v in sizes.items())}); "
            f"a benchmark compares them on the same images: run one benchmark per image size"
        )
    source = data_source(config, next(iter(sizes.values()), (32, 32))[0]).setup()
    data = data_settings(config, source)
    return [plan_encoder(entry, spec, enc, config, data) for entry, spec, enc in built], source

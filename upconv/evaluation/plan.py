"""Everything an evaluation needs before its first batch: the encoder, the methods, the layers, the data,
the label basis for accuracy, LPIPS and the no-information floors. Each is checked here, at the boundary,
so a bad argument fails before any (long) computation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from upconv.core import metrics as M
from upconv.core.files import check_out
from upconv.core.floors import Floors
from upconv.core.runtime import progress, resolve_device
from upconv.evaluation.config import EvalConfig
from upconv.methods.base import Method, as_method
from upconv.methods.registry import build_method
from upconv.nets.checkpoints import choose_encoder
from upconv.nets.encoder import Encoder
from upconv.nets.spec import EncoderSpec


@dataclass
class Plan:
    """The resolved inputs of one evaluation (``prepare``)."""

    encoder: Encoder
    methods: list[Method]
    layers: list[str]  # network order
    data: Any  # an ImageSource, an ImageData, or anything with ``images(split, batch_size, device)``
    checkpoints: list[str]
    device: torch.device
    accuracy_basis: str | None  # what the labels are taken to be; None: accuracy skipped
    accuracy_note: str | None
    lpips_model: nn.Module | None
    lpips_note: str | None
    floors: Floors


def prepare(
    config: EvalConfig, encoder: Encoder | None = None, methods: Sequence[str | Method] | None = None, data: Any = None
) -> Plan:
    """Resolve ``config`` (with an already built ``encoder``, ``methods`` objects or a ``data`` object in
    place of the config's names) in the order the evaluation has always used."""
    if config.out is not None:
        check_out(config.out, config.overwrite)  # fail before any (long) computation
    if config.split == "all" and config.limit is not None:
        raise ValueError("limit takes a random subset of one split; use split val or train with it, or drop it")
    dev = resolve_device(config.device)
    c = config.checkpoints
    ckpts = [c] if isinstance(c, (str, os.PathLike)) else list(c or [])
    enc = choose_encoder(encoder, EncoderSpec.of(config.encoder), ckpts[0] if ckpts else None).to(dev)
    built = build_methods(enc, config.methods if methods is None else methods, config.method_options, ckpts)
    names = choose_layers(enc, config.layers, built)
    source = open_data(config.data if data is None else data, enc, config)
    basis, acc_note = accuracy_basis(enc, source)
    lp_model, lp_note = lpips_model(config.lpips, enc, dev)
    floors = training_floors(source, config.split, config.batch_size)
    return Plan(enc, built, names, source, ckpts, dev, basis, acc_note, lp_model, lp_note, floors)


def build_methods(
    enc: Encoder, methods: Sequence[str | Method], options: dict[str, dict[str, Any]] | None, ckpts: list[str]
) -> list[Method]:
    """Methods by name through the registry (``upconvnet`` receives the checkpoints, others their entry of
    ``options``) or as given; their names must be unique, since rows are keyed by them."""
    unused = sorted(set(options or {}) - {m for m in methods if isinstance(m, str)})
    if unused:
        raise ValueError(
            f"method_options names {', '.join(unused)}, which is not among the methods "
            f"({', '.join(m if isinstance(m, str) else m.name for m in methods)}); add it or drop its options"
        )
    built: list[Method] = []
    for m in methods:
        if isinstance(m, str):
            opts = dict((options or {}).get(m, {}))
            if m == "upconvnet":
                opts.setdefault("checkpoints", ckpts)
            try:
                m = build_method(m, enc, **opts)
            except TypeError as e:  # an option the method does not take: say which, in one line
                raise ValueError(f"method '{m}' cannot be built with options {opts}: {e}") from e
        built.append(as_method(m))
    if len({m.name for m in built}) != len(built):
        raise ValueError(f"method names must be unique; got {', '.join(m.name for m in built)}")
    return built


def choose_layers(encoder: Encoder, layers: str | Sequence[str], methods: list[Method]) -> list[str]:
    """The layers to evaluate, in network order; ``all`` is every layer every method supports."""
    supported = [set(m.layers or encoder.layers) for m in methods]
    if layers == "all" or list(layers) == ["all"]:
        names = [n for n in encoder.layers if all(n in s for s in supported)]
        if not names:
            raise ValueError("the chosen methods share no layer of the encoder; name the layers explicitly")
        return names
    names = encoder.resolve(list(layers))
    for m, s in zip(methods, supported):
        missing = [n for n in names if n not in s]
        if missing:
            raise ValueError(
                f"method '{m.name}' cannot reconstruct from layer(s) {', '.join(missing)}; "
                f"it supports: {', '.join(n for n in encoder.layers if n in s)}"
            )
    return names


def open_data(data: Any, enc: Encoder, config: EvalConfig) -> Any:
    """The data source: one given as an object, or an ``ImageSource`` built from its name; set up, so its
    class names and split sizes are known."""
    from upconv.data.source import ImageSource

    if isinstance(data, str):
        if enc.image_size[0] != enc.image_size[1]:
            raise ValueError(f"{enc.name} takes {enc.image_size} images; pass a square-cropping ImageSource instead")
        split, limit = config.split, config.limit
        data = ImageSource(
            source=data,
            root=config.root,
            image_size=enc.image_size[0],
            limit_val=limit if split == "val" else None,
            limit_train=limit if split == "train" else None,
            embedded_per_class=config.embedded_per_class,
            seed=config.seed,
        )
    if hasattr(data, "setup"):
        data.setup()  # reads the class names and split sizes
    return data


def accuracy_basis(enc: Encoder, data: Any) -> tuple[str | None, str | None]:
    """(what the data labels are taken to be, or None when accuracy must be skipped; a note or None)."""
    out = enc.layer(enc.layers[-1]).shape
    if len(out) != 1:
        return None, f"accuracy skipped: {enc.name}'s last layer is not a vector of class scores (shape {out})"
    classes = getattr(data, "class_names", None) or None
    if classes is not None and len(classes) != out[0]:
        return None, (
            f"accuracy skipped: the data has {len(classes)} classes but {enc.name} outputs {out[0]} "
            f"class scores, so the data's labels cannot be its classes"
        )
    source = getattr(data, "source", None)
    source = source if isinstance(source, str) else getattr(source, "source", None)  # ImageData wraps a source
    if source == "folder":
        return "the folder's labels, assumed to be the encoder's classes in sorted folder order", None
    return "the data set's labels", None


def lpips_model(wanted: bool, enc: Encoder, dev: torch.device) -> tuple[nn.Module | None, str | None]:
    """LPIPS on ``dev``, or (None, the one-line reason it is skipped)."""
    model, note = M.load_lpips() if wanted else (None, "LPIPS skipped: disabled (lpips=False)")
    if model is not None and min(enc.image_size) < 32:
        # AlexNet's stride-4 stem and two 3×3/2 pools leave nothing of smaller images.
        return None, f"LPIPS skipped: the AlexNet trunk needs images of at least 32×32 px; got {enc.image_size}"
    return (model.to(dev) if model is not None else None), note


def training_floors(data: Any, split: str, batch_size: int) -> Floors:
    """The no-information floors from the training images (from every image when ``split`` is ``all``)."""
    source = "all" if split == "all" else "train"
    describe = getattr(data, "describe", None)
    what = describe(source) if callable(describe) else f"the {source} split"
    batches = progress(data.images(source, batch_size=batch_size), desc="floors", unit="batch")
    return Floors.from_batches(batches, what, n_classes=len(getattr(data, "class_names", None) or []))

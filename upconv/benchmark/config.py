"""The one parameter list of a layer-information benchmark: ``upconv benchmark`` builds its options from it
(``--config configs/benchmark/<name>.yaml`` reads the same names) and ``run_benchmark`` takes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from upconv.evaluation.result import METRICS
from upconv.nets.spec import EncoderSpec


@dataclass
class BenchEncoder:
    """One network of the benchmark and where its weights come from.

    Args:
        encoder: the encoder (name, weights, kwargs, pretrained, download).
        label: its name in tables and figures (default: the encoder's name).
        train_epochs: train it from scratch with the package's classifier recipe for this many epochs on the
            benchmark's training split (built-in and timm: models). None: use ``encoder.weights``, or the
            pretrained weights (``encoder.pretrained: true``; ``encoder.download: true`` to fetch them), or
            seeded random weights with ``encoder.pretrained: false`` (a control).
        train_batch: batch size of that training.
        layers: "all", a list of layer names, or {n: K}: K layers spread evenly over relative depth.
    """

    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    label: str | None = None
    train_epochs: int | None = None
    train_batch: int = 128
    layers: str | list[str] | dict[str, int] = "all"

    def __post_init__(self) -> None:
        self.encoder = EncoderSpec.of(self.encoder)

    @property
    def name(self) -> str:
        return self.label or str(self.encoder.name)


@dataclass
class BenchmarkConfig:
    """Compare how much of the image and of the class survives across the depths of several networks.

    Per encoder and layer: UpconvNet decoders trained in one pass (and DeconvNet where the graph allows, M&V
    inversion on a few images if asked) scored with every metric, a linear probe of the class, the feature
    geometry and the relative depth (share of the forward pass's multiply-adds up to the layer). The work is
    split into units (an encoder with a group of its layers) written atomically under ``out``: re-running
    reuses finished units, ``--shard i/n`` runs a share of them, ``--report_only true`` assembles the table
    (results.csv/json, report.md), depth.png and grid.png from whatever units exist.

    Args:
        encoders: the networks, each {encoder: {name: …, weights: …}, label, train_epochs, layers}.
        data: embedded (offline photographs), folder (ImageFolder tree at root) or cifar10.
        root: data folder; with train/ and test/ (or val/), test is the held-out split.
        limit_train: a seeded random subset of this many training images (encoders, decoders, probes).
        limit: a seeded random subset of this many test images (every score).
        embedded_per_class: crops per photograph for the embedded data.
        decoder_epochs: epochs of decoder training per unit.
        decoder_batch: decoder training batch size.
        decoder_seconds: a time budget per training stage instead: a timed probe sizes its epochs (at most
            the given epochs).
        decoder: overrides of InversionModule's arguments (width, fc_width, max_width, recipe: {lr: …} …).
        methods: upconvnet, deconvnet (on the layers its graph allows), mahendran_vedaldi (on inversion_images).
        inversion_images: test images for optimisation-based inversion (mahendran_vedaldi).
        inversion_steps: its optimisation steps.
        metrics: metrics kept in the table (psnr, ssim, mse, lpips, db_error, feature_error, class_agreement,
            recon_accuracy).
        probe: train a linear probe of the class at every layer.
        probe_dims: features the probe reads at most: larger maps are average-pooled to the largest s×s grid
            with channels × s² ≤ probe_dims.
        layers_per_unit: layers per unit (None: all of an encoder's layers in one unit, one training pass).
        depths: relative depths matched across models in grid.png.
        grid_images: test images shown in grid.png.
        seed: seeds every stage (training, subsets, bootstrap); same seed, same table.
        n_boot: bootstrap resamples for the 95 % intervals.
        precision: training precision (32-true; bf16-mixed on a GPU).
        trainer: extra Lightning Trainer arguments for every training run, e.g. {devices: 4, strategy: ddp}.
        workers: processes decoding image files.
        lpips: compute LPIPS when its weights are cached.
        device: auto (the GPU when there is one), cpu, cuda or cuda:N.
        shard: i/n: run every n-th unit from the i-th (a SLURM array task's share; shards share out).
        report_only: run no unit; assemble the report from the units that exist.
        out: the benchmark folder (units and report).
        overwrite: redo units whose settings changed instead of refusing them.
    """

    encoders: list[BenchEncoder] = field(default_factory=list)
    data: Literal["embedded", "folder", "cifar10"] = "embedded"
    root: str | None = None
    limit_train: int | None = None
    limit: int | None = None
    embedded_per_class: int = 20
    decoder_epochs: int = 2
    decoder_batch: int = 32
    decoder_seconds: float | None = None
    decoder: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: ["upconvnet", "deconvnet"])
    inversion_images: int = 0
    inversion_steps: int = 200
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim", "mse", "lpips", "feature_error"])
    probe: bool = True
    probe_dims: int = 4096
    layers_per_unit: int | None = None
    depths: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    grid_images: int = 6
    seed: int = 0
    n_boot: int = 1000
    precision: str = "32-true"
    trainer: dict[str, Any] = field(default_factory=dict)
    workers: int = 2
    lpips: bool = False
    device: str = "auto"
    shard: str | None = None
    report_only: bool = False
    out: str = "runs/benchmark"
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.encoders = [e if isinstance(e, BenchEncoder) else BenchEncoder(**e) for e in self.encoders]
        check(self)


METHODS = ("upconvnet", "deconvnet", "mahendran_vedaldi")


def check(c: BenchmarkConfig) -> None:
    """One-line errors for settings that cannot work, before anything is built or trained."""
    if not c.encoders and not c.report_only:
        raise ValueError("the benchmark needs at least one encoder: encoders: [{encoder: {name: alexnet_cifar}}]")
    names = [e.name for e in c.encoders]
    if len(set(names)) != len(names):
        raise ValueError(f"encoder labels must be unique (give each a label); got {', '.join(names)}")
    unknown = [m for m in c.methods if m not in METHODS]
    if unknown or "upconvnet" not in c.methods:
        raise ValueError(f"methods must include upconvnet and be among {', '.join(METHODS)}; got {c.methods}")
    bad = [m for m in c.metrics if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {', '.join(bad)}; choose among {', '.join(METRICS)}")
    if "mahendran_vedaldi" in c.methods and c.inversion_images < 1:
        raise ValueError("mahendran_vedaldi needs inversion_images ≥ 1 (it optimises each image: keep it to a few)")
    for e in c.encoders:
        if e.train_epochs is not None and e.train_epochs < 1:
            raise ValueError(f"{e.name}: train_epochs must be ≥ 1 (or null to use given or pretrained weights)")
        if isinstance(e.layers, dict) and (set(e.layers) != {"n"} or int(e.layers["n"]) < 1):
            raise ValueError(f"{e.name}: layers as a mapping is {{n: K}} with K ≥ 1; got {e.layers}")
    if c.decoder_epochs < 1 or c.decoder_batch < 1 or (c.layers_per_unit is not None and c.layers_per_unit < 1):
        raise ValueError("decoder_epochs, decoder_batch and layers_per_unit must be ≥ 1")
    if c.probe_dims < 1 or any(not 0 < d <= 1 for d in c.depths):
        raise ValueError("probe_dims must be ≥ 1 and every depth in depths must lie in (0, 1]")

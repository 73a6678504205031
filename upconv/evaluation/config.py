"""The one parameter list of an evaluation: ``upconv evaluate`` builds its options from it (``--config`` reads
the same names from YAML) and ``upconv.evaluation.run.evaluate`` takes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from upconv.nets.spec import EncoderSpec


@dataclass
class EvalConfig:
    """Evaluate reconstructions layer by layer and write a report folder.

    Metrics: MSE, PSNR, SSIM, LPIPS, D&B error, feature error, class agreement, accuracy on x̂ (mean, 95 %
    bootstrap CI, n); files: report.md, metrics.csv/json, depth.png and grid.png.

    Args:
        checkpoints: UpconvNet decoder checkpoints, a list [a.ckpt, b.ckpt] or one path (their encoder is
            rebuilt from the record).
        out: report folder, created only when the report is complete (None, the default from Python: write
            nothing; `upconv evaluate` writes runs/eval unless told otherwise).
        encoder: the encoder (default: the one the checkpoints record; its weights / kwargs / pretrained given
            here replace the recorded ones).
        layers: layer names in any order, or ["all"].
        methods: inversion methods side by side (upconvnet, deconvnet, deconvnet+minmax, guided-backprop,
            guided-backprop+minmax, mahendran_vedaldi).
        method_options: per method name, options for building it, e.g. {mahendran_vedaldi: {steps: 2100}}.
        data: embedded (offline photographs), folder (ImageFolder tree at root) or cifar10.
        root: data folder; with train/ and test/ (or val/), val is test/; otherwise val is a seeded 10 % hold-out.
        split: val (held-out), train, or all (every image of the source).
        limit: evaluate a seeded random subset of this many images of the split (val or train).
        batch_size: images per forward pass.
        embedded_per_class: crops per photograph for the embedded data.
        seed: seeds the subset, the grid images and the bootstrap; same seed, same metrics.csv.
        n_boot: bootstrap resamples for the 95 % intervals.
        grid_images: originals shown in grid.png (seeded, spread over the classes).
        lpips: compute LPIPS when its AlexNet weights are in the torch cache.
        device: auto (the GPU when there is one), cpu, cuda or cuda:N.
        overwrite: replace an existing report folder.
    """

    checkpoints: list[str] | str | None = None
    out: str | None = None
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    layers: list[str] = field(default_factory=lambda: ["all"])
    methods: list[str] = field(default_factory=lambda: ["upconvnet"])
    method_options: dict[str, dict[str, Any]] | None = None
    data: Literal["embedded", "folder", "cifar10"] = "embedded"
    root: str | None = None
    split: Literal["val", "train", "all"] = "val"
    limit: int | None = None
    batch_size: int = 250
    embedded_per_class: int = 20
    seed: int = 0
    n_boot: int = 1000
    grid_images: int = 8
    lpips: bool = True
    device: str = "auto"
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.encoder = EncoderSpec.of(self.encoder)  # a name alone, from Python or an older YAML

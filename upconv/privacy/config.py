"""The one parameter list of a privacy run: ``upconv privacy`` builds its options from ``PrivacyConfig``'s
fields and docstring (``privacy-frontier`` and ``privacy-budget`` from its two extensions), ``run_privacy`` takes
an instance, and ``from_config`` draws a config's images and runs any of the three."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from upconv.methods.mahendran_vedaldi import MV_STEPS
from upconv.nets.spec import EncoderSpec
from upconv.privacy.attacks import DECODERS
from upconv.privacy.reid import check_candidates
from upconv.privacy.splits import Data, load_splits
from upconv.privacy.sweep import ADAPTIVE_ATTACKS, ATTACKS, Point, check_sweep

C = TypeVar("C", bound="PrivacyConfig")
R = TypeVar("R")


@dataclass
class PrivacyConfig:
    """Attack the features at split layers (white-box, black-box, query-free; He et al. 2019), with defences
    at the split, and write a run folder with leakage (PSNR, SSIM, LPIPS, re-identification) against utility.

    Args:
        encoder: the victim: its architecture (a built-in one is trained on the victim split without weights), or
            its weights (the victim split is then taken to be its training data) and constructor kwargs.
        layers: split layers.
        attacks: white_box, black_box_train, black_box_dist, black_box_noise, query_free.
        decoders: paper (He et al.'s attack) and/or upconvnet.
        defenses: defence -> strength sweep, e.g. {noise: [0.1, 0.5], quantize: [4, 2], dropout: [0.5], topk: [0.1]}
            (applied to the features), or trained into the victim, which is retrained per strength and split
            layer: {nopeek: [0.5], adversarial: [0.5]} (distance-correlation / inverse-network weight; 0: undefended).
        defense_attacks: attacks run against defended features.
        attackers: who attacks a defended point: clean (inverse networks trained on the undefended features)
            and/or adaptive (trained on the defended features: the realistic threat; query-trained attacks only).
        data: folder (ImageFolder tree with train/ and test/), cifar10 or embedded.
        root: data folder.
        n_victim: victim training images (first part of a seeded shuffle of the training split).
        n_attacker: attacker images, disjoint from the victim's.
        n_eval: held-out images attacked.
        num_classes: classes of the victim and shadow classifiers.
        victim_epochs: epochs to train the victim (without encoder weights).
        shadow_epochs: epochs to train the query-free shadow encoder.
        inverter_epochs: epochs to train each inverse network.
        inverter_width: UpconvNet width.
        inverter_lr: learning rate of the inverse networks (the decoder recipe: AdamW, warm-up, cosine, health
            guard), one for all or one per kind, e.g. {paper: 0.01, upconvnet: 0.001}.
        n_noise: noise queries per epoch (black_box_noise).
        mv_steps: optimisation-inversion steps (M&V's schedule: 2100).
        mv_optimizer: sgd (M&V's momentum) or adam.
        mv_batch_size: images inverted together by optimisation (default: batch_size).
        mv_tv_weight: total-variation weight of optimisation inversion (default: M&V's schedule by depth).
        fisher_probes: Hutchinson probes per evaluated image for the Fisher-information bound beside the attacks
            at every noise point (0: no bound).
        fisher_prior: the image prior's Fisher information per pixel, tr J(π)/d, for van Trees' bound on biased
            attackers (an assumption about the data; None: that bound is not given).
        n_candidates: re-identification line-up size (≥ 2, ≤ n_eval).
        batch_size: images per batch.
        lpips: compute LPIPS when its weights are cached.
        n_boot: bootstrap resamples.
        grid_images: images per grid.
        seed: seeds data splits, training, noise and bootstrap.
        device: auto (the GPU when there is one), cpu, cuda or cuda:N.
        num_workers: processes decoding the image files.
        out: run folder (None: write nothing); each finished unit (victim, attackers, point) is kept under
            out/points, and running the same command again reuses them.
        overwrite: redo units whose settings changed (without it they are refused), or replace a folder that
            is not a run folder.
    """

    encoder: EncoderSpec = field(default_factory=lambda: EncoderSpec("he2019_cifar"))
    layers: list[str] = field(default_factory=lambda: ["conv11", "relu22", "relu32"])
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    decoders: list[str] = field(default_factory=lambda: list(DECODERS))
    defenses: dict[str, list[float]] | None = None
    defense_attacks: list[str] = field(default_factory=lambda: ["black_box_dist"])
    attackers: list[str] = field(default_factory=lambda: ["clean", "adaptive"])
    data: Literal["folder", "cifar10", "embedded"] = "folder"
    root: str | None = None
    n_victim: int = 25000
    n_attacker: int = 25000
    n_eval: int = 1000
    num_classes: int = 10
    victim_epochs: int = 30
    shadow_epochs: int = 30
    inverter_epochs: int = 20
    inverter_width: int = 64
    inverter_lr: float | dict[str, float] = 1e-3
    n_noise: int = 50000
    mv_steps: int = MV_STEPS
    mv_optimizer: Literal["sgd", "adam"] = "sgd"
    mv_batch_size: int | None = None
    mv_tv_weight: float | None = None
    fisher_probes: int = 8
    fisher_prior: float | None = None
    n_candidates: int = 10
    batch_size: int = 128
    lpips: bool = True
    n_boot: int = 1000
    grid_images: int = 8
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    out: str | None = "runs/privacy"
    overwrite: bool = False
    # No public methods here: jsonargparse would offer them as subcommands of `upconv privacy`.

    def __post_init__(self) -> None:
        self.encoder = EncoderSpec.of(self.encoder)  # a name alone, from Python or an older YAML


def from_config(config: C, run: Callable[[C, Data, Data, Data], R]) -> R:
    """Draw the victim / attacker / evaluated images from ``config``'s data fields (data, root, n_victim,
    n_attacker, n_eval, seed, num_workers; ``load_splits``), then ``run(config, evaluated, victim, attacker)``:
    ``run_privacy``, ``run_frontier`` or ``run_budget``. A training budget of no epochs is refused before any
    image is decoded."""
    c = config
    check_epochs(c)
    victim, attacker, evaluation = load_splits(
        c.data, c.root, c.n_victim, c.n_attacker, c.n_eval, c.seed, num_workers=c.num_workers
    )
    return run(c, evaluation, victim, attacker)


def check_config(config: PrivacyConfig, n_eval: int) -> None:
    """Raise a one-line ValueError for an unknown attack, decoder or defence, a defence strength out of
    range, a line-up that ``n_eval`` evaluated images cannot fill, or a bad optimisation setting."""
    check_epochs(config)
    defense_attacks = config.defense_attacks if config.defenses else ()
    for a in [*config.attacks, *defense_attacks]:
        if a not in ATTACKS:
            raise ValueError(f"unknown attack '{a}'; choose from: {', '.join(ATTACKS)}")
    for d in config.decoders:
        if d not in DECODERS:
            raise ValueError(f"unknown decoder '{d}'; choose from: {', '.join(DECODERS)}")
    check_sweep(config.defenses, list(defense_attacks), list(config.attackers))
    check_candidates(config.n_candidates, n_eval)
    if config.mv_batch_size is not None and config.mv_batch_size < 1:
        raise ValueError(f"mv_batch_size must be a positive number of images; got {config.mv_batch_size}")
    if config.mv_tv_weight is not None and config.mv_tv_weight < 0:
        raise ValueError(f"mv_tv_weight must be ≥ 0 (or None for M&V's schedule); got {config.mv_tv_weight}")
    if config.fisher_probes < 0:
        raise ValueError(f"fisher_probes must be ≥ 0 (0: no Fisher-information bound); got {config.fisher_probes}")
    prior = config.fisher_prior
    if prior is not None and not (math.isfinite(prior) and prior >= 0):
        raise ValueError(f"fisher_prior (tr J(π)/d) must be a finite number ≥ 0, or None; got {prior}")


def check_epochs(config: PrivacyConfig) -> None:
    """Refuse a training budget of no epochs: an untrained inverse network (or victim, or shadow) would be
    reported as a measure of leakage (or utility) while it measures nothing."""
    budgets = {"inverter_epochs": (config.inverter_epochs, "each inverse network")}
    if not config.encoder.weights:
        budgets["victim_epochs"] = (config.victim_epochs, "the victim, trained here without encoder weights")
    if "query_free" in config.attacks:
        budgets["shadow_epochs"] = (config.shadow_epochs, "the query-free attack's shadow encoder")
    for name, (epochs, what) in budgets.items():
        if epochs < 1:
            raise ValueError(
                f"{name} must be at least 1 (it trains {what}); got {epochs}: an untrained network's figures "
                f"would be reported as leakage and utility while they measure nothing"
            )


def uses_attacker_data(config: PrivacyConfig) -> bool:
    """black_box_dist, the query-free shadow and white_box's UpconvNet train on the attacker's images."""
    return "black_box_dist" in config.attacks or "query_free" in config.attacks or white_box_upconvnet(config)


def white_box_upconvnet(config: PrivacyConfig) -> bool:
    """white_box's UpconvNet is black_box_dist's (trained through the victim on the attacker's data)."""
    return "white_box" in config.attacks and "upconvnet" in config.decoders


def attackers_of(c: PrivacyConfig, kind: str, attack: str) -> list[str]:
    """Who attacks a point: the undefended one by its (clean) attackers; a defended one by each attacker of
    ``c.attackers`` that the attack has (adaptive only for query-trained inverse networks)."""
    if kind == "none":
        return ["clean"]
    return [a for a in c.attackers if a == "clean" or attack in ADAPTIVE_ATTACKS]


def adaptive_attacks(c: PrivacyConfig, kind: str) -> list[str]:
    """The attacks whose adaptive attackers attack a defended point of ``kind``."""
    if kind == "none" or "adaptive" not in c.attackers:
        return []
    return [a for a in c.defense_attacks if a in c.attacks and a in ADAPTIVE_ATTACKS]


def attack_plan(c: PrivacyConfig, point: Point) -> list[tuple[str, str, str]]:
    """(attack, decoder, attacker) at ``point``, in run order: every attack on the undefended point, the
    defence attacks on a defended one, by clean and/or adaptive attackers."""
    kind = point.defense
    return [
        (attack, dec, who)
        for attack in c.attacks
        if kind == "none" or attack in c.defense_attacks
        for dec in c.decoders
        for who in attackers_of(c, kind, attack)
    ]

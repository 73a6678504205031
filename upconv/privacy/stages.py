"""The training stages of a privacy run, in order: the victim (unless given), the query-based inverse
networks of each black-box setting, the query-free shadow encoder and its UpconvNets. Each stage reads what
earlier ones left in ``Trained`` and adds its own; ``Clock`` records each stage's wall time. Every stage is a
unit of the run folder (``upconv.privacy.resume``): a finished one is loaded, not trained again."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from upconv.core.runtime import progress
from upconv.core.units import Unit, fingerprint
from upconv.nets.builtin import build_architecture
from upconv.nets.checkpoints import choose_encoder
from upconv.nets.encoder import Encoder
from upconv.nets.spec import EncoderSpec
from upconv.privacy.attacks import Inverters, InverterSettings, train_inverters
from upconv.privacy.config import PrivacyConfig, white_box_upconvnet
from upconv.privacy.resume import Resume, cpu_state, load_nets, load_state, save_nets, with_state
from upconv.privacy.splits import Data
from upconv.privacy.sweep import AttackerKey, Point, by_key, by_name
from upconv.training.recipes import DecoderRecipe, train_classifier


class Clock:
    """Wall time per named stage, summed over calls."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.timings: dict[str, float] = {}

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels run asynchronously: time finished work only
        return time.perf_counter()

    def timed(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = self.now()
        result = fn(*args)
        self.timings[stage] = self.timings.get(stage, 0.0) + self.now() - t0
        return result


@dataclass
class Trained:
    """The victim (None until a training stage makes it), the shadow, the retrained victims of training-time
    defences, and the inverse networks of every attacker (clean, and adaptive per defended strength) with their
    training health, each keyed (kind, layer)."""

    victim: Encoder | None
    device: torch.device
    shadow: Encoder | None = None
    nets: dict[AttackerKey, dict[tuple[str, str], nn.Module]] = field(default_factory=dict)
    health: dict[AttackerKey, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)  # per net
    victim_state: dict[str, Tensor] | None = None  # weights of a victim trained here
    notes: list[str] = field(default_factory=list)
    defended: dict[Point, Encoder] = field(default_factory=dict)  # retrained per trained point
    trained_with: dict[str, dict[str, Any]] = field(default_factory=dict)  # per attack: its clean unit's settings


def given_victim(config: PrivacyConfig, encoder: Encoder | None, victim_data: Data | None) -> Encoder | None:
    """The victim as given (a built Encoder, or the encoder's weights), or None when it is to be trained here."""
    spec = config.encoder
    if encoder is not None:  # the config's default name is no second encoder; its weights or kwargs would be
        return choose_encoder(encoder, EncoderSpec(weights=spec.weights, kwargs=spec.kwargs))
    if spec.weights:
        return choose_encoder(spec=spec)
    if spec.kwargs:
        raise ValueError(
            f"encoder kwargs apply to a victim loaded from its weights; a victim trained here "
            f"is {spec.name} with its default arguments (got {spec.kwargs})"
        )
    if victim_data is None:
        raise ValueError(
            f"no victim: pass the weights of {spec.name} (--encoder.weights) or victim_data to train it on"
        )
    return None


def inverter_record(s: InverterSettings) -> dict[str, Any]:
    """What determines a set of inverse networks besides its encoder and queries (a unit's settings)."""
    return {
        "kinds": list(s.kinds),
        "queries": s.queries,
        "n_noise": s.n_noise,
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "recipe": s.recipe.as_dict(),
        "kind_lr": s.kind_lr,
        "width": s.width,
        "seed": s.seed,
        "defense": s.defense,
    }


def train_victim(t: Trained, config: PrivacyConfig, victim_data: Data, resume: Resume) -> None:
    """The victim trained here (unit ``victim``), or as a finished run folder holds it."""
    c = config
    unit = Unit("victim", {"encoder": c.encoder.name, "victim_data": fingerprint(*victim_data)})
    unit.settings.update(victim_epochs=c.victim_epochs, num_classes=c.num_classes, seed=c.seed)

    def compute() -> dict[str, Tensor]:
        kw = dict(num_classes=c.num_classes, epochs=c.victim_epochs, seed=c.seed, device=t.device)
        return cpu_state(train_classifier(c.encoder.name, *victim_data, **kw))

    state = resume.run(
        unit, "train victim", compute, lambda st, f: _save(st, f, "victim.pt"), lambda f, r: load_state(f, "victim.pt")
    )
    model = with_state(build_architecture(c.encoder.name, num_classes=c.num_classes), state)
    t.victim = Encoder.from_model(model, c.encoder.name)
    t.notes.append(
        f"victim {c.encoder.name} trained here on {len(victim_data[0])} images for {c.victim_epochs} epochs; "
        "its weights are saved as victim.pt (pass them as --encoder.weights to attack the same victim again)"
    )
    t.victim_state = state


def _save(state: dict[str, Tensor], folder: str, name: str) -> dict[str, Any]:
    torch.save(state, os.path.join(folder, name))
    return {}


def attackers_unit(
    c: PrivacyConfig, t: Trained, attack: str, layers: list[str], queries: str, s: InverterSettings
) -> Unit:
    """The clean inverse networks of one attack (query_free: with its shadow encoder); ``queries`` names the
    images they are trained on (a fingerprint, or "noise")."""
    settings = {"victim": t.victim.weights_hash, "layers": layers, "inverters": inverter_record(s), "queries": queries}
    if attack == "query_free":
        settings["shadow"] = {"epochs": c.shadow_epochs, "num_classes": c.num_classes, "seed": c.seed + 1}
    return Unit(f"attackers/{attack}", settings)


def train_attack(
    t: Trained, c: PrivacyConfig, attack: str, layers: list[str], data: tuple[Data | None, Data | None], resume: Resume
) -> None:
    """Inverse networks of one setting (unit ``attackers/<attack>``), trained through the shadow (query_free)
    or the victim (the others)."""
    s, images = _attack_settings(c, attack, data)
    shadow_data = data[1]

    def compute() -> tuple[dict[str, Tensor] | None, Inverters | None]:
        if attack != "query_free":
            return None, train_inverters(t.victim, layers, images, s)
        shadow = resume.clock.timed("train shadow", train_shadow, t, c, shadow_data)
        if not s.kinds:
            return cpu_state(shadow.model), None
        trained = resume.clock.timed("train inverters query_free", train_inverters, shadow, layers, images, s)
        return cpu_state(shadow.model), trained

    def save(value: tuple[Any, Any], folder: str) -> dict[str, Any]:
        shadow, trained = value
        if shadow is not None:
            torch.save(shadow, os.path.join(folder, "shadow.pt"))
        save_nets(trained.nets if trained else {}, folder)
        health = trained.health if trained else {}
        return {"health": by_name(health)}

    def load(folder: str, results: dict[str, Any]) -> None:
        target = t.victim
        if attack == "query_free":
            arch = build_architecture(t.victim.name, num_classes=c.num_classes)
            t.shadow = target = Encoder.from_model(with_state(arch, load_state(folder, "shadow.pt")), t.victim.name)
            t.shadow.to(t.device)
        t.nets[AttackerKey(attack)] = load_nets(target, folder, c.inverter_width)
        t.health[AttackerKey(attack)] = by_key(results["health"])

    stage = None if attack == "query_free" else f"train inverters {attack}"
    queries = (
        fingerprint(*shadow_data) if attack == "query_free" else fingerprint(images) if images is not None else "noise"
    )
    unit = attackers_unit(c, t, attack, layers, queries, s)
    resume.run(unit, stage, compute, save, load)
    t.trained_with[attack] = unit.settings


def train_shadow(t: Trained, config: PrivacyConfig, attacker_data: Data) -> Encoder:
    """Query-free: the victim's architecture trained on the attacker's data."""
    name = t.victim.name
    model = train_classifier(
        name,
        *attacker_data,
        num_classes=config.num_classes,
        epochs=config.shadow_epochs,
        seed=config.seed + 1,
        device=t.device,
    )
    return Encoder.from_model(model, name).to(t.device)


def inverter_settings(c: PrivacyConfig) -> InverterSettings:
    """How every inverse network of the run trains (the clean and the adaptive attackers alike): the decoder
    recipe at ``inverter_lr``, or at one rate per kind."""
    per_kind = isinstance(c.inverter_lr, dict)
    return InverterSettings(
        kinds=tuple(c.decoders),
        epochs=c.inverter_epochs,
        batch_size=c.batch_size,
        width=c.inverter_width,
        seed=c.seed,
        recipe=DecoderRecipe() if per_kind else DecoderRecipe(lr=c.inverter_lr),
        kind_lr=dict(c.inverter_lr) if per_kind else None,
    )


def _attack_settings(
    c: PrivacyConfig, attack: str, data: tuple[Data | None, Data | None]
) -> tuple[InverterSettings, Tensor | None]:
    """The inverse networks' settings and queries of one attack's clean attackers."""
    s = inverter_settings(c)
    victim_data, attacker_data = data
    if attack == "black_box_noise":
        return replace(s, queries="noise", n_noise=c.n_noise), None
    if attack == "query_free":
        return replace(s, kinds=("upconvnet",) if "upconvnet" in c.decoders else ()), attacker_data[0]
    return s, (victim_data if attack == "black_box_train" else attacker_data)[0]


def trained_attacks(c: PrivacyConfig) -> list[str]:
    """Attacks with clean inverse networks (or a shadow) to train, in training order."""
    shared = {"black_box_dist"} if white_box_upconvnet(c) else set()  # white_box's UpconvNet is black_box_dist's
    order = ("black_box_train", "black_box_dist", "black_box_noise", "query_free")
    return [a for a in order if a in c.attacks or a in shared]


def run_training(
    c: PrivacyConfig, t: Trained, layers: list[str], data: tuple[Data | None, Data | None], resume: Resume
) -> None:
    """Train (or reuse) the victim and every clean attacker ``c`` needs, then share black_box_dist's UpconvNets
    with white_box."""
    stages = (["victim"] if t.victim is None else []) + trained_attacks(c)
    for stage in progress(stages, desc="privacy: training", total=len(stages), unit="stage"):
        if stage == "victim":
            train_victim(t, c, data[0], resume)
            continue
        t.victim = t.victim.to(t.device)
        train_attack(t, c, stage, layers, data, resume)
    t.victim = t.victim.to(t.device)
    if white_box_upconvnet(c):
        for by_key in (t.nets, t.health):  # the networks and their health alike
            shared = by_key[AttackerKey("black_box_dist")]
            by_key[AttackerKey("white_box")] = {k: v for k, v in shared.items() if k[0] == "upconvnet"}
        t.trained_with["white_box"] = t.trained_with["black_box_dist"]
    t.notes += health_notes(t.health)


def health_notes(health: dict[AttackerKey, dict[tuple[str, str], dict[str, Any]]]) -> list[str]:
    """One line per inverse network that diverged in training (as ``upconv evaluate`` says of a decoder): a
    failed one's figures are its last good weights', a low leakage that measures the network, not the layer."""
    notes = []
    for attack, records in health.items():
        for (kind, layer), r in records.items():
            events = "; ".join(
                f"step {e['step']}: {e['kind']}, {e['action']}" for e in r["events"] if e["kind"] != "skipped steps"
            )
            if r["status"] == "failed":
                notes.append(
                    f"⚠ {attack} {kind} at {layer}: its inverse network diverged in training and was marked "
                    f"failed ({events}); its figures are a lower bound on what leaks, not a measure of it"
                )
            elif r["status"] == "recovered":
                notes.append(
                    f"{attack} {kind} at {layer}: its inverse network diverged in training and was recovered ({events})"
                )
    return notes

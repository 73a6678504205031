"""The training stages of a privacy run, in order: the victim (unless given), the query-based inverse
networks of each black-box setting, the query-free shadow encoder and its UpconvNets. Each stage reads what
earlier ones left in ``Trained`` and adds its own; ``Clock`` records each stage's wall time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from upconv.core.runtime import progress
from upconv.nets.checkpoints import choose_encoder
from upconv.nets.encoder import Encoder
from upconv.nets.spec import EncoderSpec
from upconv.privacy.attacks import InverterSettings, train_inverters
from upconv.privacy.config import PrivacyConfig, white_box_upconvnet
from upconv.training.recipes import train_classifier

Data = tuple[Tensor, Tensor]  # images (N, C, H, W), labels (N,)


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
    """The victim (None until a training stage makes it), the shadow, and the inverse networks per attack,
    keyed (kind, layer)."""

    victim: Encoder | None
    device: torch.device
    shadow: Encoder | None = None
    nets: dict[str, dict[tuple[str, str], nn.Module]] = field(default_factory=dict)
    health: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)  # per attack, per net
    victim_state: dict[str, Tensor] | None = None  # weights of a victim trained here
    notes: list[str] = field(default_factory=list)
    defended: dict[tuple[str, float, str], Encoder] = field(default_factory=dict)  # retrained per trained point
    adaptive: dict[tuple[str, float, str, str], dict[tuple[str, str], nn.Module]] = field(default_factory=dict)


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


def train_victim(t: Trained, config: PrivacyConfig, victim_data: Data) -> None:
    c = config
    model = train_classifier(
        c.encoder.name, *victim_data, num_classes=c.num_classes, epochs=c.victim_epochs, seed=c.seed, device=t.device
    )
    t.victim = Encoder.from_model(model, c.encoder.name)
    t.notes.append(
        f"victim {c.encoder.name} trained here on {len(victim_data[0])} images for {c.victim_epochs} epochs; "
        "its weights are saved as victim.pt (pass them as --encoder.weights to attack the same victim again)"
    )
    t.victim_state = {k: v.detach().cpu().clone() for k, v in t.victim.model.state_dict().items()}


def train_shadow(t: Trained, config: PrivacyConfig, attacker_data: Data) -> None:
    """Query-free: the victim's architecture trained on the attacker's own data."""
    name = t.victim.name
    model = train_classifier(
        name,
        *attacker_data,
        num_classes=config.num_classes,
        epochs=config.shadow_epochs,
        seed=config.seed + 1,
        device=t.device,
    )
    t.shadow = Encoder.from_model(model, name).to(t.device)


def train_attack(t: Trained, attack: str, layers: list[str], images: Tensor | None, settings: InverterSettings) -> None:
    """Inverse networks of one setting, trained through the shadow (query_free) or the victim (the others)."""
    target = t.shadow if attack == "query_free" else t.victim.to(t.device)
    trained = train_inverters(target, layers, images, settings)
    t.nets[attack], t.health[attack] = trained.nets, trained.health


def inverter_settings(c: PrivacyConfig) -> InverterSettings:
    """How every inverse network of the run trains (the clean and the adaptive attackers alike)."""
    return InverterSettings(
        kinds=tuple(c.decoders),
        epochs=c.inverter_epochs,
        batch_size=c.batch_size,
        lr=c.inverter_lr,
        width=c.inverter_width,
        seed=c.seed,
    )


def training_stages(
    c: PrivacyConfig, t: Trained, layers: list[str], victim_data: Data | None, attacker_data: Data | None
) -> list[tuple[str, Callable[..., None], tuple]]:
    """(stage name, function, arguments) in order; later stages use what earlier ones trained."""
    s = inverter_settings(c)
    stages: list[tuple[str, Callable[..., None], tuple]] = []
    if t.victim is None:
        stages.append(("train victim", train_victim, (t, c, victim_data)))
    if "black_box_train" in c.attacks:
        stages.append(
            ("train inverters black_box_train", train_attack, (t, "black_box_train", layers, victim_data[0], s))
        )
    if "black_box_dist" in c.attacks or white_box_upconvnet(c):
        stages.append(
            ("train inverters black_box_dist", train_attack, (t, "black_box_dist", layers, attacker_data[0], s))
        )
    if "black_box_noise" in c.attacks:
        noise = replace(s, queries="noise", n_noise=c.n_noise)
        stages.append(("train inverters black_box_noise", train_attack, (t, "black_box_noise", layers, None, noise)))
    if "query_free" in c.attacks:
        stages.append(("train shadow", train_shadow, (t, c, attacker_data)))
        if "upconvnet" in c.decoders:
            upconv = replace(s, kinds=("upconvnet",))
            stages.append(
                ("train inverters query_free", train_attack, (t, "query_free", layers, attacker_data[0], upconv))
            )
    return stages


def run_training(
    c: PrivacyConfig, t: Trained, layers: list[str], data: tuple[Data | None, Data | None], clock: Clock
) -> None:
    """Run every training stage ``c`` needs, timed, then share black_box_dist's UpconvNets with white_box."""
    stages = training_stages(c, t, layers, *data)
    for stage, fn, args in progress(stages, desc="privacy: training", total=len(stages), unit="stage"):
        clock.timed(stage, fn, *args)
    t.victim = t.victim.to(t.device)
    if white_box_upconvnet(c):
        t.nets["white_box"] = {k: v for k, v in t.nets["black_box_dist"].items() if k[0] == "upconvnet"}
        t.health["white_box"] = {k: v for k, v in t.health["black_box_dist"].items() if k[0] == "upconvnet"}
    t.notes += health_notes(t.health)


def health_notes(health: dict[str, dict[tuple[str, str], dict[str, Any]]]) -> list[str]:
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

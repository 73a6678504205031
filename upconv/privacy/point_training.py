"""What each defended point of a sweep trains beside the undefended victim: the victims retrained with a
training-time defence (``upconv.privacy.training_defenses``; each one a unit of the run folder) and the
adaptive attackers (inverse networks trained on the defended features, the realistic threat).

A **clean** attacker is the one trained on the undefended victim's clean features; an
**adaptive** attacker queries the defended system: for an inference-time defence, the victim's features with
the defence applied (a fresh draw each step); for a training-time defence, the retrained victim's features.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from upconv.core.units import Unit, fingerprint
from upconv.nets.encoder import Encoder
from upconv.privacy.attacks import InverterSettings, train_inverters
from upconv.privacy.config import PrivacyConfig, adaptive_attacks
from upconv.privacy.resume import Resume, cpu_state, load_state, with_state
from upconv.privacy.splits import Data
from upconv.privacy.stages import Trained, inverter_record, inverter_settings
from upconv.privacy.sweep import AttackerKey, Point, by_name
from upconv.privacy.training_defenses import defended_encoder, train_defended


def defended_unit(c: PrivacyConfig, t: Trained, point: Point, victim_data: Data) -> Unit:
    """The victim retrained with the training-time defence of ``point`` (defence, strength > 0, layer)."""
    kind, s, L = point
    settings = {"victim": t.victim.weights_hash, "defense": [kind, s], "layer": L, "victim_epochs": c.victim_epochs}
    settings |= {"victim_data": fingerprint(*victim_data), "from_scratch": t.victim_state is not None, "seed": c.seed}
    return Unit(f"defended/{kind}-{s:g}-{L}", settings)


def defended_victim(t: Trained, c: PrivacyConfig, point: Point, victim_data: Data, resume: Resume) -> None:
    """The victim retrained with a training-time defence at ``point`` (unit ``defended/...``; strength 0: the
    undefended victim itself), into ``t.defended``: the victim a point of a training-time defence attacks."""
    kind, s, L = point
    if s == 0:
        t.defended[point] = t.victim
        return

    def compute() -> dict[str, Tensor]:
        scratch = t.victim_state is not None
        v = train_defended(t.victim, L, (kind, s), victim_data, c.victim_epochs, scratch, c.seed, t.device)
        return cpu_state(v.model)

    def save(state: dict[str, Tensor], folder: str) -> dict[str, Any]:
        torch.save(state, os.path.join(folder, "victim.pt"))
        return {}

    def load(folder: str, results: dict[str, Any]) -> Encoder:
        return defended_encoder(t.victim, with_state(t.victim.model, load_state(folder, "victim.pt")))

    unit = defended_unit(c, t, point, victim_data)
    t.defended[point] = resume.run(unit, "train defended victims", compute, save, load).to(t.device)


def queries(attack: str, data: tuple[Data | None, Data | None], s: InverterSettings, c: PrivacyConfig) -> Any:
    """(query images or None, inverter settings) of an attack's adaptive attackers."""
    victim_data, attacker_data = data
    if attack == "black_box_noise":
        return None, replace(s, queries="noise", n_noise=c.n_noise)
    return (victim_data if attack == "black_box_train" else attacker_data)[0], s


def adaptive_record(c: PrivacyConfig, point: Point, data: tuple[Data | None, Data | None]) -> dict[str, Any]:
    """What the adaptive attackers of ``point`` are trained on and how (part of the point's settings)."""
    out = {}
    for attack in adaptive_attacks(c, point.defense):
        images, settings = queries(attack, data, inverter_settings(c), c)
        out[attack] = {
            "inverters": inverter_record(settings),
            "queries": fingerprint(images) if images is not None else "noise",
        }
    return out


def train_adaptive(t: Trained, c: PrivacyConfig, point: Point, data: tuple[Data | None, Data | None]) -> dict:
    """Inverse networks trained on the features of ``point``, per adaptive attack, into ``t.nets`` and their
    training health into ``t.health`` (keyed by the attack's adaptive ``AttackerKey``, which holds every split
    layer's); returns that health per attack, keyed "kind layer"."""
    kind, s, L = point
    health = {}
    for attack in adaptive_attacks(c, kind):
        images, settings = queries(attack, data, inverter_settings(c), c)
        target = t.defended.get(point)  # the retrained victim of a training-time defence
        if target is None:  # an inference-time defence: the victim's features, defended afresh each step
            target, settings = t.victim, replace(settings, defense=(kind, s))
        trained = train_inverters(target, [L], images, settings)
        key = AttackerKey.adaptive(attack, point)
        t.nets.setdefault(key, {}).update(trained.nets)
        t.health.setdefault(key, {}).update(trained.health)
        health[attack] = by_name(trained.health)
    return health

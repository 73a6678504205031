"""Defended points of a sweep beside the undefended victim: the victims retrained with a trained defence
(``upconv.privacy.trained_defenses``), the adaptive attackers (inverse networks trained on the defended
features, the realistic threat), and, per point, the features an attacker sees and the logits utility is
scored on.

A **clean** attacker is the one trained on the undefended victim's clean features (``Trained.nets``); an
**adaptive** attacker queries the defended system: for an inference-time defence, the victim's features with
the defence applied (a fresh draw each step); for a trained defence, the retrained victim's features.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from upconv.core.runtime import progress
from upconv.privacy.attacks import InverterSettings, train_inverters
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.defenses import defend
from upconv.privacy.stages import Clock, Data, Trained, health_notes, inverter_settings
from upconv.privacy.trained_defenses import ADAPTIVE_ATTACKS, TRAINED, train_defended

Point = tuple[str, float | None, str]  # (defence, strength, layer)


def points(c: PrivacyConfig, layers: list[str]) -> list[Point]:
    return [(k, float(s), L) for k, ss in (c.defenses or {}).items() for s in ss for L in layers]


def attackers_of(c: PrivacyConfig, kind: str, attack: str) -> list[str]:
    """Who attacks a point: the undefended one by its (clean) attackers; a defended one by each attacker of
    ``c.attackers`` that the attack has (adaptive only for query-trained inverse networks)."""
    if kind == "none":
        return ["clean"]
    return [a for a in c.attackers if a == "clean" or attack in ADAPTIVE_ATTACKS]


def train_victims(t: Trained, c: PrivacyConfig, layers: list[str], victim_data: Data | None) -> None:
    """One retrained victim per trained-defence point (strength 0: the undefended victim itself)."""
    if victim_data is None:
        raise ValueError("trained defences retrain the victim: pass victim_data (its training images)")
    todo = [p for p in points(c, layers) if p[0] in TRAINED]
    for kind, s, L in progress(todo, desc="privacy: defended victims", total=len(todo), unit="victim"):
        if kind in TRAINED:
            v = train_defended(
                t.victim, L, (kind, s), victim_data, c.victim_epochs, t.victim_state is not None, c.seed, t.device
            )
            t.defended[(kind, s, L)] = v.to(t.device)


def _queries(attack: str, data: tuple[Data | None, Data | None], s: InverterSettings, c: PrivacyConfig) -> Any:
    victim_data, attacker_data = data
    if attack == "black_box_noise":
        return None, replace(s, queries="noise", n_noise=c.n_noise)
    return (victim_data if attack == "black_box_train" else attacker_data)[0], s


def train_adaptive(t: Trained, c: PrivacyConfig, layers: list[str], data: tuple[Data | None, Data | None]) -> None:
    """Inverse networks trained on each defended point's features, per adaptive attack."""
    base = inverter_settings(c)
    for kind, s, L in progress(points(c, layers), desc="privacy: adaptive attackers", unit="point"):
        for attack in [a for a in c.defense_attacks if a in c.attacks and a in ADAPTIVE_ATTACKS]:
            images, settings = _queries(attack, data, base, c)
            if kind in TRAINED:
                target = t.defended[(kind, s, L)]
            else:
                target, settings = t.victim, replace(settings, defense=(kind, s))
            trained = train_inverters(target, [L], images, settings)
            t.adaptive[(kind, s, L, attack)] = trained.nets
            # one entry per (attack, defence, strength), holding every split layer's inverse networks
            t.health.setdefault(f"{attack} adaptive {kind} {s:g}", {}).update(trained.health)


def train_defended_points(
    c: PrivacyConfig, t: Trained, layers: list[str], data: tuple[Data | None, Data | None], clock: Clock
) -> None:
    """The stages a sweep adds after the undefended ones: retrained victims, then adaptive attackers."""
    if any(k in TRAINED for k in c.defenses or {}):
        clock.timed("train defended victims", train_victims, t, c, layers, data[0])
    if "adaptive" in c.attackers and c.defenses:
        before = set(t.health)
        clock.timed("train adaptive inverters", train_adaptive, t, c, layers, data)
        t.notes += health_notes({k: v for k, v in t.health.items() if k not in before})


def view(t: Trained, c: PrivacyConfig, point: Point, x: Tensor, clean: dict[str, Tensor], tails: dict) -> Any:
    """(features the attacker sees (N, ...), logits utility is scored on (N, K)) at ``point``."""
    kind, strength, L = point
    with torch.no_grad():
        if kind in TRAINED:
            v = t.defended[point]
            return v(x, [L])[L], v.logits(x).flatten(1)
        f = clean[L] if kind == "none" else defend(clean[L], kind, strength, seed=c.seed)
        return f, tails[L](f)


def invert_adaptive(t: Trained, c: PrivacyConfig, key: tuple, decoder: str, feats: Tensor) -> Tensor:
    """An adaptive attacker's reconstructions (N, C, H, W) of ``feats``; ``key``: (defence, strength, layer,
    attack)."""
    net: nn.Module = t.adaptive[key][(decoder, key[2])]
    with torch.no_grad():
        return torch.cat([net(f) for f in feats.split(c.batch_size)]).clamp(0, 1)

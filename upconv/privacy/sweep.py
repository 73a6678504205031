"""The vocabulary of a privacy sweep, declared once: what is attacked (``ATTACKS``, and what each attack's two
inverse networks are), who attacks a defended point (``ATTACKERS``; only ``ADAPTIVE_ATTACKS`` can adapt), what
is measured (``LEAKAGE``), the defences and their strengths (applied at inference, ``upconv.privacy.
inference_defenses``, or trained into the victim, ``TRAINED``), and the typed keys a run's parts are filed
under: ``Point`` (defence, strength, split layer) and ``AttackerKey`` (whose inverse networks: an attack's clean
ones, or its adaptive ones at a defended point)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from upconv.privacy.inference_defenses import RANGES, check_strength

ATTACKS = ("white_box", "black_box_train", "black_box_dist", "black_box_noise", "query_free")
MV_ATTACKS = ("white_box", "query_free")  # their ``paper`` inverse network is optimisation inversion
LEAKAGE = ("psnr", "ssim", "lpips", "reid")
# What "paper" and "upconvnet" mean in each setting (shown in the report).
ROLES = {
    "white_box": (
        "optimisation inversion (rMLE / M&V) on the victim's weights",
        "UpconvNet trained through the victim on the attacker's same-distribution data",
    ),
    "black_box_train": (
        "He et al.'s shallow inverse net, queries = victim's training images",
        "UpconvNet, queries = victim's training images",
    ),
    "black_box_dist": (
        "He et al.'s shallow inverse net, queries = other images of the same distribution",
        "UpconvNet, same queries",
    ),
    "black_box_noise": ("He et al.'s shallow inverse net, queries = uniform-noise images", "UpconvNet, same queries"),
    "query_free": (
        "optimisation inversion (rMLE / M&V) on a shadow encoder trained on the attacker's data",
        "UpconvNet trained on the shadow encoder",
    ),
}
ATTACKERS = ("clean", "adaptive")
# Attacks whose inverse networks learn from queries, and so can learn from defended features too.
ADAPTIVE_ATTACKS = ("black_box_train", "black_box_dist", "black_box_noise")
# Training-time defences and their strengths (the inference-time ones are ``inference_defenses.RANGES``).
TRAINED = {
    "nopeek": "a distance-correlation weight w ≥ 0",
    "adversarial": "an adversarial weight λ ≥ 0",
}
KINDS = (*RANGES, *TRAINED)


class Point(NamedTuple):
    """One point of a sweep: the undefended one is ("none", None, layer)."""

    defense: str
    strength: float | None
    layer: str


class NetKey(NamedTuple):
    """One inverse network of an attacker: its kind (``paper``, ``upconvnet``) and split layer. Its text,
    ``"kind layer"``, names the network's weights in a unit's file and its health record in ``metrics.json``."""

    kind: str
    layer: str

    def __str__(self) -> str:
        return f"{self.kind} {self.layer}"

    @classmethod
    def parse(cls, text: str) -> NetKey:
        kind, layer = text.split(" ", 1)
        return cls(kind, layer)


def by_name(per_net: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """``{(kind, layer): x}`` as files and ``metrics.json`` keep it: ``{"kind layer": x}``."""
    return {str(NetKey(*key)): x for key, x in per_net.items()}


def by_key(per_name: dict[str, Any]) -> dict[NetKey, Any]:
    """The inverse of ``by_name``."""
    return {NetKey.parse(name): x for name, x in per_name.items()}


@dataclass(frozen=True)
class AttackerKey:
    """Whose inverse networks: an attack's clean attackers, or its adaptive attackers at one defended strength
    (every split layer's together). It keys the trained networks and their training health alike (each a dict
    by (kind, layer)); its text is the health record's name in ``metrics.json`` and the report:
    ``black_box_dist``, ``black_box_dist adaptive noise 0.5``."""

    attack: str
    defense: str | None = None
    strength: float | None = None

    @classmethod
    def adaptive(cls, attack: str, point: Point) -> AttackerKey:
        return cls(attack, point.defense, point.strength)

    def __str__(self) -> str:
        return self.attack if self.defense is None else f"{self.attack} adaptive {self.defense} {self.strength:g}"


def check_defense(kind: str, strength: float) -> None:
    """Raise a one-line ValueError for an unknown defence or a strength outside its range."""
    if kind not in TRAINED:
        if kind not in RANGES:
            raise ValueError(f"unknown defence '{kind}'; choose one of: {', '.join(KINDS)}")
        check_strength(kind, strength)
        return
    s = float(strength)
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(
            f"defence strength {strength} is out of range for '{kind}': expected {TRAINED[kind]}; "
            f"fix the sweep in the config"
        )


def check_sweep(defenses: dict[str, list[float]] | None, defense_attacks: list[str], attackers: list[str]) -> None:
    """Every defence point and attacker of a sweep, checked before any training (one-line ValueErrors)."""
    for kind, strengths in (defenses or {}).items():
        for s in strengths:
            check_defense(kind, s)
    bad = [a for a in attackers if a not in ATTACKERS]
    if bad or not attackers:
        raise ValueError(f"unknown attackers {bad or '[]'}; choose one or both of: {', '.join(ATTACKERS)}")
    trained = [k for k in defenses or {} if k in TRAINED]
    other = [a for a in defense_attacks if a not in ADAPTIVE_ATTACKS]
    if trained and other:
        raise ValueError(
            f"trained defences ({', '.join(trained)}) are attacked by query-trained inverse networks "
            f"({', '.join(ADAPTIVE_ATTACKS)}); remove {', '.join(other)} from defense_attacks"
        )

"""What a privacy run produces (``PrivacyResult``) and the attack settings it names, shared by the run and the
report writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

ATTACKS = ("white_box", "black_box_train", "black_box_dist", "black_box_noise", "query_free")
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


@dataclass
class PrivacyResult:
    """One row per (defence point, layer, attack, decoder) with leakage and utility figures and its verdict
    against the no-information floors, the floors' own rows, the run's settings, notes (warnings first), and
    the images of the report's grids."""

    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str]
    originals: Tensor  # (N_grid, C, H, W)
    grid: dict[tuple[str, str, str], Tensor] = field(default_factory=dict)  # (attack, decoder, layer) -> images
    out: str | None = None
    victim_state: dict[str, Tensor] | None = None  # weights of a victim trained by the run (saved as victim.pt)
    floor_rows: list[dict[str, Any]] = field(default_factory=list)  # the no-information floors, scored alike
    bounds: list[dict[str, Any]] = field(default_factory=list)  # the Fisher-information bound per noise point
    units: dict[str, list[str]] = field(default_factory=dict)  # the run folder's units: reused, computed

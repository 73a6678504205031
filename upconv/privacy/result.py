"""What a privacy run produces (``PrivacyResult``), shared by the run and the report writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


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

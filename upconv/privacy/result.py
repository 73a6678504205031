"""What a privacy command returns (``PrivacyResult``): one shape for ``upconv privacy``, ``privacy-frontier`` and
``privacy-budget``, shared with their report writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class PrivacyResult:
    """Rows of leakage figures with their verdicts against the no-information floors (a privacy run or frontier:
    one per (defence point, layer, attack, decoder, attacker), with utility; a budget: one per (budget, layer,
    decoder)), the floors' own rows, the settings, notes (warnings first) and the run folder's units; a privacy
    run adds its grids' images and the Fisher-information bounds, a frontier its curves' points."""

    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str]
    originals: Tensor | None = None  # (N_grid, C, H, W), the originals of a privacy run's grids
    grid: dict[tuple[str, str, str], Tensor] = field(default_factory=dict)  # (attack, decoder, layer) -> images
    out: str | None = None
    victim_state: dict[str, Tensor] | None = None  # weights of a victim trained by the run (saved as victim.pt)
    floor_rows: list[dict[str, Any]] = field(default_factory=list)  # the no-information floors, scored alike
    bounds: list[dict[str, Any]] = field(default_factory=list)  # the Fisher-information bound per noise point
    units: dict[str, list[str]] = field(default_factory=dict)  # the run folder's units: reused, computed
    points: list[dict[str, Any]] = field(default_factory=list)  # a frontier's: its curves, each from the undefended

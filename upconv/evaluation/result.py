"""What an evaluation produces: the metric names, the rows and the settings, shared by the run and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

METRICS = ("mse", "psnr", "ssim", "lpips", "db_error", "feature_error", "class_agreement", "recon_accuracy")
FLOOR_LAYER = "—"  # the floors reconstruct the same image from every layer


@dataclass
class EvalResult:
    """Rows (one per method × layer, layers in network order) plus what is needed to report them."""

    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str]
    originals: Tensor  # (N_grid, C, H, W), sampled across classes (``GridPicks``)
    grid: dict[tuple[str, str], Tensor] = field(default_factory=dict)  # (method, layer) -> (N_grid, C, H, W)
    out: str | None = None
    floor_rows: list[dict[str, Any]] = field(default_factory=list)  # one per no-information floor
    own_floor_rows: list[dict[str, Any]] = field(default_factory=list)  # per method × layer × kind of its own floor

"""``upconv privacy``, ``privacy-frontier`` and ``privacy-budget``: jsonargparse builds the options from their
config dataclasses (``PrivacyConfig`` and its two extensions); these run the parsed configuration and print
where the report is (and, on stderr, how many finished units of an earlier run they reused)."""

from __future__ import annotations

import os
import sys
from typing import Any

from upconv.privacy.budget import BudgetConfig, budget_from_config
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.frontier import FrontierConfig, frontier_from_config
from upconv.privacy.resume import resumed_line
from upconv.privacy.run import run_from_config


def _done(out: str | None, units: dict[str, Any]) -> None:
    line = resumed_line(units, out)
    if line:
        print(line, file=sys.stderr)
    if out is not None:
        print(os.path.join(out, "report.md"))


def privacy(config: PrivacyConfig) -> None:
    """Run ``upconv privacy`` and print the report's path (nothing is written with ``--out null``)."""
    result = run_from_config(config)
    _done(result.out, result.units)


def frontier(config: FrontierConfig) -> None:
    """Run ``upconv privacy-frontier`` and print the report's path."""
    result, _ = frontier_from_config(config)
    _done(result.out, result.units)


def budget(config: BudgetConfig) -> None:
    """Run ``upconv privacy-budget`` and print the report's path."""
    result = budget_from_config(config)
    _done(result.get("out"), result.get("units", {}))

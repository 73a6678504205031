"""``upconv privacy``, ``privacy-frontier`` and ``privacy-budget``: jsonargparse builds the options from their
config dataclasses (``PrivacyConfig`` and its two extensions); these run the parsed configuration and print
where the report is."""

from __future__ import annotations

import os

from upconv.privacy.budget import BudgetConfig, budget_from_config
from upconv.privacy.config import PrivacyConfig
from upconv.privacy.frontier import FrontierConfig, frontier_from_config
from upconv.privacy.run import run_from_config


def privacy(config: PrivacyConfig) -> None:
    """Run ``upconv privacy`` and print the report's path (nothing is written with ``--out null``)."""
    result = run_from_config(config)
    if result.out is not None:
        print(os.path.join(result.out, "report.md"))


def frontier(config: FrontierConfig) -> None:
    """Run ``upconv privacy-frontier`` and print the report's path."""
    result, _ = frontier_from_config(config)
    if result.out is not None:
        print(os.path.join(result.out, "report.md"))


def budget(config: BudgetConfig) -> None:
    """Run ``upconv privacy-budget`` and print the report's path."""
    result = budget_from_config(config)
    if result.get("out") is not None:
        print(os.path.join(result["out"], "report.md"))

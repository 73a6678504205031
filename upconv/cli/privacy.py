"""``upconv privacy``, ``privacy-frontier`` and ``privacy-budget``: jsonargparse builds the options from their
config dataclasses (``PrivacyConfig`` and its two extensions); these run the parsed configuration and print
where the report is (and, on stderr, how many finished units of an earlier run they reused)."""

from __future__ import annotations

import os
import sys

from upconv.privacy.budget import BudgetConfig, run_budget
from upconv.privacy.config import PrivacyConfig, from_config
from upconv.privacy.frontier import FrontierConfig, run_frontier
from upconv.privacy.result import PrivacyResult
from upconv.privacy.resume import resumed_line
from upconv.privacy.run import run_privacy


def _done(result: PrivacyResult) -> None:
    line = resumed_line(result.units, result.out)
    if line:
        print(line, file=sys.stderr)
    if result.out is not None:
        print(os.path.join(result.out, "report.md"))


def privacy(config: PrivacyConfig) -> None:
    """Run ``upconv privacy`` and print the report's path (nothing is written with ``--out null``)."""
    _done(from_config(config, run_privacy))


def frontier(config: FrontierConfig) -> None:
    """Run ``upconv privacy-frontier`` and print the report's path."""
    _done(from_config(config, run_frontier))


def budget(config: BudgetConfig) -> None:
    """Run ``upconv privacy-budget`` and print the report's path."""
    _done(from_config(config, run_budget))

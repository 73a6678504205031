"""``upconv privacy``: jsonargparse builds the options from ``upconv.privacy.config.PrivacyConfig``; this runs
the parsed configuration and prints where the report is."""

from __future__ import annotations

import os

from upconv.privacy.config import PrivacyConfig
from upconv.privacy.run import run_from_config


def privacy(config: PrivacyConfig) -> None:
    """Run ``upconv privacy`` and print the report's path (nothing is written with ``--out null``)."""
    result = run_from_config(config)
    if result.out is not None:
        print(os.path.join(result.out, "report.md"))

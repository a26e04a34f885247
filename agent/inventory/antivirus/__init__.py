"""Antivirus posture of this computer: one state and the per-product facts behind it.

The platform's sibling module does the work (``windows.py``, ``linux.py``); other
platforms get an explicit "not supported" status. ``policy.py`` holds the one-state
rule and ``docs/security-posture.md`` documents sources, states and limits.
"""

from __future__ import annotations

import logging
import sys

from agent.config import AntivirusConfig
from agent.log import event
from agent.report import AntivirusStatus

log = logging.getLogger(__name__)


def detect(config: AntivirusConfig) -> AntivirusStatus:
    """Detect antivirus products with this platform's sources and judge the one state."""
    platform: str = sys.platform  # a variable: mypy would prune the other branches
    if platform == "win32":
        from agent.inventory.antivirus import windows

        status = windows.detect(config)
    elif platform.startswith("linux"):
        from agent.inventory.antivirus import linux

        status = linux.detect(config)
    else:
        return AntivirusStatus(
            state="unknown",
            max_signature_age_seconds=float(config.max_signature_age),
            error=f"antivirus detection is not supported on {platform}",
        )
    event(
        log,
        logging.INFO if not status.warnings else logging.WARNING,
        "antivirus.detected",
        state=status.state,
        products=",".join(f"{p.name}={p.state}" for p in status.products) or "none",
        warnings="; ".join(status.warnings)[:500] or "none",
    )
    return status

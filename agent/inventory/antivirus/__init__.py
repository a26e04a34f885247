"""Antivirus posture of this computer: one state and the per-product facts behind it.

The platform's sibling module does the work (``windows.py``, ``linux.py``); other
platforms get an explicit "not supported" status. ``policy.py`` holds the one-state
rule and ``docs/security-posture.md`` documents sources, states and limits.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from agent.inventory.settings import AntivirusConfig
from agent.log import event
from agent.report import AntivirusStatus

if TYPE_CHECKING:
    from agent.inventory.antivirus.vendors import Platform

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
    status = _management(status, config, "windows" if platform == "win32" else "linux")
    event(
        log,
        logging.INFO if not status.warnings else logging.WARNING,
        "antivirus.detected",
        state=status.state,
        products=",".join(f"{p.name}={p.state}" for p in status.products) or "none",
        warnings="; ".join(status.warnings)[:500] or "none",
        managed=status.managed,
    )
    return status


def _management(
    status: AntivirusStatus, config: AntivirusConfig, platform: Platform
) -> AntivirusStatus:
    """Fill in central management (``management.py``); a failure leaves it unknown."""
    from agent.inventory.antivirus import management
    from agent.inventory.antivirus.command import run_command
    from agent.inventory.antivirus.vendors import list_processes, list_windows_services

    try:
        return management.annotate(
            status,
            platform,
            max_age=float(config.max_console_age),
            clamav_managed=config.clamav_managed,
            runner=run_command,
            timeout=float(config.command_timeout),
            services=list_windows_services() if platform == "windows" else [],
            processes=list_processes(),
        )
    except Exception as exc:  # psutil and the data file may fail; posture must still report
        event(log, logging.WARNING, "antivirus.management_failed", error=repr(exc)[:300])
        return status

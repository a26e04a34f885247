"""Patch currency of this computer: when updates were last installed, what is pending.

The platform's sibling module does the work (``windows.py``, ``linux.py``); other
platforms get an explicit "not supported" status. Nothing here reaches the network: on
Linux the package managers are asked from their local cache only, on Windows the update
history is read, not searched. The collector judges "patched within N days"
(docs/indicators.md, ``computers_patched``).
"""

from __future__ import annotations

import logging
import sys

from agent.inventory.settings import PatchesConfig
from agent.log import event
from agent.report import PatchStatus

log = logging.getLogger(__name__)


def detect(config: PatchesConfig) -> PatchStatus:
    """Read this computer's patch state; failures become ``error``, never exceptions."""
    platform: str = sys.platform  # a variable: mypy would prune the other branches
    if platform == "win32":
        from agent.inventory.patches import windows

        status = windows.detect(float(config.command_timeout))
    elif platform.startswith("linux"):
        from agent.inventory.patches import linux

        status = linux.detect(float(config.command_timeout))
    else:
        return PatchStatus(
            source="unsupported", error=f"patch detection is not supported on {platform}"
        )
    event(
        log,
        logging.INFO if status.error is None else logging.WARNING,
        "patches.detected",
        source=status.source,
        last_installed_at=status.last_installed_at.isoformat()
        if status.last_installed_at
        else "none",
        pending=status.pending_updates,
        pending_security=status.pending_security_updates,
        reboot_pending=status.reboot_pending,
        error=status.error or "none",
    )
    return status

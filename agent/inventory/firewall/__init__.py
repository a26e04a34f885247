"""Host firewall state: Windows Firewall profiles or the Linux filtering tools.

The platform's sibling module does the work; other platforms get an explicit
"not supported" status (see docs/security-posture.md).
"""

from __future__ import annotations

import sys

from agent.report import FirewallStatus


def detect(timeout: float) -> FirewallStatus:
    """Read this computer's firewall state; failures become ``error``, never exceptions."""
    platform: str = sys.platform  # a variable: mypy would prune the other branches
    if platform == "win32":
        from agent.inventory.firewall import windows

        return windows.detect(timeout)
    if platform.startswith("linux"):
        from agent.inventory.firewall import linux

        return linux.detect(timeout)
    return FirewallStatus(error=f"firewall detection is not supported on {platform}")

"""The one way hatang starts an external program (route, PowerShell, netsh, nft, systemctl...).

On Windows a console program started by a service or a windowless agent opens a console
window unless told not to: on an office PC that is a black window flashing every few
minutes, which officers report as a virus. ``CREATE_NO_WINDOW`` on every call prevents it,
so every subprocess goes through ``run`` (a test checks that nothing else calls
``subprocess`` directly).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Final

# winbase.h: the child gets no console window (ignored for GUI programs).
CREATE_NO_WINDOW: Final = 0x08000000


def creation_flags(platform: str = sys.platform) -> int:
    """The ``creationflags`` for a child process on ``platform`` (0 off Windows)."""
    return CREATE_NO_WINDOW if platform == "win32" else 0


def run(
    args: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``args`` (no shell, no stdin, no window) and capture its output as bytes.

    Raises what ``subprocess.run`` raises (``OSError``, ``subprocess.TimeoutExpired``);
    callers turn those into their own error results.
    """
    return subprocess.run(
        list(args),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        creationflags=creation_flags(),
        check=False,
    )

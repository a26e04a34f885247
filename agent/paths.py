"""Where the agent keeps its files, by platform: the one place these defaults live.

Linux follows the FHS and systemd's directories (``StateDirectory=hatang`` is
/var/lib/hatang, ``LogsDirectory`` /var/log/hatang, ``ConfigurationDirectory``
/etc/hatang). Windows keeps everything the service writes (spool, credential, logs,
config) under ``%ProgramData%\\hatang``, which survives reinstalling the program under
``Program Files`` and is not a user's profile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path, PurePath, PureWindowsPath


def _program_data() -> PurePath:
    return PureWindowsPath(os.environ.get("PROGRAMDATA") or r"C:\ProgramData") / "hatang"


def state_dir(platform: str = sys.platform) -> PurePath:
    """The spool and the credential."""
    return _program_data() if platform == "win32" else Path("/var/lib/hatang")


def config_dir(platform: str = sys.platform) -> PurePath:
    """``agent.yaml`` and what enrollment writes beside it."""
    return _program_data() if platform == "win32" else Path("/etc/hatang")


def log_dir(platform: str = sys.platform) -> PurePath:
    """The agent's log file when it runs as a service."""
    return _program_data() / "logs" if platform == "win32" else Path("/var/log/hatang")


def default_config(platform: str = sys.platform) -> PurePath:
    """The config file a service runs with unless told otherwise."""
    return config_dir(platform) / "agent.yaml"

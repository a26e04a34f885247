"""Files that hold secrets or reports: created owner-only, checked for loose modes.

On Windows the POSIX mode bits mean little (ACLs decide; they are out of scope here):
creating still works there and the check answers False, so nothing crashes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path


def create_private(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (an existing mode is kept)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def readable_by_others(path: str | Path) -> bool:
    """Whether group or other users may read ``path`` (always False on Windows)."""
    if sys.platform == "win32":
        return False
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRGRP | stat.S_IROTH))

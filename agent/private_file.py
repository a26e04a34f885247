"""Files only this machine's administrators may read: the agent credential, the central
configuration cache.

Written atomically (a temporary file in the same directory, flushed, then renamed over
the target), so a crash leaves either the old file or the new one, never half of one.
On POSIX the file is created 0600 (owner only: the agent's service user or root). On
Windows it is restricted to SYSTEM and Administrators with ``icacls`` before anything is
written into it (``agent.acl_windows`` has the decisions, unit-tested here).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


class PrivateFileError(OSError):
    """The file could not be written or protected; the message says which and why."""


def write_private(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner (POSIX) or administrators (Windows)."""
    target = Path(path)
    import tempfile  # only for a new credential or central config: with shutil 0.45 MiB

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)  # mode 0600
    try:
        if sys.platform == "win32":
            from agent.acl_windows import protect

            protect(tmp)
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def is_private(path: str | Path) -> bool:
    """Whether only the owner may read ``path`` (POSIX mode check; Windows: icacls)."""
    if sys.platform == "win32":
        from agent.acl_windows import is_protected

        return is_protected(str(path))
    return (os.stat(path).st_mode & 0o077) == 0

"""Keeping the daemon's resident memory at its working set (glibc Linux; elsewhere no-ops).

Two glibc behaviours inflate a long-running Python daemon's RSS without any leak:
every thread that allocates gets its own malloc arena (up to 8 per core), and memory
freed inside the heap stays resident until something asks for it back. The host role's
budget is 25 MiB (see docs/agent-footprint.md), so the daemon limits arenas to two
before its worker threads start and hands freed pages back after each check cycle.
"""

from __future__ import annotations

import gc
import sys
from typing import Any, Final

_M_ARENA_MAX: Final = -8  # mallopt parameter (malloc.h)
_MAX_ARENAS: Final = 2  # the loop's thread and the workers share one; more buys nothing here
_libc: Any = None
_loaded = False


def _glibc() -> Any:
    """The C library when it is glibc (has malloc_trim), else None; loaded once."""
    global _libc, _loaded
    if not _loaded:
        _loaded = True
        if sys.platform == "linux":
            import ctypes

            try:
                libc = ctypes.CDLL("libc.so.6")
                libc.malloc_trim  # noqa: B018 - musl and others have no malloc_trim
                libc.mallopt  # noqa: B018
            except (OSError, AttributeError):
                libc = None
            _libc = libc
    return _libc


def limit_arenas() -> None:
    """Cap glibc's malloc arenas (call before worker threads start)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, _MAX_ARENAS)


def settle() -> None:
    """After start-up: move what exists now (modules, config) out of the GC's way."""
    gc.collect()
    gc.freeze()  # later collections no longer walk the imported modules' objects


def trim() -> None:
    """Return freed heap pages to the OS (cheap: about a millisecond)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)

#!/usr/bin/env python3
"""Wait, bounded, until no other apt or dpkg holds their locks, saying who is waited for.

scripts/test.sh and scripts/env.sh run this before dpkg-query and apt-get: when another
install is running, apt-get would otherwise fail at once ("Could not get lock"), and
dpkg-query would read a status file in the middle of an install. The lock holder is
asked for with F_GETLK, which takes no lock itself. Exit 0 once every lock is free (at
once when none is held), 1 after the timeout, naming the holder.
Usage: python3 scripts/aptwait.py [--timeout SECONDS] [LOCK_FILE ...]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import struct
import sys
import time

LOCKS = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)
FLOCK = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid


def holder(path: str) -> int | None:
    """The pid holding a conflicting lock on ``path`` (-1: an open-file lock), or None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    finally:
        os.close(fd)
    lock_type, _, _, _, pid = struct.unpack(FLOCK, answer)
    return None if lock_type == fcntl.F_UNLCK else int(pid)


def describe(pid: int) -> str:
    if pid <= 0:
        return "another process"
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
            return f"pid {pid} ({comm.read().strip()})"
    except OSError:
        return f"pid {pid}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("locks", nargs="*", default=list(LOCKS))
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    said = 0.0
    while True:
        held = [(path, pid) for path in args.locks if (pid := holder(path)) is not None]
        if not held:
            return 0
        path, pid = held[0]
        now = time.monotonic()
        if now >= deadline:
            sys.stderr.write(
                f"aptwait: {path} is still held by {describe(pid)} after {args.timeout:g} s;"
                " let it finish, then run again\n"
            )
            return 1
        if now - said >= 30 or not said:
            sys.stderr.write(
                f"aptwait: waiting for {describe(pid)} to release {path}"
                f" (another apt/dpkg is running; up to {args.timeout:g} s)\n"
            )
            sys.stderr.flush()
            said = now
        time.sleep(min(0.5, max(deadline - now, 0.01)))


if __name__ == "__main__":
    sys.exit(main())

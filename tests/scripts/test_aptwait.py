"""``scripts/aptwait.py``: scripts/test.sh waits for another apt/dpkg instead of failing.

A real fcntl lock (the kind apt and dpkg take) on a temporary file, held by another
process; the real dpkg and apt locks are never touched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "aptwait.py"
HOLD = r"""
import fcntl, sys
handle = open(sys.argv[1], "w")
fcntl.lockf(handle, fcntl.LOCK_EX)  # F_SETLK, as dpkg does
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def _holder(lock: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip()


def test_free_locks_return_at_once(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(lock), str(tmp_path / "absent")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_waits_for_the_holder_and_says_so(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    holder = _holder(lock)
    waiter = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--timeout", "120", str(lock)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiter.stderr is not None
        line = waiter.stderr.readline()
        assert line == (
            f"aptwait: waiting for pid {holder.pid} ({_comm(holder.pid)}) to release {lock}"
            " (another apt/dpkg is running; up to 120 s)\n"
        )
        assert waiter.poll() is None  # still waiting while the lock is held
        holder.communicate("")  # release: the holder exits
        assert waiter.wait(timeout=60) == 0
    finally:
        holder.kill()
        waiter.kill()


def test_gives_up_after_the_timeout_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    holder = _holder(lock)
    name = _comm(holder.pid)
    try:
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--timeout", "0.2", str(lock)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.communicate("")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"aptwait: {lock} is still held by pid {holder.pid} ({name}) after 0.2 s;"
        " let it finish, then run again"
    )


def test_every_apt_get_in_the_scripts_waits_for_the_lock() -> None:
    """test.sh and env.sh: aptwait before apt-get, and apt-get's own lock timeout."""
    for name in ("test.sh", "env.sh"):
        text = (REPO / "scripts" / name).read_text(encoding="utf-8")
        code = [line.split("#")[0] for line in text.splitlines()]
        calls = [line for line in code if "apt-get" in line and "command -v" not in line]
        assert calls, name
        assert all("DPkg::Lock::Timeout=" in line for line in calls if "apt=(" in line), name
        assert all("apt-get" not in line or "apt=(" in line for line in calls), name
        first_apt = next(i for i, line in enumerate(code) if "apt=(" in line)
        assert any("aptwait.py" in line for line in code[:first_apt]), name

"""The collector under a file-descriptor limit (issue 10 weakness).

At a limit of 1,024, 2,000 idle connections filled the log with 136,000 tracebacks (each
failed accept()). Now ``serve`` raises its soft limit to the hard one at start, and accept
failures are one rate-limited line with the count. Real subprocesses with limits set in
``preexec_fn``, a bounded number of loopback connections.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.collector.conftest import REPO, free_port, write_config
from tests.netns import wait_for


def _limit(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


@contextlib.contextmanager
def collector(tmp_path: Path, soft: int, hard: int) -> Iterator[tuple[int, int, Path]]:
    """(pid, port, log file) of a collector started under the given descriptor limits."""
    port = free_port()
    log = tmp_path / "collector.log"
    config = write_config(
        tmp_path, listen={"host": "127.0.0.1", "port": port}, log={"file": str(log)}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "serve", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_limit(soft, hard),
    )
    try:
        wait_for(lambda: log.exists() and "collector.listening" in log.read_text(), timeout=60)
        yield proc.pid, port, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


def test_serve_raises_its_soft_descriptor_limit_to_the_hard_one(tmp_path: Path) -> None:
    with collector(tmp_path, 256, 4096) as (pid, _port, log):
        assert _open_files_limit(pid) == (4096, 4096)
        assert "event=collector.fd_limit soft=4096 hard=4096" in log.read_text()


def test_a_connection_flood_past_the_limit_logs_one_line_not_a_traceback_each(
    tmp_path: Path,
) -> None:
    with collector(tmp_path, 128, 128) as (_pid, port, log):
        held: list[socket.socket] = []
        try:
            for _ in range(300):  # far past 128 descriptors; loopback only
                with contextlib.suppress(OSError):
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            time.sleep(3)  # the loop retries accept() while the connections stay open
        finally:
            for sock in held:
                sock.close()

        # With the descriptors back the collector serves again.
        def healthy() -> bool:
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(json.load(resp)["status"] == "ok")
            return False

        wait_for(healthy, timeout=60, interval=0.2)
        text = log.read_text()
    assert "Traceback" not in text
    failures = [line for line in text.splitlines() if "event=http.accept_failed" in line]
    assert 1 <= len(failures) <= 2, failures
    assert "fd_limit=128" in failures[0] and 'error="Too many open files"' in failures[0]
    assert os.path.getsize(log) < 20_000

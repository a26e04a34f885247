"""``scripts/start.sh``, the README's main command, run for real on loopback ports.

Each run gets its own ``HATANG_PORT`` (a free loopback port, the next one for the demo
web server) and ``HATANG_DEMO_DIR`` (a temporary directory), so runs never collide.
"Started in the background" is simulated as a non-interactive shell does it for
``cmd &``: SIGINT (and SIGQUIT) ignored at entry.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.netns import wait_for

SCRIPT = REPO / "scripts" / "start.sh"


def _free_port() -> int:
    """A port free on 127.0.0.1 whose successor is free on 127.0.0.2 (the web server)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        try:
            with socket.socket() as web:
                web.bind(("127.0.0.2", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no free loopback port pair")


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    return {**os.environ, "HATANG_PORT": str(port), "HATANG_DEMO_DIR": str(tmp_path / "demo")}


def _parts(pid: int) -> list[int]:
    """The hatang parts the script started: its python children (not its ``sleep``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid and b"-m" in argv:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port another program listens on."""
    port = _free_port()
    with socket.create_server(("127.0.0.1", port)):
        yield port


def _run(tmp_path: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env=_env(tmp_path, port),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )


def test_taken_port_fails_with_the_hatang_port_hint(tmp_path: Path, taken: int) -> None:
    result = _run(tmp_path, taken)
    assert result.returncode == 1, result.stderr
    assert f"port {taken} is taken" in result.stderr
    assert "Try / thử: HATANG_PORT=" in result.stderr
    assert "address already in use" in result.stderr.lower()


def test_a_second_run_shows_only_its_own_log(tmp_path: Path) -> None:
    first, second = _free_port(), _free_port()
    with socket.create_server(("127.0.0.1", first)):
        assert _run(tmp_path, first).returncode == 1
    with socket.create_server(("127.0.0.1", second)):
        result = _run(tmp_path, second)
    assert result.returncode == 1
    assert f"127.0.0.1:{second}" in result.stderr
    assert f"127.0.0.1:{first}" not in result.stderr
    previous = (tmp_path / "demo" / "collector.log.1").read_text(encoding="utf-8")
    assert f"127.0.0.1:{first}" in previous  # the earlier run's log is kept aside


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_background_start_stops_on_signal_with_children_gone(
    tmp_path: Path, sig: signal.Signals
) -> None:
    port = _free_port()
    out = tmp_path / "out.txt"

    def as_background_job() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)

    with out.open("w") as stdout:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT)],
            env=_env(tmp_path, port),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            preexec_fn=as_background_job,
        )
    children: list[int] = []
    try:
        wait_for(
            lambda: "hatang is running" in out.read_text() or proc.poll() is not None,
            timeout=240,
        )
        assert proc.poll() is None, out.read_text()
        children = _parts(proc.pid)
        assert len(children) == 3, children  # collector, web server, agent
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, out.read_text()
        assert [pid for pid in children if _alive(pid)] == []
        assert "stopping / đang dừng" in out.read_text()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

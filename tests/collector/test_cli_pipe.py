"""Collector commands whose reader stops early (``token list --json | head``) exit
quietly with 141, as a program stopped by SIGPIPE, never with a BrokenPipeError traceback
(issue 10 weakness)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.collector.conftest import REPO, SITE, run_cli, write_config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with enough tokens that a listing is more than one write."""
    tmp = tmp_path_factory.mktemp("pipe")
    path = write_config(tmp)
    for _ in range(3):
        assert run_cli("token", "create", "--config", str(path), "--site", SITE).returncode == 0
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["token", "list", "--json"],
        ["token", "list"],
        ["store", "verify"],
        ["store", "verify", "--json"],
        ["token", "create", "--site", SITE],
    ],
    ids=lambda c: " ".join(c[:3]),
)
def test_a_closed_stdout_exits_141_without_traceback(config: Path, command: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", *command, "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == "", stderr

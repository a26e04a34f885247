"""The agent's log file rotates: a log that only grows fills an office PC's disk."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.log import event, setup


@pytest.mark.usefixtures("root_logging")
def test_log_file_rotates_at_max_size_and_keeps_backups(tmp_path: Path) -> None:
    config = parse_config(
        {
            "site": "bac-kan/cho-don",
            "log": {"file": str(tmp_path / "agent.log"), "max_size": "20KB", "backups": 2},
        }
    )
    setup(
        config.log.level,
        config.log.file,
        max_bytes=config.log.max_size,
        backups=config.log.backups,
    )
    log = logging.getLogger("agent.test")
    for n in range(2000):  # ~200 KB of events: ten times max_size
        event(log, logging.INFO, "report.queued", seq=n, padding="x" * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all((tmp_path / f).stat().st_size <= 20_000 for f in files)
    # The newest events are in agent.log, the ones just before in agent.log.1.
    assert "seq=1999 " in (tmp_path / "agent.log").read_text(encoding="utf-8")
    first_kept = (tmp_path / "agent.log.2").read_text(encoding="utf-8").splitlines()[0]
    assert "seq=0 " not in first_kept


def test_rotation_defaults_bound_the_disk() -> None:
    config = parse_config({"site": "bac-kan/cho-don"}).log
    assert (config.max_size, config.backups) == (10_000_000, 5)

"""The agent's log: unexpected errors reach it at ERROR with their traceback, rate-limited;
the file rotates (a log that only grows fills an office PC's disk)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.config import AgentConfig, parse_config
from agent.log import LogfmtFormatter, event, log_exception_limited, setup
from agent.sections import Section, collect


def test_a_repeating_error_is_logged_once_per_interval_with_its_repeats_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.log.limited")
    caplog.set_level(logging.ERROR, logger=logger.name)
    for n in range(3):
        try:
            raise KeyError(f"cycle {n}")
        except KeyError as exc:
            log_exception_limited(logger, "test.failed", exc, where="here")
    assert len(caplog.records) == 1
    first = caplog.records[0]
    assert first.levelno == logging.ERROR and first.exc_info is not None
    line = LogfmtFormatter().format(first)
    assert "event=test.failed" in line and "where=here" in line and "Traceback" in line
    # Another place is limited on its own.
    log_exception_limited(logger, "test.failed", KeyError("x"), where="there")
    assert len(caplog.records) == 2
    # Once the interval has passed, the next line says how many were held back.
    log_exception_limited(logger, "test.failed", KeyError("again"), interval=0, where="here")
    assert caplog.records[-1].repeats_suppressed == 2  # type: ignore[attr-defined]


async def test_a_failing_section_logs_its_traceback_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, the traceback of a crashing section went to DEBUG only: invisible."""

    async def broken(_: AgentConfig) -> None:
        raise ZeroDivisionError("a bug")

    config = parse_config({"site": "bac-kan/cho-don"})
    section = Section("host", lambda c: True, lambda c: 1.0, broken)
    with caplog.at_level(logging.ERROR):
        assert await collect(config, section) is None
        assert await collect(config, section) is None
    (record,) = [r for r in caplog.records if r.getMessage() == "section.failed"]
    assert record.exc_info is not None and record.section == "host"  # type: ignore[attr-defined]


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

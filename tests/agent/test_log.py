"""Unexpected errors reach the log at ERROR with their traceback, rate-limited."""

from __future__ import annotations

import logging

import pytest

from agent.config import AgentConfig, parse_config
from agent.log import LogfmtFormatter, log_exception_limited
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

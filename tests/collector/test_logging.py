"""Unexpected errors leave a traceback at ERROR, once per interval (issue 10 weakness).

A bug that every request hits used to write one traceback per request; the shared
``agent.log.RateLimitedLog`` (under ``log_exception_limited``) keeps one line per interval
and counts the rest in the next line's ``repeats_suppressed``.
"""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.log import RateLimitedLog
from collector.app import SERVER_KWARGS, create_app
from collector.config import CollectorConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_and_interval_and_the_next_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.ratelimit")
    clock = Clock()
    limited = RateLimitedLog(logger, interval=60.0, clock=clock)
    caplog.set_level(logging.INFO, logger="test.ratelimit")
    try:
        raise ValueError("boom")
    except ValueError as exc:
        error = exc
    assert limited.event(logging.ERROR, "thing.failed", exc=error)
    for _ in range(500):
        assert not limited.event(logging.ERROR, "thing.failed", exc=error)
    assert limited.event(logging.ERROR, "other.failed")  # another key is not held back
    clock.now += 61
    assert limited.event(logging.ERROR, "thing.failed", exc=error)
    records = [r for r in caplog.records if r.getMessage() == "thing.failed"]
    assert len(records) == 2
    assert records[0].exc_info is not None and records[0].levelno == logging.ERROR
    assert records[0].repeats_suppressed == 0  # type: ignore[attr-defined]
    assert records[1].repeats_suppressed == 500  # type: ignore[attr-defined]


def test_keys_are_bounded() -> None:
    limited = RateLimitedLog(logging.getLogger("test.ratelimit.keys"), clock=Clock())
    for i in range(RateLimitedLog.MAX_KEYS * 3):
        limited.event(logging.DEBUG, "x", key=str(i))
    assert len(limited._seen) <= RateLimitedLog.MAX_KEYS


async def test_a_bug_hit_by_every_request_logs_one_traceback(
    aiohttp_server: object,
    aiohttp_client: object,
    config: CollectorConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(config)

    async def broken(request: web.Request) -> web.Response:
        raise KeyError("a bug")

    app.router.add_get("/broken", broken, name="broken")
    server = await aiohttp_server(app, **SERVER_KWARGS)  # type: ignore[operator]
    client: TestClient[web.Request, web.Application] = await aiohttp_client(server)  # type: ignore[operator]
    caplog.set_level(logging.INFO)
    for _ in range(50):
        resp = await client.get("/broken")
        assert resp.status == 500
        assert (await resp.json())["error"] == "internal_error"
    lines = [r for r in caplog.records if r.getMessage() == "http.unhandled_error"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.ERROR and lines[0].exc_info is not None
    assert lines[0].route == "broken"  # type: ignore[attr-defined]

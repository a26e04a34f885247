"""The sender against a real HTTP receiver on 127.0.0.1 that implements the collector API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import __version__
from agent.config import AgentConfig, ConfigError, parse_config
from agent.sections import make_report
from agent.sender import (
    DEAD_LETTER_BREAKER,
    RETRY_AFTER_CAP_SECONDS,
    SERVER_ERROR_RETRIES,
    Sender,
    SendFailed,
    parse_retry_after,
)
from agent.spool import Spool
from tests.receiver import Receiver, Scripted, agent_config, free_port, make_certificates

TOKEN = "test-token"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool.open(tmp_path / "spool.db", 10**8) as s:
        yield s


def config_for(tmp_path: Path, urls: list[str], **collector: Any) -> AgentConfig:
    return parse_config(agent_config(tmp_path, urls=urls, collector=collector))


def fill(spool: Spool, config: AgentConfig, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        appended = spool.append(
            lambda seq, dropped: make_report(
                config,
                agent_id="agent-1",
                seq=seq,
                observed_at=dt.datetime.now(dt.UTC),
                results={},
                spool_dropped=dropped,
            )
        )
        ids.append(appended.report.id)
    return ids


def sender_for(config: AgentConfig, spool: Spool, token: str = TOKEN) -> Sender:
    assert config.collector is not None
    return Sender(config.collector, spool, token)


async def until(predicate: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


class Running:
    """A sender's run() loop in the background, stopped on exit."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.sender.run(self.stop, self.wake))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)


async def test_delivers_in_order_in_bounded_gzip_batches(
    tmp_path: Path, receiver: Receiver, spool: Spool
) -> None:
    """Reports arrive once, oldest first, in batches of at most batch_max_reports."""
    config = config_for(tmp_path, [receiver.url], batch_max_reports=3)
    ids = fill(spool, config, 7)
    sender = sender_for(config, spool)
    assert await sender.flush() == 7
    assert [r.id for r in receiver.stored()] == ids
    assert [r.reports for r in receiver.requests] == [3, 3, 1]
    headers = receiver.requests[0].headers
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"hatang-agent/{__version__}"
    assert spool.stats().queued == 0
    assert sender.stats.sent_reports == 7 and sender.stats.sent_batches == 3


async def test_nothing_is_deleted_without_a_2xx(
    tmp_path: Path, receiver: Receiver, spool: Spool
) -> None:
    config = config_for(tmp_path, [receiver.url])
    fill(spool, config, 4)
    receiver.script.append(Scripted(503, {"error": "store_unavailable", "message": "db down"}))
    sender = sender_for(config, spool)
    with pytest.raises(SendFailed, match="HTTP 503"):
        await sender.flush()
    assert spool.stats().queued == 4
    assert sender.stats.last_error == "HTTP 503 error=store_unavailable message=db down"
    assert await sender.flush() == 4
    assert receiver.count() == 4


@pytest.mark.parametrize("status", [503, 429])
async def test_retry_after_is_honoured(
    tmp_path: Path, receiver: Receiver, spool: Spool, status: int
) -> None:
    """The next attempt waits at least Retry-After, though the backoff alone is ~50 ms."""
    config = config_for(tmp_path, [receiver.url], retry_initial="50ms", retry_max="100ms")
    fill(spool, config, 2)
    receiver.script.append(Scripted(status, {"error": "overloaded"}, {"Retry-After": "1"}))
    async with Running(sender_for(config, spool)):
        await until(lambda: receiver.count() == 2)
    first, second = receiver.requests[0], receiver.requests[1]
    assert (first.status, second.status) == (status, 200)
    assert second.at - first.at >= 0.95


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now) or 0) <= 31
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now) == 0
    assert parse_retry_after("99999999") == RETRY_AFTER_CAP_SECONDS


async def test_poisoned_report_is_dead_lettered_and_the_rest_delivered(
    tmp_path: Path, receiver: Receiver, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_for(tmp_path, [receiver.url], batch_max_reports=10)
    ids = fill(spool, config, 10)
    receiver.poison.add(ids[4])
    sender = sender_for(config, spool)
    with caplog.at_level(logging.INFO):
        assert await sender.flush() == 9
    assert [r.id for r in receiver.stored()] == ids[:4] + ids[5:]
    dead = spool.dead_letters()
    assert [(d.report_id, d.status) for d in dead] == [(ids[4], 422)]
    assert "refused" in dead[0].reason
    assert spool.stats().queued == 0
    records = [r for r in caplog.records if r.getMessage() == "report.dead_lettered"]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    assert records[0].report_id == ids[4]  # type: ignore[attr-defined]


async def test_too_large_batch_is_split_and_too_large_report_dead_lettered(
    tmp_path: Path, spool: Spool
) -> None:
    """413 halves a batch until the parts fit; one report alone too large is dead-lettered."""
    config = config_for(tmp_path, ["http://127.0.0.1:1"])
    ids = fill(spool, config, 8)
    one = len(spool.begin_batch(1, 10**9)[0].body)
    with Receiver(max_body=3 * one) as receiver:
        cfg = config_for(tmp_path, [receiver.url], batch_max_reports=8)
        assert await sender_for(cfg, spool).flush() == 8
        assert [r.id for r in receiver.stored()] == ids
        assert 413 in receiver.statuses()
        assert spool.dead_letters() == []
    with Receiver(max_body=one // 2) as receiver:
        cfg = config_for(tmp_path, [receiver.url])
        big = fill(spool, cfg, 1)
        assert await sender_for(cfg, spool).flush() == 0
        assert [(d.report_id, d.status) for d in spool.dead_letters()] == [(big[0], 413)]


async def test_collector_refusing_everything_trips_the_breaker(
    tmp_path: Path, receiver: Receiver, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    """A collector that refuses every report does not empty the queue into dead letters."""
    config = config_for(tmp_path, [receiver.url], batch_max_reports=4)
    ids = fill(spool, config, DEAD_LETTER_BREAKER + 6)
    receiver.poison.update(ids)
    sender = sender_for(config, spool)
    with caplog.at_level(logging.ERROR), pytest.raises(SendFailed, match="every report"):
        await sender.flush()
    assert len(spool.dead_letters()) == DEAD_LETTER_BREAKER
    assert spool.stats().queued == 6
    assert any(r.getMessage() == "send.rejecting_everything" for r in caplog.records)
    receiver.poison.clear()
    assert await sender.flush() == 6


@pytest.mark.parametrize(
    ("token", "revoked", "status"),
    [("wrong-token", False, 401), (TOKEN, True, 403)],
    ids=["unknown-token", "revoked-token"],
)
async def test_refused_token_keeps_everything_queued(
    tmp_path: Path,
    receiver: Receiver,
    spool: Spool,
    caplog: pytest.LogCaptureFixture,
    token: str,
    revoked: bool,
    status: int,
) -> None:
    config = config_for(tmp_path, [receiver.url])
    fill(spool, config, 3)
    if revoked:
        receiver.revoked.add(TOKEN)
    sender = sender_for(config, spool, token)
    with caplog.at_level(logging.DEBUG):
        async with Running(sender):
            await until(lambda: sender.stats.consecutive_failures >= 3)
    assert set(receiver.statuses()) == {status}
    assert spool.stats().queued == 3 and receiver.count() == 0
    assert sender.stats.consecutive_failures >= 3
    refused = [r for r in caplog.records if r.getMessage() == "send.auth_refused"]
    assert refused and all(r.levelno == logging.ERROR for r in refused)
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert token not in logged


async def test_first_url_down_second_used(
    tmp_path: Path, receiver: Receiver, spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = config_for(tmp_path, [dead, receiver.url], batch_max_reports=2)
    ids = fill(spool, config, 5)
    sender = sender_for(config, spool)
    with caplog.at_level(logging.WARNING):
        assert await sender.flush() == 5
    assert [r.id for r in receiver.stored()] == ids
    assert sender.stats.last_url == receiver.url
    unreachable = [r for r in caplog.records if r.getMessage() == "send.unreachable"]
    # Tried once per attempt, then the rest of the drain stays on the URL that answered.
    assert len(unreachable) == 1
    assert unreachable[0].reason == "refused"  # type: ignore[attr-defined]


async def test_reports_wait_for_the_collector_then_arrive_once_in_order(
    tmp_path: Path, spool: Spool
) -> None:
    port = free_port()
    config = config_for(tmp_path, [f"http://127.0.0.1:{port}"], batch_max_reports=3)
    ids = fill(spool, config, 8)
    sender = sender_for(config, spool)
    async with Running(sender) as running:
        await until(lambda: sender.stats.failed_attempts >= 2)
        with Receiver(port=port) as receiver:
            await until(lambda: receiver.count() == 8)
            running.wake.set()
            await until(lambda: spool.stats().queued == 0)
            assert [r.id for r in receiver.stored()] == ids
            assert receiver.duplicates == 0


async def test_shutdown_abandons_an_in_flight_request_safely(
    tmp_path: Path, receiver: Receiver, spool: Spool
) -> None:
    """Stop during a request whose answer never comes: returns quickly, nothing deleted."""
    config = config_for(tmp_path, [receiver.url], timeout="60s")
    fill(spool, config, 3)
    receiver.release.clear()
    running = Running(sender_for(config, spool))
    await running.__aenter__()
    await until(lambda: receiver.held == 1)
    started = time.monotonic()
    await running.__aexit__()
    assert time.monotonic() - started < 10
    assert spool.stats().queued == 3
    assert receiver.count() == 3  # stored by the collector, so a resend is a duplicate
    receiver.release.set()


async def test_spool_failure_does_not_kill_the_sender(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool error (disk full, closed) is logged and retried; the loop stays alive."""
    spool = Spool.open(tmp_path / "broken.db", 10**6)
    config = config_for(tmp_path, [receiver.url])
    sender = sender_for(config, spool)
    spool.close()
    with caplog.at_level(logging.ERROR):
        async with Running(sender) as running:
            await until(lambda: sender.stats.failed_attempts >= 2)
            assert running.task is not None and not running.task.done()
    errors = [r for r in caplog.records if r.getMessage() == "send.spool_error"]
    assert errors and "is closed" in errors[0].error  # type: ignore[attr-defined]


needs_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command makes the test certificates"
)


def tls_receiver(tmp_path: Path) -> tuple[Receiver, Path]:
    ca, cert, key = make_certificates(tmp_path / "tls")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return Receiver(ssl_context=context), ca


@needs_openssl
async def test_https_verified_with_ca_file(tmp_path: Path, spool: Spool) -> None:
    receiver, ca = tls_receiver(tmp_path)
    with receiver:
        config = config_for(tmp_path, [receiver.url], ca_file=str(ca))
        fill(spool, config, 2)
        assert await sender_for(config, spool).flush() == 2


@needs_openssl
async def test_https_unknown_ca_is_refused_and_reports_kept(tmp_path: Path, spool: Spool) -> None:
    receiver, _ = tls_receiver(tmp_path)
    with receiver:
        config = config_for(tmp_path, [receiver.url])
        fill(spool, config, 2)
        sender = sender_for(config, spool)
        with pytest.raises(SendFailed, match="tls_error"):
            await sender.flush()
        assert spool.stats().queued == 2 and receiver.count() == 0
        insecure = config_for(tmp_path, [receiver.url], verify_tls=False)
        assert await sender_for(insecure, spool).flush() == 2


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path, spool: Spool) -> None:
    config = config_for(tmp_path, ["https://127.0.0.1:1"], ca_file=str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError) as err:
        sender_for(config, spool)
    assert err.value.path == "collector.ca_file"
    assert "cannot load" in err.value.message


def test_token_with_line_break_is_a_config_error(tmp_path: Path, spool: Spool) -> None:
    config = config_for(tmp_path, ["http://127.0.0.1:1"])
    with pytest.raises(ConfigError, match="printable ASCII"):
        sender_for(config, spool, "abc\r\nX-Evil: 1")


async def test_a_report_the_collector_always_fails_on_is_isolated_and_the_rest_delivered(
    tmp_path: Path, receiver: Receiver, spool: Spool
) -> None:
    """A collector bug that one report triggers (500 every time) must not wedge the
    queue: after bounded retries the culprit is found, dead-lettered with its status and
    counted, and every other report is delivered in order."""
    config = config_for(tmp_path, [receiver.url], batch_max_reports=10)
    ids = fill(spool, config, 10)
    receiver.crash.add(ids[3])
    sender = sender_for(config, spool)
    async with Running(sender):
        await until(lambda: receiver.count() == 9)
    assert [r.id for r in receiver.stored()] == ids[:3] + ids[4:]
    assert receiver.statuses()[:SERVER_ERROR_RETRIES] == [500] * SERVER_ERROR_RETRIES
    (dead,) = spool.dead_letters()
    assert (dead.report_id, dead.status) == (ids[3], 500)
    assert "other reports were stored meanwhile" in dead.reason
    assert spool.stats().queued == 0 and spool.stats().rejected_total == 1
    # The count reaches the collector with the next report.
    (later,) = fill(spool, config, 1)
    assert await sender.flush() == 1
    assert receiver.stored()[-1].id == later and receiver.stored()[-1].spool_rejected == 1


async def test_a_lone_failing_report_waits_for_proof_before_it_is_dead_lettered(
    tmp_path: Path, receiver: Receiver, spool: Spool
) -> None:
    """With nothing else queued there is no telling a bad report from a bad collector:
    it stays queued until a later report is stored."""
    config = config_for(tmp_path, [receiver.url])
    (bad,) = fill(spool, config, 1)
    receiver.crash.add(bad)
    sender = sender_for(config, spool)
    for _ in range(SERVER_ERROR_RETRIES + 2):
        with pytest.raises(SendFailed, match="HTTP 500"):
            await sender.flush()
    assert spool.stats().queued == 1 and spool.dead_letters() == []
    (good,) = fill(spool, config, 1)
    assert await sender.flush() == 1
    assert [r.id for r in receiver.stored()] == [good]
    assert [d.report_id for d in spool.dead_letters()] == [bad]


@pytest.mark.parametrize(
    "failure",
    ["500-for-everything", "503-store-down", "429-overloaded", "connection-refused"],
)
async def test_a_collector_that_is_down_gets_nothing_dead_lettered(
    tmp_path: Path, receiver: Receiver, spool: Spool, failure: str
) -> None:
    """Whole-collector failures are never blamed on reports: all stay queued."""
    url = receiver.url if failure != "connection-refused" else f"http://127.0.0.1:{free_port()}"
    config = config_for(tmp_path, [url], batch_max_reports=10)
    fill(spool, config, 10)
    if failure == "500-for-everything":
        receiver.crash_all = True
    elif failure != "connection-refused":
        status = int(failure[:3])
        for _ in range(100):
            receiver.script.append(Scripted(status, {"error": "unavailable"}))
    sender = sender_for(config, spool)
    for _ in range(SERVER_ERROR_RETRIES * 3):
        with pytest.raises(SendFailed):
            await sender.flush()
    assert spool.stats().queued == 10
    assert spool.dead_letters() == [] and spool.stats().rejected_total == 0
    assert receiver.count() == 0


@pytest.fixture
def dribbling_server() -> Iterator[int]:
    """A loopback "collector" that answers one byte at a time, each within the socket
    timeout, for ever: a hostile or broken proxy no per-step timeout ever trips."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                with contextlib.suppress(OSError):
                    while not done.wait(0.05):
                        conn.sendall(b"a")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        server.close()
        thread.join(5)


async def test_an_answer_that_never_completes_is_abandoned_and_reports_kept(
    tmp_path: Path, spool: Spool, dribbling_server: int
) -> None:
    config = config_for(tmp_path, [f"http://127.0.0.1:{dribbling_server}"], timeout="300ms")
    fill(spool, config, 2)
    sender = sender_for(config, spool)
    with pytest.raises(SendFailed, match=r"no complete answer in 0\.9s \(request abandoned\)"):
        await sender.flush()
    assert spool.stats().queued == 2
    sender.close()

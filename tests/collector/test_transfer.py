"""The request as bytes on the wire (issue 10 weaknesses): transfer codings the collector
does not implement get 501 (RFC 9112 section 6.1), and a client that hangs up mid-body is
a client error, counted as ``disconnected``, never a 500 with a traceback.

Raw loopback sockets against the real app: no HTTP client library would send these.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
import urllib.request
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agent.report import Batch, encode
from tests.collector.conftest import (
    SITE,
    CollectorProcess,
    agent_report,
    new_token,
    run_cli,
    store_of,
)
from tests.collector.test_api import metric_value
from tests.collector.test_hostile import raw_exchange, status_of
from tests.netns import wait_for

Client = TestClient[web.Request, web.Application]


def exchange(port: int, head: str, body: bytes) -> bytes:
    """Send one request (the server closes after answering); return the answer."""
    return raw_exchange(port, head.encode() + b"Connection: close\r\n\r\n" + body, timeout=10)


def hang_up(port: int, head: str, body: bytes) -> None:
    """Send the headers and part of a body, let the server start reading it, and vanish."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        time.sleep(0.2)


def head(token: str, *lines: str) -> str:
    return (
        "POST /api/v1/reports HTTP/1.1\r\nHost: collector\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        + "".join(f"{line}\r\n" for line in lines)
    )


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "codings",
    [
        ["gzip, chunked"],
        ["identity, chunked"],
        ["x-custom, chunked"],
    ],
)
async def test_transfer_codings_other_than_chunked_are_501(
    client: Client, codings: list[str]
) -> None:
    token = await new_token(client)
    store = store_of(client)
    before = await store.digest()
    assert client.port is not None
    body = chunked(encode(Batch(reports=[agent_report()])))
    lines = [f"Transfer-Encoding: {c}" for c in codings]
    answer = await asyncio.to_thread(exchange, client.port, head(token, *lines), body)
    assert status_of(answer) == 501, answer[:300]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert error["error"] == "unsupported_transfer_encoding"
    assert " / " in error["message"]
    assert b"Connection: close" in answer
    assert await store.digest() == before
    assert await metric_value(client, "hatang_reports_rejected_total", reason="not_implemented")


@pytest.mark.parametrize(
    "lines",
    [
        ["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],  # smuggling shape
        ["Transfer-Encoding: chunked, gzip"],  # chunked not last: length unknown
        ["Transfer-Encoding: gzip"],
    ],
)
async def test_transfer_codings_the_parser_cannot_frame_are_400(
    client: Client, lines: list[str]
) -> None:
    """RFC 9112 section 6.3: without chunked last the body length is unknown: 400, closed."""
    token = await new_token(client)
    assert client.port is not None
    body = chunked(encode(Batch(reports=[agent_report()])))
    answer = await asyncio.to_thread(exchange, client.port, head(token, *lines), body)
    assert status_of(answer) == 400, answer[:300]
    assert await store_of(client).report_count() == 0


async def test_plain_chunked_is_accepted(client: Client) -> None:
    token = await new_token(client)
    assert client.port is not None
    body = chunked(encode(Batch(reports=[agent_report()])))
    answer = await asyncio.to_thread(
        exchange, client.port, head(token, "Transfer-Encoding: Chunked"), body
    )
    assert status_of(answer) == 200, answer[:300]


def _metric(url: str, name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_a_client_that_hangs_up_mid_body_is_a_client_error_without_traceback(
    collector_process: Callable[..., CollectorProcess],
) -> None:
    """The real ``serve`` (test servers cancel the handler instead, which hides this)."""
    proc = collector_process()
    created = run_cli("token", "create", "--config", str(proc.config_path), "--site", SITE)
    token = created.stdout.splitlines()[-1]
    data = encode(Batch(reports=[agent_report()]))
    requests = [
        (head(token, f"Content-Length: {len(data)}"), data[: len(data) // 2]),
        (head(token, "Transfer-Encoding: chunked"), f"{len(data):x}\r\n".encode() + data[:50]),
    ]
    for request in requests:
        hang_up(proc.port, *request)
    wait_for(
        lambda: _metric(proc.url, "hatang_reports_rejected_total", reason="disconnected") == 2,
        timeout=30,
    )
    assert _metric(proc.url, "hatang_http_requests_total", handler="reports", code="499") == 2
    assert not _metric(proc.url, "hatang_http_requests_total", handler="reports", code="500")
    log = proc.log.read_text()
    assert "Traceback" not in log and "level=error" not in log, log
    assert log.count("reason=disconnected") == 2


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        (["Content-Encoding: identity", "Content-Encoding: gzip"], 200),  # both headers count
        (["Content-Encoding: gzip, identity"], 200),
        (["Content-Encoding: gzip, gzip"], 415),  # twice compressed is not supported
        (["Content-Encoding: gzip", "Content-Encoding: br"], 415),
        (["Content-Encoding: identity, br"], 415),
    ],
)
async def test_every_content_coding_is_read(client: Client, lines: list[str], status: int) -> None:
    token = await new_token(client)
    assert client.port is not None
    body = gzip.compress(encode(Batch(reports=[agent_report()])))
    answer = await asyncio.to_thread(
        exchange, client.port, head(token, f"Content-Length: {len(body)}", *lines), body
    )
    assert status_of(answer) == status, answer[:400]
    if status == 415:
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "unsupported_media_type"

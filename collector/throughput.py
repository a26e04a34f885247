"""GET /api/v1/throughput?bytes=N: the bounded payload agents download to measure speed.

A province needs no extra server for the broadband test: the collector streams N bytes
(at most ``throughput.max_bytes``) from one fixed 64 KiB block, so memory stays flat
whatever N is. The block is random once per process, so a compressing middlebox cannot
make a slow line look fast.

The route needs an agent token. Open, it would be a bandwidth amplifier: a one-line
request makes the province's own uplink send megabytes, to anyone. With the token, each
test is one known site's, and the limits below are per site: one stream at a time (a
second test of the site gets 429, which the agent reports as "skipped", not as a slow
line), at most ``per_site_per_hour`` starts per hour, and ``max_concurrent`` streams
province-wide (429 with Retry-After beyond).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from collector import api
from collector.config import ThroughputConfig

BLOCK: Final = os.urandom(64 * 1024)
RETRY_AFTER_BUSY: Final = "60"


@dataclass
class ThroughputState:
    """Streams running now and recent starts per site (in memory: limits, not records)."""

    running: set[str] = field(default_factory=set)
    starts: dict[str, deque[float]] = field(default_factory=dict)


STATE: Final = web.AppKey("throughput_state", ThroughputState)


def _busy(english: str, vietnamese: str, retry_after: str) -> api.Rejection:
    return api.Rejection(
        429,
        "busy",
        english,
        vietnamese,
        reason="overloaded",
        headers={"Retry-After": retry_after},
    )


def _requested_bytes(request: web.Request, limit: int) -> int:
    text = request.query.get("bytes", "")
    if not text.isdigit() or len(text) > 12 or not 1 <= int(text) <= limit:
        raise api.Rejection(
            400,
            "invalid_bytes",
            f"query parameter bytes must be a whole number from 1 to {limit}, got {text[:20]!r}",
            f"Tham số bytes phải là số nguyên từ 1 đến {limit}, nhận được {text[:20]!r}",
            reason="invalid",
            field="bytes",
        )
    return int(text)


def _admit(state: ThroughputState, config: ThroughputConfig, site: str, now: float) -> None:
    """Raise 429 when the site or the province already uses its share of the uplink."""
    if site in state.running:
        raise _busy(
            f"another throughput test of site {site!r} is running",
            f"Một phép đo tốc độ khác của đơn vị {site!r} đang chạy",
            RETRY_AFTER_BUSY,
        )
    if len(state.running) >= config.max_concurrent:
        raise _busy(
            f"{config.max_concurrent} throughput tests are running; try later",
            f"Đang có {config.max_concurrent} phép đo tốc độ; hãy thử lại sau",
            RETRY_AFTER_BUSY,
        )
    starts = state.starts.setdefault(site, deque())
    while starts and starts[0] <= now - 3600:
        starts.popleft()
    if len(starts) >= config.per_site_per_hour:
        retry = max(1, int(starts[0] + 3600 - now) + 1)
        raise _busy(
            f"site {site!r} started {len(starts)} throughput tests in the last hour "
            f"(limit {config.per_site_per_hour})",
            f"Đơn vị {site!r} đã đo tốc độ {len(starts)} lần trong một giờ qua "
            f"(giới hạn {config.per_site_per_hour})",
            str(retry),
        )
    starts.append(now)


async def get_throughput(request: web.Request) -> web.StreamResponse:
    """Stream ``bytes`` bytes of payload to an authenticated agent."""
    config = request.app[api.CONFIG].throughput
    if not config.enabled:
        raise web.HTTPNotFound()
    site = await api._authenticate(request)
    size = _requested_bytes(request, int(config.max_bytes))
    state = request.app[STATE]
    _admit(state, config, site, time.monotonic())
    state.running.add(site)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
                "Cache-Control": "no-store",
                "Content-Encoding": "identity",
            }
        )
        await response.prepare(request)
        try:
            async with asyncio.timeout(config.stream_timeout):
                left = size
                view = memoryview(BLOCK)
                while left > 0:
                    chunk = view[: min(left, len(BLOCK))]
                    await response.write(chunk)  # waits while the agent's line drains it
                    left -= len(chunk)
                await response.write_eof()
        except TimeoutError:
            # The client stopped reading: drop the connection (the length tells it so).
            if request.transport is not None:
                request.transport.close()
        return response
    finally:
        state.running.discard(site)

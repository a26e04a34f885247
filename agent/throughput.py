"""The throughput check: a bounded download that measures the site's line speed.

Not a probe kind (the four kinds are a contract): a sparse section of its own, run on
the site probe every ``throughput.interval`` (6 h by default). Each target is read with
the HTTP probe's standard-library client (the host role must not import aiohttp) up to
``max_bytes`` or ``max_duration``, whichever comes first; either cap ends a good
measurement. A link that is cut gives a failure reason (refused, unreachable, timeout
when no byte came for ``stall_timeout``), never a zero rate. Targets run one after the
other so two downloads never share the line. The agent's collector token is sent only
to a URL on one of the configured collector addresses, never to a third party.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import urlsplit

from agent.config import AgentConfig, ConfigError, ThroughputConfig, ThroughputTarget
from agent.probes import http
from agent.probes.base import Deadline
from agent.report import ThroughputResult, utcnow

if TYPE_CHECKING:
    import http.client as httpclient

_CHUNK: Final = 64 * 1024
# The collector answers 429 while another test of the same site is streaming.
BUSY_STATUS: Final = 429
EndedBy = Literal["complete", "max_bytes", "max_duration"]


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def token_for(config: AgentConfig, target: ThroughputTarget) -> str | None:
    """The collector token when ``target`` is served by one of the collector's addresses."""
    collector = config.collector
    if collector is None or _origin(target.url) not in {_origin(u) for u in collector.urls}:
        return None
    try:
        return collector.read_token()
    except ConfigError:
        return None  # the request goes without; the collector's 401 says what is wrong


class _Download(http._Exchange):
    """One bounded download; a cap ends it as a measurement, a stall as a failure."""

    def __init__(self, options: http.Options, stall_timeout: float, token: str | None) -> None:
        super().__init__(options)
        self.stall_timeout = stall_timeout
        self.token = token
        self.ended_by: EndedBy = "complete"
        self.total = 0  # body bytes so far: the data used, even when the link is cut
        self.stalled = False

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _read_body(
        self,
        conn: httpclient.HTTPConnection,
        response: httpclient.HTTPResponse,
        deadline: Deadline,
    ) -> int:
        limit = self.options.max_bytes
        while self.total < limit:
            if deadline.expired():
                self.ended_by = "max_duration"
                break
            if conn.sock is not None:
                conn.sock.settimeout(min(self.stall_timeout, deadline.remaining()) or 0.001)
            try:
                chunk = response.read1(min(_CHUNK, limit - self.total))
            except TimeoutError:
                if deadline.expired():
                    self.ended_by = "max_duration"
                    break
                self.stalled = True
                raise
            if not chunk:
                return self.total
            self.total += len(chunk)
        else:
            self.ended_by = "max_bytes"
        return self.total


def _options(target: ThroughputTarget, settings: ThroughputConfig) -> http.Options:
    return http.Options(
        address=target.url,
        name=target.name,
        timeout=settings.max_duration,
        verify_tls=target.verify_tls,
        ca_file=target.ca_file,
        throughput=True,
        max_bytes=settings.max_bytes,
    )


def measure_one(
    target: ThroughputTarget, settings: ThroughputConfig, token: str | None = None
) -> ThroughputResult:
    """Download from one target (blocking; run it in a thread)."""
    observed_at = utcnow()
    download = _Download(_options(target, settings), settings.stall_timeout, token)
    started = time.monotonic()
    probe = download.run()
    duration = time.monotonic() - started
    result = ThroughputResult(
        network=target.network,
        target=target.label,
        up=False,
        observed_at=observed_at,
        duration_seconds=round(duration, 3),
        bytes_read=download.total,
    )
    if probe.status_code == BUSY_STATUS:
        result.skipped = True
        result.detail = "another throughput test of this site is running; skipped"
        return result
    if not probe.up:
        result.error, result.detail = probe.error, probe.detail
        if download.stalled:
            result.detail = (
                f"{target.url}: no data for {settings.stall_timeout:g}s "
                f"after {download.total} bytes (link cut or stalled)"
            )
        return result
    rate = probe.throughput_bytes_per_second
    if not probe.bytes_read or rate is None:
        result.error = "protocol_error"
        result.detail = f"{target.url}: the answer had no body to measure"
        return result
    result.up = True
    result.bytes_per_second = round(rate, 1)
    result.ended_by = download.ended_by
    return result


async def measure(config: AgentConfig) -> list[ThroughputResult]:
    """Run every throughput target once, one after the other (they share the line)."""
    settings = config.throughput
    results: list[ThroughputResult] = []
    for target in settings.targets:
        token = token_for(config, target)
        results.append(await asyncio.to_thread(measure_one, target, settings, token))
    return results


def monthly_cost_text(settings: ThroughputConfig) -> str:
    """The data the throughput tests may use in a month, in Vietnamese and English."""
    megabytes = settings.bytes_per_month() / 1_000_000
    shown = f"{megabytes:,.0f}" if megabytes >= 10 else f"{megabytes:.1f}"
    return f"≈ {shown} MB/tháng / per month"

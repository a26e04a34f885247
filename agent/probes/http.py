"""HTTP(S) request: status, time to first byte, certificate expiry, optional throughput.

Uses the standard library's client in a worker thread so that the host role does not
import aiohttp (its memory budget is tight). The thread comes from the probes' own HTTP
lane (``agent.probes.blocking``), never asyncio's shared executor, so hung web sites
cannot starve other checks; the name is looked up first in the resolve lane, so the
thread never blocks in a resolver where nothing can interrupt it. Every socket
operation gets the time left before the target's deadline as its timeout, so the thread
ends with the check; when the runner cancels the check first, the socket is shut down
under the thread. A check whose previous request has still not returned reports that
(``timeout``) instead of starting a second thread for the same target.
Redirects are not followed: a 3xx is an answer, and by default a good one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from agent import __version__
from agent.probes.base import (
    Deadline,
    ProbeFailed,
    TargetOptions,
    check_host,
    check_timeout,
    describe,
    failure,
    reason_for,
    resolve,
    with_family,
)
from agent.probes.blocking import HTTP, StillRunning
from agent.report import ProbeResult
from agent.units import Size

if TYPE_CHECKING:
    import http.client

_CHUNK = 64 * 1024


class Options(TargetOptions, frozen=True, tag="http"):
    method: Literal["GET", "HEAD"] = "GET"
    valid_status_codes: Annotated[
        list[Annotated[int, msgspec.Meta(ge=100, le=599)]], msgspec.Meta(max_length=32)
    ] = []  # empty: 2xx and 3xx
    verify_tls: bool = True
    ca_file: str | None = None  # trust this CA bundle instead of the system's
    throughput: bool = False  # read the body (up to max_bytes) and report bytes/s
    max_bytes: Size = Size(1_000_000)

    def __post_init__(self) -> None:
        parts = urlsplit(self.address)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"address: invalid URL {self.address!r}: scheme must be http or https")
        if not parts.hostname:
            raise ValueError(f"address: invalid URL {self.address!r}: host missing")
        if parts.username is not None or parts.password is not None:
            raise ValueError("address: credentials in the URL are not supported")
        try:
            parts.port  # noqa: B018 - urlsplit validates the port lazily
        except ValueError:
            raise ValueError(
                f"address: invalid URL {self.address!r}: port must be 1-65535"
            ) from None
        check_host(parts.hostname)
        check_timeout(self.timeout)
        if self.ca_file is not None and parts.scheme != "https":
            raise ValueError("ca_file: only for https:// addresses")
        if self.max_bytes < 1:
            raise ValueError("max_bytes: must be at least 1 byte")

    @property
    def expected(self) -> str:
        """The accepted status codes as people read them."""
        return ", ".join(map(str, self.valid_status_codes)) or "2xx/3xx"

    def status_ok(self, status: int) -> bool:
        """Whether ``status`` counts as the target being up."""
        if self.valid_status_codes:
            return status in self.valid_status_codes
        return 200 <= status < 400


def tls_context(options: Options) -> ssl.SSLContext:
    """The TLS client context: verification on unless the target turns it off."""
    if not options.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=options.ca_file)


class _Exchange:
    """One request, run in a worker thread; ``abort`` may be called from the loop."""

    def __init__(self, options: Options, ip: str | None = None) -> None:
        self.options = options
        self.ip = ip  # the resolved address to connect to; the URL's host stays for TLS
        self.conn: http.client.HTTPConnection | None = None
        self.aborted = threading.Event()

    def headers(self) -> dict[str, str]:
        """Request headers; the throughput check adds the collector's token."""
        return {"User-Agent": f"hatang-agent/{__version__}", "Accept": "*/*"}

    def abort(self) -> None:
        """Unblock the worker thread after the runner gave up on it."""
        self.aborted.set()
        conn = self.conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> ProbeResult:
        """Perform the request and measure it (blocking)."""
        # Here, not at module level: http.client brings the email package (~1.6 MiB),
        # which an agent without http targets (and without a send yet) never needs.
        import http.client

        options = self.options
        parts = urlsplit(options.address)
        host = parts.hostname or ""
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = Deadline(options.timeout)
        stage = "connect"
        conn: http.client.HTTPConnection | None = None
        try:
            if parts.scheme == "https":
                try:
                    context = tls_context(options)
                except (OSError, ssl.SSLError) as exc:
                    return failure(
                        options, "tls_error", f"ca_file {options.ca_file}: {describe(exc)}"
                    )
                conn = http.client.HTTPSConnection(
                    host, parts.port, timeout=deadline.remaining(), context=context
                )
            else:
                conn = http.client.HTTPConnection(host, parts.port, timeout=deadline.remaining())
            if self.ip is not None:
                ip = self.ip
                # Connect to the address already resolved; SNI, certificate name and Host
                # header still use the URL's host.
                conn._create_connection = lambda address, *args: socket.create_connection(  # type: ignore[attr-defined]
                    (ip, address[1]), *args
                )
            self.conn = conn
            if self.aborted.is_set():
                return failure(options, "timeout", "cancelled")
            start = time.monotonic()
            conn.connect()
            days = self._days_to_expiry(conn)
            stage = "request"
            conn.request(options.method, path, headers=self.headers())
            sent = time.monotonic()
            self._retime(conn, deadline)
            stage = "response"
            response = conn.getresponse()
            first_byte = time.monotonic()
            stage = "body"
            read = self._read_body(conn, response, deadline) if options.throughput else None
            end = time.monotonic()
        except http.client.HTTPException as exc:
            return failure(
                options, "protocol_error", f"{stage} {options.address}: {type(exc).__name__} {exc}"
            )
        except OSError as exc:
            return failure(options, reason_for(exc), f"{stage} {options.address}: {describe(exc)}")
        finally:
            self.conn = None
            if conn is not None:
                conn.close()
        result = ProbeResult(
            kind="http",
            target=options.label,
            up=options.status_ok(response.status),
            rtt_seconds=end - start,
            method=f"http-{options.method.lower()}",
            status_code=response.status,
            ttfb_seconds=first_byte - sent,
            tls_days_to_expiry=days,
        )
        if read is not None:
            result.bytes_read = read
            body_time = end - first_byte
            result.throughput_bytes_per_second = read / body_time if body_time > 0 else None
        if not result.up:
            result.error = "http_status"
            result.detail = f"status {response.status} not in expected {options.expected}"
        return result

    @staticmethod
    def _days_to_expiry(conn: http.client.HTTPConnection) -> float | None:
        """Days until the verified peer certificate expires (None without verification)."""
        sock = conn.sock
        if not isinstance(sock, ssl.SSLSocket):
            return None
        cert = sock.getpeercert()
        not_after = cert.get("notAfter") if cert else None
        if not isinstance(not_after, str):
            return None
        return (ssl.cert_time_to_seconds(not_after) - time.time()) / 86400

    @staticmethod
    def _retime(conn: http.client.HTTPConnection, deadline: Deadline) -> None:
        if deadline.expired():
            raise TimeoutError("deadline reached")
        if conn.sock is not None:
            conn.sock.settimeout(deadline.remaining())

    def _read_body(
        self,
        conn: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        deadline: Deadline,
    ) -> int:
        """Read up to ``max_bytes`` of the body; return how many bytes came."""
        total = 0
        while total < self.options.max_bytes:
            self._retime(conn, deadline)
            chunk = response.read1(min(_CHUNK, self.options.max_bytes - total))
            if not chunk:
                break
            total += len(chunk)
        return total


async def probe(options: Options) -> ProbeResult:
    """Request ``address`` and report status, timings and (optionally) throughput."""
    parts = urlsplit(options.address)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolve(parts.hostname or "", port, family=options.family)
    except ProbeFailed as exc:
        return with_family(failure(options, exc.error, exc.detail), options, None)
    family, sockaddr = addresses[0]
    exchange = _Exchange(options, sockaddr[0])
    try:
        return with_family(await HTTP.run(id(options), exchange.run), options, family)
    except StillRunning:
        return failure(
            options,
            "timeout",
            f"the previous check of {options.address} has still not returned; not started again",
        )
    except asyncio.CancelledError:
        exchange.abort()
        raise

"""The sender: moves reports from the spool to the collector, and never loses one.

``POST {url}/api/v1/reports`` with a gzipped ``Batch``, a bearer token and
``User-Agent: hatang-agent/<version>``. The standard library's ``http.client`` is used
on purpose: aiohttp alone would cost the host role ~21 MiB of its ~25 MiB budget.
Requests run in a worker thread; the collector URLs are tried in order within each
attempt (WAN address first, then the internet address) and a connection failure moves
on to the next one.

What each answer does:

- **2xx**: the collector stored the batch durably; only now are its rows deleted
  from the spool (``accepted``, ``duplicates`` and ``conflicts`` all mean "done").
- **401/403**: the token was refused. Everything stays queued, the agent backs off
  and logs an ERROR (never the token) until someone fixes the token or the site.
- **400/413/422 for a batch of several reports**: one report may be bad, so the batch
  is split (at the ``index`` the collector names, else bisected) and the parts are
  sent on their own, oldest first.
- **400/413/415/422 for a single report**: the collector will never accept this
  report, and retrying it would block every later report forever. It is moved to the
  spool's dead-letter table (kept, bounded, readable with ``sqlite3``) and logged at
  ERROR with its id and the collector's reason. This is the only way a report leaves
  the spool without a 2xx. A safety catch: after ``DEAD_LETTER_BREAKER`` reports
  refused in a row with no 2xx between, the collector (or a proxy before it) is
  refusing everything, which is a version or deployment problem, not bad reports;
  the agent then stops dead-lettering, keeps them queued and backs off.
- **500 for the same reports every time**: a collector bug that one report triggers
  would otherwise wedge the queue forever. The batch is retried with backoff like any
  failure; after ``SERVER_ERROR_RETRIES`` 500s with the same oldest report it is
  isolated by binary search (halves sent oldest first). Only when another report was
  stored meanwhile (proof that the collector works) and the culprit fails once more on
  its own is it moved to the dead-letter table with its status (counted in
  ``spool_rejected``). A collector that answers 500 to everything gets nothing
  dead-lettered: the search ends without proof and everything stays queued.
- **415 for a batch, 429, 502/503/504 and other 5xx, redirects, other statuses, network
  errors**: the collector is down, overloaded or misconfigured, never a report's fault;
  retry the same reports later with exponential backoff and full jitter
  (``retry_initial`` .. ``retry_max``), waiting at least what ``Retry-After`` asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import functools
import gzip
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from agent import __version__
from agent.config import CollectorConfig, ConfigError, is_loopback, redact_url
from agent.log import event, log_exception_limited
from agent.report import batch_body, utcnow
from agent.spool import Entry, Spool, SpoolError

log = logging.getLogger(__name__)

API_PATH: Final = "/api/v1/reports"
USER_AGENT: Final = f"hatang-agent/{__version__}"
MAX_RESPONSE_BYTES: Final = 64 * 1024
# A hostile or confused server must not park the agent for days with one header.
RETRY_AFTER_CAP_SECONDS: Final = 3600.0
# Statuses that mean "this content is refused", as opposed to "not now".
CONTENT_REJECTED: Final = frozenset({400, 413, 422})
SINGLE_REJECTED: Final = CONTENT_REJECTED | {415}
AUTH_REFUSED: Final = frozenset({401, 403})
# Dead-lettering stops after this many reports refused in a row with no 2xx between:
# a collector (or proxy) that refuses everything has a bug, and the reports must wait.
DEAD_LETTER_BREAKER: Final = 10
# A server error that may belong to the reports, not to the collector as a whole: 502,
# 503, 504 and 507 say the collector (or its store, or the proxy's upstream) is down.
REPORT_SERVER_ERRORS: Final = frozenset({500})
# Attempts (with backoff between) before the same oldest report's 500 is isolated.
SERVER_ERROR_RETRIES: Final = 3

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Response:
    """A collector answer, bounded in size."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, or {} when it is not one."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def describe(self) -> str:
        """A short text for logs: status, error code and message from the JSON body."""
        data = self.json()
        parts = [f"HTTP {self.status}"]
        for key in ("error", "message", "field"):
            if isinstance(data.get(key), str | int):
                parts.append(f"{key}={str(data[key])[:200]}")
        if len(parts) == 1 and self.body:
            parts.append(self.body[:200].decode("utf-8", "replace"))
        return " ".join(parts)


class TransportError(Exception):
    """The request did not get an HTTP answer; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _classify(exc: BaseException) -> TransportError:
    """Map a socket/TLS/HTTP failure to a short reason code and a readable detail."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError(
            "tls_error", f"certificate not trusted: {exc.verify_message or exc}"[:300]
        )
    if isinstance(exc, ssl.SSLError):
        return TransportError("tls_error", exc.reason or str(exc))
    if isinstance(exc, TimeoutError | socket.timeout):
        return TransportError("timeout", "no answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return TransportError("refused", "connection refused")
    if isinstance(exc, socket.gaierror):
        return TransportError("dns_error", exc.strerror or str(exc))
    if isinstance(exc, http.client.HTTPException | ConnectionError):
        return TransportError("protocol_error", f"{type(exc).__name__}: {exc}"[:200])
    if isinstance(exc, OSError):
        return TransportError("network_error", exc.strerror or str(exc))
    return TransportError("network_error", f"{type(exc).__name__}: {exc}"[:200])


class Transport:
    """One collector URL over a kept-alive ``http.client`` connection.

    Used by one worker thread at a time; ``abort`` may be called from any thread to
    break a request that is blocked on the network (shutdown).
    """

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid collector url {redact_url(url)!r}")
        self.url = redact_url(url)  # how it is shown in logs and errors
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path.rstrip("/") + API_PATH
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self.abandoned: asyncio.Future[Any] | None = None  # a request given up on, still running

    def _connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def post(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """Send one request; raise TransportError when no HTTP answer came back."""
        with self._lock:
            conn = self._conn
            reused = conn is not None and conn.sock is not None
            if conn is None:
                conn = self._conn = self._connect()
        try:
            return self._request(conn, body, headers)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            self.close()
            if not reused:
                raise _classify(exc) from None
            # The server closed an idle keep-alive connection: retry once on a fresh one.
            # Safe because the collector stores each report id once.
            with self._lock:
                conn = self._conn = self._connect()
        except BaseException as exc:
            self.close()
            raise _classify(exc) from None
        try:
            return self._request(conn, body, headers)
        except BaseException as exc:
            self.close()
            raise _classify(exc) from None

    def _request(
        self, conn: http.client.HTTPConnection, body: bytes, headers: Mapping[str, str]
    ) -> Response:
        conn.request("POST", self.path, body=body, headers=dict(headers))
        resp = conn.getresponse()
        data = resp.read(MAX_RESPONSE_BYTES)
        if not resp.isclosed():
            self.close()  # an oversized answer: drop the connection rather than read it all
        elif resp.will_close:
            self.close()
        return Response(
            status=resp.status,
            reason=resp.reason,
            headers={k.lower(): v for k, v in resp.getheaders()},
            body=data,
        )

    def abort(self) -> None:
        """Break an in-flight request from another thread (its thread then raises)."""
        with self._lock:
            conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the kept-alive connection."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse ``Retry-After`` (delta seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_CAP_SECONDS)


def make_ssl_context(config: CollectorConfig) -> ssl.SSLContext:
    """TLS settings for the collector; raise ConfigError when ``ca_file`` is unusable."""
    context = ssl.create_default_context()
    if config.ca_file:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(
                "", "collector.ca_file", f"cannot load {config.ca_file}: {detail}"
            ) from None
    if not config.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_token(token: str) -> str:
    """Reject tokens that cannot travel in an HTTP header (without echoing them)."""
    if not token or any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ConfigError(
            "",
            "collector.token",
            "the token must be printable ASCII without spaces or line breaks",
        )
    return token


@dataclass(slots=True)
class SenderStats:
    """Counters for logs and the daemon's status (since the process started)."""

    sent_reports: int = 0
    sent_batches: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected_reports: int = 0
    failed_attempts: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    last_url: str | None = None


class SendStopped(Exception):
    """Shutdown was requested while a request was in flight; nothing was acknowledged."""


class SendFailed(Exception):
    """This attempt failed; the same reports stay queued and are retried after a backoff."""

    def __init__(self, error: str, retry_after: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.retry_after = retry_after


def _in_daemon_thread(fn: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run a blocking call in a daemon thread.

    Not ``asyncio.to_thread``: ``asyncio.run`` joins the default executor on exit, so a
    request stuck in ``connect`` would hold up shutdown for the whole timeout. A daemon
    thread can be abandoned; nothing is acknowledged unless its answer is seen.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="hatang-sender", daemon=True).start()
    return future


class Sender:
    """Drains the spool to the collector with batching, splitting, backoff and dead letters."""

    def __init__(
        self,
        config: CollectorConfig,
        spool: Spool,
        token: str,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.stats = SenderStats()
        self._rng = rng or random.Random()
        self._headers = {
            "Authorization": f"Bearer {check_token(token)}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": USER_AGENT,
        }
        needs_tls = any(url.startswith("https:") for url in config.urls)
        context = make_ssl_context(config) if needs_tls else None
        self.transports = [Transport(url, context, float(config.timeout)) for url in config.urls]
        # The whole of one request (lookup, connect, send, answer): each step has its own
        # socket timeout, which a slow drip of bytes or a hung resolver never trips.
        self._request_bound = 3 * float(config.timeout)
        self._preferred = 0
        self._rejected_in_a_row = 0
        # The oldest report of the batches that got 500, and how many times in a row.
        self._server_error_head: int | None = None
        self._server_errors = 0
        if not config.verify_tls:
            event(
                log,
                logging.WARNING,
                "sender.tls_unverified",
                hint="collector.verify_tls is false: the collector's certificate is not checked",
            )
        for transport in self.transports:
            if transport.scheme == "http" and not is_loopback(transport.host):
                event(
                    log,
                    logging.WARNING,
                    "sender.plaintext",
                    url=transport.url,
                    hint="the token and reports travel unencrypted; use https",
                )

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Send whenever reports are queued; back off on failure; return when ``stop`` is set."""
        while not stop.is_set():
            wake.clear()
            try:
                await self.flush(stop)
            except SendStopped:
                break
            except SendFailed as failure:
                delay = self.backoff_delay(failure.retry_after)
                event(
                    log,
                    logging.WARNING,
                    "send.retry_scheduled",
                    retry_in_seconds=round(delay, 3),
                    consecutive_failures=self.stats.consecutive_failures,
                    error=failure.error,
                )
                # New reports do not cut a backoff short: the collector asked for quiet.
                await _wait(stop, delay)
                continue
            except SpoolError as exc:
                # Disk full, spool locked...: the sender must outlive it and try again.
                self._failed(str(exc))
                event(log, logging.ERROR, "send.spool_error", error=str(exc))
                await _wait(stop, self.backoff_delay(None))
                continue
            except Exception as exc:
                self._failed(repr(exc)[:300])
                log_exception_limited(log, "send.internal_error", exc)
                await _wait(stop, self.backoff_delay(None))
                continue
            # Everything queued was delivered; sleep until a new report arrives.
            await _wait_any(stop, wake, 60.0)
        self.close()

    def backoff_delay(self, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, never shorter than ``Retry-After``."""
        failures = max(1, self.stats.consecutive_failures)
        initial = float(self.config.retry_initial)
        cap = min(float(self.config.retry_max), initial * 2 ** min(failures - 1, 30))
        delay = self._rng.uniform(0.0, cap)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def flush(self, stop: asyncio.Event | None = None) -> int:
        """Send until the spool is empty; return how many reports were acknowledged.

        Raises ``SendFailed`` when an attempt fails (the reports stay queued) and
        ``SendStopped`` when ``stop`` interrupted a request.
        """
        stop = stop or asyncio.Event()
        delivered = 0
        # Each attempt starts at the first URL (the WAN); once one answers, the rest of
        # this drain stays on it instead of waiting out a dead link for every batch.
        self._preferred = 0
        while not stop.is_set():
            entries = await asyncio.to_thread(
                self.spool.begin_batch,
                self.config.batch_max_reports,
                int(self.config.batch_max_bytes),
            )
            if not entries:
                break
            delivered += await self._deliver(entries, stop)
        return delivered

    async def _deliver(self, entries: Sequence[Entry], stop: asyncio.Event) -> int:
        """Send one batch; split it on content rejection; return the acknowledged count."""
        response = await self._post(entries, stop)
        if response.status in REPORT_SERVER_ERRORS:
            head = entries[0].row_id
            self._server_errors = self._server_errors + 1 if head == self._server_error_head else 1
            self._server_error_head = head
            if self._server_errors >= SERVER_ERROR_RETRIES:
                return await self._isolate(entries, response, stop)
        return await self._answer(entries, response, stop)

    async def _isolate(
        self, entries: Sequence[Entry], response: Response, stop: asyncio.Event
    ) -> int:
        """Find the oldest report the collector keeps failing on, by binary search.

        Only with proof that the collector stores other reports (a 2xx during the search)
        is the culprit dead-lettered; without it nothing is, and everything stays queued.
        """
        event(
            log,
            logging.WARNING,
            "send.isolating",
            status=response.status,
            reports=len(entries),
            attempts=self._server_errors,
            collector_says=response.describe(),
        )
        sent_before = self.stats.sent_reports
        delivered = 0
        suspects = list(entries)
        while len(suspects) > 1:
            left, right = suspects[: len(suspects) // 2], suspects[len(suspects) // 2 :]
            answer = await self._post(left, stop)
            if answer.status in REPORT_SERVER_ERRORS:
                response, suspects = answer, left  # ``right`` waits for the next batch
                continue
            delivered += await self._answer(left, answer, stop)
            suspects = right
        culprit = suspects[0]
        if self.stats.sent_reports == sent_before:
            # Nothing was stored yet: let the next report show whether the collector works.
            after = [e for e in entries if e.row_id > culprit.row_id][:1]
            if not after:
                return await self._answer(entries[:1], response, stop)
            answer = await self._post(after, stop)
            if answer.status in REPORT_SERVER_ERRORS:
                event(
                    log,
                    logging.ERROR,
                    "send.server_failing",
                    status=answer.status,
                    collector_says=answer.describe(),
                    queued_kept=True,
                    hint="the collector answers 500 to every report: a collector problem, "
                    "not a bad report; nothing is dead-lettered, everything stays queued",
                )
                return await self._answer(after, answer, stop)
            delivered += await self._answer(after, answer, stop)
            if self.stats.sent_reports == sent_before:
                return delivered
        # The collector stores other reports: one last try of the culprit alone.
        answer = await self._post([culprit], stop)
        if answer.status not in REPORT_SERVER_ERRORS:
            return delivered + await self._answer([culprit], answer, stop)
        reason = f"{answer.describe()} (every time; other reports were stored meanwhile)"
        await asyncio.to_thread(self.spool.reject, culprit.row_id, answer.status, reason)
        self.stats.rejected_reports += 1
        self._server_error_head, self._server_errors = None, 0
        return delivered

    async def _answer(
        self, entries: Sequence[Entry], response: Response, stop: asyncio.Event
    ) -> int:
        """Act on the collector's answer to one batch; return the acknowledged count."""
        status = response.status
        if 200 <= status < 300:
            await self._acknowledged(entries, response)
            return len(entries)
        if status in AUTH_REFUSED:
            self._failed(f"token refused: {response.describe()}")
            event(
                log,
                logging.ERROR,
                "send.auth_refused",
                status=status,
                url=self.stats.last_url,
                collector_says=response.describe(),
                queued_kept=True,
                hint="the collector refused this agent's token (or its site); check "
                "collector.token / token_file and the site id; reports stay queued",
            )
            raise SendFailed(f"HTTP {status} token refused")
        if len(entries) == 1 and status in SINGLE_REJECTED:
            if self._rejected_in_a_row >= DEAD_LETTER_BREAKER:
                self._failed(f"collector refuses every report: {response.describe()}")
                event(
                    log,
                    logging.ERROR,
                    "send.rejecting_everything",
                    status=status,
                    rejected_in_a_row=self._rejected_in_a_row,
                    collector_says=response.describe(),
                    hint="the collector refused many reports in a row and accepted none: "
                    "this looks like a version or proxy problem, not bad reports; they stay "
                    "queued until it accepts one again",
                )
                raise SendFailed(f"HTTP {status} for every report")
            entry = entries[0]
            await asyncio.to_thread(self.spool.reject, entry.row_id, status, response.describe())
            self.stats.rejected_reports += 1
            self._rejected_in_a_row += 1
            return 0
        if len(entries) > 1 and status in CONTENT_REJECTED:
            parts = self._split(entries, response)
            event(
                log,
                logging.WARNING,
                "send.batch_split",
                status=status,
                reports=len(entries),
                parts=len(parts),
                collector_says=response.describe(),
            )
            delivered = 0
            for part in parts:
                delivered += await self._deliver(part, stop)
            return delivered
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        self._failed(response.describe())
        level = logging.ERROR if status == 415 or 300 <= status < 400 else logging.WARNING
        event(
            log,
            level,
            "send.failed",
            status=status,
            url=self.stats.last_url,
            reports=len(entries),
            retry_after=retry_after,
            collector_says=response.describe(),
        )
        raise SendFailed(f"HTTP {status}", retry_after)

    @staticmethod
    def _split(entries: Sequence[Entry], response: Response) -> list[Sequence[Entry]]:
        """Isolate the report the collector named (``index``), else cut the batch in half."""
        index = response.json().get("index")
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(entries):
            parts = [entries[:index], entries[index : index + 1], entries[index + 1 :]]
            return [p for p in parts if p]
        middle = len(entries) // 2
        return [entries[:middle], entries[middle:]]

    async def _acknowledged(self, entries: Sequence[Entry], response: Response) -> None:
        await asyncio.to_thread(self.spool.ack, [e.row_id for e in entries])
        data = response.json()
        counts = {k: data.get(k) for k in ("accepted", "duplicates", "conflicts")}
        duplicates = counts["duplicates"] if isinstance(counts["duplicates"], int) else 0
        conflicts = counts["conflicts"] if isinstance(counts["conflicts"], int) else 0
        recovered = self.stats.consecutive_failures
        self._rejected_in_a_row = 0
        if self._server_error_head in {e.row_id for e in entries}:
            self._server_error_head, self._server_errors = None, 0
        self.stats.sent_reports += len(entries)
        self.stats.sent_batches += 1
        self.stats.duplicates += duplicates
        self.stats.conflicts += conflicts
        self.stats.consecutive_failures = 0
        self.stats.last_success_at = time.time()
        event(
            log,
            logging.INFO,
            "report.sent",
            count=len(entries),
            first_seq=entries[0].seq,
            last_seq=entries[-1].seq,
            accepted=counts["accepted"],
            duplicates=duplicates,
            conflicts=conflicts,
            url=self.stats.last_url,
            sent_total=self.stats.sent_reports,
        )
        if conflicts:
            event(
                log,
                logging.WARNING,
                "report.conflict",
                count=conflicts,
                hint="the collector already holds different reports with these ids; "
                "they were not stored again",
            )
        if recovered:
            event(log, logging.INFO, "send.recovered", after_failed_attempts=recovered)

    def _failed(self, error: str) -> None:
        self.stats.failed_attempts += 1
        self.stats.consecutive_failures += 1
        self.stats.last_error = error
        self.stats.last_error_at = time.time()

    async def _post(self, entries: Sequence[Entry], stop: asyncio.Event) -> Response:
        """POST a batch, trying each URL in order; raise SendFailed when none answered."""
        raw = batch_body([e.body for e in entries], utcnow())
        body = await asyncio.to_thread(gzip.compress, raw, 6, mtime=0)
        errors: list[str] = []
        order = [self._preferred] + [i for i in range(len(self.transports)) if i != self._preferred]
        for position in order:
            transport = self.transports[position]
            if stop.is_set():
                raise SendStopped
            if transport.abandoned is not None and not transport.abandoned.done():
                # Its thread is stuck where nothing can interrupt it (a name lookup):
                # one stuck thread per URL, never one more per attempt.
                errors.append(f"{transport.url}: the previous request has still not returned")
                continue
            request = _in_daemon_thread(functools.partial(transport.post, body, self._headers))
            stopping = asyncio.ensure_future(stop.wait())
            pending: set[asyncio.Future[Any]] = {request, stopping}
            try:
                await asyncio.wait(
                    pending, timeout=self._request_bound, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
            if not request.done():
                # Break the request; whatever the collector stored it will see again as
                # a duplicate, and nothing unacknowledged is deleted.
                transport.abort()
                request.add_done_callback(_discard)
                if stop.is_set():
                    raise SendStopped
                # Socket timeouts bound each step, not the whole: a name lookup, or an
                # answer dribbled a byte at a time, could hold the queue for ever.
                transport.abandoned = request
                errors.append(
                    f"{transport.url}: timeout: no complete answer in "
                    f"{self._request_bound:g}s (request abandoned)"
                )
                event(
                    log,
                    logging.WARNING,
                    "send.unreachable",
                    url=transport.url,
                    reason="timeout",
                    detail=f"no complete answer in {self._request_bound:g}s",
                )
                continue
            try:
                response: Response = request.result()
            except TransportError as exc:
                errors.append(f"{transport.url}: {exc}")
                if exc.reason == "tls_error":
                    # Not a passing network fault: a wrong CA, a certificate for another
                    # name, or something else answering. It will not heal by itself.
                    event(
                        log,
                        logging.ERROR,
                        "send.tls_refused",
                        url=transport.url,
                        detail=exc.detail,
                        queued_kept=True,
                        hint="the collector's TLS certificate was not trusted or the handshake "
                        "failed; check collector.ca_file and that the certificate names the "
                        "url's host; reports stay queued",
                    )
                else:
                    event(
                        log,
                        logging.WARNING,
                        "send.unreachable",
                        url=transport.url,
                        reason=exc.reason,
                        detail=exc.detail,
                    )
                continue
            self.stats.last_url = transport.url
            self._preferred = position
            return response
        self._failed("; ".join(errors))
        raise SendFailed("no collector url answered: " + "; ".join(errors))

    def close(self) -> None:
        """Close kept-alive connections."""
        for transport in self.transports:
            transport.close()


def _discard(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

"""HTTP handlers: report ingest, health, metrics, the OpenAPI document.

Every input is hostile until validated. The ingest handler checks, in order: token
(401/403; 403 too when the token's site was removed from the org tree; checked in memory,
so requests without a valid token never take an in-flight slot), load (429), transfer
coding (501 for anything but chunked), media type and encoding (415), size as sent
(413), the body deadline (408: a client that trickles
its body is cut off after ``limits.body_timeout``), gzip (400, 413 past the
decompressed bound: a gzip bomb is stopped after ``max_decompressed`` bytes, never
inflated in full), UTF-8 and JSON (400), the shared report schema (422 naming the
field), integers the store can hold (422), times in the accepted range (422), the
token's site (403), and only then stores the batch. A client that hangs up mid-body is
counted as ``disconnected`` (status 499 in the request counter), never as a 500.
A rejected request changes nothing stored. Errors are one JSON shape, with a message in
English and Vietnamese (officials read agent logs too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent import __version__
from agent.log import event, log_exception_limited
from agent.report import (
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    Batch,
    Report,
    times_out_of_range,
    unix_seconds,
)
from collector.auth import Authenticator, AuthFailure
from collector.config import CollectorConfig
from collector.metrics import Exposition
from collector.org import Org
from collector.store import Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

OFFLOAD_BYTES: Final = 256 * 1024  # bigger bodies are decoded in a thread, off the event loop
RETRY_AFTER_OVERLOAD: Final = "2"
RETRY_AFTER_STORE: Final = "10"
REJECT_REASONS: Final = (
    "malformed",
    "unauthorized",
    "revoked",
    "site_mismatch",
    "too_large",
    "unsupported_media_type",
    "invalid",
    "unknown_site",
    "overloaded",
    "store_unavailable",
    "conflict",
    "timeout",
    "disconnected",
    "not_implemented",
)
# Not an HTTP status a client ever reads: the client hung up before its body arrived
# (nginx's convention), counted apart from bad requests because a cut WAN link does it.
CLIENT_CLOSED: Final = 499
_FIELD: Final = re.compile(r"^(?P<msg>.*?) - at `(?P<field>\$[^`]*)`$", re.DOTALL)
_INDEX: Final = re.compile(r"^\$\.reports\[(\d+)\]")
_OPENAPI: Final = resources.files("collector").joinpath("openapi.yaml")
_encode: Final = msgspec.json.Encoder().encode
_TIME_RANGE: Final = tuple(
    t.isoformat().replace("+00:00", "Z") for t in (TIMESTAMP_MIN, TIMESTAMP_MAX)
)


class IngestMetrics:
    """The collector's own metrics, on the app's registry (never the global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "hatang_reports_received",
            "Reports newly stored (replays and conflicts excluded).",
            registry=registry,
        )
        self.duplicates = Counter(
            "hatang_reports_duplicate",
            "Reports received again with identical content (acknowledged, stored once).",
            registry=registry,
        )
        self.rejected = Counter(
            "hatang_reports_rejected",
            "Rejected reports by reason; request-level rejections count the whole request once.",
            ["reason"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.clock_skew = Counter(
            "hatang_reports_clock_skew",
            "Reports observed too far in the future; kept, filed under their arrival time.",
            registry=registry,
        )
        self.requests = Counter(
            "hatang_http_requests",
            "HTTP requests by handler and status code.",
            ["handler", "code"],
            registry=registry,
        )
        self.ingest_duration = Histogram(
            "hatang_ingest_duration_seconds",
            "Time to handle one ingest request, from first byte to answer.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.store_write = Histogram(
            "hatang_store_write_duration_seconds",
            "Time of one durable group commit of the store writer.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.commit_reports = Histogram(
            "hatang_store_commit_reports",
            "Reports written per group commit (concurrent ingests share one commit).",
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 20000),
            registry=registry,
        )
        self.lag = Histogram(
            "hatang_report_lag_seconds",
            "Received minus observed time of stored reports (spool replay lag).",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, 30 * 86400),
            registry=registry,
        )
        self.inflight = Gauge(
            "hatang_ingest_inflight_requests",
            "Ingest requests being handled now (429 beyond limits.max_inflight).",
            registry=registry,
        )


@dataclass
class IngestState:
    """Mutable per-app state of the ingest handler."""

    inflight: int = 0
    pending_rejections: dict[str, int] = field(default_factory=dict)


# Typed keys of the shared state on the application (aiohttp ``AppKey``).
CONFIG: Final = web.AppKey("config", CollectorConfig)
STORE: Final = web.AppKey("store", Store)
AUTH: Final = web.AppKey("auth", Authenticator)
ORG: Final = web.AppKey("org", Org)
TOKEN_ID: Final = web.RequestKey("token_id", str)
# The agent id a per-agent credential (enrollment) is bound to; unset for site tokens.
CREDENTIAL_AGENT: Final = web.RequestKey("credential_agent", str)
REGISTRY: Final = web.AppKey("registry", CollectorRegistry)
METRICS: Final = web.AppKey("metrics", IngestMetrics)
EXPOSITION: Final = web.AppKey("exposition", Exposition)  # GET /metrics
INGEST_STATE: Final = web.AppKey("ingest_state", IngestState)
REFRESH: Final = web.AppKey("refresh", asyncio.Event)  # set after ingests: rebuild the snapshot


class Rejection(Exception):
    """A request that must be answered with an error (never a bug)."""

    def __init__(
        self,
        status: int,
        code: str,
        english: str,
        vietnamese: str,
        *,
        reason: str,
        field: str | None = None,
        index: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(english)
        self.status, self.code, self.reason = status, code, reason
        self.english, self.vietnamese = english, vietnamese
        self.field, self.index, self.headers = field, index, headers or {}


def error_response(
    status: int,
    code: str,
    english: str,
    vietnamese: str,
    *,
    field: str | None = None,
    index: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The one JSON error shape of this API."""
    body: dict[str, Any] = {"error": code, "message": f"{english} / {vietnamese}"}
    if field is not None:
        body["field"] = field
    if index is not None:
        body["index"] = index
    return web.json_response(body, status=status, headers=headers)


def _rejection_response(rej: Rejection) -> web.Response:
    return error_response(
        rej.status,
        rej.code,
        rej.english,
        rej.vietnamese,
        field=rej.field,
        index=rej.index,
        headers=rej.headers,
    )


# -- body handling --------------------------------------------------------------------


def _too_large(what: str, limit: int) -> Rejection:
    return Rejection(
        413,
        "too_large",
        f"{what} is larger than {limit} bytes; send smaller batches",
        f"{'Nội dung yêu cầu' if what == 'request body' else 'Nội dung sau giải nén'} vượt quá"
        f" {limit} byte; hãy gửi lô nhỏ hơn",
        reason="too_large",
    )


async def _read_body(request: web.Request, limit: int, what: str) -> bytes:
    """Read the body, stopping as soon as it exceeds ``limit`` (never buffering more)."""
    body = bytearray()
    try:
        async for chunk in request.content.iter_chunked(65536):
            body += chunk
            if len(body) > limit:
                raise _too_large(what, limit)
    except ConnectionResetError:
        # The connection was lost mid-body (the agent keeps the batch and resends it).
        raise Rejection(
            CLIENT_CLOSED,
            "client_disconnected",
            "the client closed the connection before the body arrived",
            "Máy khách đã đóng kết nối trước khi gửi hết nội dung",
            reason="disconnected",
        ) from None
    except (RequestPayloadError, HttpProcessingError) as exc:
        # Only when the HTTP server inflates bodies itself (auto_decompress) or the
        # client broke the transfer encoding.
        raise Rejection(
            400,
            "bad_gzip" if "encoding" in str(exc).lower() else "malformed_body",
            f"body could not be read: {exc}"[:300],
            "Không đọc được nội dung yêu cầu",
            reason="malformed",
        ) from None
    return bytes(body)


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate a gzip body in bounded steps; stop past ``limit`` (gzip bombs stay small)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = data
    try:
        while True:
            chunk = inflater.decompress(pending, 65536)
            out += chunk
            if len(out) > limit:
                raise _too_large("decompressed body", limit)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not chunk and not pending):
                break
    except zlib.error as exc:
        raise Rejection(
            400,
            "bad_gzip",
            f"body is not valid gzip: {exc}",
            "Nội dung không phải gzip hợp lệ",
            reason="malformed",
        ) from None
    if not inflater.eof:
        raise Rejection(
            400,
            "bad_gzip",
            "gzip body is truncated",
            "Nội dung gzip bị cắt cụt",
            reason="malformed",
        )
    if inflater.unused_data:
        raise Rejection(
            400,
            "bad_gzip",
            "unexpected data after the gzip stream",
            "Có dữ liệu thừa sau luồng gzip",
            reason="malformed",
        )
    return bytes(out)


def decode(body: bytes) -> Batch:
    """UTF-8 and JSON (400), then the shared schema (422 naming the field)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(
            400,
            "invalid_utf8",
            f"body is not valid UTF-8 (byte {exc.start})",
            f"Nội dung không phải UTF-8 hợp lệ (byte {exc.start})",
            reason="malformed",
        ) from None
    try:
        batch = msgspec.json.decode(body, type=Batch)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _FIELD.match(text)
        msg, path = (match.group("msg"), match.group("field")) if match else (text, "$")
        index_match = _INDEX.match(path)
        raise Rejection(
            422,
            "invalid_report",
            f"{path}: {msg}",
            f"Báo cáo không hợp lệ tại {path}: {msg}",
            reason="invalid",
            field=path,
            index=int(index_match.group(1)) if index_match else None,
        ) from None
    except msgspec.DecodeError as exc:
        raise Rejection(
            400,
            "malformed_json",
            f"body is not valid JSON: {exc}",
            f"Nội dung không phải JSON hợp lệ: {exc}",
            reason="malformed",
        ) from None
    except RecursionError:
        raise Rejection(
            400,
            "malformed_json",
            "JSON is nested too deeply",
            "JSON lồng nhau quá sâu",
            reason="malformed",
        ) from None
    for path, value in times_out_of_range(batch):
        low, high = _TIME_RANGE
        index_match = _INDEX.match(path)
        raise Rejection(
            422,
            "invalid_report",
            f"{path}: time {value.isoformat()} is outside the accepted range {low} .. {high}",
            f"Báo cáo không hợp lệ tại {path}: thời điểm {value.isoformat()} nằm ngoài"
            f" khoảng được nhận {low} .. {high}",
            reason="invalid",
            field=path,
            index=int(index_match.group(1)) if index_match else None,
        )
    return batch


def _prepare(body: bytes, inflate: bool, max_decompressed: int) -> tuple[Batch, list[bytes]]:
    """The CPU part of ingest: inflate, decode, canonicalise (may run in a thread)."""
    if inflate:
        body = gunzip(body, max_decompressed)
    batch = decode(body)
    return batch, [_encode(r) for r in batch.reports]


def _prepare_inline(
    body: bytes, inflate: bool, max_decompressed: int
) -> tuple[Batch, list[bytes]] | None:
    """``_prepare`` on the loop for bodies that stay small; None when the body inflates past
    OFFLOAD_BYTES (the caller then starts over in a thread: a thread hop costs more than
    decoding a typical report, and a gzip bomb must not stall the loop)."""
    bound = min(max_decompressed, OFFLOAD_BYTES)
    if inflate:
        try:
            body = gunzip(body, bound)
        except Rejection as rej:
            if rej.reason == "too_large" and bound < max_decompressed:
                return None
            raise
    batch = decode(body)
    return batch, [_encode(r) for r in batch.reports]


# -- handlers ---------------------------------------------------------------------------


def _check_transfer(request: web.Request) -> None:
    """501 for a transfer coding other than chunked (RFC 9112 section 6.1): the HTTP parser
    only removes the chunking, so ``gzip, chunked`` would hand over a still-gzipped body
    as if it were plain; a body coding belongs in Content-Encoding."""
    codings = [
        c.strip().lower()
        for value in request.headers.getall("Transfer-Encoding", [])
        for c in value.split(",")
    ]
    if codings and codings != ["chunked"]:
        raise Rejection(
            501,
            "unsupported_transfer_encoding",
            f"Transfer-Encoding {', '.join(codings)!r} is not implemented; send the body"
            " chunked or with Content-Length (gzip goes in Content-Encoding)"[:300],
            "Transfer-Encoding này không được hỗ trợ; hãy gửi nội dung dạng chunked hoặc có"
            " Content-Length (gzip đặt trong Content-Encoding)",
            reason="not_implemented",
        )


def _check_media(request: web.Request) -> bool:
    """Return whether the body is gzip; raise 415 for anything but JSON (gzip allowed)."""
    if request.content_type != "application/json":
        raise Rejection(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, not {request.content_type!r}"[:200],
            "Content-Type phải là application/json",
            reason="unsupported_media_type",
        )
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise Rejection(
            415,
            "unsupported_media_type",
            f"charset must be utf-8, not {charset!r}"[:200],
            "Bảng mã phải là utf-8",
            reason="unsupported_media_type",
        )
    # Every Content-Encoding header and every coding listed in one (RFC 9110 8.4): the
    # first header alone would read a gzipped body as plain behind "identity".
    codings = [
        c.strip().lower()
        for value in request.headers.getall("Content-Encoding", [])
        for c in value.split(",")
    ]
    codings = [c for c in codings if c not in ("identity", "")]
    if not codings:
        return False
    if codings in (["gzip"], ["x-gzip"]):
        return True
    encoding = ", ".join(codings)
    raise Rejection(
        415,
        "unsupported_media_type",
        f"Content-Encoding must be gzip or absent, not {encoding!r}"[:200],
        "Content-Encoding chỉ được là gzip hoặc bỏ trống",
        reason="unsupported_media_type",
    )


async def _authenticate(request: web.Request) -> str:
    """Return the token's site; raise 401 (missing/unknown) or 403 (revoked, site removed)."""
    values = request.headers.getall("Authorization", [])
    # Two Authorization headers are ambiguous (a proxy may act on the other one): refuse.
    header = values[0] if len(values) == 1 else ("" if not values else "ambiguous")
    result = await request.app[AUTH].authenticate(header or None)
    if not isinstance(result, AuthFailure):
        request[TOKEN_ID] = result.token_id
        if result.agent_id is not None:
            request[CREDENTIAL_AGENT] = result.agent_id
        if result.site not in request.app[ORG]:
            # The token is sound but its unit left the org tree (a merger, a typo fixed):
            # a token problem, not bad content, so the agent keeps its reports queued.
            raise Rejection(
                403,
                "unknown_site",
                f"token {result.token_id} belongs to site {result.site!r}, which is not in"
                " the organisation tree; fix the org file or issue a token for the new site",
                f"Mã truy cập {result.token_id} thuộc đơn vị {result.site!r}, đơn vị này không"
                " còn trong cây tổ chức; hãy sửa tệp tổ chức hoặc cấp mã cho đơn vị mới",
                reason="unknown_site",
            )
        return result.site
    if result.reason == "revoked":
        raise Rejection(
            403,
            "token_revoked",
            f"token {result.token_id} has been revoked; ask the provincial IT centre for a new one",
            f"Mã truy cập {result.token_id} đã bị thu hồi; hãy xin mã mới từ trung tâm CNTT tỉnh",
            reason="revoked",
        )
    english = {
        "missing": "missing Authorization: Bearer <token> header",
        "malformed": "Authorization header is not 'Bearer <token>'",
        "unknown": "unknown token",
    }[result.reason]
    vietnamese = {
        "missing": "Thiếu tiêu đề Authorization: Bearer <mã>",
        "malformed": "Tiêu đề Authorization không đúng dạng 'Bearer <mã>'",
        "unknown": "Mã truy cập không tồn tại",
    }[result.reason]
    raise Rejection(
        401,
        "unauthorized",
        english,
        vietnamese,
        reason="unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="hatang"'},
    )


async def authenticate_request(request: web.Request) -> str:
    """The caller's site for the other authenticated endpoints (Rejection when refused)."""
    try:
        return await _authenticate(request)
    except StoreUnavailable as exc:
        raise _store_unavailable(exc) from None


def check_agent(request: web.Request, agent_id: str, field: str, index: int | None = None) -> None:
    """403 when a per-agent credential speaks for another agent id than its own.

    Site tokens (``token create``) may carry any agent id of their site, as before.
    """
    bound = request.get(CREDENTIAL_AGENT)
    if bound is not None and agent_id != bound:
        raise Rejection(
            403,
            "agent_mismatch",
            f"{field} is {agent_id[:80]!r}, but this credential belongs to agent {bound!r};"
            " use the agent_id written by `hatang-agent enroll`",
            f"{field} là {agent_id[:80]!r}, nhưng chứng thực này thuộc tác tử {bound!r};"
            " hãy dùng agent_id do `hatang-agent enroll` ghi",
            reason="site_mismatch",
            field=field,
            index=index,
        )


def clock_offset(batch: Batch, received_at: float, tolerance: float) -> float:
    """The sending agent's clock error (collector − agent, seconds) from the batch's
    ``sent_at``; 0 when unknown or within ``tolerance`` (network delay, NTP drift)."""
    if batch.sent_at is None:
        return 0.0
    offset = received_at - unix_seconds(batch.sent_at)
    return offset if abs(offset) > tolerance else 0.0


def _check_sites(reports: list[Report], token_site: str) -> None:
    """403 for any report of another site than the token's (whose site is in the org tree)."""
    for index, report in enumerate(reports):
        if report.site != token_site:
            raise Rejection(
                403,
                "site_mismatch",
                f"report {index} is for site {report.site!r}, but this token belongs to"
                f" {token_site!r}",
                f"Báo cáo {index} thuộc đơn vị {report.site!r}, nhưng mã truy cập thuộc"
                f" {token_site!r}",
                reason="site_mismatch",
                field=f"$.reports[{index}].site",
                index=index,
            )


async def post_reports(request: web.Request) -> web.Response:
    """POST /api/v1/reports: store a batch durably, then answer 200."""
    app = request.app
    state, metrics, config = app[INGEST_STATE], app[METRICS], app[CONFIG]
    limits = config.limits
    started = time.perf_counter()
    # The token first (in memory, no I/O): a flood without a valid token is answered 401
    # at once and never takes the in-flight slots that real agents need.
    try:
        site = await _authenticate(request)
    except Rejection as rej:
        return _reject(request, rej)
    except StoreUnavailable as exc:
        return _reject(request, _store_unavailable(exc))
    if state.inflight >= limits.max_inflight:
        return _reject(
            request,
            Rejection(
                429,
                "overloaded",
                "the collector is busy; retry later",
                "Máy chủ đang bận; hãy thử lại sau",
                reason="overloaded",
                headers={"Retry-After": RETRY_AFTER_OVERLOAD},
            ),
        )
    state.inflight += 1
    metrics.inflight.inc()
    try:
        return await _ingest(request, site, limits.max_body, limits.max_decompressed)
    except Rejection as rej:
        response = _reject(request, rej)
        if rej.status == 501:
            response.force_close()  # the body in a coding we do not know is never read
        if rej.status == 408:
            # The rest of the body may never come: answer, then close at once instead of
            # aiohttp's lingering read of the unread body (up to another 10s).
            response.force_close()
            with contextlib.suppress(ConnectionResetError):  # it may have gone meanwhile
                await response.prepare(request)
                await response.write_eof()
            request.protocol.force_close()
        return response
    finally:
        state.inflight -= 1
        metrics.inflight.dec()
        metrics.ingest_duration.observe(time.perf_counter() - started)


async def _ingest(
    request: web.Request, site: str, max_body: int, max_decompressed: int
) -> web.Response:
    app = request.app
    metrics, store = app[METRICS], app[STORE]
    _check_transfer(request)
    gzipped = _check_media(request)
    if request.content_length is not None and request.content_length > max_body:
        raise _too_large("request body", max_body)
    body_timeout = float(app[CONFIG].limits.body_timeout)
    try:
        async with asyncio.timeout(body_timeout):
            body, inflate = await _receive(request, gzipped, max_body, max_decompressed)
    except TimeoutError:
        raise Rejection(
            408,
            "body_timeout",
            f"the request body did not arrive within {body_timeout:g}s; the connection is closed",
            f"Nội dung yêu cầu không đến kịp trong {body_timeout:g} giây; kết nối bị đóng",
            reason="timeout",
        ) from None
    prepared = (
        None if len(body) > OFFLOAD_BYTES else _prepare_inline(body, inflate, max_decompressed)
    )
    if prepared is None:
        prepared = await asyncio.to_thread(_prepare, body, inflate, max_decompressed)
    batch, bodies = prepared
    limit = app[CONFIG].limits.max_reports_per_batch
    if len(batch.reports) > limit:
        raise Rejection(
            413,
            "too_many_reports",
            f"batch has {len(batch.reports)} reports, the limit is {limit}; send smaller batches",
            f"Lô có {len(batch.reports)} báo cáo, tối đa {limit}; hãy gửi lô nhỏ hơn",
            reason="too_large",
            field="$.reports",
        )
    _check_sites(batch.reports, site)
    for index, report in enumerate(batch.reports):
        check_agent(request, report.agent_id, f"$.reports[{index}].agent_id", index)
    offset = clock_offset(batch, time.time(), app[CONFIG].clock_skew.max_offset)
    try:
        result = await store.ingest(
            site, list(zip(batch.reports, bodies, strict=True)), clock_offset=offset
        )
    except StoreUnavailable as exc:
        raise _store_unavailable(exc) from None
    except StoreError as exc:
        event(log, logging.ERROR, "ingest.store_error", site=site, error=str(exc)[:300])
        raise _store_unavailable(exc) from None
    metrics.received.inc(result.accepted)
    metrics.duplicates.inc(result.duplicates)
    if result.conflicts:
        metrics.rejected.labels("conflict").inc(result.conflicts)
        _count_rejection(request, "conflict", result.conflicts)
        event(log, logging.WARNING, "ingest.conflict", site=site, conflicts=result.conflicts)
    if result.clock_skewed:
        metrics.clock_skew.inc(result.clock_skewed)
    if offset:
        event(log, logging.WARNING, "ingest.clock_offset", site=site, seconds=round(offset, 1))
    now = time.time()
    for report in batch.reports:
        metrics.lag.observe(max(0.0, now - unix_seconds(report.observed_at)))
    if result.accepted:
        app[REFRESH].set()
    return web.json_response(
        {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "conflicts": result.conflicts,
        }
    )


async def _receive(
    request: web.Request, gzipped: bool, max_body: int, max_decompressed: int
) -> tuple[bytes, bool]:
    """The body as sent, and whether it still has to be inflated."""
    if gzipped:
        # Served with auto_decompress=False (SERVER_KWARGS) the body arrives as sent and is
        # inflated later under our bound. A server that inflates by itself hands over JSON;
        # then only the decompressed bound applies here.
        inflated_by_server = getattr(request.content, "total_compressed_bytes", None) is not None
        body = await _read_body(request, max_decompressed, "decompressed body")
        inflate = not inflated_by_server
        if inflate and len(body) > max_body:
            raise _too_large("request body", max_body)
        return body, inflate
    return await _read_body(request, max_body, "request body"), False


def _store_unavailable(exc: Exception) -> Rejection:
    event(log, logging.WARNING, "ingest.store_unavailable", error=str(exc)[:300])
    return Rejection(
        503,
        "store_unavailable",
        "the store is unavailable; the report was not stored, retry later",
        "Kho dữ liệu tạm thời không dùng được; báo cáo chưa được lưu, hãy thử lại sau",
        reason="store_unavailable",
        headers={"Retry-After": RETRY_AFTER_STORE},
    )


def _count_rejection(request: web.Request, reason: str, n: int = 1) -> None:
    pending = request.app[INGEST_STATE].pending_rejections
    pending[reason] = pending.get(reason, 0) + n


def _reject(request: web.Request, rej: Rejection) -> web.Response:
    request.app[METRICS].rejected.labels(rej.reason).inc()
    _count_rejection(request, rej.reason)
    if rej.status == 503:
        return _rejection_response(rej)  # already logged where the store failed
    if rej.status in (401, 403):
        event(
            log,
            logging.WARNING,
            "ingest.rejected",
            status=rej.status,
            reason=rej.reason,
            peer=request.remote,
            token_id=request.get(TOKEN_ID),
        )
    else:
        event(
            log,
            logging.INFO,
            "ingest.rejected",
            status=rej.status,
            reason=rej.reason,
            field=rej.field,
            peer=request.remote,
            token_id=request.get(TOKEN_ID),
        )
    return _rejection_response(rej)


async def get_healthz(request: web.Request) -> web.Response:
    """GET /healthz: liveness and the store's health; 503 with the reason when the store
    cannot read or cannot write (a full disk, an I/O error, a damaged database)."""
    problem = await request.app[STORE].health()
    body = {
        "status": "ok" if problem is None else "unavailable",
        "store": "ok" if problem is None else "error",
        "version": __version__,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if problem is not None:
        body["reason"] = problem
    return web.json_response(body, status=200 if problem is None else 503)


async def get_evidence_public_key(request: web.Request) -> web.Response:
    """GET /api/v1/evidence/public-key: the key evidence bundles are verified against
    (404 until the first export created it; the server never creates a signing key)."""
    from pathlib import Path

    from collector.evidence.bundle import EvidenceError, load_key, public_key_info

    path = request.app[CONFIG].evidence.signing_key
    try:
        key = None if path is None else await asyncio.to_thread(load_key, Path(path))
    except EvidenceError as exc:
        event(log, logging.ERROR, "evidence.key_unreadable", error=str(exc)[:300])
        return error_response(
            503,
            "evidence_key_unreadable",
            "the evidence signing key cannot be read (see the collector log)",
            "không đọc được khoá ký bằng chứng (xem nhật ký collector)",
        )
    if key is None:
        return error_response(
            404,
            "no_evidence_key",
            "no evidence key yet: the first `hatang-collector evidence export` creates it",
            "chưa có khoá ký bằng chứng: lần xuất bằng chứng đầu tiên sẽ tạo khoá",
        )
    return web.json_response(public_key_info(key.public_key()))


async def get_metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics: the snapshot's families (rendered once per snapshot) and the app's
    registry, in the Prometheus text format; gzip when the scraper accepts it."""
    return await request.app[EXPOSITION].respond(request)


async def get_openapi(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.yaml: the document of this API, as kept in the repository."""
    return web.Response(text=_OPENAPI.read_text(encoding="utf-8"), content_type="application/yaml")


# -- middleware -------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors for routing failures and bugs; request counts by handler and code."""
    route = request.match_info.route.name or "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(
            exc.status,
            exc.reason.lower().replace(" ", "_"),
            exc.reason,
            "Yêu cầu không hợp lệ",
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )
    except Rejection as rej:
        response = _rejection_response(rej)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # A bug that every request hits must leave a traceback, not a flood of them.
        log_exception_limited(log, "http.unhandled_error", exc, route=route)
        response = error_response(
            500,
            "internal_error",
            "internal error; see the collector log",
            "Lỗi nội bộ; xem nhật ký của máy chủ",
        )
    request.app[METRICS].requests.labels(route, str(response.status)).inc()
    return response

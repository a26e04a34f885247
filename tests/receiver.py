"""A minimal collector for agent tests: the ``POST /api/v1/reports`` contract, for real.

It runs an aiohttp server on 127.0.0.1 in its own thread and event loop, so tests
can drive it from synchronous code while the agent runs in a subprocess or in the
test's own loop. Like the collector it authenticates the bearer token, checks the
content type and encoding, bounds the body, validates with ``agent.report``, stores
each report id once (duplicates and conflicts counted) and answers 200 only after
storing. Tests can script failures: queued answers (429/503 with ``Retry-After``),
reports to refuse with 422, reports that trigger a 500 (a collector bug), and a hold
that stores a batch but keeps the answer back (to kill the agent mid-send).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from agent.report import Report, decode_batch, encode

MAX_BODY = 5_000_000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a receiver started later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Request:
    """One request as the receiver saw it."""

    at: float
    status: int
    reports: int
    headers: dict[str, str]
    ids: list[str] = field(default_factory=list)


@dataclass
class Scripted:
    """An answer to give instead of processing the next request."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """The collector API contract on 127.0.0.1, in a background thread."""

    def __init__(
        self,
        *,
        tokens: dict[str, str] | None = None,
        port: int = 0,
        max_body: int = MAX_BODY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.tokens = tokens if tokens is not None else {"test-token": "bac-kan/cho-don"}
        self.revoked: set[str] = set()
        self.port = port
        self.max_body = max_body
        self.ssl_context = ssl_context
        self.poison: set[str] = set()
        self.crash: set[str] = set()  # report ids that make the "collector" fail with 500
        self.crash_all = False  # a collector bug that fails every batch with 500
        self.script: deque[Scripted] = deque()
        self.release = threading.Event()
        self.release.set()  # cleared: store batches but keep the answer back
        self.reports: dict[str, bytes] = {}
        self.order: list[str] = []
        self.requests: list[Request] = []
        self.held = 0  # requests currently stored but not answered
        self.duplicates = 0
        self.conflicts = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        self._ready.clear()
        self._thread = threading.Thread(target=self._serve, name="receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("receiver did not start")
        if self._error is not None:
            raise RuntimeError(f"receiver failed to start: {self._error}")
        return self

    def stop(self) -> None:
        self.release.set()
        if self._loop is not None and self._stopped is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(15)
        self._thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        app = web.Application(client_max_size=self.max_body * 2)
        app.add_routes([web.post("/api/v1/reports", self._handle)])
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self.port = int(sock.getsockname()[1])
            await web.SockSite(runner, sock, ssl_context=self.ssl_context).start()
            self._ready.set()
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    # -- views for tests --------------------------------------------------------------------

    def stored(self) -> list[Report]:
        """Stored reports in first-arrival order."""
        with self._lock:
            bodies = [self.reports[i] for i in self.order]
        return [msgspec.json.decode(b, type=Report) for b in bodies]

    def count(self) -> int:
        with self._lock:
            return len(self.order)

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests]

    # -- the handler ------------------------------------------------------------------------

    def _record(self, status: int, headers: Any, ids: list[str] | None = None) -> None:
        with self._lock:
            self.requests.append(
                Request(time.monotonic(), status, len(ids or []), dict(headers), ids or [])
            )

    def _error_response(
        self, request: web.Request, status: int, code: str, message: str, **extra: Any
    ) -> web.Response:
        self._record(status, request.headers)
        body = {"error": code, "message": message, **extra}
        return web.json_response(body, status=status)

    async def _handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if token in self.revoked:
            return self._error_response(request, 403, "token_revoked", "token revoked")
        site = self.tokens.get(token)
        if site is None:
            return self._error_response(request, 401, "unauthorized", "missing or unknown token")
        if request.content_type != "application/json":
            return self._error_response(
                request, 415, "unsupported_media_type", "Content-Type must be application/json"
            )
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("gzip", "identity"):
            return self._error_response(
                request, 415, "unsupported_encoding", f"Content-Encoding {encoding} unsupported"
            )
        # aiohttp inflates gzip bodies itself, so the bound applies to the decoded JSON.
        try:
            raw = await request.content.read(self.max_body + 1)
        except Exception as exc:  # a broken gzip stream surfaces here
            return self._error_response(request, 400, "bad_body", str(exc))
        if len(raw) > self.max_body:
            return self._error_response(request, 413, "too_large", "body too large")
        try:
            batch = decode_batch(raw)
        except msgspec.ValidationError as exc:
            text = str(exc)
            extra: dict[str, Any] = {}
            if m := re.search(r"`\$\.?(.*)`", text):
                extra["field"] = m.group(1)
                if idx := re.match(r"reports\[(\d+)\]", m.group(1)):
                    extra["index"] = int(idx.group(1))
            return self._error_response(request, 422, "schema", text, **extra)
        except msgspec.DecodeError as exc:
            return self._error_response(request, 400, "malformed", str(exc))
        for index, report in enumerate(batch.reports):
            if report.site != site:
                return self._error_response(
                    request, 403, "wrong_site", f"token is for {site}", index=index
                )
            if report.id in self.poison:
                return self._error_response(
                    request,
                    422,
                    "schema",
                    f"report {report.id} refused",
                    field=f"reports[{index}].id",
                    index=index,
                )
        if self.crash_all or self.crash.intersection(r.id for r in batch.reports):
            return self._error_response(request, 500, "internal", "internal server error")
        with self._lock:
            scripted = self.script.popleft() if self.script else None
        if scripted is not None:
            self._record(scripted.status, request.headers)
            return web.json_response(
                scripted.body, status=scripted.status, headers=scripted.headers
            )
        accepted = duplicates = conflicts = 0
        ids = [r.id for r in batch.reports]
        with self._lock:
            for report in batch.reports:
                body = encode(report)
                previous = self.reports.get(report.id)
                if previous is None:
                    self.reports[report.id] = body
                    self.order.append(report.id)
                    accepted += 1
                elif previous == body:
                    duplicates += 1
                else:
                    conflicts += 1
            self.duplicates += duplicates
            self.conflicts += conflicts
            # Recorded with the store, so a test that sees the reports also sees the request.
            self.requests.append(
                Request(time.monotonic(), 200, len(ids), dict(request.headers), ids)
            )
        if not self.release.is_set():
            with self._lock:
                self.held += 1
            try:
                await asyncio.to_thread(self.release.wait, 60)
            finally:
                with self._lock:
                    self.held -= 1
        return web.json_response(
            {"accepted": accepted, "duplicates": duplicates, "conflicts": conflicts}
        )


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca.pem, server.pem, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=ht-ca"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out"],
    ]
    steps[2] += [cert, "-days", "2", "-extfile", ext]
    for step in steps:
        subprocess.run(["openssl", *map(str, step)], check=True, capture_output=True)
    return ca, cert, key


def agent_config(
    tmp_path: Path,
    *,
    urls: list[str] | None = None,
    token: str = "test-token",
    collector: dict[str, Any] | None = None,
    spool: dict[str, Any] | None = None,
    tcp_port: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An agent config (as YAML data) for tests: loopback targets, 1s interval, no inventory."""
    data: dict[str, Any] = {
        "site": "bac-kan/cho-don",
        "interval": "1s",
        "jitter": 0.1,
        "spool": {"path": str(tmp_path / "spool" / "spool.db"), **(spool or {})},
        "inventory": {"enabled": False},
        "antivirus": {"enabled": False},
        "patches": {"enabled": False},
        "log": {"level": "debug"},
    }
    if tcp_port is not None:
        data["networks"] = {
            "lan": {"targets": [{"kind": "tcp", "address": f"127.0.0.1:{tcp_port}"}]},
            "wan": {"targets": [{"kind": "tcp", "address": f"127.0.0.1:{tcp_port}"}]},
        }
    if urls is not None:
        data["collector"] = {
            "url": urls,
            "token": token,
            "retry_initial": "50ms",
            "retry_max": "500ms",
            "timeout": "10s",
            **(collector or {}),
        }
    data.update(extra)
    return data


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write an agent config file (YAML is a superset of JSON)."""
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def dump(receiver: Receiver) -> str:
    """A readable summary for assertion messages."""
    return json.dumps(
        {"stored": receiver.count(), "statuses": receiver.statuses()[-20:]}, default=str
    )

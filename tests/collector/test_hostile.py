"""Hostile input beyond the bad-input table of ``test_api``: every endpoint fuzzed from the
OpenAPI document, unknown paths and methods, deep nesting and huge arrays, invalid UTF-8
and gzip variants, integers the store cannot hold, duplicate ids inside one batch,
hostile label values through to ``promtool``, header abuse, slow clients, and
``hatang-collector store verify``.

Every case runs against the real app on a loopback socket; every rejected request must
leave ``Store.digest()`` unchanged, and nothing may answer 5xx.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import http.client
import json
import shutil
import socket
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from agent.report import Batch, encode
from collector import api
from collector.app import BUILDER, _flush, create_app, server_kwargs
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import (
    REPO,
    SITE,
    MakeClient,
    agent_report,
    collector_config,
    new_token,
    promtool_check_metrics,
    run_cli,
    store_of,
    write_config,
)
from tests.collector.test_fuzz import FUZZ, ThreadedCollector

Client = TestClient[web.Request, web.Application]


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}


def good_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode(Batch(reports=[agent_report()])))
    return doc


async def post_rejected(
    client: Client, body: bytes, headers: dict[str, str], status: int, code: str
) -> dict[str, Any]:
    """POST, expect ``status``/``code``, and check the store did not change."""
    store = store_of(client)
    before = await store.digest()
    resp = await client.post("/api/v1/reports", data=body, headers=headers)
    assert resp.status == status, await resp.text()
    error: dict[str, Any] = await resp.json()
    assert error["error"] == code, error
    assert " / " in error["message"]
    assert await store.digest() == before
    return error


# -- fuzzing every operation of the document, and what is not in it ----------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedCollector]:
    collector = ThreadedCollector(tmp_path_factory.mktemp("hostile-fuzz"))
    yield collector
    collector.close()


SCHEMA = schemathesis.openapi.from_path(REPO / "collector" / "openapi.yaml")
OPERATIONS: list[Any] = [result.ok() for result in SCHEMA.get_all_operations()]  # type: ignore[union-attr]


def test_the_document_lists_every_route() -> None:
    """The fuzzing below covers every route the app serves (no undocumented endpoint)."""
    routes = {
        (r.method, r.resource.canonical)
        for r in create_app(collector_config(Path("/nonexistent"))).router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    assert routes == {(op.method.upper(), op.path) for op in OPERATIONS}


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_every_operation_answers_as_documented(server: ThreadedCollector, operation: Any) -> None:
    """Schemathesis' checks (no 5xx, documented status, content type and body schema) for
    generated requests to each operation; the store is unchanged unless a batch was stored."""
    base_url = f"http://127.0.0.1:{server.port}"
    headers = {"Authorization": f"Bearer {server.token}"}

    @settings(FUZZ, max_examples=30)
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        before = server.digest()
        if case.headers:
            case.headers.pop("Content-Encoding", None)  # "gzip" on a plain body is a 400
        response = case.call(base_url=base_url, headers=headers)
        # Schema-valid reports for sites outside the org or the token are 403/422, both
        # documented; the response checks hold for every answer.
        # Exempt: the document's observed_at is a plain string (no format), so "valid"
        # reports with junk timestamps are rightly refused; tests/collector/test_fuzz.py
        # covers POST /api/v1/reports in depth.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])
        if response.status_code != 200:
            assert server.digest() == before

    run()


METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"])
PATH_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?%")
PATHS = st.one_of(
    st.sampled_from(["/api/v1/reports", "/healthz", "/metrics", "/api/v1/openapi.yaml"]),
    st.text(PATH_CHARS, max_size=60).map(lambda p: "/" + p),
    st.sampled_from(["/api/v1/reports/../../etc/passwd", "//healthz", "/api/v1//reports",
                     "/api/v2/reports", "/METRICS", "/healthz/", "/%2e%2e/%2e%2e"]),
)  # fmt: skip


@FUZZ
@given(
    method=METHODS,
    path=PATHS,
    query=st.text(PATH_CHARS, max_size=40),
    body=st.binary(max_size=256),
)
def test_unknown_paths_and_methods_never_fail_the_server(
    server: ThreadedCollector, method: str, path: str, query: str, body: bytes
) -> None:
    before = server.digest()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        target = path + ("?" + query if query else "")
        conn.request(method, target, body=body or None, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, (method, target, resp.status, data[:300])
    if resp.status >= 400 and method != "HEAD":
        # Every answer of the app is JSON; only requests the HTTP parser refuses are not.
        if resp.getheader("Content-Type", "").startswith("application/json"):
            assert isinstance(json.loads(data)["error"], str)
        else:
            assert resp.status == 400
    assert server.digest() == before


@FUZZ
@given(
    path=st.sampled_from(["/healthz", "/metrics", "/api/v1/openapi.yaml"]),
    headers=st.dictionaries(
        st.sampled_from(["Accept", "Accept-Encoding", "Authorization", "Range", "If-None-Match",
                         "X-Forwarded-For", "Cookie", "Content-Length"]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=100),
        max_size=5,
    ),
)  # fmt: skip
def test_read_endpoints_ignore_hostile_headers(
    server: ThreadedCollector, path: str, headers: dict[str, str]
) -> None:
    headers.pop("Content-Length", None)  # http.client frames the (empty) body itself
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, (path, headers, data[:300])
    if path == "/metrics":
        assert any(f.name == "hatang_reports_received" for f in text_string_to_metric_families(
            data.decode()))  # fmt: skip


# -- bodies ---------------------------------------------------------------------------------

DEPTH = 100_000


@pytest.mark.parametrize(
    ("body", "gzipped", "status", "code"),
    [
        pytest.param(b'{"reports": [{"x": ' + b"[" * DEPTH + b"]" * DEPTH + b"}]}", False, 400,
                     "malformed_json", id="100k-nested-arrays-in-a-report"),
        pytest.param(b'{"reports": [' + b'{"a":' * DEPTH + b"1" + b"}" * DEPTH + b"]}", True,
                     400, "malformed_json", id="100k-nested-objects-gzipped"),
        pytest.param(b"[" * DEPTH, True, 422, "invalid_report", id="100k-unclosed-arrays"),
        pytest.param(b'{"reports": ' + b"[" * DEPTH + b"]" * DEPTH + b"}", True, 422,
                     "invalid_report", id="100k-nested-arrays-as-reports"),
        pytest.param(b'{"reports": [' + b"0," * 2_000_000 + b"0]}", True, 422,
                     "invalid_report", id="2M-element-array"),
        pytest.param(b'{"reports": [], "pad": "' + b"x" * 5_000_000 + b'"}', True, 422,
                     "invalid_report", id="5MB-string"),
    ],
)  # fmt: skip
async def test_nesting_and_huge_arrays_are_refused_cheaply(
    client: Client, body: bytes, gzipped: bool, status: int, code: str
) -> None:
    token = await new_token(client)
    headers = auth(token)
    if gzipped:
        body, headers = gzip.compress(body), auth(token, **{"Content-Encoding": "gzip"})
    await post_rejected(client, body, headers, status, code)
    assert (await client.get("/healthz")).status == 200


def test_huge_section_arrays_name_the_field() -> None:
    """Bounds inside a report: 5000 LAN hosts (the bound is 4096) is a 422 at that field."""
    doc = good_doc()
    doc["reports"][0]["lan_hosts"] = {"hosts": [{"mac": f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"}
                                                for i in range(5000)]}  # fmt: skip
    with pytest.raises(api.Rejection) as err:
        api.decode(json.dumps(doc).encode())
    assert err.value.status == 422
    assert err.value.field == "$.reports[0].lan_hosts.hosts"


def _with_hostname(raw: bytes) -> bytes:
    """A valid batch whose hostname is replaced by raw (not necessarily UTF-8) bytes."""
    body = json.dumps(good_doc()).encode()
    return body.replace(b'"hostname": "may-01"', b'"hostname": "' + raw + b'"')


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(_with_hostname(b"\xc0\xaf"), "invalid_utf8", id="overlong-slash"),
        pytest.param(_with_hostname(b"\xed\xa0\x80"), "invalid_utf8", id="utf16-surrogate-bytes"),
        pytest.param(_with_hostname(b"\xf4\x90\x80\x80"), "invalid_utf8", id="beyond-u10ffff"),
        pytest.param(_with_hostname(b"m\xc3"), "invalid_utf8", id="cut-multibyte"),
        pytest.param(_with_hostname(b"\\ud800"), "malformed_json", id="lone-surrogate-escape"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(good_doc()).encode(), "malformed_json",
                     id="byte-order-mark"),
        pytest.param(json.dumps(good_doc()).encode("utf-16"), "invalid_utf8", id="utf-16-body"),
    ],
)  # fmt: skip
async def test_invalid_utf8_and_escapes_are_400(client: Client, body: bytes, code: str) -> None:
    token = await new_token(client)
    await post_rejected(client, body, auth(token), 400, code)
    # The same bytes gzipped take the same path after inflation.
    await post_rejected(
        client, gzip.compress(body), auth(token, **{"Content-Encoding": "gzip"}), 400, code
    )


def _bad_crc(data: bytes) -> bytes:
    crc = struct.unpack("<I", data[-8:-4])[0] ^ 0xFFFFFFFF
    return data[:-8] + struct.pack("<I", crc) + data[-4:]


GOOD_GZIP = gzip.compress(encode(Batch(reports=[agent_report()])))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(GOOD_GZIP + b"trailing garbage", id="trailing-garbage"),
        pytest.param(GOOD_GZIP + GOOD_GZIP, id="two-members"),
        pytest.param(_bad_crc(GOOD_GZIP), id="bad-crc"),
        pytest.param(GOOD_GZIP[:10], id="header-only"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\xff" * 50, id="bad-deflate"),
    ],
)
async def test_broken_gzip_variants_are_400(client: Client, body: bytes) -> None:
    token = await new_token(client)
    await post_rejected(client, body, auth(token, **{"Content-Encoding": "gzip"}), 400, "bad_gzip")


@pytest.mark.parametrize(("field", "value"), [("seq", 10**30), ("spool_dropped", 2**63)])
async def test_integers_beyond_the_store_are_422_not_500(
    client: Client, field: str, value: int
) -> None:
    token = await new_token(client)
    doc = good_doc()
    doc["reports"][0][field] = value
    error = await post_rejected(
        client, json.dumps(doc).encode(), auth(token), 422, "invalid_report"
    )
    assert error["field"] == f"$.reports[0].{field}"
    assert error["index"] == 0


async def test_duplicate_ids_in_one_batch_first_wins_and_the_other_is_counted(
    client: Client,
) -> None:
    token = await new_token(client)
    original = agent_report(lan_up=True)
    doc = json.loads(encode(Batch(reports=[original, original])))
    doc["reports"][1]["networks"]["lan"]["up"] = False  # same id, different content
    resp = await client.post("/api/v1/reports", data=json.dumps(doc).encode(), headers=auth(token))
    assert resp.status == 200
    assert await resp.json() == {"accepted": 1, "duplicates": 0, "conflicts": 1}
    store = store_of(client)
    end = original.observed_at + dt.timedelta(seconds=1)
    stored = [r async for r in store.reports(SITE, original.observed_at, end)]
    assert stored == [original]
    assert client.app is not None
    await _flush(client.app)  # the persistent counter is written by the periodic flush
    assert (await store.rejection_counts()).get("conflict") == 1


NASTY = [
    'quote"} 1\nhatang_fake{a="b',
    "back\\slash\\",
    "tab\tcr\rnul-free\x7f",
    "dòng tiếng Việt — “ngoặc” ✓ 🛰",
    "=,{}# " + "x" * 480,
]


@pytest.mark.prometheus
async def test_hostile_label_values_keep_metrics_clean_for_promtool(client: Client) -> None:
    """Free-text label values (probe targets) with quotes, newlines, backslashes, control
    characters and near-limit lengths: /metrics parses and ``promtool check metrics`` is
    clean. A 10 kB value is refused at ingest with the field named."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    token = await new_token(client)
    for value in NASTY:
        body = encode(Batch(reports=[agent_report(target=value)]))
        resp = await client.post("/api/v1/reports", data=body, headers=auth(token))
        assert resp.status == 200, await resp.text()
    doc = good_doc()
    doc["reports"][0]["networks"]["lan"]["targets"][0]["target"] = '"\n' * 5000
    error = await post_rejected(
        client, json.dumps(doc).encode(), auth(token), 422, "invalid_report"
    )
    assert error["field"] == "$.reports[0].networks.lan.targets[0].target"
    assert client.app is not None
    await client.app[BUILDER].refresh()
    text = await (await client.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "hatang_fake" not in families
    targets = {s.labels["target"] for s in families["hatang_probe_rtt_seconds"].samples}
    assert NASTY[-1][:40] in "".join(targets)  # present (possibly shortened by the label bound)
    await promtool_check_metrics(promtool, text)


# -- headers --------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes (anything http.client would refuse to send) and read until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def ingest_request(headers: list[bytes], body: bytes) -> bytes:
    lines = [b"POST /api/v1/reports HTTP/1.1", b"Host: collector", *headers,
             b"Content-Type: application/json", b"Content-Length: %d" % len(body),
             b"Connection: close"]  # fmt: skip
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


AUTH_VALUES = [
    pytest.param(lambda t: [b"Authorization: Digest username=a, response=b"], id="digest"),
    pytest.param(lambda t: [b"Authorization: Bearer " + t.encode() + b" extra"], id="two-words"),
    pytest.param(lambda t: [b"Authorization: Bearer " + b"A" * 300], id="300-char-token"),
    pytest.param(lambda t: ["Authorization: Bearer tökén".encode()], id="non-ascii-utf8"),
    pytest.param(lambda t: [b"Authorization: Bearer \xff\xfe"], id="non-ascii-latin1"),
    pytest.param(lambda t: [b"Authorization: Bearer " + t.encode(), b"Authorization: Bearer x"],
                 id="two-headers-valid-first"),
    pytest.param(lambda t: [b"Authorization: Bearer x", b"Authorization: Bearer " + t.encode()],
                 id="two-headers-valid-second"),
    pytest.param(lambda t: [b"Authorization: " + t.encode()], id="no-scheme"),
    pytest.param(lambda t: [b"Authorization: Bearer"], id="scheme-only"),
]  # fmt: skip


@pytest.mark.parametrize("make_headers", AUTH_VALUES)
async def test_bad_authorization_is_401_and_stores_nothing(
    client: Client, make_headers: Any
) -> None:
    token = await new_token(client)
    store = store_of(client)
    before = await store.digest()
    assert client.port is not None
    body = encode(Batch(reports=[agent_report()]))
    answer = await asyncio.to_thread(
        raw_exchange, client.port, ingest_request(make_headers(token), body)
    )
    assert status_of(answer) == 401, answer[:500]
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert b"WWW-Authenticate: Bearer" in head
    assert json.loads(payload)["error"] == "unauthorized"
    assert await store.digest() == before


HEADER_ABUSE = [
    pytest.param([b"X-Pad: " + b"a" * 20_000], id="20kB-header"),
    pytest.param([b"X-H%d: v" % i for i in range(300)], id="300-headers"),
    pytest.param([b"Authorization: Bearer a\x00b"], id="nul-in-header"),
    pytest.param([b"Transfer-Encoding: chunked"], id="content-length-and-chunked"),
    pytest.param([b"Content-Length: 7"], id="two-content-lengths"),
    pytest.param([b"Bad Header Name: x"], id="space-in-name"),
]


@pytest.mark.parametrize("headers", HEADER_ABUSE)
async def test_header_abuse_is_400_and_the_server_keeps_serving(
    client: Client, headers: list[bytes]
) -> None:
    token = await new_token(client)
    store = store_of(client)
    before = await store.digest()
    assert client.port is not None
    body = encode(Batch(reports=[agent_report()]))
    request = ingest_request([b"Authorization: Bearer " + token.encode(), *headers], body)
    answer = await asyncio.to_thread(raw_exchange, client.port, request)
    assert status_of(answer) == 400, answer[:500]
    assert await store.digest() == before
    ok = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert ok.status == 200


# -- slow clients ---------------------------------------------------------------------------

BODY_TIMEOUT = 1.0
HEADER_TIMEOUT = 2.0


@pytest.fixture
async def slow_client(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> Client:
    """The app served as ``serve`` does (server_kwargs) with short connection deadlines."""
    config = collector_config(
        tmp_path,
        limits={"body_timeout": f"{BODY_TIMEOUT}s", "header_timeout": f"{HEADER_TIMEOUT}s"},
    )
    server = await aiohttp_server(create_app(config), **server_kwargs(config))
    client: Client = await aiohttp_client(server)
    return client


def trickle(port: int, head: bytes, drip: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send ``head``, then one byte of ``drip`` every ``every`` seconds until the server
    answers or closes; return what it sent back and how long that took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(head)
        sock.settimeout(every)
        answer = b""
        for i in range(int(limit / every)):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.sendall(drip[i % len(drip) : i % len(drip) + 1] if drip else b"")
                except OSError:
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        return answer, time.monotonic() - started


def slow_head(token: str, length: int) -> bytes:
    return (
        "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("drip", [b'{"reports": [   ', b""], ids=["trickled-body", "stalled-body"])
async def test_slow_body_gets_408_and_does_not_block_other_agents(
    slow_client: Client, drip: bytes
) -> None:
    token = await new_token(slow_client)
    store = store_of(slow_client)
    assert slow_client.port is not None
    slow = asyncio.create_task(
        asyncio.to_thread(trickle, slow_client.port, slow_head(token, 100_000), drip, 0.2, 60)
    )
    assert slow_client.app is not None
    state = slow_client.app[api.INGEST_STATE]
    for _ in range(200):  # the slow request is in the handler
        if state.inflight == 1:
            break
        await asyncio.sleep(0.01)
    # Meanwhile another agent's ingest goes through at once.
    body = encode(Batch(reports=[agent_report()]))
    resp = await slow_client.post("/api/v1/reports", data=body, headers=auth(token))
    assert resp.status == 200
    assert not slow.done()
    digest = await store.digest()
    answer, took = await slow
    assert status_of(answer) == 408, answer[:300]
    assert b'"error": "body_timeout"' in answer
    assert took >= BODY_TIMEOUT
    assert took < BODY_TIMEOUT + 20  # bounded (generous for a loaded CI machine)
    assert await store.digest() == digest
    assert state.inflight == 0
    text = await (await slow_client.get("/metrics")).text()
    assert 'hatang_reports_rejected_total{reason="timeout"} 1.0' in text


@pytest.mark.parametrize(
    "head",
    [b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\n", b""],
    ids=["trickled-headers", "idle-connection"],
)
async def test_slow_headers_and_idle_connections_are_closed(
    slow_client: Client, head: bytes
) -> None:
    assert slow_client.port is not None
    answer, took = await asyncio.to_thread(
        trickle, slow_client.port, head, b"X-Slow: 1\r\n" if head else b"", 0.2, 60
    )
    assert took >= HEADER_TIMEOUT * 0.9
    assert took < HEADER_TIMEOUT + 20
    assert answer == b""  # closed without a request being handled


# -- store verify ---------------------------------------------------------------------------


async def test_store_verify_prints_the_digest_and_catches_corruption(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)  # store: sqlite:collector.db next to it
    store = SQLiteStore(tmp_path / "collector.db")
    await store.open()
    await store.create_token(SITE)
    reports = [agent_report() for _ in range(300)]
    await store.ingest(SITE, [(r, encode(r)) for r in reports])
    digest = await store.digest()
    await store.close()

    ok = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config_path))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout.splitlines()[0]
    assert "300 reports" in ok.stdout
    assert ok.stdout.splitlines()[-1] == f"digest {digest}"
    as_json = await asyncio.to_thread(
        run_cli, "store", "verify", "--config", str(config_path), "--json"
    )
    assert json.loads(as_json.stdout)["digest"] == digest

    # Flip bytes in the middle of the database file (after a checkpoint put all in it).
    db = tmp_path / "collector.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(page * 3, len(data) - page, page * 2):
        data[offset + 100 : offset + 400] = b"\xa5" * 300
    db.write_bytes(bytes(data))
    bad = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config_path))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "CORRUPT" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr

    db.write_bytes(b"not a database at all" * 100)
    bad = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config_path))
    assert bad.returncode == 1
    assert "CORRUPT" in bad.stdout and "Traceback" not in bad.stderr

    db.unlink()
    missing = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config_path))
    assert missing.returncode == 1
    assert "no such file" in missing.stderr
    assert not db.exists()  # verify never creates a store


async def test_rejected_requests_leave_store_verify_unchanged(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """The CLI's digest (read-only, another process) equals before and after a volley of
    rejected requests against a running collector."""
    client: Client = await make_client(collector_config(tmp_path))
    token = await new_token(client)
    resp = await client.post(
        "/api/v1/reports", data=encode(Batch(reports=[agent_report()])), headers=auth(token)
    )
    assert resp.status == 200
    config_path = write_config(tmp_path, store={"url": "sqlite:collector.db"})
    before = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config_path))
    assert before.returncode == 0, before.stderr
    for body, headers in [
        (b"{", auth(token)),
        (GOOD_GZIP[:-5], auth(token, **{"Content-Encoding": "gzip"})),
        (encode(Batch(reports=[agent_report("demo/xa-binh-minh")])), auth(token)),
        (encode(Batch(reports=[agent_report()])), auth("hat_unknown_token")),
    ]:
        resp = await client.post("/api/v1/reports", data=body, headers=headers)
        assert 400 <= resp.status < 500
    after = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config_path))
    assert after.returncode == 0
    assert after.stdout.splitlines()[-1] == before.stdout.splitlines()[-1]

"""The ingest API over real loopback HTTP: round trip, replays, conflicts, and a bad-input
table covering every error status, each with its JSON error and the store unchanged.

Run as a module (``python3 -m tests.collector.test_api``) to regenerate the report
schemas embedded in ``collector/openapi.yaml`` after the wire format changed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import shutil
import socket
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agent.report import Batch, encode, schema_components
from collector import api
from collector.app import BUILDER, create_app
from tests.collector.conftest import (
    OTHER_SITE,
    REPO,
    SITE,
    MakeClient,
    agent_report,
    collector_config,
    new_token,
    promtool_check_metrics,
    store_of,
)

Client = TestClient[web.Request, web.Application]
OPENAPI = REPO / "collector" / "openapi.yaml"


def batch_body(*reports: Any) -> bytes:
    return encode(Batch(reports=list(reports)))


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}


async def metric_value(client: Client, name: str, **labels: str) -> float | None:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_round_trip_stores_reports_and_metrics_show_them(client: Client) -> None:
    token = await new_token(client)
    reports = [agent_report(seq=i, hostname=f"may-{i}") for i in range(3)]
    resp = await client.post("/api/v1/reports", data=batch_body(*reports), headers=auth(token))
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"accepted": 3, "duplicates": 0, "conflicts": 0}

    store = store_of(client)
    assert await store.report_count() == 3
    stored = [r async for r in store.reports(SITE, reports[0].observed_at, dt.datetime.now(dt.UTC))]
    assert {r.id for r in stored} == {r.id for r in reports}
    assert stored[0] == next(r for r in reports if r.id == stored[0].id)  # byte-exact content
    states = await store.agent_states()
    assert [(s.site, s.agent_id, s.reports_received) for s in states] == [(SITE, "pc-01", 3)]

    assert await metric_value(client, "hatang_reports_received_total") == 3
    # The indicator snapshot is rebuilt after ingests: the site is up in /metrics.
    for _ in range(200):
        if await metric_value(client, "hatang_site_up", site=SITE) == 1:
            break
        await asyncio.sleep(0.05)
    assert await metric_value(client, "hatang_site_up", site=SITE) == 1
    assert await metric_value(client, "hatang_network_up", site=SITE, network="lan") == 1


async def test_snapshot_refreshes_are_counted_on_metrics(client: Client) -> None:
    """An operator (and bench/scale.py) sees how often the snapshot is rebuilt under load."""
    at_start = await metric_value(client, "hatang_snapshot_refreshes_total")
    assert at_start is not None and at_start >= 1  # the refresh at start-up
    token = await new_token(client)
    resp = await client.post(
        "/api/v1/reports", data=batch_body(agent_report()), headers=auth(token)
    )
    assert resp.status == 200, await resp.text()
    for _ in range(200):
        if (await metric_value(client, "hatang_snapshot_refreshes_total") or 0) > at_start:
            break
        await asyncio.sleep(0.05)
    assert (await metric_value(client, "hatang_snapshot_refreshes_total") or 0) > at_start
    assert await metric_value(client, "hatang_site_up", site=SITE) == 1


async def test_scrapes_after_refreshes_never_render_on_the_serving_loop(client: Client) -> None:
    """The snapshot part of /metrics is rendered in a worker thread (at 20k agents a render
    on the loop stalled it for a quarter of a second); scrapes, plain and gzip, serve that
    render, and each snapshot is still rendered once."""
    assert client.app is not None
    exposition = client.app[api.EXPOSITION]
    loop_thread = threading.get_ident()
    token = await new_token(client)
    seen: list[tuple[int, int | None]] = []
    for seq in range(3):
        resp = await client.post(
            "/api/v1/reports", data=batch_body(agent_report(seq=seq)), headers=auth(token)
        )
        assert resp.status == 200, await resp.text()
        builder = client.app[BUILDER]
        generated = builder.snapshot.generated_at
        for _ in range(400):  # the refresh that follows the ingest
            if builder.snapshot.generated_at > generated:
                break
            await asyncio.sleep(0.02)
        assert builder.snapshot.generated_at > generated
        for encoding in ("identity", "gzip", "identity"):
            got = await client.get("/metrics", headers={"Accept-Encoding": encoding})
            assert got.status == 200
            assert f'hatang_site_up{{site="{SITE}"}} 1.0' in await got.text()
            seen.append((exposition.renders, exposition.render_thread))
    assert all(thread not in (None, loop_thread) for _, thread in seen)
    # Three scrapes per snapshot, one render each (no scrape rendered again).
    for i in range(0, len(seen), 3):
        assert seen[i][0] == seen[i + 1][0] == seen[i + 2][0]


async def test_gzip_body_is_accepted(client: Client) -> None:
    token = await new_token(client)
    body = gzip.compress(batch_body(agent_report()))
    resp = await client.post(
        "/api/v1/reports", data=body, headers=auth(token, **{"Content-Encoding": "gzip"})
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == 1


async def test_replayed_batch_is_acknowledged_and_stored_once(client: Client) -> None:
    token = await new_token(client)
    body = batch_body(agent_report(seq=1), agent_report(seq=2))
    first = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert await first.json() == {"accepted": 2, "duplicates": 0, "conflicts": 0}
    digest = await store_of(client).digest()
    again = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert again.status == 200
    assert await again.json() == {"accepted": 0, "duplicates": 2, "conflicts": 0}
    assert await store_of(client).report_count() == 2
    assert await store_of(client).digest() == digest


async def test_same_id_different_content_is_a_conflict_and_the_first_wins(client: Client) -> None:
    token = await new_token(client)
    original = agent_report(lan_up=True)
    forged = msgspec.structs.replace(original, seq=original.seq + 100)
    resp = await client.post("/api/v1/reports", data=batch_body(original), headers=auth(token))
    assert (await resp.json())["accepted"] == 1
    resp = await client.post("/api/v1/reports", data=batch_body(forged), headers=auth(token))
    assert resp.status == 200
    assert await resp.json() == {"accepted": 0, "duplicates": 0, "conflicts": 1}
    stored = [
        r
        async for r in store_of(client).reports(
            None, original.observed_at, original.observed_at + dt.timedelta(seconds=1)
        )
    ]
    assert stored == [original]
    assert await metric_value(client, "hatang_reports_rejected_total", reason="conflict") == 1


@pytest.mark.parametrize("hours", [-3, 3], ids=["clock-behind", "clock-ahead"])
async def test_a_wrong_agent_clock_is_measured_by_sent_at_and_moved_onto_ours(
    client: Client, hours: int
) -> None:
    """An agent whose clock is hours off: its reports keep what it said, but windows and
    the site view use the collector's clock, and the skew is counted and shown."""
    token = await new_token(client)
    off = dt.timedelta(hours=hours)
    now = dt.datetime.now(dt.UTC)
    report = agent_report(observed_at=now + off - dt.timedelta(seconds=5))
    body = encode(Batch(reports=[report], sent_at=now + off))
    resp = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert resp.status == 200
    assert await metric_value(client, "hatang_reports_clock_skew_total") == 1
    store = store_of(client)
    windows = await store.network_windows(now - dt.timedelta(minutes=30))
    assert {(w.network, w.checks) for w in windows} == {("lan", 1), ("internet", 1)}
    [state] = await store.agent_states()
    assert state.last_observed_at == report.observed_at
    assert state.last_effective_at is not None
    assert abs((state.last_effective_at - (now - dt.timedelta(seconds=5))).total_seconds()) < 60
    # The site view follows once the snapshot is rebuilt after the ingest.
    for _ in range(200):
        if await metric_value(client, "hatang_site_clock_skew_agents", site=report.site) == 1:
            break
        await asyncio.sleep(0.05)
    assert await metric_value(client, "hatang_site_clock_skew_agents", site=report.site) == 1


async def test_a_small_clock_difference_is_left_alone(client: Client) -> None:
    token = await new_token(client)
    now = dt.datetime.now(dt.UTC)
    report = agent_report(observed_at=now - dt.timedelta(seconds=70))
    body = encode(Batch(reports=[report], sent_at=now - dt.timedelta(seconds=60)))
    resp = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert resp.status == 200
    assert await metric_value(client, "hatang_reports_clock_skew_total") == 0
    [state] = await store_of(client).agent_states()
    assert state.last_effective_at == state.last_observed_at == report.observed_at


async def test_observed_at_in_the_future_is_kept_counted_and_filed_at_arrival(
    client: Client,
) -> None:
    token = await new_token(client)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    report = agent_report(observed_at=future)
    resp = await client.post("/api/v1/reports", data=batch_body(report), headers=auth(token))
    assert resp.status == 200
    assert await metric_value(client, "hatang_reports_clock_skew_total") == 1
    store = store_of(client)
    # Windows count it now (its arrival), not three days ahead.
    windows = await store.network_windows(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    assert {(w.network, w.checks) for w in windows} == {("lan", 1), ("internet", 1)}
    future_windows = await store.network_windows(future - dt.timedelta(hours=1))
    assert future_windows == []
    # The report itself keeps what the agent said.
    [stored] = [r async for r in store.reports(None, future, future + dt.timedelta(seconds=1))]
    assert stored.observed_at == future


async def test_hostile_label_values_are_stored_and_metrics_stay_parseable(client: Client) -> None:
    token = await new_token(client)
    nasty = 'x"} 1\nhatang_fake{a="b'[:40] + "\\" + "é" * 300
    report = agent_report(target=nasty)
    resp = await client.post("/api/v1/reports", data=batch_body(report), headers=auth(token))
    assert resp.status == 200, await resp.text()
    for _ in range(200):  # wait for the snapshot that includes the report
        if await metric_value(client, "hatang_site_up", site=SITE) == 1:
            break
        await asyncio.sleep(0.05)
    text = await (await client.get("/metrics")).text()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert "hatang_fake" not in families
    assert "hatang_reports_received" in families


def _hold_connection(port: int, token: str) -> socket.socket:
    """Start an ingest whose body never finishes: one request stays in flight."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        (
            "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{"
        ).encode()
    )
    return sock


def _gzip_bomb(size: int) -> bytes:
    return gzip.compress(b'{"reports": [' + b" " * size + b"]}", compresslevel=9)


def _nested(depth: int) -> bytes:
    return b'{"x": ' + b"[" * depth + b"]" * depth + b', "reports": []}'


# (id, how to build headers from the token, body, status, error code, field, index)
BAD_INPUTS: list[tuple[str, Any, Any, int, str, str | None, int | None]] = [
    ("no-token", lambda t: {"Content-Type": "application/json"}, "ok", 401, "unauthorized",
     None, None),
    ("unknown-token", lambda t: auth("hat_nope_" + "x" * 40), "ok", 401, "unauthorized",
     None, None),
    ("basic-auth", lambda t: {**auth(t), "Authorization": "Basic dXNlcjpwYXNz"}, "ok", 401,
     "unauthorized", None, None),
    ("revoked-token", "revoked", "ok", 403, "token_revoked", None, None),
    ("other-site", lambda t: auth(t), "other-site", 403, "site_mismatch", "$.reports[1].site", 1),
    ("text-plain", lambda t: {**auth(t), "Content-Type": "text/plain"}, "ok", 415,
     "unsupported_media_type", None, None),
    ("latin1-charset", lambda t: {**auth(t), "Content-Type": "application/json; charset=latin-1"},
     "ok", 415, "unsupported_media_type", None, None),
    ("brotli", lambda t: auth(t, **{"Content-Encoding": "br"}), "ok", 415,
     "unsupported_media_type", None, None),
    ("body-too-large", lambda t: auth(t), b'{"reports": [' + b" " * 70_000 + b"]}", 413,
     "too_large", None, None),
    ("gzip-bomb", lambda t: auth(t, **{"Content-Encoding": "gzip"}), _gzip_bomb(50_000_000), 413,
     "too_large", None, None),
    ("too-many-reports", lambda t: auth(t), "six", 413, "too_many_reports", "$.reports", None),
    ("malformed-json", lambda t: auth(t), b'{"reports": [', 400, "malformed_json", None, None),
    ("not-json", lambda t: auth(t), b"\x00\x01binary", 400, "malformed_json", None, None),
    ("invalid-utf8", lambda t: auth(t), b'{"x": "\xff\xfe", "reports": []}', 400, "invalid_utf8",
     None, None),
    ("truncated-gzip", lambda t: auth(t, **{"Content-Encoding": "gzip"}), "truncated-gzip", 400,
     "bad_gzip", None, None),
    ("not-gzip", lambda t: auth(t, **{"Content-Encoding": "gzip"}), b"plain text", 400, "bad_gzip",
     None, None),
    ("deep-nesting", lambda t: auth(t), _nested(20_000), 400, "malformed_json", None, None),
    ("empty-batch", lambda t: auth(t), b'{"reports": []}', 422, "invalid_report", "$.reports",
     None),
    ("huge-array", lambda t: auth(t), b'{"reports": [' + b"1," * 20_000 + b"1]}", 422,
     "invalid_report", "$.reports[0]", 0),
    ("bad-site-id", lambda t: auth(t), "bad-site", 422, "invalid_report", "$.reports[0].site", 0),
    ("missing-field", lambda t: auth(t), "missing-field", 422, "invalid_report", "$.reports[0]", 0),
    ("negative-rtt", lambda t: auth(t), "negative-rtt", 422, "invalid_report",
     "$.reports[0].networks.lan.targets[0].rtt_seconds", 0),
    ("unknown-site", "unknown-site", "unknown-site", 403, "unknown_site", None, None),
]  # fmt: skip


def _body(kind: Any) -> bytes:
    if isinstance(kind, bytes):
        return kind
    good = json.loads(batch_body(agent_report()))
    if kind == "ok":
        return json.dumps(good).encode()
    if kind == "six":
        return batch_body(*(agent_report() for _ in range(6)))
    if kind == "other-site":
        return batch_body(agent_report(), agent_report(OTHER_SITE))
    if kind == "truncated-gzip":
        return gzip.compress(batch_body(agent_report()))[:-12]
    report = good["reports"][0]
    if kind == "bad-site":
        report["site"] = "Bad Site!"
    elif kind == "missing-field":
        del report["agent_id"]
    elif kind == "negative-rtt":
        report["networks"]["lan"]["targets"][0]["rtt_seconds"] = -1
    elif kind == "unknown-site":
        report["site"] = "demo/khong-co"
    return json.dumps(good).encode()


@pytest.fixture
async def strict_client(make_client: MakeClient, tmp_path: Path) -> Client:
    config = collector_config(
        tmp_path,
        limits={"max_body": "64KB", "max_decompressed": "256KB", "max_reports_per_batch": 5},
    )
    client: Client = await make_client(config)
    return client


@pytest.mark.parametrize(
    ("headers", "body", "status", "code", "field", "index"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
async def test_bad_input_gets_its_status_and_changes_nothing(
    strict_client: Client,
    headers: Any,
    body: Any,
    status: int,
    code: str,
    field: str | None,
    index: int | None,
) -> None:
    store = store_of(strict_client)
    token = await new_token(strict_client)
    if headers == "revoked":
        token_id, token = await store.create_token(SITE)
        await store.revoke_token(token_id)
        headers = auth(token)
    elif headers == "unknown-site":
        _, token = await store.create_token("demo/khong-co")  # a token for a unit since removed
        headers = auth(token)
    else:
        headers = headers(token)
    before = await store.digest()
    resp = await strict_client.post("/api/v1/reports", data=_body(body), headers=headers)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    error = await resp.json()
    assert error["error"] == code
    english, vietnamese = error["message"].split(" / ", 1)
    assert english and vietnamese
    assert error.get("field") == field
    assert error.get("index") == index
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert await store.digest() == before
    assert await store.report_count() == 0
    reason = await _rejected_total(strict_client)
    assert reason >= 1


async def _rejected_total(client: Client) -> float:
    text = await (await client.get("/metrics")).text()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "hatang_reports_rejected"
        for s in f.samples
        if s.name == "hatang_reports_rejected_total"
    )


async def test_overload_answers_429_with_retry_after(
    make_client: MakeClient, tmp_path: Path
) -> None:
    config = collector_config(tmp_path, limits={"max_inflight": 1})
    client: Client = await make_client(config)
    token = await new_token(client)
    assert client.port is not None
    held = await asyncio.to_thread(_hold_connection, client.port, token)
    try:
        for _ in range(200):
            if client.app is not None and client.app[api.INGEST_STATE].inflight == 1:
                break
            await asyncio.sleep(0.02)
        before = await store_of(client).digest()
        resp = await client.post(
            "/api/v1/reports", data=batch_body(agent_report()), headers=auth(token)
        )
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) > 0
        assert (await resp.json())["error"] == "overloaded"
        assert await store_of(client).digest() == before
    finally:
        held.close()
    for _ in range(200):  # the held request ends; ingest works again
        resp = await client.post(
            "/api/v1/reports", data=batch_body(agent_report()), headers=auth(token)
        )
        if resp.status == 200:
            break
        await asyncio.sleep(0.05)
    assert resp.status == 200


async def test_requests_without_a_valid_token_never_take_an_ingest_slot(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """With every slot taken, a flood of bad tokens still gets 401 (counted as
    unauthorized, not overloaded) and only a real agent is told to come back (429)."""
    config = collector_config(tmp_path, limits={"max_inflight": 1})
    client: Client = await make_client(config)
    token = await new_token(client)
    assert client.port is not None and client.app is not None
    held = await asyncio.to_thread(_hold_connection, client.port, token)
    try:
        for _ in range(200):
            if client.app[api.INGEST_STATE].inflight == 1:
                break
            await asyncio.sleep(0.02)
        body = batch_body(agent_report())
        for bad in ("hat_000000000000_forged", token + "x"):
            resp = await client.post("/api/v1/reports", data=body, headers=auth(bad))
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"
        resp = await client.post("/api/v1/reports", data=body, headers=auth(token))
        assert resp.status == 429
        assert (
            await metric_value(client, "hatang_reports_rejected_total", reason="unauthorized") == 2
        )
        assert await metric_value(client, "hatang_reports_rejected_total", reason="overloaded") == 1
    finally:
        held.close()


async def test_locked_store_answers_503_then_recovers(
    make_client: MakeClient, tmp_path: Path
) -> None:
    config = collector_config(
        tmp_path, store={"url": "sqlite:collector.db", "busy_timeout": "200ms"}
    )
    client: Client = await make_client(config)
    token = await new_token(client)
    body = batch_body(agent_report())
    # Another process (a backup, an admin's sqlite3 shell) holds the write lock.
    locker = sqlite3.connect(tmp_path / "collector.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        resp = await client.post("/api/v1/reports", data=body, headers=auth(token))
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        assert (await resp.json())["error"] == "store_unavailable"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await store_of(client).report_count() == 0
    resp = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 1


async def test_served_with_aiohttp_defaults_gzip_is_still_bounded(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """Behind a server that inflates bodies itself, gzip works and bombs still stop."""
    config = collector_config(tmp_path, limits={"max_body": "64KB", "max_decompressed": "256KB"})
    client: Client = await aiohttp_client(create_app(config))
    token = await new_token(client)
    headers = auth(token, **{"Content-Encoding": "gzip"})
    body = gzip.compress(batch_body(agent_report()))
    resp = await client.post("/api/v1/reports", data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    before = await store_of(client).digest()
    resp = await client.post("/api/v1/reports", data=_gzip_bomb(50_000_000), headers=headers)
    assert resp.status == 413
    assert (await resp.json())["error"] == "too_large"
    assert await store_of(client).digest() == before


async def test_unknown_path_and_method_are_json_errors(client: Client) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    resp = await client.get("/api/v1/reports")
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    assert (await resp.json())["error"] == "method_not_allowed"


async def test_healthz_reports_store_health(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok" and body["store"] == "ok"


async def test_healthz_is_503_when_the_store_is_gone(client: Client) -> None:
    await store_of(client).close()
    resp = await client.get("/healthz")
    assert resp.status == 503
    assert (await resp.json())["store"] == "error"


async def test_openapi_document_is_served_and_matches_the_wire_format(client: Client) -> None:
    resp = await client.get("/api/v1/openapi.yaml")
    assert resp.status == 200
    text = await resp.text()
    assert text == OPENAPI.read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    assert doc["openapi"].startswith("3.1")
    statuses = set(doc["paths"]["/api/v1/reports"]["post"]["responses"])
    assert statuses == {"200", "400", "401", "403", "408", "413", "415", "422", "429", "501", "503"}
    _, components = _report_components()
    stale = {k for k, v in components.items() if doc["components"]["schemas"].get(k) != v}
    assert not stale, (
        f"collector/openapi.yaml is stale for {sorted(stale)}: "
        "run `python3 -m tests.collector.test_api` to regenerate"
    )


@pytest.mark.prometheus
async def test_metrics_exposition_passes_promtool(client: Client) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    token = await new_token(client)
    await client.post("/api/v1/reports", data=batch_body(agent_report()), headers=auth(token))
    await client.post("/api/v1/reports", data=b"{", headers=auth(token))
    text = await (await client.get("/metrics")).text()
    for name in (
        "hatang_reports_received_total",
        "hatang_reports_rejected_total",
        "hatang_http_requests_total",
        "hatang_ingest_duration_seconds_bucket",
        "hatang_store_write_duration_seconds_bucket",
        "hatang_report_lag_seconds_bucket",
        "hatang_reports_clock_skew_total",
    ):
        assert name in text
    await promtool_check_metrics(promtool, text)


def _report_components() -> tuple[Any, dict[str, Any]]:
    return schema_components("#/components/schemas/{name}")


def _regenerate() -> None:
    """Rewrite the generated report schemas in collector/openapi.yaml, keep the rest."""
    text = OPENAPI.read_text(encoding="utf-8")
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    doc = yaml.safe_load(text)
    doc["components"]["schemas"].update(_report_components()[1])
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    OPENAPI.write_text(header + body, encoding="utf-8")
    sys.stdout.write(f"wrote {OPENAPI}\n")


if __name__ == "__main__":
    _regenerate()

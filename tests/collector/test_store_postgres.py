"""What only PostgreSQL adds to the shared store suite (``test_store.py``): the same
content as SQLite, several collector replicas on one database, a server that drops the
connection, and the collector (API, CLI) running on a ``postgresql://`` url."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.report import Report, encode
from collector.store import Store, StoreError, StoreUnavailable, open_store
from collector.store.postgres import PostgresStore, redact
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import (
    OTHER_SITE,
    SITE,
    MakeClient,
    agent_report,
    collector_config,
    new_token,
    run_cli,
    store_of,
    write_config,
)
from tests.collector.test_api import auth, batch_body, metric_value

pytestmark = pytest.mark.postgres


def rows(*reports: Report) -> list[tuple[Report, bytes]]:
    return [(r, encode(r)) for r in reports]


async def test_both_backends_keep_the_same_content_for_the_same_reports(
    tmp_path: Path, postgres_url: str
) -> None:
    """Same batches, same clock: equal digests, so every roll-up and the latest state agree."""
    now = [1_750_000_000.0]
    base = dt.datetime.fromtimestamp(now[0], dt.UTC)
    sqlite = SQLiteStore(tmp_path / "s.db", clock=lambda: now[0])
    postgres = PostgresStore(postgres_url, clock=lambda: now[0])
    early = [
        agent_report(observed_at=base - dt.timedelta(minutes=i), lan_up=i % 3 != 0)
        for i in range(30)
    ]
    late_old = agent_report(observed_at=base - dt.timedelta(days=2), antivirus="outdated")
    other = agent_report(OTHER_SITE, agent_id="pc-07", observed_at=base, hostname="")
    skewed = agent_report(observed_at=base + dt.timedelta(hours=5))  # a PC clock ahead
    forged = msgspec.structs.replace(early[0], agent_version="evil")
    batches = [rows(*early[:20]), rows(*early[15:], forged, late_old), rows(other, skewed)]
    stores: list[Store] = [sqlite, postgres]
    for store in stores:
        await store.open()
    try:
        results = {}
        for store in stores:
            now[0] = 1_750_000_000.0  # each store sees the same clock
            got = []
            token_id, _ = await store.create_token(SITE, "xã An Bình")
            for batch in batches:
                now[0] += 1
                got.append(await store.ingest(SITE, batch))
            now[0] += 1
            await store.revoke_token(token_id)
            results[type(store).__name__] = got
        assert results["SQLiteStore"] == results["PostgresStore"]
        assert [(r.accepted, r.duplicates, r.conflicts) for r in results["PostgresStore"]] == [
            (20, 0, 0),
            (11, 5, 1),
            (2, 0, 0),
        ]
        assert results["PostgresStore"][2].clock_skewed == 1
        # Token ids are random: compare everything else, then the digests without tokens.
        assert [(t.site, t.note) for t in await sqlite.list_tokens()] == [
            (t.site, t.note) for t in await postgres.list_tokens()
        ]
        since = base - dt.timedelta(days=3)
        assert await sqlite.network_windows(since) == await postgres.network_windows(since)
        assert await sqlite.received_counts(since) == await postgres.received_counts(since)
        day, end = (base - dt.timedelta(days=3)).date(), (base + dt.timedelta(days=1)).date()
        assert await sqlite.daily_networks(day, end) == await postgres.daily_networks(day, end)
        assert await sqlite.daily_hosts(day, end) == await postgres.daily_hosts(day, end)
        assert await sqlite.agent_states() == await postgres.agent_states()
        assert [r.id async for r in sqlite.reports(None, since, base)] == [
            r.id async for r in postgres.reports(None, since, base)
        ]
        for store in stores:
            for token in await store.list_tokens():
                assert await store.revoke_token(token.token_id)
        await sqlite._write(lambda c: c.execute("DELETE FROM tokens"))
        await postgres._write(lambda c: c.execute("DELETE FROM tokens"))
        assert await sqlite.digest() == await postgres.digest()
    finally:
        for store in stores:
            await store.close()


async def test_two_replicas_store_each_report_once_and_count_it_once(postgres_url: str) -> None:
    """Two collectors on one database get the same spool replays at the same time."""
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await first.open()
    await second.open()
    try:
        reports = [agent_report(agent_id=f"pc-{i % 5}") for i in range(200)]
        batches = [rows(*reports[i : i + 20]) for i in range(0, 200, 20)]
        results = await asyncio.gather(
            *(first.ingest(SITE, b) for b in batches),
            *(second.ingest(SITE, b) for b in reversed(batches)),
        )
        assert sum(r.accepted for r in results) == 200
        assert sum(r.duplicates for r in results) == 200
        assert sum(r.conflicts for r in results) == 0
        assert await first.report_count() == 200
        states = {s.agent_id: s.reports_received for s in await second.agent_states()}
        assert states == {f"pc-{i}": 40 for i in range(5)}
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        assert sum((await first.received_counts(since)).values()) == 200
        assert await first.digest() == await second.digest()
    finally:
        await first.close()
        await second.close()


async def test_a_dropped_connection_fails_one_write_and_the_next_reconnects(
    postgres_url: str, pg_cluster: Any
) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await store.ingest(SITE, rows(agent_report()))
        import asyncpg

        admin = await asyncpg.connect(pg_cluster.url())
        try:  # what a server restart or a failover does to the collector's connections
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'hatang-collector'"
            )
        finally:
            await admin.close()
        pending = agent_report()
        # asyncpg may or may not have seen the termination yet: a connection known to be
        # closed is replaced at once; one that breaks mid-write fails that write (503).
        with contextlib.suppress(StoreUnavailable):
            await store.ingest(SITE, rows(pending))
        result = await store.ingest(SITE, rows(pending))  # the agent's retry
        assert result.accepted + result.duplicates == 1 and result.conflicts == 0
        assert await store.report_count() == 2
        assert await store.healthy()
    finally:
        await store.close()


async def test_an_unreachable_server_is_a_clear_error_without_the_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://hatang:geheim@/hatang?host={tmp_path}"  # no server on that socket
    store = open_store(url)
    with pytest.raises(StoreError, match="cannot open the store") as caught:
        await store.open()
    assert "geheim" not in str(caught.value)
    assert "hatang:***@" in str(caught.value)
    assert redact("postgresql://u:p@db:5432/x") == "postgresql://u:***@db:5432/x"


async def test_the_collector_serves_ingest_and_metrics_from_postgres(
    tmp_path: Path, postgres_url: str, make_client: MakeClient
) -> None:
    config = collector_config(tmp_path, store={"url": postgres_url, "busy_timeout": "2s"})
    assert config.store.url == postgres_url  # not mistaken for a relative file path
    client = await make_client(config)
    token = await new_token(client)
    body = batch_body(agent_report(seq=1), agent_report(seq=2, lan_up=False))
    first = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert await first.json() == {"accepted": 2, "duplicates": 0, "conflicts": 0}
    digest = await store_of(client).digest()
    again = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert await again.json() == {"accepted": 0, "duplicates": 2, "conflicts": 0}
    assert await store_of(client).digest() == digest
    assert (await client.get("/healthz")).status == 200
    await wait_for_metric(client, "hatang_site_up", 1, site=SITE)
    assert await metric_value(client, "hatang_network_up", site=SITE, network="internet") == 1


async def wait_for_metric(client: Any, name: str, value: float, **labels: str) -> None:
    for _ in range(400):
        if await metric_value(client, name, **labels) == value:
            return
        await asyncio.sleep(0.05)
    assert await metric_value(client, name, **labels) == value


def test_token_commands_work_on_a_postgres_url(tmp_path: Path, postgres_url: str) -> None:
    path = write_config(tmp_path, store={"url": postgres_url})
    created = run_cli("token", "create", "--config", str(path), "--site", SITE)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]
    listing = run_cli("token", "list", "--config", str(path))
    assert listing.returncode == 0 and SITE in listing.stdout
    assert token not in listing.stdout


def test_an_unreachable_postgres_url_exits_1_with_a_message(tmp_path: Path) -> None:
    path = write_config(tmp_path, store={"url": f"postgresql://hatang:pw@/x?host={tmp_path}"})
    proc = run_cli("token", "list", "--config", str(path))
    assert proc.returncode == 1
    assert proc.stderr.startswith("hatang-collector: store: postgresql://hatang:***@/x")
    assert "Traceback" not in proc.stderr and ":pw@" not in proc.stderr


def test_store_verify_reads_a_postgres_store_without_changing_it(
    tmp_path: Path, postgres_url: str
) -> None:
    path = write_config(tmp_path, store={"url": postgres_url})
    assert run_cli("token", "create", "--config", str(path), "--site", SITE).returncode == 0
    first = run_cli("store", "verify", "--json", "--config", str(path))
    assert first.returncode == 0, first.stderr
    check = json.loads(first.stdout)
    assert check["ok"] and check["schema_version"] >= 1 and check["reports"] == 0
    again = json.loads(run_cli("store", "verify", "--json", "--config", str(path)).stdout)
    assert again["digest"] == check["digest"]

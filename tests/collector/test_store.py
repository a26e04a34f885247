"""The store suite, run against every backend (a real SQLite file and a real throwaway
PostgreSQL cluster): ingest-once, latest state, windows, roll-ups, tokens, migrations,
group commit. Both backends give the same digest for the same content."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Coroutine
from typing import Any

import msgspec
import pytest

from agent.report import Report, encode
from collector.store import Store, StoreError
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import OTHER_SITE, SITE, StoreBackend, agent_report


def rows(*reports: Report) -> list[tuple[Report, bytes]]:
    return [(r, encode(r)) for r in reports]


def at(hours_ago: float) -> dt.datetime:
    now = dt.datetime.now(dt.UTC).replace(minute=30, second=0, microsecond=0)
    return now - dt.timedelta(hours=hours_ago)


async def test_a_report_id_is_stored_once_and_conflicts_keep_the_first(store: Store) -> None:
    first = agent_report()
    replay = msgspec.json.decode(encode(first), type=Report)
    forged = msgspec.structs.replace(first, agent_version="evil")
    result = await store.ingest(SITE, rows(first, replay, forged))
    assert (result.accepted, result.duplicates, result.conflicts) == (1, 1, 1)
    again = await store.ingest(SITE, rows(first))
    assert (again.accepted, again.duplicates, again.conflicts) == (0, 1, 0)
    assert await store.report_count() == 1
    [kept] = [r async for r in store.reports(None, first.observed_at, at(-2))]
    assert kept.agent_version == first.agent_version


async def test_latest_state_fills_sections_from_older_reports_and_ignores_late_old_ones(
    store: Store,
) -> None:
    old = agent_report(observed_at=at(3), hostname="may-cu", antivirus="outdated")
    new = msgspec.structs.replace(
        agent_report(observed_at=at(1), lan_up=False), host=None, antivirus=None
    )
    await store.ingest(SITE, rows(new))
    await store.ingest(SITE, rows(old))  # replayed from the spool after the newer one
    [state] = await store.agent_states()
    assert state.latest.id == new.id
    assert state.latest.networks.lan.up is False
    assert state.host is not None and state.host.hostname == "may-cu"  # type: ignore[attr-defined]
    assert state.antivirus is not None and state.antivirus.state == "outdated"  # type: ignore[attr-defined]
    assert state.reports_received == 2
    assert state.last_observed_at == new.observed_at


async def test_windows_and_received_counts_come_from_hourly_buckets(store: Store) -> None:
    await store.ingest(
        SITE,
        rows(
            agent_report(observed_at=at(1), lan_up=True),
            agent_report(observed_at=at(1), lan_up=False),
            agent_report(observed_at=at(2), lan_up=True, agent_id="pc-02"),
            agent_report(observed_at=at(30), lan_up=False),  # outside a 24h window
        ),
    )
    await store.ingest(OTHER_SITE, rows(agent_report(OTHER_SITE, observed_at=at(1))))
    since = at(0) - dt.timedelta(hours=24)
    windows = {
        (w.site, w.network): (w.checks, w.up_checks) for w in await store.network_windows(since)
    }
    assert windows[(SITE, "lan")] == (3, 2)
    assert windows[(SITE, "internet")] == (3, 3)
    assert windows[(OTHER_SITE, "lan")] == (1, 1)
    assert (SITE, "wan") not in windows  # never configured: no checks, not "down"
    per_agent = {
        (w.agent_id, w.network): (w.checks, w.up_checks)
        for w in await store.agent_network_windows(since)
        if w.site == SITE
    }
    assert per_agent[("pc-01", "lan")] == (2, 1)
    assert per_agent[("pc-02", "lan")] == (1, 1)
    assert await store.received_counts(since) == {
        (SITE, "pc-01"): 2,
        (SITE, "pc-02"): 1,
        (OTHER_SITE, "pc-01"): 1,
    }


async def test_daily_rollups_keep_minutes_up_and_antivirus_state_per_host(
    store: Store,
) -> None:
    day_start = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)  # 09:00 in Viet Nam
    reports = [
        agent_report(
            observed_at=day_start + dt.timedelta(minutes=i),
            lan_up=i % 4 != 0,
            antivirus="protected" if i < 5 else "outdated",
        )
        for i in range(8)
    ]
    await store.ingest(SITE, rows(*reports[:4]))
    await store.ingest(SITE, rows(*reports[4:]))
    day = dt.date(2025, 3, 10)
    networks = {n.network: n for n in await store.daily_networks(day, day + dt.timedelta(days=1))}
    assert networks["lan"].checks == 8
    assert networks["lan"].up_checks == 6
    assert networks["lan"].seconds_up == 6 * 60  # six up checks of a 60 s interval
    [host] = await store.daily_hosts(day, day + dt.timedelta(days=1))
    assert (host.site, host.hostname, host.reports, host.antivirus_state) == (
        SITE,
        "may-01",
        8,
        "outdated",
    )
    assert await store.daily_hosts(day + dt.timedelta(days=1), day + dt.timedelta(days=2)) == []


async def test_reports_are_read_back_in_pages_by_site_and_time(store: Store) -> None:
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    ours = [agent_report(observed_at=base + dt.timedelta(seconds=i)) for i in range(1203)]
    theirs = [
        agent_report(OTHER_SITE, observed_at=base + dt.timedelta(seconds=i)) for i in range(7)
    ]
    await store.ingest(SITE, rows(*ours[:1000]))
    await store.ingest(SITE, rows(*ours[1000:], *theirs))
    got = [r.id async for r in store.reports(SITE, base, base + dt.timedelta(days=1))]
    assert got == [r.id for r in ours]
    window = [r.id async for r in store.reports(None, base, base + dt.timedelta(seconds=3))]
    assert len(window) == 3 + 3


async def test_tokens_are_stored_as_hashes_and_revocation_sticks(
    store: Store, store_backend: StoreBackend
) -> None:
    token_id, token = await store.create_token(SITE, "máy chủ xã")
    record = await store.lookup_token(token)
    assert record is not None and (record.token_id, record.site) == (token_id, SITE)
    assert record.note == "máy chủ xã" and record.revoked_at is None
    assert await store.lookup_token(token + "x") is None
    await store.touch_tokens({token_id: dt.datetime.now(dt.UTC)})
    assert (await store.list_tokens())[0].last_used_at is not None
    assert await store.revoke_token(token_id) is True
    assert await store.revoke_token(token_id) is True  # twice is harmless
    assert await store.revoke_token("nope") is False
    revoked = await store.lookup_token(token)
    assert revoked is not None and revoked.revoked_at is not None
    await store.close()
    kept = store_backend.raw_bytes()
    assert token_id.encode() in kept  # the right place was looked at
    assert token.encode() not in kept


async def test_digest_changes_with_content_only(store: Store) -> None:
    empty = await store.digest()
    token_id, _ = await store.create_token(SITE)
    with_token = await store.digest()
    assert with_token != empty
    await store.touch_tokens({token_id: dt.datetime.now(dt.UTC)})
    await store.record_rejections({"malformed": 3})
    assert await store.digest() == with_token
    assert await store.rejection_counts() == {"malformed": 3}
    await store.ingest(SITE, rows(agent_report()))
    assert await store.digest() != with_token


async def test_concurrent_ingests_share_group_commits(store: Store) -> None:
    commits: list[int] = []
    store.on_commit = lambda seconds, n: commits.append(n)
    results = await asyncio.gather(
        *(store.ingest(SITE, rows(agent_report(), agent_report())) for _ in range(50))
    )
    assert all(r.accepted == 2 for r in results)
    assert await store.report_count() == 100
    assert sum(commits) == 100
    assert len(commits) < 50  # fewer fsyncs than requests


async def test_concurrent_replays_in_one_group_are_stored_exactly_once(store: Store) -> None:
    """The same report sent by many requests at once (an agent retrying over a flaky link,
    several replicas of its spool): one is stored, every other is counted a duplicate."""
    report = agent_report()
    results = await asyncio.gather(*(store.ingest(SITE, rows(report)) for _ in range(20)))
    assert sorted(r.accepted for r in results) == [0] * 19 + [1]
    assert sum(r.duplicates for r in results) == 19
    assert await store.report_count() == 1
    states = await store.agent_states()
    assert [(s.agent_id, s.reports_received) for s in states] == [(report.agent_id, 1)]
    assert await store.received_counts(at(2)) == {(SITE, report.agent_id): 1}


async def test_a_large_group_writes_every_rollup_row(store: Store) -> None:
    """More roll-up rows in one group commit than one SQL statement may bind: every
    agent's buckets and counts are still all written, each once."""
    agents = [f"pc-{i:03d}" for i in range(300)]
    results = await asyncio.gather(
        *(store.ingest(SITE, rows(agent_report(agent_id=a, observed_at=at(0)))) for a in agents)
    )
    assert all(r.accepted == 1 for r in results)
    assert await store.received_counts(at(1)) == {(SITE, a): 1 for a in agents}
    windows = await store.agent_network_windows(at(1))
    assert {w.agent_id for w in windows} == set(agents)
    per_agent = {(w.agent_id, w.network): w.checks for w in windows}
    assert set(per_agent.values()) == {1} and len(per_agent) == len(windows)


async def test_a_failing_operation_does_not_spoil_its_group(store: Store) -> None:
    broken_sql = "INSERT INTO tokens (token_id) VALUES ('x')"  # NOT NULL violation

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute(broken_sql)

    async def broken_async(conn: Any) -> None:
        await conn.execute(broken_sql)

    # Both backends queue writes as functions of their own connection type.
    writer: Any = store
    good = store.ingest(SITE, rows(agent_report()))
    bad: Coroutine[Any, Any, None] = writer._write(
        broken if isinstance(store, SQLiteStore) else broken_async
    )
    result, failure = await asyncio.gather(good, bad, return_exceptions=True)
    assert not isinstance(result, BaseException) and result.accepted == 1
    assert isinstance(failure, StoreError)
    assert await store.report_count() == 1


async def test_migrations_apply_once_and_a_newer_database_is_refused(
    store_backend: StoreBackend,
) -> None:
    for _ in range(2):
        s = store_backend.make()
        await s.open()
        await s.close()
    applied = await store_backend.query("SELECT version, name FROM schema_version")
    assert [(v, n) for v, n in applied][:1] == [(1, "0001_init.sql")]
    assert len(applied) == len({v for v, _ in applied})  # each once
    if store_backend.name == "sqlite":
        assert await store_backend.query("PRAGMA journal_mode") == [("wal",)]
    await store_backend.query(
        "INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')"
    )
    s = store_backend.make()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        await s.open()
    assert not await s.healthy()


async def test_a_closed_store_refuses_work_clearly(store_backend: StoreBackend) -> None:
    s = store_backend.make()
    await s.open()
    assert await s.healthy()
    await s.close()
    assert not await s.healthy()
    with pytest.raises(StoreError, match="closed"):
        await s.ingest(SITE, rows(agent_report()))


async def test_windows_follow_the_configured_bucket_width(store_backend: StoreBackend) -> None:
    """With 10 s buckets (the e2e test bed) a window reaches back at most 10 s further."""
    now = 1_750_000_005.0  # 5 s into a 10 s bucket
    store = store_backend.make(bucket_seconds=10, clock=lambda: now)
    await store.open()
    try:

        def ago(seconds: float) -> dt.datetime:
            return dt.datetime.fromtimestamp(now - seconds, dt.UTC)

        await store.ingest(
            SITE,
            rows(
                agent_report(observed_at=ago(1), lan_up=False),
                agent_report(observed_at=ago(12), lan_up=True),  # bucket of now - 10 s
                agent_report(observed_at=ago(25), lan_up=True),  # two buckets back
            ),
        )
        windows = {w.network: (w.checks, w.up_checks) for w in await store.network_windows(ago(10))}
        assert windows["lan"] == (2, 1)
        assert await store.received_counts(ago(10)) == {(SITE, "pc-01"): 2}
        hours = {row[0] for row in await store_backend.query("SELECT hour FROM network_hourly")}
        assert hours == {1_750_000_000, 1_749_999_990, 1_749_999_980}
    finally:
        await store.close()


def test_a_bucket_width_that_does_not_divide_an_hour_is_refused(
    store_backend: StoreBackend,
) -> None:
    with pytest.raises(ValueError, match="must divide 3600"):
        store_backend.make(bucket_seconds=7)


async def test_reads_work_from_an_event_loop_in_another_thread(store: Store) -> None:
    """The snapshot refresher reads the store from its own loop in its own thread."""
    await store.ingest(SITE, rows(agent_report(), agent_report(agent_id="pc-02")))

    async def elsewhere() -> tuple[int, int, int]:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        counts = await store.received_counts(since)
        return await store.report_count(), len(await store.agent_states()), sum(counts.values())

    assert await asyncio.to_thread(asyncio.run, elsewhere()) == (2, 2, 2)

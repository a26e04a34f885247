"""The snapshot a long-running builder keeps current (it reads only the agents written
since its previous refresh and keeps everything else in memory) must equal a full
rebuild from the store, whatever happened in between: new agents, newer and older (late)
reports, re-sent duplicates, sections that come and go, antivirus that stops being
protected, throughput tests and network use, declarations, token revocations, and the
clock moving on (the window slides bucket by bucket, throughput results and computers
leave their horizons). On SQLite and PostgreSQL; and two collector replicas on one
PostgreSQL database converge on the same snapshot."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.report import (
    Networks,
    NetworkStatus,
    ProbeResult,
    Report,
    SnmpDevice,
    ThroughputResult,
    UplinkUsage,
    encode,
)
from collector.indicators import site_windows
from collector.period import parse_period
from collector.snapshot import SnapshotBuilder
from collector.store import NewDeclaration, Store
from collector.store.sqlite import SQLiteStore
from tests import pgcluster
from tests.collector.conftest import OTHER_SITE, SITE, agent_report
from tests.collector.test_indicators import DEMO

NOW = dt.datetime(2026, 3, 2, 10, 30, tzinfo=dt.UTC)
AGENTS = [(SITE, "pc-1"), (SITE, "pc-2"), (OTHER_SITE, "pc-3"), (OTHER_SITE, "pc-1")]

report_step = st.tuples(
    st.just("report"),
    st.sampled_from(AGENTS),
    st.integers(min_value=0, max_value=26 * 60),  # minutes before now: inside and out of windows
    st.booleans(),  # lan up
    st.booleans(),  # internet up
    st.sampled_from([None, "protected", "outdated", "disabled"]),
    st.booleans(),  # without a host section
    st.booleans(),  # the agent re-sends its previous report (a duplicate) as well
    st.sampled_from([None, "measured", "failed", "uplink"]),  # throughput test / network use
)
other_step = st.one_of(
    # The clock moves on: within a bucket, across one or many, past the throughput window
    # (7 days), past the inventory horizon (30 days: computers retire).
    st.tuples(st.just("advance"), st.sampled_from([1, 20, 59, 61, 180, 25 * 60, 8 * 1440])),
    st.tuples(st.just("advance"), st.just(31 * 1440)),
    st.tuples(st.just("declare"), st.sampled_from([SITE, OTHER_SITE]), st.integers(1, 3)),
    st.tuples(st.just("revoke"), st.sampled_from([SITE, OTHER_SITE])),
)
steps = st.lists(st.one_of(report_step, report_step, other_step), min_size=1, max_size=10)

Step = tuple[Any, ...]


def _report(step: Step, seq: int, now: dt.datetime) -> Report:
    _, (site, agent), minutes, lan, internet, antivirus, no_host, _, extra = step
    observed = now - dt.timedelta(minutes=minutes)
    report = agent_report(
        site,
        agent_id=agent,
        seq=seq,
        observed_at=observed,
        lan_up=lan,
        internet_up=internet,
        antivirus=antivirus,
    )
    if no_host:
        report = msgspec.structs.replace(report, host=None)
    if extra in ("measured", "failed"):
        test = ThroughputResult(
            network="internet",
            target="payload",
            up=extra == "measured",
            observed_at=observed,
            bytes_per_second=1_000_000.0 + seq if extra == "measured" else None,
            error=None if extra == "measured" else "unreachable",
        )
        report = msgspec.structs.replace(report, throughput=[test])
    elif extra == "uplink":  # an http check over the dedicated class and its uplink's bytes
        dedicated = NetworkStatus(
            configured=True,
            up=True,
            rule="any",
            targets=[ProbeResult(kind="http", target="https://10.200.0.5/", up=True)],
        )
        networks = msgspec.structs.replace(report.networks, dedicated=dedicated)
        assert isinstance(networks, Networks)
        uplink = UplinkUsage(network="dedicated", in_bytes=1_000 * seq, out_bytes=2_000)
        device = SnmpDevice(address="10.0.0.1", up=True, uplinks=[uplink])
        report = msgspec.structs.replace(report, networks=networks, snmp=[device])
    return report


def _declaration(unit: str, value: int, now: dt.datetime) -> NewDeclaration:
    period = parse_period(str(now.year))
    return NewDeclaration(
        unit=unit,
        period=period.name,
        period_start=period.start_ts,
        period_end=period.end_ts,
        key="officials",
        value=str(10 * value),
        declared_by="Nguyễn Văn A",
        source='form.xlsx: sheet "Xã An Bình", row 4',
    )


class Province:
    """The store(s) a run writes through and the clock they share with the builders."""

    def __init__(self, make: Callable[[Callable[[], float]], Store]) -> None:
        self.now = NOW
        self.make = make
        self.seq = itertools.count(1)
        self.sent: dict[tuple[str, str], Report] = {}

    def clock(self) -> dt.datetime:
        return self.now

    def store(self) -> Store:
        return self.make(lambda: self.now.timestamp())

    def builder(self, store: Store) -> SnapshotBuilder:
        return SnapshotBuilder(DEMO, [], store, clock=self.clock)

    async def apply(self, store: Store, step: Step) -> None:
        kind = step[0]
        if kind == "advance":
            self.now += dt.timedelta(minutes=step[1])
        elif kind == "declare":
            await store.declare([_declaration(step[1], step[2], self.now)], {})
        elif kind == "revoke":
            token_id, _ = await store.create_token(step[1])
            assert await store.revoke_token(token_id)
        else:
            report = _report(step, next(self.seq), self.now)
            batch = [report]
            previous = self.sent.get(step[1])
            if step[7] and previous is not None:
                batch.append(previous)  # re-sent: a duplicate
            self.sent[step[1]] = report
            for r in batch:  # each to its own request, as the API does
                await store.ingest(r.site, [(r, encode(r))])

    async def fresh_snapshot(self) -> Any:
        """A full rebuild: a new store object (nothing read before), a new builder."""
        store = self.store()
        await store.open()
        try:
            fresh = self.builder(store)
            assert await fresh.refresh()
            return fresh.snapshot
        finally:
            await store.close()


async def compare(province: Province, plan: list[Step]) -> None:
    store = province.store()
    await store.open()
    try:
        kept = province.builder(store)
        assert await kept.refresh()
        for step in plan:
            await province.apply(store, step)
            assert await kept.refresh()
            assert kept.snapshot == await province.fresh_snapshot()
            # The builder sums its agents' windows instead of reading the site windows.
            since = province.now - dt.timedelta(days=1)
            summed = site_windows(await store.agent_network_windows(since))
            assert summed == await store.network_windows(since)
    finally:
        await store.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_a_kept_snapshot_equals_a_full_rebuild(plan: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        province = Province(lambda clock: SQLiteStore(path, clock=clock))
        asyncio.run(compare(province, plan))


_databases = itertools.count(1)


@pytest.mark.postgres
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps)
def test_a_kept_snapshot_equals_a_full_rebuild_on_postgres(
    pg_cluster: pgcluster.Cluster, plan: list[Step]
) -> None:
    from collector.store.postgres import PostgresStore

    name = f"hatang_incremental_{next(_databases)}"
    url = pg_cluster.create_database(name)
    try:
        province = Province(lambda clock: PostgresStore(url, clock=clock))
        asyncio.run(compare(province, plan))
    finally:
        pg_cluster.drop_database(name)


def test_a_slide_of_many_buckets_and_a_clock_set_back_equal_a_full_rebuild(
    tmp_path: Path,
) -> None:
    """Buckets leave the window one at a time, several at once, and the clock goes back
    (the window start moves back: the kept sums cannot follow, everything is read)."""
    path = tmp_path / "c.db"
    province = Province(lambda clock: SQLiteStore(path, clock=clock))
    plan: list[Step] = []
    for minutes in range(0, 26 * 60, 97):
        plan.append(("report", AGENTS[minutes % 4], minutes, True, minutes % 3 == 0,
                     "outdated", False, False, None))  # fmt: skip
    plan += [("advance", 60)] * 3 + [("advance", 7 * 60), ("advance", -9 * 60)]
    plan += [("report", AGENTS[1], 0, True, True, None, False, False, None), ("advance", -1)]
    asyncio.run(compare(province, plan))


@pytest.mark.postgres
async def test_two_replicas_on_one_postgres_converge(postgres_url: str) -> None:
    """Reports ingested through either replica reach both replicas' snapshots, including
    a write whose transaction started before a refresh and committed after it (replicas
    commit out of transaction-id order: a cursor at the largest id seen would miss it)."""
    from collector.store.postgres import PostgresStore

    province = Province(lambda clock: PostgresStore(postgres_url, clock=clock))
    first, second = province.store(), province.store()
    await first.open()
    await second.open()
    try:
        builders = [province.builder(first), province.builder(second)]
        for builder in builders:
            assert await builder.refresh()
        plan = [
            ("report", agent, minutes, minutes % 2 == 0, True, "outdated", False, False, None)
            for minutes, agent in zip(range(0, 300, 37), itertools.cycle(AGENTS), strict=False)
        ]
        for n, step in enumerate(plan):
            await asyncio.gather(
                province.apply(first if n % 2 else second, step),
                province.apply(second if n % 2 else first, ("revoke", SITE)),
                *(b.refresh() for b in builders),
            )
        for builder in builders:
            assert await builder.refresh()
        expected = await province.fresh_snapshot()
        assert [b.snapshot for b in builders] == [expected, expected]

        # A write that began before the next refresh read and commits after it.
        before = builders[0].snapshot
        slow = await asyncpg.connect(postgres_url)
        try:
            async with slow.transaction():
                await slow.execute(
                    "UPDATE agents SET spool_dropped = spool_dropped + 7,"
                    " changed = pg_current_xact_id() WHERE site = $1 AND agent_id = $2",
                    *AGENTS[0],
                )
                late = ("report", AGENTS[2], 1, True, True, None, False, False, None)
                await province.apply(second, late)
                for builder in builders:
                    assert await builder.refresh()  # sees the report, not the open write
        finally:
            await slow.close()
        for builder in builders:
            assert await builder.refresh()
        expected = await province.fresh_snapshot()
        assert expected != before
        assert [b.snapshot for b in builders] == [expected, expected]
    finally:
        await first.close()
        await second.close()

"""The snapshot a long-running builder keeps current (reusing what it decoded at earlier
refreshes) must equal a full rebuild from the store, whatever sequence of reports arrived:
new agents, newer and older reports, re-sent duplicates, sections that come and go; and
the site windows it sums from the agents' windows must be the store's site windows."""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.report import Report, encode
from collector.indicators import site_windows
from collector.snapshot import SnapshotBuilder
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import OTHER_SITE, SITE, agent_report
from tests.collector.test_indicators import DEMO

NOW = dt.datetime(2026, 3, 2, 10, 30, tzinfo=dt.UTC)

step = st.tuples(
    st.sampled_from([(SITE, "pc-1"), (SITE, "pc-2"), (OTHER_SITE, "pc-3"), (OTHER_SITE, "pc-1")]),
    st.integers(min_value=0, max_value=26 * 60),  # minutes before NOW: inside and out of windows
    st.booleans(),  # lan up
    st.booleans(),  # internet up
    st.sampled_from([None, "protected", "outdated"]),
    st.booleans(),  # without a host section
    st.booleans(),  # the agent re-sends its previous report (a duplicate) as well
)


def build(
    plan: list[tuple[tuple[str, str], int, bool, bool, str | None, bool, bool]],
) -> list[list[Report]]:
    sent: list[list[Report]] = []
    for n, ((site, agent), minutes, lan, internet, antivirus, no_host, resend) in enumerate(plan):
        report = agent_report(
            site,
            agent_id=agent,
            seq=n + 1,
            observed_at=NOW - dt.timedelta(minutes=minutes),
            lan_up=lan,
            internet_up=internet,
            antivirus=antivirus,
        )
        if no_host:
            report = msgspec.structs.replace(report, host=None)
        sent.append([report, *(sent[-1][:1] if resend and sent else [])])
    return sent


async def compare(path: Path, batches: list[list[Report]]) -> None:
    store = SQLiteStore(path, clock=NOW.timestamp)
    await store.open()
    try:
        kept = SnapshotBuilder(DEMO, [], store, clock=lambda: NOW)
        for batch in batches:
            for report in batch:  # each to its own site, as the API does
                await store.ingest(report.site, [(report, encode(report))])
            assert await kept.refresh()
            fresh_store = SQLiteStore(path, clock=NOW.timestamp)  # nothing decoded yet
            await fresh_store.open()
            try:
                fresh = SnapshotBuilder(DEMO, [], fresh_store, clock=lambda: NOW)
                assert await fresh.refresh()
            finally:
                await fresh_store.close()
            assert kept.snapshot == fresh.snapshot
            # The builder sums its agents' windows instead of reading the site windows.
            since = NOW - dt.timedelta(days=1)
            summed = site_windows(await store.agent_network_windows(since))
            assert summed == await store.network_windows(since)
    finally:
        await store.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=10))
def test_a_kept_snapshot_equals_a_full_rebuild(
    plan: list[tuple[tuple[str, str], int, bool, bool, str | None, bool, bool]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(compare(Path(tmp) / "c.db", build(plan)))

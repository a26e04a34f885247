"""A group commit writes its batches' roll-ups once (summed in memory): the stored rows
must be exactly those of committing the same batches one after the other."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import tempfile
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.report import Report, encode
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import SITE, agent_report

NOW = dt.datetime(2026, 3, 2, 10, 30, tzinfo=dt.UTC)

one_report = st.tuples(
    st.sampled_from(["pc-1", "pc-2", "pc-3"]),
    st.integers(min_value=0, max_value=3 * 24 * 60),  # minutes before NOW: buckets and days
    st.sampled_from([None, "may-a", "may-b"]),  # hostname (None: no host section)
    st.sampled_from([None, "protected", "outdated", "missing"]),
    st.booleans(),
    st.integers(min_value=1, max_value=3),  # reports in its batch (the same agent)
)


def batches(plan: list[tuple[str, int, str | None, str | None, bool, int]]) -> list[list[Report]]:
    out = []
    for n, (agent, minutes, hostname, antivirus, up, size) in enumerate(plan):
        batch = []
        for k in range(size):
            report = agent_report(
                agent_id=agent,
                seq=n * 10 + k + 1,
                observed_at=NOW - dt.timedelta(minutes=minutes + k),
                lan_up=up,
                internet_up=not up or k % 2 == 0,
                hostname=hostname or "x",
                antivirus=antivirus,
            )
            if hostname is None:
                report = msgspec.structs.replace(report, host=None)
            batch.append(report)
        out.append(batch)
    return out


async def stored(path: Path, plan: list[list[Report]], grouped: bool) -> tuple[str, int]:
    store = SQLiteStore(path, clock=NOW.timestamp)
    commits: list[int] = []
    await store.open()
    store.on_commit = lambda _seconds, size: commits.append(size)
    try:
        calls = [store.ingest(SITE, [(r, encode(r)) for r in batch]) for batch in plan]
        if grouped:
            await asyncio.gather(*calls)
        else:
            for call in calls:
                await call
        return await store.digest(), len(commits)
    finally:
        await store.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(one_report, min_size=2, max_size=12))
def test_a_group_commit_stores_what_one_commit_per_batch_stores(
    plan: list[tuple[str, int, str | None, str | None, bool, int]],
) -> None:
    reports = batches(plan)
    with tempfile.TemporaryDirectory() as tmp:
        one_by_one, commits = asyncio.run(stored(Path(tmp) / "a.db", reports, grouped=False))
        grouped, group_commits = asyncio.run(stored(Path(tmp) / "b.db", reports, grouped=True))
    assert commits == len(reports) and group_commits < commits  # the groups did form
    assert grouped == one_by_one


def test_a_group_commit_keeps_throughput_results_and_network_use() -> None:
    """Line-speed results and uplink bytes ride in the roll-ups too: a group commit must
    neither drop them nor count them twice."""
    from agent.report import ThroughputResult, UplinkUsage
    from tests.collector.test_store_broadband import DAY_START, _report

    def result(n: int) -> ThroughputResult:
        return ThroughputResult(
            network="internet", target=f"payload-{n}", up=True, observed_at=DAY_START,
            bytes_per_second=1_000_000.0 + n, bytes_read=4_000_000,
        )  # fmt: skip

    plan = [
        [
            _report(
                n,
                uplink=UplinkUsage(network="dedicated", in_bytes=1_000 * n, out_bytes=7_000 * n),
                throughput=[result(n)],
            )
        ]
        for n in range(1, 7)
    ]
    # (Compared table by table: these reports are older than the hourly retention, which
    # the store's clock prunes at its own moments; the daily and result tables stay.)
    tables = ("throughput_results", "network_use_daily", "network_daily", "host_daily")
    with tempfile.TemporaryDirectory() as tmp:
        seen = {}
        for name, grouped in (("a", False), ("b", True)):
            _, commits = asyncio.run(stored(Path(tmp) / f"{name}.db", plan, grouped=grouped))
            with sqlite3.connect(Path(tmp) / f"{name}.db") as conn:
                seen[name] = {
                    t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4").fetchall()
                    for t in tables
                }
    assert commits < len(plan)  # the last run was grouped
    assert seen["a"] == seen["b"]
    assert len(seen["b"]["throughput_results"]) == 6
    ((*_, in_bytes, out_bytes, _counted, _unknown, _app),) = seen["b"]["network_use_daily"]
    assert out_bytes == 7_000 * sum(range(1, 7)) and in_bytes == 1_000 * sum(range(1, 7))

"""Throughput results and daily network use in the store, on SQLite and PostgreSQL
(migration 0007): written once per report, summed per day, read back per site."""

from __future__ import annotations

import datetime as dt

import msgspec

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
from collector.store import Store
from tests.collector.conftest import SITE, agent_report

DAY_START = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)  # 09:00 in Viet Nam


def _report(minute: int, *, uplink: UplinkUsage, throughput: list[ThroughputResult]) -> Report:
    base = agent_report(observed_at=DAY_START + dt.timedelta(minutes=minute))
    dedicated = NetworkStatus(
        configured=True,
        up=True,
        rule="any",
        targets=[
            ProbeResult(kind="http", target="https://10.200.0.5/", up=True),
            ProbeResult(kind="icmp", target="10.200.0.5", up=True),  # reachability, not use
        ],
    )
    networks = msgspec.structs.replace(base.networks, dedicated=dedicated)
    assert isinstance(networks, Networks)
    device = SnmpDevice(address="10.0.0.1", up=True, uplinks=[uplink])
    return msgspec.structs.replace(base, networks=networks, snmp=[device], throughput=throughput)


async def test_use_and_throughput_are_stored_and_summed(store: Store) -> None:
    observed = DAY_START.timestamp()
    ok = ThroughputResult(
        network="internet", target="payload", up=True, observed_at=DAY_START,
        bytes_per_second=1_250_000.0, bytes_read=4_000_000,
    )  # fmt: skip
    cut = ThroughputResult(
        network="internet", target="payload", up=False, observed_at=DAY_START,
        error="unreachable", bytes_read=0,
    )  # fmt: skip
    reports = [
        _report(0, uplink=UplinkUsage(network="dedicated", unknown="first poll"), throughput=[ok]),
        _report(
            5,
            uplink=UplinkUsage(network="dedicated", in_bytes=1_000, out_bytes=7_000_000),
            throughput=[cut],
        ),
        _report(
            10,
            uplink=UplinkUsage(network="dedicated", in_bytes=2_000, out_bytes=3_000),
            throughput=[],
        ),
    ]
    await store.ingest(SITE, [(r, encode(r)) for r in reports[:2]])
    await store.ingest(SITE, [(r, encode(r)) for r in reports[1:]])  # a replay adds nothing
    day = dt.date(2025, 3, 10)
    # Only the dedicated class: the lan (icmp) and internet (tcp) checks are not use.
    [use_day] = await store.network_use_days(day, day + dt.timedelta(days=1))
    assert (use_day.site, use_day.network) == (SITE, "dedicated")
    assert (use_day.in_bytes, use_day.out_bytes) == (3_000, 7_003_000)
    assert (use_day.counted_polls, use_day.unknown_polls) == (2, 1)
    assert use_day.app_checks_up == 3  # one http check per report; icmp does not count
    assert use_day.has_counters
    results = await store.throughput_results(dt.datetime.fromtimestamp(observed - 60, dt.UTC))
    assert [(r.up, r.bytes_per_second, r.error) for r in results] == [
        (True, 1_250_000.0, None),
        (False, None, "unreachable"),
    ]
    later = await store.throughput_results(DAY_START + dt.timedelta(hours=1))
    assert later == []

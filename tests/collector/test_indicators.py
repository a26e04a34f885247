"""Indicator arithmetic on the example org trees, fed with plain store values.

``AgentState`` and ``NetworkWindow`` are the store's own dataclasses (not mocks); the
last tests run the builder over the real SQLite store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.report import (
    AntivirusStatus,
    HostInventory,
    Interface,
    LanHost,
    LanHostCounts,
    LanHosts,
    Networks,
    NetworkStatus,
    ProbeResult,
    Report,
    encode,
    new_report_id,
)
from collector.config import ConfigError, parse_config
from collector.indicators import (
    IndicatorSettings,
    IndicatorValue,
    Snapshot,
    build_snapshot,
    normalize_mac,
    window_start,
)
from collector.org import Org, load_org
from collector.snapshot import SnapshotBuilder
from collector.store import AgentNetworkWindow, AgentState, NetworkWindow, RefreshReads
from collector.targets import Plan, load_plan
from tests.conftest import REPO

NOW = dt.datetime(2025, 3, 10, 9, 30, tzinfo=dt.UTC)
SETTINGS = IndicatorSettings()  # 24 h window, 95 %, site up within 3 intervals
BAC_KAN = load_org(REPO / "configs" / "org.bac-kan-2015.yaml")
DEMO = load_org(REPO / "configs" / "org.demo.yaml")
BANG_LUNG = "bac-kan/cho-don/bang-lung"


def networks(**up: bool | None) -> Networks:
    """Networks with the given classes configured (True/False) and one target each."""
    statuses: dict[str, NetworkStatus] = {}
    for name, value in up.items():
        statuses[name] = NetworkStatus(
            configured=True,
            up=value,
            rule="any",
            targets=[
                ProbeResult(
                    kind="icmp",
                    target=f"10.17.0.{len(statuses) + 1}",
                    up=bool(value),
                    rtt_seconds=0.012,
                    loss_ratio=0.0 if value else 1.0,
                )
            ],
        )
    return Networks(**statuses)


def report(
    site: str, agent_id: str, *, role: str = "host", when: dt.datetime = NOW, **up: bool
) -> Report:
    return Report(
        id=new_report_id(),
        agent_id=agent_id,
        site=site,
        role=role,  # type: ignore[arg-type]
        seq=1,
        observed_at=when,
        interval_seconds=60.0,
        agent_version="test",
        networks=networks(**up),
    )


def make_agent(
    site: str,
    agent_id: str,
    *,
    role: str = "host",
    interval: float = 60.0,
    last: dt.datetime = NOW,
    observed: dt.datetime | None = None,
    first_seen: dt.datetime | None = None,
    macs: Sequence[str] = (),
    av: str | None = None,
    lan_hosts: LanHosts | None = None,
    spool_dropped: int = 0,
    up: dict[str, bool] | None = None,
) -> AgentState:
    host = HostInventory(
        hostname=f"pc-{agent_id}",
        os="Windows",
        interfaces=[Interface(name=f"eth{i}", mac=mac) for i, mac in enumerate(macs)],
    )
    return AgentState(
        site=site,
        agent_id=agent_id,
        role=role,
        interval_seconds=interval,
        first_seen=first_seen or NOW - dt.timedelta(days=60),
        last_observed_at=observed or last,
        last_received_at=last,
        reports_received=100,
        spool_dropped=spool_dropped,
        latest=report(site, agent_id, role=role, when=observed or last, **(up or {"lan": True})),
        host=host if macs else None,
        antivirus=AntivirusStatus(state=av) if av else None,  # type: ignore[arg-type]
        firewall=None,
        lan_hosts=lan_hosts,
        snmp=None,
    )


def window(site: str, network: str, up: int, checks: int = 100) -> NetworkWindow:
    return NetworkWindow(site=site, network=network, checks=checks, up_checks=up)  # type: ignore[arg-type]


def snapshot(
    org: Org,
    agents: Sequence[AgentState] = (),
    windows: Sequence[NetworkWindow] = (),
    received: dict[tuple[str, str], int] | None = None,
    agent_windows: Sequence[AgentNetworkWindow] = (),
    plans: Sequence[Plan] = (),
    settings: IndicatorSettings = SETTINGS,
) -> Snapshot:
    return build_snapshot(org, plans, settings, NOW, agents, windows, received or {}, agent_windows)


def value(snap: Snapshot, indicator: str, level: str) -> IndicatorValue:
    return next(v for v in snap.indicators if (v.indicator, v.level) == (indicator, level))


def site(snap: Snapshot, unit_id: str):  # type: ignore[no-untyped-def]
    return next(v for v in snap.sites if v.unit.id == unit_id)


# ----------------------------------------------------------------- unit indicators


def test_units_without_agents_are_not_attaining_counted_and_visible() -> None:
    """One commune of 51 on the dedicated network: 1/51, the other 50 shown as no data."""
    snap = snapshot(BAC_KAN, [make_agent(BANG_LUNG, "a1")], [window(BANG_LUNG, "dedicated", 100)])
    communes = value(snap, "dedicated_network", "commune")
    assert communes.units == 51 and communes.denominator == 51
    assert communes.units_attaining == 1 and communes.units_no_data == 50
    assert communes.units_not_attaining == 0
    assert communes.ratio == pytest.approx(1 / 51)
    # Every unit is in the snapshot, the ones without agents with site_up 0.
    assert len(snap.sites) == len(BAC_KAN.units)
    assert not site(snap, "bac-kan/pac-nam/boc-bo").up
    assert site(snap, BANG_LUNG).up


def test_no_agents_at_all_gives_zero_not_absent_for_unit_indicators() -> None:
    snap = snapshot(BAC_KAN)
    lan = value(snap, "lan", "agency")
    assert lan.ratio == 0.0 and lan.units_no_data == lan.units == 13


@pytest.mark.parametrize(
    ("up_checks", "attains"),
    [
        pytest.param(100, True, id="100%"),
        pytest.param(96, True, id="96% attains"),
        pytest.param(95, True, id="95% is the threshold"),
        pytest.param(94, False, id="94% does not"),
        pytest.param(90, False, id="90% does not"),
        pytest.param(0, False, id="always down"),
    ],
)
def test_windowed_up(up_checks: int, attains: bool) -> None:
    snap = snapshot(
        BAC_KAN, [make_agent(BANG_LUNG, "a1")], [window(BANG_LUNG, "internet", up_checks)]
    )
    internet = value(snap, "internet", "commune")
    assert internet.units_attaining == (1 if attains else 0)
    assert internet.units_not_attaining == (0 if attains else 1)
    assert internet.numerator == (1 if attains else 0)


def test_a_single_failed_sample_does_not_flip_a_unit() -> None:
    """The latest observation says down, but 99 % of the window was up: still attaining."""
    agent = make_agent(BANG_LUNG, "a1", up={"internet": False})
    snap = snapshot(BAC_KAN, [agent], [window(BANG_LUNG, "internet", 99)])
    assert site(snap, BANG_LUNG).networks == {"internet": False}
    assert value(snap, "internet", "commune").units_attaining == 1


def test_class_never_configured_is_not_up_but_the_unit_has_data() -> None:
    snap = snapshot(BAC_KAN, [make_agent(BANG_LUNG, "a1")], [window(BANG_LUNG, "lan", 100)])
    wan = value(snap, "wan", "commune")
    assert wan.units_attaining == 0 and wan.units_not_attaining == 1
    assert wan.units_no_data == 50


def test_levels_are_separate_and_all_covers_every_unit() -> None:
    so_tttt, huyen = "bac-kan/so-tttt", "bac-kan/cho-don"
    snap = snapshot(
        BAC_KAN,
        [make_agent(so_tttt, "s1"), make_agent(huyen, "h1")],
        [window(so_tttt, "lan", 100), window(huyen, "lan", 50), window(BANG_LUNG, "lan", 100)],
    )
    assert value(snap, "lan", "agency").numerator == 1
    assert value(snap, "lan", "agency").denominator == 13
    assert value(snap, "lan", "district").numerator == 0
    assert value(snap, "lan", "district").units_not_attaining == 1
    assert value(snap, "lan", "commune").numerator == 1
    assert value(snap, "lan", "all").numerator == 2
    assert value(snap, "lan", "all").denominator == len(BAC_KAN.units)


# ------------------------------------------------------------- computer indicators


def probe_lan(*hosts: LanHost, arp: int | None = None, snmp: int = 0) -> LanHosts:
    counts = LanHostCounts(arp=len(hosts) if arp is None else arp, snmp=snmp, total=len(hosts))
    return LanHosts(hosts=list(hosts), counts=counts, subnets=["10.17.1.0/24"])


def test_normalize_mac_accepts_common_forms_and_rejects_junk() -> None:
    assert normalize_mac("AA-BB-CC-00-11-22") == "aa:bb:cc:00:11:22"
    assert normalize_mac("aabb.cc00.1122") == "aa:bb:cc:00:11:22"
    assert normalize_mac("00:00:00:00:00:00") is None
    assert normalize_mac("ff:ff:ff:ff:ff:ff") is None  # broadcast
    assert normalize_mac("01:00:5e:00:00:01") is None  # multicast
    assert normalize_mac("zz:bb:cc:00:11:22") is None
    assert normalize_mac(None) is None


def test_computers_per_official_reconciles_by_mac() -> None:
    """The site probe and a PC with two NICs (also seen under an older agent id before a
    reinstall) are 2 computers with agent; ARP and SNMP add 2 computers without agent; a
    printer and a phone are not computers: 4 computers."""
    lan = probe_lan(
        LanHost(mac="02:17:00:00:00:01", ip="10.17.1.11", kind="unknown", sources=["arp"]),
        LanHost(mac="02:17:00:00:00:0B", ip="10.17.1.12", kind="computer", sources=["arp"]),
        LanHost(mac="02:17:00:00:00:02", ip="10.17.1.13", kind="computer", sources=["arp"]),
        LanHost(mac="02:17:00:00:00:03", ip="10.17.1.14", kind="computer", sources=["snmp"]),
        LanHost(mac="02:17:00:00:00:04", ip="10.17.1.15", kind="printer", sources=["arp"]),
        LanHost(mac="02:17:00:00:00:05", ip="10.17.1.16", kind="phone", sources=["arp"]),
    )
    agents = [
        make_agent(
            BANG_LUNG, "probe", role="site-probe", macs=["02:17:00:00:00:01"], lan_hosts=lan
        ),
        make_agent(BANG_LUNG, "pc2", macs=["02-17-00-00-00-0a", "02-17-00-00-00-0b"]),
        # The same machine as pc2 before a reinstall: shares a MAC, counted once.
        make_agent(
            BANG_LUNG, "pc2-old", macs=["02:17:00:00:00:0a"], last=NOW - dt.timedelta(days=3)
        ),
    ]
    snap = snapshot(BAC_KAN, agents)
    view = site(snap, BANG_LUNG)
    assert view.computers is not None
    assert (view.computers.total, view.computers.with_agent) == (4, 2)
    assert view.lan_hosts == {"arp": 6, "snmp": 0, "agent": 2}
    assert view.agent_coverage == pytest.approx(2 / 4)
    officials = BAC_KAN.get(BANG_LUNG).officials  # type: ignore[union-attr]
    commune = value(snap, "computers_per_official", "commune")
    assert commune.numerator == 4
    assert commune.denominator == sum(u.officials or 0 for u in BAC_KAN.of_level("commune"))
    assert commune.units_no_data == 50
    assert commune.ratio == pytest.approx(4 / commune.denominator)
    assert officials and officials > 4


def test_computer_indicators_are_absent_until_a_site_has_data() -> None:
    snap = snapshot(BAC_KAN, windows=[window(BANG_LUNG, "lan", 100)])
    for indicator in ("computers_per_official", "computers_connected", "antivirus_protected"):
        assert value(snap, indicator, "commune").ratio is None
    assert site(snap, BANG_LUNG).agent_coverage is None


def test_computers_connected_uses_each_computers_own_window() -> None:
    """pc1 up on LAN and internet, pc2's internet only 80 % up, a discovered computer
    without agent: 1 of 3 connected (no agent, no evidence: not connected)."""
    lan = probe_lan(
        LanHost(mac="02:17:00:00:01:01", kind="computer"),
        LanHost(mac="02:17:00:00:01:02", kind="computer"),
        LanHost(mac="02:17:00:00:01:03", kind="computer"),
    )
    agents = [
        make_agent(BANG_LUNG, "pc1", role="site-probe", macs=["02:17:00:00:01:01"], lan_hosts=lan),
        make_agent(BANG_LUNG, "pc2", macs=["02:17:00:00:01:02"]),
    ]
    windows = [
        AgentNetworkWindow(BANG_LUNG, "pc1", "lan", 100, 100),
        AgentNetworkWindow(BANG_LUNG, "pc1", "internet", 100, 97),
        AgentNetworkWindow(BANG_LUNG, "pc2", "lan", 100, 100),
        AgentNetworkWindow(BANG_LUNG, "pc2", "internet", 100, 80),
    ]
    snap = snapshot(BAC_KAN, agents, agent_windows=windows)
    connected = value(snap, "computers_connected", "commune")
    assert (connected.numerator, connected.denominator) == (1, 3)


def test_antivirus_states_aggregate_across_hosts_of_a_site() -> None:
    agents = [
        make_agent("demo/xa-an-binh", "pc1", av="protected"),
        make_agent("demo/xa-an-binh", "pc2", av="protected"),
        make_agent("demo/xa-an-binh", "pc3", av="outdated"),
        make_agent("demo/xa-an-binh", "pc4", av="disabled"),
        make_agent("demo/xa-an-binh", "pc5", av="missing"),
        make_agent("demo/xa-an-binh", "pc6", av="unknown"),
        make_agent("demo/xa-an-binh", "pc7"),  # no security section yet: not counted
        make_agent("demo/so-tttt", "pc8", av="protected"),
    ]
    snap = snapshot(DEMO, agents)
    computers = site(snap, "demo/xa-an-binh").computers
    assert computers is not None
    assert dict(computers.av_states) == {
        "protected": 2,
        "outdated": 1,
        "disabled": 1,
        "missing": 1,
        "unknown": 1,
    }
    commune = value(snap, "antivirus_protected", "commune")
    assert (commune.numerator, commune.denominator) == (2, 6)
    assert value(snap, "antivirus_protected", "all").ratio == pytest.approx(3 / 7)


# ------------------------------------------------------------------- per-site facts


def test_completeness_counts_late_reports_and_shows_a_silent_site() -> None:
    """Two agents at 60 s over a 24 h window: one delivered everything (some late, still
    counted), one reported last 2 days ago and has delivered nothing since."""
    start = NOW - dt.timedelta(seconds=SETTINGS.window_seconds)
    expected_per_agent = (NOW - start.replace(minute=0, second=0)).total_seconds() / 60
    agents = [
        make_agent(BANG_LUNG, "ok"),
        make_agent(BANG_LUNG, "silent", last=NOW - dt.timedelta(days=2)),
    ]
    received = {(BANG_LUNG, "ok"): int(expected_per_agent)}
    view = site(snapshot(BAC_KAN, agents, received=received), BANG_LUNG)
    assert view.completeness.expected == pytest.approx(2 * expected_per_agent)
    assert view.completeness.ratio == pytest.approx(0.5, abs=0.01)
    assert view.up  # "ok" reports on time


def test_connected_but_delivering_nothing_shows_as_down_and_incomplete() -> None:
    agent = make_agent(BANG_LUNG, "probe", role="site-probe", last=NOW - dt.timedelta(minutes=10))
    view = site(snapshot(BAC_KAN, [agent]), BANG_LUNG)
    assert view.networks == {"lan": True}  # its last word was "up"...
    assert not view.up  # ...but 10 min > 3 × 60 s
    assert view.completeness.ratio == 0.0


def test_site_up_within_intervals() -> None:
    fresh = make_agent(BANG_LUNG, "a", interval=300, last=NOW - dt.timedelta(minutes=14))
    stale = make_agent(BANG_LUNG, "a", interval=300, last=NOW - dt.timedelta(minutes=16))
    assert site(snapshot(BAC_KAN, [fresh]), BANG_LUNG).up
    assert not site(snapshot(BAC_KAN, [stale]), BANG_LUNG).up


def test_no_data_is_not_down_three_site_states() -> None:
    """A unit without agents, a silent site and a site whose network is down differ."""
    boc_bo = "bac-kan/pac-nam/boc-bo"
    down = make_agent(BANG_LUNG, "a", up={"lan": True, "dedicated": False})
    silent = make_agent(boc_bo, "b", last=NOW - dt.timedelta(hours=2))
    snap = snapshot(BAC_KAN, [down, silent])
    reporting = site(snap, BANG_LUNG)
    assert reporting.state == "reporting" and reporting.networks["dedicated"] is False
    assert site(snap, boc_bo).state == "silent"
    assert site(snap, "bac-kan/so-tttt").state == "never_reported"
    assert site(snap, "bac-kan/so-tttt").last_report_timestamp is None


def test_a_site_silent_beyond_the_inventory_horizon_stays_silent() -> None:
    """Its agent is retired from counts, but the site did report once: silent, with the
    time of its last report, never 'never reported'."""
    gone = NOW - dt.timedelta(days=90)
    view = site(snapshot(BAC_KAN, [make_agent(BANG_LUNG, "a", last=gone)]), BANG_LUNG)
    assert view.agents == 0 and not view.up
    assert view.state == "silent"
    assert view.last_report_timestamp == gone.timestamp()


def test_latest_observation_prefers_the_site_probe() -> None:
    probe = make_agent(
        BANG_LUNG,
        "probe",
        role="site-probe",
        last=NOW - dt.timedelta(seconds=50),
        up={"lan": True, "dedicated": True},
    )
    host = make_agent(BANG_LUNG, "pc", up={"lan": False})
    view = site(snapshot(BAC_KAN, [probe, host]), BANG_LUNG)
    assert view.networks == {"lan": True, "dedicated": True}
    assert {(t.network, t.target) for t in view.targets} == {
        ("lan", "10.17.0.1"),
        ("dedicated", "10.17.0.2"),
    }


def test_spool_drops_clock_skew_and_unknown_sites() -> None:
    agents = [
        make_agent(BANG_LUNG, "a", spool_dropped=12),
        make_agent(BANG_LUNG, "b", spool_dropped=3, observed=NOW + dt.timedelta(hours=2)),
        make_agent("bac-kan/khong-co", "c"),
        make_agent(BANG_LUNG, "retired", last=NOW - dt.timedelta(days=45), spool_dropped=100),
    ]
    snap = snapshot(BAC_KAN, agents)
    view = site(snap, BANG_LUNG)
    assert view.spool_dropped == 15
    assert view.clock_skew_agents == 1
    assert view.agents == 2  # the agent silent for 45 days is retired
    assert snap.unknown_site_agents == 1


# -------------------------------------------------------------------------- goals


def test_goal_with_sector_filter_is_measured_over_its_own_units() -> None:
    """Cà Mau: Party and State agencies on the WAN. Mass organisations are left out."""
    plan = load_plan(REPO / "configs" / "targets" / "ca-mau-2013.yaml")
    up = ["bac-kan/tinh-uy", "bac-kan/so-tttt", "bac-kan/mttq"]
    snap = snapshot(
        BAC_KAN,
        [make_agent(u, f"a{i}") for i, u in enumerate(up)],
        [window(u, "wan", 100) for u in up],
        plans=[plan],
    )
    goal = next(g for g in snap.goals if (g.indicator, g.level) == ("wan", "agency"))
    assert goal.goal is None
    assert goal.measured.units == 10  # 13 agencies less 3 mass organisations
    assert goal.measured.ratio == pytest.approx(2 / 10)
    assert value(snap, "wan", "agency").ratio == pytest.approx(3 / 13)


# ------------------------------------------------------------ builder, real SQLite


async def test_builder_over_the_real_sqlite_store(tmp_path: Path) -> None:
    from collector.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "collector.db")
    await store.open()
    try:
        now = dt.datetime.now(dt.UTC)
        batch = []
        for minutes in range(30, 0, -1):
            rep = report(
                "demo/xa-an-binh",
                "pc1",
                role="site-probe",
                when=now - dt.timedelta(minutes=minutes),
                lan=True,
                internet=minutes != 5,  # one failed check in 30: 96.7 % up
            )
            batch.append((rep, encode(rep)))
        await store.ingest("demo/xa-an-binh", batch)
        builder = SnapshotBuilder(DEMO, [], store, IndicatorSettings())
        assert not site(builder.snapshot, "demo/xa-an-binh").up  # before the first refresh
        assert await builder.refresh()
        snap = builder.snapshot
        view = site(snap, "demo/xa-an-binh")
        assert view.up and view.agents == 1
        assert view.windows["internet"].checks == 30
        assert value(snap, "internet", "commune").numerator == 1
        assert value(snap, "lan", "commune").ratio == pytest.approx(1 / 3)
        assert view.completeness.received == 30
        assert value(snap, "computers_connected", "commune").numerator == 1
    finally:
        await store.close()


class _BrokenStore:
    async def refresh_reads(self, *args: object) -> RefreshReads:
        raise OSError("disk I/O error")

    async def agent_states(self) -> list[AgentState]:
        raise OSError("disk I/O error")

    async def network_windows(self, since: dt.datetime) -> list[NetworkWindow]:
        return []

    async def agent_network_windows(self, since: dt.datetime) -> list[AgentNetworkWindow]:
        return []

    async def received_counts(self, since: dt.datetime) -> dict[tuple[str, str], int]:
        return {}

    async def declarations(self, since: float, until: float, units: object = None) -> list[object]:
        return []

    async def protected_until(self, agents: object) -> dict[tuple[str, str], float]:
        return {}

    async def throughput_results(self, since: dt.datetime) -> list[object]:
        return []

    async def network_use_days(self, start: dt.date, end: dt.date) -> list[object]:
        return []


async def test_a_failed_refresh_keeps_the_previous_snapshot() -> None:
    builder = SnapshotBuilder(DEMO, [], _BrokenStore())
    before = builder.snapshot
    assert not await builder.refresh()
    assert builder.snapshot is before and builder.failures == 1


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="up_ratio"):
        IndicatorSettings(up_ratio=1.5)
    with pytest.raises(ValueError, match="window"):
        IndicatorSettings(window_seconds=0)


def test_window_start_is_aligned_to_the_configured_bucket() -> None:
    """Expected report counts start where the store's bucketed received counts do."""
    settings = IndicatorSettings(window_seconds=60, bucket_seconds=10)
    now = dt.datetime.fromtimestamp(1_750_000_005.0, dt.UTC)
    assert window_start(now, settings).timestamp() == 1_749_999_940.0
    assert window_start(now, IndicatorSettings()).timestamp() == (
        (1_750_000_005 - 86400) // 3600 * 3600
    )


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"bucket": "7s"}, "window.bucket: must divide 1h evenly"),
        ({"bucket": "2h"}, "window.bucket: must divide 1h evenly"),
        ({"duration": "5s", "bucket": "10s"}, "window.duration: at least one bucket (10s"),
    ],
)
def test_window_bucket_config_is_validated(window: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"org": "org.yaml", "window": window}, "collector.yaml")
    assert message in str(caught.value)


def test_a_short_window_with_small_buckets_is_accepted() -> None:
    config = parse_config({"org": "o.yaml", "window": {"duration": "60s", "bucket": "10s"}})
    assert (config.window.duration, config.window.bucket) == (60.0, 10.0)

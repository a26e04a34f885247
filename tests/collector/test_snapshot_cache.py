"""A snapshot built with a ``SnapshotCache`` (only the changed sites, and those whose
clock-dependent facts may have flipped, computed again) must equal one computed from
nothing, whatever happened in between: agents reporting, going silent and retiring, late
reports, clocks ahead, the clock crossing up → down thresholds, window buckets and days,
antivirus turning unprotected, patches ageing, declarations coming into and out of force,
throughput results and network use."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.report import (
    AntivirusStatus,
    HostInventory,
    Interface,
    LanHost,
    LanHosts,
    Networks,
    NetworkStatus,
    PatchStatus,
    ProbeResult,
    Report,
    new_report_id,
)
from collector.indicators import (
    IndicatorSettings,
    Snapshot,
    SnapshotCache,
    build_snapshot,
    site_windows,
)
from collector.store import (
    AgentNetworkWindow,
    AgentState,
    NetworkUseDay,
    StoredDeclaration,
    ThroughputRecord,
)
from collector.targets import Broadband, Goal, Plan, Use
from tests.collector.test_indicators import DEMO

DAY = 86400
INVENTORY, PATCH_AGE, BROADBAND = 3 * DAY, 2 * DAY, 2 * DAY  # the settings and PLAN below
# Inputs are made this close (100 s) to a threshold, then the clock crosses it: up → down
# (3 intervals of 60 s), the clock skew tolerance, retirement, the IPv6 window, patch
# age, declaration periods, the broadband window; and an hour bucket, a day, and back
# (a clock set back by NTP leaves first reports in the future).
ADVANCE = st.sampled_from([0, 1, 59, 61, 99, 101, 150, 181, 201, 600, 3601, DAY + 1, -1, -600])
START = dt.datetime(2025, 3, 10, 9, 30, tzinfo=dt.UTC)
SITES = ("demo/xa-an-binh", "demo/xa-binh-minh", "demo/so-tttt", "other/not-in-org")
AGENTS = ("probe", "pc-1", "pc-2")
PLAN = Plan(
    plan="test",
    title="t",
    reference="r",
    goals=(
        Goal("internet", "commune", 1.0, 2030, requires=("reachable", "broadband")),
        Goal("dedicated_network", "all", 0.5, 2030, requires=("reachable", "used")),
        Goal("lan", "agency", 1.0, 2030, sectors=("state",)),
        Goal(
            "computers_per_official",
            "all",
            1.0,
            2030,
            officials_basis="professional_work",
            requires=(),
        ),
        Goal("security_inspection", "all", 1.0, 2030, requires=()),
        Goal("ipv6", "commune", 1.0, 2030, requires=()),
    ),
    broadband=Broadband(min_download_bps=8_000_000, window_seconds=BROADBAND),
    use=Use(min_bytes_per_day=1000),
)

report_step = st.tuples(
    st.just("report"),
    st.sampled_from(SITES),
    st.sampled_from(AGENTS),
    st.booleans(),  # lan up
    st.booleans(),  # internet up (and the IPv6 check with it)
    st.sampled_from([None, "protected", "outdated"]),
    st.sampled_from([None, 0, PATCH_AGE - 100, PATCH_AGE + 100]),  # since the last update
    st.sampled_from([0, 0, 100, 200, 400, -400]),  # the agent's clock ahead or behind, s
    st.booleans(),  # the host's MAC is shared with the other PC (a reinstall)
    st.sampled_from([0, 0, 0, INVENTORY - 100, DAY - 100]),  # received this long ago
    st.sampled_from([False, False, True]),  # a new agent's first report is 100 s ahead
    st.booleans(),  # the collector moved the observation onto its clock (sent_at known)
)
changes = st.one_of(
    st.none(),
    report_step,
    report_step,
    st.tuples(st.just("late"), st.sampled_from(SITES), st.sampled_from(AGENTS)),
    st.tuples(
        st.just("unprotect"), st.sampled_from(SITES), st.sampled_from(AGENTS), st.integers(0, 40)
    ),
    st.tuples(
        st.just("declare"),
        st.sampled_from(SITES[:3]),
        st.sampled_from(["officials", "officials_basis", "inspection_date"]),
        st.sampled_from([-2 * DAY, -100, 100, DAY]),  # period start from now, seconds
        st.sampled_from([200, DAY, 3 * DAY]),  # period length, seconds
    ),
    st.tuples(
        st.just("throughput_result"),
        st.sampled_from(SITES),
        st.sampled_from(["internet", "dedicated"]),
        st.sampled_from([None, 500_000.0, 2_000_000.0]),  # None: the test failed
        st.sampled_from([0, 3600, BROADBAND - 100, BROADBAND + 100]),  # seconds ago
    ),
    st.tuples(
        st.just("use"),
        st.sampled_from(SITES),
        st.sampled_from(["wan", "dedicated", "internet"]),
        st.integers(0, 2),  # days ago
        st.sampled_from([0, 5000]),  # bytes
    ),
    st.tuples(st.just("forget"), st.sampled_from(SITES), st.sampled_from(AGENTS)),
)
steps = st.tuples(changes, ADVANCE)  # a change (or none), then time passing


def status(up: bool, family: str | None = None) -> NetworkStatus:
    result = ProbeResult(kind="icmp", target="10.1.0.1", up=up, family=family)  # type: ignore[arg-type]
    return NetworkStatus(configured=True, up=up, rule="any", targets=[result])


class World:
    """The store values a builder reads, changed step by step."""

    def __init__(self) -> None:
        self.now = START
        self.agents: dict[tuple[str, str], AgentState] = {}
        self.windows: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.received: dict[tuple[str, str], int] = {}
        self.declarations: list[StoredDeclaration] = []
        self.protected_until: dict[tuple[str, str], float] = {}
        self.throughput: list[ThroughputRecord] = []
        self.use_days: list[NetworkUseDay] = []
        self.revision = 0

    def apply(self, change: tuple[Any, ...] | None) -> set[str]:
        """Apply one change; the sites whose store values changed."""
        if change is None:
            return set()
        kind, site, *args = change
        getattr(self, kind)(site, *args)
        return {site}

    def report(
        self,
        site: str,
        agent: str,
        lan: bool,
        internet: bool,
        av: str | None,
        patch_age: int | None,
        skew: int,
        shared_mac: bool,
        ago: int,
        first_ahead: bool,
        moved: bool,
    ) -> None:
        key = (site, agent)
        old = self.agents.get(key)
        now = self.now - dt.timedelta(seconds=ago)
        observed = now + dt.timedelta(seconds=skew - 5)  # the checks took 5 s
        first = now + dt.timedelta(seconds=100) if first_ahead else now
        probe = agent == "probe"
        mac = "02:00:00:00:00:01" if shared_mac else f"02:00:00:00:01:{AGENTS.index(agent):02x}"
        host = HostInventory(
            hostname=agent,
            os="Windows",
            interfaces=[Interface(name="eth0", mac=mac, ipv6=["2402:800::1"])],
        )
        lan_hosts = (
            LanHosts(hosts=[LanHost(mac="02:00:00:00:02:01", kind="computer")]) if probe else None
        )
        report = Report(
            id=new_report_id(),
            agent_id=agent,
            site=site,
            role="site-probe" if probe else "host",
            seq=1,
            observed_at=observed,
            interval_seconds=60.0,
            agent_version="test",
            networks=Networks(lan=status(lan), internet=status(internet, "ipv6")),
        )
        patches = (
            PatchStatus(source="apt", last_installed_at=now - dt.timedelta(seconds=patch_age))
            if patch_age is not None
            else None
        )
        self.agents[key] = AgentState(
            site=site,
            agent_id=agent,
            role=report.role,
            interval_seconds=60.0,
            first_seen=old.first_seen if old else first,
            last_observed_at=observed,
            last_received_at=now,
            reports_received=(old.reports_received if old else 0) + 1,
            spool_dropped=0,
            latest=report,
            host=host,
            antivirus=AntivirusStatus(state=av) if av else None,  # type: ignore[arg-type]
            firewall=None,
            lan_hosts=lan_hosts,
            snmp=None,
            last_effective_at=now if skew and moved else None,
            patches=patches,
        )
        self.count(site, agent, {"lan": lan, "internet": internet})

    def count(self, site: str, agent: str, up: dict[str, bool]) -> None:
        self.received[(site, agent)] = self.received.get((site, agent), 0) + 1
        for network, ok in up.items():
            checks, ups = self.windows.get((site, agent, network), (0, 0))
            self.windows[(site, agent, network)] = (checks + 1, ups + ok)

    def late(self, site: str, agent: str) -> None:
        self.count(site, agent, {"lan": True, "internet": False})

    def unprotect(self, site: str, agent: str, days: int) -> None:
        old = self.agents.get((site, agent))
        if old is not None:
            outdated = AntivirusStatus(state="outdated")
            self.agents[(site, agent)] = dataclasses.replace(old, antivirus=outdated)
            self.protected_until[(site, agent)] = (self.now - dt.timedelta(days=days)).timestamp()

    def declare(self, site: str, key: str, start: int, length: int) -> None:
        value = {
            "officials": "30",
            "officials_basis": '"professional_work"',
            "inspection_date": f'"{(self.now - dt.timedelta(days=30)).date().isoformat()}"',
        }[key]
        begin = self.now.timestamp() + start
        self.revision += 1
        self.declarations.append(
            StoredDeclaration(
                unit=site,
                period="p",
                period_start=begin,
                period_end=begin + length,
                key=key,
                revision=self.revision,
                value=value,
                declared_by="test",
                declared_at=self.now,
                source="test",
                attachment_name=None,
                attachment_sha256=None,
            )
        )

    def throughput_result(self, site: str, network: str, rate: float | None, ago: int) -> None:
        self.throughput.append(
            ThroughputRecord(
                site=site,
                network=network,  # type: ignore[arg-type]
                target="t",
                effective_at=self.now.timestamp() - ago,
                up=rate is not None,
                skipped=False,
                bytes_per_second=rate,
                error=None if rate is not None else "timeout",
            )
        )

    def use(self, site: str, network: str, days: int, volume: int) -> None:
        self.use_days.append(
            NetworkUseDay(
                day=(self.now + dt.timedelta(hours=7)).date() - dt.timedelta(days=days),
                site=site,
                network=network,  # type: ignore[arg-type]
                in_bytes=volume,
                out_bytes=0,
                counted_polls=1 if volume else 0,
                unknown_polls=0,
                app_checks_up=0 if volume else 1,
            )
        )

    def forget(self, site: str, agent: str) -> None:
        self.agents.pop((site, agent), None)
        self.received.pop((site, agent), None)
        for network in ("lan", "internet"):
            self.windows.pop((site, agent, network), None)

    def snapshot(
        self, config: IndicatorSettings, cache: SnapshotCache | None, changed: set[str] | None
    ) -> Snapshot:
        agent_windows = [
            AgentNetworkWindow(s, a, n, c, u)  # type: ignore[arg-type]
            for (s, a, n), (c, u) in sorted(self.windows.items())
        ]
        return build_snapshot(
            DEMO,
            [PLAN],
            config,
            self.now,
            [self.agents[k] for k in sorted(self.agents)],
            site_windows(agent_windows),
            self.received,
            agent_windows,
            declarations=self.declarations,
            protected_until=self.protected_until,
            throughput=self.throughput,
            use_days=self.use_days,
            cache=cache,
            changed_sites=changed,
        )


def reported(
    agent: str,
    *,
    lan: bool = True,
    patch_age: int | None = None,
    skew: int = 0,
    ago: int = 0,
    first_ahead: bool = False,
) -> tuple[Any, ...]:
    return (
        "report",
        SITES[0],
        agent,
        lan,
        True,
        None,
        patch_age,
        skew,
        False,
        ago,
        first_ahead,
        False,
    )


# Thresholds random steps seldom reach exactly: each must be noticed with no new input.
@example([(reported("pc-1", ago=DAY - 100), 61), (None, 101)], False)  # IPv6 check too old
# Both ahead of the clock, so both capped at now and the later arrival wins; then pc-2's
# observation is passed and pc-1's (further ahead) is the freshest.
@example([(reported("pc-1", skew=200), 1), (reported("pc-2", lan=False, skew=100), 101)], False)
@example([(reported("pc-1", skew=400), 101)], False)  # ahead, but within the tolerance
@example([(reported("pc-1", patch_age=PATCH_AGE - 100), 101)], False)  # patches too old
@example([(reported("pc-1", first_ahead=True), 101)], False)  # first report no longer ahead
@example([(reported("pc-1", skew=100), 181), (None, 101)], True)  # observation no longer fresh
@example(
    [
        (reported("pc-1"), 0),
        (("throughput_result", SITES[0], "internet", 2e6, BROADBAND - 100), 101),
    ],
    False,
)  # the only throughput result leaves the broadband window: not judged
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=3, max_size=30), st.booleans())
def test_a_cached_snapshot_equals_one_computed_from_nothing(
    plan: list[tuple[Any, ...]], fresh_only: bool
) -> None:
    config = IndicatorSettings(
        inventory_window_seconds=INVENTORY,
        patch_max_age_seconds=PATCH_AGE,
        fresh_observations_only=fresh_only,
    )
    world = World()
    cache = SnapshotCache()
    previous = world.snapshot(config, cache, None)
    for change, seconds in plan:
        changed = world.apply(change)
        kept = world.snapshot(config, cache, changed)
        assert kept == world.snapshot(config, None, None), change
        if not changed:
            # Nothing changed: the very same site views (a renderer may cache by identity).
            assert all(a is b for a, b in zip(kept.sites, previous.sites, strict=True))
        world.now += dt.timedelta(seconds=seconds)
        previous = world.snapshot(config, cache, set())
        assert previous == world.snapshot(config, None, None), seconds


def test_other_settings_or_plans_compute_everything_again() -> None:
    world = World()
    world.apply(("report", SITES[0], "pc-1", True, True, "protected", 0, 0, False, 0, False, False))
    cache = SnapshotCache()
    world.snapshot(IndicatorSettings(), cache, None)
    other = IndicatorSettings(up_ratio=0.5)
    assert world.snapshot(other, cache, set()) == world.snapshot(other, None, None)


def test_a_site_whose_arithmetic_fails_and_unknown_changed_sites_keep_the_cache_exact() -> None:
    """A site whose agent cannot be computed (a naive patch time from a damaged row) is
    shown without agents and counted in skipped_rows, kept or not; names in changed_sites
    that no agent or unit has change nothing."""
    world = World()
    world.apply(("report", SITES[0], "pc-1", True, True, None, 0, 0, False, 0, False, False))
    world.apply(("report", SITES[1], "pc-1", True, True, None, 0, 0, False, 0, False, False))
    bad = world.agents[(SITES[1], "pc-1")]
    naive = PatchStatus(source="apt", last_installed_at=dt.datetime(2025, 3, 1))
    world.agents[(SITES[1], "pc-1")] = dataclasses.replace(bad, patches=naive)
    config = IndicatorSettings()
    cache = SnapshotCache()
    first = world.snapshot(config, cache, None)
    assert first.skipped_rows == 1
    assert next(v for v in first.sites if v.unit.id == SITES[1]).agents == 0
    for changed in ({"no/such-site", ""}, {SITES[1]}, set()):
        world.now += dt.timedelta(seconds=30)
        kept = world.snapshot(config, cache, changed)
        assert kept == world.snapshot(config, None, None)
        assert kept.skipped_rows == 1


def test_an_unchanged_site_keeps_its_parts_and_only_its_expected_count_moves() -> None:
    """What a renderer may cache by identity: a site that neither changed nor reached a
    threshold keeps every part of its view; only the expected report count follows now
    (no site view with agents is the same object twice, since that count grows)."""
    world = World()
    for site in SITES[:2]:
        world.apply(("report", site, "pc-1", True, True, "protected", 0, 0, False, 0, False, False))
    config = IndicatorSettings()
    cache = SnapshotCache()
    before = world.snapshot(config, cache, None)
    world.now += dt.timedelta(seconds=10)
    changed = world.apply(("late", SITES[0], "pc-1"))
    after = world.snapshot(config, cache, changed)
    assert after == world.snapshot(config, None, None)
    old, new = (next(v for v in snap.sites if v.unit.id == SITES[1]) for snap in (before, after))
    assert new.completeness.expected > old.completeness.expected
    assert new.completeness.received == old.completeness.received
    moved = [
        f.name for f in dataclasses.fields(new) if getattr(new, f.name) is not getattr(old, f.name)
    ]
    assert moved == ["completeness"]
    silent = next(v for v in after.sites if v.unit.id == "demo")  # no agents: the same view
    assert silent is next(v for v in before.sites if v.unit.id == "demo")

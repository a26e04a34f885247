"""From stored agent state to the numbers the province is judged on: a Snapshot.

The arithmetic is pure functions over plain values (the store's ``AgentState`` and
``NetworkWindow``), so tests feed it exact situations; ``collector.snapshot.SnapshotBuilder``
is the async layer that reads the store and swaps in a new immutable Snapshot, which
``collector.metrics`` renders at scrape time without I/O. How each indicator is
computed (numerator, denominator, window, units without agents) is written up in
``docs/indicators.md``; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeVar, get_args

from agent.addresses import has_global_ipv6
from agent.log import log_exception_limited
from agent.report import (
    NETWORK_CLASSES,
    AntivirusStatus,
    AvState,
    FirewallStatus,
    HostInventory,
    LanHosts,
    NetworkClass,
    PatchStatus,
    Report,
)
from collector.declarations import Value, in_force
from collector.org import LEVELS, Org, Unit
from collector.store import (
    AgentNetworkWindow,
    AgentState,
    LatestReport,
    NetworkUseDay,
    NetworkWindow,
    StoredDeclaration,
    ThroughputRecord,
    from_unix,
)
from collector.targets import INDICATORS, Broadband, GoalLevel, Indicator, Plan, Requirement, Use

log = logging.getLogger(__name__)

# Unit indicators: a unit attains when its site's checks of this class were up often enough.
UNIT_INDICATORS: Final[Mapping[Indicator, NetworkClass]] = {
    "lan": "lan",
    "internet": "internet",
    "wan": "wan",
    "dedicated_network": "dedicated",
}
# No data is not down (issue 13): a unit that never had an agent, a site whose agents
# went silent, and a reporting site (whose networks may be down) are told apart.
SiteState = Literal["reporting", "silent", "never_reported"]
SITE_STATES: Final[tuple[SiteState, ...]] = get_args(SiteState)
# Unprotected: the agent saw the antivirus outdated, disabled or missing ("unknown" is no
# data, neither protected nor unprotected).
AV_UNPROTECTED: Final[frozenset[AvState]] = frozenset({"outdated", "disabled", "missing"})
# hatang_antivirus_unprotected_hosts{over}: unprotected for longer than each of these.
UNPROTECTED_OVER: Final[tuple[tuple[str, float], ...]] = (
    ("1d", 86400.0),
    ("7d", 7 * 86400.0),
    ("30d", 30 * 86400.0),
)
FirewallState = Literal["enabled", "disabled", "unknown"]  # hatang_firewall_hosts{state}
FIREWALL_STATES: Final[tuple[FirewallState, ...]] = get_args(FirewallState)
# The classes whose use is measured (a LAN has no uplink to count).
USE_NETWORKS: Final[tuple[NetworkClass, ...]] = ("wan", "dedicated", "internet")
# hatang_patch_hosts{state}: see patch_state.
PatchState = Literal["current", "outdated", "reboot_pending", "unknown"]
PATCH_STATES: Final[tuple[PatchState, ...]] = get_args(PatchState)
ManagedState = Literal["managed", "unmanaged", "unknown"]  # hatang_antivirus_managed_hosts
MANAGED_STATES: Final[tuple[ManagedState, ...]] = get_args(ManagedState)
# hatang_ipv6_hosts{state}: working = a global IPv6 address and an IPv6 check up in its
# newest report (within the window); address_only = the address, no IPv6 check up;
# no_address = no global IPv6 address (link-local and ULA do not count).
Ipv6State = Literal["working", "address_only", "no_address"]
IPV6_STATES: Final[tuple[Ipv6State, ...]] = get_args(Ipv6State)
# Indicators over units (attaining / not attaining / no data), besides the network ones.
UNIT_LEVEL: Final[frozenset[Indicator]] = frozenset(
    {*UNIT_INDICATORS, "ipv6", "security_inspection"}
)
# security_inspection: a declared inspection date at most this old (the plans: "every year").
INSPECTION_MAX_AGE: Final = dt.timedelta(days=366)


@dataclass(frozen=True, slots=True)
class IndicatorSettings:
    """How indicators are judged; app.py fills the first three from the collector config."""

    window_seconds: float = 86400.0
    up_ratio: float = 0.95
    site_up_after_intervals: float = 3.0
    # Office PCs are off at night and on weekends: a computer is counted while it has
    # reported within this horizon, much longer than the network window.
    inventory_window_seconds: float = 30 * 86400.0
    clock_skew_tolerance_seconds: float = 300.0  # the store's clock_skew.max_future
    bucket_seconds: float = 3600.0  # the store's window bucket width (window.bucket)
    # With remote write on, a site's observation series are scraped only while fresh
    # (observed within site_up_after_intervals of their interval); older moments are the
    # push's (collector.late, docs/late-data.md). Off: the latest observation, however old.
    fresh_observations_only: bool = False
    rollup_offset_seconds: float = 7 * 3600.0  # the store's roll-up day: UTC+7 (Việt Nam)
    # computers_patched: updates installed within this long (posture.patch_max_age).
    patch_max_age_seconds: float = 30 * 86400.0

    def __post_init__(self) -> None:
        if not self.window_seconds > 0:
            raise ValueError(f"window must be positive, got {self.window_seconds}")
        if not 0.0 < self.up_ratio <= 1.0:
            raise ValueError(f"up_ratio must be in (0, 1], got {self.up_ratio}")
        if not self.patch_max_age_seconds > 0:
            raise ValueError(f"patch_max_age must be positive, got {self.patch_max_age_seconds}")
        if not self.site_up_after_intervals >= 1:
            raise ValueError(
                f"site_up_after_intervals must be at least 1, got {self.site_up_after_intervals}"
            )


# Per-site line-speed metrics cover the longest broadband window of the plans, this by default.
DEFAULT_THROUGHPUT_WINDOW_SECONDS: Final = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Throughput:
    """A site's throughput tests of one class in the throughput window, oldest first."""

    rates: tuple[tuple[float, float], ...] = ()  # (effective_at, bytes/s) of measured tests
    failed: int = 0  # tests that gave a reason instead of a rate (skipped ones excluded)

    def since(self, start: float) -> tuple[float, ...]:
        """The measured rates filed at or after ``start``."""
        return tuple(rate for at, rate in self.rates if at >= start)


def median(values: Sequence[float]) -> float | None:
    """The median (mean of the middle two for an even count); None for no values."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def download_rate(throughput: Throughput | None, rule: Broadband, now: dt.datetime) -> float | None:
    """The rate a broadband rule judges (bytes/s), or None: no measurement in its window."""
    if throughput is None:
        return None
    rates = throughput.since(now.timestamp() - rule.window_seconds)
    if not rates:
        return None
    return rates[-1] if rule.rule == "latest" else median(rates)


def day_used(day: NetworkUseDay, use: Use) -> bool:
    """Counters where the class's uplink is polled; else a successful http/dns check."""
    if day.has_counters:
        return day.in_bytes + day.out_bytes >= use.min_bytes_per_day
    return day.app_checks_up > 0


def window_days(now: dt.datetime, settings: IndicatorSettings) -> tuple[dt.date, dt.date]:
    """The roll-up days the indicator window touches: first and last (today), inclusive."""
    offset = dt.timedelta(seconds=settings.rollup_offset_seconds)
    first = (now - dt.timedelta(seconds=settings.window_seconds) + offset).date()
    return first, (now + offset).date()


@dataclass(frozen=True, slots=True)
class GoalRule:
    """How a plan goal judges a unit: its requirements and the plan's thresholds."""

    requires: tuple[Requirement, ...] = ("reachable",)
    broadband: Broadband | None = None
    use: Use | None = None

    @property
    def name(self) -> str:
        """e.g. ``reachable``, ``reachable_and_broadband``, ``reachable_and_used``."""
        return "_and_".join(self.requires) or "none"


@dataclass(frozen=True, slots=True)
class WindowRatio:
    checks: int
    up_checks: int

    @property
    def ratio(self) -> float | None:
        return self.up_checks / self.checks if self.checks > 0 else None


@dataclass(frozen=True, slots=True)
class TargetObservation:
    """One probe target in a site's latest observation."""

    network: NetworkClass
    target: str
    kind: str
    up: bool
    rtt_seconds: float | None
    loss_ratio: float | None


@dataclass(frozen=True, slots=True)
class Computers:
    """A site's computers after MAC reconciliation, and what their agents say."""

    total: int  # agents (merged by MAC) plus discovered hosts classified computer
    with_agent: int
    connected: int  # with agent, whose own LAN and internet were up over the window
    av_reported: int  # with agent and an antivirus state
    av_states: Mapping[str, int] = field(default_factory=dict)
    discovered: bool = False  # a site probe reported its LAN hosts
    firewall_states: Mapping[str, int] = field(default_factory=dict)  # with a firewall report
    # Per unprotected computer: since when (unix seconds; day precision, see the store).
    unprotected_since: tuple[float, ...] = ()
    patch_states: Mapping[str, int] = field(default_factory=dict)  # with a patches report
    pending_security: int = 0  # computers with a pending security update
    managed_states: Mapping[str, int] = field(default_factory=dict)  # with antivirus report
    ipv6_states: Mapping[str, int] = field(default_factory=dict)  # with a host inventory

    @property
    def protected(self) -> int:
        return self.av_states.get("protected", 0)


@dataclass(frozen=True, slots=True)
class Completeness:
    """Reports expected from the site's agents' intervals over the window, and received."""

    expected: float
    received: int

    @property
    def ratio(self) -> float | None:
        if self.expected < 1:
            return None
        return min(1.0, self.received / self.expected)


@dataclass(frozen=True, slots=True)
class Declared:
    """What a unit declared that is in force now (see ``collector.declarations``)."""

    facts: Mapping[str, Value] = field(default_factory=dict)

    @property
    def officials(self) -> int | None:
        value = self.facts.get("officials")
        return value if isinstance(value, int) else None

    @property
    def officials_basis(self) -> str | None:
        value = self.facts.get("officials_basis")
        return value if isinstance(value, str) else None

    @property
    def inspection_date(self) -> dt.date | None:
        value = self.facts.get("inspection_date")
        try:
            return dt.date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class SiteView:
    """Everything the metrics show about one unit (a unit without agents included)."""

    unit: Unit
    agents: int
    up: bool
    last_report_timestamp: float | None
    networks: Mapping[NetworkClass, bool]  # latest observation; configured classes only
    windows: Mapping[NetworkClass, WindowRatio]  # over the indicator window
    targets: tuple[TargetObservation, ...]
    lan_hosts: Mapping[str, int]  # source -> hosts; empty without data
    computers: Computers | None
    completeness: Completeness
    spool_dropped: int
    clock_skew_agents: int
    spool_rejected: int = 0  # Σ of the agents' dead-letter counts (from their newest report)
    spool_resets: int = 0  # Σ of the agents' spool resets (damaged spool moved aside)
    # reporting: some agent on time; silent: reported before (perhaps longer ago than the
    # inventory horizon), none on time now; never_reported: no report ever.
    state: SiteState = "never_reported"
    declared: Declared = field(default_factory=Declared)
    observed: bool = True  # the observation series are shown (see fresh_observations_only)
    throughput: Mapping[NetworkClass, Throughput] = field(default_factory=dict)
    use_days: Mapping[NetworkClass, tuple[NetworkUseDay, ...]] = field(default_factory=dict)
    today: dt.date | None = None  # the roll-up day of the snapshot
    window_days: tuple[dt.date, dt.date] | None = None  # first and last day of the window

    def used(self, network: NetworkClass, use: Use) -> bool:
        """Whether the class was used on some roll-up day of the indicator window."""
        if self.window_days is None:
            return False
        first, last = self.window_days
        return any(
            first <= day.day <= last and day_used(day, use)
            for day in self.use_days.get(network, ())
        )

    def bytes_on(self, network: NetworkClass, day: dt.date) -> NetworkUseDay | None:
        """The class's use on one day, when its uplink was polled that day."""
        for row in self.use_days.get(network, ()):
            if row.day == day and row.has_counters:
                return row
        return None

    @property
    def officials(self) -> int | None:
        """The denominator in force: the unit's declaration for now, else the org file."""
        declared = self.declared.officials
        return declared if declared is not None else self.unit.officials

    @property
    def officials_source(self) -> str | None:
        """Where ``officials`` comes from: ``declaration``, ``org_file`` or None."""
        if self.declared.officials is not None:
            return "declaration"
        return "org_file" if self.unit.officials is not None else None

    @property
    def agent_coverage(self) -> float | None:
        """Computers with agent ÷ computers; only where a site probe discovered the LAN."""
        c = self.computers
        if c is None or not c.discovered or c.total == 0:
            return None
        return c.with_agent / c.total


@dataclass(frozen=True, slots=True)
class IndicatorValue:
    """One indicator over one selection of units, with its working shown."""

    indicator: Indicator
    level: GoalLevel
    numerator: float
    denominator: float
    units: int  # units in the selection
    units_attaining: int  # unit indicators only
    units_no_data: int
    has_data: bool  # computer indicators are absent until some unit has data
    # Reachable units that a broadband rule cannot judge: no measurement in its window.
    units_not_judged: int = 0

    @property
    def ratio(self) -> float | None:
        if not self.has_data or self.denominator <= 0:
            return None
        return self.numerator / self.denominator

    @property
    def units_not_attaining(self) -> int:
        """Units with data that do not attain (units without data are counted apart)."""
        return self.units - self.units_attaining - self.units_no_data - self.units_not_judged


@dataclass(frozen=True, slots=True)
class GoalView:
    plan: str
    indicator: Indicator
    level: GoalLevel
    goal: float | None
    deadline: int
    measured: IndicatorValue
    rule: GoalRule = field(default_factory=GoalRule)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The collector's current picture; immutable, swapped whole by the builder."""

    generated_at: float
    settings: IndicatorSettings
    sites: tuple[SiteView, ...]
    indicators: tuple[IndicatorValue, ...]
    goals: tuple[GoalView, ...]
    unknown_site_agents: int
    skipped_rows: int = 0  # store rows left out because they could not be read or used
    # Per level (and "all"): units with some declaration in force now, and units without.
    declaration_units: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # (site, agents whose latest central-config status is a rejection), for sites with any
    config_errors: tuple[tuple[str, int], ...] = ()


# --------------------------------------------------------------------------- arithmetic


_MAC_SEPARATORS: Final = str.maketrans("", "", ":-. ")


# Every site's MACs again at each computation of the site: the same few strings.
@functools.lru_cache(maxsize=1 << 16)
def normalize_mac(mac: str | None) -> str | None:
    """Return ``aa:bb:cc:dd:ee:ff``, or None for absent, malformed, zero or multicast MACs."""
    if not mac:
        return None
    digits = mac.lower().translate(_MAC_SEPARATORS)
    if len(digits) != 12 or digits.strip("0123456789abcdef"):  # 12 hex digits, nothing else
        return None
    if digits == "0" * 12 or int(digits[:2], 16) & 1:  # unset, broadcast or multicast
        return None
    d = digits
    return f"{d[0:2]}:{d[2:4]}:{d[4:6]}:{d[6:8]}:{d[8:10]}:{d[10:12]}"


def agent_macs(agent: AgentState) -> set[str]:
    """The MACs of an agent's own interfaces, from its host inventory."""
    host = agent.host
    if not isinstance(host, HostInventory):
        return set()
    macs = {normalize_mac(interface.mac) for interface in host.interfaces}
    return {mac for mac in macs if mac is not None}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def count_computers(
    agents: Sequence[AgentState],
    agent_up: Mapping[str, bool],
    protected_until: Mapping[tuple[str, str], float] | None = None,
    *,
    now: dt.datetime | None = None,
    settings: IndicatorSettings | None = None,
) -> Computers | None:
    """Reconcile one site's agents and discovered hosts by MAC into computers.

    An agent is a computer; agents sharing a MAC (a reinstall) are one computer, judged
    by the one that reported last. A discovered host is the same computer as an agent
    whose interfaces carry its MAC; otherwise it counts only if classified ``computer``.
    ``agent_up`` says, per agent id, whether its own LAN and internet were up over the
    window. ``protected_until`` says, per (site, agent id), when its antivirus was last
    protected (absent: never, so unprotected since its first report). Returns None when
    the site has neither agents nor discovered hosts.
    """
    probes = [a for a in agents if isinstance(a.lan_hosts, LanHosts)]
    if not agents:
        return None
    uf = _UnionFind()
    for agent in agents:
        node = f"agent:{agent.agent_id}"
        uf.find(node)
        for own_mac in agent_macs(agent):
            uf.union(node, f"mac:{own_mac}")
    ids = {agent.agent_id for agent in agents}
    computer_macs: set[str] = set()
    for probe in probes:
        assert isinstance(probe.lan_hosts, LanHosts)
        for host in probe.lan_hosts.hosts:
            mac = normalize_mac(host.mac)
            if mac is None:
                continue
            node = f"mac:{mac}"
            uf.find(node)
            if host.agent_id is not None and host.agent_id in ids:
                uf.union(node, f"agent:{host.agent_id}")
            if host.kind == "computer":
                computer_macs.add(node)

    by_root: dict[str, list[AgentState]] = defaultdict(list)
    for agent in agents:
        by_root[uf.find(f"agent:{agent.agent_id}")].append(agent)
    discovered_roots = {uf.find(node) for node in computer_macs} - set(by_root)

    connected = 0
    av_states: Counter[str] = Counter()
    firewall_states: Counter[str] = Counter()
    patch_states: Counter[str] = Counter()
    managed_states: Counter[str] = Counter()
    ipv6_states: Counter[str] = Counter()
    pending_security = 0
    unprotected: list[float] = []
    until = protected_until or {}
    settings = settings or IndicatorSettings()
    now = now or dt.datetime.now(dt.UTC)
    for members in by_root.values():
        newest = max(members, key=lambda a: a.last_received_at)
        connected += agent_up.get(newest.agent_id, False)
        antivirus = newest.antivirus
        if isinstance(antivirus, AntivirusStatus):
            av_states[antivirus.state] += 1
            if antivirus.state in AV_UNPROTECTED:
                since = until.get((newest.site, newest.agent_id), newest.first_seen.timestamp())
                unprotected.append(since)
            managed_states[managed_state(antivirus)] += 1
        firewall = newest.firewall
        if isinstance(firewall, FirewallStatus):
            firewall_states[firewall_state(firewall)] += 1
        patches = newest.patches
        if isinstance(patches, PatchStatus):
            patch_states[patch_state(patches, now, settings.patch_max_age_seconds)] += 1
            pending_security += bool(patches.pending_security_updates)
        if isinstance(newest.host, HostInventory):
            ipv6_states[ipv6_state(newest, now, settings.window_seconds)] += 1
    return Computers(
        total=len(by_root) + len(discovered_roots),
        with_agent=len(by_root),
        connected=connected,
        av_reported=sum(av_states.values()),
        av_states=dict(av_states),
        discovered=bool(probes),
        firewall_states=dict(firewall_states),
        unprotected_since=tuple(sorted(unprotected)),
        patch_states=dict(patch_states),
        pending_security=pending_security,
        managed_states=dict(managed_states),
        ipv6_states=dict(ipv6_states),
    )


def firewall_state(status: FirewallStatus) -> FirewallState:
    """``enabled``, ``disabled`` or ``unknown`` (the agent could not tell)."""
    if status.enabled is None:
        return "unknown"
    return "enabled" if status.enabled else "disabled"


def patch_state(status: PatchStatus, now: dt.datetime, max_age_seconds: float) -> PatchState:
    """``unknown`` without an installation date; ``outdated`` when the newest update is
    older than ``max_age_seconds``; else ``reboot_pending`` when the computer still needs a
    restart for it to take effect; else ``current``."""
    installed = status.last_installed_at
    if installed is None:
        return "unknown"
    if (now - installed).total_seconds() > max_age_seconds:
        return "outdated"
    return "reboot_pending" if status.reboot_pending else "current"


def managed_state(status: AntivirusStatus) -> ManagedState:
    """Whether the computer's antivirus is centrally managed, as its agent observed."""
    if status.managed is None:
        return "unknown"
    return "managed" if status.managed else "unmanaged"


# Every computer's addresses again at each computation of its site (ipaddress is slow).
@functools.lru_cache(maxsize=1 << 16)
def _global_ipv6(addresses: tuple[str, ...]) -> bool:
    return has_global_ipv6(addresses)


def ipv6_state(agent: AgentState, now: dt.datetime, window_seconds: float) -> Ipv6State:
    """One computer's IPv6: a global address, and an IPv6 check up in its newest report
    when that report is within the window."""
    host = agent.host
    addresses = (
        tuple(a for i in host.interfaces for a in i.ipv6) if isinstance(host, HostInventory) else ()
    )
    if not _global_ipv6(addresses):
        return "no_address"
    fresh = (now - agent.last_received_at).total_seconds() <= window_seconds
    checks = (
        result
        for network in NETWORK_CLASSES
        for result in agent.latest.networks.get(network).targets
    )
    if fresh and any(r.family == "ipv6" and r.up for r in checks):
        return "working"
    return "address_only"


def latest_agent(agents: Sequence[AgentState], now: dt.datetime) -> AgentState | None:
    """The site's latest observation: its site probe's, else its freshest agent's."""
    if not agents:
        return None
    probes = [a for a in agents if a.role == "site-probe"]
    pool = probes or list(agents)
    # A clock ahead of ours must not win "freshest" by lying: cap at now.
    return max(pool, key=lambda a: (min(a.last_observed_at, now), a.last_received_at))


def observe_targets(
    report: Report | LatestReport,
) -> tuple[dict[NetworkClass, bool], list[TargetObservation]]:
    """Per configured class of one report: up, and each target's result."""
    networks: dict[NetworkClass, bool] = {}
    targets: list[TargetObservation] = []
    for network in NETWORK_CLASSES:
        status = report.networks.get(network)
        if not status.configured:
            continue
        networks[network] = bool(status.up)
        for result in status.targets:
            targets.append(
                TargetObservation(
                    network=network,
                    target=result.target,
                    kind=result.kind,
                    up=result.up,
                    rtt_seconds=result.rtt_seconds,
                    loss_ratio=result.loss_ratio,
                )
            )
    return networks, targets


def expectation(
    agents: Sequence[AgentState], since: dt.datetime, now: dt.datetime
) -> tuple[float, float]:
    """Expected reports as ``(rate, base)``: expected = (now − since) · rate + base.

    Per agent, reports at its interval from the later of the window start and its first
    report, plus the first report itself when that is in the window; an agent first seen
    after now (a clock set back) expects just that one. Between window-start moves the
    coefficients do not change, so a kept snapshot updates every site's count with one
    multiplication; both sums are ``math.fsum``, exact whatever the agents' order, so a
    kept and a full computation agree to the bit.
    """
    rates: list[float] = []
    bases: list[float] = []
    for agent in agents:
        first = agent.first_seen
        if first > now:
            bases.append(1.0)
            continue
        rates.append(1.0 / agent.interval_seconds)
        if first >= since:
            bases.append(1.0 - (first - since).total_seconds() / agent.interval_seconds)
    return math.fsum(rates), math.fsum(bases)


def completeness(
    agents: Sequence[AgentState],
    received: Mapping[tuple[str, str], int],
    since: dt.datetime,
    now: dt.datetime,
) -> Completeness:
    """Reports expected at each agent's interval since it appeared (within the window)
    against reports observed in the window and received so far (late ones included)."""
    rate, base = expectation(agents, since, now)
    got = sum(received.get((agent.site, agent.agent_id), 0) for agent in agents)
    return Completeness(
        expected=expected_at(rate, base, (now - since).total_seconds()), received=got
    )


def expected_at(rate: float, base: float, elapsed: float) -> float:
    """The expected count of ``expectation``'s coefficients ``elapsed`` seconds after the
    window start."""
    return elapsed * rate + base if rate else base


def site_view(
    unit: Unit,
    agents: Sequence[AgentState],
    windows: Mapping[NetworkClass, WindowRatio],
    agent_up: Mapping[str, bool],
    received: Mapping[tuple[str, str], int],
    settings: IndicatorSettings,
    now: dt.datetime,
    last_heard: dt.datetime | None = None,
    *,
    declared: Declared | None = None,
    protected_until: Mapping[tuple[str, str], float] | None = None,
    throughput: Mapping[NetworkClass, Throughput] | None = None,
    use_days: Mapping[NetworkClass, tuple[NetworkUseDay, ...]] | None = None,
) -> SiteView:
    """Everything about one unit from its (active) agents and its declarations.

    ``last_heard`` is the newest arrival from any agent the site ever had, retired ones
    included: a site silent for longer than the inventory horizon is still silent, and
    its last report time stays visible.
    """
    since = window_start(now, settings)
    days = window_days(now, settings)
    pool = agents
    if settings.fresh_observations_only:
        pool = [
            a
            for a in agents
            if (now - (a.last_effective_at or a.last_observed_at)).total_seconds()
            <= settings.site_up_after_intervals * a.interval_seconds
        ]
    latest = latest_agent(pool, now)
    networks: dict[NetworkClass, bool] = {}
    targets: list[TargetObservation] = []
    if latest is not None:
        networks, targets = observe_targets(latest.latest)
    lan_hosts: dict[str, int] = {}
    computers = count_computers(agents, agent_up, protected_until, now=now, settings=settings)
    probes = [a for a in agents if isinstance(a.lan_hosts, LanHosts)]
    if probes:
        newest = max(probes, key=lambda a: a.last_received_at)
        assert isinstance(newest.lan_hosts, LanHosts)
        lan_hosts["arp"] = newest.lan_hosts.counts.arp
        lan_hosts["snmp"] = newest.lan_hosts.counts.snmp
    if computers is not None:
        lan_hosts["agent"] = computers.with_agent
    up = any(
        (now - a.last_received_at).total_seconds()
        <= settings.site_up_after_intervals * a.interval_seconds
        for a in agents
    )
    skew = dt.timedelta(seconds=settings.clock_skew_tolerance_seconds)
    heard = [a.last_received_at for a in agents]
    if last_heard is not None:
        heard.append(last_heard)
    state: SiteState = "reporting" if up else ("silent" if heard else "never_reported")
    return SiteView(
        unit=unit,
        agents=len(agents),
        up=up,
        state=state,
        last_report_timestamp=max(heard).timestamp() if heard else None,
        networks=networks,
        windows=dict(windows),
        targets=tuple(targets),
        lan_hosts=lan_hosts,
        computers=computers,
        completeness=completeness(agents, received, since, now),
        spool_dropped=sum(a.spool_dropped for a in agents),
        clock_skew_agents=sum(1 for a in agents if _clock_skewed(a, now, skew)),
        declared=declared or Declared(),
        observed=bool(pool) or not agents,
        spool_rejected=sum(a.latest.spool_rejected for a in agents),
        spool_resets=sum(a.latest.spool_resets for a in agents),
        throughput=dict(throughput or {}),
        use_days=dict(use_days or {}),
        today=days[1],
        window_days=days,
    )


def _clock_skewed(agent: AgentState, now: dt.datetime, skew: dt.timedelta) -> bool:
    """The agent's clock is off: its newest report had to be moved onto the collector's
    clock (a clock behind or ahead, measured from ``sent_at``) or is still in the future."""
    effective = agent.last_effective_at or agent.last_observed_at
    moved = abs((agent.last_observed_at - effective).total_seconds()) > 1.0
    return moved or agent.last_observed_at > now + skew


def window_start(now: dt.datetime, settings: IndicatorSettings) -> dt.datetime:
    """Start of the window as the store counts it: the hour bucket holding now − window.

    The store answers windows from whole buckets (``window.bucket``, hourly by default;
    see ``collector.store``), so the expected report count starts where the received
    count does.
    """
    since = (now - dt.timedelta(seconds=settings.window_seconds)).timestamp()
    width = settings.bucket_seconds
    return from_unix(since // width * width)


def unit_attains(view: SiteView, network: NetworkClass, up_ratio: float) -> bool:
    """Up in at least ``up_ratio`` of the window's checks; never configured is not up."""
    window = view.windows.get(network)
    ratio = window.ratio if window is not None else None
    return ratio is not None and ratio >= up_ratio


def unit_meets(
    view: SiteView, network: NetworkClass, up_ratio: float, rule: GoalRule, now: dt.datetime
) -> bool | None:
    """Whether a unit meets every requirement of a goal; None: broadband not judged.

    A unit that is not reachable does not attain, measured or not; a reachable one
    without a throughput result in the broadband window cannot be judged broadband.
    """
    if not unit_attains(view, network, up_ratio):
        return False
    if "used" in rule.requires and (rule.use is None or not view.used(network, rule.use)):
        return False
    if "broadband" in rule.requires and rule.broadband is not None:
        rate = download_rate(view.throughput.get(network), rule.broadband, now)
        if rate is None:
            return None
        return rate >= rule.broadband.min_bytes_per_second
    return True


def has_network_data(view: SiteView) -> bool:
    """Whether any check of any class of this unit falls in the window."""
    return any(window.checks > 0 for window in view.windows.values())


# Per unit and indicator: (in the selection, numerator, denominator, attaining, no data,
# not judged). All integers, so totals kept by subtracting a unit's old contribution and
# adding its new one equal a full sum exactly.
Contribution = tuple[int, int, int, int, int, int]
_OUTSIDE: Final[Contribution] = (0, 0, 0, 0, 0, 0)
_FIELDS: Final = len(_OUTSIDE)


def contribution(
    indicator: Indicator,
    view: SiteView,
    up_ratio: float,
    rule: GoalRule | None = None,
    now: dt.datetime | None = None,
    today: dt.date | None = None,
) -> Contribution:
    """What one unit adds to an indicator over a selection holding it (``indicator_value``)."""
    computers = view.computers
    if indicator in UNIT_INDICATORS:
        network = UNIT_INDICATORS[indicator]
        if not has_network_data(view):
            return (1, 0, 1, 0, 1, 0)
        if rule is None or now is None:
            verdict: bool | None = unit_attains(view, network, up_ratio)
        else:
            verdict = unit_meets(view, network, up_ratio, rule, now)
        if verdict is None:
            return (1, 0, 1, 0, 0, 1)
        return (1, 1, 1, 1, 0, 0) if verdict else (1, 0, 1, 0, 0, 0)
    if indicator == "computers_per_official":
        # Units that declare no officials are outside this ratio altogether.
        officials = view.officials
        if officials is None:
            return _OUTSIDE
        if computers is None:
            return (1, 0, officials, 0, 1, 0)
        return (1, computers.total, officials, 0, 0, 0)
    if indicator == "computers_connected":
        if computers is None:
            return (1, 0, 0, 0, 1, 0)
        return (1, computers.connected, computers.total, 0, 0, 0)
    if indicator == "ipv6":
        states = computers.ipv6_states if computers is not None else {}
        if not sum(states.values()):
            return (1, 0, 1, 0, 1, 0)
        return (1, 1, 1, 1, 0, 0) if states.get("working", 0) > 0 else (1, 0, 1, 0, 0, 0)
    if indicator == "security_inspection":
        inspected = view.declared.inspection_date
        if not view.declared.facts:
            return (1, 0, 1, 0, 1, 0)
        if inspected is None or today is None:
            return (1, 0, 1, 0, 0, 0)
        recent = today - INSPECTION_MAX_AGE <= inspected <= today
        return (1, 1, 1, 1, 0, 0) if recent else (1, 0, 1, 0, 0, 0)
    if indicator == "computers_patched":
        reported = sum(computers.patch_states.values()) if computers is not None else 0
        if computers is None or reported == 0:
            return (1, 0, 0, 0, 1, 0)
        return (1, computers.patch_states.get("current", 0), reported, 0, 0, 0)
    if indicator in ("antivirus_managed", "antivirus_protected"):
        if computers is None or computers.av_reported == 0:
            return (1, 0, 0, 0, 1, 0)
        if indicator == "antivirus_managed":
            return (1, computers.managed_states.get("managed", 0), computers.av_reported, 0, 0, 0)
        return (1, computers.protected, computers.av_reported, 0, 0, 0)
    # A new Indicator without its rule here: tests/collector/test_targets.py fails.
    raise ValueError(f"no rule computes indicator {indicator!r}")


def indicator_value(
    indicator: Indicator,
    level: GoalLevel,
    views: Sequence[SiteView],
    up_ratio: float,
    rule: GoalRule | None = None,
    now: dt.datetime | None = None,
    today: dt.date | None = None,
) -> IndicatorValue:
    """One indicator over a selection of units (see docs/indicators.md).

    Without ``rule`` a unit indicator is reachability; a plan goal's rule may add
    broadband and use (``unit_meets``; ``now`` is then required).
    """
    totals = [0] * _FIELDS
    for view in views:
        for i, part in enumerate(contribution(indicator, view, up_ratio, rule, now, today)):
            totals[i] += part
    return summed_value(indicator, level, totals)


def summed_value(indicator: Indicator, level: GoalLevel, totals: Sequence[int]) -> IndicatorValue:
    """The IndicatorValue of summed contributions (``totals[:6]``)."""
    units, numerator, denominator, attaining, no_data, not_judged = totals[:_FIELDS]
    return IndicatorValue(
        indicator=indicator,
        level=level,
        numerator=float(numerator),
        denominator=float(denominator),
        units=units,
        units_attaining=attaining,
        units_no_data=no_data,
        has_data=indicator in UNIT_LEVEL or no_data < units,
        units_not_judged=not_judged,
    )


def counts_for(view: SiteView, basis: str | None) -> bool:
    """Whether a unit's officials count answers a goal that names its denominator
    (``officials_basis``): a count declared on another basis does not; a count whose basis
    is not said (the org file, or a declaration without one) does."""
    declared = view.declared.officials_basis if view.declared.officials is not None else None
    return basis is None or declared is None or declared == basis


def select_units(
    views: Sequence[SiteView], level: GoalLevel, sectors: Iterable[str] | None = None
) -> list[SiteView]:
    """The units of one level (or all), optionally of some sectors only."""
    wanted = set(sectors) if sectors is not None else None
    return [
        v
        for v in views
        if (level == "all" or v.unit.level == level) and (wanted is None or v.unit.sector in wanted)
    ]


def site_windows(agent_windows: Iterable[AgentNetworkWindow]) -> list[NetworkWindow]:
    """Per (site, class) the sums of its agents' windows, in (site, class) order: what
    ``network_windows`` answers, without a second scan of the window buckets (the
    largest read of a refresh: every agent's buckets of the last day)."""
    sums: dict[tuple[str, NetworkClass], list[int]] = {}
    for w in agent_windows:
        total = sums.setdefault((w.site, w.network), [0, 0])
        total[0] += w.checks
        total[1] += w.up_checks
    return [NetworkWindow(s, n, c, u) for (s, n), (c, u) in sorted(sums.items())]


def build_snapshot(
    org: Org,
    plans: Sequence[Plan],
    settings: IndicatorSettings,
    now: dt.datetime,
    agents: Sequence[AgentState],
    windows: Sequence[NetworkWindow],
    received: Mapping[tuple[str, str], int],
    agent_windows: Sequence[AgentNetworkWindow],
    skipped_rows: int = 0,
    *,
    declarations: Iterable[StoredDeclaration] = (),
    protected_until: Mapping[tuple[str, str], float] | None = None,
    throughput: Iterable[ThroughputRecord] = (),
    use_days: Iterable[NetworkUseDay] = (),
    cache: SnapshotCache | None = None,
    changed_sites: Collection[str] | None = None,
) -> Snapshot:
    """Compute the whole Snapshot from store values; pure, so tests give exact inputs.

    ``declarations`` are the stored ones whose period contains ``now``; what each unit
    declared that is in force now overrides the org file (``officials``).

    ``skipped_rows`` counts store rows the read already left out. A unit whose agents make
    the arithmetic fail is shown without agents and its agents are added to that count
    (logged with the traceback as ``snapshot.bad_site``): one bad row must not cost the
    province its snapshot.

    With a ``cache`` (one per builder, given to every call) only the sites in
    ``changed_sites`` and those whose clock-dependent facts may have flipped since are
    computed again; the result equals the computation without a cache provided every
    other site (units and sites missing from the org file alike) had identical inputs in
    the cache's previous call. ``changed_sites=None``: any site may have changed.
    """
    if cache is None:
        cache, changed_sites = SnapshotCache(), None
    inputs = _Inputs(
        agents=agents,
        windows=windows,
        received=received,
        agent_windows=agent_windows,
        declarations=declarations,
        protected_until=protected_until or {},
        throughput=throughput,
        use_days=use_days,
    )
    try:
        return cache._build(org, tuple(plans), settings, now, inputs, skipped_rows, changed_sites)
    except BaseException:
        cache._reset(None)  # half updated: start again next time
        raise


@dataclass(frozen=True, slots=True)
class _Inputs:
    """build_snapshot's store values, as given."""

    agents: Sequence[AgentState]
    windows: Sequence[NetworkWindow]
    received: Mapping[tuple[str, str], int]
    agent_windows: Sequence[AgentNetworkWindow]
    declarations: Iterable[StoredDeclaration]
    protected_until: Mapping[tuple[str, str], float]
    throughput: Iterable[ThroughputRecord]
    use_days: Iterable[NetworkUseDay]


class _OfSite(Protocol):
    @property
    def site(self) -> str: ...


_Row = TypeVar("_Row", bound=_OfSite)


def _of_sites(rows: Iterable[_Row], sites: Collection[str] | None) -> Iterable[_Row]:
    return rows if sites is None else [r for r in rows if r.site in sites]


@dataclass(slots=True)
class _SiteInputs:
    """One site's share of the store values (all of its agents, retired ones included)."""

    agents: list[AgentState] = field(default_factory=list)
    windows: dict[NetworkClass, WindowRatio] = field(default_factory=dict)
    # Per agent id, per class of _CONNECTED: (checks, up checks) over the window.
    agent_windows: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    declarations: list[StoredDeclaration] = field(default_factory=list)
    use_days: dict[NetworkClass, list[NetworkUseDay]] = field(default_factory=dict)


def _split(inputs: _Inputs, sites: Collection[str] | None) -> dict[str, _SiteInputs]:
    """The store values of ``sites`` (None: all), per site."""
    split: dict[str, _SiteInputs] = defaultdict(_SiteInputs)
    for agent in _of_sites(inputs.agents, sites):
        split[agent.site].agents.append(agent)
    for window in _of_sites(inputs.windows, sites):
        split[window.site].windows[window.network] = WindowRatio(window.checks, window.up_checks)
    for aw in _of_sites(inputs.agent_windows, sites):
        if aw.network in _CONNECTED:
            nets = split[aw.site].agent_windows.setdefault(aw.agent_id, {})
            nets[aw.network] = (aw.checks, aw.up_checks)
    for row in inputs.declarations:
        if sites is None or row.unit in sites:
            split[row.unit].declarations.append(row)
    for day in _of_sites(inputs.use_days, sites):
        split[day.site].use_days.setdefault(day.network, []).append(day)
    return split


# computers_connected: a computer's own checks of these classes were up over the window.
_CONNECTED: Final = ("lan", "internet")


def _agent_up(
    per_agent: Mapping[str, Mapping[str, tuple[int, int]]], up_ratio: float
) -> dict[str, bool]:
    """Per agent of one site: each class of _CONNECTED up in ≥ up_ratio of its checks."""
    return {
        agent_id: all(
            (w := nets.get(network)) is not None and w[0] > 0 and w[1] / w[0] >= up_ratio
            for network in _CONNECTED
        )
        for agent_id, nets in per_agent.items()
    }


# A clock-dependent decision is taken again this long before the moment it may flip:
# moments are computed in float seconds, decisions in datetime arithmetic.
_MARGIN: Final = 0.001


def _valid_until(
    agents: Sequence[AgentState],
    settings: IndicatorSettings,
    now: dt.datetime,
    declarations: Iterable[StoredDeclaration] = (),
    throughput: Mapping[NetworkClass, Throughput] | None = None,
    broadband_windows: Iterable[float] = (),
) -> float:
    """The first moment after ``now`` at which a clock-dependent fact of a site may flip
    (an earlier one is harmless: the site is computed again): an agent's up → down
    (received, or observed with fresh_observations_only), its retirement, its IPv6 check
    leaving the window, its observation time no longer ahead of the clock or skewed, its
    first report no longer in the future, its patches growing too old; a declaration
    period's start or end; a throughput result leaving a plan's broadband window."""
    moments: list[float] = []
    horizon = max(settings.inventory_window_seconds, settings.window_seconds)
    at = now.timestamp()
    # The freshest observation is capped at now (latest_agent): one ahead of the clock
    # may lose to another once now passes it, or (a tie at now) win just after now.
    if any(agent.last_observed_at > now for agent in agents):
        moments += (agent.last_observed_at.timestamp() for agent in agents)
    for agent in agents:
        heard = agent.last_received_at.timestamp()
        limit = settings.site_up_after_intervals * agent.interval_seconds
        moments += (
            heard + limit,
            heard + horizon,
            heard + settings.window_seconds,
            agent.last_observed_at.timestamp() - settings.clock_skew_tolerance_seconds,
        )
        if agent.first_seen > now:  # expects its first report only until then (expectation)
            moments.append(agent.first_seen.timestamp())
        if settings.fresh_observations_only:
            moments.append((agent.last_effective_at or agent.last_observed_at).timestamp() + limit)
        patches = agent.patches
        if isinstance(patches, PatchStatus) and patches.last_installed_at is not None:
            moments.append(patches.last_installed_at.timestamp() + settings.patch_max_age_seconds)
    for row in declarations:
        moments += (row.period_start, row.period_end)
    windows = tuple(broadband_windows)
    for result in (throughput or {}).values():
        moments += (at + w for at, _ in result.rates for w in windows)
    floor = at - _MARGIN
    return min((m for m in moments if m >= floor), default=math.inf) - _MARGIN


@dataclass(slots=True)
class _Site:
    """One unit as a cache holds it, until its inputs change or ``valid_until``."""

    view: SiteView
    valid_until: float
    rate: float  # completeness: expected = (now − window start) · rate + base
    base: float
    values: tuple[int, ...]  # per indicator, its Contribution, one after the other
    goals: tuple[int, ...]  # per plan goal (Layout.goals), its Contribution
    skipped: int  # agents left out because their arithmetic failed


class _Layout:
    """What the org file and the plans fix: levels, goals, which goals hold which unit."""

    def __init__(self, org: Org, plans: tuple[Plan, ...], settings: IndicatorSettings) -> None:
        self.org = org
        self.plans = plans
        self.settings = settings
        self.levels: list[GoalLevel] = [
            lvl for lvl in LEVELS if any(u.level == lvl for u in org.units)
        ]
        self.levels.append("all")
        self.units = {lvl: sum(1 for u in org.units if u.level == lvl) for lvl in self.levels}
        self.units["all"] = len(org.units)
        self.goals = [
            (plan, goal, GoalRule(goal.requires, plan.broadband, plan.use))
            for plan in plans
            for goal in plan.goals
        ]
        self.members: dict[str, tuple[int, ...]] = {
            unit.id: tuple(
                i
                for i, (_, goal, _) in enumerate(self.goals)
                if (goal.level == "all" or unit.level == goal.level)
                and (goal.sectors is None or unit.sector in goal.sectors)
            )
            for unit in org.units
        }
        self.broadband_windows = sorted(
            {p.broadband.window_seconds for p in plans if p.broadband is not None}
        )

    def fits(self, org: Org, plans: tuple[Plan, ...], settings: IndicatorSettings) -> bool:
        return (
            (org is self.org or org == self.org)
            and plans == self.plans
            and settings == self.settings
        )


_SITE_FIELDS: Final = tuple(f.name for f in dataclasses.fields(SiteView))


def _with_completeness(view: SiteView, done: Completeness) -> SiteView:
    """``view`` with another completeness: every refresh, for every site with agents.
    Copies the slots (half the time of ``dataclasses.replace``, which calls __init__);
    SiteView has no __post_init__ to skip."""
    copy = object.__new__(SiteView)
    for name in _SITE_FIELDS:
        object.__setattr__(copy, name, getattr(view, name))
    object.__setattr__(copy, "completeness", done)
    return copy


class SnapshotCache:
    """What ``build_snapshot`` keeps between calls of one builder: per site its view, the
    moment until which that view stays true (``_valid_until``), its completeness as the
    coefficients of ``expectation`` and its contributions to every indicator and goal;
    and the indicator totals, kept by subtracting a site's old contribution and adding
    its new one. A refresh after a few new reports then costs the changed sites plus one
    pass that brings every site's expected report count to the new ``now``.

    Start again from nothing (a full computation) when the org file, the plans or the
    settings differ from the previous call's, when the clock moved back, and when the
    window start (a bucket boundary) or the day (roll-up day, UTC+7 day) moved.
    """

    def __init__(self) -> None:
        self._reset(None)

    def _reset(self, layout: _Layout | None) -> None:
        self._layout = layout
        self._clock: tuple[object, ...] = ()
        self._now = -math.inf
        self._sites: dict[str, _Site] = {}
        self._unknown: dict[str, tuple[int, float]] = {}  # not in the org file: (agents, until)
        self._values: dict[str, list[int]] = {}  # per level: the sums of _Site.values
        self._goals: list[int] = []
        self._declared: dict[str, int] = {}  # per level: units with a declaration in force
        self._skipped = 0
        self._unknown_agents = 0

    def _build(
        self,
        org: Org,
        plans: tuple[Plan, ...],
        settings: IndicatorSettings,
        now: dt.datetime,
        inputs: _Inputs,
        skipped_rows: int,
        changed_sites: Collection[str] | None,
    ) -> Snapshot:
        at = now.timestamp()
        since = window_start(now, settings)
        days = window_days(now, settings)
        # Inspection dates are calendar days of the province (UTC+7), not of the host.
        today = now.astimezone(dt.timezone(dt.timedelta(hours=7))).date()
        clock = (since, days, today)
        layout = self._layout
        full = (
            changed_sites is None
            or layout is None
            or not layout.fits(org, plans, settings)
            or clock != self._clock
            or at < self._now
        )
        if full or layout is None:
            layout = _Layout(org, plans, settings)
            self._reset(layout)
            wanted: set[str] | None = None
        else:
            wanted = set(changed_sites or ())
            if at > self._now:  # at the same moment the same inputs give the same views
                wanted.update(s for s, kept in self._sites.items() if kept.valid_until <= at)
                wanted.update(s for s, (_, until) in self._unknown.items() if until <= at)
        self._clock, self._now = clock, at
        split = _split(inputs, wanted)
        site_throughput = group_throughput(_of_sites(inputs.throughput, wanted))
        horizon = now - dt.timedelta(
            seconds=max(settings.inventory_window_seconds, settings.window_seconds)
        )
        computed: dict[str, _Site] = {}
        if wanted is None:
            sites: Iterable[str] = [*(u.id for u in org.units), *(s for s in split if s not in org)]
        else:
            sites = wanted
        for site in sites:
            share = split.get(site) or _SiteInputs()
            active = [a for a in share.agents if a.last_received_at >= horizon]
            unit = org.get(site)
            if unit is None:
                self._unknown_agents -= self._unknown.pop(site, (0, 0.0))[0]
                if active:
                    until = _valid_until(active, settings, now)
                    self._unknown[site] = (len(active), until)
                    self._unknown_agents += len(active)
                continue
            computed[site] = self._site(
                layout, unit, share, active, site_throughput.get(site), inputs, now, since, today
            )
        if wanted is None:
            self._sum_all(layout, computed)
        else:
            for site, new in computed.items():
                unit = org.get(site)
                assert unit is not None
                self._move(unit, self._sites[site], -1)
                self._move(unit, new, 1)
                self._sites[site] = new
        return self._snapshot(layout, now, since, today, skipped_rows)

    def _site(
        self,
        layout: _Layout,
        unit: Unit,
        share: _SiteInputs,
        active: list[AgentState],
        throughput: Mapping[NetworkClass, Throughput] | None,
        inputs: _Inputs,
        now: dt.datetime,
        since: dt.datetime,
        today: dt.date,
    ) -> _Site:
        settings = layout.settings
        at = now.timestamp()
        heard = max((a.last_received_at for a in share.agents), default=None)
        facts = in_force(share.declarations, at).get(unit.id)
        declared = Declared(facts) if facts is not None else None
        use = {n: tuple(d) for n, d in share.use_days.items()}
        agent_up = _agent_up(share.agent_windows, settings.up_ratio)
        skipped = 0
        try:
            view = site_view(
                unit,
                active,
                share.windows,
                agent_up,
                inputs.received,
                settings,
                now,
                heard,
                declared=declared,
                protected_until=inputs.protected_until,
                throughput=throughput,
                use_days=use,
            )
            values, goals = self._contributions(layout, view, now, today)
            until = _valid_until(
                active, settings, now, share.declarations, throughput, layout.broadband_windows
            )
            rate, base = expectation(active, since, now)
        except Exception as exc:
            skipped = len(active)
            log_exception_limited(log, "snapshot.bad_site", exc, site=unit.id, agents=skipped)
            view = site_view(unit, [], {}, {}, {}, settings, now, heard, declared=declared)
            values, goals = self._contributions(layout, view, now, today)
            until, rate, base = at, 0.0, 0.0  # what failed may not fail later: try again
        return _Site(view, until, rate, base, values, goals, skipped)

    @staticmethod
    def _contributions(
        layout: _Layout, view: SiteView, now: dt.datetime, today: dt.date
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        up_ratio = layout.settings.up_ratio
        values: list[int] = []
        for indicator in INDICATORS:
            values += contribution(indicator, view, up_ratio, today=today)
        goals = [0] * (_FIELDS * len(layout.goals))
        for i in layout.members.get(view.unit.id, ()):
            _, goal, rule = layout.goals[i]
            if goal.indicator == "computers_per_official" and not counts_for(
                view, goal.officials_basis
            ):
                continue
            part = contribution(goal.indicator, view, up_ratio, rule, now, today)
            goals[i * _FIELDS : (i + 1) * _FIELDS] = part
        return tuple(values), tuple(goals)

    def _sum_all(self, layout: _Layout, computed: dict[str, _Site]) -> None:
        """Totals from nothing: column sums, level by level."""
        width = _FIELDS * len(INDICATORS)
        by_level: dict[str, list[tuple[int, ...]]] = defaultdict(list)
        for unit in layout.org.units:
            site = computed[unit.id]
            self._sites[unit.id] = site
            by_level[unit.level].append(site.values)
            self._declared[unit.level] = self._declared.get(unit.level, 0)
            if site.view.declared.facts:
                self._declared[unit.level] += 1
                self._declared["all"] = self._declared.get("all", 0) + 1
            self._skipped += site.skipped
        for level in layout.levels:
            rows = by_level[level] if level != "all" else [s.values for s in self._sites.values()]
            self._values[level] = (
                [sum(col) for col in zip(*rows, strict=True)] if rows else [0] * width
            )
        goals = [s.goals for s in self._sites.values()]
        width = _FIELDS * len(layout.goals)
        self._goals = [sum(col) for col in zip(*goals, strict=True)] if goals else [0] * width

    def _move(self, unit: Unit, site: _Site, sign: int) -> None:
        """Add (sign 1) or subtract (-1) one site's part of the totals."""
        for level in (unit.level, "all"):
            totals = self._values[level]
            for i, part in enumerate(site.values):
                if part:
                    totals[i] += sign * part
            if site.view.declared.facts:
                self._declared[level] = self._declared.get(level, 0) + sign
        for i, part in enumerate(site.goals):
            if part:
                self._goals[i] += sign * part
        self._skipped += sign * site.skipped

    def _snapshot(
        self,
        layout: _Layout,
        now: dt.datetime,
        since: dt.datetime,
        today: dt.date,
        skipped_rows: int,
    ) -> Snapshot:
        elapsed = (now - since).total_seconds()
        views: list[SiteView] = []
        for unit in layout.org.units:
            site = self._sites[unit.id]
            view = site.view
            expected = expected_at(site.rate, site.base, elapsed)
            if expected != view.completeness.expected:
                done = Completeness(expected=expected, received=view.completeness.received)
                site.view = view = _with_completeness(view, done)
            views.append(view)
        values = tuple(
            summed_value(indicator, level, self._values[level][k * _FIELDS : (k + 1) * _FIELDS])
            for k, indicator in enumerate(INDICATORS)
            for level in layout.levels
        )
        goals = tuple(
            GoalView(
                plan=plan.plan,
                indicator=goal.indicator,
                level=goal.level,
                goal=goal.goal,
                deadline=goal.deadline,
                rule=rule,
                measured=summed_value(
                    goal.indicator, goal.level, self._goals[i * _FIELDS : (i + 1) * _FIELDS]
                ),
            )
            for i, (plan, goal, rule) in enumerate(layout.goals)
        )
        coverage: dict[str, tuple[int, int]] = {
            level: (
                (declared := self._declared.get(level, 0)),
                layout.units[level] - declared,
            )
            for level in layout.levels
        }
        return Snapshot(
            generated_at=now.timestamp(),
            settings=layout.settings,
            sites=tuple(views),
            indicators=values,
            goals=goals,
            unknown_site_agents=self._unknown_agents,
            skipped_rows=skipped_rows + self._skipped,
            declaration_units=coverage,
        )


def group_throughput(
    records: Iterable[ThroughputRecord],
) -> dict[str, dict[NetworkClass, Throughput]]:
    """Per site and class: measured rates (oldest first) and failures; skips are neither."""
    rates: dict[tuple[str, NetworkClass], list[tuple[float, float]]] = defaultdict(list)
    failed: Counter[tuple[str, NetworkClass]] = Counter()
    for r in records:
        if r.skipped:
            continue
        if r.up and r.bytes_per_second is not None:
            rates[(r.site, r.network)].append((r.effective_at, r.bytes_per_second))
        else:
            failed[(r.site, r.network)] += 1
    result: dict[str, dict[NetworkClass, Throughput]] = defaultdict(dict)
    for key in set(rates) | set(failed):
        site, network = key
        result[site][network] = Throughput(tuple(sorted(rates.get(key, []))), failed[key])
    return dict(result)


def throughput_window(plans: Sequence[Plan]) -> float:
    """How far back throughput results are read: the longest broadband window of the plans."""
    windows = [p.broadband.window_seconds for p in plans if p.broadband is not None]
    return max([DEFAULT_THROUGHPUT_WINDOW_SECONDS, *windows])

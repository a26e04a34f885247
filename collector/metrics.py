"""Prometheus exposition of the indicator Snapshot: ``HatangCollector``.

``METRICS`` is the one table of metric names, types, help and label names (STYLE rule
10): ``HatangCollector`` builds its families from it and the contract test checks the
DESIGN names against it and against a real scrape. ``collect()`` reads the builder's
current immutable Snapshot and does no I/O, because the aiohttp handler renders on the
event loop.

Label values are bounded: control characters become spaces and a value longer than
``MAX_LABEL_LENGTH`` characters is cut and suffixed with a hash of the whole value, so
two long targets stay two series and a 10 kB target stays one short label. At most
``MAX_TARGETS_PER_NETWORK`` probe targets per site and network class are exposed (the
rest stay in the store). Per-computer detail never becomes a label.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.indicators import AV_STATES, UNIT_INDICATORS, Snapshot

MAX_LABEL_LENGTH: Final = 128
MAX_TARGETS_PER_NETWORK: Final = 16
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: its name (without ``_total``), type, help and label names."""

    name: str
    type: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]
    design: bool = False  # part of the DESIGN.md contract (dashboards and alerts rely on it)


METRICS: Final[tuple[MetricSpec, ...]] = (
    # --- DESIGN contract
    MetricSpec(
        "hatang_site_info",
        "gauge",
        "Unit of the org tree (always 1); name in Vietnamese, parent empty for a province.",
        ("site", "name", "level", "parent"),
        design=True,
    ),
    MetricSpec(
        "hatang_site_up",
        "gauge",
        "1 while some agent of the site reported within site_up_after_intervals of its interval; "
        "0 otherwise and for units without agents.",
        ("site",),
        design=True,
    ),
    MetricSpec(
        "hatang_site_last_report_timestamp_seconds",
        "gauge",
        "When the collector last received a report from the site (Unix time).",
        ("site",),
        design=True,
    ),
    MetricSpec(
        "hatang_network_up",
        "gauge",
        "Latest observation of a configured network class at the site (site probe, else "
        "freshest agent): 1 up, 0 down.",
        ("site", "network"),
        design=True,
    ),
    MetricSpec(
        "hatang_probe_rtt_seconds",
        "gauge",
        "Round-trip or answer time of one probe target in the site's latest observation.",
        ("site", "network", "target"),
        design=True,
    ),
    MetricSpec(
        "hatang_probe_loss_ratio",
        "gauge",
        "Packet loss of one probe target in the site's latest observation (0..1).",
        ("site", "network", "target"),
        design=True,
    ),
    MetricSpec(
        "hatang_lan_hosts",
        "gauge",
        "Hosts on the site's LAN by source: arp and snmp from the site probe, agent = "
        "computers running the agent (merged by MAC).",
        ("site", "source"),
        design=True,
    ),
    MetricSpec(
        "hatang_antivirus_hosts",
        "gauge",
        "Computers with agent at the site by antivirus state "
        "(protected, outdated, disabled, missing, unknown).",
        ("site", "state"),
        design=True,
    ),
    MetricSpec(
        "hatang_indicator_ratio",
        "gauge",
        "Indicator over all units of a level (all sectors); absent until a unit has data.",
        ("indicator", "level"),
        design=True,
    ),
    MetricSpec(
        "hatang_indicator_goal_ratio",
        "gauge",
        "Goal of a plan for an indicator at a level (goals without a number are not exposed).",
        ("indicator", "level", "plan"),
        design=True,
    ),
    # --- additions: how the numbers were reached, and whether they can be trusted
    MetricSpec(
        "hatang_indicator_goal_measured_ratio",
        "gauge",
        "Measured indicator over the units a plan goal selects (its level and sector filter).",
        ("indicator", "level", "plan"),
    ),
    MetricSpec(
        "hatang_indicator_goal_deadline_year",
        "gauge",
        "Deadline year of a plan goal (also for goals without a number).",
        ("indicator", "level", "plan"),
    ),
    MetricSpec(
        "hatang_indicator_numerator",
        "gauge",
        "Numerator of an indicator: units attaining, or computers (see docs/indicators.md).",
        ("indicator", "level"),
    ),
    MetricSpec(
        "hatang_indicator_denominator",
        "gauge",
        "Denominator of an indicator: units of the level, computers, or declared officials.",
        ("indicator", "level"),
    ),
    MetricSpec(
        "hatang_indicator_units",
        "gauge",
        "Units of a level by state: attaining, not_attaining, no_data (network indicators); "
        "with_data, no_data (computer indicators). Units without data count as not attaining.",
        ("indicator", "level", "state"),
    ),
    MetricSpec(
        "hatang_indicator_window_seconds",
        "gauge",
        "Length of the window over which network indicators are judged.",
        (),
    ),
    MetricSpec(
        "hatang_indicator_up_threshold_ratio",
        "gauge",
        "Share of checks in the window that must be up for a unit to count as up.",
        (),
    ),
    MetricSpec(
        "hatang_site_agents",
        "gauge",
        "Agents of the site heard from within the inventory horizon.",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_network_window_up_ratio",
        "gauge",
        "Share of the site's checks of a network class that were up over the window.",
        ("site", "network"),
    ),
    MetricSpec(
        "hatang_site_computers",
        "gauge",
        "Computers at the site: agents merged by MAC plus discovered hosts classified computer.",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_agent_coverage_ratio",
        "gauge",
        "Computers running the agent ÷ computers, at sites whose site probe discovered the LAN.",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_reports_expected",
        "gauge",
        "Reports expected over the window from the site's agents' intervals.",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_reports_received",
        "gauge",
        "Reports observed in the window and received so far (late ones included).",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_report_completeness_ratio",
        "gauge",
        "Reports received ÷ expected over the window (capped at 1).",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_spool_dropped_reports",
        "gauge",
        "Reports the site's agents' spools dropped when full (sum of their cumulative counts).",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_clock_skew_agents",
        "gauge",
        "Agents of the site whose newest observation is dated in the future.",
        ("site",),
    ),
    MetricSpec(
        "hatang_unknown_site_agents",
        "gauge",
        "Agents reporting for a site that is not in the organisation file.",
        (),
    ),
    MetricSpec(
        "hatang_snapshot_timestamp_seconds",
        "gauge",
        "When the indicator snapshot being served was computed (Unix time).",
        (),
    ),
    MetricSpec(
        "hatang_snapshot_refresh_duration_seconds",
        "gauge",
        "How long the last successful snapshot refresh took.",
        (),
    ),
    MetricSpec(
        "hatang_snapshot_refresh_failures",
        "counter",
        "Snapshot refreshes that failed (the previous snapshot kept serving).",
        (),
    ),
)
SPECS: Final = {spec.name: spec for spec in METRICS}


class SnapshotSource(Protocol):
    """What the collector reads: the builder's current snapshot and refresh bookkeeping."""

    @property
    def snapshot(self) -> Snapshot: ...
    @property
    def failures(self) -> int: ...
    @property
    def last_duration_seconds(self) -> float | None: ...


def label_value(text: str, limit: int = MAX_LABEL_LENGTH) -> str:
    """Bound a label value: no control characters, at most ``limit`` characters, and
    distinct inputs stay distinct (a cut value ends with a hash of the whole)."""
    clean = _CONTROL.sub(" ", text)
    if len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{clean[: limit - 10]}…#{digest}"


class HatangCollector(Collector):
    """Yields the METRICS families from the builder's current Snapshot; no I/O."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        """Names only, so a registry can refuse duplicates without a collect()."""
        return [_family(spec) for spec in METRICS]

    def collect(self) -> Iterator[Metric]:
        """Build every family from one Snapshot (a refresh may swap it meanwhile)."""
        snapshot = self._source.snapshot
        families = {spec.name: _family(spec) for spec in METRICS}

        def add(name: str, labels: tuple[str, ...], value: float) -> None:
            families[name].add_metric(list(labels), value)

        settings = snapshot.settings
        add("hatang_indicator_window_seconds", (), settings.window_seconds)
        add("hatang_indicator_up_threshold_ratio", (), settings.up_ratio)
        add("hatang_unknown_site_agents", (), snapshot.unknown_site_agents)
        add("hatang_snapshot_timestamp_seconds", (), snapshot.generated_at)
        duration = self._source.last_duration_seconds
        if duration is not None:
            add("hatang_snapshot_refresh_duration_seconds", (), duration)
        add("hatang_snapshot_refresh_failures", (), self._source.failures)

        for view in snapshot.sites:
            unit = view.unit
            site = label_value(unit.id)
            add(
                "hatang_site_info",
                (site, label_value(unit.name), unit.level, label_value(unit.parent or "")),
                1,
            )
            add("hatang_site_up", (site,), 1 if view.up else 0)
            add("hatang_site_agents", (site,), view.agents)
            if view.last_report_timestamp is not None:
                add(
                    "hatang_site_last_report_timestamp_seconds", (site,), view.last_report_timestamp
                )
            for network, up in view.networks.items():
                add("hatang_network_up", (site, network), 1 if up else 0)
            for network, window in view.windows.items():
                if window.ratio is not None:
                    add("hatang_site_network_window_up_ratio", (site, network), window.ratio)
            seen: set[tuple[str, str]] = set()
            per_network: dict[str, int] = {}
            for target in view.targets:
                if per_network.get(target.network, 0) >= MAX_TARGETS_PER_NETWORK:
                    continue
                key = (target.network, label_value(target.target))
                if key in seen:
                    continue  # the same target twice in one class: one series
                seen.add(key)
                per_network[target.network] = per_network.get(target.network, 0) + 1
                if target.rtt_seconds is not None:
                    add("hatang_probe_rtt_seconds", (site, *key), target.rtt_seconds)
                if target.loss_ratio is not None:
                    add("hatang_probe_loss_ratio", (site, *key), target.loss_ratio)
            for source, count in view.lan_hosts.items():
                add("hatang_lan_hosts", (site, source), count)
            computers = view.computers
            if computers is not None:
                add("hatang_site_computers", (site,), computers.total)
                if computers.av_reported:
                    for state in AV_STATES:
                        add(
                            "hatang_antivirus_hosts",
                            (site, state),
                            computers.av_states.get(state, 0),
                        )
            coverage = view.agent_coverage
            if coverage is not None:
                add("hatang_site_agent_coverage_ratio", (site,), coverage)
            done = view.completeness
            if done.ratio is not None:
                add("hatang_site_reports_expected", (site,), done.expected)
                add("hatang_site_reports_received", (site,), done.received)
                add("hatang_site_report_completeness_ratio", (site,), done.ratio)
            if view.agents:
                add("hatang_site_spool_dropped_reports", (site,), view.spool_dropped)
                add("hatang_site_clock_skew_agents", (site,), view.clock_skew_agents)

        for value in snapshot.indicators:
            labels = (value.indicator, value.level)
            ratio = value.ratio
            if ratio is not None:
                add("hatang_indicator_ratio", labels, ratio)
            add("hatang_indicator_numerator", labels, value.numerator)
            add("hatang_indicator_denominator", labels, value.denominator)
            if value.indicator in UNIT_INDICATORS:
                states = {
                    "attaining": value.units_attaining,
                    "not_attaining": value.units_not_attaining,
                    "no_data": value.units_no_data,
                }
            else:
                states = {
                    "with_data": value.units - value.units_no_data,
                    "no_data": value.units_no_data,
                }
            for state, count in states.items():
                add("hatang_indicator_units", (*labels, state), count)

        for goal in snapshot.goals:
            goal_labels = (goal.indicator, goal.level, goal.plan)
            if goal.goal is not None:
                add("hatang_indicator_goal_ratio", goal_labels, goal.goal)
            measured = goal.measured.ratio
            if measured is not None:
                add("hatang_indicator_goal_measured_ratio", goal_labels, measured)
            add("hatang_indicator_goal_deadline_year", goal_labels, goal.deadline)

        yield from families.values()


def _family(spec: MetricSpec) -> GaugeMetricFamily | CounterMetricFamily:
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    return GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))

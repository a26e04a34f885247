"""Prometheus exposition of the indicator Snapshot: ``emit``, ``Exposition``, ``HatangCollector``.

``METRICS`` is the one table of metric names, types, help and label names (STYLE rule
10); ``emit`` is the one place that decides which samples a Snapshot yields. Two
renderers read it: ``Exposition`` serves /metrics, rendering the text once per snapshot
(5,000 sites are some 170k series: building sample objects per scrape cost seconds) and
caching it, with its gzip, until the builder swaps the snapshot; ``HatangCollector`` is a
prometheus_client ``Collector`` over the same samples, for ``generate_latest`` and
``get_sample_value`` in tests. Neither does I/O: both run on the event loop.

Label values are bounded: control characters become spaces and a value longer than
``MAX_LABEL_LENGTH`` characters is cut and suffixed with a hash of the whole value, so
two long targets stay two series and a 10 kB target stays one short label. At most
``MAX_TARGETS_PER_NETWORK`` probe targets per site and network class are exposed (the
rest stay in the store). Per-computer detail never becomes a label.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import hashlib
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from agent.report import AV_STATES
from collector.indicators import (
    FIREWALL_STATES,
    IPV6_STATES,
    MANAGED_STATES,
    PATCH_STATES,
    SITE_STATES,
    UNIT_INDICATORS,
    UNIT_LEVEL,
    UNPROTECTED_OVER,
    USE_NETWORKS,
    Snapshot,
    median,
)
from collector.store import StoreFaults

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
    # "snapshot": rendered from the indicator Snapshot by ``emit``; "registry": the
    # collector's own state, served by a Collector on the app's registry (remote write).
    scope: Literal["snapshot", "registry"] = "snapshot"


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
        "hatang_site_state",
        "gauge",
        "1 for the unit's one current state, 0 for the others: reporting (some agent on "
        "time), silent (reported before, none on time now), never_reported (no report ever).",
        ("site", "state"),
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
    # --- security and evidence: firewall, how long computers stay unprotected, declarations
    MetricSpec(
        "hatang_firewall_hosts",
        "gauge",
        "Computers with agent at the site by firewall state (enabled, disabled, unknown), "
        "counted where the agent reported its firewall.",
        ("site", "state"),
    ),
    MetricSpec(
        "hatang_patch_hosts",
        "gauge",
        "Computers with agent at the site by patch state: current (updates installed within "
        "patch_max_age), outdated (longer ago), reboot_pending (installed, restart needed), "
        "unknown (no installation date); counted where the agent reported its patches.",
        ("site", "state"),
    ),
    MetricSpec(
        "hatang_patch_pending_security_hosts",
        "gauge",
        "Computers at the site whose package manager has a security update waiting "
        "(Linux; as of the computer's last package list refresh).",
        ("site",),
    ),
    MetricSpec(
        "hatang_patch_max_age_seconds",
        "gauge",
        "How recent the last installed update must be for a computer to count as patched.",
        (),
    ),
    MetricSpec(
        "hatang_antivirus_managed_hosts",
        "gauge",
        "Computers with agent at the site by central management of their antivirus: "
        "managed (management agent present and in contact), unmanaged, unknown.",
        ("site", "state"),
    ),
    MetricSpec(
        "hatang_ipv6_hosts",
        "gauge",
        "Computers with agent at the site by IPv6: working (global address and an IPv6 "
        "check up in the window), address_only, no_address.",
        ("site", "state"),
    ),
    MetricSpec(
        "hatang_antivirus_unprotected_hosts",
        "gauge",
        "Computers at the site whose antivirus is outdated, disabled or missing and has not "
        "been protected for longer than `over` (1d, 7d, 30d; day precision).",
        ("site", "over"),
    ),
    MetricSpec(
        "hatang_antivirus_unprotected_since_timestamp_seconds",
        "gauge",
        "Since when the site's longest-unprotected computer has been without protection "
        "(Unix time, day precision); absent when no computer is unprotected.",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_officials",
        "gauge",
        "Officials count in force for the unit (the computers_per_official denominator) and "
        "where it comes from: declaration (for the period containing now) or org_file.",
        ("site", "source"),
    ),
    MetricSpec(
        "hatang_site_declared_facts",
        "gauge",
        "Facts the unit has declared that are in force now (declarations whose period "
        "contains now).",
        ("site",),
    ),
    MetricSpec(
        "hatang_declarations_units",
        "gauge",
        "Units of a level with some declaration in force now (declared) and without "
        "(not_declared).",
        ("level", "state"),
    ),
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
        "hatang_indicator_goal_units",
        "gauge",
        "Units a plan goal selects by state: attaining, not_attaining, no_data, and "
        "not_judged (reachable, but no throughput result in the broadband window).",
        ("indicator", "level", "plan", "state"),
    ),
    MetricSpec(
        "hatang_indicator_goal_rule_info",
        "gauge",
        "Always 1: the rule a plan goal judges units by (reachable, reachable_and_broadband, "
        "reachable_and_used; see docs/indicators.md).",
        ("indicator", "level", "plan", "rule"),
    ),
    MetricSpec(
        "hatang_plan_broadband_threshold_bytes_per_second",
        "gauge",
        "A plan's broadband threshold (its min_download_bps / 8) and the statistic of the "
        "window's throughput results it applies to (median or latest); absent: not judged.",
        ("plan", "statistic"),
    ),
    MetricSpec(
        "hatang_plan_broadband_window_seconds",
        "gauge",
        "The window of throughput results a plan's broadband rule looks at.",
        ("plan",),
    ),
    MetricSpec(
        "hatang_plan_use_min_bytes_per_day",
        "gauge",
        "Bytes in + out a day on a class's uplink from which a plan counts the class as used.",
        ("plan",),
    ),
    MetricSpec(
        "hatang_site_download_bytes_per_second",
        "gauge",
        "Download rate of the site's throughput tests over a class: latest, and median over "
        "the throughput window (the longest broadband window of the plans, at least 7 days).",
        ("site", "network", "statistic"),
    ),
    MetricSpec(
        "hatang_site_throughput_tests",
        "gauge",
        "Throughput tests of the site over a class in the throughput window: ok (measured) "
        "and failed (a reason instead of a rate); skipped tests are not counted.",
        ("site", "network", "result"),
    ),
    MetricSpec(
        "hatang_site_network_bytes",
        "gauge",
        "Bytes today (roll-up day) on the router port carrying a class, by direction (in, "
        "out); polls whose bytes are unknown add nothing. Absent where no uplink is polled.",
        ("site", "network", "direction"),
    ),
    MetricSpec(
        "hatang_site_network_unknown_polls",
        "gauge",
        "SNMP polls today whose uplink bytes are unknown (first poll, reboot, counter reset).",
        ("site", "network"),
    ),
    MetricSpec(
        "hatang_site_network_used",
        "gauge",
        "1 when the site used the class on a day of the indicator window under a plan's use "
        "rule (uplink bytes, else a successful http/dns check), 0 when not.",
        ("site", "network", "plan"),
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
        "hatang_site_spool_rejected_reports",
        "gauge",
        "Reports the site's agents dead-lettered because the collector refused them for good.",
        ("site",),
    ),
    MetricSpec(
        "hatang_site_spool_resets",
        "gauge",
        "Times the site's agents found their spool damaged, moved it aside and started anew.",
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
        "hatang_site_agent_config_errors",
        "gauge",
        "Agents of the site whose latest central configuration they rejected (they run their "
        "last good one; `hatang-collector agents list` names them and the error). Present for "
        "sites whose agents report a configuration status.",
        ("site",),
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
        "hatang_snapshot_skipped_rows",
        "gauge",
        "Store rows left out of the snapshot being served because they could not be read "
        "(logged as store.bad_row or snapshot.bad_site); the rest of the snapshot is kept.",
        (),
    ),
    MetricSpec(
        "hatang_snapshot_refresh_failures",
        "counter",
        "Snapshot refreshes that failed (the previous snapshot kept serving).",
        (),
    ),
    MetricSpec(
        "hatang_snapshot_refreshes",
        "counter",
        "Snapshot refreshes that succeeded since start (how often the snapshot is rebuilt "
        "under load: at least metrics.min_refresh_interval apart).",
        (),
    ),
    # --- remote write of late reports (collector/remote_write.py, docs/late-data.md)
    MetricSpec(
        "hatang_remote_write_pending_samples",
        "gauge",
        "Late samples queued in the store for Prometheus remote write, not yet acknowledged.",
        (),
        scope="registry",
    ),
    MetricSpec(
        "hatang_remote_write_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest observation still queued for remote write (0 when none).",
        (),
        scope="registry",
    ),
    MetricSpec(
        "hatang_remote_write_sent_samples",
        "counter",
        "Late samples the remote-write receiver acknowledged (kept in the store across restarts).",
        (),
        scope="registry",
    ),
    MetricSpec(
        "hatang_remote_write_dropped_samples",
        "counter",
        "Late samples not sent, by reason: too_old (beyond remote_write.max_sample_age), "
        "queue_full (max_pending), http_4xx (refused by the receiver); reports stay stored.",
        ("reason",),
        scope="registry",
    ),
    MetricSpec(
        "hatang_remote_write_failed_requests",
        "counter",
        "Remote-write requests that failed and were retried, by reason "
        "(http_429, http_5xx, network, timeout).",
        ("reason",),
        scope="registry",
    ),
    # --- the store's run-time health (collector/store/__init__.py StoreFaults; /healthz)
    MetricSpec(
        "hatang_store_up",
        "gauge",
        "1 while the store's reads and writes succeed; 0 from a failed read or write until "
        "the next success (the reason is on /healthz).",
        (),
        scope="registry",
    ),
    MetricSpec(
        "hatang_store_errors",
        "counter",
        "Failed reads and writes of the store by operation and kind (full, io, corrupt, "
        "locked, unavailable); agents got 503 and kept their reports.",
        ("operation", "kind"),
        scope="registry",
    ),
)
SPECS: Final = {spec.name: spec for spec in METRICS}
# The families ``emit`` renders from a Snapshot (the rest are served by registry Collectors).
SNAPSHOT_METRICS: Final = tuple(spec for spec in METRICS if spec.scope == "snapshot")


class SnapshotSource(Protocol):
    """What the collector reads: the builder's current snapshot and refresh bookkeeping."""

    @property
    def snapshot(self) -> Snapshot: ...
    @property
    def failures(self) -> int: ...
    @property
    def refreshes(self) -> int: ...
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


# --------------------------------------------------------------------------- samples

Add = Callable[[str, tuple[str, ...], float], None]


def emit(source: SnapshotSource, add: Add) -> None:
    """Every sample of one scrape, as ``add(family, label values, value)``.

    The one place that decides which series exist: ``HatangCollector`` (families for
    ``generate_latest``) and ``Exposition`` (the text served on /metrics) both read it, so
    the two cannot drift. Reads one Snapshot (a refresh may swap it meanwhile); no I/O.
    """
    snapshot = source.snapshot
    settings = snapshot.settings
    add("hatang_indicator_window_seconds", (), settings.window_seconds)
    add("hatang_indicator_up_threshold_ratio", (), settings.up_ratio)
    add("hatang_patch_max_age_seconds", (), settings.patch_max_age_seconds)
    add("hatang_unknown_site_agents", (), snapshot.unknown_site_agents)
    add("hatang_snapshot_timestamp_seconds", (), snapshot.generated_at)
    duration = source.last_duration_seconds
    if duration is not None:
        add("hatang_snapshot_refresh_duration_seconds", (), duration)
    add("hatang_snapshot_skipped_rows", (), snapshot.skipped_rows)
    add("hatang_snapshot_refresh_failures", (), source.failures)
    add("hatang_snapshot_refreshes", (), source.refreshes)

    for view in snapshot.sites:
        unit = view.unit
        site = label_value(unit.id)
        one = (site,)
        add(
            "hatang_site_info",
            (site, label_value(unit.name), unit.level, label_value(unit.parent or "")),
            1,
        )
        add("hatang_site_up", one, 1 if view.up else 0)
        for site_state in SITE_STATES:
            add("hatang_site_state", (site, site_state), 1 if view.state == site_state else 0)
        add("hatang_site_agents", one, view.agents)
        if view.last_report_timestamp is not None:
            add("hatang_site_last_report_timestamp_seconds", one, view.last_report_timestamp)
        observed = view.observed  # else the push owns the moment (docs/late-data.md)
        for network, up in view.networks.items() if observed else ():
            add("hatang_network_up", (site, network), 1 if up else 0)
        for network, window in view.windows.items():
            if window.ratio is not None:
                add("hatang_site_network_window_up_ratio", (site, network), window.ratio)
        seen: set[tuple[str, str]] = set()
        per_network: dict[str, int] = {}
        for target in view.targets if observed else ():
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
        for source_name, count in view.lan_hosts.items() if observed else ():
            add("hatang_lan_hosts", (site, source_name), count)
        computers = view.computers
        if computers is not None:
            add("hatang_site_computers", one, computers.total)
            if computers.av_reported and observed:
                for av_state in AV_STATES:
                    count = computers.av_states.get(av_state, 0)
                    add("hatang_antivirus_hosts", (site, av_state), count)
                since = computers.unprotected_since
                for over, seconds in UNPROTECTED_OVER:
                    longer = sum(1 for t in since if snapshot.generated_at - t > seconds)
                    add("hatang_antivirus_unprotected_hosts", (site, over), longer)
                if since:
                    add("hatang_antivirus_unprotected_since_timestamp_seconds", one, since[0])
            # Computers by state, where their agents reported the section at all.
            families: tuple[tuple[str, tuple[str, ...], Mapping[str, int]], ...] = (
                ("hatang_firewall_hosts", FIREWALL_STATES, computers.firewall_states),
                ("hatang_patch_hosts", PATCH_STATES, computers.patch_states),
                ("hatang_antivirus_managed_hosts", MANAGED_STATES, computers.managed_states),
                ("hatang_ipv6_hosts", IPV6_STATES, computers.ipv6_states),
            )
            for family, names, counts in families:
                if counts:
                    for name in names:
                        add(family, (site, name), counts.get(name, 0))
            if computers.patch_states:
                add("hatang_patch_pending_security_hosts", one, computers.pending_security)
        if view.officials_source is not None and view.officials is not None:
            add("hatang_site_officials", (site, view.officials_source), view.officials)
        add("hatang_site_declared_facts", one, len(view.declared.facts))
        coverage = view.agent_coverage
        if coverage is not None:
            add("hatang_site_agent_coverage_ratio", one, coverage)
        done = view.completeness
        if done.ratio is not None:
            add("hatang_site_reports_expected", one, done.expected)
            add("hatang_site_reports_received", one, done.received)
            add("hatang_site_report_completeness_ratio", one, done.ratio)
        if view.agents:
            add("hatang_site_spool_dropped_reports", one, view.spool_dropped)
            add("hatang_site_spool_rejected_reports", one, view.spool_rejected)
            add("hatang_site_spool_resets", one, view.spool_resets)
            add("hatang_site_clock_skew_agents", one, view.clock_skew_agents)

    for site_id, errors in snapshot.config_errors:
        add("hatang_site_agent_config_errors", (label_value(site_id),), errors)

    for value in snapshot.indicators:
        labels = (value.indicator, value.level)
        ratio = value.ratio
        if ratio is not None:
            add("hatang_indicator_ratio", labels, ratio)
        add("hatang_indicator_numerator", labels, value.numerator)
        add("hatang_indicator_denominator", labels, value.denominator)
        if value.indicator in UNIT_LEVEL:
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

    for level, (declared, missing) in snapshot.declaration_units.items():
        add("hatang_declarations_units", (level, "declared"), declared)
        add("hatang_declarations_units", (level, "not_declared"), missing)

    _emit_broadband(snapshot, add)

    for goal in snapshot.goals:
        goal_labels = (goal.indicator, goal.level, label_value(goal.plan))
        if goal.goal is not None:
            add("hatang_indicator_goal_ratio", goal_labels, goal.goal)
        measured = goal.measured.ratio
        if measured is not None:
            add("hatang_indicator_goal_measured_ratio", goal_labels, measured)
        add("hatang_indicator_goal_deadline_year", goal_labels, goal.deadline)
        if goal.indicator in UNIT_INDICATORS:
            add("hatang_indicator_goal_rule_info", (*goal_labels, goal.rule.name), 1)
            m = goal.measured
            for state, count in (
                ("attaining", m.units_attaining),
                ("not_attaining", m.units_not_attaining),
                ("no_data", m.units_no_data),
                ("not_judged", m.units_not_judged),
            ):
                add("hatang_indicator_goal_units", (*goal_labels, state), count)


def _emit_broadband(snapshot: Snapshot, add: Add) -> None:
    """Line speed and network use: per site, and the thresholds each plan applies."""
    plans_broadband = {g.plan: g.rule.broadband for g in snapshot.goals if g.rule.broadband}
    plans_use = {g.plan: g.rule.use for g in snapshot.goals if g.rule.use}
    for plan, broadband in sorted(plans_broadband.items()):
        plan_label = label_value(plan)
        add(
            "hatang_plan_broadband_threshold_bytes_per_second",
            (plan_label, broadband.rule),
            broadband.min_bytes_per_second,
        )
        add("hatang_plan_broadband_window_seconds", (plan_label,), broadband.window_seconds)
    for plan, use in sorted(plans_use.items()):
        add("hatang_plan_use_min_bytes_per_day", (label_value(plan),), use.min_bytes_per_day)
    for view in snapshot.sites:
        site = label_value(view.unit.id)
        for network, throughput in view.throughput.items():
            rates = [rate for _, rate in throughput.rates]
            if rates:
                add("hatang_site_download_bytes_per_second", (site, network, "latest"), rates[-1])
                middle = median(rates)
                assert middle is not None
                add("hatang_site_download_bytes_per_second", (site, network, "median"), middle)
            add("hatang_site_throughput_tests", (site, network, "ok"), len(rates))
            add("hatang_site_throughput_tests", (site, network, "failed"), throughput.failed)
        for network in USE_NETWORKS:
            today = view.bytes_on(network, view.today) if view.today else None
            if today is not None:
                add("hatang_site_network_bytes", (site, network, "in"), today.in_bytes)
                add("hatang_site_network_bytes", (site, network, "out"), today.out_bytes)
                add("hatang_site_network_unknown_polls", (site, network), today.unknown_polls)
            if network not in view.windows:
                continue  # the class is not checked at this site: no use to judge
            for plan, use in sorted(plans_use.items()):
                used = 1 if view.used(network, use) else 0
                add("hatang_site_network_used", (site, network, label_value(plan)), used)


class HatangCollector(Collector):
    """Yields the METRICS families from the builder's current Snapshot; no I/O.

    For ``generate_latest(registry)`` and ``get_sample_value`` in tests and tools; the
    collector's /metrics serves the same samples through ``Exposition``, which renders
    them once per snapshot instead of building 100k sample objects per scrape.
    """

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        """Names only, so a registry can refuse duplicates without a collect()."""
        return [_family(spec) for spec in SNAPSHOT_METRICS]

    def collect(self) -> Iterator[Metric]:
        """Build every family from one Snapshot."""
        families = {spec.name: _family(spec) for spec in SNAPSHOT_METRICS}

        def add(name: str, labels: tuple[str, ...], value: float) -> None:
            families[name].add_metric(list(labels), value)

        emit(self._source, add)
        yield from families.values()


class StoreFaultsCollector(Collector):
    """``hatang_store_up`` and ``hatang_store_errors_total`` from the store's bookkeeping,
    on every scrape (a store that stopped writing must show at once, not at the next
    snapshot refresh); no I/O."""

    def __init__(self, faults: StoreFaults) -> None:
        self._faults = faults

    def describe(self) -> Iterable[Metric]:
        return [_family(SPECS[name]) for name in STORE_METRICS]

    def collect(self) -> Iterator[Metric]:
        up, errors = (_family(SPECS[name]) for name in STORE_METRICS)
        up.add_metric([], 0 if self._faults.current else 1)
        for (operation, kind), count in self._faults.errors.items():
            errors.add_metric([operation, kind], count)
        yield from (up, errors)


STORE_METRICS: Final = ("hatang_store_up", "hatang_store_errors")


class ReservedNames(Collector):
    """Holds the METRICS names in a registry without exposing anything.

    The app's registry carries only the collector's own metrics (ingest, build info);
    registering this makes it refuse a self-metric whose name collides with the table.
    """

    def describe(self) -> Iterable[Metric]:
        return [_family(spec) for spec in SNAPSHOT_METRICS]

    def collect(self) -> Iterable[Metric]:
        return []


def _family(spec: MetricSpec) -> GaugeMetricFamily | CounterMetricFamily:
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    return GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))


# --------------------------------------------------------------------------- exposition


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_name(spec: MetricSpec) -> str:
    return f"{spec.name}_total" if spec.type == "counter" else spec.name


def _header(spec: MetricSpec) -> bytes:
    name = _sample_name(spec)
    help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {help_text}\n# TYPE {name} {spec.type}\n".encode()


def _template(spec: MetricSpec) -> str:
    """``name{a="%s",b="%s"} %s\\n``: label values and the value are filled per sample."""
    labels = ",".join(f'{label}="%s"' for label in spec.labels)
    return f"{_sample_name(spec)}{{{labels}}} %s\n" if labels else f"{_sample_name(spec)} %s\n"


# Values are written exactly as prometheus_client writes them (Go's float formatting).
_float_text: Final = cast(Callable[[float], str], floatToGoString)
_HEADERS: Final = {spec.name: _header(spec) for spec in SNAPSHOT_METRICS}
_TEMPLATES: Final = {spec.name: _template(spec) for spec in SNAPSHOT_METRICS}


def render_text(source: SnapshotSource) -> list[bytes]:
    """The METRICS families in the Prometheus text format 0.0.4, as bytes chunks.

    Each distinct label value is escaped once per render (a site's id appears in some 30
    series) and each line is one ``%`` of a prepared template: no per-sample objects, no
    per-sample label-name validation. Chunks rather than one joined body: a family is
    encoded and its lines freed before the next one, so the peak stays near one body.
    """
    lines: dict[str, list[str]] = {spec.name: [] for spec in SNAPSHOT_METRICS}
    templates = _TEMPLATES
    escaped: dict[str, str] = {}
    values: dict[float, str] = {}

    def add(name: str, labels: tuple[str, ...], value: float) -> None:
        text = values.get(value)
        if text is None:
            text = _float_text(value)
            if len(values) < 4096:  # counts and flags repeat; rtts rarely do
                values[value] = text
        if labels:
            parts = []
            for label in labels:
                e = escaped.get(label)
                if e is None:
                    e = escaped[label] = _escape_label(label)
                parts.append(e)
            parts.append(text)
            lines[name].append(templates[name] % tuple(parts))
        else:
            lines[name].append(templates[name] % text)

    emit(source, add)
    chunks = []
    for spec in SNAPSHOT_METRICS:
        chunks.append(_HEADERS[spec.name])
        chunks.append("".join(lines.pop(spec.name)).encode())
    return chunks


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header lists gzip with a non-zero quality."""
    for item in header.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
        return True
    return False


_Key = tuple[Snapshot, int, int, float | None]  # _Frozen's fields, the snapshot by identity


@dataclass(slots=True)
class _Rendered:
    """One render of the METRICS part, for one (snapshot, failures, duration)."""

    key: _Key
    chunks: list[bytes]
    size: int
    # gzip of the chunks, flushed to a byte boundary but not finished, and the compressor
    # that made it: each scrape finishes a copy with the registry's few lines.
    gzip_prefix: bytes | None = None
    gzip_state: Any = None


@dataclass(frozen=True, slots=True)
class _Frozen:
    """The source's three values as read at one moment: a render in a worker thread reads
    these, never the live builder, which the serving loop may swap meanwhile."""

    snapshot: Snapshot
    failures: int
    refreshes: int
    last_duration_seconds: float | None


class Exposition:
    """GET /metrics: the Snapshot's families rendered once per snapshot, plus the
    registry's own metrics (ingest counters, histograms, build info) per scrape.

    The cached render is replaced when the builder swaps in a new Snapshot or its refresh
    bookkeeping changes, so memory holds at most one render (and its gzip) at a time.
    The first scrape after a swap renders in a worker thread (``prepare``): at 20k agents
    a render is some 0.25 s of CPU (205k series) that on the serving loop stalled every
    ingest and scrape for as long; scrapes that arrive meanwhile wait for the same render
    without blocking the loop. Rendered per scrape, not per refresh: under ingest load the
    snapshot is refreshed every few seconds, far more often than Prometheus scrapes, and a
    render nobody reads would only take CPU from ingest.
    Bodies are written in slices with back-pressure, so a slow scraper never makes the
    transport buffer a copy of the whole body.
    """

    WRITE_SLICE: Final = 256 * 1024

    def __init__(
        self, source: SnapshotSource, registry: CollectorRegistry, *, gzip_level: int = 6
    ) -> None:
        self._source = source
        self._registry = registry
        self._gzip_level = gzip_level
        self._rendered: _Rendered | None = None
        self._preparing: asyncio.Future[None] | None = None
        self._gzip_lock = threading.Lock()  # one compression per render, in worker threads
        self.renders = 0  # how many times the snapshot part was rendered (tests, bench)
        self.render_thread: int | None = None  # threading.get_ident() of the last render

    def _key(self) -> _Key:
        source = self._source
        return (source.snapshot, source.failures, source.refreshes, source.last_duration_seconds)

    def _matches(self, key: _Key) -> bool:
        rendered = self._rendered
        return rendered is not None and rendered.key[0] is key[0] and rendered.key[1:] == key[1:]

    def _render(self, key: _Key) -> None:
        chunks = render_text(_Frozen(*key))
        self._rendered = _Rendered(key, chunks, sum(map(len, chunks)))
        self.renders += 1
        self.render_thread = threading.get_ident()
        release_memory()

    def _current(self) -> _Rendered:
        key = self._key()
        if not self._matches(key):
            self._rendered = None  # free the old render before building the new one
            self._render(key)
        assert self._rendered is not None
        return self._rendered

    async def prepare(self) -> None:
        """Render what the source holds now, in a worker thread; nothing when that is
        rendered already."""
        key = self._key()
        if self._matches(key):
            return
        while self._preparing is not None:  # one render at a time: at most one kept
            with contextlib.suppress(Exception):  # its caller sees its error; we try anew
                await asyncio.shield(self._preparing)
            if self._matches(key := self._key()):
                return
        self._rendered = None  # freed before the new one is built (the memory rule)
        loop = asyncio.get_running_loop()
        self._preparing = preparing = loop.run_in_executor(None, self._render, key)
        # Cleared when the render ends, not when this caller does: a scraper that goes away
        # must not let a second render start beside the running one.
        preparing.add_done_callback(self._prepared)
        await asyncio.shield(preparing)

    def _prepared(self, preparing: asyncio.Future[None]) -> None:
        if self._preparing is preparing:
            self._preparing = None

    def _gzip(self, rendered: _Rendered) -> tuple[bytes, Any]:
        with self._gzip_lock:
            if rendered.gzip_prefix is None:
                compressor = zlib.compressobj(self._gzip_level, zlib.DEFLATED, 31)
                parts = [compressor.compress(chunk) for chunk in rendered.chunks]
                parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
                rendered.gzip_state = compressor
                rendered.gzip_prefix = b"".join(parts)
        return rendered.gzip_prefix, rendered.gzip_state

    def _finish(self, rendered: _Rendered, gzip: bool) -> list[bytes]:
        own = generate_latest(self._registry)
        if not gzip:
            return [*rendered.chunks, own]
        prefix, state = self._gzip(rendered)
        finish = state.copy()
        return [prefix, finish.compress(own) + finish.flush()]

    def body(self, *, gzip: bool = False) -> list[bytes]:
        """The whole answer as chunks (gzip: one gzip member across all chunks)."""
        return self._finish(self._current(), gzip)

    async def _body_async(self, gzip: bool) -> list[bytes]:
        """``body`` without CPU-heavy work on the loop: a missing render is made in a worker
        thread (concurrent scrapes wait for the same one), and a render's first gzip answer
        is compressed in one too (zlib releases the GIL while it deflates)."""
        for _ in range(3):  # a snapshot swapped in during the render: render that one
            if self._matches(self._key()):
                break
            await self.prepare()
        rendered = self._current()  # renders on the loop only after three swaps in a row
        if gzip and rendered.gzip_prefix is None:
            await asyncio.get_running_loop().run_in_executor(None, self._gzip, rendered)
        return self._finish(rendered, gzip)

    async def respond(self, request: web.Request) -> web.StreamResponse:
        """Answer one scrape (HEAD included: headers only)."""
        gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        parts = await self._body_async(gzip)
        response = web.StreamResponse(
            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, "Vary": "Accept-Encoding"}
        )
        if gzip:
            response.headers["Content-Encoding"] = "gzip"
        response.content_length = sum(map(len, parts))
        await response.prepare(request)
        try:
            if request.method != "HEAD":
                step = self.WRITE_SLICE
                for part in parts:
                    view = memoryview(part)
                    for offset in range(0, len(view), step):
                        await response.write(view[offset : offset + step])
            await response.write_eof()
        except ConnectionResetError:
            pass  # the scraper went away (its timeout): nothing to answer, nothing to log
        return response


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``, or nothing elsewhere.

    A render frees some 20 MiB of small strings and family buffers at once; glibc keeps
    freed heap pages mapped unless asked, which showed as RSS creeping up render after
    render.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def run() -> None:
        trim(0)

    return run


release_memory: Final = _malloc_trim()

"""What one ingested batch changes, computed once for every store backend.

Deciding which reports are new, duplicate or conflicting, which time each is filed
under (the clock-skew rule in ``collector.store``), and which agent rows, sections,
buckets and daily roll-ups the batch adds to is the same for SQLite and PostgreSQL.
This module does it in plain Python and hands back plain rows (sorted by key, so
concurrent writers lock rows in the same order); each backend only merges them into
its tables with its own SQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from agent.report import (
    NETWORK_CLASSES,
    TIMESTAMP_MIN,
    AntivirusStatus,
    FirewallStatus,
    HostInventory,
    LanHosts,
    PatchStatus,
    Report,
    SnmpDevice,
)
from collector.store import from_unix, to_unix

# The report sections kept per agent (newest wins), with the type each decodes to.
SECTIONS: Final[dict[str, Any]] = {
    "host": HostInventory,
    "antivirus": AntivirusStatus,
    "firewall": FirewallStatus,
    "patches": PatchStatus,
    "lan_hosts": LanHosts,
    "snmp": list[SnmpDevice],
}
SECONDS_PER_DAY: Final = 86400.0  # cap of a day's ``seconds_up``
# Effective times never fall before the accepted range of report times: a correction by
# a wildly wrong ``sent_at`` cannot file a report before 1970.
EARLIEST: Final = to_unix(TIMESTAMP_MIN)
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Accepted:
    """A report of the batch not stored before, with the times it is filed under."""

    report: Report
    text: str  # canonical JSON, as stored
    digest: str  # SHA-256 of the canonical JSON: tells a replay from a conflict
    observed: float
    effective: float  # observed on the collector's clock (see ``triage``), or received_at

    @property
    def skewed(self) -> bool:
        return self.effective != self.observed

    def row(self, received_at: float) -> tuple[Any, ...]:
        """The ``reports`` row: id, site, agent_id, seq, observed_at, effective_at,
        received_at, content_hash, body."""
        r = self.report
        return (
            r.id,
            r.site,
            r.agent_id,
            r.seq,
            self.observed,
            self.effective,
            received_at,
            self.digest,
            self.text,
        )


@dataclass(slots=True)
class Triage:
    """A batch sorted against what the store already holds."""

    accepted: list[Accepted]
    duplicates: int = 0  # the same id with the same content: an exact replay
    conflicts: int = 0  # the same id with other content: rejected

    def count_stored(self, digest: str, stored: str | None) -> None:
        """Count a report whose id turned out to be stored already (e.g. by another
        replica between the check and the insert)."""
        if stored == digest:
            self.duplicates += 1
        else:
            self.conflicts += 1


def triage(
    batch: Iterable[tuple[Report, bytes]],
    stored: Mapping[str, str],
    received_at: float,
    max_future: float,
    clock_offset: float = 0.0,
) -> Triage:
    """Split a batch into new reports and replays/conflicts (``stored``: id → content hash).

    A report id repeated within the batch counts like one already stored. The clock rule:
    ``clock_offset`` (collector clock − agent clock, measured by the API from the batch's
    ``sent_at``; 0 when within tolerance) moves each observation onto the collector's
    clock, so a clock that is behind is not mistaken for a late replay; whatever is still
    more than ``max_future`` ahead is filed at its arrival. Stored ``observed_at`` stays
    as the agent sent it (evidence); windows use the effective time.
    """
    hashes = dict(stored)
    result = Triage([])
    for report, body in batch:
        digest = hashlib.sha256(body).hexdigest()
        known = hashes.get(report.id)
        if known is not None:
            result.count_stored(digest, known)
            continue
        hashes[report.id] = digest
        observed = to_unix(report.observed_at)
        corrected = max(observed + clock_offset, EARLIEST)
        effective = corrected if corrected <= received_at + max_future else received_at
        result.accepted.append(Accepted(report, body.decode("utf-8"), digest, observed, effective))
    return result


@dataclass(slots=True)
class AgentRow:
    """An ``agents`` row (column order)."""

    site: str
    agent_id: str
    role: str
    interval_seconds: float
    first_seen: float
    last_effective_at: float
    last_observed_at: float
    last_received_at: float
    reports_received: int
    spool_dropped: int
    latest_report_id: str

    def values(self) -> tuple[Any, ...]:
        return (
            self.site,
            self.agent_id,
            self.role,
            self.interval_seconds,
            self.first_seen,
            self.last_effective_at,
            self.last_observed_at,
            self.last_received_at,
            self.reports_received,
            self.spool_dropped,
            self.latest_report_id,
        )

    def merged_into(self, stored: AgentRow) -> AgentRow:
        """This batch's row on top of the stored one: counts add up, first_seen stays,
        and the newer "latest" (by effective time; a tie goes to the batch) wins."""
        newer = self.last_effective_at >= stored.last_effective_at
        latest = self if newer else stored
        return AgentRow(
            self.site,
            self.agent_id,
            latest.role,
            latest.interval_seconds,
            stored.first_seen,
            latest.last_effective_at,
            latest.last_observed_at,
            self.last_received_at,
            stored.reports_received + self.reports_received,
            latest.spool_dropped,
            latest.latest_report_id,
        )


def agent_rows(accepted: Sequence[Accepted], received_at: float) -> list[AgentRow]:
    """One row per agent of the batch, as if the agent were new (merge: ``merged_into``)."""
    agents: dict[tuple[str, str], AgentRow] = {}
    for a in accepted:
        report = a.report
        key = (report.site, report.agent_id)
        row = agents.get(key)
        if row is None:
            agents[key] = AgentRow(
                *key,
                report.role,
                float(report.interval_seconds),
                received_at,
                a.effective,
                a.observed,
                received_at,
                1,
                report.spool_dropped,
                report.id,
            )
            continue
        row.reports_received += 1
        if a.effective >= row.last_effective_at:
            row.role, row.interval_seconds = report.role, float(report.interval_seconds)
            row.last_effective_at, row.last_observed_at = a.effective, a.observed
            row.spool_dropped, row.latest_report_id = report.spool_dropped, report.id
    return [agents[key] for key in sorted(agents)]


def section_rows(accepted: Sequence[Accepted]) -> list[tuple[str, str, str, float, str]]:
    """(site, agent_id, section, effective_at, body) of the newest of each section in the
    batch; the store keeps a row only where it is not older than the stored one."""
    newest: dict[tuple[str, str, str], tuple[float, Any]] = {}
    for a in accepted:
        for name in SECTIONS:
            value = getattr(a.report, name)
            if value is None:
                continue
            key = (a.report.site, a.report.agent_id, name)
            held = newest.get(key)
            if held is None or a.effective >= held[0]:
                newest[key] = (a.effective, value)
    return [
        (*key, effective, _encoder.encode(value).decode())
        for key, (effective, value) in sorted(newest.items(), key=lambda item: item[0])
    ]


@dataclass(slots=True)
class HostDay:
    """One agent's day in ``host_daily``: reports, hostname, newest antivirus state."""

    hostname: str | None = None
    reports: int = 0
    av_state: str | None = None
    av_at: float | None = None
    _hostname_at: float = field(default=-1.0)


@dataclass(slots=True)
class Rollups:
    """What the batch adds to the window buckets and the daily roll-ups (rows to add)."""

    network_hourly: list[tuple[str, str, str, int, int, int]]  # ..., hour, checks, up_checks
    agent_hourly: list[tuple[str, str, int, int]]  # site, agent_id, hour, reports
    network_daily: list[tuple[str, str, str, str, int, int, float]]  # day, ..., seconds_up
    host_daily: list[tuple[tuple[str, str, str], HostDay]]  # (day, site, agent_id), day
    # report_id, network, target, site, agent_id, effective_at, up, skipped, rate, bytes, error
    throughput: list[tuple[Any, ...]] = field(default_factory=list)
    # day, site, agent_id, network, in, out, counted_polls, unknown_polls, app_checks_up
    network_use_daily: list[tuple[str, str, str, str, int, int, int, int, int]] = field(
        default_factory=list
    )


def column_text(text: str) -> str:
    """Text for a plain text column: U+0000 becomes U+FFFD. JSON carries it (escaped) and
    the stored bodies keep it exactly, but PostgreSQL text cannot hold it: one such
    hostname failed the whole batch with a 503, for ever. Both backends store the same."""
    return text.replace("\x00", "\ufffd")


def merge_host_day(newer: HostDay, older: HostDay) -> HostDay:
    """``older`` then ``newer`` as one day: counts add up, a known hostname stays when the
    newer has none, the newer antivirus state wins unless the older one is strictly newer
    (the rule the stores apply to a stored row; associative, so a group commit may merge
    its batches first and the stored row last)."""
    merged = HostDay(newer.hostname or older.hostname, newer.reports + older.reports)
    merged.av_state, merged.av_at = newer.av_state, newer.av_at
    if older.av_at is not None and (newer.av_at is None or older.av_at > newer.av_at):
        merged.av_state, merged.av_at = older.av_state, older.av_at
    return merged


class RollupSum:
    """The roll-ups of a group commit's batches, added up in memory, so that each bucket,
    day and host row is written once per commit rather than once per batch (the upserts
    cost as much as the commit's fsync). Sums, capped at the end, equal the capped sums
    applied one batch after the other, because every addend is non-negative."""

    def __init__(self) -> None:
        self.hourly: dict[tuple[str, str, str, int], list[int]] = {}
        self.reports: dict[tuple[str, str, int], int] = {}
        self.daily: dict[tuple[str, str, str, str], list[float]] = {}
        self.hosts: dict[tuple[str, str, str], HostDay] = {}
        self.throughput: list[tuple[Any, ...]] = []  # one row per result: nothing to add up
        self.use: dict[tuple[str, str, str, str], list[int]] = {}

    def add(self, batch: Rollups) -> None:
        for site, agent_id, network, hour, checks, up in batch.network_hourly:
            counts = self.hourly.setdefault((site, agent_id, network, hour), [0, 0])
            counts[0] += checks
            counts[1] += up
        for site, agent_id, hour, reports in batch.agent_hourly:
            key_r = (site, agent_id, hour)
            self.reports[key_r] = self.reports.get(key_r, 0) + reports
        for day, site, agent_id, network, checks, up, seconds in batch.network_daily:
            d = self.daily.setdefault((day, site, agent_id, network), [0, 0, 0.0])
            d[0] += checks
            d[1] += up
            d[2] += seconds
        for key, host in batch.host_daily:
            before = self.hosts.get(key)
            self.hosts[key] = host if before is None else merge_host_day(host, before)
        self.throughput.extend(batch.throughput)
        for day, site, agent_id, network, *counts in batch.network_use_daily:
            total = self.use.setdefault((day, site, agent_id, network), [0, 0, 0, 0, 0])
            for i, count in enumerate(counts):
                total[i] += count

    def __bool__(self) -> bool:
        return bool(
            self.reports or self.hourly or self.daily or self.hosts or self.throughput or self.use
        )

    def rows(self) -> Rollups:
        return Rollups(
            network_hourly=[(*k, v[0], v[1]) for k, v in sorted(self.hourly.items())],
            agent_hourly=[(*k, v) for k, v in sorted(self.reports.items())],
            network_daily=[
                (*k, int(v[0]), int(v[1]), min(float(v[2]), SECONDS_PER_DAY))
                for k, v in sorted(self.daily.items())
            ],
            host_daily=sorted(self.hosts.items(), key=lambda item: item[0]),
            throughput=list(self.throughput),
            network_use_daily=[(*k, *v) for k, v in sorted(self.use.items())],  # type: ignore[misc]
        )


def bucket_start(ts: float, width: int) -> int:
    """Start of the window bucket of ``width`` seconds that holds ``ts``."""
    return int(ts // width * width)


def rollup_day(ts: float, offset: float) -> str:
    """The ISO day of ``ts`` in the roll-up time zone (``offset`` seconds east of UTC);
    total (``from_unix`` clamps what no date can hold)."""
    return from_unix(ts + offset).date().isoformat()


# The merge of a day's use into ``network_use_daily``: the same SQL on both backends.
NETWORK_USE_MERGE: Final = (
    " ON CONFLICT (day, site, agent_id, network) DO UPDATE"
    " SET in_bytes = network_use_daily.in_bytes + excluded.in_bytes,"
    " out_bytes = network_use_daily.out_bytes + excluded.out_bytes,"
    " counted_polls = network_use_daily.counted_polls + excluded.counted_polls,"
    " unknown_polls = network_use_daily.unknown_polls + excluded.unknown_polls,"
    " app_checks_up = network_use_daily.app_checks_up + excluded.app_checks_up"
)
# The merge of a day's host row into ``host_daily`` (``merge_host_day`` in SQL): counts add
# up, a known hostname stays when the newer has none, the newest antivirus state of the day
# wins and a batch without one keeps the stored. The same SQL on both backends.
_AV_NEWER: Final = (
    "excluded.antivirus_effective_at IS NOT NULL AND"
    " (host_daily.antivirus_effective_at IS NULL"
    " OR excluded.antivirus_effective_at >= host_daily.antivirus_effective_at)"
)
HOST_DAILY_MERGE: Final = (
    " ON CONFLICT (day, site, agent_id) DO UPDATE SET"
    " hostname = COALESCE(NULLIF(excluded.hostname, ''), host_daily.hostname),"
    " reports = host_daily.reports + excluded.reports,"
    f" antivirus_state = CASE WHEN {_AV_NEWER} THEN excluded.antivirus_state"
    " ELSE host_daily.antivirus_state END,"
    f" antivirus_effective_at = CASE WHEN {_AV_NEWER} THEN excluded.antivirus_effective_at"
    " ELSE host_daily.antivirus_effective_at END"
)
# Checks that show the network class carrying the office's work, where no counters exist.
APPLICATION_KINDS: Final = frozenset({"http", "dns"})


def _use(report: Report, day: str, use: dict[tuple[str, str, str, str], list[int]]) -> None:
    """Add one report's uplink bytes and successful application checks to its day."""

    def row(network: str) -> list[int]:
        return use.setdefault((day, report.site, report.agent_id, network), [0, 0, 0, 0, 0])

    for device in report.snmp or []:
        for uplink in device.uplinks:
            counts = row(uplink.network)
            if uplink.in_bytes is None or uplink.out_bytes is None:
                counts[3] += 1
            else:
                counts[0] += uplink.in_bytes
                counts[1] += uplink.out_bytes
                counts[2] += 1
    for network in NETWORK_CLASSES:
        status = report.networks.get(network)
        up = sum(1 for t in status.targets if t.up and t.kind in APPLICATION_KINDS)
        if status.configured and up:
            row(network)[4] += up


def _throughput_rows(a: Accepted) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    report = a.report
    rows: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for t in report.throughput or []:
        rate = t.bytes_per_second if t.up else None
        rows[(report.id, t.network, t.target)] = (
            report.id,
            t.network,
            t.target,
            report.site,
            report.agent_id,
            a.effective,
            1 if t.up else 0,
            1 if t.skipped else 0,
            rate,
            t.bytes_read,
            t.error,
        )
    return rows


def rollups(accepted: Sequence[Accepted], bucket: int, day_offset: float) -> Rollups:
    """Count the batch's configured checks and reports into buckets and days."""
    hourly: dict[tuple[str, str, str, int], list[int]] = {}
    reports_hourly: dict[tuple[str, str, int], int] = {}
    daily: dict[tuple[str, str, str, str], list[float]] = {}
    hosts: dict[tuple[str, str, str], HostDay] = {}
    use: dict[tuple[str, str, str, str], list[int]] = {}
    throughput: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for a in accepted:
        report, effective = a.report, a.effective
        hour = bucket_start(effective, bucket)
        day = rollup_day(effective, day_offset)
        _use(report, day, use)
        throughput.update(_throughput_rows(a))
        key_r = (report.site, report.agent_id, hour)
        reports_hourly[key_r] = reports_hourly.get(key_r, 0) + 1
        for network in NETWORK_CLASSES:
            status = report.networks.get(network)
            if not status.configured or status.up is None:
                continue
            up = 1 if status.up else 0
            counts = hourly.setdefault((report.site, report.agent_id, network, hour), [0, 0])
            counts[0] += 1
            counts[1] += up
            d = daily.setdefault((day, report.site, report.agent_id, network), [0, 0, 0.0])
            d[0] += 1
            d[1] += up
            d[2] += report.interval_seconds * up
        host = hosts.setdefault((day, report.site, report.agent_id), HostDay())
        host.reports += 1
        if report.host is not None and effective >= host._hostname_at:
            host.hostname, host._hostname_at = column_text(report.host.hostname), effective
        if report.antivirus is not None and (host.av_at is None or effective >= host.av_at):
            host.av_state, host.av_at = report.antivirus.state, effective
    return Rollups(
        network_hourly=[(*k, v[0], v[1]) for k, v in sorted(hourly.items())],
        agent_hourly=[(*k, v) for k, v in sorted(reports_hourly.items())],
        network_daily=[
            (*k, int(v[0]), int(v[1]), min(float(v[2]), SECONDS_PER_DAY))
            for k, v in sorted(daily.items())
        ],
        host_daily=sorted(hosts.items(), key=lambda item: item[0]),
        throughput=[throughput[k] for k in sorted(throughput)],
        network_use_daily=[(*k, *v) for k, v in sorted(use.items())],  # type: ignore[misc]
    )

"""Which stored reports become remote-write samples, and with which labels and values.

The one rule (docs/late-data.md): at any moment a per-site series has one writer. The
scrape writes it while the collector holds a fresh observation of the site (at most
``site_up_after_intervals`` agent intervals old, the same horizon that keeps
``hatang_site_up`` at 1); the push writes the observation times the scrape could not
show: those of reports that reached the collector later than that horizon, and only
where no fresh observation was at the collector then (plus ``grace``: the snapshot
refresh and the scrape interval by which a scrape lags). Pushed series carry the
/metrics labels and ``job`` but no ``instance``, so a pushed sample never shares a
series with a scraped sample or a scrape staleness marker. When the scrape takes over
again (an on-time report arrives), the pushed series of the site get a staleness
marker at that observation time, so a query does not carry the last backfilled value
over the fresh scraped one for Prometheus' lookback.

Pure functions over the store's plain values; both store backends call them inside
the ingest transaction and only do the SQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from agent.report import AV_STATES, NETWORK_CLASSES
from collector.indicators import IndicatorSettings
from collector.metrics import MAX_TARGETS_PER_NETWORK, label_value
from collector.store.ingest import Accepted

MARKER: Final = "hatang_backfilled_report"
# Agents heard from within this long count as the site's computers (IndicatorSettings).
INVENTORY_SECONDS: Final = IndicatorSettings().inventory_window_seconds
# Prometheus' default query lookback: a pushed value stays visible this long without a marker.
LOOKBACK_MS: Final = 5 * 60 * 1000
# The staleness marker, bit for bit (Prometheus value.StaleNaN): a plain NaN is a value.
STALE_NAN_BITS: Final = 0x7FF0000000000002


@dataclass(frozen=True, slots=True)
class LateRule:
    """The settings of the rule; app.py fills them from the collector config."""

    horizon_intervals: float  # site_up_after_intervals
    grace_seconds: float  # metrics.refresh_interval + remote_write.scrape_interval
    job: str = "hatang-collector"
    max_pending: int = 1_000_000


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One ``remote_write_queue`` row to add."""

    series: str
    ts_ms: int
    site: str
    value: float
    stale: bool = False

    def values(self, enqueued_at: float) -> tuple[str, int, str, float, int, float]:
        return (self.series, self.ts_ms, self.site, self.value, int(self.stale), enqueued_at)


@dataclass(slots=True)
class SiteContext:
    """What the store knows about one site besides the batch."""

    # (received_at, effective_at) of the site's reports near the late ones' times.
    held: list[tuple[float, float]] = field(default_factory=list)
    has_probe: bool = False
    # agent_id -> antivirus state ('' when it reported none), of every agent still counted
    av_states: dict[str, str] = field(default_factory=dict)


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """The canonical label set: sorted by name, ``__name__`` included (remote-write order)."""
    pairs = sorted([("__name__", name), *labels.items()])
    return json.dumps(pairs, ensure_ascii=False, separators=(",", ":"))


def series_labels(key: str) -> list[tuple[str, str]]:
    """The label pairs of a ``series_key``."""
    return [(str(n), str(v)) for n, v in json.loads(key)]


def horizon(rule: LateRule, interval_seconds: float) -> float:
    """How old an observation may be and still be shown by the scrape."""
    return rule.horizon_intervals * interval_seconds


def is_late(a: Accepted, received_at: float, rule: LateRule) -> bool:
    """The report reached the collector after its observation stopped being fresh."""
    return received_at - a.effective > horizon(rule, a.report.interval_seconds)


def split(
    accepted: Sequence[Accepted], received_at: float, rule: LateRule
) -> tuple[list[Accepted], list[Accepted]]:
    """(late, scraped): a report is the scrape's when it arrived fresh AND is its agent's
    newest in the batch; an older one of a spool drain is superseded before any scrape
    could show it, so its moment is the push's."""
    newest: dict[tuple[str, str], float] = {}
    for a in accepted:
        key = (a.report.site, a.report.agent_id)
        newest[key] = max(newest.get(key, a.effective), a.effective)
    late: list[Accepted] = []
    scraped: list[Accepted] = []
    for a in accepted:
        superseded = a.effective < newest[(a.report.site, a.report.agent_id)]
        (late if superseded or is_late(a, received_at, rule) else scraped).append(a)
    return late, scraped


def held_range(overdue: Sequence[Accepted], site: str, rule: LateRule) -> tuple[float, float]:
    """Effective times of the site's stored reports that may cover its late ones."""
    times = [a.effective for a in overdue if a.report.site == site]
    reach = max(horizon(rule, a.report.interval_seconds) for a in overdue) + rule.grace_seconds
    return min(times) - reach, max(times)


def site_context(
    overdue: Sequence[Accepted],
    site: str,
    held: Iterable[Sequence[float]],
    probe: bool,
    agents: Iterable[Sequence[str | None]],
) -> SiteContext:
    """A site's context from the store's rows: (received_at, effective_at) of the reports
    in ``held_range``, whether a site probe is known, (agent_id, antivirus body) of its
    counted agents."""
    return SiteContext(
        held=[(float(r[0]), float(r[1])) for r in held],
        has_probe=probe
        or any(a.report.role == "site-probe" for a in overdue if a.report.site == site),
        av_states={str(row[0]): av_state(row[1]) for row in agents},
    )


def covered(t: float, held: Iterable[tuple[float, float]], reach: float) -> bool:
    """Whether the collector held, at ``t``, an observation the scrape may still show."""
    return any(received <= t and effective >= t - reach for received, effective in held)


def to_ms(ts: float) -> int:
    return math.floor(ts * 1000)


def late_rows(
    late: Sequence[Accepted], rule: LateRule, context: Mapping[str, SiteContext]
) -> list[QueueRow]:
    """The samples of late reports, as /metrics would have shown them at their times."""
    rows: list[QueueRow] = []
    av_states = {site: dict(ctx.av_states) for site, ctx in context.items()}
    for a in sorted(late, key=lambda x: (x.effective, x.report.id)):
        report, site = a.report, a.report.site
        ctx = context.get(site, SiteContext())
        reach = horizon(rule, report.interval_seconds) + rule.grace_seconds
        if covered(a.effective, ctx.held, reach):
            continue  # the scrape owned this moment
        ts = to_ms(a.effective)
        label = label_value(site)

        def add(
            name: str, value: float, labels: Mapping[str, str], ts: int = ts, site: str = site
        ) -> None:
            rows.append(QueueRow(series_key(name, {"job": rule.job, **labels}), ts, site, value))

        add(MARKER, 1, {"site": label})
        add("hatang_site_up", 1, {"site": label})  # the site reported: up, as it would have been
        # The site's observation is its site probe's, else its freshest agent's (DESIGN).
        if report.role == "site-probe" or not ctx.has_probe:
            seen: set[tuple[str, str]] = set()
            for network in NETWORK_CLASSES:
                status = report.networks.get(network)
                if not status.configured:
                    continue
                add("hatang_network_up", 1 if status.up else 0, {"site": label, "network": network})
                shown = 0
                for result in status.targets:
                    key = (network, label_value(result.target))
                    if key in seen or shown >= MAX_TARGETS_PER_NETWORK:
                        continue
                    seen.add(key)
                    shown += 1
                    target = {"site": label, "network": network, "target": key[1]}
                    if result.rtt_seconds is not None:
                        add("hatang_probe_rtt_seconds", result.rtt_seconds, target)
                    if result.loss_ratio is not None:
                        add("hatang_probe_loss_ratio", result.loss_ratio, target)
        if report.lan_hosts is not None:
            counts = report.lan_hosts.counts
            add("hatang_lan_hosts", counts.arp, {"site": label, "source": "arp"})
            add("hatang_lan_hosts", counts.snmp, {"site": label, "source": "snmp"})
        states = av_states.setdefault(site, {})
        if report.antivirus is not None:
            states[report.agent_id] = report.antivirus.state
        else:
            states.setdefault(report.agent_id, "")
        add("hatang_lan_hosts", len(states), {"site": label, "source": "agent"})
        reported = [s for s in states.values() if s]
        if reported:
            for state in AV_STATES:
                add(
                    "hatang_antivirus_hosts", reported.count(state), {"site": label, "state": state}
                )
    return rows


def takeovers(on_time: Iterable[Accepted]) -> dict[str, int]:
    """Per site, the earliest on-time observation of the batch (ms): the scrape's again."""
    first: dict[str, int] = {}
    for a in on_time:
        ts = to_ms(a.effective)
        site = a.report.site
        if site not in first or ts < first[site]:
            first[site] = ts
    return first


def stale_rows(site: str, at_ms: int, recent: Iterable[tuple[str, int, int]]) -> list[QueueRow]:
    """Staleness markers at ``at_ms`` for the site's pushed series whose newest sample
    before it (``recent``: series, ts_ms, stale) is a value, not already a marker."""
    newest: dict[str, tuple[int, int]] = {}
    for series, ts, stale in recent:
        if ts < at_ms and (series not in newest or ts > newest[series][0]):
            newest[series] = (ts, stale)
    return [
        QueueRow(series, at_ms, site, 0.0, stale=True)
        for series, (_, stale) in sorted(newest.items())
        if not stale
    ]


def av_state(body: str | bytes | None) -> str:
    """The ``state`` of a stored antivirus section ('' when absent or unreadable)."""
    if body is None:
        return ""
    try:
        value = json.loads(body)
    except (ValueError, TypeError):
        return ""
    state = value.get("state") if isinstance(value, dict) else None
    return state if isinstance(state, str) else ""

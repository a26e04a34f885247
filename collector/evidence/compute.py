"""The evidence numbers, from the store's full report history, one site at a time.

Each selected unit's reports of the period are streamed in observation order
(``Store.reports``, paged) and folded into small per-site state, which is turned into table
rows and dropped before the next site: memory grows with one site's computers and the
output rows, never with the history. The definitions (what "up", an outage, a protected
day, completeness and coverage mean) are in docs/evidence.md; keep the two in step.

Evidence uses observation times (``observed_at`` as the agent sent it): a late report
counts where it was observed, a replay was never stored twice. No roll-up table is read:
outages need the sequence of observations, and the shares must agree with them.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from agent.report import NETWORK_CLASSES, LanHosts, NetworkClass, Report
from collector.compliance import Rules
from collector.org import Org, Unit
from collector.period import Period
from collector.targets import Goal, Plan

UNPROTECTED: Final = frozenset({"outdated", "disabled", "missing"})
SILENCE_LISTED: Final = 86400.0  # silences at least this long are listed among the outages
DAY: Final = 86400.0
UNIT_NETWORKS: Final[Mapping[str, NetworkClass]] = {
    "lan": "lan",
    "internet": "internet",
    "wan": "wan",
    "dedicated_network": "dedicated",
}


class ReportSource(Protocol):
    """The part of the store the computation reads."""

    def reports(
        self, site: str | None, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[Report]: ...


class Calendar:
    """Local days and months of a period as unix boundaries (bisect, not tz maths, per
    observation)."""

    def __init__(self, period: Period) -> None:
        tz = period.start.tzinfo
        self.days = list(period.days())
        self.day_starts = [
            dt.datetime(d.year, d.month, d.day, tzinfo=tz).timestamp() for d in self.days
        ]
        self.months = [f"{y:04d}-{m:02d}" for y, m in period.months()]
        starts = []
        for y, m in period.months():
            first = dt.datetime(y, m, 1, tzinfo=tz).timestamp()
            starts.append(max(first, period.start_ts))
        self.month_starts = starts
        self.end = period.end_ts

    def day(self, ts: float) -> int:
        return max(0, bisect.bisect_right(self.day_starts, ts) - 1)

    def month(self, ts: float) -> str:
        return self.months[max(0, bisect.bisect_right(self.month_starts, ts) - 1)]

    def month_seconds(self, month: str, until: float) -> float:
        """Seconds of ``month`` inside the period and before ``until`` (now)."""
        i = self.months.index(month)
        start = self.month_starts[i]
        end = self.month_starts[i + 1] if i + 1 < len(self.months) else self.end
        return max(0.0, min(end, until) - start)


@dataclass(slots=True)
class Outage:
    site: str
    network: str  # a network class, or "-" for a silence of the whole unit
    kind: str  # "down" or "no_data"
    start: float
    end: float
    ended_by: str  # "up", "no_data", "period_end"
    month: str = ""  # the month it started in

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(slots=True)
class MonthCount:
    checks: int = 0
    up: int = 0
    covered: float = 0.0  # seconds of the month with an observation of this class


@dataclass(slots=True)
class NetworkTrack:
    """One network class of one site: monthly counts and outages (runs of down checks)."""

    site: str
    network: str
    gap: Callable[[float], float]  # the silence after which an outage stops being "down"
    months: dict[str, MonthCount] = field(default_factory=dict)
    outages: list[Outage] = field(default_factory=list)
    _down_since: float | None = None
    _down_month: str = ""
    _last: float | None = None
    _last_interval: float = 0.0
    _last_month: str = ""

    def observe(self, ts: float, up: bool, interval: float, month: str) -> None:
        if self._last is not None:
            step = ts - self._last
            # the previous observation stands for at most its interval
            self.months[self._last_month].covered += min(step, self._last_interval)
            if self._down_since is not None and step > self.gap(self._last_interval):
                self._close(self._last + self._last_interval, "no_data")
        count = self.months.setdefault(month, MonthCount())
        count.checks += 1
        if up:
            count.up += 1
            if self._down_since is not None:
                self._close(ts, "up")
        elif self._down_since is None:
            self._down_since, self._down_month = ts, month
        self._last, self._last_interval, self._last_month = ts, interval, month

    def _close(self, end: float, by: str) -> None:
        assert self._down_since is not None
        self.outages.append(
            Outage(self.site, self.network, "down", self._down_since, end, by, self._down_month)
        )
        self._down_since = None

    def finish(self, period_end: float, now: float) -> None:
        if self._last is None:
            return
        end = min(self._last + self._last_interval, period_end, now)
        self.months[self._last_month].covered += max(0.0, end - self._last)
        if self._down_since is not None:
            self._close(end, "period_end" if end >= min(period_end, now) else "no_data")


@dataclass(slots=True)
class Computer:
    """One agent over the period: inventory, antivirus days, firewall, connectivity."""

    site: str
    agent_id: str
    role: str = ""
    hostname: str = ""
    os: str = ""
    version: str = ""
    macs: tuple[str, ...] = ()
    interval: float = 0.0
    first: float = 0.0
    last: float = 0.0
    last_received: float | None = None
    reports: int = 0
    sources: set[str] = field(default_factory=lambda: {"agent"})
    # antivirus
    av_state: str | None = None
    av_days: dict[str, int] = field(default_factory=dict)  # "protected"/"unprotected"/"unknown"
    av_month_days: dict[str, list[int]] = field(default_factory=dict)  # month → [prot, unprot]
    _av_day: int = -1
    _av_day_state: str | None = None
    _av_day_month: str = ""
    unprotected_since: float | None = None
    longest: float = 0.0  # seconds
    longest_from: float | None = None
    longest_to: float | None = None
    signature_age_days: float | None = None
    products: str = ""
    # firewall
    firewall: bool | None = None
    firewall_source: str = ""
    # patches (the newest report of the period that had the section)
    patched_at: float | None = None  # newest update installed, unix seconds
    pending_security: int | None = None
    reboot_pending: bool | None = None
    patch_source: str = ""
    # own connectivity (computers_connected)
    lan: list[int] = field(default_factory=lambda: [0, 0])
    internet: list[int] = field(default_factory=lambda: [0, 0])
    # completeness: reports per month, and the first/last observation per month
    month_reports: dict[str, int] = field(default_factory=dict)
    month_span: dict[str, list[float]] = field(default_factory=dict)

    def antivirus(self, ts: float, state: str, day: int, month: str) -> None:
        if day != self._av_day:
            self._close_day()
            self._av_day, self._av_day_month = day, month
        self._av_day_state = state
        self.av_state = state
        if state in UNPROTECTED:
            if self.unprotected_since is None:
                self.unprotected_since = ts
        elif state == "protected" and self.unprotected_since is not None:
            self._stretch(ts)

    def _stretch(self, end: float) -> None:
        assert self.unprotected_since is not None
        length = end - self.unprotected_since
        if length >= self.longest:
            self.longest, self.longest_from, self.longest_to = length, self.unprotected_since, end
        self.unprotected_since = None

    def _close_day(self) -> None:
        state = self._av_day_state
        if state is None:
            return
        kind = (
            "protected"
            if state == "protected"
            else "unprotected"
            if state in UNPROTECTED
            else "unknown"
        )
        self.av_days[kind] = self.av_days.get(kind, 0) + 1
        month = self.av_month_days.setdefault(self._av_day_month, [0, 0])
        if kind == "protected":
            month[0] += 1
        elif kind == "unprotected":
            month[1] += 1
        self._av_day_state = None

    def finish(self) -> None:
        self._close_day()
        if self.unprotected_since is not None:
            # still unprotected at its last observation: the stretch lasts at least that long
            self._stretch(max(self.last, self.unprotected_since))

    @property
    def days_protected(self) -> int:
        return self.av_days.get("protected", 0)

    @property
    def days_unprotected(self) -> int:
        return self.av_days.get("unprotected", 0)

    @property
    def av_share(self) -> float | None:
        known = self.days_protected + self.days_unprotected
        return self.days_protected / known if known else None


@dataclass(slots=True)
class Discovered:
    """A LAN host a site probe classified as a computer, without an agent."""

    site: str
    mac: str
    ip: str
    hostname: str
    first: float
    last: float
    sources: set[str]


@dataclass(slots=True)
class SiteResult:
    """Everything kept of one unit once its reports are folded."""

    unit: Unit
    reports: int
    first: float | None
    last: float | None
    longest_silence: float  # seconds, period start/now included
    computers: list[Computer]
    discovered: list[Discovered]
    networks: dict[str, NetworkTrack]  # the class tracks used (site probe's if any)
    silences: list[Outage]
    source: str  # "site-probe" or "all agents" or ""
    month_seconds: dict[str, float]  # seconds of each month inside the period, until now

    def share(self, network: str) -> tuple[float | None, int]:
        """Share of checks up over the period and the number of checks."""
        track = self.networks.get(network)
        if track is None:
            return None, 0
        checks = sum(m.checks for m in track.months.values())
        up = sum(m.up for m in track.months.values())
        return (up / checks if checks else None), checks


@dataclass(slots=True)
class GoalResult:
    plan: str
    goal: Goal
    measured: float | None
    attaining: int
    with_data: int
    units: int
    numerator: float
    denominator: float

    @property
    def coverage(self) -> float | None:
        return self.with_data / self.units if self.units else None

    @property
    def status(self) -> str:
        if self.measured is None:
            return "no_data"
        if self.goal.goal is None:
            return "no_goal"
        return "met" if self.measured >= self.goal.goal else "missed"


@dataclass(slots=True)
class Finding:
    rule: str
    unit: str
    subject: str  # computer / unit / goal
    text_vi: str
    text_en: str
    value: float | None
    threshold: float | None


@dataclass(slots=True)
class RuleResult:
    rule_id: str
    text_vi: str
    text_en: str
    fact: str
    threshold: float
    value: float | None  # None: no agent measured it ("không có dữ liệu / no data")
    coverage: float | None
    met: bool | None
    basis: str


@dataclass(slots=True)
class Evidence:
    """The computed evidence of one period and selection of units."""

    period: Period
    units: list[Unit]
    sites: list[SiteResult]
    goals: list[GoalResult]
    findings: list[Finding]
    rules: list[RuleResult]
    rules_file: Rules
    up_ratio: float
    generated_at: float
    months: list[str]

    def computers(self) -> Iterable[Computer]:
        for site in self.sites:
            yield from site.computers

    def monthly_connectivity(self) -> dict[str, dict[str, tuple[int, int]]]:
        """network → month → (checks, up) over the selected units (the PDF's chart)."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for site in self.sites:
            for network, track in site.networks.items():
                for month, count in track.months.items():
                    held = out.setdefault(network, {}).get(month, (0, 0))
                    out[network][month] = (held[0] + count.checks, held[1] + count.up)
        return out

    def monthly_protection(self) -> dict[str, tuple[int, int]]:
        """month → (computer-days protected, computer-days unprotected)."""
        out: dict[str, tuple[int, int]] = {}
        for computer in self.computers():
            for month, (p, u) in computer.av_month_days.items():
                held = out.get(month, (0, 0))
                out[month] = (held[0] + p, held[1] + u)
        return out


class SiteFold:
    """Folds one site's reports (in observation order) into a ``SiteResult``."""

    def __init__(self, unit: Unit, calendar: Calendar, gap_intervals: float) -> None:
        self.unit = unit
        self.cal = calendar
        gap = lambda interval: gap_intervals * interval  # noqa: E731
        self.probe = {n: NetworkTrack(unit.id, n, gap) for n in NETWORK_CLASSES}
        self.every = {n: NetworkTrack(unit.id, n, gap) for n in NETWORK_CLASSES}
        self.gap_intervals = gap_intervals
        self.computers: dict[str, Computer] = {}
        self.discovered: dict[str, Discovered] = {}
        self.reports = 0
        self.first: float | None = None
        self.last: float | None = None
        self.silence = 0.0
        self.silences: list[Outage] = []
        self.has_probe = False

    def add(self, report: Report, ts: float) -> None:
        cal = self.cal
        month, day = cal.month(ts), cal.day(ts)
        if self.last is not None:
            self._silence(self.last, ts, "up")
        elif self.first is None:
            self.first = ts
        self.reports += 1
        self.last = ts
        interval = float(report.interval_seconds)
        probe = report.role == "site-probe"
        self.has_probe |= probe
        for network in NETWORK_CLASSES:
            status = report.networks.get(network)
            if not status.configured or status.up is None:
                continue
            self.every[network].observe(ts, status.up, interval, month)
            if probe:
                self.probe[network].observe(ts, status.up, interval, month)
        pc = self.computers.get(report.agent_id)
        if pc is None:
            pc = self.computers[report.agent_id] = Computer(report.site, report.agent_id, first=ts)
        pc.role, pc.version, pc.interval, pc.last = report.role, report.agent_version, interval, ts
        pc.reports += 1
        pc.month_reports[month] = pc.month_reports.get(month, 0) + 1
        span = pc.month_span.setdefault(month, [ts, ts])
        span[1] = ts
        for own, name in ((pc.lan, "lan"), (pc.internet, "internet")):
            status = report.networks.get(name)  # type: ignore[arg-type]
            if status.configured and status.up is not None:
                own[0] += 1
                own[1] += status.up
        if report.host is not None:
            pc.hostname, pc.os = (
                report.host.hostname,
                " ".join(x for x in (report.host.os, report.host.os_release or "") if x),
            )
            pc.macs = tuple(i.mac for i in report.host.interfaces if i.mac)
        av = report.antivirus
        if av is not None:
            pc.antivirus(ts, av.state, day, month)
            ages = [
                p.signature_age_seconds for p in av.products if p.signature_age_seconds is not None
            ]
            pc.signature_age_days = min(ages) / DAY if ages else pc.signature_age_days
            pc.products = ", ".join(sorted({p.name for p in av.products}))[:500]
        fw = report.firewall
        if fw is not None and fw.enabled is not None:
            pc.firewall, pc.firewall_source = fw.enabled, fw.source or ""
        patches = report.patches
        if patches is not None:
            installed = patches.last_installed_at
            pc.patched_at = installed.timestamp() if installed is not None else None
            pc.pending_security = patches.pending_security_updates
            pc.reboot_pending = patches.reboot_pending
            pc.patch_source = patches.source
        if isinstance(report.lan_hosts, LanHosts):
            self._lan(report.lan_hosts, ts)

    def _lan(self, lan: LanHosts, ts: float) -> None:
        for host in lan.hosts:
            if host.agent_id is not None:
                pc = self.computers.get(host.agent_id)
                if pc is not None:
                    pc.sources.update(s for s in host.sources if s != "agent")
                continue
            if host.kind != "computer":
                continue
            seen = self.discovered.get(host.mac)
            if seen is None:
                seen = self.discovered[host.mac] = Discovered(
                    self.unit.id, host.mac, host.ip or "", host.hostname or "", ts, ts, set()
                )
            seen.last = ts
            seen.ip, seen.hostname = host.ip or seen.ip, host.hostname or seen.hostname
            seen.sources.update(host.sources)

    def _silence(self, start: float, end: float, by: str) -> None:
        length = end - start
        self.silence = max(self.silence, length)
        if length >= SILENCE_LISTED:
            self.silences.append(Outage(self.unit.id, "-", "no_data", start, end, by))

    def finish(self, start: float, end: float) -> SiteResult:
        """``start``/``end``: the period's start and its end or now, whichever is first."""
        if self.first is None or self.last is None:
            self.silence = end - start
            self.silences.append(Outage(self.unit.id, "-", "no_data", start, end, "period_end"))
        else:
            self._silence(start, self.first, "up")
            self._silence(self.last, end, "period_end")
            self.silences.sort(key=lambda o: o.start)
        tracks = self.probe if self.has_probe else self.every
        for track in tracks.values():
            track.finish(self.cal.end, end)
        for pc in self.computers.values():
            pc.finish()
        return SiteResult(
            unit=self.unit,
            reports=self.reports,
            first=self.first,
            last=self.last,
            longest_silence=self.silence,
            computers=sorted(self.computers.values(), key=lambda c: c.agent_id),
            discovered=sorted(self.discovered.values(), key=lambda d: d.mac),
            networks={n: t for n, t in tracks.items() if t.months},
            silences=self.silences,
            source="site-probe" if self.has_probe else ("all agents" if self.reports else ""),
            month_seconds={m: self.cal.month_seconds(m, end) for m in self.cal.months},
        )


async def fold_site(
    store: ReportSource, unit: Unit, period: Period, cal: Calendar, gap_intervals: float, now: float
) -> SiteResult:
    """Stream one unit's reports of the period and fold them."""
    fold = SiteFold(unit, cal, gap_intervals)
    async for report in store.reports(unit.id, period.start, period.end):
        if report.site != unit.id:
            continue
        fold.add(report, report.observed_at.timestamp())
    return fold.finish(period.start_ts, min(period.end_ts, max(now, period.start_ts)))


def goal_results(
    plans: Sequence[Plan], sites: Sequence[SiteResult], period: Period, up_ratio: float
) -> list[GoalResult]:
    """Every goal in force for the period (deadline not before its first year), measured
    over the selected units of the goal's level."""
    out = []
    for plan in plans:
        for goal in plan.goals:
            if goal.deadline < period.start.year:
                continue
            chosen = [
                s
                for s in sites
                if (goal.level == "all" or s.unit.level == goal.level)
                and (goal.sectors is None or s.unit.sector in goal.sectors)
            ]
            out.append(measure(plan.plan, goal, chosen, up_ratio))
    return out


def measure(plan: str, goal: Goal, sites: Sequence[SiteResult], up_ratio: float) -> GoalResult:
    """One indicator over a selection of units (the period's version of
    ``collector.indicators.indicator_value``)."""
    num = den = 0.0
    attaining = with_data = 0
    units = len(sites)
    indicator = goal.indicator
    for site in sites:
        computers = len(site.computers) + len(site.discovered)
        if indicator in UNIT_NETWORKS:
            share, checks = site.share(UNIT_NETWORKS[indicator])
            den += 1
            if checks:
                with_data += 1
                if share is not None and share >= up_ratio:
                    attaining += 1
                    num += 1
        elif indicator == "computers_per_official":
            if site.unit.officials is None:
                units -= 1
                continue
            den += site.unit.officials
            if site.reports:
                with_data += 1
                num += computers
        elif indicator == "computers_connected":
            if site.computers:
                with_data += 1
                den += computers
                num += sum(
                    1
                    for c in site.computers
                    if all(x[0] and x[1] / x[0] >= up_ratio for x in (c.lan, c.internet))
                )
        elif indicator == "antivirus_protected":
            reporting = [c for c in site.computers if c.av_state is not None]
            if reporting:
                with_data += 1
                den += len(reporting)
                num += sum(1 for c in reporting if c.av_state == "protected")
        # antivirus_managed, computers_patched, ipv6 and security_inspection have no
        # period rule yet: over a period they are "no data", never another indicator's
        # number (docs/indicators.md); the live snapshot computes them.
    measured = num / den if with_data and den > 0 else None
    return GoalResult(plan, goal, measured, attaining, with_data, units, num, den)


def _days(seconds: float) -> float:
    return round(seconds / DAY, 2)


def _rule(rules: Rules, fact: str, value: float | None, coverage: float | None) -> list[RuleResult]:
    out = []
    for rule in rules.data.rules:
        if rule.evidence.fact != fact:
            continue
        t = rule.evidence.threshold
        met = None if value is None else (value <= t if rule.evidence.at_most else value >= t)
        basis = "; ".join(
            f"{b.document} {b.number or ''}".strip() + ("" if b.confirmed else " (cần xác nhận)")
            for b in (rules.basis(ref) for ref in rule.legal_basis)
        )
        out.append(
            RuleResult(rule.id, rule.text, rule.text_en, fact, t, value, coverage, met, basis)
        )
    return out


def _count(value: float) -> str:
    return f"{value:.2f}"  # computers per official: a count per person


def _percent(value: float) -> str:
    return f"{value:.1%}"


def _pc(c: Computer) -> str:
    return f"{c.hostname or c.agent_id} ({c.agent_id})"


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def evaluate(
    sites: Sequence[SiteResult], goals: Sequence[GoalResult], rules: Rules
) -> tuple[list[RuleResult], list[Finding]]:
    """Each rule of the file in force against the evidence, and the findings behind it."""
    found: list[Finding] = []
    results: list[RuleResult] = []
    computers = [c for s in sites for c in s.computers]
    reporting = [c for c in computers if c.av_state is not None]
    cover = _share(len(reporting), len(computers))
    protected = sum(1 for c in reporting if c.av_state == "protected")
    results += _rule(rules, "antivirus_protected_share", _share(protected, len(reporting)), cover)

    limit = rules.threshold("antivirus_unprotected_days", 30)
    longest = max((c.longest for c in reporting), default=None)
    value = None if longest is None else _days(longest)
    results += _rule(rules, "antivirus_unprotected_days", value, cover)
    for c in reporting:
        days = _days(c.longest)
        if days > limit:
            vi = f"Không được bảo vệ chống mã độc {days:g} ngày liên tục (quá {limit:g} ngày)"
            en = f"Unprotected against malware for {days:g} consecutive days (over {limit:g})"
            found.append(Finding("antivirus_unprotected_days", c.site, _pc(c), vi, en, days, limit))

    aged = [c for c in reporting if c.signature_age_days is not None]
    age_limit = rules.threshold("antivirus_signature_age_days", 7)
    ages = [round(c.signature_age_days or 0.0, 2) for c in aged]
    results += _rule(
        rules,
        "antivirus_signature_age_days",
        max(ages) if ages else None,
        _share(len(aged), len(computers)),
    )
    for c, age in zip(aged, ages, strict=True):
        if age > age_limit:
            vi = f"Mẫu nhận diện mã độc cũ {age:g} ngày (quá {age_limit:g} ngày)"
            en = f"Malware signatures {age:g} days old (over {age_limit:g})"
            found.append(
                Finding("antivirus_signature_age_days", c.site, _pc(c), vi, en, age, age_limit)
            )

    results += _rule(rules, "antivirus_centrally_managed_share", None, None)  # not reported yet

    walls = [c for c in computers if c.firewall is not None]
    on = sum(1 for c in walls if c.firewall)
    results += _rule(
        rules, "firewall_enabled_share", _share(on, len(walls)), _share(len(walls), len(computers))
    )
    for c in walls:
        if not c.firewall:
            vi, en = "Tường lửa tắt (lần quan sát cuối)", "Firewall off (last observation)"
            found.append(Finding("firewall_enabled_share", c.site, _pc(c), vi, en, 0.0, 1.0))

    results += _rule(rules, "patch_age_days", None, None)  # agents do not report patches yet

    silent_limit = rules.threshold("unit_silent_days", 7)
    heard = [s for s in sites if s.reports]
    worst = max((s.longest_silence for s in heard), default=0.0)  # the silent ones: below
    results += _rule(
        rules, "unit_silent_days", _days(worst) if heard else None, _share(len(heard), len(sites))
    )
    for s in sites:
        days = _days(s.longest_silence)
        if not s.reports:
            vi = "Không có dữ liệu trong cả kỳ (không agent nào báo cáo)"
            en = "No data for the whole period (no agent reported)"
            found.append(
                Finding("unit_silent_days", s.unit.id, s.unit.name, vi, en, None, silent_limit)
            )
        elif days > silent_limit:
            vi = f"Mất giám sát {days:g} ngày liên tục (quá {silent_limit:g} ngày)"
            en = f"Silent for {days:g} consecutive days (over {silent_limit:g})"
            found.append(
                Finding("unit_silent_days", s.unit.id, s.unit.name, vi, en, days, silent_limit)
            )

    numbered = [g for g in goals if g.goal.goal is not None]
    judged = [g for g in numbered if g.measured is not None]
    met = sum(1 for g in judged if g.status == "met")
    results += _rule(
        rules,
        "plan_goals_attained",
        _share(met, len(judged)),
        _share(len(judged), len(numbered)),
    )
    for g in numbered:
        if g.status not in ("missed", "no_data"):
            continue
        target = g.goal.goal or 0.0
        shown = _count if g.goal.indicator == "computers_per_official" else _percent
        vi_value = "không có dữ liệu" if g.measured is None else shown(g.measured)
        en_value = "no data" if g.measured is None else shown(g.measured)
        subject = f"{g.plan}: {g.goal.indicator} ({g.goal.level})"
        vi = f"Chưa đạt chỉ tiêu {shown(target)} (đo được: {vi_value}; hạn {g.goal.deadline})"
        en = f"Goal {shown(target)} not attained (measured {en_value}, deadline {g.goal.deadline})"
        found.append(
            Finding("plan_goals_attained", g.goal.level, subject, vi, en, g.measured, target)
        )
    return results, found


async def compute(
    store: ReportSource,
    org: Org,
    plans: Sequence[Plan],
    rules: Rules,
    period: Period,
    unit_id: str | None,
    *,
    up_ratio: float,
    gap_intervals: float,
    now: float,
    progress: Callable[[int, int, str], None] | None = None,
    officials: Mapping[str, int] | None = None,
) -> Evidence:
    """The whole evidence of a period for a unit and everything under it.

    ``officials`` are the counts units declared for the period (they replace the org
    file's, the denominator of computers per official, as on /metrics)."""
    units = list(org.units) if unit_id is None else org.subtree(unit_id)
    declared = officials or {}
    units = [
        dataclasses.replace(unit, officials=declared[unit.id]) if unit.id in declared else unit
        for unit in units
    ]
    cal = Calendar(period)
    sites = []
    for index, unit in enumerate(units):
        if progress is not None:
            progress(index, len(units), unit.id)
        sites.append(await fold_site(store, unit, period, cal, gap_intervals, now))
    if progress is not None:
        progress(len(units), len(units), "")
    goals = goal_results(plans, sites, period, up_ratio)
    rule_results, findings = evaluate(sites, goals, rules)
    return Evidence(
        period=period,
        units=units,
        sites=sites,
        goals=goals,
        findings=findings,
        rules=rule_results,
        rules_file=rules,
        up_ratio=up_ratio,
        generated_at=now,
        months=cal.months,
    )

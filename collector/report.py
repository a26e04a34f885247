"""``hatang-collector report``: plan attainment for a period (quarter, half, year).

Every indicator at every level against its plan goals, the change since the previous
period of the same length, the units furthest from target and the coverage of the data.
The numbers are the evidence computation's (``collector.evidence.compute``) and the
documents are written by the evidence render helpers, so a report and an evidence bundle
of the same period never disagree.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from collector.config import CollectorConfig
from collector.evidence.bundle import EvidenceError
from collector.evidence.compute import UNIT_NETWORKS, Evidence, SiteResult, measure
from collector.evidence.export import Inputs, _os_user, evidence_of
from collector.evidence.render import NO_DATA, Column, Pdf, Table, text, write_xlsx
from collector.evidence.tables import (
    INDICATOR_VI,
    UNIT_ID,
    UNIT_NAME,
    per_official,
    units_table,
)
from collector.period import Period
from collector.store import Store
from collector.targets import INDICATORS, Goal, GoalLevel

FURTHEST: Final = 10  # units listed per indicator


def previous_name(name: str) -> str:
    """The period of the same kind just before ``name`` (2026-Q1 → 2025-Q4, ...)."""
    if m := re.fullmatch(r"(\d{4})-H([12])", name):
        year, half = int(m[1]), int(m[2])
        return f"{year}-H1" if half == 2 else f"{year - 1}-H2"
    if m := re.fullmatch(r"(\d{4})-Q([1-4])", name):
        year, quarter = int(m[1]), int(m[2])
        return f"{year}-Q{quarter - 1}" if quarter > 1 else f"{year - 1}-Q4"
    if m := re.fullmatch(r"(\d{4})-(\d{2})", name):
        year, month = int(m[1]), int(m[2])
        return f"{year}-{month - 1:02d}" if month > 1 else f"{year - 1}-12"
    if m := re.fullmatch(r"(.*?)(\d{4})", name):
        return f"{m[1]}{int(m[2]) - 1}"
    raise EvidenceError(f"--period: no previous period for {name!r}")


def _levels(ev: Evidence) -> list[GoalLevel]:
    present = {s.unit.level for s in ev.sites}
    ordered: list[GoalLevel] = [lv for lv in ("province", "agency", "district", "commune")
                                if lv in present]  # fmt: skip
    return [*ordered, "all"]


def _select(sites: Sequence[SiteResult], level: GoalLevel) -> list[SiteResult]:
    return [s for s in sites if level == "all" or s.unit.level == level]


def indicators_table(
    ev: Evidence, before: Evidence, plans_goals: Sequence[tuple[str, Goal]]
) -> Table:
    t = Table(
        "indicators",
        "Chỉ tiêu",
        "Indicators",
        [
            Column("Chỉ tiêu", "Indicator"),
            Column("Cấp", "Level"),
            Column("Kế hoạch", "Plan"),
            Column("Mục tiêu", "Goal", "ratio"),
            Column("Hạn", "Deadline", "int"),
            Column("Kỳ này", "This period", "ratio"),
            Column("Kỳ trước", "Previous period", "ratio"),
            Column("Thay đổi (điểm %)", "Change (points)", "float"),
            Column("Độ phủ dữ liệu", "Coverage", "ratio"),
            Column("Kết quả", "Status"),
        ],
    )
    for indicator in INDICATORS:
        for level in _levels(ev):
            goals = [
                (p, g) for p, g in plans_goals if g.indicator == indicator and g.level == level
            ]
            probe = Goal(indicator, level, None, 2100)
            now = measure("", probe, _select(ev.sites, level), ev.up_ratio)
            then = measure("", probe, _select(before.sites, level), before.up_ratio)
            if now.units == 0:
                continue
            change = (
                None
                if now.measured is None or then.measured is None
                else round((now.measured - then.measured) * 100, 1)
            )
            for plan, goal in goals or [("", probe)]:
                status = (
                    NO_DATA
                    if now.measured is None
                    else ""
                    if goal.goal is None
                    else "đạt / met"
                    if now.measured >= goal.goal
                    else "chưa đạt / missed"
                )
                t.rows.append(
                    [
                        INDICATOR_VI[indicator],
                        level,
                        plan,
                        per_official(indicator, goal.goal),
                        goal.deadline if plan else None,
                        per_official(indicator, now.measured),
                        per_official(indicator, then.measured),
                        change,
                        now.coverage,
                        status,
                    ]
                )
    return t


def furthest_table(ev: Evidence) -> Table:
    """Per unit indicator, the units with the lowest share (no data first: unknown is
    never counted as close to target)."""
    t = Table(
        "furthest",
        "Xa mục tiêu nhất",
        "Furthest from target",
        [
            Column("Chỉ tiêu", "Indicator"),
            UNIT_ID,
            UNIT_NAME,
            Column("Tỉ lệ có kết nối", "Share up", "ratio"),
            Column("Ngưỡng đạt", "Threshold", "ratio"),
            Column("Cách ngưỡng (điểm %)", "Gap (points)", "float"),
            Column("Số lần kiểm tra", "Checks", "int"),
        ],
    )
    for indicator, network in UNIT_NETWORKS.items():
        scored = []
        for s in ev.sites:
            share, checks = s.share(network)
            scored.append((-1.0 if share is None else share, s, share, checks))
        scored.sort(key=lambda x: (x[0], x[1].unit.id))
        for _, s, share, checks in scored[:FURTHEST]:
            if share is not None and share >= ev.up_ratio:
                continue
            gap = None if share is None else round((ev.up_ratio - share) * 100, 1)
            t.rows.append(
                [INDICATOR_VI[indicator], s.unit.id, s.unit.name, share, ev.up_ratio, gap, checks]
            )
    return t


async def write_report(
    config: CollectorConfig,
    store: Store,
    given: Inputs,
    out_dir: Path,
    fmt: str,
    by: str | None,
    *,
    now: dt.datetime | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Write the report (xlsx or pdf) into ``out_dir``; return its path."""
    moment = now or dt.datetime.now(dt.UTC)
    previous: Period = config.reporting.period(previous_name(given.period.name))
    ev = await evidence_of(config, store, given, moment.timestamp(), progress)
    before = await evidence_of(config, store, given, moment.timestamp(), None, previous)
    goals = [
        (p.plan, g) for p in given.plans for g in p.goals if g.deadline >= given.period.start.year
    ]
    sheets = [indicators_table(ev, before, goals), furthest_table(ev), units_table(ev.sites)]
    unit_id = given.unit.id if given.unit else given.org.province
    unit_name = given.unit.name if given.unit else given.org.name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - CLI, before any I/O
    except OSError as exc:
        raise EvidenceError(f"--out: {out_dir}: cannot create: {exc.strerror}") from None
    stem = f"hatang-report-{unit_id.replace('/', '_')}-{given.period.name}"
    path = out_dir / f"{stem}-{moment.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}.{fmt}"
    if fmt == "xlsx":
        data = write_xlsx(sheets, given.tz)
    else:
        data = _pdf(sheets, ev, previous, unit_name, by or _os_user(), moment, given)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise EvidenceError(f"--out: {path}: cannot write: {exc.strerror}") from None
    return path


def _pdf(
    sheets: Sequence[Table],
    ev: Evidence,
    previous: Period,
    unit_name: str,
    by: str,
    moment: dt.datetime,
    given: Inputs,
) -> bytes:
    title = "BÁO CÁO KẾT QUẢ THỰC HIỆN KẾ HOẠCH"
    doc = Pdf(f"{title} – {unit_name} – {ev.period.title_vi}", by)
    doc.title_page(
        title,
        "Plan attainment report",
        [
            ("Đơn vị / Unit:", unit_name),
            ("Kỳ báo cáo / Period:", f"{ev.period.title_vi} ({ev.period.title_en})"),
            ("Kỳ trước / Previous:", f"{previous.title_vi} ({previous.title_en})"),
            ("Lập lúc / Generated at:", f"{moment.astimezone(given.tz):%d/%m/%Y %H:%M}"),
            ("Người lập / By:", by),
        ],
    )
    for table in sheets[:2]:
        doc.page()
        doc.heading(f"{table.title_vi} / {table.title_en}")
        if not table.rows:
            doc.paragraph(NO_DATA)
            continue
        doc.table(
            [c.header for c in table.columns],
            [
                [text(v, c.kind, given.tz) for v, c in zip(row, table.columns, strict=True)]
                for row in table.rows
            ],
        )
    return doc.output()

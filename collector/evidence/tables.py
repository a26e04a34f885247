"""The evidence as tables (workbook sheets and CSV files) and as the PDF a person reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

from collector.compliance import AT_MOST
from collector.evidence.compute import DAY, Evidence, SiteResult
from collector.evidence.render import NO_DATA, Cell, Column, Pdf, Table, line_chart, text

UNIT_ID: Final = Column("Mã đơn vị", "Unit id")
UNIT_NAME: Final = Column("Tên đơn vị", "Unit name")
AGENT_ID: Final = Column("Mã agent", "Agent id")
HOSTNAME: Final = Column("Tên máy", "Hostname")
STATUS: Final = {
    "met": "đạt / met",
    "missed": "chưa đạt / missed",
    "no_data": NO_DATA,
    "no_goal": "không có chỉ tiêu số / no numeric goal",
}
ENDED_BY: Final = {
    "up": "có kết nối lại / back up",
    "no_data": "mất dữ liệu / data stopped",
    "period_end": "hết kỳ / period end",
}
KIND: Final = {"down": "mất kết nối / down", "no_data": NO_DATA}
NETWORK_VI: Final = {
    "lan": "LAN",
    "wan": "WAN",
    "dedicated": "Mạng chuyên dùng / dedicated",
    "internet": "Internet",
    "-": "Cả đơn vị / whole unit",
}
INDICATOR_VI: Final = {
    "lan": "Có mạng LAN / LAN",
    "internet": "Kết nối Internet / Internet",
    "wan": "Kết nối WAN / WAN",
    "dedicated_network": "Mạng chuyên dùng / dedicated network",
    "computers_per_official": "Máy tính trên cán bộ / computers per official",
    "computers_connected": "Máy tính có kết nối / computers connected",
    "antivirus_protected": "Máy có phòng chống mã độc / antivirus protected",
    "antivirus_managed": "Phòng chống mã độc quản lý tập trung / antivirus centrally managed",
    "computers_patched": "Máy được cập nhật bản vá / computers patched",
    "ipv6": "Đơn vị có IPv6 hoạt động / units with working IPv6",
    "security_inspection": "Kiểm tra an toàn thông tin hằng năm / yearly security inspection",
}


@dataclass(frozen=True, slots=True)
class Declaration:
    """One declared fact of a unit (what no agent can see), as the declarations module
    stores it; the bundle lists it and carries its attachment."""

    unit_id: str
    unit_name: str
    period: str
    key: str
    value: str
    declared_by: str
    declared_at: float  # unix seconds
    attachment_name: str | None = None
    attachment_sha256: str | None = None


def per_official(indicator: str, value: float | None) -> Any:
    """Computers per official is a count per person (1.0 = one each), not a share."""
    return Cell(value, "float") if indicator == "computers_per_official" else value


def _on(value: bool | None) -> str:
    return "" if value is None else ("bật / on" if value else "tắt / off")


def _yes(value: bool | None) -> str:
    return "" if value is None else ("có / yes" if value else "không / no")


def _days(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / DAY, 2)


def tables(ev: Evidence, declarations: Sequence[Declaration] = ()) -> list[Table]:
    """Every sheet of the workbook, in order (the CSV files are the same tables)."""
    return [
        goals_table(ev),
        units_table(ev.sites),
        computers_table(ev.sites),
        antivirus_table(ev.sites),
        firewall_table(ev.sites),
        connectivity_table(ev.sites),
        outages_table(ev.sites),
        agents_table(ev.sites),
        completeness_table(ev),
        declarations_table(declarations),
        findings_table(ev),
        rules_table(ev),
    ]


def goals_table(ev: Evidence) -> Table:
    t = Table(
        "goals",
        "Mục tiêu",
        "Goals",
        [
            Column("Kế hoạch", "Plan"),
            Column("Chỉ tiêu", "Indicator"),
            Column("Cấp", "Level"),
            Column("Mục tiêu", "Goal", "ratio"),
            Column("Hạn", "Deadline", "int"),
            Column("Đo được", "Measured", "ratio"),
            Column("Tử số", "Numerator", "float"),
            Column("Mẫu số", "Denominator", "float"),
            Column("Đơn vị có dữ liệu", "Units with data", "int"),
            Column("Số đơn vị", "Units", "int"),
            Column("Độ phủ dữ liệu", "Coverage", "ratio"),
            Column("Kết quả", "Status"),
        ],
    )
    for g in ev.goals:
        t.rows.append(
            [
                g.plan,
                INDICATOR_VI.get(g.goal.indicator, g.goal.indicator),
                g.goal.level,
                per_official(g.goal.indicator, g.goal.goal),
                g.goal.deadline,
                per_official(g.goal.indicator, g.measured),
                g.numerator if g.measured is not None else None,
                g.denominator if g.measured is not None else None,
                g.with_data,
                g.units,
                g.coverage,
                STATUS[g.status],
            ]
        )
    return t


def units_table(sites: Sequence[SiteResult]) -> Table:
    t = Table(
        "units",
        "Đơn vị",
        "Units",
        [
            UNIT_ID,
            UNIT_NAME,
            Column("Cấp", "Level"),
            Column("Cán bộ (khai báo)", "Officials (declared)", "int"),
            Column("Số báo cáo", "Reports", "int"),
            Column("Máy tính có agent", "Computers with agent", "int"),
            Column("Máy tính phát hiện thêm", "Computers discovered", "int"),
            Column("Báo cáo đầu", "First report", "time"),
            Column("Báo cáo cuối", "Last report", "time"),
            Column("Mất giám sát dài nhất (ngày)", "Longest silence (days)", "float"),
            Column("LAN: tỉ lệ thời gian có kết nối", "LAN share up", "ratio"),
            Column("Internet: tỉ lệ có kết nối", "Internet share up", "ratio"),
            Column("WAN: tỉ lệ có kết nối", "WAN share up", "ratio"),
            Column("Mạng chuyên dùng: tỉ lệ", "Dedicated share up", "ratio"),
            Column("Nguồn đo kết nối", "Connectivity measured by"),
        ],
    )
    for s in sites:
        shares = [s.share(n)[0] for n in ("lan", "internet", "wan", "dedicated")]
        t.rows.append(
            [
                s.unit.id,
                s.unit.name,
                s.unit.level,
                s.unit.officials,
                s.reports,
                len(s.computers),
                len(s.discovered),
                s.first,
                s.last,
                _days(s.longest_silence),
                *shares,
                s.source or NO_DATA,
            ]
        )
    return t


def computers_table(sites: Sequence[SiteResult]) -> Table:
    t = Table(
        "computers",
        "Máy tính",
        "Computers",
        [
            UNIT_ID,
            AGENT_ID,
            HOSTNAME,
            Column("Hệ điều hành", "OS"),
            Column("Địa chỉ MAC", "MAC addresses"),
            Column("Thấy lần đầu", "First seen", "time"),
            Column("Thấy lần cuối", "Last seen", "time"),
            Column("Nguồn", "Sources"),
            Column("Số báo cáo", "Reports", "int"),
        ],
    )
    for s in sites:
        for c in s.computers:
            t.rows.append(
                [
                    c.site,
                    c.agent_id,
                    c.hostname,
                    c.os,
                    " ".join(c.macs),
                    c.first,
                    c.last,
                    ", ".join(sorted(c.sources)),
                    c.reports,
                ]
            )
        for d in s.discovered:
            t.rows.append(
                [
                    d.site,
                    "",
                    d.hostname,
                    "",
                    d.mac,
                    d.first,
                    d.last,
                    ", ".join(sorted(d.sources)),
                    None,
                ]
            )
    return t


def antivirus_table(sites: Sequence[SiteResult]) -> Table:
    t = Table(
        "antivirus",
        "Phòng chống mã độc",
        "Antivirus",
        [
            UNIT_ID,
            AGENT_ID,
            HOSTNAME,
            Column("Trạng thái cuối", "Last state"),
            Column("Ngày có dữ liệu", "Days with data", "int"),
            Column("Tỉ lệ ngày được bảo vệ", "Share of days protected", "ratio"),
            Column("Ngày không được bảo vệ", "Days unprotected", "int"),
            Column("Chuỗi không bảo vệ dài nhất (ngày)", "Longest unprotected (days)", "float"),
            Column("Từ", "From", "time"),
            Column("Đến", "To", "time"),
            Column("Tuổi mẫu nhận diện (ngày)", "Signature age (days)", "float"),
            Column("Sản phẩm", "Products"),
        ],
    )
    for s in sites:
        for c in s.computers:
            known = c.days_protected + c.days_unprotected
            t.rows.append(
                [
                    c.site,
                    c.agent_id,
                    c.hostname,
                    c.av_state or NO_DATA,
                    known if c.av_state is not None else None,
                    c.av_share,
                    c.days_unprotected if c.av_state is not None else None,
                    _days(c.longest) if c.av_state is not None else None,
                    c.longest_from,
                    c.longest_to,
                    None if c.signature_age_days is None else round(c.signature_age_days, 2),
                    c.products,
                ]
            )
    return t


def firewall_table(sites: Sequence[SiteResult]) -> Table:
    t = Table(
        "firewall_patch",
        "Tường lửa, bản vá",
        "Firewall, patches",
        [
            UNIT_ID,
            AGENT_ID,
            HOSTNAME,
            Column("Tường lửa (lần cuối)", "Firewall (last)"),
            Column("Nguồn", "Source"),
            Column("Bản vá cài lần cuối", "Last update installed", "time"),
            Column("Bản vá bảo mật chờ cài", "Security updates pending", "int"),
            Column("Chờ khởi động lại", "Reboot pending"),
            Column("Nguồn bản vá", "Patch source"),
        ],
    )
    for s in sites:
        for c in s.computers:
            t.rows.append(
                [
                    c.site,
                    c.agent_id,
                    c.hostname,
                    _on(c.firewall) or NO_DATA,
                    c.firewall_source,
                    c.patched_at,  # None: not reported (the cell says so)
                    c.pending_security,
                    _yes(c.reboot_pending) or NO_DATA,
                    c.patch_source or NO_DATA,
                ]
            )
    return t


def connectivity_table(sites: Sequence[SiteResult]) -> Table:
    t = Table(
        "connectivity",
        "Kết nối theo tháng",
        "Connectivity by month",
        [
            UNIT_ID,
            Column("Loại mạng", "Network class"),
            Column("Tháng", "Month"),
            Column("Số lần kiểm tra", "Checks", "int"),
            Column("Số lần có kết nối", "Checks up", "int"),
            Column("Tỉ lệ thời gian có kết nối", "Share of time up", "ratio"),
            Column("Độ phủ dữ liệu", "Coverage", "ratio"),
            Column("Số lần mất kết nối", "Outages", "int"),
            Column("Thời gian mất kết nối (giờ)", "Downtime (hours)", "float"),
        ],
    )
    for s in sites:
        if not s.networks:
            t.rows.append([s.unit.id, NO_DATA, "", None, None, None, 0.0, None, None])
            continue
        for network, track in s.networks.items():
            for month, count in sorted(track.months.items()):
                outs = [o for o in track.outages if o.month == month]
                t.rows.append(
                    [
                        s.unit.id,
                        NETWORK_VI[network],
                        month,
                        count.checks,
                        count.up,
                        count.up / count.checks if count.checks else None,
                        _coverage(count.covered, month, s),
                        len(outs),
                        round(sum(o.seconds for o in outs) / 3600, 2),
                    ]
                )
    return t


def _coverage(covered: float, month: str, site: SiteResult) -> float | None:
    seconds = site.month_seconds.get(month, 0.0)
    return min(1.0, covered / seconds) if seconds > 0 else None


def outages_table(sites: Sequence[SiteResult]) -> Table:
    t = Table(
        "outages",
        "Mất kết nối",
        "Outages",
        [
            UNIT_ID,
            Column("Loại mạng", "Network class"),
            Column("Loại", "Kind"),
            Column("Bắt đầu", "Start", "time"),
            Column("Kết thúc", "End", "time"),
            Column("Thời lượng (giờ)", "Duration (hours)", "float"),
            Column("Kết thúc do", "Ended by"),
        ],
    )
    for s in sites:
        events = [o for track in s.networks.values() for o in track.outages] + s.silences
        for o in sorted(events, key=lambda o: (o.start, o.network)):
            t.rows.append(
                [
                    o.site,
                    NETWORK_VI.get(o.network, o.network),
                    KIND[o.kind],
                    o.start,
                    o.end,
                    round(o.seconds / 3600, 2),
                    ENDED_BY[o.ended_by],
                ]
            )
    return t


def agents_table(sites: Sequence[SiteResult]) -> Table:
    t = Table(
        "agents",
        "Agent",
        "Agents",
        [
            UNIT_ID,
            AGENT_ID,
            Column("Vai trò", "Role"),
            Column("Phiên bản", "Version"),
            Column("Chu kỳ (giây)", "Interval (s)", "float"),
            Column("Báo cáo đầu trong kỳ", "First report in period", "time"),
            Column("Báo cáo cuối", "Last report", "time"),
            Column("Số báo cáo", "Reports", "int"),
        ],
    )
    for s in sites:
        for c in s.computers:
            t.rows.append(
                [c.site, c.agent_id, c.role, c.version, c.interval, c.first, c.last, c.reports]
            )
    return t


def completeness_table(ev: Evidence) -> Table:
    t = Table(
        "completeness",
        "Đầy đủ dữ liệu",
        "Data completeness",
        [
            UNIT_ID,
            Column("Tháng", "Month"),
            Column("Báo cáo dự kiến", "Reports expected", "float"),
            Column("Báo cáo nhận được", "Reports received", "int"),
            Column("Tỉ lệ đầy đủ", "Completeness", "ratio"),
            Column("Agent có báo cáo", "Agents reporting", "int"),
        ],
    )
    for s in ev.sites:
        if not s.computers:
            for month in ev.months:
                t.rows.append([s.unit.id, month, None, 0, None, 0])
            continue
        for month in ev.months:
            expected = 0.0
            received = 0
            agents = 0
            for c in s.computers:
                span = c.month_span.get(month)
                if span is None:
                    continue
                agents += 1
                received += c.month_reports.get(month, 0)
                expected += (span[1] - span[0]) / c.interval + 1
            t.rows.append(
                [
                    s.unit.id,
                    month,
                    round(expected, 1) if agents else None,
                    received,
                    min(1.0, received / expected) if expected >= 1 else None,
                    agents,
                ]
            )
    return t


def declarations_table(declarations: Sequence[Declaration]) -> Table:
    t = Table(
        "declarations",
        "Kê khai",
        "Declarations",
        [
            UNIT_ID,
            UNIT_NAME,
            Column("Kỳ", "Period"),
            Column("Nội dung", "Key"),
            Column("Giá trị", "Value"),
            Column("Người kê khai", "Declared by"),
            Column("Thời điểm", "Declared at", "time"),
            Column("Tệp đính kèm", "Attachment"),
            Column("SHA-256 tệp", "Attachment SHA-256"),
        ],
    )
    for d in declarations:
        t.rows.append(
            [
                d.unit_id,
                d.unit_name,
                d.period,
                d.key,
                d.value,
                d.declared_by,
                d.declared_at,
                d.attachment_name or "",
                d.attachment_sha256 or "",
            ]
        )
    return t


def findings_table(ev: Evidence) -> Table:
    t = Table(
        "findings",
        "Phát hiện",
        "Findings",
        [
            Column("Quy tắc", "Rule"),
            Column("Đơn vị", "Unit"),
            Column("Đối tượng", "Subject"),
            Column("Nội dung", "Finding"),
            Column("Finding (English)", "Finding (English)"),
            Column("Giá trị", "Value", "float"),
            Column("Ngưỡng", "Threshold", "float"),
        ],
    )
    for f in ev.findings:
        t.rows.append([f.rule, f.unit, f.subject, f.text_vi, f.text_en, f.value, f.threshold])
    return t


def rules_table(ev: Evidence) -> Table:
    t = Table(
        "rules",
        "Quy định áp dụng",
        "Rules applied",
        [
            Column("Mã quy tắc", "Rule id"),
            Column("Yêu cầu", "Requirement"),
            Column("Requirement (English)", "Requirement (English)"),
            Column("Bằng chứng", "Evidence fact"),
            Column("Ngưỡng", "Threshold", "float"),
            Column("Giá trị đo", "Measured", "float"),
            Column("Độ phủ dữ liệu", "Coverage", "ratio"),
            Column("Kết quả", "Result"),
            Column("Căn cứ pháp lý", "Legal basis"),
        ],
    )
    for r in ev.rules:
        result = NO_DATA if r.met is None else STATUS["met" if r.met else "missed"]
        t.rows.append(
            [
                r.rule_id,
                r.text_vi,
                r.text_en,
                r.fact,
                r.threshold,
                r.value,
                r.coverage,
                result,
                r.basis,
            ]
        )
    return t


# -- PDF ---------------------------------------------------------------------------------

MAX_PDF_FINDINGS: Final = 300


def pdf_report(
    ev: Evidence,
    tables_: Sequence[Table],
    unit_name: str,
    by: str,
    tz: ZoneInfo,
    declarations: Sequence[Declaration] = (),
) -> bytes:
    """The PDF a person reads: title page, summary, charts, findings, rules."""
    title = "BÁO CÁO BẰNG CHỨNG AN TOÀN THÔNG TIN"
    doc = Pdf(f"{title} – {unit_name} – {ev.period.title_vi}", by)
    generated = dt.datetime.fromtimestamp(ev.generated_at, tz).strftime("%d/%m/%Y %H:%M")
    doc.title_page(
        title,
        "Security evidence report",
        [
            ("Đơn vị / Unit:", unit_name),
            ("Kỳ báo cáo / Period:", f"{ev.period.title_vi} ({ev.period.title_en})"),
            (
                "Từ ngày – đến ngày:",
                f"{ev.period.start:%d/%m/%Y} – {ev.period.last_day:%d/%m/%Y}",
            ),
            ("Lập lúc / Generated at:", f"{generated} ({tz.key})"),
            ("Người lập / By:", by),
            (
                "Khung quy định / Rules:",
                f"{ev.rules_file.data.title} ({ev.rules_file.data.framework})",
            ),
        ],
    )
    doc.page()
    doc.heading("1. Tóm tắt / Summary")
    computers = sum(len(s.computers) for s in ev.sites)
    discovered = sum(len(s.discovered) for s in ev.sites)
    reporting = sum(1 for s in ev.sites if s.reports)
    summary = [
        ("Số đơn vị / Units", str(len(ev.sites))),
        ("Đơn vị có dữ liệu / Units with data", f"{reporting} ({_pct(reporting, len(ev.sites))})"),
        ("Máy tính có agent / Computers with agent", str(computers)),
        ("Máy tính phát hiện thêm / Discovered computers", str(discovered)),
        ("Số báo cáo / Reports", str(sum(s.reports for s in ev.sites))),
        ("Số phát hiện / Findings", str(len(ev.findings))),
    ]
    doc.table(["Nội dung / Item", "Giá trị / Value"], summary, widths=(110, 70))
    doc.heading("2. Kết quả theo quy định / Rules")
    doc.table(
        ["Yêu cầu / Requirement", "Giá trị / Measured", "Độ phủ / Coverage", "Kết quả / Result"],
        [
            (
                r.text_vi,
                text(r.value, "float" if r.fact in AT_MOST else "ratio", tz),
                text(r.coverage, "ratio", tz),
                NO_DATA if r.met is None else STATUS["met" if r.met else "missed"],
            )
            for r in ev.rules
        ],
        widths=(80, 35, 30, 35),
    )
    if ev.goals:
        doc.heading("3. Chỉ tiêu kế hoạch / Plan goals")
        doc.table(
            [
                "Chỉ tiêu / Indicator",
                "Cấp / Level",
                "Mục tiêu / Goal",
                "Đo được / Measured",
                "Độ phủ / Coverage",
                "Kết quả / Status",
            ],
            [
                (
                    INDICATOR_VI.get(g.goal.indicator, g.goal.indicator),
                    g.goal.level,
                    text(per_official(g.goal.indicator, g.goal.goal), "ratio", tz),
                    text(per_official(g.goal.indicator, g.measured), "ratio", tz),
                    text(g.coverage, "ratio", tz),
                    STATUS[g.status],
                )
                for g in ev.goals
            ],
            widths=(50, 22, 25, 28, 25, 30),
        )
    doc.page()
    doc.heading("4. Kết nối theo tháng / Monthly connectivity")
    monthly = ev.monthly_connectivity()
    series = [
        (
            NETWORK_VI[network],
            [
                (m[1] / m[0]) if (m := monthly[network].get(month)) and m[0] else None
                for month in ev.months
            ],
        )
        for network in ("lan", "wan", "dedicated", "internet")
        if network in monthly
    ]
    if series:
        doc.image(line_chart("Tỉ lệ thời gian có kết nối / share of time up", ev.months, series))
    else:
        doc.paragraph(f"Kết nối: {NO_DATA}")
    doc.heading("5. Phòng chống mã độc theo tháng / Monthly protection")
    protection = ev.monthly_protection()
    values = [
        (p / (p + u))
        if (p_u := protection.get(month)) and ((p := p_u[0]) + (u := p_u[1]))
        else None
        for month in ev.months
    ]
    if any(v is not None for v in values):
        doc.image(
            line_chart(
                "Tỉ lệ ngày-máy được bảo vệ / share of computer-days protected",
                ev.months,
                [("Được bảo vệ / protected", values)],
            )
        )
    else:
        doc.paragraph(f"Phòng chống mã độc: {NO_DATA}")
    doc.page()
    doc.heading("6. Phát hiện / Findings")
    if not ev.findings:
        doc.paragraph("Không có phát hiện nào / no findings.")
    else:
        rows = [(f.unit, f.subject, f.text_vi) for f in ev.findings[:MAX_PDF_FINDINGS]]
        doc.table(["Đơn vị / Unit", "Đối tượng / Subject", "Nội dung / Finding"], rows,
                  widths=(45, 50, 85))  # fmt: skip
        if len(ev.findings) > MAX_PDF_FINDINGS:
            doc.paragraph(
                f"... và {len(ev.findings) - MAX_PDF_FINDINGS} phát hiện khác trong tệp Excel"
                f" / and {len(ev.findings) - MAX_PDF_FINDINGS} more in the workbook."
            )
    doc.heading("7. Kê khai / Declarations")
    if not declarations:
        doc.paragraph(NO_DATA)
    else:
        doc.table(
            ["Đơn vị / Unit", "Nội dung / Key", "Giá trị / Value", "Người kê khai / By"],
            [(d.unit_name, d.key, d.value, d.declared_by) for d in declarations],
            widths=(45, 40, 60, 35),
        )
    doc.heading("8. Căn cứ pháp lý / Legal basis")
    for basis in ev.rules_file.data.legal_basis:
        line = f"{basis.document} ({basis.document_en})"
        if basis.number:
            line += f", số {basis.number}"
        if basis.date:
            line += f", ngày {basis.date:%d/%m/%Y}"
        if not basis.confirmed:
            line += " — cần đối chiếu văn bản gốc / to confirm"
        doc.paragraph(line)
    doc.paragraph(
        "Những gì không agent nào đo được ghi là “không có dữ liệu”, không bao giờ tính là đạt."
        " / What no agent measured says “no data” and never counts as compliance."
        f" Các bảng đầy đủ: evidence.xlsx và thư mục csv/ ({len(tables_)} bảng / tables)."
    )
    return doc.output()


def _pct(part: int, whole: int) -> str:
    return f"{part / whole * 100:.1f} %" if whole else NO_DATA

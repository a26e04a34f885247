"""The readable form of a report, for the person at the office PC running ``check``.

Vietnamese first, English after a slash, so a commune's IT officer and a provincial
engineer read the same screen. Pure functions from a ``Report`` to text: the JSON is
the contract, this is its rendering and may change freely.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Final

from agent.addresses import has_global_ipv6
from agent.report import (
    NETWORK_CLASSES,
    AntivirusStatus,
    AvState,
    ErrorReason,
    FirewallStatus,
    HostInventory,
    LanHosts,
    NetworkClass,
    NetworkStatus,
    PatchStatus,
    ProbeResult,
    Report,
    SnmpDevice,
    ThroughputResult,
)

NETWORK_LABELS: Final[Mapping[NetworkClass, str]] = {
    "lan": "LAN",
    "wan": "WAN",
    "dedicated": "Mạng chuyên dùng / Dedicated",
    "internet": "Internet",
}
OK_TEXT: Final = "ĐẠT / OK"
FAIL_TEXT: Final = "LỖI / FAIL"
NOT_CONFIGURED: Final = "chưa cấu hình / not configured"
NOT_COLLECTED: Final = "không thu thập được / not collected"
REASONS: Final[Mapping[ErrorReason, str]] = {
    "timeout": "hết thời gian chờ / timeout",
    "refused": "bị từ chối / refused",
    "unreachable": "không tới được / unreachable",
    "dns_error": "lỗi DNS / DNS error",
    "tls_error": "lỗi TLS / TLS error",
    "http_status": "mã HTTP sai / HTTP status",
    "protocol_error": "sai giao thức / protocol error",
    "permission_denied": "không đủ quyền / permission denied",
    "network_error": "lỗi mạng / network error",
    "internal_error": "lỗi nội bộ / internal error",
}
AV_STATE_LABELS: Final[Mapping[AvState, str]] = {
    "protected": "được bảo vệ / protected",
    "outdated": "chữ ký cũ / outdated",
    "disabled": "đang tắt / disabled",
    "missing": "chưa cài / missing",
    "unknown": "không rõ / unknown",
}
HEADERS: Final = (
    "Mạng / Network",
    "Đích / Target",
    "Kiểu / Kind",
    "Kết quả / Result",
    "RTT ms",
    "Mất gói / Loss",
    "Cách đo / Method",
    "Lý do / Reason",
)
_DASH: Final = "—"
_DETAIL_MAX: Final = 160


def width(text: str) -> int:
    """Terminal columns of ``text`` (combining marks take none, wide characters two)."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in unicodedata.normalize("NFC", text)
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; trailing blanks trimmed."""
    widths = [max(width(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, ["-" * w for w in widths], *rows]:
        cells = [cell + " " * (widths[i] - width(cell)) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def reason(result: ProbeResult) -> str:
    """The failure reason in both languages, with the probe's own detail."""
    parts = []
    if result.error:
        parts.append(REASONS.get(result.error, result.error))
    if result.detail:
        detail = " ".join(result.detail.split())
        parts.append(detail if len(detail) <= _DETAIL_MAX else detail[: _DETAIL_MAX - 1] + "…")
    return ": ".join(parts)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return _DASH
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 1 else f"{ms:.1f}" if ms < 10_000 else f"{ms:.0f}"


def _percent(ratio: float | None) -> str:
    if ratio is None:
        return _DASH
    return f"{ratio * 100:.0f} %"


def _verdict(status: NetworkStatus) -> str:
    if not status.configured:
        return NOT_CONFIGURED
    return OK_TEXT if status.up else FAIL_TEXT


def network_rows(report: Report) -> list[list[str]]:
    """One row per network class and target."""
    rows: list[list[str]] = []
    for network in NETWORK_CLASSES:
        status = report.networks.get(network)
        label = NETWORK_LABELS[network]
        if not status.configured or not status.targets:
            why = "" if not status.configured else "không có đích / no targets"
            rows.append([label, _DASH, _DASH, _verdict(status), _DASH, _DASH, "", why])
            continue
        for i, result in enumerate(status.targets):
            rows.append(
                [
                    label if i == 0 else "",
                    result.target,
                    result.kind + (" (IPv6)" if result.family == "ipv6" else ""),
                    OK_TEXT if result.up else FAIL_TEXT,
                    _ms(result.rtt_seconds),
                    _percent(result.loss_ratio),
                    result.method or "",
                    reason(result),
                ]
            )
    return rows


def network_summary(report: Report) -> list[str]:
    """Each class's verdict, which is what the province counts (rule any/all applied)."""
    lines = []
    for network in NETWORK_CLASSES:
        status = report.networks.get(network)
        line = f"  {NETWORK_LABELS[network]}: {_verdict(status)}"
        if status.configured and status.targets:
            ok = sum(1 for t in status.targets if t.up)
            line += (
                f" ({ok}/{len(status.targets)} đích đạt / targets OK, "
                f"quy tắc / rule: {status.rule or 'any'})"
            )
        lines.append(line)
    return lines


def _bytes(count: int | None) -> str:
    if count is None:
        return _DASH
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"  # unreachable: the loop returns at TiB


def _when(moment: dt.datetime | None) -> str:
    if moment is None:
        return _DASH
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fields(pairs: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    label_width = max(width(label) for label, _ in pairs) + 1
    return [
        f"{indent}{label}:{' ' * (label_width - width(label))} {value}".rstrip()
        for label, value in pairs
    ]


def host_lines(host: HostInventory | None) -> list[str]:
    """The inventory summary."""
    lines = ["Máy tính / Computer"]
    if host is None:
        return [*lines, f"  {NOT_COLLECTED}"]
    os_parts = [p for p in (host.os, host.os_release, host.os_version) if p]
    os_text = ", ".join(dict.fromkeys(os_parts))
    if host.architecture:
        os_text += f" ({host.architecture})"
    cpu = " × ".join(str(p) for p in (host.cpu_count, host.cpu_model) if p is not None)
    disks = ", ".join(
        f"{d.mountpoint} {_bytes(d.total_bytes)}"
        + (f" ({d.used_bytes * 100 // d.total_bytes} % đã dùng / used)" if d.total_bytes else "")
        for d in host.disks
    )
    nics = []
    for nic in host.interfaces:
        state = "up" if nic.is_up else "down" if nic.is_up is False else "?"
        speed = f", {nic.speed_mbps} Mb/s" if nic.speed_mbps else ""
        parts = [nic.name, nic.mac or "", *nic.ipv4, f"({state}{speed})"]
        nics.append(" ".join(p for p in parts if p))
    v6 = [a for nic in host.interfaces for a in nic.ipv6]
    ipv6 = (
        "có địa chỉ toàn cầu / global address"
        if has_global_ipv6(v6)
        else "không có địa chỉ toàn cầu / no global address"
    )
    pairs = [
        ("Tên máy / Hostname", host.hostname),
        ("Hệ điều hành / OS", os_text),
        ("CPU", cpu or _DASH),
        ("Bộ nhớ / Memory", _bytes(host.memory_bytes)),
        ("Ổ đĩa / Disks", disks or _DASH),
        ("Card mạng / Interfaces", "; ".join(nics) or _DASH),
        ("IPv6", ipv6),
        ("Khởi động / Booted", _when(host.boot_time)),
        ("Phiên bản / Agent", f"hatang-agent {host.agent_version}, Python {host.python_version}"),
    ]
    if host.error:
        pairs.append(("Lỗi / Error", host.error))
    return lines + _fields(pairs)


def _days(seconds: float | None) -> str:
    if seconds is None:
        return ""
    days = seconds / 86400
    return f"chữ ký {days:.1f} ngày / signatures {days:.1f} days old"


def security_lines(antivirus: AntivirusStatus | None, firewall: FirewallStatus | None) -> list[str]:
    """Antivirus products with state and signature age; the firewall."""
    lines = ["Bảo mật / Security"]
    if antivirus is None:
        lines.append(f"  Diệt virus / Antivirus: {NOT_COLLECTED}")
    else:
        lines.append(f"  Diệt virus / Antivirus: {AV_STATE_LABELS[antivirus.state]}")
        for product in antivirus.products:
            facts = [AV_STATE_LABELS[product.state]]
            if product.enabled is False and product.state not in ("disabled", "missing"):
                facts.append("đang tắt / disabled")
            if age := _days(product.signature_age_seconds):
                facts.append(age)
            if product.signature_version:
                facts.append(f"version {product.signature_version}")
            lines.append(f"    - {product.name} ({product.source}): {', '.join(facts)}")
        if antivirus.error:
            lines.append(f"    Lỗi / Error: {antivirus.error}")
        managed = {True: "có / yes", False: "không / no", None: "không rõ / unknown"}
        agents = ", ".join(
            dict.fromkeys(p.management_agent for p in antivirus.products if p.management_agent)
        )
        contact = antivirus.last_console_contact_at
        facts = [
            f for f in (agents, f"liên lạc / contact {_when(contact)}" if contact else "") if f
        ]
        suffix = f" ({'; '.join(facts)})" if facts else ""
        lines.append(
            f"  Quản lý tập trung / Centrally managed: {managed[antivirus.managed]}{suffix}"
        )
    if firewall is None:
        lines.append(f"  Tường lửa / Firewall: {NOT_COLLECTED}")
    else:
        state = {True: "bật / on", False: "tắt / off", None: "không rõ / unknown"}[firewall.enabled]
        source = f" ({firewall.source})" if firewall.source else ""
        lines.append(f"  Tường lửa / Firewall: {state}{source}")
        for profile in firewall.profiles:
            on = {True: "bật / on", False: "tắt / off", None: "?"}[profile.enabled]
            now = " (đang dùng / active)" if profile.active else ""
            lines.append(f"    - {profile.name}: {on}{now}")
        if firewall.error:
            lines.append(f"    Lỗi / Error: {firewall.error}")
    return lines


def _snmp_line(device: SnmpDevice) -> str:
    name = f"{device.sys_name} ({device.address})" if device.sys_name else device.address
    if not device.up:
        return f"    - {name}: {FAIL_TEXT}" + (f": {device.error}" if device.error else "")
    facts = [OK_TEXT, f"{len(device.interfaces)} cổng / interfaces"]
    if device.arp_entries is not None:
        facts.append(f"{device.arp_entries} ARP")
    return f"    - {name}: {', '.join(facts)}"


def lan_lines(lan: LanHosts | None, snmp: Sequence[SnmpDevice] | None) -> list[str]:
    """Site probe: LAN hosts by source and polled devices."""
    lines = ["Mạng LAN của đơn vị / Office LAN (máy dò / site probe)"]
    if lan is None:
        lines.append(f"  Dò tìm / Discovery: {NOT_COLLECTED}")
    else:
        c = lan.counts
        pairs = [
            ("Số máy / Hosts", f"{c.total} (máy tính / computers: {c.computers})"),
            ("Theo nguồn / By source", f"ARP {c.arp} · SNMP {c.snmp} · agent {c.agent}"),
        ]
        if lan.subnets:
            pairs.append(("Dải mạng / Subnets", ", ".join(lan.subnets)))
        if lan.error:
            pairs.append(("Lỗi / Error", lan.error))
        lines += _fields(pairs)
    if snmp:
        lines.append("  Thiết bị SNMP / SNMP devices:")
        lines += [_snmp_line(device) for device in snmp]
    return lines


def _rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second * 8 / 1_000_000:.1f} Mbit/s"


def throughput_lines(results: Sequence[ThroughputResult] | None, cost: str) -> list[str]:
    """The line-speed tests and what they cost in data per month."""
    lines = [f"Tốc độ đường truyền / Line speed (dung lượng / data: {cost})"]
    if results is None:
        return [*lines, f"  {NOT_COLLECTED}"]
    for r in results:
        where = f"{NETWORK_LABELS[r.network]}: {r.target}"
        used = f"{(r.bytes_read or 0) / 1_000_000:.1f} MB"
        if r.skipped:
            lines.append(f"  - {where}: bỏ qua / skipped ({r.detail})")
        elif r.up and r.bytes_per_second is not None:
            lines.append(
                f"  - {where}: {OK_TEXT} {_rate(r.bytes_per_second)}, {used} "
                f"trong / in {r.duration_seconds or 0:.1f}s ({r.ended_by})"
            )
        else:
            reason = REASONS[r.error] if r.error is not None else "?"
            lines.append(f"  - {where}: {FAIL_TEXT} {reason}: {r.detail}")
    return lines


def patch_lines(patches: PatchStatus | None) -> list[str]:
    """Patch currency: last update installed, pending updates, pending reboot."""
    lines = ["Cập nhật bản vá / Patches"]
    if patches is None:
        return [*lines, f"  {NOT_COLLECTED}"]
    unknown = "không rõ / unknown"
    reboot = {True: "có / yes", False: "không / no", None: "không rõ / unknown"}
    pending = unknown if patches.pending_updates is None else str(patches.pending_updates)
    security = patches.pending_security_updates
    security_text = unknown if security is None else str(security)
    pairs = [
        ("Cài lần cuối / Last installed", f"{_when(patches.last_installed_at)} ({patches.source})"),
        ("Chờ cài / Pending", f"{pending} (bảo mật / security: {security_text})"),
        ("Chờ khởi động lại / Reboot pending", reboot[patches.reboot_pending]),
    ]
    if patches.recent:
        pairs.append(("Gần đây / Recent", ", ".join(patches.recent[:5])))
    if patches.error:
        pairs.append(("Lỗi / Error", patches.error))
    return lines + _fields(pairs)


def render_report(
    report: Report, *, networks_ran: bool = True, throughput_cost: str | None = None
) -> str:
    """The whole check result as text (``networks_ran`` False: the checks crashed)."""
    role = "máy dò / site probe" if report.role == "site-probe" else "máy trạm / host"
    lines = [
        f"hatang-agent {report.agent_version} · đơn vị / site: {report.site} · "
        f"vai trò / role: {role} · {_when(report.observed_at)}",
        "",
        "Kết nối mạng / Network connectivity",
    ]
    if networks_ran:
        lines += [
            *table(HEADERS, network_rows(report)),
            "",
            "Kết luận / Verdict",
            *network_summary(report),
        ]
    else:
        lines.append(f"  {FAIL_TEXT}: không chạy được / did not run (xem log / see the log)")
    lines += [
        "",
        *host_lines(report.host),
        "",
        *security_lines(report.antivirus, report.firewall),
        "",
        *patch_lines(report.patches),
    ]
    if report.role == "site-probe":
        lines += ["", *lan_lines(report.lan_hosts, report.snmp)]
    if throughput_cost is not None:
        lines += ["", *throughput_lines(report.throughput, throughput_cost)]
    if report.spool_dropped:
        lines += ["", f"Báo cáo bị bỏ / Reports dropped (spool full): {report.spool_dropped}"]
    return "\n".join(lines) + "\n"

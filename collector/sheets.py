"""What ``enroll-code`` and ``agents`` print and write: codes for one site, the code sheet
(CSV and XLSX) the IT centre prints and sends to the communes, and the agent list.

The sheet holds live codes, so it is written owner-only; the CSV is UTF-8 with a BOM
(Excel on a Vietnamese Windows then shows the diacritics) in RFC 4180 form (``csv``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from agent.units import Duration
from collector.config import CollectorConfig
from collector.enroll import expiry_text, make_codes
from collector.org import Org
from collector.store import EnrollCode, EnrolledAgent, redeem_refusal

MAX_USES: Final = 10_000
MAX_EXPIRY: Final = 366 * 86400.0
HEADER: Final = (
    "Mã đơn vị / Site id",
    "Tên đơn vị / Unit name",
    "Cấp / Level",
    "Mã đăng ký / Enrollment code",
    "Số máy / Uses",
    "Hết hạn / Expires (UTC)",
)


def _fail(message: str) -> int:
    sys.stderr.write(f"hatang-collector: {message}\n")
    return 2


def _expiry(text: str) -> float | str:
    """Seconds, or the error text naming --expires."""
    try:
        seconds = float(Duration.parse(text))
    except ValueError as exc:
        return f"--expires: {exc}"
    if not 60 <= seconds <= MAX_EXPIRY:
        return f"--expires: {text!r} must be between 1m and 366d"
    return seconds


async def create_codes(config: CollectorConfig, org: Org, args: argparse.Namespace) -> int:
    """``enroll-code create``: 0 done, 2 a bad option (named), 1 the store failed."""
    from collector.app import make_store

    expires = _expiry(args.expires)
    if isinstance(expires, str):
        return _fail(expires)
    if not 1 <= args.uses <= MAX_USES:
        return _fail(f"--uses: {args.uses} must be between 1 and {MAX_USES}")
    if args.site is not None:
        if args.site not in org:
            return _fail(f"--site: unknown site {args.site!r}: not a unit in {config.org}")
        sites = [args.site]
    elif args.level is not None:
        sites = [u.id for u in org.of_level(args.level)]
        if not sites:
            return _fail(f"--level: no unit of level {args.level!r} in {config.org}")
    else:
        sites = [u.id for u in org.units]
    out = Path(args.out)
    if args.site is None and not os.path.isdir(out):  # noqa: ASYNC240 - one stat
        return _fail(f"--out: {out} is not a directory")
    store = make_store(config)
    await store.open()
    try:
        taken = {c.code_id for c in await store.list_enroll_codes()}
        made = make_codes(sites, args.uses, expires, taken, args.note)
        await store.add_enroll_codes([record for record, _ in made])
    finally:
        await store.close()
    if args.site is not None:
        record, code = made[0]
        unit = org.get(record.site)
        name = unit.name if unit is not None else record.site
        sys.stdout.write(
            f"mã đăng ký cho / enrollment code for {record.site} ({name}): "
            f"{record.max_uses} máy / uses, hết hạn / expires {expiry_text(record.expires_at)}\n"
        )
        sys.stdout.write(f"{code}\n")
        return 0
    rows = []
    for record, code in made:
        unit = org.get(record.site)
        assert unit is not None
        rows.append(
            (unit.id, unit.name, unit.level, code, record.max_uses, expiry_text(record.expires_at))
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    stem = f"enroll-codes-{org.province}-{args.level or 'all'}-{stamp}"
    csv_path, xlsx_path = out / f"{stem}.csv", out / f"{stem}.xlsx"
    write_csv(csv_path, rows)
    write_xlsx(xlsx_path, rows, org)
    sys.stdout.write(f"{len(rows)} mã đăng ký / enrollment codes written:\n")
    sys.stdout.write(f"{xlsx_path}\n")
    sys.stdout.write(f"{csv_path}\n")
    return 0


def _private(path: Path) -> int:
    """Open a new file owner-only (the sheet holds live codes)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def write_csv(path: Path, rows: Sequence[Sequence[Any]]) -> None:
    """The sheet as CSV: UTF-8 with BOM, RFC 4180 (CRLF, quoted as needed)."""
    with open(_private(path), "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(rows)


def write_xlsx(path: Path, rows: Sequence[Sequence[Any]], org: Org) -> None:
    """The sheet as XLSX (openpyxl): a header row, the codes in a monospace font."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Mã đăng ký"
    sheet.append(list(HEADER))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append(list(row))
    for cell in sheet["D"][1:]:
        cell.font = Font(name="Consolas", size=12)
    for column, width in zip("ABCDEF", (34, 34, 10, 24, 8, 22), strict=True):
        sheet.column_dimensions[column].width = width
    sheet.freeze_panes = "A2"
    book.properties.title = f"hatang: mã đăng ký tác tử — {org.name}"
    with open(_private(path), "wb") as handle:
        book.save(handle)


def _utc(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _code_state(code: EnrollCode, now: float) -> str:
    outcome = redeem_refusal(code, now)
    return "active" if outcome == "ok" else outcome


def print_codes(codes: Sequence[EnrollCode], as_json: bool) -> int:
    """``enroll-code list``: ids, sites, uses, failures, state (never a code)."""
    now = dt.datetime.now(dt.UTC).timestamp()
    items = [
        {
            "code_id": c.code_id,
            "site": c.site,
            "uses": c.uses,
            "max_uses": c.max_uses,
            "failures": c.failures,
            "state": _code_state(c, now),
            "created": _utc(c.created_at),
            "expires": _utc(c.expires_at),
            "note": c.note,
        }
        for c in codes
    ]
    if _json_lines(items, as_json):
        return 0
    header = ("CODE ID", "SITE", "USES", "FAILURES", "STATE", "EXPIRES", "NOTE")
    table = [
        (
            str(i["code_id"]),
            str(i["site"]),
            f"{i['uses']}/{i['max_uses']}",
            str(i["failures"]),
            str(i["state"]),
            str(i["expires"]),
            str(i["note"] or ""),
        )
        for i in items
    ]
    _table(header, table)
    return 0


def print_agents(agents: Sequence[EnrolledAgent], as_json: bool) -> int:
    """``agents list``: who, where, last report, central config in use and last error."""
    items = [
        {
            "agent_id": a.agent_id,
            "site": a.site,
            "hostname": a.hostname,
            "role": a.role,
            "version": a.agent_version,
            "enrolled": _utc(a.enrolled_at),
            "revoked": _utc(a.revoked_at),
            "last_report": _utc(a.last_report_at),
            "config_version": a.config_version,
            "config_error": a.config_error,
            "config_rejected": a.config_rejected,
        }
        for a in agents
    ]
    if _json_lines(items, as_json):
        return 0
    header = ("AGENT ID", "SITE", "HOSTNAME", "ROLE", "VERSION", "LAST REPORT", "CONFIG", "ERROR")
    table = [
        (
            str(i["agent_id"]) + (" (revoked)" if i["revoked"] else ""),
            str(i["site"]),
            str(i["hostname"]),
            str(i["role"]),
            str(i["version"]),
            str(i["last_report"] or "-"),
            str(i["config_version"] or "-"),
            str(i["config_error"] or "")[:80],
        )
        for i in items
    ]
    _table(header, table)
    return 0


def _json_lines(items: Sequence[dict[str, Any]], as_json: bool) -> bool:
    """Print one JSON object per line when ``as_json``; whether it did."""
    if as_json:
        for item in items:
            sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
    return as_json


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        cells = (x.ljust(w) for x, w in zip(line, widths, strict=True))
        sys.stdout.write("  ".join(cells).rstrip() + "\n")

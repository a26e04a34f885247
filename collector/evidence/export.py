"""``hatang-collector evidence export``: compute, render, sign and write one bundle."""

from __future__ import annotations

import datetime as dt
import getpass
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent import __version__
from collector import declarations
from collector.compliance import DEFAULT_DIR, Rules, in_force, load_all
from collector.config import DEFAULT_SIGNING_KEY, CollectorConfig
from collector.declarations import attachment, declarations_for, display
from collector.evidence.bundle import (
    EvidenceError,
    bundle_name,
    load_or_create_key,
    sha256_file,
    write_bundle,
)
from collector.evidence.compute import Evidence, compute
from collector.evidence.render import write_csv, write_xlsx
from collector.evidence.tables import Declaration, pdf_report, tables
from collector.org import Org, Unit, load_org
from collector.period import Period, PeriodError
from collector.store import Store
from collector.targets import Plan, load_targets


@dataclass(frozen=True, slots=True)
class Inputs:
    """What an export or report reads besides the store, validated before any work."""

    period: Period
    org: Org
    plans: list[Plan]
    rules: Rules
    unit: Unit | None
    tz: ZoneInfo


def inputs(config: CollectorConfig, period_text: str, unit_id: str | None) -> Inputs:
    """Parse the period, load org, targets and rules; EvidenceError names the problem."""
    try:
        period = config.reporting.period(period_text)
    except PeriodError as exc:
        raise EvidenceError(f"--period: {exc}") from None
    org = load_org(config.org)
    unit = None
    if unit_id is not None:
        unit = org.get(unit_id)
        if unit is None:
            raise EvidenceError(f"--unit: unknown unit {unit_id!r}: not a unit in {config.org}")
    plans = load_targets(config.targets)
    rules = in_force(load_all(config.evidence.compliance or DEFAULT_DIR), period.last_day)
    return Inputs(period, org, plans, rules, unit, ZoneInfo(config.reporting.timezone))


async def _declarations(
    store: Store, org: Org, units: Sequence[Unit], period: Period
) -> tuple[list[Declaration], dict[str, bytes]]:
    """The declarations in force of ``units`` whose period overlaps ``period``, and their
    attached files (name → bytes): what no agent can see, as the units declared it."""
    rows = await declarations_for(store, org, [unit.id for unit in units], period)
    files: dict[str, bytes] = {}
    listed: list[Declaration] = []
    for row in rows:
        if row.attachment_sha256 and row.attachment_name:
            files[row.attachment_name] = await attachment(store, row.attachment_sha256)
        listed.append(
            Declaration(
                unit_id=row.unit,
                unit_name=row.unit_name,
                period=row.period,
                key=row.key,
                value=display(row.key, row.value),
                declared_by=row.declared_by,
                declared_at=row.declared_at.timestamp(),
                attachment_name=row.attachment_name,
                attachment_sha256=row.attachment_sha256,
            )
        )
    return listed, files


def progress_printer(enabled: bool) -> Callable[[int, int, str], None] | None:
    """Progress on a terminal (stderr), nothing when piped."""
    if not enabled:
        return None

    def show(done: int, total: int, unit: str) -> None:
        end = "\n" if done >= total else ""
        sys.stderr.write(f"\r\x1b[K[{done}/{total}] {unit[:60]}{end}")
        sys.stderr.flush()

    return show


async def evidence_of(
    config: CollectorConfig,
    store: Store,
    given: Inputs,
    now: float,
    progress: Callable[[int, int, str], None] | None = None,
    period: Period | None = None,
) -> Evidence:
    """The computed evidence of ``period`` (default: the inputs' period), with the officials
    the units declared in force on its last instant."""
    span = period or given.period
    declared = declarations.in_force(
        await store.declarations(span.start_ts, span.end_ts, None), span.end_ts - 1
    )
    officials = {
        unit: value
        for unit, facts in declared.items()
        if isinstance(value := facts.get("officials"), int)
    }
    return await compute(
        store,
        given.org,
        given.plans,
        given.rules,
        period or given.period,
        given.unit.id if given.unit else None,
        up_ratio=config.window.up_ratio,
        gap_intervals=config.site_up_after_intervals,
        now=now,
        progress=progress,
        officials=officials,
    )


def _hashed(path: str) -> dict[str, str]:
    return {"file": Path(path).name, "sha256": sha256_file(path)}


async def export(
    config: CollectorConfig,
    store: Store,
    given: Inputs,
    out_dir: Path,
    by: str | None,
    *,
    now: dt.datetime | None = None,
    note: Callable[[str], None] = lambda text: None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Write one bundle into ``out_dir``; return its path. ``note`` hears what a person
    should know (a key was created, and where)."""
    moment = now or dt.datetime.now(dt.UTC)
    key_path = Path(config.evidence.signing_key or DEFAULT_SIGNING_KEY)
    key, created = load_or_create_key(key_path)
    if created:
        note(f"created the evidence signing key {key_path} (owner-only; back it up)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - CLI, before any I/O
    except OSError as exc:
        raise EvidenceError(f"--out: {out_dir}: cannot create: {exc.strerror}") from None
    ev = await evidence_of(config, store, given, moment.timestamp(), progress)
    heads = await store.chain_heads()
    declarations, attachments = await _declarations(store, given.org, ev.units, given.period)
    who = by or _os_user()
    sheets = tables(ev, declarations)
    unit_name = given.unit.name if given.unit else given.org.name
    members: list[tuple[str, bytes]] = [
        ("evidence.xlsx", write_xlsx(sheets, given.tz)),
        ("evidence.pdf", pdf_report(ev, sheets, unit_name, who, given.tz, declarations)),
        *((f"csv/{t.slug}.csv", write_csv(t, given.tz)) for t in sheets),
        *((f"attachments/{name}", data) for name, data in _safe_names(attachments)),
    ]
    rules = given.rules
    manifest: dict[str, Any] = {
        "format": "hatang-evidence-bundle",
        "format_version": 1,
        "period": {
            "name": given.period.name,
            "start": given.period.start.isoformat(),
            "end": given.period.end.isoformat(),
            "title_vi": given.period.title_vi,
            "title_en": given.period.title_en,
            "timezone": config.reporting.timezone,
        },
        "unit": {
            "id": given.unit.id if given.unit else given.org.province,
            "name": unit_name,
            "scope": "unit and everything under it" if given.unit else "province",
            "units": [u.id for u in ev.units],
        },
        "org": {**_hashed(config.org), "province": given.org.province},
        "targets": [
            {**_hashed(t), "plan": p.plan} for t, p in zip(config.targets, given.plans, strict=True)
        ],
        "compliance": {
            **_hashed(str(rules.path)),
            "framework": rules.data.framework,
            "title": rules.data.title,
            "effective_from": rules.data.effective_from.isoformat(),
            "legal_basis": [
                {
                    "id": b.id,
                    "document": b.document,
                    "document_en": b.document_en,
                    "number": b.number,
                    "article": b.article,
                    "date": b.date.isoformat() if b.date else None,
                    "confirmed": b.confirmed,
                }
                for b in rules.data.legal_basis
            ],
        },
        "chain_heads": {
            site: {"seq": seq, "head": head} for site, (seq, head) in sorted(heads.items())
        },
        "collector_version": __version__,
        "exported_at": moment.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "exported_by": who,
        "declarations": len(declarations),
        "findings": len(ev.findings),
    }
    unit_id = given.unit.id if given.unit else given.org.province
    path = out_dir / bundle_name(unit_id, given.period.name, moment.astimezone(dt.UTC))
    try:
        write_bundle(path, members, manifest, key)
    except OSError as exc:
        raise EvidenceError(f"--out: {path}: cannot write: {exc.strerror}") from None
    return path


def _safe_names(files: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """Attachment names as bundle members: ASCII letters, digits, ``._-``, unique (a
    Vietnamese name loses its diacritics: ``Quyết định 12.pdf`` → ``Quyet_dinh_12.pdf``)."""
    out: list[tuple[str, bytes]] = []
    taken: set[str] = set()
    for name, data in sorted(files.items()):
        plain = unicodedata.normalize("NFKD", name.replace("đ", "d").replace("Đ", "D"))
        plain = "".join(c for c in plain if not unicodedata.combining(c))
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", plain).strip(".") or "file"
        candidate, n = safe, 1
        while candidate in taken:
            n += 1
            candidate = f"{n}-{safe}"
        taken.add(candidate)
        out.append((candidate, data))
    return out


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"

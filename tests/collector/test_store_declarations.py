"""Declarations in the store suite, on every backend (SQLite file, throwaway PostgreSQL):
revisions with history, a re-import that stores nothing, attached files kept once by
hash, periods found by overlap, a failed declare that leaves nothing behind; and the
antivirus history the snapshot reads to tell how long a computer has been unprotected."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from typing import Any

import pytest

from agent.report import encode
from collector.declarations import in_force, newest
from collector.period import parse_period
from collector.store import NewDeclaration, Store, StoreError
from collector.store.sqlite import verify_file
from tests.collector.conftest import OTHER_SITE, SITE, StoreBackend, agent_report

YEAR = parse_period("2026")
Q3 = parse_period("2026-Q3")
SCAN = b"%PDF-1.4 quyet dinh 123/QD-STTTT\n"
SCAN_SHA = hashlib.sha256(SCAN).hexdigest()


def declared(
    key: str,
    value: str,
    *,
    unit: str = SITE,
    period: str = "2026",
    by: str = "Nguyễn Văn A",
    attachment: tuple[str, str] | None = None,
) -> NewDeclaration:
    p = parse_period(period)
    return NewDeclaration(
        unit=unit,
        period=p.name,
        period_start=p.start_ts,
        period_end=p.end_ts,
        key=key,
        value=value,
        declared_by=by,
        source='form.xlsx: sheet "Xã An Bình", row 4',
        attachment_name=attachment[0] if attachment else None,
        attachment_sha256=attachment[1] if attachment else None,
    )


async def test_a_changed_value_is_a_new_revision_and_the_same_value_stores_nothing(
    store: Store,
) -> None:
    first = [declared("officials", "40"), declared("it_staff", "2", unit=OTHER_SITE)]
    assert await store.declare(first, {}) == 2
    assert await store.declare(first, {}) == 0  # the same form again
    before = await store.digest()
    assert await store.declare([declared("officials", "40", by="someone else")], {}) == 0
    assert await store.digest() == before
    assert await store.declare([declared("officials", "42")], {}) == 1
    rows = await store.declarations(YEAR.start_ts, YEAR.end_ts)
    history = [(r.unit, r.key, r.revision, r.value) for r in rows]
    assert history == [
        (SITE, "officials", 1, "40"),
        (SITE, "officials", 2, "42"),
        (OTHER_SITE, "it_staff", 1, "2"),
    ]
    in_force_now = {(r.unit, r.key): r.value for r in newest(rows)}
    assert in_force_now == {(SITE, "officials"): "42", (OTHER_SITE, "it_staff"): "2"}
    [mine] = [r for r in rows if r.revision == 2]
    assert mine.declared_by == "Nguyễn Văn A" and mine.period == "2026"
    assert mine.source.startswith("form.xlsx")


async def test_attached_files_are_kept_once_by_hash(
    store: Store, store_backend: StoreBackend
) -> None:
    files = {SCAN_SHA: SCAN}
    one = declared("security_regulation_number", '"123/QĐ-STTTT"', attachment=("qd.pdf", SCAN_SHA))
    other = declared(
        "security_regulation_number",
        '"77/QĐ-UBND"',
        unit=OTHER_SITE,
        attachment=("same-scan.pdf", SCAN_SHA),
    )
    assert await store.declare([one], files) == 1
    assert await store.declare([other], files) == 1
    assert await store.declaration_file(SCAN_SHA) == SCAN
    assert await store.declaration_file("0" * 64) is None
    [(count,)] = await store_backend.query("SELECT COUNT(*) FROM declaration_files")
    assert count == 1
    # A new file for the same value is a new revision: the evidence changed.
    again = declared(
        "security_regulation_number", '"123/QĐ-STTTT"', attachment=("qd-v2.pdf", "f" * 64)
    )
    assert await store.declare([again], {"f" * 64: b"other scan"}) == 1


async def test_periods_are_found_by_overlap_and_the_newest_containing_now_wins(
    store: Store,
) -> None:
    await store.declare([declared("officials", "40")], {})
    await store.declare([declared("officials", "45", period="2026-Q3")], {})
    await store.declare([declared("officials", "30", period="2025")], {})
    q3 = await store.declarations(Q3.start_ts, Q3.end_ts)
    assert sorted((r.period, r.value) for r in q3) == [("2026", "40"), ("2026-Q3", "45")]
    q1 = parse_period("2026-Q1")
    assert [r.value for r in await store.declarations(q1.start_ts, q1.end_ts)] == ["40"]
    assert [r.value for r in await store.declarations(q1.start_ts, q1.end_ts, [OTHER_SITE])] == []
    everything = await store.declarations(0, 2**40)
    mid_q3 = Q3.start_ts + 86400
    assert in_force(everything, mid_q3) == {SITE: {"officials": 45}}  # the newer, quarterly
    assert in_force(everything, q1.start_ts + 86400) == {SITE: {"officials": 40}}
    assert in_force(everything, parse_period("2025").start_ts) == {SITE: {"officials": 30}}
    assert in_force(everything, parse_period("2027").start_ts) == {}


async def test_a_declare_that_fails_stores_nothing(
    store: Store, store_backend: StoreBackend
) -> None:
    """All or nothing: one row the database refuses undoes the whole call, files included."""
    await store.declare([declared("officials", "40")], {})
    before = await store.digest()
    bad = dataclasses.replace(declared("it_staff", "3"), source=None)  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await store.declare([declared("officials", "99"), bad], {SCAN_SHA: SCAN})
    assert await store.digest() == before
    assert await store.declaration_file(SCAN_SHA) is None
    [(count,)] = await store_backend.query("SELECT COUNT(*) FROM declarations")
    assert count == 1


async def test_protected_until_is_the_end_of_the_last_protected_day(store: Store) -> None:
    """Day precision in the roll-up zone (UTC+7): the last day whose last state was
    protected ends at local midnight; a computer never protected is left out."""
    day = dt.datetime(2025, 3, 10, 2, 0, tzinfo=dt.UTC)  # 09:00 on 10 March in Viet Nam
    reports = [
        agent_report(observed_at=day, antivirus="protected"),
        agent_report(observed_at=day + dt.timedelta(days=1), antivirus="protected"),
        agent_report(observed_at=day + dt.timedelta(days=2), antivirus="outdated"),
        agent_report(agent_id="pc-02", observed_at=day, antivirus="missing"),
    ]
    await store.ingest(SITE, [(r, encode(r)) for r in reports])
    until = await store.protected_until([(SITE, "pc-01"), (SITE, "pc-02"), (OTHER_SITE, "x")])
    end_of_11_march = dt.datetime(2025, 3, 12, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    assert until == {(SITE, "pc-01"): end_of_11_march.timestamp()}
    assert await store.protected_until([]) == {}


async def test_verify_tells_an_older_schema_from_something_else(
    store: Store, store_backend: StoreBackend
) -> None:
    """A store last opened by a hatang-collector before the declarations migration is not
    "not a hatang store": verify says to start serve once, which migrates it."""
    await store.close()
    for sql in (
        "DROP TABLE declaration_files",
        "DROP TABLE declarations",
        "DROP INDEX host_daily_protected",
        "DELETE FROM schema_version WHERE version >= 5",
    ):
        await store_backend.query(sql)
    check = await _verify(store_backend)
    [problem] = check.problems
    assert re.match(r"schema version \d+ is older than this hatang-collector's \(\d+\)", problem)
    assert "start `hatang-collector serve` once" in problem
    await store.open()  # what serve does first: migrate
    await store.close()
    assert (await _verify(store_backend)).problems == []
    await store_backend.query("DROP TABLE reports")
    assert (await _verify(store_backend)).problems[0].startswith("not a hatang store: missing")


async def _verify(backend: StoreBackend) -> Any:
    if backend.name == "sqlite":
        return verify_file(backend.location)
    from collector.store.postgres import verify_database

    return await verify_database(backend.location)

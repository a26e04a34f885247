"""The tamper-evident history on both backends: every report chained to its site's
previous one; ``store verify`` names an altered, inserted or deleted report; old stores
get their chain at migration; two PostgreSQL writers keep one chain per site."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

import pytest

from agent.report import Report, encode
from collector.store import Store
from collector.store.postgres import PostgresStore, migrations, verify_chain_database
from collector.store.sqlite import verify_chain_file
from tests.collector.conftest import (
    OTHER_SITE,
    SITE,
    StoreBackend,
    agent_report,
    run_cli,
    write_config,
)


def later_migrations_undone() -> list[str]:
    """DROP statements for what the migrations after version 4 created."""
    undo = []
    for version, _, sql in migrations():
        if version <= 4:
            continue
        undo += [
            f"DROP INDEX IF EXISTS {name}"  # an index on a table dropped before
            for name in re.findall(r"CREATE INDEX (?:IF NOT EXISTS )?(\w+)", sql)
        ]
        undo += [
            f"DROP TABLE {name}"
            for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql)
        ]
    return undo


def rows(*reports: Report) -> list[tuple[Report, bytes]]:
    return [(r, encode(r)) for r in reports]


async def chain_problems(backend: StoreBackend) -> list[str]:
    if backend.name == "sqlite":
        return verify_chain_file(backend.location)
    return await verify_chain_database(backend.location)


async def fill(store: Store) -> list[Report]:
    """Ten reports of SITE in two batches (one replayed), three of OTHER_SITE."""
    base = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    mine = [agent_report(observed_at=base + dt.timedelta(minutes=i)) for i in range(10)]
    other = [agent_report(OTHER_SITE, agent_id="pc-07", observed_at=base) for _ in range(3)]
    await store.ingest(SITE, rows(*mine[:6]))
    await store.ingest(SITE, rows(*mine[4:]))  # 4 and 5 are replays: not chained twice
    await store.ingest(OTHER_SITE, rows(*other))
    return mine


async def test_a_sound_store_has_one_chain_per_site(
    store: Store, store_backend: StoreBackend
) -> None:
    await fill(store)
    newest = await store_backend.query(
        "SELECT site, chain_seq, chain_hash FROM reports"
        " WHERE chain_seq = (SELECT MAX(chain_seq) FROM reports r WHERE r.site = reports.site)"
    )
    assert await store.chain_heads() == {site: (int(seq), head) for site, seq, head in newest}
    assert {site: int(seq) for site, seq, _ in newest} == {SITE: 10, OTHER_SITE: 3}
    assert await chain_problems(store_backend) == []


@pytest.mark.parametrize("tamper", ["edit", "insert", "delete", "delete_newest", "arrival"])
async def test_store_verify_names_the_report_that_was_tampered_with(
    store: Store, store_backend: StoreBackend, tamper: str
) -> None:
    mine = await fill(store)
    victim = mine[3].id
    if tamper == "edit":
        await store_backend.query(
            f"UPDATE reports SET body = replace(body, '\"up\":true', '\"up\":false')"
            f" WHERE id = '{victim}'"
        )
        expected = [f"report {victim} (site {SITE}, chain #4): content differs"]
    elif tamper == "arrival":
        await store_backend.query(
            f"UPDATE reports SET received_at = received_at - 86400 WHERE id = '{victim}'"
        )
        expected = [f"report {victim} (site {SITE}, chain #4): content differs"]
    elif tamper == "insert":
        await store_backend.query(
            "INSERT INTO reports (id, site, agent_id, seq, observed_at, effective_at,"
            " received_at, content_hash, body) SELECT 'forged-1', site, agent_id, seq,"
            " observed_at, effective_at, received_at, content_hash, body FROM reports"
            f" WHERE id = '{victim}'"
        )
        expected = [f"report forged-1 (site {SITE}): not in the hash chain"]
    elif tamper == "delete":
        await store_backend.query(f"DELETE FROM reports WHERE id = '{victim}'")
        expected = [f"site {SITE}: 1 report(s) missing between #3 ({mine[2].id}) and #5"]
    else:
        await store_backend.query(f"DELETE FROM reports WHERE id = '{mine[9].id}'")
        expected = [f"site {SITE}: the newest 1 report(s) after #9 ({mine[8].id}) are missing"]
    problems = await chain_problems(store_backend)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected[0]), problems


def test_store_verify_command_fails_naming_the_deleted_report(tmp_path: Path) -> None:
    from collector.store.sqlite import SQLiteStore

    config = write_config(tmp_path)
    store = SQLiteStore(tmp_path / "collector.db")

    async def go() -> list[Report]:
        await store.open()
        try:
            return await fill(store)
        finally:
            await store.close()

    mine = asyncio.run(go())
    ok = run_cli("store", "verify", "--config", str(config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    import sqlite3

    conn = sqlite3.connect(tmp_path / "collector.db")
    conn.execute("DELETE FROM reports WHERE id = ?", (mine[6].id,))
    conn.commit()
    conn.close()
    bad = run_cli("store", "verify", "--config", str(config))
    assert bad.returncode == 1
    assert "CORRUPT" in bad.stdout
    assert f"missing between #6 ({mine[5].id}) and #8 ({mine[7].id}) (deleted)" in bad.stdout


async def test_reports_stored_before_the_chain_get_one_at_migration(
    store_backend: StoreBackend,
) -> None:
    store = store_backend.make()
    await store.open()
    try:
        await fill(store)
    finally:
        await store.close()
    # What a store written before version 4 looks like: no chain at all (and nothing of
    # the migrations after it, which the collector applies again on top).
    for sql in (
        *later_migrations_undone(),
        "DROP INDEX reports_site_chain",
        "ALTER TABLE reports DROP COLUMN chain_seq",
        "ALTER TABLE reports DROP COLUMN prev_hash",
        "ALTER TABLE reports DROP COLUMN chain_hash",
        "DROP TABLE chain_heads",
        "DELETE FROM schema_version WHERE version >= 4",
    ):
        await store_backend.query(sql)
    store = store_backend.make()
    await store.open()
    try:
        assert {s: n for s, (n, _) in (await store.chain_heads()).items()} == {
            SITE: 10,
            OTHER_SITE: 3,
        }
        more = agent_report(observed_at=dt.datetime(2025, 3, 2, tzinfo=dt.UTC))
        await store.ingest(SITE, rows(more))  # appends after the migrated chain
        assert (await store.chain_heads())[SITE][0] == 11
    finally:
        await store.close()
    assert await chain_problems(store_backend) == []


@pytest.mark.postgres
async def test_two_postgres_writers_keep_one_chain_per_site(postgres_url: str) -> None:
    """Two collector replicas append to the same site at the same time: positions stay
    1..n without gaps or forks, and the chain verifies."""
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    await first.open()
    await second.open()
    try:
        reports = [agent_report(agent_id=f"pc-{i % 7}") for i in range(300)]
        batches = [rows(*reports[i : i + 10]) for i in range(0, 300, 10)]
        await asyncio.gather(
            *(first.ingest(SITE, b) for b in batches[0::2]),
            *(second.ingest(SITE, b) for b in batches[1::2]),
            *(second.ingest(SITE, b) for b in batches[0::5]),  # replays from the other one
        )
        assert (await first.chain_heads())[SITE][0] == 300
    finally:
        await first.close()
        await second.close()
    assert await verify_chain_database(postgres_url) == []

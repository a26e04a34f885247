"""``hatang-collector store verify`` recomputes what it claims to check (issue 10 item 8).

One flipped byte inside a stored report body leaves SQLite's page structure sound, so
``PRAGMA integrity_check`` passes; only the body's SHA-256 against its stored
``content_hash`` tells. Verify recomputes it for every body, on both backends, and names
the altered report ids.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from agent.report import encode
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import SITE, StoreBackend, agent_report, run_cli, write_config


async def _fill(store_backend: StoreBackend, n: int = 20) -> list[str]:
    store = store_backend.make()
    await store.open()
    try:
        reports = [agent_report(hostname=f"may-{i:03d}") for i in range(n)]
        await store.ingest(SITE, [(r, encode(r)) for r in reports])
    finally:
        await store.close()
    return [r.id for r in reports]


async def test_a_flipped_byte_in_a_stored_body_is_found_and_named(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    ids = await _fill(StoreBackend("sqlite", str(db)))
    config = write_config(tmp_path)
    sound = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config))
    assert sound.returncode == 0, sound.stdout + sound.stderr

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    at = data.index(b'"hostname":"may-007"') + len(b'"hostname":"may-00')
    data[at] ^= 0x08  # "may-007" -> "may-00?": same length, pages stay sound
    db.write_bytes(bytes(data))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (altered,) = conn.execute(
            'SELECT id FROM reports WHERE body LIKE \'%"hostname":"may-00?"%\''
        ).fetchone()
    assert altered == ids[7]

    bad = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "CORRUPT" in bad.stdout
    assert altered in bad.stdout
    assert [i for i in ids if i in bad.stdout] == [altered]
    as_json = await asyncio.to_thread(run_cli, "store", "verify", "--config", str(config), "--json")
    check = json.loads(as_json.stdout)
    assert check["ok"] is False and check["altered_reports"] == [altered]
    assert db.read_bytes() == bytes(data)  # read-only


async def test_verify_names_altered_bodies_on_both_backends(store_backend: StoreBackend) -> None:
    ids = await _fill(store_backend, 5)
    # A body changed beside the store (by hand, a restore gone wrong, an attacker).
    await store_backend.query(
        f"UPDATE reports SET body = replace(body, 'may-003', 'may-333') WHERE id = '{ids[3]}'"
    )
    await store_backend.query(f"UPDATE reports SET content_hash = 'x' WHERE id = '{ids[1]}'")
    if store_backend.name == "sqlite":
        from collector.store.sqlite import verify_file

        check = await asyncio.to_thread(verify_file, store_backend.location)
    else:
        from collector.store.postgres import verify_database

        check = await verify_database(store_backend.location)
    assert not check.ok
    assert sorted(check.altered) == sorted([ids[1], ids[3]])
    assert any("2 of 5 report bodies" in p for p in check.problems), check.problems


async def test_a_sound_store_verifies_with_every_body_checked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "collector.db")
    await store.open()
    try:
        r = agent_report(hostname="Máy tính phòng kế toán")  # non-ASCII survives the check
        await store.ingest(SITE, [(r, encode(r))])
    finally:
        await store.close()
    ok = await asyncio.to_thread(
        run_cli, "store", "verify", "--config", str(write_config(tmp_path))
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 reports (every body matches its content hash)" in ok.stdout

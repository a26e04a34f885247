"""A damaged or failing store is never served as healthy (issue 10 item 3).

``serve`` runs SQLite's quick_check first and refuses a damaged database; at run time a
failed read or write (a full disk, an I/O error, a damaged page) makes ``/healthz`` answer
503 with the reason, shows in ``hatang_store_up`` / ``hatang_store_errors_total``, and
ingest answers 503 (agents keep the batch) — never 200, and nothing stored is lost.
The full disk is real: a small tmpfs mounted by the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.report import Batch, encode
from collector.store import StoreDamaged, StoreUnavailable
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import (
    SITE,
    MakeClient,
    agent_report,
    collector_config,
    new_token,
    run_cli,
    store_of,
    write_config,
)
from tests.collector.test_api import metric_value

Client = TestClient[web.Request, web.Application]


async def _damaged_store(db: Path) -> None:
    """A store with reports whose pages were then overwritten on disk."""
    store = SQLiteStore(db)
    await store.open()
    reports = [agent_report() for _ in range(300)]
    await store.ingest(SITE, [(r, encode(r)) for r in reports])
    await store.close()
    await asyncio.to_thread(_overwrite_pages, db, [r.id for r in reports])


def _overwrite_pages(db: Path, ids: list[str]) -> None:
    """Overwrite every page that holds one of the reports' ids (their rows and index
    entries), never the schema's pages, so that a store opened with start_check: off still
    opens and meets the damage at run time."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    pages = set()
    for report_id in ids:
        at = data.find(report_id.encode())
        while at != -1:
            pages.add(at // page_size)
            at = data.find(report_id.encode(), at + 1)
    pages.discard(0)  # page 1: the file header and the schema's root
    assert pages, "the reports were not found in the file"
    for page in pages:
        offset = page * page_size
        data[offset + 100 : offset + 400] = b"\xa5" * 300
    db.write_bytes(bytes(data))


async def test_a_store_whose_schema_pages_are_damaged_is_named_damaged_too(
    tmp_path: Path,
) -> None:
    """Damage where the schema lives fails the very first statement, before quick_check."""
    db = tmp_path / "collector.db"
    await _damaged_store(db)
    data = bytearray(db.read_bytes())
    for offset in range(4096, len(data) // 2, 4096):
        data[offset + 100 : offset + 400] = b"\xa5" * 300
    db.write_bytes(bytes(data))
    proc = await asyncio.to_thread(run_cli, "serve", "--config", str(write_config(tmp_path)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the database is damaged" in proc.stderr and "Traceback" not in proc.stderr


async def test_serve_refuses_a_damaged_store_with_a_message_and_exit_1(tmp_path: Path) -> None:
    await _damaged_store(tmp_path / "collector.db")
    config = write_config(tmp_path)
    proc = await asyncio.to_thread(run_cli, "serve", "--config", str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the database is damaged" in proc.stderr
    assert "store verify" in proc.stderr and "start_check: off" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_the_start_check_is_bounded_in_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past its timeout the check is abandoned with a warning and the store opens."""
    db = tmp_path / "collector.db"
    store = SQLiteStore(db)
    await store.open()
    reports = [agent_report() for _ in range(300)]
    await store.ingest(SITE, [(r, encode(r)) for r in reports])
    await store.close()
    caplog.set_level(logging.INFO)
    quick = SQLiteStore(db, start_check_timeout=0.0)
    await quick.open()
    try:
        assert await quick.report_count() == 300
    finally:
        await quick.close()
    assert "store.start_check_incomplete" in caplog.messages
    checked = SQLiteStore(db, start_check_timeout=60.0)
    await checked.open()
    await checked.close()
    assert "store.start_check_ok" in caplog.messages


async def test_a_damaged_store_opened_anyway_says_so_on_healthz_and_in_metrics(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """start_check: off (documented escape hatch): the damage still shows at run time."""
    await _damaged_store(tmp_path / "collector.db")
    with pytest.raises(StoreDamaged):  # what serve would have done
        s = SQLiteStore(tmp_path / "collector.db", start_check_timeout=60.0)
        await s.open()
    config = collector_config(tmp_path, store={"url": "sqlite:collector.db", "start_check": "off"})
    client: Client = await make_client(config)
    store = store_of(client)
    with pytest.raises(StoreUnavailable, match="malformed"):
        await store.digest()  # a read over every table (as an evidence export reads)
    health = await client.get("/healthz")
    assert health.status == 503
    body = await health.json()
    assert body["store"] == "error" and "corrupt" in body["reason"], body
    assert await metric_value(client, "hatang_store_up") == 0
    errors = await metric_value(
        client, "hatang_store_errors_total", operation="read", kind="corrupt"
    )
    assert errors is not None and errors >= 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs mounted for this test (root only), always unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", f"ht-{uuid.uuid4().hex[:8]}", mount],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


def _fill(directory: Path) -> Path:
    """Write until the file system is full; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


async def test_a_full_disk_is_503_on_ingest_and_healthz_and_nothing_stored_is_lost(
    make_client: MakeClient, tmp_path: Path, small_disk: Path
) -> None:
    config = collector_config(tmp_path, store={"url": f"sqlite:///{small_disk}/c.db"})
    client: Client = await make_client(config)
    token = await new_token(client)
    first = [agent_report(seq=i) for i in range(5)]
    resp = await client.post(
        "/api/v1/reports", data=encode(Batch(reports=first)), headers=auth(token)
    )
    assert resp.status == 200
    assert (await client.get("/healthz")).status == 200
    assert await metric_value(client, "hatang_store_up") == 1

    filler = _fill(small_disk)
    batch = encode(Batch(reports=[agent_report(seq=100 + i) for i in range(300)]))
    resp = await client.post("/api/v1/reports", data=batch, headers=auth(token))
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"] == "store_unavailable"
    assert resp.headers["Retry-After"]
    health = await client.get("/healthz")
    assert health.status == 503
    reason = (await health.json())["reason"]
    assert "cannot write" in reason and "full" in reason, reason
    assert await metric_value(client, "hatang_store_up") == 0
    full = await metric_value(client, "hatang_store_errors_total", operation="write", kind="full")
    assert full is not None and full >= 1

    filler.unlink()  # the operator frees space; the agent resends the same batch
    resp = await client.post("/api/v1/reports", data=batch, headers=auth(token))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] == 300
    assert (await client.get("/healthz")).status == 200
    assert await metric_value(client, "hatang_store_up") == 1
    assert await store_of(client).report_count() == 305

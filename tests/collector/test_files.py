"""The collector's files on disk (issue 10 weaknesses): the store (db, -wal, -shm) and the
log are created owner-only, an existing store readable by others is warned about, and a
store directory that does not exist is a configuration error, never created silently."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from agent.report import encode
from collector.store import StoreError
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import SITE, agent_report, run_cli, write_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in directory.iterdir()}


async def test_the_store_files_are_created_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be 0644
    try:
        store = SQLiteStore(tmp_path / "collector.db")
        await store.open()
        try:
            report = agent_report()
            await store.ingest(SITE, [(report, encode(report))])
            files = ["collector.db", "collector.db-shm", "collector.db-wal"]
            assert await asyncio.to_thread(modes, tmp_path) == dict.fromkeys(files, 0o600)
        finally:
            await store.close()
    finally:
        os.umask(old)


def test_the_log_file_is_created_owner_only(tmp_path: Path) -> None:
    log = tmp_path / "collector.log"
    config = write_config(tmp_path, log={"file": str(log)})
    done = run_cli("token", "create", "--config", str(config), "--site", SITE)
    assert done.returncode == 0, done.stderr
    assert mode(log) == 0o600
    assert mode(tmp_path / "collector.db") == 0o600


async def test_an_existing_store_readable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "collector.db"
    store = SQLiteStore(db)
    await store.open()
    await store.close()
    db.chmod(0o644)
    caplog.set_level(logging.WARNING)
    again = SQLiteStore(db)
    await again.open()
    await again.close()
    (warning,) = [r for r in caplog.records if r.getMessage() == "store.readable_by_others"]
    assert warning.path == str(db) and warning.mode == "0644"  # type: ignore[attr-defined]
    assert "chmod 600" in warning.hint  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", [["token", "list"], ["serve"], ["store", "verify"]])
def test_a_store_directory_that_does_not_exist_is_exit_2_naming_store_url(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    config = write_config(tmp_path, store={"url": f"sqlite:{missing}/c.db"})
    done = run_cli(*command, "--config", str(config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "store.url" in done.stderr and str(missing) in done.stderr
    assert "mkdir -p" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "nonexistent").exists()


async def test_the_store_itself_never_creates_directories(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "nonexistent" / "c.db")
    with pytest.raises(StoreError, match=r"no such directory.*mkdir -p"):
        await store.open()
    assert not (tmp_path / "nonexistent").exists()
    await asyncio.sleep(0)

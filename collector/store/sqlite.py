"""The SQLite store: WAL, ``synchronous=FULL``, one writer task with group commit.

Every write (ingest, token changes, bookkeeping) goes through one queue. The writer task
takes everything queued, applies it in ONE transaction (each operation in its own
savepoint so one failing operation cannot spoil the others) and commits once: many
concurrent ingests cost one fsync, which is what makes thousands of reports per second
possible on a small machine while every 200 still means "on disk". Readers use their own
connections (WAL lets them read while the writer writes). sqlite3 calls block, so the
writer and the readers run in dedicated threads; the event loop never touches a
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

from agent.files import create_private, readable_by_others
from agent.log import event
from agent.report import Report, decode_report
from collector import late
from collector.store import (
    DECLARATION_COLUMNS,
    ENROLL_CODE_COLUMNS,
    Claim,
    EnrollCode,
    IngestResult,
    NewAgent,
    NewDeclaration,
    QueueStats,
    RedeemOutcome,
    StoreDamaged,
    StoreError,
    StoreUnavailable,
    TokenRecord,
    distinct_agent_id,
    enroll_code,
    hash_token,
    new_revisions,
    new_token,
    redeem_refusal,
    to_unix,
    token_record,
)
from collector.store.base import (
    AGENTS_OF_SITE,
    BODY_QUERY,
    PAGE_SIZE,
    WINDOW_CLASSES,
    BodyCheck,
    Check,
    ContentDigest,
    GroupCommitStore,
    Op,
    digest_queries,
    schema_problems,
)
from collector.store.chain import (
    BACKFILL_PAGE,
    CHAIN_VERSION,
    HEADS_SQL,
    VERIFY_SQL,
    Checker,
    Link,
    extend,
)
from collector.store.ingest import (
    HOST_DAILY_MERGE,
    NETWORK_USE_MERGE,
    Accepted,
    AgentRow,
    Rollups,
    RollupSum,
    agent_rows,
    rollups,
    section_rows,
    triage,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_EVERY: Final = 1.0  # seconds between background WAL checkpoints (after commits)
WRITER_CHECKPOINT_PAGES: Final = 16384  # the writer checkpoints itself past this WAL size
WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024  # bytes the WAL file is truncated to after a reset
WRITER_CACHE_KIB: Final = 16384  # page cache of the writer connection (indexes stay hot)
# Less free space than this on the store's file system: /healthz says it cannot write
# (a WAL commit of a batch needs a few pages; SQLite fails it as "disk is full").
MIN_FREE_BYTES: Final = 1024 * 1024
TOKENS_MAX_AGE: Final = 60.0  # reload the token table at least this often (edits by hand)
# How often a thread of the store reads the tokens-changed counter: a token created or
# revoked by another process (``hatang-collector token revoke``) counts within this plus
# one reload (documented as "within 1 s"); changes made through this process count at once.
TOKENS_POLL_SECONDS: Final = 0.25
StoreCheck = Check  # what ``verify_file`` answers (``where`` is the file's path)


def _tokens_changed(conn: sqlite3.Connection) -> None:
    """Bump the tokens-changed counter inside the caller's transaction.

    ``PRAGMA user_version`` (a header field: transactional, readable without touching a
    table) serves as the counter; the schema version lives in ``schema_version``.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute(f"PRAGMA user_version = {(int(version) + 1) % 2**31}")


def _migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every shipped migration, in order."""
    found = []
    for entry in resources.files("collector.store").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def _statements(sql: str) -> Iterable[str]:
    """Split a migration into statements (``executescript`` would commit mid-migration)."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


CHANGES_VERSION: Final = 9  # the migration that marks changed agents (0009_agent_changes.sql)


def _add_changed_column(conn: sqlite3.Connection) -> None:
    """Add ``agents.changed`` unless it is there (a migration applied again: SQLite has
    no ADD COLUMN IF NOT EXISTS)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(agents)")}
    if "changed" not in columns:
        conn.execute("ALTER TABLE agents ADD COLUMN changed INTEGER NOT NULL DEFAULT 0")


def _damaged(path: Path, what: str) -> str:
    """What to do about a damaged database file (one wording for every way it shows)."""
    return (
        f"{path}: the database is damaged ({what}); the collector does not serve from a"
        " damaged store. See `hatang-collector store verify`, restore the file from a backup"
        " (agents resend what their spools still hold), or set store.start_check: off to"
        " start anyway"
    )


class SQLiteStore(GroupCommitStore):
    """The default store (see the module docstring for the concurrency design)."""

    # Reads run in the store's own threads, so any event loop may await them (the
    # snapshot is refreshed from a loop in a thread of its own, see collector.app).
    reads_from_any_loop: Final = True
    SQL: ClassVar = {
        "agent_states.agents": "SELECT a.site, a.agent_id, a.role, a.interval_seconds,"
        " a.first_seen, a.last_observed_at, a.last_received_at, a.reports_received,"
        " a.spool_dropped, a.last_effective_at, a.latest_report_id FROM agents a"
        " ORDER BY a.site, a.agent_id",
        "agent_states.bodies": "SELECT id, body FROM reports"
        " WHERE id IN (SELECT value FROM json_each(?))",
        "agent_states.sections": "SELECT site, agent_id, section, body FROM agent_sections",
        "network_windows": "SELECT site, network, SUM(checks), SUM(up_checks)"
        " FROM network_hourly WHERE hour >= ? GROUP BY site, network ORDER BY site, network",
        "agent_network_windows": "SELECT site, agent_id, network, SUM(checks),"
        " SUM(up_checks) FROM network_hourly WHERE hour >= ?"
        " GROUP BY site, agent_id, network ORDER BY site, agent_id, network",
        "received_counts": "SELECT site, agent_id, SUM(reports) FROM agent_hourly"
        " WHERE hour >= ? GROUP BY site, agent_id",
        "daily_networks": "SELECT day, site, agent_id, network, checks, up_checks, seconds_up"
        " FROM network_daily WHERE day >= ? AND day < ? ORDER BY day, site, agent_id, network",
        "daily_hosts": "SELECT day, site, agent_id, hostname, reports, antivirus_state"
        " FROM host_daily WHERE day >= ? AND day < ? ORDER BY day, site, agent_id",
        "list_tokens": "SELECT token_id, site, created_at, revoked_at, last_used_at, note"
        " FROM tokens ORDER BY created_at, token_id",
        "report_count": "SELECT COUNT(*) FROM reports",
        "rejection_counts": "SELECT reason, count FROM rejections",
        "declarations": f"SELECT {DECLARATION_COLUMNS} FROM declarations"  # noqa: S608
        " WHERE period_start < ? AND period_end > ? ORDER BY unit, period, fact, revision",
        "declaration_file": "SELECT content FROM declaration_files WHERE sha256 = ?",
        "last_protected_day": "SELECT MAX(day) FROM host_daily WHERE site = ? AND agent_id = ?"
        " AND antivirus_state = 'protected'",
        "chain_heads": HEADS_SQL,
        "throughput_results": "SELECT site, network, target, effective_at, up, skipped,"
        " bytes_per_second, error FROM throughput_results WHERE effective_at >= ?"
        " ORDER BY site, network, effective_at, target",
        "network_use_days": "SELECT day, site, network, SUM(in_bytes), SUM(out_bytes),"
        " SUM(counted_polls), SUM(unknown_polls), SUM(app_checks_up) FROM network_use_daily"
        " WHERE day >= ? AND day < ? GROUP BY day, site, network ORDER BY day, site, network",
        # refresh_reads: CROSS JOIN keeps the changed agents (agents_changed) the outer
        # loop, so each agent's buckets are a primary-key range from the window start,
        # never a scan of the whole retention.
        "refresh.cursor": "SELECT COALESCE(MAX(changed), 0) FROM agents",
        "refresh.agents": "SELECT a.site, a.agent_id, a.role, a.interval_seconds,"
        " a.first_seen, a.last_observed_at, a.last_received_at, a.reports_received,"
        " a.spool_dropped, a.last_effective_at, a.latest_report_id FROM agents a"
        " WHERE a.changed > ?",
        "refresh.sections": "SELECT s.site, s.agent_id, s.section, s.body FROM agents a"
        " CROSS JOIN agent_sections s ON s.site = a.site AND s.agent_id = a.agent_id"
        " WHERE a.changed > ?",
        "refresh.windows": "SELECT n.site, n.agent_id, n.network, SUM(n.checks),"  # noqa: S608
        " SUM(n.up_checks), COUNT(*) FROM agents a CROSS JOIN network_hourly n"
        " ON n.site = a.site AND n.agent_id = a.agent_id"
        f" AND n.network IN ({WINDOW_CLASSES}) WHERE a.changed > ? AND n.hour >= ?"
        " GROUP BY n.site, n.agent_id, n.network",
        "refresh.received": "SELECT h.site, h.agent_id, SUM(h.reports), COUNT(*) FROM agents a"
        " CROSS JOIN agent_hourly h ON h.site = a.site AND h.agent_id = a.agent_id"
        " WHERE a.changed > ? AND h.hour >= ? GROUP BY h.site, h.agent_id",
        # Every agent: in the agents' key order, so each agent's buckets are read in turn
        # and grouped without a sort (the first refresh, 20k agents: ≈ 1.2 s a day).
        "refresh.windows_all": "SELECT n.site, n.agent_id, n.network, SUM(n.checks),"  # noqa: S608
        " SUM(n.up_checks), COUNT(*) FROM agents a CROSS JOIN network_hourly n"
        " ON n.site = a.site AND n.agent_id = a.agent_id"
        f" AND n.network IN ({WINDOW_CLASSES}) WHERE n.hour >= ?"
        " GROUP BY a.site, a.agent_id, n.network",
        "refresh.received_all": "SELECT h.site, h.agent_id, SUM(h.reports), COUNT(*)"
        " FROM agents a CROSS JOIN agent_hourly h"
        " ON h.site = a.site AND h.agent_id = a.agent_id WHERE h.hour >= ?"
        " GROUP BY a.site, a.agent_id",
        "refresh.windows_left": "SELECT site, agent_id, network, SUM(checks),"  # noqa: S608
        " SUM(up_checks),"
        " COUNT(*) FROM network_hourly WHERE hour >= ? AND hour < ?"
        f" AND network IN ({WINDOW_CLASSES}) GROUP BY site, agent_id, network",
        "refresh.received_left": "SELECT site, agent_id, SUM(reports), COUNT(*)"
        " FROM agent_hourly WHERE hour >= ? AND hour < ? GROUP BY site, agent_id",
        "refresh.throughput": "SELECT site, network, target, effective_at, up, skipped,"
        " bytes_per_second, error FROM throughput_results"
        " WHERE site IN (SELECT site FROM agents WHERE changed > ?) AND effective_at >= ?"
        " ORDER BY site, network, effective_at, target",
        "refresh.use_days": "SELECT day, site, network, SUM(in_bytes), SUM(out_bytes),"
        " SUM(counted_polls), SUM(unknown_polls), SUM(app_checks_up) FROM network_use_daily"
        " WHERE day IN (SELECT value FROM json_each(?))"
        " AND site IN (SELECT site FROM agents WHERE changed > ?)"
        " GROUP BY day, site, network ORDER BY day, site, network",
    }

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        max_future: float = 300.0,
        hourly_retention: float = 35 * 86400.0,
        rollup_utc_offset_hours: float = 7.0,
        clock: Callable[[], float] = time.time,
        bucket_seconds: float = 3600.0,
        start_check_timeout: float | None = None,
    ) -> None:
        super().__init__(
            busy_timeout=busy_timeout,
            max_future=max_future,
            hourly_retention=hourly_retention,
            rollup_utc_offset_hours=rollup_utc_offset_hours,
            clock=clock,
            bucket_seconds=bucket_seconds,
        )
        self.path = Path(path)
        self.start_check_timeout = start_check_timeout
        self._writer_exec: ThreadPoolExecutor | None = None
        self._reader_exec: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        # Tokens, by SHA-256: checked on the event loop without a thread hop and without any
        # I/O there (the loop never touches a connection). ``_tokens_signal`` counts token
        # changes seen so far: bumped after this process's own token writes, and by the
        # watcher thread when the tokens-changed counter (``PRAGMA user_version``, bumped in
        # the same transaction as every token change, by any process) moves. The table is
        # reloaded when the signal differs from the one it was loaded at.
        self._tokens: dict[str, TokenRecord] | None = None
        self._tokens_signal = 0
        self._tokens_signal_lock = threading.Lock()
        self._tokens_loaded_signal = -1
        self._tokens_loaded_at = 0.0
        self._tokens_load: asyncio.Future[None] | None = None
        self._tokens_load_seq = 0  # loads started so far
        self._version_conn: sqlite3.Connection | None = None  # the watcher thread's only
        self._watcher: threading.Thread | None = None
        self._watcher_stop = threading.Event()
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._op_rollups: Rollups | None = None  # the writer thread's current operation's
        self._checkpoint_exec: ThreadPoolExecutor | None = None
        self._checkpoint: asyncio.Future[None] | None = None
        self._last_checkpoint = 0.0

    # -- life cycle -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn

    def _prepare_file(self) -> None:
        """Create the database owner-only (SQLite gives its -wal and -shm files the
        database's mode); warn when an existing store is readable by others. Never
        creates directories: a missing one is a typo or a missing mount more often
        than a wish."""
        parent = self.path.parent
        if not parent.is_dir():
            raise StoreError(
                f"{parent}: no such directory for the store {self.path.name}; create it"
                f" (mkdir -p {parent}) or fix store.url"
            )
        try:
            create_private(self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create: {exc.strerror or exc}") from exc
        for suffix in ("", "-wal", "-shm"):
            path = self.path.with_name(self.path.name + suffix)
            if readable_by_others(path):
                event(
                    log,
                    logging.WARNING,
                    "store.readable_by_others",
                    path=str(path),
                    mode=f"{path.stat().st_mode & 0o777:04o}",
                    hint=f"reports and token hashes are in it: chmod 600 {path}",
                )

    def _open_writer(self) -> None:
        self._prepare_file()
        try:
            conn = self._connect()
        except sqlite3.OperationalError:
            raise  # locked, cannot open the file...: said as such by open()
        except sqlite3.DatabaseError as exc:  # the schema pages themselves are damaged
            raise StoreDamaged(_damaged(self.path, str(exc))) from None
        try:
            if self.start_check_timeout is not None:
                self._start_check(conn, self.start_check_timeout)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL journal (got {mode})")
            # Checkpoints run in their own thread (``_checkpoint_now``), so a commit does not
            # also copy the WAL into the database and fsync it; the writer checkpoints itself
            # only if the WAL outgrows that (e.g. a reader pins it).
            conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            self._migrate(conn)
            version = self._connect()
            version.execute("PRAGMA query_only = ON")
            checkpointer = self._connect()
        except BaseException:
            conn.close()
            raise
        self._writer = conn
        self._version_conn = version
        self._checkpoint_conn = checkpointer

    def _start_check(self, conn: sqlite3.Connection, timeout: float) -> None:
        """PRAGMA quick_check before serving; StoreDamaged when it finds damage. Bounded:
        past ``timeout`` the check is interrupted, logged, and the store opens anyway."""
        deadline = time.monotonic() + timeout
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        started = time.monotonic()
        try:
            rows = conn.execute("PRAGMA quick_check(20)").fetchall()
        except sqlite3.OperationalError as exc:
            if "interrupt" not in str(exc).lower():
                # e.g. "database disk image is malformed" while reading the schema itself
                rows = [(str(exc),)]
            else:
                event(
                    log,
                    logging.WARNING,
                    "store.start_check_incomplete",
                    path=str(self.path),
                    seconds=timeout,
                    hint="run `hatang-collector store verify` when the collector is quiet,"
                    " or raise store.start_check_timeout",
                )
                return
        except sqlite3.DatabaseError as exc:  # not a database at all, or unreadable
            rows = [(str(exc),)]
        finally:
            conn.set_progress_handler(None, 0)
        problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
        if problems:
            raise StoreDamaged(_damaged(self.path, f"quick_check: {'; '.join(problems[:3])}"))
        event(
            log,
            logging.INFO,
            "store.start_check_ok",
            path=str(self.path),
            seconds=round(time.monotonic() - started, 3),
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION)"
            )
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            known = _migrations()
            latest = known[-1][0] if known else 0
            if current > latest:
                raise StoreError(
                    f"{self.path}: database schema version {current} is newer than this "
                    f"hatang-collector supports ({latest}); upgrade hatang-collector"
                )
            for version, name, sql in known:
                if version <= current:
                    continue
                if version == CHANGES_VERSION:
                    _add_changed_column(conn)
                for statement in _statements(sql):
                    conn.execute(statement)
                if version == CHAIN_VERSION:
                    _chain_stored_reports(conn)
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, self.clock()),
                )
                event(log, logging.INFO, "store.migrated", version=version, file=name)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def open(self) -> None:
        """Open connections, apply migrations, start the writer task."""
        loop = asyncio.get_running_loop()
        self._writer_exec = ThreadPoolExecutor(1, thread_name_prefix="hatang-store-writer")
        self._reader_exec = ThreadPoolExecutor(2, thread_name_prefix="hatang-store-reader")
        self._checkpoint_exec = ThreadPoolExecutor(1, thread_name_prefix="hatang-store-ckpt")
        try:
            await loop.run_in_executor(self._writer_exec, self._open_writer)
        except sqlite3.Error as exc:
            self._shutdown_executors()
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from exc
        except BaseException:
            self._shutdown_executors()
            raise
        self._watcher_stop.clear()
        self._watcher = threading.Thread(
            target=self._watch_tokens, name="hatang-store-tokens", daemon=True
        )
        self._watcher.start()
        self._start_writer()

    def _watch_tokens(self) -> None:
        """Bump ``_tokens_signal`` when another process changes the tokens (off the loop)."""
        conn = self._version_conn
        if conn is None:
            return
        last: int | None = None
        while not self._watcher_stop.wait(TOKENS_POLL_SECONDS if last is not None else 0):
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            except sqlite3.Error:
                continue  # busy or failing: try again; the reload path reports real trouble
            if last is not None and version != last:
                self._bump_tokens_signal()
            last = version

    def _bump_tokens_signal(self) -> None:
        with self._tokens_signal_lock:
            self._tokens_signal += 1

    async def _token_write(self, apply: Callable[[sqlite3.Connection], T]) -> T:
        """A write that changes tokens: the very next lookup reloads the table."""
        try:
            result: T = await self._write(apply)
        finally:
            self._bump_tokens_signal()
        return result

    def _shutdown_executors(self) -> None:
        for executor in (self._writer_exec, self._reader_exec, self._checkpoint_exec):
            if executor is not None:
                executor.shutdown(wait=True)
        self._writer_exec = self._reader_exec = self._checkpoint_exec = None

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        if not await self._stop_writer():
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown_executors)
        self._watcher_stop.set()
        if self._watcher is not None:
            await loop.run_in_executor(None, self._watcher.join)
            self._watcher = None
        with self._lock:
            for conn in [*self._readers, self._version_conn, self._checkpoint_conn, self._writer]:
                if conn is not None:
                    conn.close()
            self._readers.clear()
            self._writer = self._version_conn = self._checkpoint_conn = None
        self._tokens = None

    def _error_kind(self, exc: BaseException) -> str:
        name = str(getattr(exc, "sqlite_errorname", ""))
        text = str(exc).lower()
        if name == "SQLITE_FULL" or "disk is full" in text:
            return "full"
        if name.startswith("SQLITE_IOERR") or "i/o error" in text:
            return "io"
        if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in text:
            return "corrupt"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
            return "locked"
        return "unavailable"

    async def _space_problem(self) -> str | None:
        try:
            fs = await asyncio.to_thread(os.statvfs, self.path.parent)
        except OSError as exc:
            return f"the store cannot write ({self.path.parent}: {exc.strerror or exc})"
        free = fs.f_bavail * fs.f_frsize
        if free < MIN_FREE_BYTES:
            return (
                f"the store cannot write (full: {free} bytes free on the file system of"
                f" {self.path}; free some space)"
            )
        return None

    # -- plumbing ---------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._reader_exec is None:
            raise StoreUnavailable("the store is closed")

        def run() -> T:
            conn = self._reader()
            conn.execute("BEGIN")  # one consistent snapshot for multi-statement reads
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        try:
            result = await asyncio.get_running_loop().run_in_executor(self._reader_exec, run)
        except sqlite3.Error as exc:
            self._failed("read", exc)
            raise StoreUnavailable(f"store read failed: {exc}") from exc
        self.faults.succeeded("read")
        return result

    async def _fetch(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        return await self._read(lambda c: [c.execute(sql, p).fetchall() for sql, p in queries])

    async def _run_group(self, ops: list[Op]) -> list[Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_exec, self._write_group, ops)

    def _after_commit(self) -> None:
        self._maybe_checkpoint(asyncio.get_running_loop())

    def _maybe_checkpoint(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a background checkpoint after commits, at most every CHECKPOINT_EVERY."""
        now = time.monotonic()
        if (
            self._checkpoint_exec is None
            or (self._checkpoint is not None and not self._checkpoint.done())
            or now - self._last_checkpoint < CHECKPOINT_EVERY
        ):
            return
        self._last_checkpoint = now
        self._checkpoint = loop.run_in_executor(self._checkpoint_exec, self._checkpoint_now)

    def _checkpoint_now(self) -> None:
        """Copy committed WAL frames into the database (PASSIVE: never blocks the writer).

        Done here, the database fsync of a checkpoint does not delay the group commit that
        happens to cross the WAL threshold, which is what agents would see as a slow 200.
        """
        conn = self._checkpoint_conn
        if conn is None:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the writer's own checkpoint is the fallback
            event(log, logging.WARNING, "store.checkpoint_failed", error=str(exc)[:300])

    def _write_group(self, ops: list[Op]) -> list[Any]:
        conn = self._writer
        if conn is None:
            raise StoreUnavailable("the store is closed")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot start a write: {exc}") from exc
        results: list[Any] = []
        group = RollupSum()
        try:
            for op in ops:
                if op.apply == self._prune and group:  # the prune sees the buckets it trims
                    self._update_rollups(conn, group.rows())
                    group = RollupSum()
                conn.execute("SAVEPOINT op")
                self._op_rollups = None
                try:
                    results.append(op.apply(conn))
                    done = self._take_op_rollups()
                    if done is not None:  # only an operation that succeeded
                        group.add(done)
                except (sqlite3.IntegrityError, sqlite3.ProgrammingError) as exc:
                    # A bug in one operation: it fails alone, the group still commits.
                    conn.execute("ROLLBACK TO op")
                    results.append(StoreError(f"store operation failed: {exc}"))
                except sqlite3.Error:
                    raise  # locked, I/O error, disk full: the whole group fails
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    results.append(exc)
                conn.execute("RELEASE op")
            if group:
                self._update_rollups(conn, group.rows())
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StoreUnavailable(f"store write failed: {exc}") from exc
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results

    def _take_op_rollups(self) -> Rollups | None:
        taken, self._op_rollups = self._op_rollups, None
        return taken

    def _prune(self, conn: sqlite3.Connection) -> None:
        cutoff = self.clock() - self.hourly_retention
        conn.execute("DELETE FROM network_hourly WHERE hour < ?", (cutoff,))
        conn.execute("DELETE FROM agent_hourly WHERE hour < ?", (cutoff,))

    # -- ingest -----------------------------------------------------------------------

    def _apply_ingest(
        self, conn: sqlite3.Connection, batch: list[tuple[Report, bytes]], clock_offset: float
    ) -> IngestResult:
        received_at = self.clock()
        stored: dict[str, str] = {}
        ids = list({r.id for r, _ in batch})
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            stored.update(
                conn.execute(
                    f"SELECT id, content_hash FROM reports WHERE id IN ({marks})",  # noqa: S608
                    chunk,
                ).fetchall()
            )
        found = triage(batch, stored, received_at, self.max_future, clock_offset)
        accepted = found.accepted
        if accepted:
            links = _append_chain(conn, accepted, received_at)
            conn.executemany(
                "INSERT INTO reports (id, site, agent_id, seq, observed_at, effective_at,"
                " received_at, content_hash, body, chain_seq, prev_hash, chain_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*a.row(received_at), *links[a.report.id].values()) for a in accepted],
            )
            self._update_agents(conn, agent_rows(accepted, received_at))
            self._update_sections(conn, section_rows(accepted))
            # Added to the group's sum; written once per commit (see ``_write_group``).
            self._op_rollups = rollups(accepted, self.bucket, self.rollup_offset)
            if self.late_rule is not None:
                self._enqueue_late(conn, self.late_rule, accepted, received_at)
        skewed = sum(a.skewed for a in accepted)
        return IngestResult(len(accepted), found.duplicates, found.conflicts, skewed)

    def _enqueue_late(
        self,
        conn: sqlite3.Connection,
        rule: late.LateRule,
        accepted: list[Accepted],
        received_at: float,
    ) -> None:
        """Queue the batch's late samples and the markers of a takeover by the scrape, in the
        ingest's own transaction (a report stored is a sample queued; see collector.late)."""
        overdue, on_time = late.split(accepted, received_at, rule)
        context: dict[str, late.SiteContext] = {}
        for site in sorted({a.report.site for a in overdue}):
            low, high = late.held_range(overdue, site, rule)
            held = conn.execute(
                "SELECT received_at, effective_at FROM reports WHERE site = ?"
                " AND effective_at >= ? AND effective_at <= ? AND received_at < ?",
                (site, low, high, received_at),
            ).fetchall()
            probe = conn.execute(
                "SELECT 1 FROM agents WHERE site = ? AND role = 'site-probe' LIMIT 1", (site,)
            ).fetchone()
            agents = conn.execute(
                AGENTS_OF_SITE, (site, received_at - late.INVENTORY_SECONDS)
            ).fetchall()
            context[site] = late.site_context(overdue, site, held, probe is not None, agents)
        rows = late.late_rows(overdue, rule, context)
        insert = (
            "INSERT INTO remote_write_queue (series, ts_ms, site, value, stale, enqueued_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (series, ts_ms) DO NOTHING"
        )
        conn.executemany(insert, [r.values(received_at) for r in rows])
        for site, at_ms in sorted(late.takeovers(on_time).items()):
            recent = conn.execute(
                "SELECT series, ts_ms, stale FROM remote_write_queue WHERE site = ?"
                " AND ts_ms >= ? AND ts_ms < ?",
                (site, at_ms - late.LOOKBACK_MS, at_ms),
            ).fetchall()
            markers = late.stale_rows(site, at_ms, recent)
            conn.executemany(insert, [r.values(received_at) for r in markers])
            rows += markers
        if rows:
            (pending,) = conn.execute(
                "SELECT COUNT(*) FROM remote_write_queue WHERE sent_at IS NULL"
            ).fetchone()
            excess = int(pending) - rule.max_pending
            if excess > 0:  # bounded: the oldest go first, counted where the province sees it
                conn.execute(
                    "DELETE FROM remote_write_queue WHERE (series, ts_ms) IN (SELECT series, ts_ms"
                    " FROM remote_write_queue WHERE sent_at IS NULL AND lease_owner IS NULL"
                    " ORDER BY ts_ms LIMIT ?)",
                    (excess,),
                )
                _count(conn, {"queue_full": conn.execute("SELECT changes()").fetchone()[0]})

    # -- the remote-write queue (collector.remote_write.Sender) ------------------------

    async def rw_claim(self, owner: str, limit: int, lease: float, oldest_ms: int) -> Claim:
        """Drop pending samples older than ``oldest_ms`` (counted), then lease up to
        ``limit`` of the oldest pending ones to ``owner``."""

        def apply(conn: sqlite3.Connection) -> Claim:
            now = self.clock()
            conn.execute(
                "DELETE FROM remote_write_queue WHERE sent_at IS NULL AND ts_ms < ?"
                " AND (lease_owner IS NULL OR lease_until < ?)",
                (oldest_ms, now),
            )
            too_old = int(conn.execute("SELECT changes()").fetchone()[0])
            _count(conn, {"too_old": too_old})
            conn.execute(
                "UPDATE remote_write_queue SET lease_owner = ?, lease_until = ?"
                " WHERE (series, ts_ms) IN (SELECT series, ts_ms FROM remote_write_queue"
                " WHERE sent_at IS NULL AND lease_until < ? ORDER BY ts_ms LIMIT ?)",
                (owner, now + lease, now, limit),
            )
            rows = conn.execute(
                "SELECT series, ts_ms, value, stale FROM remote_write_queue"
                " WHERE lease_owner = ? ORDER BY series, ts_ms",
                (owner,),
            ).fetchall()
            return Claim([(s, int(t), float(v), bool(st)) for s, t, v, st in rows], too_old)

        claim: Claim = await self._write(apply)
        return claim

    async def rw_enqueue(self, rows: list[late.QueueRow]) -> int:
        """Queue samples (``hatang-collector backfill``); the ones already queued stay."""

        def apply(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO remote_write_queue (series, ts_ms, site, value, stale, enqueued_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (series, ts_ms) DO NOTHING",
                [r.values(self.clock()) for r in rows],
            )
            return conn.total_changes - before

        added: int = await self._write(apply, size=max(1, len(rows) // 10))
        return added

    async def rw_finish(self, owner: str, outcome: str) -> int:
        """End a claim: ``sent`` (acknowledged: kept briefly, never sent again), ``retry``
        (released for the next attempt) or a drop reason (deleted and counted)."""

        def apply(conn: sqlite3.Connection) -> int:
            now = self.clock()
            if outcome == "retry":
                conn.execute(
                    "UPDATE remote_write_queue SET lease_owner = NULL, lease_until = 0"
                    " WHERE lease_owner = ?",
                    (owner,),
                )
                return int(conn.execute("SELECT changes()").fetchone()[0])
            if outcome == "sent":
                conn.execute(
                    "UPDATE remote_write_queue SET sent_at = ?, lease_owner = NULL"
                    " WHERE lease_owner = ?",
                    (now, owner),
                )
            else:
                conn.execute("DELETE FROM remote_write_queue WHERE lease_owner = ?", (owner,))
            done = int(conn.execute("SELECT changes()").fetchone()[0])
            _count(conn, {outcome: done})
            conn.execute(
                "DELETE FROM remote_write_queue WHERE sent_at IS NOT NULL AND ts_ms < ?",
                (int(now * 1000) - 2 * late.LOOKBACK_MS - int(self.max_future * 1000),),
            )
            return done

        done: int = await self._write(apply)
        return done

    async def rw_stats(self) -> QueueStats:
        """Pending samples, the oldest pending observation time, counts by outcome."""

        def read(conn: sqlite3.Connection) -> QueueStats:
            pending, oldest = conn.execute(
                "SELECT COUNT(*), MIN(ts_ms) FROM remote_write_queue WHERE sent_at IS NULL"
            ).fetchone()
            counts = dict(conn.execute("SELECT reason, count FROM remote_write_counts"))
            return QueueStats(int(pending), None if oldest is None else int(oldest), counts)

        return await self._read(read)

    @staticmethod
    def _update_agents(conn: sqlite3.Connection, batch: list[AgentRow]) -> None:
        # Above every number before it (the single writer commits in this order): what
        # the snapshot refresh reads changed agents by (0009_agent_changes.sql).
        (changed,) = conn.execute("SELECT COALESCE(MAX(changed), 0) + 1 FROM agents").fetchone()
        rows = []
        for row in batch:
            stored = conn.execute(
                "SELECT role, interval_seconds, first_seen, last_effective_at,"
                " last_observed_at, last_received_at, reports_received, spool_dropped,"
                " latest_report_id FROM agents WHERE site = ? AND agent_id = ?",
                (row.site, row.agent_id),
            ).fetchone()
            merged = (
                row
                if stored is None
                else row.merged_into(AgentRow(row.site, row.agent_id, *stored))
            )
            rows.append((*merged.values(), changed))
        conn.executemany(
            "INSERT INTO agents (site, agent_id, role, interval_seconds, first_seen,"
            " last_effective_at, last_observed_at, last_received_at, reports_received,"
            " spool_dropped, latest_report_id, changed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (site, agent_id) DO UPDATE SET role = excluded.role,"
            " changed = excluded.changed,"
            " interval_seconds = excluded.interval_seconds,"
            " last_effective_at = excluded.last_effective_at,"
            " last_observed_at = excluded.last_observed_at,"
            " last_received_at = excluded.last_received_at,"
            " reports_received = excluded.reports_received,"
            " spool_dropped = excluded.spool_dropped,"
            " latest_report_id = excluded.latest_report_id",
            rows,
        )

    @staticmethod
    def _update_sections(
        conn: sqlite3.Connection, batch: list[tuple[str, str, str, float, str]]
    ) -> None:
        _insert_rows(
            conn,
            "INSERT INTO agent_sections (site, agent_id, section, effective_at, body)",
            " ON CONFLICT (site, agent_id, section) DO UPDATE SET"
            " effective_at = excluded.effective_at, body = excluded.body"
            " WHERE excluded.effective_at >= agent_sections.effective_at",
            batch,
        )

    @staticmethod
    def _update_rollups(conn: sqlite3.Connection, add: Rollups) -> None:
        _insert_rows(
            conn,
            "INSERT INTO network_hourly (site, agent_id, network, hour, checks, up_checks)",
            " ON CONFLICT (site, agent_id, network, hour) DO UPDATE"
            " SET checks = network_hourly.checks + excluded.checks,"
            " up_checks = network_hourly.up_checks + excluded.up_checks",
            add.network_hourly,
        )
        _insert_rows(
            conn,
            "INSERT INTO agent_hourly (site, agent_id, hour, reports)",
            " ON CONFLICT (site, agent_id, hour) DO UPDATE"
            " SET reports = agent_hourly.reports + excluded.reports",
            add.agent_hourly,
        )
        _insert_rows(
            conn,
            "INSERT INTO network_daily (day, site, agent_id, network, checks, up_checks,"
            " seconds_up)",
            " ON CONFLICT (day, site, agent_id, network) DO UPDATE"
            " SET checks = network_daily.checks + excluded.checks,"
            " up_checks = network_daily.up_checks + excluded.up_checks,"
            " seconds_up = MIN(network_daily.seconds_up + excluded.seconds_up, 86400)",
            add.network_daily,
        )
        _insert_rows(
            conn,
            "INSERT INTO throughput_results (report_id, network, target, site, agent_id,"
            " effective_at, up, skipped, bytes_per_second, bytes_read, error)",
            " ON CONFLICT DO NOTHING",
            add.throughput,
        )
        _insert_rows(
            conn,
            "INSERT INTO network_use_daily (day, site, agent_id, network, in_bytes, out_bytes,"
            " counted_polls, unknown_polls, app_checks_up)",
            NETWORK_USE_MERGE,
            add.network_use_daily,
        )
        _insert_rows(
            conn,
            "INSERT INTO host_daily (day, site, agent_id, hostname, reports,"
            " antivirus_state, antivirus_effective_at)",
            HOST_DAILY_MERGE,
            [(*k, h.hostname, h.reports, h.av_state, h.av_at) for k, h in add.host_daily],
        )

    # -- tokens -----------------------------------------------------------------------

    async def create_token(self, site: str, note: str | None = None) -> tuple[str, str]:
        """Create a token for ``site``; only its SHA-256 is stored."""

        def apply(conn: sqlite3.Connection) -> tuple[str, str]:
            while True:
                token_id, token = new_token()
                taken = conn.execute(
                    "SELECT 1 FROM tokens WHERE token_id = ?", (token_id,)
                ).fetchone()
                if taken is None:
                    break
            conn.execute(
                "INSERT INTO tokens (token_id, token_hash, site, created_at, note)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_id, hash_token(token), site, self.clock(), note),
            )
            _tokens_changed(conn)
            return token_id, token

        created: tuple[str, str] = await self._token_write(apply)
        return created

    async def lookup_token(self, token: str) -> TokenRecord | None:
        """Find a token by its hash (revoked ones too: the caller tells 401 from 403).

        Answered from memory, without I/O on the loop: a token created or revoked through
        this process is seen by the very next lookup; one created or revoked by another
        process (``hatang-collector token revoke``) within TOKENS_POLL_SECONDS plus one
        reload (under a second).
        """
        digest = hash_token(token)
        tokens = self._tokens
        if tokens is not None and self._tokens_current():
            return tokens.get(digest)
        return (await self._load_tokens()).get(digest)

    def _tokens_current(self) -> bool:
        """Whether the loaded table still matches the store (attribute reads only)."""
        if self._closed or self._watcher is None:
            return False
        if time.monotonic() - self._tokens_loaded_at >= TOKENS_MAX_AGE:
            return False
        return self._tokens_signal == self._tokens_loaded_signal

    async def _load_tokens(self) -> dict[str, TokenRecord]:
        """Reload the table with a read that starts after this call (shared by callers)."""
        needed = self._tokens_load_seq  # a load started before now may miss a change
        while True:
            load = self._tokens_load
            if load is None or load.done():
                self._tokens_load_seq += 1
                load = self._tokens_load = asyncio.ensure_future(self._read_tokens())
            started = self._tokens_load_seq
            await asyncio.shield(load)
            if started > needed and self._tokens is not None:
                return self._tokens

    async def _read_tokens(self) -> None:
        def read(conn: sqlite3.Connection) -> dict[str, TokenRecord]:
            rows = conn.execute(
                "SELECT token_hash, token_id, site, created_at, revoked_at, last_used_at, note,"
                " agent_id FROM tokens"
            ).fetchall()
            return {row[0]: token_record(row[1:]) for row in rows}

        # Taken before the read: a change signalled during it triggers one more reload.
        signal = self._tokens_signal
        self._tokens = await self._read(read)
        self._tokens_loaded_signal = signal
        self._tokens_loaded_at = time.monotonic()

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when no token has that id. Revoking twice is harmless."""

        def apply(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM tokens WHERE token_id = ?", (token_id,)).fetchone():
                conn.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
                    (self.clock(), token_id),
                )
                _tokens_changed(conn)
                return True
            return False

        found: bool = await self._token_write(apply)
        return found

    async def touch_tokens(self, last_used: dict[str, dt.datetime]) -> None:
        """Record last use of tokens (moves only forward)."""
        rows = [(to_unix(when), token_id, to_unix(when)) for token_id, when in last_used.items()]

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE tokens SET last_used_at = ? WHERE token_id = ?"
                " AND (last_used_at IS NULL OR last_used_at < ?)",
                rows,
            )

        await self._write(apply)
        if self._tokens is not None:  # the same change in memory: no reload for bookkeeping
            by_id = {record.token_id: digest for digest, record in self._tokens.items()}
            for token_id, when in last_used.items():
                digest = by_id.get(token_id)
                if digest is None:
                    continue
                record = self._tokens.get(digest)
                if record is not None and (
                    record.last_used_at is None or record.last_used_at < when
                ):
                    self._tokens[digest] = dataclasses.replace(record, last_used_at=when)

    # -- enrollment -------------------------------------------------------------------

    async def add_enroll_codes(self, codes: Sequence[EnrollCode]) -> None:
        """Store new enrollment codes in one transaction."""
        marks = ", ".join("?" * 11)
        sql = f"INSERT INTO enroll_codes ({ENROLL_CODE_COLUMNS}) VALUES ({marks})"  # noqa: S608
        rows = [dataclasses.astuple(code) for code in codes]

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(sql, rows)

        await self._write(apply)

    async def revoke_enroll_code(self, code_id: str) -> bool:
        """Revoke a code (uses left are void); False when no code has that id."""

        def apply(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE enroll_codes SET revoked_at = COALESCE(revoked_at, ?) WHERE code_id = ?",
                (self.clock(), code_id),
            )
            return cur.rowcount > 0

        found: bool = await self._write(apply)
        return found

    async def enroll_failed(self, code_id: str, max_failures: int) -> None:
        """Count a wrong guess at ``code_id``; lock the code at ``max_failures``."""
        now = self.clock()

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE enroll_codes SET failures = failures + 1, locked_at = CASE"
                " WHEN locked_at IS NULL AND failures + 1 >= ? THEN ? ELSE locked_at END"
                " WHERE code_id = ?",
                (max_failures, now, code_id),
            )

        await self._write(apply)

    async def redeem_enroll_code(
        self, code_id: str, agent: NewAgent, now: float
    ) -> tuple[RedeemOutcome, str]:
        """Use one use of the code and record the agent and its credential, atomically."""

        def apply(conn: sqlite3.Connection) -> tuple[RedeemOutcome, str]:
            sql = f"SELECT {ENROLL_CODE_COLUMNS} FROM enroll_codes WHERE code_id = ?"  # noqa: S608
            row = conn.execute(sql, (code_id,)).fetchone()
            code = None if row is None else enroll_code(row)
            outcome = redeem_refusal(code, now)
            if outcome != "ok" or code is None:
                return outcome, ""
            agent_id = agent.agent_id
            while conn.execute(
                "SELECT 1 FROM enrolled_agents WHERE agent_id = ?", (agent_id,)
            ).fetchone():
                agent_id = distinct_agent_id(agent.agent_id)
            conn.execute("UPDATE enroll_codes SET uses = uses + 1 WHERE code_id = ?", (code_id,))
            conn.execute(
                "INSERT INTO tokens (token_id, token_hash, site, created_at, note, agent_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (agent.token_id, agent.token_hash, code.site, now, f"agent {agent_id}", agent_id),
            )
            conn.execute(
                "INSERT INTO enrolled_agents (agent_id, site, token_id, code_id, hostname, role,"
                " agent_version, enrolled_at, peer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (agent_id, code.site, agent.token_id, code_id, agent.hostname, agent.role,
                 agent.agent_version, now, agent.peer),
            )  # fmt: skip
            _tokens_changed(conn)
            return "ok", agent_id

        result: tuple[RedeemOutcome, str] = await self._token_write(apply)
        return result

    async def revoke_agent(self, agent_id: str) -> bool:
        """Revoke an enrolled agent's credential; seen by the very next lookup."""

        def apply(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT token_id FROM enrolled_agents WHERE agent_id = ?", (agent_id,)
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE token_id = ?",
                (self.clock(), row[0]),
            )
            _tokens_changed(conn)
            return True

        found: bool = await self._token_write(apply)
        return found

    async def record_config_status(
        self,
        site: str,
        agent_id: str,
        version: str | None,
        error: str | None,
        rejected: str | None,
    ) -> None:
        """Record the central config version an agent runs and what it last rejected."""
        values = (site, agent_id, version, error, rejected, self.clock())

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO agent_config_status (site, agent_id, version, error, rejected,"
                " reported_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, agent_id) DO UPDATE"
                " SET version = excluded.version, error = excluded.error,"
                " rejected = excluded.rejected, reported_at = excluded.reported_at",
                values,
            )

        await self._write(apply)

    # -- reads for indicators, metrics and evidence ------------------------------------

    async def reports(
        self, site: str | None, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[Report]:
        """Stored reports with ``start <= observed_at < end``, oldest first, paged."""
        after: tuple[float, str] = (to_unix(start), "")
        end_ts = to_unix(end)
        site_clause = "" if site is None else " AND site = ?"
        while True:
            params: list[Any] = [after[0], after[0], after[1], end_ts]
            if site is not None:
                params.append(site)
            sql = (
                "SELECT observed_at, id, body FROM reports"  # noqa: S608 - fixed clauses only
                " WHERE (observed_at > ? OR (observed_at = ? AND id > ?)) AND observed_at < ?"
                f"{site_clause} ORDER BY observed_at, id LIMIT {PAGE_SIZE}"
            )

            def page(conn: sqlite3.Connection, q: str = sql, p: list[Any] = params) -> list[Any]:
                return conn.execute(q, p).fetchall()

            rows = await self._read(page)
            for _observed, _id, body in rows:
                yield decode_report(body)
            if len(rows) < PAGE_SIZE:
                return
            after = (rows[-1][0], rows[-1][1])

    async def record_rejections(self, counts: dict[str, int]) -> None:
        """Add to the persistent rejected-request counters."""
        rows = [(reason, n) for reason, n in counts.items() if n > 0]

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO rejections (reason, count) VALUES (?, ?)"
                " ON CONFLICT (reason) DO UPDATE SET count = rejections.count + excluded.count",
                rows,
            )

        if rows:
            await self._write(apply)

    # -- declarations -----------------------------------------------------------------

    async def declare(
        self, declarations: Sequence[NewDeclaration], files: Mapping[str, bytes]
    ) -> int:
        """Store new revisions and attached files in one transaction; how many revisions."""
        new = list(declarations)
        blobs = sorted(files.items())

        def apply(conn: sqlite3.Connection) -> int:
            now = self.clock()
            stored = [
                row
                for period in sorted({d.period for d in new})
                for row in conn.execute(
                    "SELECT unit, period, fact, revision, value, attachment_sha256"
                    " FROM declarations WHERE period = ?",
                    (period,),
                )
            ]
            conn.executemany(
                "INSERT INTO declaration_files (sha256, size, content, stored_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                [(sha, len(body), body, now) for sha, body in blobs],
            )
            rows = new_revisions(new, stored, now)
            conn.executemany(
                f"INSERT INTO declarations ({DECLARATION_COLUMNS})"  # noqa: S608 - fixed text
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return len(rows)

        if not new:
            return 0
        stored: int = await self._write(apply)
        return stored

    async def digest(self) -> str:
        """SHA-256 over every stored row except operational bookkeeping."""
        return await self._read(_digest)


_DIGEST_QUERIES: Final = digest_queries()


def _digest(conn: sqlite3.Connection) -> str:
    digest = ContentDigest()
    for name, sql in _DIGEST_QUERIES.items():
        digest.table(name)
        for row in conn.execute(sql):
            digest.row(row)
    return digest.hexdigest()


def _count(conn: sqlite3.Connection, counts: dict[str, int]) -> None:
    """Add to the remote-write outcome counters (persistent, like the rejection counts)."""
    conn.executemany(
        "INSERT INTO remote_write_counts (reason, count) VALUES (?, ?)"
        " ON CONFLICT (reason) DO UPDATE SET count = remote_write_counts.count + excluded.count",
        [(reason, n) for reason, n in counts.items() if n > 0],
    )


# Bound parameters per statement (SQLite's own limit is 32,766 since 3.32; older builds 999).
MAX_VARIABLES: Final = 999


def _insert_rows(
    conn: sqlite3.Connection, head: str, tail: str, rows: Sequence[Sequence[Any]]
) -> None:
    """``head VALUES (..), (..) tail`` for ``rows``, as few statements as the parameter
    limit allows. ``executemany`` steps the statement once per row, and the sqlite3 module
    gives up the GIL around every step: with the serving loop busy each step waited for
    the GIL again, which made a group commit's many small upserts slower than its fsync.
    Rows must not repeat a conflict key (the roll-up sums and section rows are unique)."""
    if not rows:
        return
    width = len(rows[0])
    per = max(1, MAX_VARIABLES // width)
    one = "(" + ", ".join("?" * width) + ")"
    for i in range(0, len(rows), per):
        chunk = rows[i : i + per]
        conn.execute(
            f"{head} VALUES {', '.join([one] * len(chunk))}{tail}",
            [value for row in chunk for value in row],
        )


def _append_chain(
    conn: sqlite3.Connection, accepted: Sequence[Accepted], received_at: float
) -> dict[str, Link]:
    """Chain the batch's new reports after their sites' heads (the writer is alone)."""
    sites = sorted({a.report.site for a in accepted})
    heads: dict[str, tuple[int, str]] = {}
    for site in sites:
        row = conn.execute("SELECT seq, head FROM chain_heads WHERE site = ?", (site,)).fetchone()
        if row is not None:
            heads[site] = (int(row[0]), str(row[1]))
    links, moved = extend(
        heads, ((a.report.site, a.report.id, a.digest, received_at) for a in accepted)
    )
    _save_heads(conn, moved)
    return links


def _save_heads(conn: sqlite3.Connection, heads: Mapping[str, tuple[int, str]]) -> None:
    conn.executemany(
        "INSERT INTO chain_heads (site, seq, head) VALUES (?, ?, ?)"
        " ON CONFLICT (site) DO UPDATE SET seq = excluded.seq, head = excluded.head",
        [(site, seq, head) for site, (seq, head) in sorted(heads.items())],
    )


def _chain_stored_reports(conn: sqlite3.Connection) -> None:
    """Chain the reports stored before version 4, per site in arrival order (received_at,
    then id), a page at a time so a large store never sits in memory."""
    heads: dict[str, tuple[int, str]] = {}
    after: tuple[str, float, str] = ("", float("-inf"), "")
    while True:
        rows = conn.execute(
            "SELECT site, received_at, id, content_hash FROM reports"  # noqa: S608 - a constant
            " WHERE (site, received_at, id) > (?, ?, ?)"
            f" ORDER BY site, received_at, id LIMIT {BACKFILL_PAGE}",
            after,
        ).fetchall()
        if not rows:
            break
        links, moved = extend(heads, ((s, i, d, r) for s, r, i, d in rows))
        heads.update(moved)
        conn.executemany(
            "UPDATE reports SET chain_seq = ?, prev_hash = ?, chain_hash = ? WHERE id = ?",
            [(*links[i].values(), i) for _, _, i, _ in rows],
        )
        after = (rows[-1][0], rows[-1][1], rows[-1][2])
    _save_heads(conn, heads)


def verify_chain_file(path: str | Path) -> list[str]:
    """The hash chain's problems in a store file (read-only; empty when it holds).

    Kept apart from ``verify_file`` so the chain check adds to, and does not change, the
    integrity check and digest.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN")
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if int(version or 0) < CHAIN_VERSION:
            return []  # opened once by this collector, the store gets its chain
        heads = {s: (int(n), str(h)) for s, n, h in conn.execute(HEADS_SQL)}
        checker = Checker(heads)
        for row in conn.execute(VERIFY_SQL):
            checker.feed(row)
        return checker.finish()
    except sqlite3.DatabaseError as exc:
        return [f"hash chain: {exc}"]
    finally:
        conn.close()


def verify_file(path: str | Path, *, max_problems: int = 100) -> StoreCheck:
    """Check a store file without changing it: SQLite's integrity check, every body
    against its content hash (streamed), then the digest.

    The file is opened read-only (no migration, no checkpoint), so it is safe to run
    against the database of a running collector or against a copy from a backup.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        return StoreCheck(where, [f"{path}: no such file"])
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, isolation_level=None)
    except sqlite3.Error as exc:
        return StoreCheck(where, [f"{path}: cannot open: {exc}"])
    try:
        conn.execute("PRAGMA query_only = ON")
        rows = conn.execute(f"PRAGMA integrity_check({int(max_problems)})").fetchall()
        problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
        if problems:
            return StoreCheck(where, problems)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        stored = None
        if "schema_version" in tables:
            stored = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        latest = _migrations()[-1][0]
        problems = schema_problems(tables, None if stored is None else int(stored), latest)
        if problems:
            return StoreCheck(where, problems)
        conn.execute("BEGIN")  # one snapshot for the counts, the bodies and the digest
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        count = conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
        bodies = BodyCheck(max_problems)
        # The body's bytes as stored (a flipped byte may not even be UTF-8 any more).
        conn.text_factory = bytes
        for report_id, content_hash, body in conn.execute(BODY_QUERY):
            bodies.row(report_id.decode("utf-8", "replace"), content_hash.decode(), body)
        conn.text_factory = str
        return StoreCheck(
            where,
            bodies.problems(),
            int(version or 0),
            int(count),
            _digest(conn),
            altered=bodies.altered,
        )
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed" ...
        return StoreCheck(where, [str(exc)])
    finally:
        conn.close()

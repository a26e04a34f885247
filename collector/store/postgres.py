"""The PostgreSQL store (asyncpg): the same Protocol and meaning as the SQLite store.

Writes take the same shape as in ``sqlite.py``: one writer task takes everything queued
and applies it on one dedicated connection in ONE transaction (each operation in its own
savepoint), so many concurrent ingests share a commit. Unlike SQLite, PostgreSQL lets
several collector replicas write the same database, so no write here relies on being
the only writer: counters are added in the upsert (``count = t.count + excluded.count``),
"newest wins" is decided by the row's own ``effective_at`` in the upsert, report ids are
inserted with ``ON CONFLICT DO NOTHING`` and checked afterwards, rows are written in key
order (so two replicas lock them in the same order), and a transaction PostgreSQL aborts
as a deadlock or serialization failure is retried whole. Reads use a small pool, each in
a read-only REPEATABLE READ transaction: one consistent snapshot per call.

Times are unix seconds in DOUBLE PRECISION and days ISO text, as in SQLite; ordering of
text uses ``COLLATE "C"`` (byte order, SQLite's BINARY), so both backends give the same
``digest()`` for the same content.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any, ClassVar, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

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
    Rollups,
    agent_rows,
    rollups,
    section_rows,
    triage,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = Any  # asyncpg.Connection (asyncpg ships no type information)

GROUP_RETRIES: Final = 5  # deadlock / serialization failure with another replica
READ_POOL_SIZE: Final = 4
# Any constant: serialises migrations of collector replicas that start together.
MIGRATION_LOCK: Final = 0x6861_7461_6E67  # "hatang"
CHAIN_LOCK: Final = 0x6874_6368  # "htch": the class of the per-site hash-chain locks
# Failures of the database or of the way to it: the whole call fails (503, agents retry).
_DB_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# A bug in one operation of a group: it fails alone, the others still commit.
_OP_ERRORS: Final = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg.exceptions.SyntaxOrAccessError,
)
# PostgreSQL aborted the transaction to let a concurrent one (another replica) finish.
_RETRY_ERRORS: Final = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


def redact(url: str) -> str:
    """The url with its password replaced, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://?"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for PostgreSQL, in order.

    The shared files in ``migrations/`` are portable SQL; a file in ``migrations/postgres/``
    with the same version number replaces the shared one for PostgreSQL only (for when a
    migration needs engine-specific DDL).
    """
    root = resources.files("collector.store").joinpath("migrations")
    found: dict[int, tuple[str, str]] = {}
    for folder in (root, root.joinpath("postgres")):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            if name.endswith(".sql") and name[:4].isdigit():
                found[int(name[:4])] = (name, entry.read_text(encoding="utf-8"))
    return [(version, name, sql) for version, (name, sql) in sorted(found.items())]


async def _awaited(call: Awaitable[T]) -> T:
    return await call


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows → one list per column: the arrays that ``unnest`` turns back into rows."""
    return [[row[i] for row in rows] for i in range(width)] if rows else [[] for _ in range(width)]


class PostgresStore(GroupCommitStore):
    """The PostgreSQL store (see the module docstring for the concurrency design)."""

    PARAM: ClassVar = "$1"
    # Text orders by byte value (``COLLATE "C"``), as in SQLite.
    SQL: ClassVar = {
        "agent_states.agents": "SELECT a.site, a.agent_id, a.role, a.interval_seconds,"
        " a.first_seen, a.last_observed_at, a.last_received_at, a.reports_received,"
        " a.spool_dropped, a.last_effective_at, a.latest_report_id FROM agents a"
        ' ORDER BY a.site COLLATE "C", a.agent_id COLLATE "C"',
        "agent_states.bodies": "SELECT id, body FROM reports WHERE id = ANY($1::text[])",
        "agent_states.sections": "SELECT site, agent_id, section, body FROM agent_sections",
        "network_windows": "SELECT site, network, SUM(checks), SUM(up_checks)"
        " FROM network_hourly WHERE hour >= $1 GROUP BY site, network"
        ' ORDER BY site COLLATE "C", network COLLATE "C"',
        "agent_network_windows": "SELECT site, agent_id, network, SUM(checks),"
        " SUM(up_checks) FROM network_hourly WHERE hour >= $1"
        " GROUP BY site, agent_id, network"
        ' ORDER BY site COLLATE "C", agent_id COLLATE "C", network COLLATE "C"',
        "received_counts": "SELECT site, agent_id, SUM(reports) FROM agent_hourly"
        " WHERE hour >= $1 GROUP BY site, agent_id",
        "daily_networks": "SELECT day, site, agent_id, network, checks, up_checks, seconds_up"
        ' FROM network_daily WHERE day >= $1 AND day < $2 ORDER BY day COLLATE "C",'
        ' site COLLATE "C", agent_id COLLATE "C", network COLLATE "C"',
        "daily_hosts": "SELECT day, site, agent_id, hostname, reports, antivirus_state"
        " FROM host_daily WHERE day >= $1 AND day < $2"
        ' ORDER BY day COLLATE "C", site COLLATE "C", agent_id COLLATE "C"',
        "list_tokens": "SELECT token_id, site, created_at, revoked_at, last_used_at, note"
        ' FROM tokens ORDER BY created_at, token_id COLLATE "C"',
        "report_count": "SELECT COUNT(*) FROM reports",
        "rejection_counts": "SELECT reason, count FROM rejections",
        "declarations": f"SELECT {DECLARATION_COLUMNS} FROM declarations"  # noqa: S608
        ' WHERE period_start < $1 AND period_end > $2 ORDER BY unit COLLATE "C",'
        ' period COLLATE "C", fact COLLATE "C", revision',
        "declaration_file": "SELECT content FROM declaration_files WHERE sha256 = $1",
        "last_protected_day": "SELECT MAX(day) FROM host_daily WHERE site = $1 AND agent_id = $2"
        " AND antivirus_state = 'protected'",
        "chain_heads": HEADS_SQL,
        "throughput_results": "SELECT site, network, target, effective_at, up, skipped,"
        " bytes_per_second, error FROM throughput_results WHERE effective_at >= $1"
        ' ORDER BY site COLLATE "C", network COLLATE "C", effective_at, target COLLATE "C"',
        "network_use_days": "SELECT day, site, network, SUM(in_bytes), SUM(out_bytes),"
        " SUM(counted_polls), SUM(unknown_polls), SUM(app_checks_up) FROM network_use_daily"
        " WHERE day >= $1 AND day < $2 GROUP BY day, site, network"
        ' ORDER BY day COLLATE "C", site COLLATE "C", network COLLATE "C"',
        # refresh_reads (``after`` is an xid8 as text, see 0009_agent_changes.sql)
        "refresh.cursor": "SELECT pg_snapshot_xmin(pg_current_snapshot())::text",
        "refresh.agents": "SELECT a.site, a.agent_id, a.role, a.interval_seconds,"
        " a.first_seen, a.last_observed_at, a.last_received_at, a.reports_received,"
        " a.spool_dropped, a.last_effective_at, a.latest_report_id FROM agents a"
        " WHERE a.changed >= $1::text::xid8",
        "refresh.sections": "SELECT s.site, s.agent_id, s.section, s.body FROM agents a"
        " JOIN agent_sections s ON s.site = a.site AND s.agent_id = a.agent_id"
        " WHERE a.changed >= $1::text::xid8",
        "refresh.windows": "SELECT n.site, n.agent_id, n.network, SUM(n.checks),"  # noqa: S608
        " SUM(n.up_checks), COUNT(*) FROM agents a JOIN network_hourly n"
        " ON n.site = a.site AND n.agent_id = a.agent_id"
        f" AND n.network IN ({WINDOW_CLASSES}) WHERE a.changed >= $1::text::xid8"
        " AND n.hour >= $2 GROUP BY n.site, n.agent_id, n.network",
        "refresh.received": "SELECT h.site, h.agent_id, SUM(h.reports), COUNT(*) FROM agents a"
        " JOIN agent_hourly h ON h.site = a.site AND h.agent_id = a.agent_id"
        " WHERE a.changed >= $1::text::xid8 AND h.hour >= $2 GROUP BY h.site, h.agent_id",
        "refresh.windows_all": "SELECT n.site, n.agent_id, n.network, SUM(n.checks),"  # noqa: S608
        " SUM(n.up_checks), COUNT(*) FROM agents a JOIN network_hourly n"
        " ON n.site = a.site AND n.agent_id = a.agent_id"
        f" AND n.network IN ({WINDOW_CLASSES}) WHERE n.hour >= $1"
        " GROUP BY n.site, n.agent_id, n.network",
        "refresh.received_all": "SELECT h.site, h.agent_id, SUM(h.reports), COUNT(*)"
        " FROM agents a JOIN agent_hourly h ON h.site = a.site AND h.agent_id = a.agent_id"
        " WHERE h.hour >= $1 GROUP BY h.site, h.agent_id",
        "refresh.windows_left": "SELECT site, agent_id, network, SUM(checks),"  # noqa: S608
        " SUM(up_checks),"
        " COUNT(*) FROM network_hourly WHERE hour >= $1 AND hour < $2"
        f" AND network IN ({WINDOW_CLASSES}) GROUP BY site, agent_id, network",
        "refresh.received_left": "SELECT site, agent_id, SUM(reports), COUNT(*)"
        " FROM agent_hourly WHERE hour >= $1 AND hour < $2 GROUP BY site, agent_id",
        "refresh.throughput": "SELECT site, network, target, effective_at, up, skipped,"
        " bytes_per_second, error FROM throughput_results"
        " WHERE site IN (SELECT site FROM agents WHERE changed >= $1::text::xid8)"
        ' AND effective_at >= $2 ORDER BY site COLLATE "C", network COLLATE "C",'
        ' effective_at, target COLLATE "C"',
        "refresh.use_days": "SELECT day, site, network, SUM(in_bytes), SUM(out_bytes),"
        " SUM(counted_polls), SUM(unknown_polls), SUM(app_checks_up) FROM network_use_daily"
        " WHERE day = ANY($1::text[])"
        " AND site IN (SELECT site FROM agents WHERE changed >= $2::text::xid8)"
        " GROUP BY day, site, network"
        ' ORDER BY day COLLATE "C", site COLLATE "C", network COLLATE "C"',
    }
    FULL_CURSOR: ClassVar = "0"

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        max_future: float = 300.0,
        hourly_retention: float = 35 * 86400.0,
        rollup_utc_offset_hours: float = 7.0,
        clock: Callable[[], float] = time.time,
        bucket_seconds: float = 3600.0,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            busy_timeout=busy_timeout,
            max_future=max_future,
            hourly_retention=hourly_retention,
            rollup_utc_offset_hours=rollup_utc_offset_hours,
            clock=clock,
            bucket_seconds=bucket_seconds,
        )
        self.url = url
        self.display = redact(url)
        self.connect_timeout = connect_timeout
        self._writer: Connection | None = None
        self._pool: Any = None  # asyncpg.Pool
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle -------------------------------------------------------------------

    def _settings(self) -> dict[str, str]:
        # busy_timeout has the same meaning as for SQLite: how long to wait for a lock
        # that another process (another replica, `token create`) holds.
        return {
            "application_name": "hatang-collector",
            "lock_timeout": str(max(1, int(self.busy_timeout * 1000))),
        }

    async def _connect(self) -> Connection:
        return await asyncpg.connect(
            self.url, timeout=self.connect_timeout, server_settings=self._settings()
        )

    async def open(self) -> None:
        """Connect, apply migrations, start the writer task."""
        writer: Connection | None = None
        try:
            writer = await self._connect()
            await self._migrate(writer)
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=READ_POOL_SIZE,
                timeout=self.connect_timeout,
                server_settings=self._settings(),
            )
        except BaseException as exc:
            if writer is not None:
                with contextlib.suppress(*_DB_ERRORS):
                    await writer.close(timeout=5)
            if isinstance(exc, StoreError) or not isinstance(exc, (*_DB_ERRORS, ValueError)):
                raise
            raise StoreError(f"{self.display}: cannot open the store: {exc}") from exc
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._start_writer()

    async def _migrate(self, conn: Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION)"
            )
            current = await conn.fetchval("SELECT MAX(version) FROM schema_version") or 0
            known = migrations()
            latest = known[-1][0] if known else 0
            if current > latest:
                raise StoreError(
                    f"{self.display}: database schema version {current} is newer than this "
                    f"hatang-collector supports ({latest}); upgrade hatang-collector"
                )
            for version, name, sql in known:
                if version <= current:
                    continue
                await conn.execute(sql)  # simple protocol: the whole file, in this transaction
                if version == CHAIN_VERSION:
                    await _chain_stored_reports(conn)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    version,
                    name,
                    self.clock(),
                )
                event(log, logging.INFO, "store.migrated", version=version, file=name)

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        if not await self._stop_writer():
            return
        if self._writer is not None:
            with contextlib.suppress(*_DB_ERRORS):
                await self._writer.close(timeout=10)
            self._writer = None
        if self._pool is not None:
            with contextlib.suppress(*_DB_ERRORS):
                await asyncio.wait_for(self._pool.close(), timeout=10)
            self._pool = None

    def _error_kind(self, exc: BaseException) -> str:
        state = str(getattr(exc, "sqlstate", "") or "")
        if state.startswith("53"):  # insufficient resources: disk full, out of memory
            return "full"
        if state in ("XX001", "XX002"):  # data corrupted, index corrupted
            return "corrupt"
        if state.startswith("58"):  # system error: I/O error, undefined file
            return "io"
        if state in ("55P03", "40P01", "40001"):  # lock timeout, deadlock, serialization
            return "locked"
        return "unavailable"

    # -- plumbing ---------------------------------------------------------------------

    async def _on_own_loop(self, call: Awaitable[T]) -> T:
        """Run ``call`` on the loop the store was opened on (asyncpg connections belong to
        one loop; the snapshot refresher reads from a loop in its own thread)."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(_awaited(call), self._loop)
        return await asyncio.wrap_future(future)

    async def _read(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        if self._closed or self._pool is None:
            raise StoreUnavailable("the store is closed")
        if asyncio.get_running_loop() is not self._loop:
            return await self._on_own_loop(self._read(fn))
        try:
            async with (
                self._pool.acquire(timeout=self.connect_timeout) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                result = await fn(conn)
        except _DB_ERRORS as exc:
            self._failed("read", exc)
            raise StoreUnavailable(f"store read failed: {exc}") from exc
        self.faults.succeeded("read")
        return result

    def _id_list(self, ids: list[Any]) -> Any:
        return ids  # a text[] parameter

    async def _fetch(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        async def read(conn: Connection) -> list[list[Any]]:
            return [[tuple(r) for r in await conn.fetch(sql, *p)] for sql, p in queries]

        return await self._read(read)

    async def _write(self, apply: Callable[[Connection], Any], size: int = 1) -> Any:
        if not self._closed and asyncio.get_running_loop() is not self._loop:
            return await self._on_own_loop(self._write(apply, size))
        return await super()._write(apply, size)

    async def _writer_connection(self) -> Connection:
        """The writer connection, reconnected when the server or the network dropped it."""
        if self._writer is None or self._writer.is_closed():
            self._writer = None
            try:
                self._writer = await self._connect()
            except _DB_ERRORS as exc:
                raise StoreUnavailable(f"cannot connect to {self.display}: {exc}") from exc
        return self._writer

    async def _run_group(self, ops: list[Op]) -> list[Any]:
        for attempt in range(1, GROUP_RETRIES + 1):
            conn = await self._writer_connection()
            try:
                return await self._apply_group(conn, ops)
            except _RETRY_ERRORS as exc:
                if attempt == GROUP_RETRIES:
                    raise StoreUnavailable(f"store write failed: {exc}") from exc
                event(log, logging.INFO, "store.write_retry", attempt=attempt, error=str(exc))
                await asyncio.sleep(0.01 * attempt)
            except _DB_ERRORS as exc:
                if self._writer is not None and not self._writer.is_closed():
                    # The outcome of a failed COMMIT is unknown: start afresh. Agents resend,
                    # and a report that did commit comes back as a duplicate.
                    self._writer.terminate()
                self._writer = None
                raise StoreUnavailable(f"store write failed: {exc}") from exc
        raise AssertionError("unreachable")

    async def _apply_group(self, conn: Connection, ops: list[Op]) -> list[Any]:
        transaction = conn.transaction()
        await transaction.start()
        results: list[Any] = []
        try:
            for op in ops:
                await conn.execute("SAVEPOINT op")
                try:
                    results.append(await op.apply(conn))
                except _OP_ERRORS as exc:
                    await conn.execute("ROLLBACK TO SAVEPOINT op")
                    results.append(StoreError(f"store operation failed: {exc}"))
                except _DB_ERRORS:
                    raise  # connection lost, lock timeout, deadlock: the whole group fails
                except Exception as exc:
                    await conn.execute("ROLLBACK TO SAVEPOINT op")
                    results.append(exc)
                await conn.execute("RELEASE SAVEPOINT op")
            await transaction.commit()
        except BaseException:
            with contextlib.suppress(*_DB_ERRORS):
                await transaction.rollback()
            raise
        return results

    async def _prune(self, conn: Connection) -> None:
        # ``hour`` is an integer column: the first whole second not older than the cutoff.
        cutoff = math.ceil(self.clock() - self.hourly_retention)
        await conn.execute("DELETE FROM network_hourly WHERE hour < $1", cutoff)
        await conn.execute("DELETE FROM agent_hourly WHERE hour < $1", cutoff)

    # -- ingest -----------------------------------------------------------------------

    async def _apply_ingest(
        self, conn: Connection, batch: list[tuple[Report, bytes]], clock_offset: float
    ) -> IngestResult:
        received_at = float(self.clock())
        # The sites' chain heads, locked first (in site order): another replica appending to
        # the same site waits here until this transaction ends, so each chain stays one line.
        heads = await _lock_heads(conn, sorted({r.site for r, _ in batch}))
        ids = sorted({r.id for r, _ in batch})
        stored = await conn.fetch(
            "SELECT id, content_hash FROM reports WHERE id = ANY($1::text[])", ids
        )
        found = triage(
            batch, {r[0]: r[1] for r in stored}, received_at, self.max_future, clock_offset
        )
        if not found.accepted:
            return IngestResult(0, found.duplicates, found.conflicts, 0)
        links, moved = _links(heads, found.accepted, received_at)
        rows = sorted(
            ((*a.row(received_at), *links[a.report.id].values()) for a in found.accepted),
            key=lambda row: row[0],
        )
        inserted = {
            row[0]
            for row in await conn.fetch(
                "INSERT INTO reports (id, site, agent_id, seq, observed_at, effective_at,"
                " received_at, content_hash, body, chain_seq, prev_hash, chain_hash)"
                " SELECT * FROM unnest($1::text[], $2::text[],"
                " $3::text[], $4::int8[], $5::float8[], $6::float8[], $7::float8[], $8::text[],"
                " $9::text[], $10::int8[], $11::text[], $12::text[])"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                *_columns(rows, 12),
            )
        }
        accepted = [a for a in found.accepted if a.report.id in inserted]
        lost = [a for a in found.accepted if a.report.id not in inserted]
        if lost:
            # The same id stored meanwhile under another site's lock (a hostile or broken
            # agent reusing ids): chain again without the lost ones, so no position is skipped.
            links, moved = _links(heads, accepted, received_at)
            await conn.execute(
                "UPDATE reports SET chain_seq = u.seq, prev_hash = u.prev, chain_hash = u.hash"
                " FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[])"
                " AS u(id, seq, prev, hash) WHERE reports.id = u.id",
                *_columns([(i, *k.values()) for i, k in sorted(links.items())], 4),
            )
        await _save_heads(conn, moved)
        if lost:  # another replica stored these ids between our check and our insert
            stored = await conn.fetch(
                "SELECT id, content_hash FROM reports WHERE id = ANY($1::text[])",
                [a.report.id for a in lost],
            )
            hashes = {r[0]: r[1] for r in stored}
            for a in lost:
                found.count_stored(a.digest, hashes.get(a.report.id))
        skewed = sum(a.skewed for a in accepted)
        if accepted:
            await self._update_agents(conn, [r.values() for r in agent_rows(accepted, received_at)])
            sections = section_rows(accepted)
            if sections:
                await conn.execute(
                    "INSERT INTO agent_sections (site, agent_id, section, effective_at, body)"
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[],"
                    " $5::text[]) ON CONFLICT (site, agent_id, section) DO UPDATE SET"
                    " effective_at = excluded.effective_at, body = excluded.body"
                    " WHERE excluded.effective_at >= agent_sections.effective_at",
                    *_columns(sections, 5),
                )
            await self._update_rollups(conn, rollups(accepted, self.bucket, self.rollup_offset))
            if self.late_rule is not None:
                await self._enqueue_late(conn, self.late_rule, accepted, received_at)
        return IngestResult(len(accepted), found.duplicates, found.conflicts, skewed)

    async def _enqueue_late(
        self, conn: Connection, rule: late.LateRule, accepted: list[Accepted], received_at: float
    ) -> None:
        """Queue the batch's late samples and takeover markers in the ingest transaction
        (as ``SQLiteStore._enqueue_late``; see collector.late)."""
        overdue, on_time = late.split(accepted, received_at, rule)
        context: dict[str, late.SiteContext] = {}
        for site in sorted({a.report.site for a in overdue}):
            low, high = late.held_range(overdue, site, rule)
            held = await conn.fetch(
                "SELECT received_at, effective_at FROM reports WHERE site = $1"
                " AND effective_at >= $2 AND effective_at <= $3 AND received_at < $4",
                site,
                low,
                high,
                received_at,
            )
            probe = await conn.fetchval(
                "SELECT 1 FROM agents WHERE site = $1 AND role = 'site-probe' LIMIT 1", site
            )
            agents = await conn.fetch(
                AGENTS_OF_SITE.replace("?", "$1", 1).replace("?", "$2", 1),
                site,
                received_at - late.INVENTORY_SECONDS,
            )
            context[site] = late.site_context(overdue, site, held, probe is not None, agents)
        rows = late.late_rows(overdue, rule, context)
        await self._queue_rows(conn, rows, received_at)
        for site, at_ms in sorted(late.takeovers(on_time).items()):
            recent = await conn.fetch(
                "SELECT series, ts_ms, stale FROM remote_write_queue WHERE site = $1"
                " AND ts_ms >= $2 AND ts_ms < $3",
                site,
                at_ms - late.LOOKBACK_MS,
                at_ms,
            )
            markers = late.stale_rows(site, at_ms, [(r[0], r[1], r[2]) for r in recent])
            await self._queue_rows(conn, markers, received_at)
            rows += markers
        if rows:
            pending = await conn.fetchval(
                "SELECT COUNT(*) FROM remote_write_queue WHERE sent_at IS NULL"
            )
            excess = int(pending) - rule.max_pending
            if excess > 0:  # bounded: the oldest go first, counted where the province sees it
                status = await conn.execute(
                    "DELETE FROM remote_write_queue WHERE (series, ts_ms) IN (SELECT series, ts_ms"
                    " FROM remote_write_queue WHERE sent_at IS NULL AND lease_owner IS NULL"
                    " ORDER BY ts_ms LIMIT $1 FOR UPDATE SKIP LOCKED)",
                    excess,
                )
                await _count(conn, {"queue_full": _changed(status)})

    @staticmethod
    async def _queue_rows(conn: Connection, rows: list[late.QueueRow], enqueued_at: float) -> int:
        if not rows:
            return 0
        ordered = sorted((r.values(enqueued_at) for r in rows), key=lambda v: (v[0], v[1]))
        return _changed(
            await conn.execute(
                "INSERT INTO remote_write_queue (series, ts_ms, site, value, stale, enqueued_at)"
                " SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::float8[],"
                " $5::int4[], $6::float8[]) ON CONFLICT (series, ts_ms) DO NOTHING",
                *_columns(ordered, 6),
            )
        )

    # -- the remote-write queue (collector.remote_write.Sender) ------------------------

    async def rw_claim(self, owner: str, limit: int, lease: float, oldest_ms: int) -> Claim:
        """Drop pending samples older than ``oldest_ms`` (counted), then lease up to
        ``limit`` of the oldest pending ones to ``owner``. ``FOR UPDATE SKIP LOCKED``:
        replicas claiming at once take disjoint rows; the lease keeps them apart after."""

        async def apply(conn: Connection) -> Claim:
            now = float(self.clock())
            status = await conn.execute(
                "DELETE FROM remote_write_queue WHERE sent_at IS NULL AND ts_ms < $1"
                " AND (lease_owner IS NULL OR lease_until < $2)",
                oldest_ms,
                now,
            )
            too_old = _changed(status)
            await _count(conn, {"too_old": too_old})
            await conn.execute(
                "UPDATE remote_write_queue SET lease_owner = $1, lease_until = $2"
                " WHERE (series, ts_ms) IN (SELECT series, ts_ms FROM remote_write_queue"
                " WHERE sent_at IS NULL AND lease_until < $3 ORDER BY ts_ms LIMIT $4"
                " FOR UPDATE SKIP LOCKED)",
                owner,
                now + lease,
                now,
                limit,
            )
            rows = await conn.fetch(
                "SELECT series, ts_ms, value, stale FROM remote_write_queue"
                ' WHERE lease_owner = $1 ORDER BY series COLLATE "C", ts_ms',
                owner,
            )
            return Claim([(r[0], int(r[1]), float(r[2]), bool(r[3])) for r in rows], too_old)

        claim: Claim = await self._write(apply)
        return claim

    async def rw_enqueue(self, rows: list[late.QueueRow]) -> int:
        """Queue samples (``hatang-collector backfill``); the ones already queued stay."""

        async def apply(conn: Connection) -> int:
            return await self._queue_rows(conn, rows, float(self.clock()))

        added: int = await self._write(apply, size=max(1, len(rows) // 10))
        return added

    async def rw_finish(self, owner: str, outcome: str) -> int:
        """End a claim: ``sent``, ``retry`` or a drop reason (see ``SQLiteStore.rw_finish``)."""

        async def apply(conn: Connection) -> int:
            now = float(self.clock())
            if outcome == "retry":
                return _changed(
                    await conn.execute(
                        "UPDATE remote_write_queue SET lease_owner = NULL, lease_until = 0"
                        " WHERE lease_owner = $1",
                        owner,
                    )
                )
            if outcome == "sent":
                status = await conn.execute(
                    "UPDATE remote_write_queue SET sent_at = $1, lease_owner = NULL"
                    " WHERE lease_owner = $2",
                    now,
                    owner,
                )
            else:
                status = await conn.execute(
                    "DELETE FROM remote_write_queue WHERE lease_owner = $1", owner
                )
            done = _changed(status)
            await _count(conn, {outcome: done})
            await conn.execute(
                "DELETE FROM remote_write_queue WHERE sent_at IS NOT NULL AND ts_ms < $1",
                int(now * 1000) - 2 * late.LOOKBACK_MS - int(self.max_future * 1000),
            )
            return done

        done: int = await self._write(apply)
        return done

    async def rw_stats(self) -> QueueStats:
        """Pending samples, the oldest pending observation time, counts by outcome."""

        async def read(conn: Connection) -> QueueStats:
            row = await conn.fetchrow(
                "SELECT COUNT(*), MIN(ts_ms) FROM remote_write_queue WHERE sent_at IS NULL"
            )
            counts = {
                r[0]: int(r[1])
                for r in await conn.fetch("SELECT reason, count FROM remote_write_counts")
            }
            oldest = row[1]
            return QueueStats(int(row[0]), None if oldest is None else int(oldest), counts)

        return await self._read(read)

    @staticmethod
    async def _update_agents(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        # The merge of ``AgentRow.merged_into``, done by the upsert so that replicas
        # writing the same agent at once cannot lose each other's counts.
        newer = "excluded.last_effective_at >= agents.last_effective_at"
        latest = ", ".join(
            f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE agents.{c} END"
            for c in (
                "role",
                "interval_seconds",
                "last_effective_at",
                "last_observed_at",
                "spool_dropped",
                "latest_report_id",
            )
        )
        await conn.execute(
            "INSERT INTO agents (site, agent_id, role, interval_seconds, first_seen,"  # noqa: S608 - fixed text
            " last_effective_at, last_observed_at, last_received_at, reports_received,"
            " spool_dropped, latest_report_id) SELECT * FROM unnest($1::text[], $2::text[],"
            " $3::text[], $4::float8[], $5::float8[], $6::float8[], $7::float8[], $8::float8[],"
            " $9::int8[], $10::int8[], $11::text[])"
            " ON CONFLICT (site, agent_id) DO UPDATE SET"
            " reports_received = agents.reports_received + excluded.reports_received,"
            " last_received_at = GREATEST(agents.last_received_at, excluded.last_received_at),"
            # What the snapshot refresh reads changed agents by (0009_agent_changes.sql);
            # an inserted row gets it from the column's default.
            f" changed = pg_current_xact_id(), {latest}",
            *_columns(rows, 11),
        )

    @staticmethod
    async def _update_rollups(conn: Connection, add: Rollups) -> None:
        if add.network_hourly:
            await conn.execute(
                "INSERT INTO network_hourly (site, agent_id, network, hour, checks, up_checks)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],"
                " $5::int8[], $6::int8[]) ON CONFLICT (site, agent_id, network, hour)"
                " DO UPDATE SET checks = network_hourly.checks + excluded.checks,"
                " up_checks = network_hourly.up_checks + excluded.up_checks",
                *_columns(add.network_hourly, 6),
            )
        await conn.execute(
            "INSERT INTO agent_hourly (site, agent_id, hour, reports)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])"
            " ON CONFLICT (site, agent_id, hour) DO UPDATE"
            " SET reports = agent_hourly.reports + excluded.reports",
            *_columns(add.agent_hourly, 4),
        )
        if add.network_daily:
            await conn.execute(
                "INSERT INTO network_daily (day, site, agent_id, network, checks, up_checks,"
                " seconds_up) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
                " $4::text[], $5::int8[], $6::int8[], $7::float8[])"
                " ON CONFLICT (day, site, agent_id, network) DO UPDATE"
                " SET checks = network_daily.checks + excluded.checks,"
                " up_checks = network_daily.up_checks + excluded.up_checks,"
                " seconds_up = LEAST(network_daily.seconds_up + excluded.seconds_up, 86400)",
                *_columns(add.network_daily, 7),
            )
        if add.throughput:
            await conn.execute(
                "INSERT INTO throughput_results (report_id, network, target, site, agent_id,"
                " effective_at, up, skipped, bytes_per_second, bytes_read, error)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                " $5::text[], $6::float8[], $7::int8[], $8::int8[], $9::float8[], $10::int8[],"
                " $11::text[]) ON CONFLICT DO NOTHING",
                *_columns(add.throughput, 11),
            )
        if add.network_use_daily:
            await conn.execute(
                "INSERT INTO network_use_daily (day, site, agent_id, network, in_bytes,"  # noqa: S608 - fixed text
                " out_bytes, counted_polls, unknown_polls, app_checks_up)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                " $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[])" + NETWORK_USE_MERGE,
                *_columns(add.network_use_daily, 9),
            )
        await conn.execute(
            "INSERT INTO host_daily (day, site, agent_id, hostname, reports, antivirus_state,"  # noqa: S608 - fixed text
            " antivirus_effective_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
            " $4::text[], $5::int8[], $6::text[], $7::float8[])" + HOST_DAILY_MERGE,
            *_columns(
                [(*k, h.hostname, h.reports, h.av_state, h.av_at) for k, h in add.host_daily],
                7,
            ),
        )

    # -- tokens -----------------------------------------------------------------------

    async def create_token(self, site: str, note: str | None = None) -> tuple[str, str]:
        """Create a token for ``site``; only its SHA-256 is stored."""

        async def apply(conn: Connection) -> tuple[str, str]:
            while True:
                token_id, token = new_token()
                created = await conn.fetchval(
                    "INSERT INTO tokens (token_id, token_hash, site, created_at, note)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_id) DO NOTHING"
                    " RETURNING token_id",
                    token_id,
                    hash_token(token),
                    site,
                    float(self.clock()),
                    note,
                )
                if created is not None:
                    return token_id, token

        made: tuple[str, str] = await self._write(apply)
        return made

    async def lookup_token(self, token: str) -> TokenRecord | None:
        """Find a token by its hash (revoked ones too: the caller tells 401 from 403)."""
        digest = hash_token(token)
        row = await self._read(
            lambda c: c.fetchrow(
                "SELECT token_id, site, created_at, revoked_at, last_used_at, note, agent_id"
                " FROM tokens WHERE token_hash = $1",
                digest,
            )
        )
        return None if row is None else token_record(row)

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when no token has that id. Revoking twice is harmless."""

        async def apply(conn: Connection) -> bool:
            status = await conn.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE token_id = $2",
                float(self.clock()),
                token_id,
            )
            return bool(status != "UPDATE 0")

        found: bool = await self._write(apply)
        return found

    # -- enrollment -------------------------------------------------------------------

    async def add_enroll_codes(self, codes: Sequence[EnrollCode]) -> None:
        """Store new enrollment codes in one transaction."""
        marks = ", ".join(f"${i}" for i in range(1, 12))
        sql = f"INSERT INTO enroll_codes ({ENROLL_CODE_COLUMNS}) VALUES ({marks})"  # noqa: S608
        rows = [dataclasses.astuple(code) for code in codes]

        async def apply(conn: Connection) -> None:
            await conn.executemany(sql, rows)

        await self._write(apply)

    async def revoke_enroll_code(self, code_id: str) -> bool:
        """Revoke a code (uses left are void); False when no code has that id."""

        async def apply(conn: Connection) -> bool:
            status = await conn.execute(
                "UPDATE enroll_codes SET revoked_at = COALESCE(revoked_at, $1) WHERE code_id = $2",
                self.clock(),
                code_id,
            )
            return bool(status != "UPDATE 0")

        found: bool = await self._write(apply)
        return found

    async def enroll_failed(self, code_id: str, max_failures: int) -> None:
        """Count a wrong guess at ``code_id``; lock the code at ``max_failures``."""
        now = self.clock()

        async def apply(conn: Connection) -> None:
            await conn.execute(
                "UPDATE enroll_codes SET failures = failures + 1, locked_at = CASE"
                " WHEN locked_at IS NULL AND failures + 1 >= $1 THEN $2 ELSE locked_at END"
                " WHERE code_id = $3",
                max_failures,
                now,
                code_id,
            )

        await self._write(apply)

    async def redeem_enroll_code(
        self, code_id: str, agent: NewAgent, now: float
    ) -> tuple[RedeemOutcome, str]:
        """Use one use of the code and record the agent and its credential, atomically
        (the row lock serialises replicas redeeming the same code)."""

        async def apply(conn: Connection) -> tuple[RedeemOutcome, str]:
            sql = f"SELECT {ENROLL_CODE_COLUMNS} FROM enroll_codes WHERE code_id = $1 FOR UPDATE"  # noqa: S608
            row = await conn.fetchrow(sql, code_id)
            code = None if row is None else enroll_code(tuple(row))
            outcome = redeem_refusal(code, now)
            if outcome != "ok" or code is None:
                return outcome, ""
            agent_id = agent.agent_id
            while await conn.fetchval(
                "SELECT 1 FROM enrolled_agents WHERE agent_id = $1", agent_id
            ):
                agent_id = distinct_agent_id(agent.agent_id)
            await conn.execute(
                "UPDATE enroll_codes SET uses = uses + 1 WHERE code_id = $1", code_id
            )
            await conn.execute(
                "INSERT INTO tokens (token_id, token_hash, site, created_at, note, agent_id)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                agent.token_id, agent.token_hash, code.site, now, f"agent {agent_id}", agent_id,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO enrolled_agents (agent_id, site, token_id, code_id, hostname, role,"
                " agent_version, enrolled_at, peer) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                agent_id, code.site, agent.token_id, code_id, agent.hostname, agent.role,
                agent.agent_version, now, agent.peer,
            )  # fmt: skip
            return "ok", agent_id

        result: tuple[RedeemOutcome, str] = await self._write(apply)
        return result

    async def revoke_agent(self, agent_id: str) -> bool:
        """Revoke an enrolled agent's credential (every lookup reads the database)."""

        async def apply(conn: Connection) -> bool:
            token_id = await conn.fetchval(
                "SELECT token_id FROM enrolled_agents WHERE agent_id = $1", agent_id
            )
            if token_id is None:
                return False
            await conn.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE token_id = $2",
                self.clock(),
                token_id,
            )
            return True

        found: bool = await self._write(apply)
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
        now = self.clock()

        async def apply(conn: Connection) -> None:
            await conn.execute(
                "INSERT INTO agent_config_status (site, agent_id, version, error, rejected,"
                " reported_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (site, agent_id)"
                " DO UPDATE SET version = excluded.version, error = excluded.error,"
                " rejected = excluded.rejected, reported_at = excluded.reported_at",
                site, agent_id, version, error, rejected, now,
            )  # fmt: skip

        await self._write(apply)

    async def touch_tokens(self, last_used: dict[str, dt.datetime]) -> None:
        """Record last use of tokens (moves only forward)."""
        ids = sorted(last_used)
        times = [to_unix(last_used[i]) for i in ids]

        async def apply(conn: Connection) -> None:
            await conn.execute(
                "UPDATE tokens SET last_used_at = u.at"
                " FROM unnest($1::text[], $2::float8[]) AS u(token_id, at)"
                " WHERE tokens.token_id = u.token_id"
                " AND (tokens.last_used_at IS NULL OR tokens.last_used_at < u.at)",
                ids,
                times,
            )

        await self._write(apply)

    # -- reads for indicators, metrics and evidence ------------------------------------

    async def reports(
        self, site: str | None, start: dt.datetime, end: dt.datetime
    ) -> AsyncIterator[Report]:
        """Stored reports with ``start <= observed_at < end``, oldest first, paged."""
        after: tuple[float, str] = (to_unix(start), "")
        end_ts = to_unix(end)
        site_clause = "" if site is None else " AND site = $4"
        sql = (
            "SELECT observed_at, id, body FROM reports"  # noqa: S608 - fixed clauses only
            ' WHERE (observed_at > $1 OR (observed_at = $1 AND id COLLATE "C" > $2))'
            f" AND observed_at < $3{site_clause}"
            f' ORDER BY observed_at, id COLLATE "C" LIMIT {PAGE_SIZE}'
        )
        while True:
            params: list[Any] = [after[0], after[1], end_ts]
            if site is not None:
                params.append(site)

            async def page(conn: Connection, p: list[Any] = params) -> list[Any]:
                return list(await conn.fetch(sql, *p))

            rows = await self._read(page)
            for row in rows:
                yield decode_report(row[2].encode("utf-8"))
            if len(rows) < PAGE_SIZE:
                return
            after = (rows[-1][0], rows[-1][1])

    async def record_rejections(self, counts: dict[str, int]) -> None:
        """Add to the persistent rejected-request counters."""
        rows = sorted((reason, n) for reason, n in counts.items() if n > 0)

        async def apply(conn: Connection) -> None:
            await conn.execute(
                "INSERT INTO rejections (reason, count)"
                " SELECT * FROM unnest($1::text[], $2::int8[])"
                " ON CONFLICT (reason) DO UPDATE SET count = rejections.count + excluded.count",
                *_columns(rows, 2),
            )

        if rows:
            await self._write(apply)

    # -- declarations -----------------------------------------------------------------

    async def declare(
        self, declarations: Sequence[NewDeclaration], files: Mapping[str, bytes]
    ) -> int:
        """Store new revisions and attached files in one transaction; how many revisions.

        Two replicas importing at once may pick the same next revision: the primary key
        refuses the second, whose whole import fails (nothing stored) and can be re-run.
        """
        new = list(declarations)
        blobs = sorted(files.items())

        async def apply(conn: Connection) -> int:
            now = float(self.clock())
            stored = await conn.fetch(
                "SELECT unit, period, fact, revision, value, attachment_sha256"
                " FROM declarations WHERE period = ANY($1::text[])",
                sorted({d.period for d in new}),
            )
            if blobs:
                await conn.execute(
                    "INSERT INTO declaration_files (sha256, size, content, stored_at)"
                    " SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[], $4::float8[])"
                    " ON CONFLICT (sha256) DO NOTHING",
                    *_columns([(sha, len(body), body, now) for sha, body in blobs], 4),
                )
            rows = new_revisions(new, [tuple(r) for r in stored], now)
            if rows:
                await conn.execute(
                    f"INSERT INTO declarations ({DECLARATION_COLUMNS})"  # noqa: S608 - fixed text
                    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],"
                    " $5::float8[], $6::float8[], $7::text[], $8::text[], $9::float8[],"
                    " $10::text[], $11::text[], $12::text[])",
                    *_columns(rows, 12),
                )
            return len(rows)

        if not new:
            return 0
        stored: int = await self._write(apply)
        return stored

    async def digest(self) -> str:
        """SHA-256 over every stored row except operational bookkeeping."""
        return await self._read(_digest)


# The same rows, columns and order as the SQLite store, so equal content gives an equal
# digest on both backends.
_DIGEST_QUERIES: Final = digest_queries(' COLLATE "C"')


async def _digest(conn: Connection) -> str:
    digest = ContentDigest()
    for name, sql in _DIGEST_QUERIES.items():
        digest.table(name)
        async for row in conn.cursor(sql, prefetch=1000):
            digest.row(row)
    return digest.hexdigest()


def _changed(status: str) -> int:
    """Rows a command changed, from its status tag (``DELETE 3``, ``UPDATE 0``)."""
    return int(status.rsplit(" ", 1)[-1])


async def _count(conn: Connection, counts: dict[str, int]) -> None:
    """Add to the remote-write outcome counters (added in the upsert: replicas share them)."""
    rows = sorted((reason, n) for reason, n in counts.items() if n > 0)
    if rows:
        await conn.execute(
            "INSERT INTO remote_write_counts (reason, count)"
            " SELECT * FROM unnest($1::text[], $2::int8[]) ON CONFLICT (reason)"
            " DO UPDATE SET count = remote_write_counts.count + excluded.count",
            *_columns(rows, 2),
        )


def _links(
    heads: dict[str, tuple[int, str]], accepted: Sequence[Accepted], received_at: float
) -> tuple[dict[str, Link], dict[str, tuple[int, str]]]:
    return extend(heads, ((a.report.site, a.report.id, a.digest, received_at) for a in accepted))


async def _lock_heads(conn: Connection, sites: list[str]) -> dict[str, tuple[int, str]]:
    """Take each site's chain lock for this transaction (in site order), then read the
    heads: a transaction-scoped advisory lock needs no row, so a batch of replays leaves
    nothing behind."""
    for site in sites:
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", CHAIN_LOCK, site)
    rows = await conn.fetch(
        "SELECT site, seq, head FROM chain_heads WHERE site = ANY($1::text[])", sites
    )
    return {r[0]: (int(r[1]), str(r[2])) for r in rows}


async def _save_heads(conn: Connection, heads: dict[str, tuple[int, str]]) -> None:
    if heads:
        items = sorted(heads.items())
        await conn.execute(
            "INSERT INTO chain_heads (site, seq, head)"
            " SELECT * FROM unnest($1::text[], $2::int8[], $3::text[])"
            " ON CONFLICT (site) DO UPDATE SET seq = excluded.seq, head = excluded.head",
            [s for s, _ in items],
            [n for _, (n, _) in items],
            [h for _, (_, h) in items],
        )


async def _chain_stored_reports(conn: Connection) -> None:
    """Chain the reports stored before version 4 (see the SQLite store's twin), a page at
    a time, inside the migration transaction (replicas wait on the migration lock)."""
    heads: dict[str, tuple[int, str]] = {}
    after: tuple[str, float, str] = ("", float("-inf"), "")
    while True:
        rows = await conn.fetch(
            "SELECT site, received_at, id, content_hash FROM reports"  # noqa: S608 - a constant
            ' WHERE (site COLLATE "C", received_at, id COLLATE "C") > ($1, $2, $3)'
            f' ORDER BY site COLLATE "C", received_at, id COLLATE "C" LIMIT {BACKFILL_PAGE}',
            *after,
        )
        if not rows:
            break
        links, moved = extend(heads, ((r[0], r[2], r[3], r[1]) for r in rows))
        heads.update(moved)
        await conn.execute(
            "UPDATE reports SET chain_seq = u.seq, prev_hash = u.prev, chain_hash = u.hash"
            " FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[])"
            " AS u(id, seq, prev, hash) WHERE reports.id = u.id",
            *_columns([(r[2], *links[r[2]].values()) for r in rows], 4),
        )
        after = (rows[-1][0], rows[-1][1], rows[-1][2])
    await _save_heads(conn, heads)


async def verify_chain_database(url: str, *, connect_timeout: float = 10.0) -> list[str]:
    """The hash chain's problems in a database (one read-only snapshot; empty when sound)."""
    shown = redact(url)
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout)
    except _DB_ERRORS as exc:
        raise StoreError(f"{shown}: cannot connect: {exc}") from exc
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            version = await conn.fetchval("SELECT MAX(version) FROM schema_version")
            if int(version or 0) < CHAIN_VERSION:
                return []
            heads = {r[0]: (int(r[1]), str(r[2])) for r in await conn.fetch(HEADS_SQL)}
            checker = Checker(heads)
            async for row in conn.cursor(VERIFY_SQL, prefetch=1000):
                checker.feed(tuple(row))
            return checker.finish()
    except _DB_ERRORS as exc:
        return [f"hash chain: {exc}"]
    finally:
        with contextlib.suppress(*_DB_ERRORS):
            await conn.close(timeout=5)


DatabaseCheck = Check  # what ``verify_database`` answers (``where``: the redacted url)


async def verify_database(
    url: str, *, connect_timeout: float = 10.0, max_problems: int = 100
) -> DatabaseCheck:
    """Check a database without changing it: tables present, every body against its
    content hash, then count and digest.

    One read-only REPEATABLE READ transaction, so it is safe against a running collector.
    Page-level corruption is PostgreSQL's own business (``pg_amcheck``, data checksums).
    """
    shown = redact(url)
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout)
    except _DB_ERRORS as exc:  # not a finding about the data: say so, exit 1
        raise StoreError(f"{shown}: cannot connect: {exc}") from exc
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            tables = {
                r[0]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema()"
                )
            }
            stored = None
            if "schema_version" in tables:
                stored = await conn.fetchval("SELECT MAX(version) FROM schema_version")
            latest = migrations()[-1][0]
            problems = schema_problems(tables, None if stored is None else int(stored), latest)
            if problems:
                return DatabaseCheck(shown, problems)
            version = await conn.fetchval("SELECT MAX(version) FROM schema_version")
            count = await conn.fetchval("SELECT COUNT(*) FROM reports")
            bodies = BodyCheck(max_problems)
            async for row in conn.cursor(BODY_QUERY + ' COLLATE "C"', prefetch=500):
                bodies.row(row[0], row[1], row[2])
            return DatabaseCheck(
                shown,
                bodies.problems(),
                int(version or 0),
                int(count),
                await _digest(conn),
                altered=bodies.altered,
            )
    except _DB_ERRORS as exc:
        return DatabaseCheck(shown, [str(exc)])
    finally:
        with contextlib.suppress(*_DB_ERRORS):
            await conn.close(timeout=5)

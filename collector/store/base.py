"""What the SQLite and PostgreSQL stores share besides the batch computation (``ingest``).

Both write through ONE writer task with group commit (everything queued goes into one
transaction, each operation in its own savepoint), answer the window and roll-up reads
with the same queries but for the engine's SQL dialect, and hash the same rows in the
same order for ``digest()``. The engine-specific parts are small: how a group of writes
is applied (``_run_group``), how rows are read (``_fetch``) and the SQL text (``SQL``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from agent.log import event
from agent.report import NETWORK_CLASSES, Report
from collector.late import LateRule
from collector.store import (
    CONFIG_ERRORS_QUERY,
    ENROLL_CODE_COLUMNS,
    ENROLLED_AGENTS_QUERY,
    AgentNetworkWindow,
    AgentStates,
    DailyHost,
    DailyNetwork,
    DecodedReports,
    EnrollCode,
    EnrolledAgent,
    IngestResult,
    NetworkUseDay,
    NetworkWindow,
    RefreshReads,
    StoredDeclaration,
    StoreError,
    StoreFaults,
    StoreUnavailable,
    ThroughputRecord,
    TokenRecord,
    assemble_agent_states,
    enroll_code,
    enrolled_agent,
    stored_declaration,
    to_unix,
    token_record,
)
from collector.store.ingest import SECTIONS, bucket_start

log = logging.getLogger(__name__)

MAX_GROUP_REPORTS: Final = 20_000  # one transaction never grows beyond this many reports
PRUNE_EVERY: Final = 3600.0
PAGE_SIZE: Final = 500  # reports per read when exporting

# The queries of the shared reads; each backend fills them in its dialect.
READ_QUERIES: Final = (
    "agent_states.agents",  # (site, agent_id, ..., last_effective_at, latest_report_id)
    "agent_states.bodies",  # report ids (``_id_list``) → (id, body)
    "agent_states.sections",  # (site, agent_id, section, body)
    "network_windows",  # since bucket → (site, network, checks, up_checks)
    "agent_network_windows",  # since bucket → (site, agent_id, network, checks, up)
    "received_counts",  # since bucket → (site, agent_id, reports)
    "daily_networks",  # start, end → (day, site, agent_id, network, checks, up, seconds_up)
    "daily_hosts",  # start, end → (day, site, agent_id, hostname, reports, av_state)
    "list_tokens",  # → tokens rows, oldest first
    "report_count",  # → (count,)
    "rejection_counts",  # → (reason, count)
    "declarations",  # until, since → DECLARATION_COLUMNS rows whose period overlaps
    "declaration_file",  # sha256 → (content,)
    "last_protected_day",  # site, agent_id → (day,) newest day whose last AV state was protected
    "chain_heads",  # → (site, seq, head): each site's newest hash-chain position
    "throughput_results",  # since → (site, network, target, effective_at, up, skipped, rate, error)
    "network_use_days",  # start, end → (day, site, network, in, out, counted, unknown, app_up)
)
MAX_PROTECTED_LOOKUPS: Final = 5000  # unprotected computers looked up per refresh
# The network classes whose buckets the refresh sums (ingest writes no others), as SQL.
WINDOW_CLASSES: Final = ", ".join(f"'{c}'" for c in NETWORK_CLASSES)
# The queries of ``refresh_reads``, in this order, all in one read transaction. ``after``
# is the previous cursor (``FULL_CURSOR``: every agent); ``start``/``left`` bucket starts.
REFRESH_QUERIES: Final = (
    "refresh.cursor",  # → (cursor,) what the next call passes as ``after``
    "refresh.agents",  # after → agents rows as agent_states.agents gives them
    "refresh.sections",  # after → (site, agent_id, section, body) of those agents
    "refresh.windows",  # after, start → WindowRow of those agents (the window's classes)
    "refresh.received",  # after, start → ReceivedRow of those agents
    "refresh.windows_all",  # start → WindowRow of every agent (the first refresh)
    "refresh.received_all",  # start → ReceivedRow of every agent
    "refresh.windows_left",  # left, start → WindowRow of every agent, buckets [left, start)
    "refresh.received_left",  # left, start → ReceivedRow of every agent, buckets [left, start)
    "refresh.throughput",  # after, since → throughput_results rows of those agents' sites
    "refresh.use_days",  # days (``_id_list``), after → network_use_days rows of their sites
)


# The site's agents still counted (the snapshot's inventory horizon) and their antivirus
# section, for the late samples (collector.late); ``?`` marks, numbered for PostgreSQL.
AGENTS_OF_SITE: Final = (
    "SELECT a.agent_id, s.body FROM agents a LEFT JOIN agent_sections s"
    " ON s.site = a.site AND s.agent_id = a.agent_id AND s.section = 'antivirus'"
    " WHERE a.site = ? AND a.last_received_at >= ?"
)


@dataclass(slots=True)
class Op:
    """One queued write: a function of the writer connection, and who waits for it."""

    apply: Callable[[Any], Any]  # returns the result (SQLite) or an awaitable (PostgreSQL)
    future: asyncio.Future[Any]
    size: int = 1


# What ``digest`` covers: every stored row except operational bookkeeping (token
# ``last_used_at``, rejection counters), in a fixed order: (table, columns, order keys).
_DIGEST_TABLES: Final = (
    (
        "reports",
        "id, site, agent_id, seq, observed_at, effective_at, received_at, content_hash",
        ("id",),
    ),
    (
        # Not ``changed``: bookkeeping of the refresh, and a different type per engine.
        "agents",
        "site, agent_id, role, interval_seconds, first_seen, last_effective_at,"
        " last_observed_at, last_received_at, reports_received, spool_dropped,"
        " latest_report_id",
        ("site", "agent_id"),
    ),
    ("agent_sections", "*", ("site", "agent_id", "section")),
    ("network_hourly", "*", ("site", "agent_id", "network", "hour")),
    ("agent_hourly", "*", ("site", "agent_id", "hour")),
    ("network_daily", "*", ("day", "site", "agent_id", "network")),
    ("host_daily", "*", ("day", "site", "agent_id")),
    ("tokens", "token_id, token_hash, site, created_at, revoked_at, note", ("token_id",)),
    ("declarations", "*", ("unit", "period", "fact", "revision")),
    ("declaration_files", "*", ("sha256",)),
    ("throughput_results", "*", ("report_id", "network", "target")),
    ("network_use_daily", "*", ("day", "site", "agent_id", "network")),
)
_NUMERIC_KEYS: Final = frozenset({"hour", "revision"})
DIGEST_TABLE_NAMES: Final = frozenset(name for name, _, _ in _DIGEST_TABLES)


def schema_problems(tables: Collection[str], version: int | None, latest: int) -> list[str]:
    """What ``store verify`` says when tables it hashes are missing: a store of an older
    schema (the next ``serve`` migrates it) is told apart from something else."""
    missing = sorted({"schema_version", *DIGEST_TABLE_NAMES} - set(tables))
    if not missing:
        return []
    if "reports" in tables and version is not None and version < latest:
        return [
            f"schema version {version} is older than this hatang-collector's ({latest}): "
            "start `hatang-collector serve` once to apply the migrations, then verify again "
            "(verify never changes the store)"
        ]
    return [f"not a hatang store: missing tables {', '.join(missing)}"]


def digest_queries(collate: str = "") -> dict[str, str]:
    """The digest's query per table; ``collate`` (e.g. ``' COLLATE "C"'``) makes text
    order byte order, so both engines hash the same content to the same value."""
    queries = {}
    for name, columns, keys in _DIGEST_TABLES:
        order = ", ".join(k if k in _NUMERIC_KEYS else f"{k}{collate}" for k in keys)
        queries[name] = f"SELECT {columns} FROM {name} ORDER BY {order}"  # noqa: S608
    return queries


class ContentDigest:
    """SHA-256 over tables of rows, fed in ``digest_queries`` order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def table(self, name: str) -> None:
        self._hash.update(f"\x00{name}\x00".encode())

    def row(self, row: Iterable[Any]) -> None:
        self._hash.update(repr(tuple(row)).encode())
        self._hash.update(b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True, slots=True)
class Check:
    """What ``hatang-collector store verify`` found (``where``: file or redacted url)."""

    where: str
    problems: list[str]  # empty when the store is sound
    schema_version: int | None = None
    reports: int | None = None
    digest: str | None = None
    altered: list[str] = field(default_factory=list)  # ids whose body fails its hash

    @property
    def ok(self) -> bool:
        return not self.problems


# Every body against its stored hash, in id order; rows are streamed (never all in memory).
BODY_QUERY: Final = "SELECT id, content_hash, body FROM reports ORDER BY id"


class BodyCheck:
    """Recompute the SHA-256 of each stored body (as ``triage`` computed it at ingest) and
    keep the ids that no longer match, up to ``max_named`` of them (the count is exact)."""

    def __init__(self, max_named: int) -> None:
        self.max_named = max_named
        self.checked = 0
        self.mismatches = 0
        self.altered: list[str] = []

    def row(self, report_id: str, content_hash: str, body: bytes | str) -> None:
        self.checked += 1
        data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
        if hashlib.sha256(data).hexdigest() != content_hash:
            self.mismatches += 1
            if len(self.altered) < self.max_named:
                self.altered.append(str(report_id))

    def problems(self) -> list[str]:
        if not self.mismatches:
            return []
        more = self.mismatches - len(self.altered)
        return [
            f"{self.mismatches} of {self.checked} report bodies do not match their stored"
            " content hash (changed after they were stored):",
            *(f"report {i}: body does not match its content hash" for i in self.altered),
            *([f"... and {more} more"] if more else []),
        ]


class GroupCommitStore:
    """The backend-independent half of a store: settings, writer task, shared reads."""

    SQL: ClassVar[Mapping[str, str]]  # READ_QUERIES in the engine's dialect
    PARAM: ClassVar[str] = "?"  # the first query parameter in the engine's dialect

    def __init__(
        self,
        *,
        busy_timeout: float,
        max_future: float,
        hourly_retention: float,
        rollup_utc_offset_hours: float,
        clock: Callable[[], float],
        bucket_seconds: float,
    ) -> None:
        if not 1 <= bucket_seconds <= 3600 or 3600 % bucket_seconds:
            raise ValueError(f"bucket_seconds must divide 3600, got {bucket_seconds}")
        # Width of the window buckets (the ``hour`` columns hold each bucket's start).
        # Widths dividing an hour keep every bucket inside one hour, so a store whose
        # width was changed still sums windows correctly.
        self.bucket = int(bucket_seconds)
        self.busy_timeout = busy_timeout
        self.max_future = max_future
        self.hourly_retention = hourly_retention
        self.rollup_offset = rollup_utc_offset_hours * 3600.0
        self.clock = clock
        # Called on the event loop after each group commit with (seconds, reports).
        self.on_commit: Callable[[float, int], None] | None = None
        self._decoded: DecodedReports = {}  # see assemble_agent_states
        # Set when remote write is configured: ingest queues late samples (collector.late).
        self.late_rule: LateRule | None = None
        self._queue: asyncio.Queue[Op | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._closed = True
        self._last_prune = 0.0
        self.faults = StoreFaults()

    # -- what each backend provides ---------------------------------------------------

    async def _run_group(self, ops: list[Op]) -> list[Any]:
        """Apply ``ops`` in one transaction; a result per op (an exception if it failed)."""
        raise NotImplementedError

    def _prune(self, conn: Any) -> Any:
        """Delete buckets older than the hourly retention (queued with a group)."""
        raise NotImplementedError

    def _apply_ingest(
        self, conn: Any, batch: list[tuple[Report, bytes]], clock_offset: float
    ) -> Any:
        """Write one batch with the writer connection; the IngestResult (or awaitable)."""
        raise NotImplementedError

    async def _fetch(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Rows (as tuples) of each (sql, params), all from one consistent snapshot."""
        raise NotImplementedError

    def _after_commit(self) -> None:
        """Called on the loop after each group commit."""

    def _error_kind(self, exc: BaseException) -> str:
        """One of STORE_ERROR_KINDS for a failure of the database (not of one operation)."""
        return "unavailable"

    def _failed(self, operation: str, exc: BaseException) -> None:
        """Count a failed read or write; the cause (the driver's error) decides the kind."""
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        self.faults.failed(operation, self._error_kind(cause), str(cause) or type(cause).__name__)

    async def _space_problem(self) -> str | None:
        """Why the store's file system cannot take a write, if the backend can tell."""
        return None

    async def health(self) -> str | None:
        """None while the store reads and writes; otherwise why not (for /healthz).

        The writer must run, a read must answer, the last write must not have failed
        (a full disk or an I/O error fails every write while reads still work), and the
        backend's file system must have room.
        """
        if not self._writer_running():
            return "the store is closed"
        try:
            await self._fetch([("SELECT MAX(version) FROM schema_version", ())])
        except StoreError as exc:
            return f"the store cannot read ({exc})"
        return self.faults.problem() or await self._space_problem()

    async def healthy(self) -> bool:
        """True when ``health()`` finds no problem."""
        return await self.health() is None

    # -- writes -----------------------------------------------------------------------

    def _start_writer(self) -> None:
        self._closed = False
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._writer_loop(), name="hatang-store-writer")

    async def _stop_writer(self) -> bool:
        """Finish queued writes; False when the store was not open."""
        if self._closed:
            return False
        self._closed = True
        self._queue.put_nowait(None)
        if self._writer_task is not None:
            await self._writer_task
        return True

    def _writer_running(self) -> bool:
        return not (self._closed or self._writer_task is None or self._writer_task.done())

    async def _write(self, apply: Callable[[Any], Any], size: int = 1) -> Any:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Op(apply, future, size))
        # Shielded: a caller that goes away must not cancel a write that may commit.
        return await asyncio.shield(future)

    async def _writer_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            ops, size = [first], first.size
            while size < MAX_GROUP_REPORTS and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stopping = True
                    break
                ops.append(op)
                size += op.size
            now = self.clock()
            if now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                prune: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                ops.append(Op(self._prune, prune, 0))
            started = time.perf_counter()
            try:
                results = await self._run_group(ops)
            except Exception as exc:
                error = exc if isinstance(exc, StoreError) else StoreUnavailable(str(exc))
                self._failed("write", exc)
                event(log, logging.ERROR, "store.write_failed", ops=len(ops), error=str(exc))
                for op in ops:
                    if not op.future.done():
                        op.future.set_exception(error)
                        op.future.exception()  # mark retrieved: callers may be gone
                continue
            self.faults.succeeded("write")
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started, size)
            self._after_commit()
            for op, result in zip(ops, results, strict=True):
                if op.future.done():
                    continue
                if isinstance(result, BaseException):
                    op.future.set_exception(result)
                    op.future.exception()
                else:
                    op.future.set_result(result)

    async def ingest(
        self, site: str, reports: Sequence[tuple[Report, bytes]], clock_offset: float = 0.0
    ) -> IngestResult:
        """Store a batch atomically; return once it is committed (durable)."""
        batch = list(reports)
        result: IngestResult = await self._write(
            lambda conn: self._apply_ingest(conn, batch, clock_offset), size=max(1, len(batch))
        )
        return result

    # -- reads for indicators, metrics and evidence ------------------------------------

    async def _rows(self, name: str, *params: Any) -> list[Any]:
        (rows,) = await self._fetch([(self.SQL[name], params)])
        return rows

    def _bucket(self, ts: float) -> int:
        """Start of the window bucket holding ``ts``."""
        return bucket_start(ts, self.bucket)

    async def agent_states(self) -> AgentStates:
        """The latest state of every agent, sections filled from their newest reports
        (rows that do not decode are logged and skipped, see ``assemble_agent_states``).

        Only the newest reports not decoded at the previous call are read and decoded
        (most of a refresh's cost at scale); a stored report never changes, so reading
        them in a second transaction gives what one would.
        """
        agents, sections = await self._fetch(
            [(self.SQL["agent_states.agents"], ()), (self.SQL["agent_states.sections"], ())]
        )
        known = self._decoded
        wanted = [r[10] for r in agents if (k := known.get((r[0], r[1]))) is None or k[0] != r[10]]
        bodies: dict[Any, Any] = {}
        for i in range(0, len(wanted), PAGE_SIZE * 10):
            (found,) = await self._fetch(
                [
                    (
                        self.SQL["agent_states.bodies"],
                        (self._id_list(wanted[i : i + PAGE_SIZE * 10]),),
                    )
                ]
            )
            bodies.update(found)
        rows = [(*r[:9], bodies.get(r[10], b""), r[9], r[10]) for r in agents]
        return assemble_agent_states(rows, sections, SECTIONS, known)

    FULL_CURSOR: ClassVar[Any] = -1  # an ``after`` below every change marker

    async def refresh_reads(
        self,
        after: Any | None,
        since: dt.datetime,
        previous_start: int | None,
        throughput_since: dt.datetime,
        days: Sequence[dt.date],
        all_days: bool,
        decoded: DecodedReports,
    ) -> RefreshReads:
        """What changed since ``after`` (see ``RefreshReads``), in one read transaction.

        Everything is read again (``full``) without a cursor, when the window start moved
        back, or when the buckets that left the window may already be pruned (a retention
        shorter than the window) or are more than a window's worth (the sums are read
        anew rather than a longer stretch subtracted).
        """
        start = self._bucket(to_unix(since))
        now = self.clock()
        full = (
            after is None
            or previous_start is None
            or start < previous_start
            or start - previous_start >= now - to_unix(since)  # a window's worth or more
            or previous_start - self.bucket < now - self.hourly_retention  # maybe pruned
        )
        if full:
            after, previous_start = self.FULL_CURSOR, start
        assert previous_start is not None
        everywhere = self.FULL_CURSOR if all_days else after
        day_list = self._id_list([d.isoformat() for d in days])
        sql = self.SQL
        rest = [
            (sql["refresh.agents"], (after,)),
            (sql["refresh.sections"], (after,)),
            (sql["refresh.throughput"], (after, to_unix(throughput_since))),
            (sql["refresh.use_days"], (day_list, everywhere)),
        ]
        if full:
            # Every agent's window buckets are the longest read: in a transaction of its
            # own, beside the one that reads the agents and decodes their newest reports
            # (the database works outside the GIL). Both begin after the cursor's has
            # ended, so what they see beyond the cursor belongs to agents written after
            # it, which the next refresh reads again whole.
            ((cursor,),) = await self._fetch([(sql["refresh.cursor"], ())])
            sums = asyncio.ensure_future(
                self._fetch(
                    [
                        (sql["refresh.windows_all"], (start,)),
                        (sql["refresh.received_all"], (start,)),
                    ]
                )
            )
            try:
                agents, sections, throughput, use_days = await self._fetch(rest)
                agents, keys, states = await self._states(agents, sections, decoded)
                windows, received = await sums
            except BaseException:
                sums.cancel()
                raise
            left_windows, left_received = [], []
        else:
            (
                (cursor,),
                agents,
                sections,
                throughput,
                use_days,
                windows,
                received,
                left_windows,
                left_received,
            ) = await self._fetch(
                [
                    (sql["refresh.cursor"], ()),
                    *rest,
                    (sql["refresh.windows"], (after, start)),
                    (sql["refresh.received"], (after, start)),
                    (sql["refresh.windows_left"], (previous_start, start)),
                    (sql["refresh.received_left"], (previous_start, start)),
                ]
            )
            agents, keys, states = await self._states(agents, sections, decoded)
        name = sys.intern
        return RefreshReads(
            cursor=cursor[0],
            start=start,
            full=full,
            keys=keys,
            agents=states,
            windows=[
                (name(s), name(a), name(n), int(c), int(u), int(b)) for s, a, n, c, u, b in windows
            ],
            received=[(name(s), name(a), int(n), int(b)) for s, a, n, b in received],
            left_windows=[(s, a, n, int(c), int(u), int(b)) for s, a, n, c, u, b in left_windows],
            left_received=[(s, a, int(n), int(b)) for s, a, n, b in left_received],
            throughput=[
                ThroughputRecord(s, n, t, float(at), bool(up), bool(skip), r, e)
                for s, n, t, at, up, skip, r, e in throughput
            ],
            use_days=[
                NetworkUseDay(dt.date.fromisoformat(d), s, n, *(int(v) for v in values))
                for d, s, n, *values in use_days
            ],
        )

    async def _states(
        self, agents: list[Any], sections: list[Any], decoded: DecodedReports
    ) -> tuple[list[Any], list[tuple[str, str]], AgentStates]:
        """``refresh.agents`` rows, their keys and states (see ``_assemble``). Each row
        brings its own copies of the site and agent id (and each bucket row of the class):
        the kept windows and states of 20k agents share one of each instead (MiBs)."""
        name = sys.intern
        agents = [(name(str(r[0])), name(str(r[1])), *r[2:]) for r in agents]
        keys = [(r[0], r[1]) for r in agents]
        return agents, keys, await self._assemble(agents, keys, sections, decoded)

    async def _assemble(
        self,
        agents: list[Any],
        keys: list[tuple[str, str]],
        sections: list[Any],
        decoded: DecodedReports,
    ) -> AgentStates:
        """The states of ``agents`` rows (``refresh.agents``), a page at a time: only the
        newest reports not in ``decoded`` are read (by id: a stored report never changes,
        so a second transaction reads what the first would) and decoded, and no more
        than a page of bodies is held at once (the first refresh reads every agent)."""
        wanted = {
            r[10] for r, key in zip(agents, keys, strict=True)
            if (held := decoded.get(key)) is None or held[0] != r[10]
        }  # fmt: skip
        by_agent: dict[tuple[str, str], list[Any]] = {}
        for row in sections:
            by_agent.setdefault((str(row[0]), str(row[1])), []).append(row)
        states = AgentStates()
        page = PAGE_SIZE * 10
        for i in range(0, len(agents), page):
            rows, page_keys = agents[i : i + page], keys[i : i + page]
            ids = [r[10] for r in rows if r[10] in wanted]
            bodies: dict[Any, Any] = {}
            if ids:
                (found,) = await self._fetch(
                    [(self.SQL["agent_states.bodies"], (self._id_list(ids),))]
                )
                bodies.update(found)
            known = {k: decoded[k] for k in page_keys if k in decoded}
            part = assemble_agent_states(
                [(*r[:9], bodies.get(r[10], b""), r[9], r[10]) for r in rows],
                [row for key in page_keys for row in by_agent.get(key, ())],
                SECTIONS,
                known,
            )
            for key in page_keys:
                decoded.pop(key, None)
            decoded.update(known)
            states.extend(part)
            states.skipped += part.skipped
            states.skipped_by.update(part.skipped_by)
        return states

    def _id_list(self, ids: list[Any]) -> Any:
        """A list of ids as one query parameter (JSON text for SQLite's ``json_each``)."""
        return json.dumps(ids)

    async def network_windows(self, since: dt.datetime) -> list[NetworkWindow]:
        """Checks per (site, network) since ``since`` (bucket-aligned, see the Protocol)."""
        rows = await self._rows("network_windows", self._bucket(to_unix(since)))
        return [NetworkWindow(s, n, int(c), int(u)) for s, n, c, u in rows]

    async def agent_network_windows(self, since: dt.datetime) -> list[AgentNetworkWindow]:
        """Checks per (site, agent, network) since ``since`` (bucket-aligned)."""
        rows = await self._rows("agent_network_windows", self._bucket(to_unix(since)))
        return [AgentNetworkWindow(s, a, n, int(c), int(u)) for s, a, n, c, u in rows]

    async def received_counts(self, since: dt.datetime) -> dict[tuple[str, str], int]:
        """Reports per (site, agent_id) observed since ``since`` (late ones included)."""
        rows = await self._rows("received_counts", self._bucket(to_unix(since)))
        return {(s, a): int(n) for s, a, n in rows}

    async def daily_networks(self, start: dt.date, end: dt.date) -> list[DailyNetwork]:
        """Daily network roll-ups with ``start <= day < end``."""
        rows = await self._rows("daily_networks", start.isoformat(), end.isoformat())
        return [
            DailyNetwork(dt.date.fromisoformat(d), s, a, n, int(c), int(u), float(sec))
            for d, s, a, n, c, u, sec in rows
        ]

    async def throughput_results(self, since: dt.datetime) -> list[ThroughputRecord]:
        """Throughput tests filed at or after ``since``, oldest first per site and class."""
        rows = await self._rows("throughput_results", to_unix(since))
        return [
            ThroughputRecord(s, n, t, float(at), bool(up), bool(skip), r, e)
            for s, n, t, at, up, skip, r, e in rows
        ]

    async def network_use_days(self, start: dt.date, end: dt.date) -> list[NetworkUseDay]:
        """Daily use per site and class with ``start <= day < end`` (agents summed)."""
        rows = await self._rows("network_use_days", start.isoformat(), end.isoformat())
        return [
            NetworkUseDay(dt.date.fromisoformat(d), s, n, *(int(v) for v in values))
            for d, s, n, *values in rows
        ]

    async def daily_hosts(self, start: dt.date, end: dt.date) -> list[DailyHost]:
        """Daily per-host roll-ups with ``start <= day < end``."""
        rows = await self._rows("daily_hosts", start.isoformat(), end.isoformat())
        return [
            DailyHost(dt.date.fromisoformat(d), s, a, h, int(n), av) for d, s, a, h, n, av in rows
        ]

    async def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first (never the secret: it is not stored)."""
        return [token_record(r) for r in await self._rows("list_tokens")]

    # -- enrollment (writes are each backend's) --------------------------------------

    async def list_enroll_codes(self) -> list[EnrollCode]:
        """Every enrollment code (hashes only), by site then age."""
        sql = f"SELECT {ENROLL_CODE_COLUMNS} FROM enroll_codes ORDER BY site, created_at"  # noqa: S608
        (rows,) = await self._fetch([(sql, ())])
        return [enroll_code(r) for r in rows]

    async def get_enroll_code(self, code_id: str) -> EnrollCode | None:
        """The code whose first group is ``code_id``, or None."""
        sql = f"SELECT {ENROLL_CODE_COLUMNS} FROM enroll_codes WHERE code_id = {self.PARAM}"  # noqa: S608
        (rows,) = await self._fetch([(sql, (code_id,))])
        return enroll_code(rows[0]) if rows else None

    async def enrolled_agents(self) -> list[EnrolledAgent]:
        """Every enrolled agent with its last report and central-config status."""
        (rows,) = await self._fetch([(ENROLLED_AGENTS_QUERY, ())])
        return [enrolled_agent(r) for r in rows]

    async def config_error_counts(self) -> dict[str, int]:
        """Per site with any config status: agents whose latest status is an error."""
        (rows,) = await self._fetch([(CONFIG_ERRORS_QUERY, ())])
        return {str(site): int(n or 0) for site, n in rows}

    async def report_count(self) -> int:
        """How many reports are stored."""
        ((count,),) = await self._rows("report_count")
        return int(count)

    async def rejection_counts(self) -> dict[str, int]:
        """Rejected requests by reason since the store was created."""
        return {r: int(n) for r, n in await self._rows("rejection_counts")}

    async def declarations(
        self, since: float, until: float, units: Collection[str] | None = None
    ) -> list[StoredDeclaration]:
        """Every revision of the declarations whose period overlaps ``(since, until)``."""
        wanted = None if units is None else set(units)
        return [
            stored_declaration(row)
            for row in await self._rows("declarations", float(until), float(since))
            if wanted is None or row[0] in wanted
        ]

    async def declaration_file(self, sha256: str) -> bytes | None:
        """An attached file by its SHA-256 (hex), or None."""
        rows = await self._rows("declaration_file", sha256)
        return bytes(rows[0][0]) if rows else None

    async def protected_until(
        self, agents: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], float]:
        """End of the last day each agent's antivirus was protected (see the Protocol)."""
        wanted = list(dict.fromkeys(agents))[:MAX_PROTECTED_LOOKUPS]
        if not wanted:
            return {}
        sql = self.SQL["last_protected_day"]
        answers = await self._fetch([(sql, pair) for pair in wanted])
        until: dict[tuple[str, str], float] = {}
        for pair, rows in zip(wanted, answers, strict=True):
            if rows and rows[0][0] is not None:
                day = dt.date.fromisoformat(str(rows[0][0])) + dt.timedelta(days=1)
                midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
                until[pair] = midnight.timestamp() - self.rollup_offset
        return until

    async def chain_heads(self) -> dict[str, tuple[int, str]]:
        """Each site's newest hash-chain position and hash (see ``collector.store.chain``):
        what an evidence manifest records, so later rewriting of history shows."""
        return {str(s): (int(n), str(h)) for s, n, h in await self._rows("chain_heads")}

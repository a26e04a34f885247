"""The durable report spool: a SQLite queue every report enters before any send.

Semantics follow telegraf's disk buffer: ``append`` commits a report (and assigns its
persistent ``seq``) in one transaction; ``begin_batch`` returns the oldest reports
without removing them; ``ack`` removes them only after the collector answered 2xx.
The database runs in WAL mode with ``synchronous=FULL``, so a committed report
survives ``kill -9`` and power loss.

The queue is bounded by ``spool.max_size`` (bytes of queued report JSON; the file is
somewhat larger because of SQLite pages and the WAL). When a new report does not fit,
the OLDEST queued reports are dropped, the drop is counted persistently, and the
cumulative count travels in every later report's ``spool_dropped``. That count is
exact: a row dropped while its batch was in flight and then acknowledged was
delivered, so it is taken off the count again; cycles that could not be queued at all
(a full disk) are added to it by the next ``append``, whose ``seq`` skips theirs so the
collector sees the gap. A report the collector permanently rejects is moved to a
bounded dead-letter table (kept for inspection with ``sqlite3``), so it never blocks
the queue; the count of those travels in ``spool_rejected``.

Every value read back from the file is validated (metadata, rows, bodies): the disk
may hold anything. ``open_spool`` moves a damaged file aside (renamed with a
timestamp, never deleted), salvages what it still can (agent id, seq, counters) and
starts a fresh spool, so the agent keeps measuring; reports then carry
``spool_resets`` so the collector sees that queued reports may be gone. Report ids are
random UUIDs, so reports of the fresh spool can never be mistaken for stored ones.

The API is synchronous and fast; the daemon calls it through ``asyncio.to_thread``.
One connection is shared under a lock, so calls from different threads serialise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from agent.configerror import show
from agent.files import create_private
from agent.log import event
from agent.report import Report, decode_report, encode

log = logging.getLogger(__name__)

SPOOL_FORMAT: Final = 1
# Dead letters are kept for people to inspect, not forever: the newest ones win.
DEAD_LETTER_MAX_ROWS: Final = 1000
DEAD_LETTER_MAX_FRACTION: Final = 0.1  # of max_size
# Rows are accounted with a little overhead so that many tiny reports still hit the bound.
ROW_OVERHEAD_BYTES: Final = 64
# The counters kept in ``meta``; each must read back as a count, or the file is damaged.
COUNTERS: Final = ("next_seq", "dropped_total", "rejected_total", "spool_resets")
MAX_COUNT: Final = 2**63 - 1
_AGENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Dead letters that never reached the collector (the row was damaged on disk).
STATUS_DAMAGED: Final = 0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS queue (
    row_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id   TEXT NOT NULL UNIQUE,
    seq         INTEGER NOT NULL,
    observed_at TEXT NOT NULL,
    size        INTEGER NOT NULL,
    body        BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS dead_letter (
    row_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    observed_at TEXT NOT NULL,
    size        INTEGER NOT NULL,
    body        BLOB NOT NULL,
    status      INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    rejected_at TEXT NOT NULL
) STRICT;
"""


class SpoolError(Exception):
    """The spool cannot be used; the message says what to do about it."""


class SpoolCorrupt(SpoolError):
    """The file is damaged (not SQLite, bad pages, nonsense values): move it aside."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One queued report as read for sending."""

    row_id: int
    report_id: str
    seq: int
    body: bytes  # the report's JSON, exactly as stored


@dataclass(frozen=True, slots=True)
class Appended:
    """What ``append`` did: the stored report, and how many old reports it pushed out."""

    report: Report
    row_id: int | None  # None when the report alone is larger than the spool
    size: int
    dropped: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A report the collector rejected permanently."""

    report_id: str
    seq: int
    status: int
    reason: str
    rejected_at: str
    body: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool, for logs and the daemon's status."""

    queued: int
    queued_bytes: int
    oldest_observed_at: str | None
    dropped_total: int
    rejected_total: int
    dead_letters: int
    next_seq: int
    resets: int = 0


def _corrupt_message(path: Path, exc: BaseException) -> str:
    return (
        f"spool {path} is unreadable or corrupt ({exc}). Stop hatang-agent, move {path} "
        f"(and {path.name}-wal, {path.name}-shm beside it) out of the way, and start the agent "
        "again: it creates a new spool. Reports still queued in the old file are not sent "
        "(its dead_letter and queue tables can be read with sqlite3)."
    )


class Spool:
    """A bounded, durable FIFO of reports in one SQLite file."""

    def __init__(self, path: Path, max_size: int, conn: sqlite3.Connection) -> None:
        self.path = path
        self.max_size = max_size
        self._conn = conn
        self._lock = threading.Lock()
        self._closed = False
        self._in_flight: set[int] = set()  # rows of the batch the sender holds
        self._dropped_in_flight: set[int] = set()  # of those, dropped for room meanwhile

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, max_size: int) -> Spool:
        """Open (or create) the spool; raise SpoolError with what to do when it is unusable."""
        path = Path(path)
        if max_size <= 0:
            raise SpoolError(f"spool.max_size must be positive, got {max_size}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(
                f"cannot create the spool directory {path.parent}: {exc.strerror or exc}; "
                "set spool.path to a writable location"
            ) from None
        if path.exists() and not path.is_file():
            raise SpoolError(f"spool path {path} is not a file; set spool.path to a file name")
        create_private(path)  # reports name hosts and addresses: owner-only
        try:
            conn = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {path}: {exc}; check spool.path") from None
        try:
            cls._prepare(conn, path)
        except SpoolError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise SpoolError(
                    f"cannot open spool {path}: {exc}; check that the agent's user can write "
                    "it and that no other hatang-agent uses the same spool.path"
                ) from None
            raise SpoolCorrupt(_corrupt_message(path, exc)) from None
        spool = cls(path, max_size, conn)
        stats = spool.stats()
        event(
            log,
            logging.INFO,
            "spool.opened",
            path=str(path),
            queued=stats.queued,
            queued_bytes=stats.queued_bytes,
            dropped_total=stats.dropped_total,
            rejected_total=stats.rejected_total,
            next_seq=stats.next_seq,
        )
        return spool

    @staticmethod
    def _prepare(conn: sqlite3.Connection, path: Path) -> None:
        """Set durability pragmas, check integrity, create or verify the schema."""
        # auto_vacuum only takes effect on a new database: freed pages go back to the OS
        # after large acks instead of keeping the file at its high-water mark forever.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        user_tables = {t for t in tables if not t.startswith("sqlite_")}
        if user_tables and "meta" not in user_tables:
            raise SpoolError(
                f"{path} is an SQLite database but not a hatang spool (tables: "
                f"{', '.join(sorted(user_tables))}); set spool.path to another file"
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(
                f"spool {path}: SQLite refused WAL mode (got {mode!r}); put spool.path on a "
                "local disk (network file systems cannot hold the spool)"
            )
        conn.execute("PRAGMA synchronous = FULL")
        # The queue is read at its head and written at its tail, so a small page cache
        # does the job; SQLite's default (2 MiB) would fill up while quick_check reads a
        # large spool after an outage and stay in the agent's RSS for good.
        conn.execute("PRAGMA cache_size = -256")
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            problems = "; ".join(str(row[0]) for row in check[:3])
            raise SpoolCorrupt(_corrupt_message(path, Exception(problems)))
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('format', ?)", (str(SPOOL_FORMAT),))
            elif _count(row[0]) is None:
                raise SpoolCorrupt(
                    _corrupt_message(path, Exception(f"meta format is {show(row[0])}"))
                )
            elif row[0] != str(SPOOL_FORMAT):
                # Another agent version's spool, not damage: its reports may still be
                # sent by that version, so it is not moved aside behind anyone's back.
                raise SpoolError(
                    f"spool {path} has format {row[0]}, this agent understands "
                    f"{SPOOL_FORMAT}; run the agent version that wrote it until it is empty, "
                    "or move the file away"
                )
            for key in COUNTERS:
                initial = 1 if key == "next_seq" else 0
                conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, str(initial)))
            # Read every value back now: a damaged one must not surface mid-run as a crash.
            for key in COUNTERS:
                _meta_count(conn, key, path)
            row = conn.execute("SELECT value FROM meta WHERE key = 'agent_id'").fetchone()
            if row is not None and not _valid_agent_id(row[0]):
                raise SpoolCorrupt(
                    _corrupt_message(path, Exception(f"meta agent_id is {show(row[0])}"))
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """Serialise access and turn SQLite failures into SpoolError with advice."""
        with self._lock:
            if self._closed:
                raise SpoolError(f"spool {self.path} is closed")
            try:
                yield self._conn
            except sqlite3.DatabaseError as exc:
                text = str(exc).lower()
                if "full" in text:
                    raise SpoolError(
                        f"spool {self.path}: the disk is full ({exc}); free space on that disk"
                    ) from None
                if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
                    raise SpoolError(
                        f"spool {self.path} is locked by another process ({exc}); run only "
                        "one hatang-agent per spool.path"
                    ) from None
                if isinstance(exc, sqlite3.OperationalError):
                    raise SpoolError(f"spool {self.path}: {exc}") from None
                raise SpoolCorrupt(_corrupt_message(self.path, exc)) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _meta_int(self, conn: sqlite3.Connection, key: str) -> int:
        return _meta_count(conn, key, self.path)

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    # -- the API ----------------------------------------------------------------------------

    def identity(self, configured: str | None = None) -> str:
        """Return the agent id: ``configured`` when set, else a UUID4 made once and kept."""
        if configured:
            return configured
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'agent_id'").fetchone()
            if row is not None and _valid_agent_id(row[0]):
                return str(row[0])
            agent_id = str(uuid.uuid4())
            self._set_meta(conn, "agent_id", agent_id)
            return agent_id

    def append(self, build: Callable[[int, int], Report], lost: int = 0) -> Appended:
        """Build a report with the next ``seq`` and the dropped count, and commit it.

        ``build(seq, dropped)`` runs inside the transaction, so the seq it receives is
        used exactly once even when two writers race or the process dies right after.
        ``lost`` cycles that could not be queued before (a full disk) are counted as
        dropped and their seq numbers skipped, so the collector sees both the count and
        the gap. The report also carries the spool's reject and reset counts.
        """
        lost = max(0, lost)
        with self._transaction() as conn:
            seq = self._meta_int(conn, "next_seq") + lost
            dropped_total = self._meta_int(conn, "dropped_total") + lost
            report = build(seq, dropped_total)
            report.spool_rejected = self._meta_int(conn, "rejected_total")
            report.spool_resets = self._meta_int(conn, "spool_resets")
            body = encode(report)
            size = len(body) + ROW_OVERHEAD_BYTES
            self._set_meta(conn, "next_seq", seq + 1)
            if size > self.max_size:
                self._set_meta(conn, "dropped_total", dropped_total + 1)
                event(
                    log,
                    logging.ERROR,
                    "spool.report_too_large",
                    report_id=report.id,
                    seq=seq,
                    size=size,
                    max_size=self.max_size,
                    hint="raise spool.max_size",
                )
                return Appended(report, None, size, 1)
            dropped = self._make_room(conn, size)
            self._set_meta(conn, "dropped_total", dropped_total + dropped)
            cur = conn.execute(
                "INSERT INTO queue (report_id, seq, observed_at, size, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (report.id, seq, report.observed_at.isoformat(), size, body),
            )
            assert cur.lastrowid is not None
            row_id = cur.lastrowid
        if dropped:
            event(
                log,
                logging.WARNING,
                "spool.dropped",
                count=dropped,
                dropped_total=dropped_total + dropped,
                max_size=self.max_size,
                reason="spool full: oldest reports dropped",
            )
        return Appended(report, row_id, size, dropped)

    def _make_room(self, conn: sqlite3.Connection, size: int) -> int:
        """Delete the oldest queued rows until ``size`` more bytes fit; return how many."""
        total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM queue").fetchone()[0]
        excess = total + size - self.max_size
        if excess <= 0:
            return 0
        victims: list[int] = []
        freed = 0
        for row_id, row_size in conn.execute("SELECT row_id, size FROM queue ORDER BY row_id"):
            victims.append(row_id)
            freed += row_size
            if freed >= excess:
                break
        conn.executemany("DELETE FROM queue WHERE row_id = ?", [(r,) for r in victims])
        # Rows of a batch in flight may still be acknowledged: then they were not lost.
        self._dropped_in_flight.update(self._in_flight.intersection(victims))
        return len(victims)

    def begin_batch(self, max_count: int, max_bytes: int) -> list[Entry]:
        """Return the oldest queued reports (without removing them) within the bounds.

        The first report is always returned, even when it alone exceeds ``max_bytes``:
        the collector then decides (413 sends it to the dead-letter table), so an
        oversized report can never stall the queue. A row that does not read back as
        the report it was stored as (damaged on disk) goes to the dead-letter table with
        status 0 and counts as dropped, so it can neither crash nor block the sender.
        """
        while True:
            entries: list[Entry] = []
            damaged: list[tuple[int, str]] = []
            total = 0
            with self._locked() as conn:
                rows = conn.execute(
                    "SELECT row_id, report_id, seq, body FROM queue ORDER BY row_id LIMIT ?",
                    (max(1, max_count),),
                )
                for row_id, report_id, seq, body in rows:
                    problem = _row_problem(report_id, seq, body)
                    if problem is not None:
                        damaged.append((row_id, problem))
                        continue
                    body = bytes(body)
                    if entries and total + len(body) + 1 > max_bytes:
                        break
                    entries.append(Entry(row_id, report_id, seq, body))
                    total += len(body) + 1
                self._in_flight = {e.row_id for e in entries}
            if not damaged:
                return entries
            for row_id, problem in damaged:
                self._bury_damaged(row_id, problem)

    def _bury_damaged(self, row_id: int, problem: str) -> None:
        """Move a row that is not a valid report to the dead letters; count it as lost."""
        moved = self._to_dead_letters(row_id, STATUS_DAMAGED, f"damaged in the spool: {problem}")
        if moved is None:
            return
        event(
            log,
            logging.ERROR,
            "spool.row_damaged",
            row_id=row_id,
            problem=problem[:300],
            dropped_total=moved[2],
            spool=str(self.path),
            hint="a queued report no longer reads back as a report (disk damage?); it is "
            "kept in the spool's dead_letter table with status 0 and counted as dropped",
        )

    def _to_dead_letters(
        self, row_id: int, status: int, reason: str
    ) -> tuple[str, int, int] | None:
        """Move one queued row to the dead letters, counting it as rejected (by the
        collector) or, for status 0, as dropped; return (report id, seq, new count)."""
        now = dt.datetime.now(dt.UTC).isoformat()
        counter = "dropped_total" if status == STATUS_DAMAGED else "rejected_total"
        with self._transaction() as conn:
            self._in_flight.discard(row_id)
            # Copied with casts: a damaged row's columns may not have their declared types.
            cur = conn.execute(
                "INSERT INTO dead_letter (report_id, seq, observed_at, size, body, status,"
                " reason, rejected_at) SELECT CAST(report_id AS TEXT),"
                " CASE typeof(seq) WHEN 'integer' THEN seq ELSE 0 END,"
                " CAST(observed_at AS TEXT), CASE typeof(size) WHEN 'integer' THEN size ELSE 0 END,"
                " CAST(body AS BLOB), ?, ?, ? FROM queue WHERE row_id = ?"
                " RETURNING report_id, seq",
                (status, reason[:2000], now, row_id),
            )
            row = cur.fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM queue WHERE row_id = ?", (row_id,))
            count = self._meta_int(conn, counter) + 1
            self._set_meta(conn, counter, count)
            self._trim_dead_letters(conn)
        return str(row[0]), int(row[1]), count

    def ack(self, row_ids: Sequence[int]) -> int:
        """Remove reports the collector acknowledged; return how many were still queued.

        Rows dropped for room while they were in flight were delivered after all: they
        come off the dropped count again.
        """
        if not row_ids:
            return 0
        delivered = self._dropped_in_flight.intersection(row_ids)
        with self._transaction() as conn:
            removed = 0
            for chunk in _chunks(row_ids, 500):
                marks = ",".join("?" * len(chunk))
                cur = conn.execute(f"DELETE FROM queue WHERE row_id IN ({marks})", chunk)  # noqa: S608
                removed += cur.rowcount
            if delivered:
                dropped_total = self._meta_int(conn, "dropped_total") - len(delivered)
                self._set_meta(conn, "dropped_total", max(0, dropped_total))
            # Return freed pages to the file system a little at a time (auto_vacuum).
            conn.execute("PRAGMA incremental_vacuum(256)").fetchall()
        self._dropped_in_flight -= delivered
        self._in_flight.difference_update(row_ids)
        return removed

    def reject(self, row_id: int, status: int, reason: str) -> bool:
        """Move a permanently rejected report to the dead-letter table; False if gone."""
        moved = self._to_dead_letters(row_id, status, reason)
        if moved is None:
            return False
        report_id, seq, rejected_total = moved
        event(
            log,
            logging.ERROR,
            "report.dead_lettered",
            report_id=report_id,
            seq=seq,
            status=status,
            reason=reason[:300],
            rejected_total=rejected_total,
            spool=str(self.path),
            hint="the collector refused this report permanently; it is kept in the "
            "spool's dead_letter table and will not be sent again",
        )
        return True

    def _trim_dead_letters(self, conn: sqlite3.Connection) -> None:
        max_bytes = int(self.max_size * DEAD_LETTER_MAX_FRACTION)
        keep_from = None
        total = 0
        for count, (row_id, size) in enumerate(
            conn.execute("SELECT row_id, size FROM dead_letter ORDER BY row_id DESC"), 1
        ):
            total += size
            if count > DEAD_LETTER_MAX_ROWS or (count > 1 and total > max_bytes):
                keep_from = row_id
                break
        if keep_from is not None:
            conn.execute("DELETE FROM dead_letter WHERE row_id <= ?", (keep_from,))

    def dead_letters(self) -> list[DeadLetter]:
        """The kept dead letters, oldest first (for inspection and tests)."""
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT report_id, seq, status, reason, rejected_at, body FROM dead_letter "
                "ORDER BY row_id"
            ).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    def stats(self) -> SpoolStats:
        """Return queue length and bytes, the oldest observation, drop and reject totals."""
        with self._locked() as conn:
            queued, queued_bytes, oldest = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(observed_at) FROM queue"
            ).fetchone()
            dead = conn.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
            return SpoolStats(
                queued=queued,
                queued_bytes=queued_bytes,
                oldest_observed_at=oldest,
                dropped_total=self._meta_int(conn, "dropped_total"),
                rejected_total=self._meta_int(conn, "rejected_total"),
                dead_letters=dead,
                next_seq=self._meta_int(conn, "next_seq"),
                resets=self._meta_int(conn, "spool_resets"),
            )

    def adopt(self, kept: dict[str, int | str]) -> int:
        """Carry salvaged values into this fresh spool and count the reset; return the count.

        ``seq`` continues after anything the old file shows, so the gap stays visible.
        """
        with self._transaction() as conn:
            if isinstance(agent_id := kept.get("agent_id"), str):
                self._set_meta(conn, "agent_id", agent_id)
            seq = max(int(kept.get("next_seq", 1)), int(kept.get("max_seq", 0)) + 1)
            self._set_meta(conn, "next_seq", seq)
            for key in ("dropped_total", "rejected_total"):
                self._set_meta(conn, key, int(kept.get(key, 0)))
            resets = int(kept.get("spool_resets", 0)) + 1
            self._set_meta(conn, "spool_resets", resets)
        return resets

    def close(self) -> None:
        """Checkpoint the WAL and close; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._conn.close()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _valid_agent_id(value: object) -> bool:
    return isinstance(value, str) and _AGENT_ID.fullmatch(value) is not None


def _count(value: object) -> int | None:
    """``value`` as a stored count (decimal digits in range), or None."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if number <= MAX_COUNT else None


def _meta_count(conn: sqlite3.Connection, key: str, path: Path) -> int:
    """Read a counter from ``meta``; raise SpoolCorrupt when it is not a count."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        return 1 if key == "next_seq" else 0
    number = _count(row[0])
    if number is None:
        raise SpoolCorrupt(
            _corrupt_message(path, Exception(f"meta {key} is {show(row[0])}, not a count"))
        )
    return number


def _row_problem(report_id: object, seq: object, body: object) -> str | None:
    """Why a queue row is not the report it was stored as, or None."""
    if not isinstance(body, bytes):
        return f"body is {type(body).__name__}, not bytes"
    try:
        report = decode_report(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"body is not a valid report ({str(exc)[:200]})"
    if report.id != report_id or report.seq != seq:
        return f"row says report {show(report_id)} seq {show(seq)}, body says {report.id}"
    return None


def stored_identity(path: str | Path) -> str | None:
    """The agent id a daemon keeps in this spool, read-only; None when there is none yet.

    ``check`` uses it so that a one-shot check names the same agent as the daemon.
    """
    value = _salvage(Path(path)).get("agent_id")
    return value if isinstance(value, str) else None


def _salvage(path: Path) -> dict[str, int | str]:
    """What can still be read from a (possibly damaged) spool, each value validated.

    Read-only and best effort: every value is read on its own, so one damaged page
    costs only what it holds.
    """
    found: dict[str, int | str] = {}
    if not path.is_file():
        return found
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return found
    try:
        for key in ("agent_id", *COUNTERS):
            with contextlib.suppress(sqlite3.Error):
                row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                if row is None:
                    continue
                if key == "agent_id":
                    if _valid_agent_id(row[0]):
                        found[key] = str(row[0])
                elif (number := _count(row[0])) is not None:
                    found[key] = number
        for table in ("queue", "dead_letter"):
            with contextlib.suppress(sqlite3.Error):
                top = conn.execute(f"SELECT MAX(seq) FROM {table}").fetchone()[0]  # noqa: S608
                if isinstance(top, int) and 0 <= top < MAX_COUNT:
                    found["max_seq"] = max(int(found.get("max_seq", 0)), top)
    finally:
        conn.close()
    return found


def _move_aside(path: Path) -> Path:
    """Rename the spool and its WAL files to ``<name>.broken-<UTC time>``; return the name."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.replace(aside.with_name(aside.name + suffix))
    path.replace(aside)
    return aside


def open_spool(path: str | Path, max_size: int, agent_id: str | None = None) -> Spool:
    """Open (or create) the spool at ``path`` bounded to ``max_size`` bytes of reports.

    A damaged file is moved aside and a fresh spool started in its place, keeping the
    agent id, the seq and the counters that could still be read: a service manager
    restarting an agent that crashes on its own spool would measure nothing, forever.
    ``agent_id`` (the running daemon's) is kept when the old file no longer tells it.
    """
    path = Path(path)
    try:
        return Spool.open(path, max_size)
    except SpoolCorrupt as exc:
        damage = str(exc)
    kept = _salvage(path)
    if agent_id is not None:
        kept.setdefault("agent_id", agent_id)
    try:
        aside = _move_aside(path)
    except OSError as exc:
        raise SpoolError(f"{damage} (moving it aside failed: {exc.strerror or exc})") from None
    spool = Spool.open(path, max_size)
    try:
        resets = spool.adopt(kept)
    except BaseException:
        spool.close()
        raise
    event(
        log,
        logging.ERROR,
        "spool.reset",
        path=str(path),
        moved_to=str(aside),
        error=damage,
        kept_agent_id="agent_id" in kept,
        next_seq=spool.stats().next_seq,
        spool_resets=resets,
        hint=f"the spool was damaged; it was renamed to {aside} (reports still queued in it "
        "are not sent; read its queue and dead_letter tables with sqlite3) and a new spool "
        "was started; reports now carry spool_resets so the collector sees it",
    )
    return spool

"""The durable report spool: a SQLite queue every report enters before any send.

Semantics follow telegraf's disk buffer: ``append`` commits a report (and assigns its
persistent ``seq``) in one transaction; ``begin_batch`` returns the oldest reports
without removing them; ``ack`` removes them only after the collector answered 2xx.
The database runs in WAL mode with ``synchronous=FULL``, so a committed report
survives ``kill -9`` and power loss.

The queue is bounded by ``spool.max_size`` (bytes of queued report JSON; the file is
somewhat larger because of SQLite pages and the WAL). When a new report does not fit,
the OLDEST queued reports are dropped, the drop is counted persistently, and the
cumulative count travels in every later report's ``spool_dropped``. A report the
collector permanently rejects is moved to a bounded dead-letter table (kept for
inspection with ``sqlite3``), so it never blocks the queue.

The API is synchronous and fast; the daemon calls it through ``asyncio.to_thread``.
One connection is shared under a lock, so calls from different threads serialise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.log import event
from agent.report import Report, encode

log = logging.getLogger(__name__)

SPOOL_FORMAT: Final = 1
# Dead letters are kept for people to inspect, not forever: the newest ones win.
DEAD_LETTER_MAX_ROWS: Final = 1000
DEAD_LETTER_MAX_FRACTION: Final = 0.1  # of max_size
# Rows are accounted with a little overhead so that many tiny reports still hit the bound.
ROW_OVERHEAD_BYTES: Final = 64

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
            raise SpoolError(_corrupt_message(path, exc)) from None
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
            raise SpoolError(_corrupt_message(path, Exception(problems)))
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('format', ?)", (str(SPOOL_FORMAT),))
            elif row[0] != str(SPOOL_FORMAT):
                raise SpoolError(
                    f"spool {path} has format {row[0]}, this agent understands "
                    f"{SPOOL_FORMAT}; run the agent version that wrote it until it is empty, "
                    "or move the file away"
                )
            for key, initial in (("next_seq", 1), ("dropped_total", 0), ("rejected_total", 0)):
                conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, str(initial)))
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
                raise SpoolError(_corrupt_message(self.path, exc)) from None

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

    @staticmethod
    def _meta_int(conn: sqlite3.Connection, key: str) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

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
            if row is not None:
                return str(row[0])
            agent_id = str(uuid.uuid4())
            self._set_meta(conn, "agent_id", agent_id)
            return agent_id

    def append(self, build: Callable[[int, int], Report]) -> Appended:
        """Build a report with the next ``seq`` and the dropped count, and commit it.

        ``build(seq, dropped)`` runs inside the transaction, so the seq it receives is
        used exactly once even when two writers race or the process dies right after.
        """
        with self._transaction() as conn:
            seq = self._meta_int(conn, "next_seq")
            dropped_total = self._meta_int(conn, "dropped_total")
            report = build(seq, dropped_total)
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
            if dropped:
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
        return len(victims)

    def begin_batch(self, max_count: int, max_bytes: int) -> list[Entry]:
        """Return the oldest queued reports (without removing them) within the bounds.

        The first report is always returned, even when it alone exceeds ``max_bytes``:
        the collector then decides (413 sends it to the dead-letter table), so an
        oversized report can never stall the queue.
        """
        entries: list[Entry] = []
        total = 0
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT row_id, report_id, seq, body FROM queue ORDER BY row_id LIMIT ?",
                (max(1, max_count),),
            )
            for row_id, report_id, seq, body in rows:
                body = bytes(body)
                if entries and total + len(body) + 1 > max_bytes:
                    break
                entries.append(Entry(row_id, report_id, seq, body))
                total += len(body) + 1
        return entries

    def ack(self, row_ids: Sequence[int]) -> int:
        """Remove reports the collector acknowledged; return how many were still queued."""
        if not row_ids:
            return 0
        with self._transaction() as conn:
            removed = 0
            for chunk in _chunks(row_ids, 500):
                marks = ",".join("?" * len(chunk))
                cur = conn.execute(f"DELETE FROM queue WHERE row_id IN ({marks})", chunk)  # noqa: S608
                removed += cur.rowcount
            # Return freed pages to the file system a little at a time (auto_vacuum).
            conn.execute("PRAGMA incremental_vacuum(256)").fetchall()
        return removed

    def reject(self, row_id: int, status: int, reason: str) -> bool:
        """Move a permanently rejected report to the dead-letter table; False if gone."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT report_id, seq, observed_at, size, body FROM queue WHERE row_id = ?",
                (row_id,),
            ).fetchone()
            if row is None:
                return False
            report_id, seq, observed_at, size, body = row
            conn.execute(
                "INSERT INTO dead_letter (report_id, seq, observed_at, size, body, status, "
                "reason, rejected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (report_id, seq, observed_at, size, body, status, reason[:2000], now),
            )
            conn.execute("DELETE FROM queue WHERE row_id = ?", (row_id,))
            rejected_total = self._meta_int(conn, "rejected_total") + 1
            self._set_meta(conn, "rejected_total", rejected_total)
            self._trim_dead_letters(conn)
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
            )

    def close(self) -> None:
        """Checkpoint the WAL and close; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._conn.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stored_identity(path: str | Path) -> str | None:
    """The agent id a daemon keeps in this spool, read-only; None when there is none yet.

    ``check`` uses it so that a one-shot check names the same agent as the daemon.
    """
    if not Path(path).is_file():
        return None
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'agent_id'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def open_spool(path: str | Path, max_size: int) -> Spool:
    """Open (or create) the spool at ``path`` bounded to ``max_size`` bytes of reports."""
    return Spool.open(path, max_size)

"""The spool: one suite run on a fresh spool and on one reopened after ``kill -9``.

The second scenario kills a process that appends (and acks) reports as fast as it can,
then checks that every report it announced as committed is there, nothing it acked
came back, and the seq numbers continue without a gap.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.report import Report, decode_report
from agent.sections import make_report
from agent.spool import (
    DEAD_LETTER_MAX_ROWS,
    Appended,
    Spool,
    SpoolCorrupt,
    SpoolError,
    open_spool,
    stored_identity,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = parse_config({"site": "bac-kan/cho-don", "inventory": {"enabled": False}})

WRITER = r"""
import datetime as dt, sys
from agent.config import parse_config
from agent.sections import make_report
from agent.spool import Spool
cfg = parse_config({"site": "bac-kan/cho-don"})
spool = Spool.open(sys.argv[1], 10_000_000)
agent_id = spool.identity()
print("ready", agent_id, flush=True)
n = 0
while True:
    a = spool.append(lambda seq, d: make_report(
        cfg, agent_id=agent_id, seq=seq, observed_at=dt.datetime.now(dt.UTC), results={},
        spool_dropped=d))
    print("append", a.report.seq, flush=True)
    n += 1
    if n % 5 == 0:
        batch = spool.begin_batch(2, 1_000_000)
        spool.ack([e.row_id for e in batch])
        print("ack", *[e.seq for e in batch], flush=True)
"""


def append(spool: Spool, agent_id: str = "agent-1", lost: int = 0, **results: object) -> Appended:
    return spool.append(
        lambda seq, dropped: make_report(
            CONFIG,
            agent_id=agent_id,
            seq=seq,
            observed_at=dt.datetime.now(dt.UTC),
            results=results,  # type: ignore[arg-type]
            spool_dropped=dropped,
        ),
        lost,
    )


def queued(spool: Spool) -> list[Report]:
    return [decode_report(e.body) for e in spool.begin_batch(10**6, 10**12)]


@dataclass
class Case:
    """A spool under test and how it came to be."""

    path: Path
    spool: Spool
    scenario: str
    max_size: int = 10_000_000
    preexisting: list[int] = field(default_factory=list)

    def reopen(self, max_size: int | None = None) -> Spool:
        self.spool.close()
        self.max_size = max_size or self.max_size
        self.spool = Spool.open(self.path, self.max_size)
        return self.spool

    def drain(self) -> None:
        batch = self.spool.begin_batch(10**6, 10**12)
        self.spool.ack([e.row_id for e in batch])


def kill_writer(path: Path) -> tuple[set[int], set[int]]:
    """Run the writer, SIGKILL it mid-stream; return (appended, acked) seqs it announced."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    appended: set[int] = set()
    acked: set[int] = set()

    def take(line: str) -> None:
        words = line.split()
        if words and words[0] == "append":
            appended.add(int(words[1]))
        elif words and words[0] == "ack":
            acked.update(int(w) for w in words[1:])

    try:
        assert proc.stdout is not None
        while len(appended) < 60:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            take(line)
        os.kill(proc.pid, signal.SIGKILL)
        for line in proc.stdout:  # lines already in the pipe were committed too
            take(line)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return appended, acked


@pytest.fixture(params=["fresh", "after-kill-9"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    path = tmp_path / "state" / "spool.db"
    if request.param == "fresh":
        c = Case(path, Spool.open(path, 10_000_000), "fresh")
    else:
        appended, acked = kill_writer(path)
        spool = Spool.open(path, 10_000_000)
        seqs = [r.seq for r in queued(spool)]
        # Everything announced as committed is there (except what an ack in flight at
        # the kill, committed but not yet announced, removed: the two oldest); nothing
        # announced as acked is.
        expected = sorted(appended - acked)
        assert set(expected[2:]) <= set(seqs)
        assert not (acked & set(seqs))
        # At most the one append in flight at the kill may be there unannounced.
        assert set(seqs) <= appended | {max(appended) + 1}
        assert seqs == sorted(seqs)
        assert spool.stats().next_seq in (max(appended) + 1, max(appended) + 2)
        c = Case(path, spool, "after-kill-9", preexisting=seqs)
    try:
        yield c
    finally:
        c.spool.close()


def test_append_assigns_next_seq_and_commits(case: Case) -> None:
    """Seqs continue from the stored counter, one per report, and survive reopening."""
    first = case.spool.stats().next_seq
    made = [append(case.spool) for _ in range(5)]
    assert [a.report.seq for a in made] == list(range(first, first + 5))
    spool = case.reopen()
    stored = queued(spool)
    assert [r.seq for r in stored] == [*case.preexisting, *range(first, first + 5)]
    assert [r.id for r in stored[-5:]] == [a.report.id for a in made]
    assert spool.stats().next_seq == first + 5


def test_begin_batch_returns_oldest_without_removing(case: Case) -> None:
    """begin_batch is a peek: the same oldest reports come back until they are acked."""
    case.drain()
    made = [append(case.spool) for _ in range(6)]
    batch = case.spool.begin_batch(4, 10**9)
    assert [e.report_id for e in batch] == [a.report.id for a in made[:4]]
    again = case.spool.begin_batch(4, 10**9)
    assert [e.row_id for e in again] == [e.row_id for e in batch]
    assert case.spool.ack([e.row_id for e in batch]) == 4
    rest = case.spool.begin_batch(10, 10**9)
    assert [e.report_id for e in rest] == [a.report.id for a in made[4:]]


def test_batch_bounded_by_bytes_but_never_empty(case: Case) -> None:
    """A byte budget cuts the batch; a first report bigger than the budget still comes alone."""
    case.drain()
    made = [append(case.spool) for _ in range(5)]
    one = len(case.spool.begin_batch(1, 10**9)[0].body)
    assert len(case.spool.begin_batch(100, 2 * one + 2)) == 2
    tiny = case.spool.begin_batch(100, 10)
    assert [e.report_id for e in tiny] == [made[0].report.id]


def test_ack_is_durable(case: Case) -> None:
    """Acked reports stay gone after reopening; the others stay queued in order."""
    case.drain()
    made = [append(case.spool) for _ in range(4)]
    batch = case.spool.begin_batch(2, 10**9)
    case.spool.ack([e.row_id for e in batch])
    assert case.spool.ack([e.row_id for e in batch]) == 0  # acking twice is harmless
    spool = case.reopen()
    assert [r.id for r in queued(spool)] == [a.report.id for a in made[2:]]


def test_full_spool_drops_oldest_and_reports_the_count(case: Case) -> None:
    """When full, the oldest reports go; later reports carry the cumulative drop count."""
    case.drain()
    base = case.spool.stats().dropped_total
    size = append(case.spool).size
    case.drain()
    spool = case.reopen(max_size=5 * size + size // 2)  # room for five reports
    made = [append(spool) for _ in range(8)]
    assert [a.dropped for a in made] == [0] * 5 + [1, 1, 1]
    stored = queued(spool)
    assert [r.id for r in stored] == [a.report.id for a in made[3:]]
    # The report whose arrival caused a drop was built before it; the ones after carry it.
    assert [r.spool_dropped for r in stored] == [base, base, base, base + 1, base + 2]
    assert spool.stats().dropped_total == base + 3
    spool = case.reopen()
    assert spool.stats().dropped_total == base + 3
    assert append(spool).report.spool_dropped == base + 3


def test_reject_moves_report_to_dead_letter(case: Case) -> None:
    """A rejected report leaves the queue for the dead-letter table and stops blocking."""
    case.drain()
    made = [append(case.spool) for _ in range(3)]
    before = case.spool.stats().rejected_total
    first = case.spool.begin_batch(1, 10**9)[0]
    assert case.spool.reject(first.row_id, 422, "HTTP 422 error=schema")
    assert not case.spool.reject(first.row_id, 422, "again")
    assert [e.report_id for e in case.spool.begin_batch(10, 10**9)] == [
        a.report.id for a in made[1:]
    ]
    spool = case.reopen()
    dead = spool.dead_letters()[-1]
    assert (dead.report_id, dead.status, dead.reason) == (
        made[0].report.id,
        422,
        "HTTP 422 error=schema",
    )
    assert decode_report(dead.body).id == made[0].report.id
    assert spool.stats().rejected_total == before + 1


def test_identity_is_stable_and_config_wins(case: Case) -> None:
    """The generated agent id is made once and kept; a configured one takes precedence."""
    generated = case.spool.identity()
    assert generated == case.reopen().identity()
    assert case.spool.identity("pc-42") == "pc-42"
    assert case.spool.identity() == generated


def test_stats(case: Case) -> None:
    case.drain()
    made = [append(case.spool) for _ in range(3)]
    stats = case.spool.stats()
    assert stats.queued == 3
    assert stats.queued_bytes == sum(a.size for a in made)
    assert stats.oldest_observed_at == made[0].report.observed_at.isoformat()


# -- outside the suite: bad files and bounds -----------------------------------------------


def test_garbage_file_gives_advice_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not sqlite" * 300)
    with pytest.raises(SpoolError) as err:
        Spool.open(path, 10**6)
    message = str(err.value)
    assert f"spool {path} is unreadable or corrupt" in message
    assert f"move {path}" in message and "start the agent" in message


def test_damaged_pages_are_detected(tmp_path: Path) -> None:
    """A spool whose pages were overwritten fails the integrity check at open."""
    path = tmp_path / "spool.db"
    with Spool.open(path, 10**7) as spool:
        for _ in range(200):
            append(spool)
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[3 * page : 6 * page] = b"\xa5" * (3 * page)
    path.write_bytes(bytes(data))
    with pytest.raises(SpoolError, match="unreadable or corrupt"):
        Spool.open(path, 10**7)


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(SpoolError, match=r"not a hatang spool \(tables: invoices\)"):
        Spool.open(path, 10**6)


def test_unusable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match=r"cannot create the spool directory .*spool\.path"):
        Spool.open(blocker / "sub" / "spool.db", 10**6)


def test_report_larger_than_the_spool_is_counted_as_dropped(tmp_path: Path) -> None:
    with Spool.open(tmp_path / "s.db", 100) as spool:
        result = append(spool)
        assert result.row_id is None and result.dropped == 1
        assert spool.stats().queued == 0
        assert spool.stats().dropped_total == 1


def test_dead_letters_are_bounded(tmp_path: Path) -> None:
    """The dead-letter table keeps the newest entries only."""
    with Spool.open(tmp_path / "s.db", 10**9) as spool:
        for _ in range(DEAD_LETTER_MAX_ROWS + 5):
            row_id = append(spool).row_id
            assert row_id is not None
            spool.reject(row_id, 400, "bad")
        dead = spool.dead_letters()
        assert len(dead) == DEAD_LETTER_MAX_ROWS
        assert spool.stats().rejected_total == DEAD_LETTER_MAX_ROWS + 5


def test_closed_spool_refuses_use(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "s.db", 10**6)
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="is closed"):
        append(spool)


# -- damaged spools: moved aside, a fresh one started, what can be read is kept ----------


def filled(path: Path, n: int = 200) -> list[Report]:
    """A spool written by a daemon: ``n`` reports of agent-1, 3 of them acked."""
    with Spool.open(path, 10**7) as spool:
        spool.identity("")  # a generated id is stored as a daemon's would be
        reports = [append(spool, agent_id="agent-1").report for _ in range(n)]
        batch = spool.begin_batch(3, 10**9)
        spool.ack([e.row_id for e in batch])
    return reports


def set_meta(path: Path, key: str, value: object) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    conn.close()


def damage_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[3 * 4096 : 6 * 4096] = b"\xa5" * (3 * 4096)
    path.write_bytes(bytes(data))


DAMAGE = {
    "next_seq-not-a-number": lambda p: set_meta(p, "next_seq", "12abc"),
    "next_seq-negative": lambda p: set_meta(p, "next_seq", "-5"),
    "dropped_total-empty": lambda p: set_meta(p, "dropped_total", ""),
    "rejected_total-huge": lambda p: set_meta(p, "rejected_total", "9" * 40),
    "agent_id-with-newline": lambda p: set_meta(p, "agent_id", "agent\nevil"),
    "format-garbage": lambda p: set_meta(p, "format", "x" * 5000),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: 5 * 4096 + 100]),
    "not-sqlite": lambda p: p.write_bytes(b"this is not sqlite" * 300),
    "damaged-page": damage_pages,
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_spool_is_moved_aside_and_a_fresh_one_kept_going(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Any damage: a clear SpoolCorrupt from Spool.open (never a ValueError traceback), and
    open_spool renames the file with a timestamp and starts a fresh spool that works."""
    path = tmp_path / "spool.db"
    old = filled(path)
    agent_id = stored_identity(path)
    DAMAGE[damage](path)
    damaged_bytes = path.read_bytes()
    with pytest.raises(SpoolCorrupt, match=f"spool {path} is unreadable or corrupt"):
        Spool.open(path, 10**7)
    with caplog.at_level("ERROR"), open_spool(path, 10**7) as spool:
        report = append(spool, agent_id="agent-1").report
        assert queued(spool) == [report]
        assert spool.stats().resets == 1
    assert report.spool_resets == 1
    (aside,) = [
        p
        for p in tmp_path.iterdir()
        if p.name.startswith("spool.db.broken-") and not p.name.endswith(("-wal", "-shm"))
    ]
    if damage == "not-sqlite":
        assert aside.read_bytes() == damaged_bytes, "the damaged file is kept as it was"
    assert aside.stat().st_size > 0
    record = next(r for r in caplog.records if r.getMessage() == "spool.reset")
    assert str(path) in record.error and "moved_to" in record.__dict__  # type: ignore[attr-defined]
    if damage not in ("not-sqlite", "truncated", "damaged-page"):
        # Only metadata was damaged: everything else readable carries over.
        assert report.seq == old[-1].seq + 1
        if damage != "agent_id-with-newline":
            assert stored_identity(path) == agent_id
    # The fresh spool's report ids are new UUIDs: no stored report can be shadowed.
    assert report.id not in {r.id for r in old}


def test_a_spool_of_another_agent_version_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    filled(path, 3)
    set_meta(path, "format", "2")
    with pytest.raises(SpoolError, match="has format 2, this agent understands 1") as err:
        open_spool(path, 10**7)
    assert not isinstance(err.value, SpoolCorrupt)
    assert [p.name for p in tmp_path.iterdir() if "broken" in p.name] == []


def test_a_reset_spool_counts_on_from_its_predecessor(tmp_path: Path) -> None:
    """A second reset: spool_resets goes to 2, and the seq never goes backwards."""
    path = tmp_path / "spool.db"
    filled(path, 20)
    for expected in (1, 2):
        set_meta(path, "dropped_total", "lots")
        with open_spool(path, 10**7) as spool:
            report = append(spool).report
        assert report.spool_resets == expected
    assert report.seq == 22


def test_a_damaged_row_is_buried_and_counted_not_sent(tmp_path: Path) -> None:
    """A queue row whose body no longer reads as its report goes to the dead letters."""
    path = tmp_path / "spool.db"
    with Spool.open(path, 10**7) as spool:
        first, second, third = (append(spool).report for _ in range(3))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE queue SET body = ? WHERE seq = ?", (b'{"id": 3', second.seq))
    conn.close()
    with Spool.open(path, 10**7) as spool:
        assert [r.id for r in queued(spool)] == [first.id, third.id]
        assert spool.stats().dropped_total == 1
        (dead,) = spool.dead_letters()
        assert dead.status == 0 and dead.reason.startswith("damaged in the spool: body is not")
        assert append(spool).report.spool_dropped == 1


# -- exact drop counts -------------------------------------------------------------------


def test_rows_dropped_while_in_flight_and_then_acked_are_not_counted(tmp_path: Path) -> None:
    """The sender holds the oldest batch; the spool fills and drops it for room; the
    collector then stores it (2xx): nothing of that batch was lost."""
    with Spool.open(tmp_path / "s.db", 1_000_000) as spool:
        big = {"host": __import__("agent.report").report.HostInventory(hostname="h" * 200, os="x")}
        while spool.stats().queued_bytes < 990_000:
            append(spool, **big)
        batch = spool.begin_batch(5, 10**9)
        before = spool.stats().dropped_total
        dropped = 0
        while dropped < 8:  # pushes out the 5 in flight and 3 more
            dropped += append(spool, **big).dropped
        assert spool.stats().dropped_total == before + dropped
        spool.ack([e.row_id for e in batch])  # the collector had stored them
        assert spool.stats().dropped_total == before + dropped - 5
        assert append(spool, **big).report.spool_dropped >= dropped - 5


def test_cycles_that_could_not_be_queued_are_counted_and_leave_a_seq_gap(
    tmp_path: Path,
) -> None:
    with Spool.open(tmp_path / "s.db", 10**7) as spool:
        first = append(spool).report
        later = append(spool, lost=3).report
        assert later.seq == first.seq + 4
        assert later.spool_dropped == 3
        assert spool.stats().dropped_total == 3

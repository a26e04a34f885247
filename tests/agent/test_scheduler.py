"""The daemon in-process: sections on intervals, reports into the spool, the sender.

Networks checks target a TCP listener the test opens on 127.0.0.1; reports go to the
test receiver (the collector API contract) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, parse_config
from agent.report import HostInventory, Report, decode_report
from agent.scheduler import EXIT_CONFIG, EXIT_OK, Daemon
from agent.sections import Section, enabled_sections, make_report
from agent.spool import Spool
from tests.receiver import Receiver, agent_config, free_port


async def until(predicate: Any, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)
    return value


class Started:
    """A daemon running in the test's loop; stopped (and its exit code checked) on exit."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.task: asyncio.Task[int] | None = None
        self.code: int | None = None

    async def __aenter__(self) -> Daemon:
        task = self.task = asyncio.create_task(self.daemon.run())
        await until(lambda: self.daemon.agent_id is not None or task.done())
        return self.daemon

    async def __aexit__(self, *exc: object) -> None:
        self.daemon.stop()
        assert self.task is not None
        self.code = await asyncio.wait_for(self.task, 30)


def queued_reports(daemon: Daemon) -> list[Report]:
    assert daemon.spool is not None
    return [decode_report(e.body) for e in daemon.spool.begin_batch(10**6, 10**12)]


def config(tmp_path: Path, **kwargs: Any) -> AgentConfig:
    return parse_config(agent_config(tmp_path, **kwargs))


async def test_reports_every_interval_delivered_in_order(tmp_path: Path, listener: int) -> None:
    with Receiver() as receiver:
        cfg = config(tmp_path, urls=[receiver.url], tcp_port=listener)
        started = Started(Daemon(cfg, "agent.yaml"))
        async with started as daemon:
            await until(lambda: receiver.count() >= 3)
        assert started.code == EXIT_OK
        reports = receiver.stored()
        assert [r.seq for r in reports] == list(range(1, len(reports) + 1))
        assert {(r.site, r.role, r.agent_id, r.interval_seconds) for r in reports} == {
            ("bac-kan/cho-don", "host", daemon.agent_id, 1.0)
        }
        assert all(r.observed_at < b.observed_at for r, b in itertools.pairwise(reports))
        assert receiver.duplicates == 0


async def test_reports_written_while_collector_is_away_arrive_once_in_order(
    tmp_path: Path, listener: int
) -> None:
    port = free_port()
    cfg = config(tmp_path, urls=[f"http://127.0.0.1:{port}"], tcp_port=listener)
    async with Started(Daemon(cfg, "agent.yaml")) as daemon:
        assert daemon.spool is not None and daemon.sender is not None
        spool, sender = daemon.spool, daemon.sender
        await until(lambda: spool.stats().queued >= 3 and sender.stats.failed_attempts >= 2)
        waiting = [r.id for r in queued_reports(daemon)]
        with Receiver(port=port) as receiver:
            await until(lambda: receiver.count() >= len(waiting) + 1)
            reports = receiver.stored()
    assert [r.id for r in reports[: len(waiting)]] == waiting
    assert [r.seq for r in reports] == list(range(1, len(reports) + 1))
    assert receiver.duplicates == 0


async def test_slow_section_neither_delays_reports_nor_runs_twice(
    tmp_path: Path, listener: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A section stuck for several intervals: reports keep coming, it is not restarted,
    and its result rides in the first report after it finishes, and only there."""
    cfg = config(tmp_path, tcp_port=listener)
    release = asyncio.Event()
    running = 0
    peak = 0
    completions = 0

    async def slow_host(_: AgentConfig) -> HostInventory:
        nonlocal running, peak, completions
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1
        completions += 1
        return HostInventory(hostname="pc-1", os="Linux")

    host = Section("host", lambda c: True, lambda c: 1.0, slow_host)
    sections = [*enabled_sections(cfg), host]
    with caplog.at_level(logging.WARNING):
        async with Started(Daemon(cfg, "agent.yaml", sections=sections)) as daemon:
            await until(lambda: len(queued_reports(daemon)) >= 3)
            assert peak == 1 and completions == 0
            assert any(r.getMessage() == "section.overrun" for r in caplog.records)
            before = len(queued_reports(daemon))
            release.set()
            await until(lambda: any(r.host for r in queued_reports(daemon)))
            await until(lambda: len(queued_reports(daemon)) >= before + 3)
            reports = queued_reports(daemon)
    assert peak == 1
    assert all(r.host is None for r in reports[:before])
    with_host = [r for r in reports if r.host is not None]
    assert with_host[0].host == HostInventory(hostname="pc-1", os="Linux")
    # Each collected value is carried once: never more reports with it than runs.
    assert 1 <= len(with_host) <= completions


async def test_no_collector_keeps_reports_in_the_spool(tmp_path: Path, listener: int) -> None:
    cfg = config(tmp_path, tcp_port=listener)
    started = Started(Daemon(cfg, "agent.yaml"))
    async with started as daemon:
        assert daemon.sender is None
        await until(lambda: len(queued_reports(daemon)) >= 2)
    assert started.code == EXIT_OK


def write_garbage(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage" * 1000)


async def test_corrupt_spool_is_moved_aside_and_the_agent_keeps_reporting(
    tmp_path: Path, listener: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A spool that is not SQLite at start: no exit, no restart loop; reports reach the
    collector and say that the spool was reset."""
    with Receiver() as receiver:
        cfg = config(tmp_path, urls=[receiver.url], tcp_port=listener)
        path = Path(cfg.spool.path)
        write_garbage(path)
        with caplog.at_level(logging.ERROR):
            started = Started(Daemon(cfg, "agent.yaml"))
            async with started:
                await until(lambda: receiver.count() >= 2)
        assert started.code == EXIT_OK
        assert {r.spool_resets for r in receiver.stored()} == {1}
    record = next(r for r in caplog.records if r.getMessage() == "spool.reset")
    assert record.moved_to.startswith(f"{path}.broken-")  # type: ignore[attr-defined]
    moved = await asyncio.to_thread(Path(record.moved_to).read_bytes)  # type: ignore[attr-defined]
    assert moved.startswith(b"\x00garbage")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (root only), unmounted even on failure."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_disk(mount: Path) -> Path:
    filler = mount / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 4096)
    return filler


async def test_cycles_lost_to_a_full_disk_are_counted_and_leave_a_seq_gap(
    tiny_disk: Path, listener: int
) -> None:
    """The spool's disk fills up: the cycles that could not be queued are not only
    logged; the next queued report counts them in spool_dropped and skips their seq."""
    cfg = parse_config(
        {**agent_config(tiny_disk, tcp_port=listener), "spool": {"path": str(tiny_disk / "s.db")}}
    )
    async with Started(Daemon(cfg, "agent.yaml")) as daemon:
        await until(lambda: len(queued_reports(daemon)) >= 1)
        filler = await asyncio.to_thread(fill_disk, tiny_disk)
        await until(lambda: daemon.unspooled >= 2)
        filler.unlink()
        await until(lambda: daemon.unspooled == 0)
        reports = queued_reports(daemon)
        assert daemon.spool is not None
        dropped_total = daemon.spool.stats().dropped_total
    seqs = [r.seq for r in reports]
    gaps = [b - a - 1 for a, b in itertools.pairwise(seqs) if b - a > 1]
    assert len(gaps) == 1 and gaps[0] >= 2, seqs
    after_gap = next(r for a, r in itertools.pairwise(reports) if r.seq - a.seq > 1)
    assert after_gap.spool_dropped == gaps[0] == dropped_total


async def test_unreadable_token_file_exits_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = agent_config(tmp_path, urls=["http://127.0.0.1:1"])
    del data["collector"]["token"]
    data["collector"]["token_file"] = str(tmp_path / "missing-token")
    with caplog.at_level(logging.ERROR):
        assert await Daemon(parse_config(data), "agent.yaml").run() == EXIT_CONFIG
    record = next(r for r in caplog.records if r.getMessage() == "config.invalid")
    assert record.error.startswith("agent.yaml: collector.token_file: cannot read")  # type: ignore[attr-defined]


def prefill(cfg: AgentConfig) -> int:
    """Fill the spool to its bound as a long outage would; return the reports written."""
    with Spool.open(cfg.spool.path, int(cfg.spool.max_size)) as spool:
        agent_id = spool.identity()
        count = 0
        while spool.stats().queued_bytes < cfg.spool.max_size - 4000:
            spool.append(
                lambda seq, dropped: make_report(
                    cfg,
                    agent_id=agent_id,
                    seq=seq,
                    observed_at=dt.datetime.now(dt.UTC),
                    results={"host": HostInventory(hostname="x" * 200, os="y" * 200)},
                    spool_dropped=dropped,
                )
            )
            count += 1
        assert spool.stats().dropped_total == 0
        return count


async def test_full_spool_drops_oldest_and_later_reports_say_so(
    tmp_path: Path, listener: int
) -> None:
    """A spool filled by a long outage: new reports push the oldest out, and carry the count."""
    cfg = config(tmp_path, tcp_port=listener, spool={"max_size": "1MB"})
    written = await asyncio.to_thread(prefill, cfg)
    async with Started(Daemon(cfg, "agent.yaml")) as daemon:
        assert daemon.spool is not None
        spool = daemon.spool
        await until(lambda: spool.stats().dropped_total >= 3)
        reports = queued_reports(daemon)
        dropped_total = spool.stats().dropped_total
    assert reports[0].seq == dropped_total + 1  # the oldest went first
    first = dropped_total + 1
    assert [r.seq for r in reports] == list(range(first, first + len(reports)))
    new = [r.spool_dropped for r in reports if r.seq > written]
    assert new == sorted(new) and new[-1] >= 1
    assert new[-1] <= dropped_total


async def test_a_new_config_applies_without_restart(
    tmp_path: Path, listener: int, closed_port: int
) -> None:
    """What a central config change does: new targets and interval on the next cycle, a
    section it turns on starts, and one it turns off stops."""
    cfg = config(tmp_path, tcp_port=listener)
    started = Started(Daemon(cfg, "agent.yaml"))
    async with started as daemon:
        await until(lambda: len(queued_reports(daemon)) >= 1)
        assert set(daemon._loops) == {"networks"}
        new = config(tmp_path, tcp_port=closed_port, interval="2s", inventory={"enabled": True})
        daemon.apply_config(new)
        assert set(daemon._loops) == {"networks", "host"}

        def changed() -> list[Report]:
            return [r for r in queued_reports(daemon) if r.interval_seconds == 2.0]

        reports = await until(lambda: [r for r in changed() if r.host is not None])
        assert reports[0].networks.lan.targets[0].target == f"127.0.0.1:{closed_port}"
        daemon.apply_config(cfg)
        assert set(daemon._loops) == {"networks"}
    assert started.code == EXIT_OK

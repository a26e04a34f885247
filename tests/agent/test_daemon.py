"""``hatang-agent run`` as a real process: SIGTERM, ``kill -9`` mid-send, a corrupt spool.

The agent runs as ``python -m agent run --config FILE``; its networks check targets a
TCP listener on 127.0.0.1 and it reports to the test receiver on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from agent.spool import Spool
from tests.netns import wait_for
from tests.receiver import Receiver, agent_config, free_port, write_config

REPO = Path(__file__).resolve().parents[2]


class Agent:
    """One ``hatang-agent run`` process with its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._log_file: IO[bytes] = log.open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._log_file.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log_file.close()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.close()


def queued(spool_path: Path) -> list[tuple[str, int]]:
    """(report id, seq) of queued reports, read without disturbing the running agent."""
    if not spool_path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{spool_path}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute("SELECT report_id, seq FROM queue ORDER BY row_id").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()
    return [(r[0], r[1]) for r in rows]


def setup_agent(tmp_path: Path, urls: list[str], listener: int, **extra: Any) -> tuple[Path, Path]:
    data = agent_config(tmp_path, urls=urls, tcp_port=listener, **extra)
    config = write_config(tmp_path / "agent.yaml", data)
    return config, Path(data["spool"]["path"])


def test_sigterm_exits_0_and_keeps_the_spool(
    tmp_path: Path, listener: int, agents: list[Agent]
) -> None:
    config, spool_path = setup_agent(tmp_path, [f"http://127.0.0.1:{free_port()}"], listener)
    agent = Agent(config, tmp_path / "agent.log")
    agents.append(agent)
    wait_for(lambda: len(queued(spool_path)) >= 3, timeout=60)
    assert agent.signal(signal.SIGTERM) == 0
    log = agent.text()
    assert "event=agent.started" in log and "site=bac-kan/cho-don" in log
    assert "role=host" in log and 'sections="networks=1s"' in log
    assert "event=agent.stopped" in log
    assert "Traceback" not in log
    with Spool.open(spool_path, 10**8) as spool:
        seqs = [e.seq for e in spool.begin_batch(10**6, 10**12)]
    assert len(seqs) >= 3
    assert seqs == list(range(1, len(seqs) + 1))


def test_kill_9_mid_send_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, listener: int, agents: list[Agent]
) -> None:
    """The collector stored a batch but the agent died before the answer: after restart
    every report arrives, each id is stored once and the seq numbers have no gap."""
    with Receiver() as receiver:
        config, spool_path = setup_agent(tmp_path, [receiver.url], listener)
        receiver.release.clear()  # store, but keep the answer back
        first = Agent(config, tmp_path / "agent-1.log")
        agents.append(first)
        wait_for(lambda: receiver.held == 1 and len(queued(spool_path)) >= 3, timeout=60)
        assert first.signal(signal.SIGKILL) == -signal.SIGKILL
        stored_before = receiver.count()
        assert stored_before >= 1
        left = queued(spool_path)
        assert {r.id for r in receiver.stored()} <= {i for i, _ in left}  # none acked
        receiver.release.set()

        second = Agent(config, tmp_path / "agent-2.log")
        agents.append(second)
        wanted = {i for i, _ in left}
        wait_for(lambda: wanted <= set(receiver.order) and receiver.count() > len(left), 60)
        assert second.signal(signal.SIGTERM) == 0

        reports = receiver.stored()
        ids = [r.id for r in reports]
        assert len(ids) == len(set(ids))
        seqs = sorted(r.seq for r in reports)
        assert seqs == list(range(1, len(seqs) + 1))
        assert receiver.duplicates >= stored_before  # the held batch came again
        assert receiver.conflicts == 0
        assert len({r.agent_id for r in reports}) == 1  # identity survived the kill


def test_corrupt_spool_is_moved_aside_and_the_agent_keeps_running(
    tmp_path: Path, listener: int, agents: list[Agent]
) -> None:
    """A service manager would restart an agent that exits on its spool in a loop: the
    agent moves the damaged file aside, says so once, and keeps measuring."""
    config, spool_path = setup_agent(tmp_path, ["http://127.0.0.1:1"], listener)
    spool_path.parent.mkdir(parents=True)
    spool_path.write_bytes(b"not a database" * 500)
    agent = Agent(config, tmp_path / "agent.log")
    agents.append(agent)
    wait_for(lambda: "event=report.queued" in agent.text(), timeout=60)
    assert agent.signal(signal.SIGTERM) == 0
    log = agent.text()
    assert log.count("event=spool.reset") == 1
    assert f"moved_to={spool_path}.broken-" in log
    assert "Traceback" not in log
    (aside,) = spool_path.parent.glob("spool.db.broken-*")
    assert aside.read_bytes() == b"not a database" * 500

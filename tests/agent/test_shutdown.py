"""The one shutdown path: a stop requested from another thread, as the Windows service's
``SvcStop`` does (Windows sends no SIGTERM), ends the daemon cleanly mid-send."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent import cli
from agent.scheduler import StopSignal
from agent.spool import Spool
from tests.agent.test_daemon import queued
from tests.netns import wait_for
from tests.receiver import Receiver, agent_config, write_config


@pytest.mark.usefixtures("root_logging")
def test_stop_from_another_thread_mid_send_keeps_the_in_flight_batch(
    tmp_path: Path, listener: int
) -> None:
    log = tmp_path / "logs" / "agent.log"
    with Receiver() as receiver:
        receiver.release.clear()  # the collector stores the batch but keeps its answer back
        data = agent_config(tmp_path, urls=[receiver.url], tcp_port=listener)
        config = write_config(tmp_path / "agent.yaml", data)
        spool_path = Path(data["spool"]["path"])
        stop = StopSignal()
        result: list[int] = []
        # The service runs the daemon on its own thread with no signal handlers, and its
        # log in a folder that may not exist yet.
        daemon = threading.Thread(
            target=lambda: result.append(cli.serve(config, stop, default_log_file=str(log)))
        )
        daemon.start()
        try:
            wait_for(lambda: receiver.held == 1 and len(queued(spool_path)) >= 2, timeout=60)
            in_flight = {r.id for r in receiver.stored()}
            assert in_flight

            stopper = threading.Thread(target=stop.request, args=("service stop",))
            stopper.start()
            stopper.join()
            daemon.join(timeout=60)
            assert not daemon.is_alive()
        finally:
            stop.request("test teardown")
            receiver.release.set()
            daemon.join(timeout=60)
    assert result == [0]
    assert stop.reason == "service stop"
    text = log.read_text(encoding="utf-8")
    assert 'event=agent.stopping reason="service stop"' in text
    assert "event=agent.stopped" in text and "Traceback" not in text
    # Nothing unacknowledged was deleted: the batch the collector never answered is still
    # queued (sent again after a restart, and stored once), and the spool opens cleanly
    # with its seq numbers unbroken.
    with Spool.open(spool_path, 10**8) as spool:
        entries = spool.begin_batch(10**6, 10**12)
    assert in_flight <= {e.report_id for e in entries}
    seqs = [e.seq for e in entries]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_stop_requested_before_the_daemon_binds_is_kept() -> None:
    import asyncio

    stop = StopSignal()
    stop.request("SIGTERM")
    stop.request("service stop")  # the first reason wins
    seen: list[str] = []

    async def main() -> None:
        done = asyncio.Event()

        def on_stop(reason: str) -> None:
            seen.append(reason)
            done.set()

        unbind = stop.bind(asyncio.get_running_loop(), on_stop)
        await asyncio.wait_for(done.wait(), 10)
        unbind()

    asyncio.run(main())
    assert seen == ["SIGTERM"]

"""``kill -9`` of a collector while agents send: every batch answered 200 survives, no
batch is half-stored, and resending everything stores nothing twice."""

from __future__ import annotations

import asyncio
import http.client
import json
import sqlite3
import threading
from collections.abc import Callable

from agent.report import Batch, encode
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import SITE, CollectorProcess, agent_report, run_cli
from tests.netns import wait_for

SENDERS = 4
BATCH = 50


def send(port: int, token: str, body: bytes) -> dict[str, int] | None:
    """POST one batch; the JSON answer on 200, None when the collector did not answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST",
            "/api/v1/reports",
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
    except OSError:
        return None
    if resp.status != 200:
        return None
    answer: dict[str, int] = json.loads(data)
    return answer


def test_kill_9_loses_no_acknowledged_batch_and_stores_nothing_twice(
    collector_process: Callable[..., CollectorProcess],
) -> None:
    server = collector_process()
    config = str(server.config_path)
    token = run_cli("token", "create", "--config", config, "--site", SITE).stdout.splitlines()[-1]
    batches = [
        [agent_report(agent_id=f"pc-{s}", seq=i * BATCH + j) for j in range(BATCH)]
        for s in range(SENDERS)
        for i in range(60)
    ]
    bodies = [encode(Batch(reports=b)) for b in batches]
    acked: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def sender(index: int) -> None:
        for n in range(index, len(bodies), SENDERS):
            if stop.is_set():
                return
            answer = send(server.port, token, bodies[n])
            if answer is None:
                return  # the collector is gone: the agent keeps the rest in its spool
            assert answer["accepted"] == BATCH
            with lock:
                acked.add(n)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 40, timeout=120)
    server.kill()  # SIGKILL while the senders are mid-request
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert 40 <= len(acked) < len(bodies)

    server.start()  # same config, same database
    for n, body in enumerate(bodies):  # the agents resend everything they hold
        answer = send(server.port, token, body)
        assert answer is not None
        assert answer["accepted"] + answer["duplicates"] == BATCH
        if n in acked:
            assert answer["duplicates"] == BATCH, f"acknowledged batch {n} was lost"
        else:
            assert answer["duplicates"] in (0, BATCH), f"batch {n} was half-stored"
    assert server.stop() == 0

    db = server.config_path.parent / "collector.db"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()

    async def count() -> tuple[int, int]:
        store = SQLiteStore(db)
        await store.open()
        try:
            states = await store.agent_states()
            return await store.report_count(), sum(s.reports_received for s in states)
        finally:
            await store.close()

    stored, counted = asyncio.run(count())
    assert stored == counted == len(bodies) * BATCH

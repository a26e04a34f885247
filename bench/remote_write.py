"""Remote write of late reports: samples per second pushed into a real Prometheus on
loopback, and the collector's CPU per 1,000 samples (claim, encode, send, acknowledge).

The reference is Prometheus' own receiver fed the same payloads, pre-encoded, by a minimal
client (one POST after the other): the ceiling of the receiver, without hatang's queue.
``python3 bench/remote_write.py [--quick]``; a bounded run (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aiohttp import ClientSession  # noqa: E402

from agent.report import encode as encode_report  # noqa: E402
from collector.config import parse_config  # noqa: E402
from collector.late import LateRule  # noqa: E402
from collector.remote_write import HEADERS, Sender, claim_series, encode  # noqa: E402
from collector.store.sqlite import SQLiteStore  # noqa: E402
from tests.collector.conftest import DEMO_ORG, free_port  # noqa: E402
from tests.collector.test_remote_write import Prometheus, report  # noqa: E402


async def main(quick: bool) -> None:
    assert shutil.which("prometheus"), "needs Debian's prometheus"
    work = Path(tempfile.mkdtemp(prefix="hatang-bench-rw-"))
    prometheus = Prometheus(work, free_port())  # the test suite's: receiver and a 1 h window
    prometheus.start()
    url = f"{prometheus.url}/api/v1/write"
    try:
        store = SQLiteStore(work / "store.db")
        store.late_rule = LateRule(horizon_intervals=3, grace_seconds=2, max_pending=10_000_000)
        await store.open()
        reports = 2000 if quick else 10000
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=40)
        for site_i in range(10):
            site = f"demo/bench-{site_i}"
            batch = [
                report(start + dt.timedelta(seconds=i), wan=i % 7 != 0, seq=i + 1, site=site)
                for i in range(reports // 10)
            ]
            await store.ingest(site, [(r, encode_report(r)) for r in batch])
        queued = (await store.rw_stats()).pending
        config = parse_config(
            {"org": str(DEMO_ORG), "remote_write": {"url": url, "batch": 2000}}, "bench.yaml"
        ).remote_write
        assert config is not None
        async with ClientSession() as session:
            await prometheus.ready(session)
            sender = Sender(store, config, session)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            bodies = []
            while True:
                owner = f"bench:{len(bodies)}"
                claim = await store.rw_claim(owner, config.batch, 60, 0)
                if not claim.samples:
                    break
                body = encode(claim_series(claim))
                bodies.append(body)
                outcome = await sender.post(body)
                assert outcome.result == "sent", outcome
                await store.rw_finish(owner, "sent")
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            # Reference: the same payloads sent again by a minimal client (no queue, no encode).
            wall1 = time.perf_counter()
            for body in bodies:
                async with session.post(url, data=body, headers=HEADERS) as reply:
                    assert reply.status < 300
            reference = time.perf_counter() - wall1
        await store.close()
        print("| what | samples | seconds | samples/s | collector CPU ms per 1,000 samples |")
        print("|---|---|---|---|---|")
        print(
            f"| hatang sender (store claim + encode + POST + ack) | {queued} | {wall:.2f} | "
            f"{queued / wall:,.0f} | {1000 * cpu / queued * 1000:.1f} |"
        )
        print(
            f"| minimal client, same payloads pre-encoded | {queued} | {reference:.2f} | "
            f"{queued / reference:,.0f} | - |"
        )
    finally:
        prometheus.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))

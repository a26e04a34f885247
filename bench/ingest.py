"""Ingest throughput of a real ``hatang-collector serve`` over loopback (not a test).

Starts the collector as a subprocess on a fresh SQLite file, creates a token with the
CLI, then posts pre-built agent reports from this (separate) process: single-report
requests and batched requests, each with some concurrency, and prints reports/s.

    python3 bench/ingest.py [--reports 20000] [--batch 100] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from agent.report import Batch, Networks, NetworkStatus, ProbeResult, Report, encode

REPO = Path(__file__).resolve().parent.parent
SITE = "demo/xa-an-binh"


def make_reports(n: int, prefix: str) -> list[Report]:
    now = dt.datetime.now(dt.UTC)
    status = NetworkStatus(
        configured=True,
        up=True,
        rule="any",
        targets=[ProbeResult(kind="icmp", target="10.41.0.1", up=True, rtt_seconds=0.002)],
    )
    return [
        Report(
            id=f"{prefix}-{i}-{os.getpid()}",
            agent_id=f"pc-{i % 200}",
            site=SITE,
            role="host",
            seq=i,
            observed_at=now - dt.timedelta(seconds=n - i),
            interval_seconds=60.0,
            agent_version="bench",
            networks=Networks(lan=status, internet=status),
        )
        for i in range(n)
    ]


async def run(url: str, token: str, bodies: list[bytes], concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    queue = list(reversed(bodies))

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            body = queue.pop()
            while True:
                async with session.post(f"{url}/api/v1/reports", data=body, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        break
                    if r.status not in (429, 503):
                        raise RuntimeError(f"unexpected {r.status}")
                await asyncio.sleep(0.01)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--single", type=int, default=3000, help="reports sent one per request")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        config = Path(tmp) / "collector.yaml"
        config.write_text(
            f"org: {REPO / 'configs' / 'org.demo.yaml'}\n"
            f"store: {{url: 'sqlite:collector.db'}}\n"
            f"listen: {{host: 127.0.0.1, port: {port}}}\n"
            "limits: {max_inflight: 1000}\nlog: {level: warning}\n",
            encoding="utf-8",
        )
        cli = [sys.executable, "-m", "collector"]
        token = subprocess.run(
            [*cli, "token", "create", "--config", str(config), "--site", SITE],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()[-1]  # fmt: skip
        server = subprocess.Popen([*cli, "serve", "--config", str(config)])
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            url = f"http://127.0.0.1:{port}"
            single = [encode(Batch(reports=[r])) for r in make_reports(args.single, "single")]
            seconds = asyncio.run(run(url, token, single, args.concurrency))
            print(
                f"single-report requests: {len(single)} reports in {seconds:.2f}s = "
                f"{len(single) / seconds:,.0f} reports/s (concurrency {args.concurrency})"
            )
            reports = make_reports(args.reports, "batch")
            batches = [
                encode(Batch(reports=reports[i : i + args.batch]))
                for i in range(0, len(reports), args.batch)
            ]
            workers = max(1, min(args.concurrency, 4))
            seconds = asyncio.run(run(url, token, batches, workers))
            print(
                f"batched requests ({args.batch}/request): {len(reports)} reports in "
                f"{seconds:.2f}s = {len(reports) / seconds:,.0f} reports/s (concurrency {workers})"
            )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

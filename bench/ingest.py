"""Ingest throughput and latency of a real ``hatang-collector serve`` over loopback.

For each population (default 1,000 and 10,000 simulated agents, ten per site, one
token per site), starts the collector on a fresh SQLite file and posts gzipped
reports, as agents send them, from this (separate) process:

* closed loop, single-report requests (concurrency 16) and batches of 100 reports of
  one site (concurrency 4): reports/s, p50/p99 latency;
* open loop at half the goal rate (750 single requests/s; 25 batches/s = 2,500
  reports/s): p50/p99 latency, measured from each request's scheduled send time so that
  queueing counts.

The collector's RSS is sampled every 0.5 s. Run:
``python3 bench/ingest.py [--quick] [--agents 1000,10000]``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import statistics
import threading
import time
from collections.abc import Sequence

import aiohttp
from common import Row, finish, parser, rss_bytes, stop, tempdir, verdict
from province import make_report, serve, setup, site_id

from agent.report import Batch, encode

PER_SITE = 10
GOAL_BATCHED, GOAL_SINGLE, GOAL_P99 = 5000, 1500, 0.100


def bodies(agents: int, count: int, per_request: int) -> list[tuple[str, bytes]]:
    """``count`` reports as (site, gzipped body), ``per_request`` reports of one site each."""
    now = dt.datetime.now(dt.UTC)
    sites = max(agents // PER_SITE, 1)
    out: list[tuple[str, bytes]] = []
    seq = 0
    for n in range(count // per_request):
        s = n % sites
        reports = []
        for j in range(per_request):
            agent = s * PER_SITE + j % PER_SITE
            seq += 1
            when = now - dt.timedelta(seconds=j)
            reports.append(make_report(site_id(s), f"pc-{agent}", seq, when, j == 0))
        out.append((site_id(s), gzip.compress(encode(Batch(reports=reports)), 6, mtime=0)))
    return out


async def closed(
    url: str, tokens: dict[str, str], work: list[tuple[str, bytes]], concurrency: int
) -> tuple[float, list[float]]:
    """Send everything with ``concurrency`` workers; (wall seconds, latencies)."""
    queue = list(reversed(work))
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker() -> None:
            while queue:
                site, body = queue.pop()
                began = time.perf_counter()
                await post(s, url, tokens[site], body)
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began, latencies


async def post(session: aiohttp.ClientSession, url: str, token: str, body: bytes) -> None:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    while True:
        async with session.post(f"{url}/api/v1/reports", data=body, headers=headers) as r:
            await r.read()
            if r.status == 200:
                return
            if r.status not in (429, 503):
                raise RuntimeError(f"collector answered {r.status}: {await r.text()}")
        await asyncio.sleep(0.01)


async def open_loop(
    url: str, tokens: dict[str, str], work: list[tuple[str, bytes]], rate: float
) -> list[float]:
    """Send at a fixed rate; latency from each request's scheduled time."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as s:
        start = time.perf_counter()

        async def one(i: int, site: str, body: bytes) -> None:
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            await post(s, url, tokens[site], body)
            latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(i, site, body) for i, (site, body) in enumerate(work)))
    return latencies


def watch_rss(pid: int, done: threading.Event, peak: list[int]) -> None:
    """Keep the highest RSS of ``pid`` in ``peak[0]`` until ``done``."""
    while not done.wait(0.5):
        peak[0] = max(peak[0], rss_bytes(pid))


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--agents", default="1000,10000", help="comma-separated populations")
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    scale = 1 if args.quick else 3
    rows: list[Row] = []
    notes: list[str] = []
    for agents in (int(x) for x in args.agents.split(",")):
        sites = max(agents // PER_SITE, 1)
        single = bodies(agents, 3000 * scale, 1)
        batched = bodies(agents, 20000 * scale, 100)
        steady_single = bodies(agents, int(GOAL_SINGLE / 2 * 4 * scale), 1)
        steady_batched = bodies(agents, int(GOAL_BATCHED / 2 * 4 * scale), 100)
        with tempdir() as tmp:
            config, port, tokens = setup(tmp, sites)
            collector = serve(config, port, tokens)
            peak = [0]
            done = threading.Event()
            sampler = threading.Thread(
                target=watch_rss, args=(collector.proc.pid, done, peak), daemon=True
            )
            sampler.start()
            try:
                url = collector.url
                s_sec, s_lat = asyncio.run(closed(url, tokens, single, args.concurrency))
                b_sec, b_lat = asyncio.run(closed(url, tokens, batched, 4))
                o_single = asyncio.run(open_loop(url, tokens, steady_single, GOAL_SINGLE / 2))
                o_batched = asyncio.run(
                    open_loop(url, tokens, steady_batched, GOAL_BATCHED / 2 / 100)
                )
            finally:
                done.set()
                stop(collector.proc)
        s_rate = len(single) / s_sec
        b_rate = len(batched) * 100 / b_sec
        label = f"{agents:,} agents / {sites:,} sites"
        ms = 1000
        rows += [
            Row("ingest", f"single-report requests/s, latency ms ({label}; c={args.concurrency})",
                f"{s_rate:,.0f} (p50 {pct(s_lat, 0.5) * ms:.1f} / p99 {pct(s_lat, 0.99) * ms:.1f})",
                "-", "-", f"≥ {GOAL_SINGLE:,}", verdict(s_rate >= GOAL_SINGLE)),
            Row("ingest", f"batched reports/s, latency ms (100/request; {label}; c=4)",
                f"{b_rate:,.0f} (p50 {pct(b_lat, 0.5) * ms:.0f} / p99 {pct(b_lat, 0.99) * ms:.0f})",
                "-", "-", f"≥ {GOAL_BATCHED:,}", verdict(b_rate >= GOAL_BATCHED)),
            Row("ingest", f"p99 at {GOAL_SINGLE // 2} single requests/s ({label})",
                f"{pct(o_single, .99) * ms:.1f} ms (p50 {pct(o_single, .5) * ms:.1f})",
                "-", "-", "< 100 ms", verdict(pct(o_single, .99) < GOAL_P99)),
            Row("ingest", f"p99 at {GOAL_BATCHED // 2:,} batched reports/s ({label})",
                f"{pct(o_batched, .99) * ms:.1f} ms (p50 {pct(o_batched, .5) * ms:.1f})",
                "-", "-", "< 100 ms", verdict(pct(o_batched, .99) < GOAL_P99)),
            Row("ingest", f"collector peak RSS ({label})", f"{peak[0] / 2**20:.0f} MiB"),
        ]  # fmt: skip
        notes.append(
            f"{label}: {len(single)} single requests, {len(batched)} batches; open loop "
            f"{len(steady_single)} requests and {len(steady_batched)} batches "
            f"(median single latency {statistics.median(s_lat) * ms:.1f} ms)."
        )
    finish(args, rows, notes)


if __name__ == "__main__":
    main()

"""How the collector grows with the fleet: 1k → 5k → 20k → 50k agents on SQLite.

Per step: a fresh province of N/4 communes (one site probe and three host agents each,
one token per site), its store filled in-process with one report per agent, then a real
``hatang-collector serve`` on 127.0.0.1, and from this (separate) process:

* start-up: from the process start to a /metrics that counts every agent;
* refresh: ``hatang_snapshot_refresh_duration_seconds`` of the first refresh after 100
  new single reports (what the serving collector does every few seconds under load);
* render: the first ``GET /metrics`` after a refresh (Exposition renders once per
  snapshot), its series count;
* ingest: single-report requests/s (closed loop, 16 in flight) and batched reports/s
  (50 per request, 4 in flight), next to the ceiling measured in the same run: gunzip +
  decode + ``Store.ingest`` group commits in-process, no HTTP;
* the collector's RSS after start-up and its peak over the step.

With ``--history-hours H`` every agent also gets H earlier hours of window buckets
(60 checks per network class per hour, written straight into ``network_hourly`` and
``agent_hourly``: what H hours of reports at 60 s leave there), so the window queries
see what a collector running for a day sees (the indicator window is 24 h).

Run: ``python3 bench/scale.py [--quick] [--steps 1000,5000,20000,50000]
[--history-hours 24]`` (``--quick``: 1k and 5k, fewer requests; a full run takes a few
minutes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import msgspec
from common import Row, finish, parser, rss_bytes, stop, tempdir, verdict
from ingest import closed, post, watch_rss
from province import make_report, serve, site_id, write_config

from agent.report import Batch, encode

PER_SITE = 4
NETWORKS = ("lan", "wan", "dedicated", "internet")
GOAL_REFRESH, GOAL_STARTUP, GOAL_RSS = 0.1, 3.0, 250 * 2**20  # at 20k agents


def add_history(config: Path, sites: int, hours: int) -> None:
    """``hours`` earlier window buckets per agent and class (bench fixture, SQLite only)."""
    import sqlite3

    from collector.app import make_store
    from collector.config import load_config

    path = getattr(make_store(load_config(config)), "path", None)
    if path is None or hours <= 0:
        return
    top = int(time.time()) // 3600 * 3600
    with sqlite3.connect(path) as conn:
        for i in range(sites):
            rows = [
                (site_id(i), agent(i, k), top - h * 3600)
                for k in range(PER_SITE)
                for h in range(1, hours + 1)
            ]
            conn.executemany(
                "INSERT INTO network_hourly VALUES (?, ?, ?, ?, 60, 59)",
                [(s, a, net, hour) for s, a, hour in rows for net in NETWORKS],
            )
            conn.executemany("INSERT INTO agent_hourly VALUES (?, ?, ?, 60)", rows)


def agent(site: int, k: int) -> str:
    return f"a{site}-{k}"


async def fill(config: Path, sites: int) -> tuple[dict[str, str], float, float, float]:
    """Tokens and one report per agent, in-process; and the ceilings (single, batched,
    single with 16 in flight like the HTTP load)."""
    from collector.app import make_store
    from collector.config import load_config

    store = make_store(load_config(config))
    await store.open()
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    try:
        made = await asyncio.gather(*(store.create_token(site_id(i), "b") for i in range(sites)))
        tokens = {site_id(i): token for i, (_, token) in enumerate(made)}
        await asyncio.gather(
            *(
                store.ingest(site_id(i), [(r, encode(r)) for r in reports(i, 1, now)])
                for i in range(sites)
            )
        )
        single = await ceiling(store, [bodies_for(i % sites, 2, 1) for i in range(2000)])
        batched = await ceiling(store, [bodies_for(i % sites, 3, 50) for i in range(100)])
        single16 = await ceiling(store, [bodies_for(i % sites, 7, 1) for i in range(2000)], 16)
    finally:
        await store.close()
    return tokens, single, batched, single16


def reports(site: int, seq: int, when: dt.datetime, count: int = PER_SITE) -> list[object]:
    return [
        make_report(site_id(site), agent(site, k % PER_SITE), seq, when, probe=k % PER_SITE == 0)
        for k in range(count)
    ]


def bodies_for(site: int, seq: int, count: int) -> tuple[str, bytes]:
    now = dt.datetime.now(dt.UTC)
    batch = Batch(reports=reports(site, seq, now, count))  # type: ignore[arg-type]
    return site_id(site), gzip.compress(encode(batch), 6, mtime=0)


async def ceiling(store: object, work: list[tuple[str, bytes]], inflight: int = 0) -> float:
    """Reports/s of gunzip + decode + ``Store.ingest`` alone (what the API adds HTTP to),
    all at once or ``inflight`` at a time."""
    gate = asyncio.Semaphore(inflight or len(work))

    async def one(site: str, body: bytes) -> int:
        async with gate:
            batch = msgspec.json.decode(gzip.decompress(body), type=Batch)
            items = [(r, encode(r)) for r in batch.reports]
            await store.ingest(site, items)  # type: ignore[attr-defined]
            return len(items)

    began = time.perf_counter()
    counts = await asyncio.gather(*(one(site, body) for site, body in work))
    return sum(counts) / (time.perf_counter() - began)


def scrape(url: str) -> tuple[float, dict[str, float], int]:
    """(seconds, a few values, series) of one GET /metrics."""
    began = time.perf_counter()
    with urllib.request.urlopen(f"{url}/metrics", timeout=120) as r:
        body = r.read().decode()
    took = time.perf_counter() - began
    values: dict[str, float] = {"agents": 0.0}
    series = 0
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        series += 1
        name, _, value = line.rpartition(" ")
        if name.startswith("hatang_site_agents{"):
            values["agents"] += float(value)
        elif name in (
            "hatang_snapshot_timestamp_seconds",
            "hatang_snapshot_refresh_duration_seconds",
        ):
            values[name] = float(value)
    return took, values, series


def wait_refresh_after(url: str, mark: float, timeout: float = 120) -> tuple[float, float, int]:
    """Poll until a snapshot computed after ``mark`` is served; (refresh s, render s, series)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        took, values, series = scrape(url)
        if values.get("hatang_snapshot_timestamp_seconds", 0.0) > mark:
            return values["hatang_snapshot_refresh_duration_seconds"], took, series
        time.sleep(0.05)
    raise TimeoutError("no refresh after the new reports")


def step(agents: int, quick: bool, history: int) -> list[Row]:
    sites = agents // PER_SITE
    label = f"{agents:,} agents" + (f", {history} h of buckets" if history else "")
    with tempdir() as tmp:
        config, port = write_config(tmp, sites)
        tokens, ceil_single, ceil_batched, ceil_16 = asyncio.run(fill(config, sites))
        add_history(config, sites, history)
        began = time.perf_counter()
        collector = serve(config, port, tokens)
        while scrape(collector.url)[1]["agents"] < agents:
            time.sleep(0.05)
        startup = time.perf_counter() - began
        rss_start = rss_bytes(collector.proc.pid)
        peak, done = [rss_start], threading.Event()
        threading.Thread(
            target=watch_rss, args=(collector.proc.pid, done, peak), daemon=True
        ).start()
        try:
            url = collector.url
            mark = time.time()
            asyncio.run(send(url, tokens, [bodies_for(i * 7 % sites, 4, 1) for i in range(100)]))
            refresh, render, series = wait_refresh_after(url, mark)
            n_single = 1500 if quick else 4000
            single = [bodies_for(i % sites, 5, 1) for i in range(n_single)]
            s_sec, _ = asyncio.run(closed(url, tokens, single, 16))
            batched = [bodies_for(i % sites, 6, 50) for i in range(100 if quick else 300)]
            b_sec, _ = asyncio.run(closed(url, tokens, batched, 4))
        finally:
            done.set()
            stop(collector.proc)
    s_rate, b_rate = n_single / s_sec, len(batched) * 50 / b_sec
    at_goal = agents == 20000
    return [
        Row("scale", f"refresh after 100 new reports ({label})", f"{refresh:.3f} s",
            "-", "-", "≤ 0.1 s at 20k" if at_goal else "-",
            verdict(refresh <= GOAL_REFRESH) if at_goal else "-"),
        Row("scale", f"start-up to a complete /metrics ({label})", f"{startup:.1f} s",
            "-", "-", "≤ 3 s at 20k" if at_goal else "-",
            verdict(startup <= GOAL_STARTUP) if at_goal else "-"),
        Row("scale", f"first GET /metrics after a refresh ({label})",
            f"{render:.3f} s, {series:,} series"),
        Row("scale", f"collector RSS after start-up / peak ({label})",
            f"{rss_start / 2**20:.0f} / {peak[0] / 2**20:.0f} MiB", "-", "-",
            "≤ 250 MiB at 20k" if at_goal else "-",
            verdict(peak[0] <= GOAL_RSS) if at_goal else "-"),
        Row("scale", f"single-report requests/s, c=16 ({label})", f"{s_rate:,.0f}",
            f"{ceil_single:,.0f} (decode + store)", f"{s_rate / ceil_single:.2f}x", "≥ 0.5x",
            verdict(s_rate >= 0.5 * ceil_single)),
        Row("scale", f"  the same next to the ceiling with 16 in flight ({label})",
            f"{s_rate:,.0f}", f"{ceil_16:,.0f} (decode + store, 16 in flight)",
            f"{s_rate / ceil_16:.2f}x"),
        Row("scale", f"batched reports/s, 50 per request, c=4 ({label})", f"{b_rate:,.0f}",
            f"{ceil_batched:,.0f} (decode + store)", f"{b_rate / ceil_batched:.2f}x", "≥ 0.9x",
            verdict(b_rate >= 0.9 * ceil_batched)),
    ]  # fmt: skip


async def send(url: str, tokens: dict[str, str], work: list[tuple[str, bytes]]) -> None:
    async with aiohttp.ClientSession() as session:
        for site, body in work:
            await post(session, url, tokens[site], body)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", help="comma-separated fleet sizes (default 1k,5k,20k,50k)")
    p.add_argument("--history-hours", type=int, default=0, help="earlier window buckets")
    args = p.parse_args()
    default = "1000,5000" if args.quick else "1000,5000,20000,50000"
    rows: list[Row] = []
    for agents in (int(x) for x in (args.steps or default).split(",")):
        rows += step(agents, args.quick, args.history_hours)
        print(f"[{agents:,} agents done]", flush=True)
    notes = [
        "The load generator runs on the same machine (2 cores shared with the collector): "
        "ceilings and rates are measured in the same run, so compare the ratios."
    ]
    finish(args, rows, notes)


if __name__ == "__main__":
    main()

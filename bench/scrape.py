"""Scrape cost of the collector's /metrics for a province of 5,000 sites (≈ 100k series).

Generates an org file of 5,000 communes, fills a fresh SQLite store with one site-probe
report and one host report per site (four network classes, two targets each), starts
``hatang-collector serve`` on 127.0.0.1 and times ``GET /metrics`` (median of 5 after
one warm-up), its size and series count, the collector's RSS before and after the
scrapes, and ``promtool check metrics`` parsing the output.

Run: ``python3 bench/scrape.py [--sites N]`` (``--quick`` changes nothing: it is short).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from common import Row, ensure_tools, finish, parser, rss_bytes, stop, tempdir, verdict
from province import make_report, serve, setup, site_id

from agent.report import encode


async def fill(config: Path, sites: int) -> None:
    from collector.app import make_store
    from collector.config import load_config

    store = make_store(load_config(config))
    await store.open()
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    try:
        for i in range(sites):
            site = site_id(i)
            reports = [
                make_report(site, f"probe-{i}", 1, now, probe=True),
                make_report(site, f"pc-{i}", 1, now, probe=False),
            ]
            await store.ingest(site, [(r, encode(r)) for r in reports])
    finally:
        await store.close()


def get(url: str) -> tuple[float, bytes]:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = bytes(r.read())
    return time.perf_counter() - began, body


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sites", type=int)
    args = p.parse_args()
    sites = args.sites or 5000  # a full run takes about a minute: --quick keeps it
    ensure_tools("promtool")
    with tempdir() as tmp:
        config, port, tokens = setup(tmp, sites)
        began = time.perf_counter()
        asyncio.run(fill(config, sites))
        fill_seconds = time.perf_counter() - began
        collector = serve(config, port, tokens)
        try:
            rss_idle = rss_bytes(collector.proc.pid)
            url = f"{collector.url}/metrics"
            get(url)
            times, body = [], b""
            for _ in range(5):
                seconds, body = get(url)
                times.append(seconds)
            rss_after = rss_bytes(collector.proc.pid)
            for _ in range(5):
                get(url)
            rss_after10 = rss_bytes(collector.proc.pid)
        finally:
            stop(collector.proc)
        out = tmp / "metrics.txt"
        out.write_bytes(body)
        began = time.perf_counter()
        with out.open("rb") as stdin:
            check = subprocess.run(["promtool", "check", "metrics"], stdin=stdin,
                                   capture_output=True, text=True)  # fmt: skip
        promtool_seconds = time.perf_counter() - began
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    render = statistics.median(times)
    problems = (check.stdout + check.stderr).strip().splitlines()
    rows = [
        Row(
            "scrape",
            f"GET /metrics, {sites} sites (s, median of 5)",
            f"{render:.3f}",
            "-",
            "-",
            "< 1 s",
            verdict(render < 1.0),
        ),
        Row("scrape", "size and series", f"{len(body) / 2**20:.1f} MiB, {series:,} series"),
        Row(
            "scrape",
            "collector RSS idle → after 5 → after 10 scrapes (MiB)",
            f"{rss_idle / 2**20:.0f} → {rss_after / 2**20:.0f} → {rss_after10 / 2**20:.0f}",
            "-",
            "-",
            "bounded",
            verdict(rss_after10 <= rss_after * 1.1),
        ),
        Row(
            "scrape",
            "promtool check metrics (s; exit code)",
            f"{promtool_seconds:.2f}; exit {check.returncode}",
            "-",
            "-",
            "parses",
            verdict(check.returncode in (0, 3)),
        ),
    ]
    notes = [
        f"Store filled in-process with {2 * sites} reports in {fill_seconds:.1f} s. "
        f"promtool said: {'; '.join(problems[:3]) or 'nothing'}",
    ]
    finish(args, rows, notes)


if __name__ == "__main__":
    main()

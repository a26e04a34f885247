"""Open-loop load generator for ``bench/scale.py`` (a process of its own, not run by hand).

Open loop: request ``i`` is due at ``t0 + i / rate`` whatever happened to the earlier
ones, and its latency is measured from that due time, not from when it was sent, so a
stall of the collector counts for every request that should have gone out meanwhile
(closed-loop clients wait out a stall and hide it: coordinated omission). Each process
sends every ``procs``-th request of the schedule, so several processes share one rate;
how late each send was against its due time is returned too, so a generator that could
not keep up is seen, not mistaken for the collector.

Protocol (stdin/stdout, one JSON line each): the job; ``ready`` once the bodies are
built; then a line with ``t0`` (Unix time); the results when the last answer is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from typing import Any

import aiohttp
from ingest import post
from scale import single_body

Work = list[tuple[int, str, bytes]]


async def run(job: dict[str, Any], work: Work, base: float) -> dict[str, Any]:
    """Send ``work`` on the schedule; (due offset, latency, send lag) per request."""
    rate, urls, tokens = float(job["rate"]), job["urls"], job["tokens"]
    due_at: list[float] = []
    latency: list[float] = []
    lag: list[float] = []
    errors: dict[str, int] = {}
    inflight = peak = 0
    connector = aiohttp.TCPConnector(limit=int(job["connections"]))
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, site: str, body: bytes, due: float, late: float) -> None:
            nonlocal inflight, peak
            inflight += 1
            peak = max(peak, inflight)
            try:
                await post(session, urls[i % len(urls)], tokens[site], body)
            except Exception as exc:  # counted and shown: the run goes on like a fleet would
                key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1
                return
            finally:
                inflight -= 1
            due_at.append(due - base)
            latency.append(time.perf_counter() - due)
            lag.append(late)

        tasks: set[asyncio.Task[None]] = set()
        for i, site, body in work:
            due = base + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(i, site, body, due, time.perf_counter() - due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return {"due": due_at, "latency": latency, "lag": lag, "errors": errors, "peak_inflight": peak}


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # one socket per request in flight
    # A measuring device first: on a shared machine the generator must not be the one that
    # waits for a core (its lag would be counted against the collector). Needs root.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -5)
    job = json.loads(sys.stdin.readline())
    agents, seq = int(job["agents"]), int(job["seq"])
    work = [
        (i, *single_body(i % agents, seq + i // agents))
        for i in range(int(job["index"]), int(job["count"]), int(job["procs"]))
    ]
    print("ready", flush=True)
    t0 = float(sys.stdin.readline())
    base = time.perf_counter() + (t0 - time.time())
    print(json.dumps(asyncio.run(run(job, work, base))), flush=True)


if __name__ == "__main__":
    main()

"""build_snapshot alone, in-process: a full build, and a kept one after 100 changed sites.

The province of ``scale.py`` (N/4 communes, a site probe and three host agents each,
reports from ``province.make_report``; the host agents also carry a host inventory, an
antivirus state and patches, as Windows PCs do), given to
``collector.indicators.build_snapshot`` as the store would answer it: agents, their
windows of the last day, received counts. Per N, median of ``--repeat``:

* full: a build without a cache (start-up, and what every refresh cost before the cache);
* kept: the same builder's next refresh 5 s later after 100 sites got a new report each
  (``cache=`` and ``changed_sites=``); the result is checked equal to a full build once;
* memory beyond the inputs (tracemalloc): a snapshot alone, and a cache with its snapshot.

Times are wall time and, beside it, the process's CPU time (``time.process_time``: less
disturbed by other load on a shared machine).

No store, no HTTP, no network. Run: ``python3 bench/snapshot_compute.py [--quick]
[--steps 1000,5000,20000,50000] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (puts the repository on sys.path)
from province import make_report, site_id, write_org

from agent.report import AntivirusStatus, HostInventory, Interface, PatchStatus
from collector.indicators import (
    IndicatorSettings,
    SnapshotCache,
    build_snapshot,
    site_windows,
)
from collector.org import Org, load_org
from collector.store import AgentNetworkWindow, AgentState

PER_SITE = 4
NETWORKS = ("lan", "wan", "dedicated", "internet")
CHANGED = 100
SETTINGS = IndicatorSettings()


def agent_state(site: int, k: int, now: dt.datetime, seq: int) -> AgentState:
    """One agent as ``Store.agent_states`` gives it: newest report ``now - 20 s``."""
    probe = k == 0
    agent = f"a{site}-{k}"
    report = make_report(site_id(site), agent, seq, now - dt.timedelta(seconds=20), probe)
    host = HostInventory(
        hostname=agent,
        os="Windows",
        interfaces=[
            Interface(
                name="eth0",
                mac=f"02:00:{site >> 16:02x}:{site >> 8 & 255:02x}:{site & 255:02x}:{k:02x}",
                # Every PC has a link-local address; one in three a global one too.
                ipv6=[f"fe80::{site:x}:{k}%eth0", *([f"2402:800:{site:x}::{k}"] * (k == 1))],
            )
        ],
    )
    return AgentState(
        site=report.site,
        agent_id=agent,
        role=report.role,
        interval_seconds=60.0,
        first_seen=now - dt.timedelta(days=40),
        last_observed_at=report.observed_at,
        last_received_at=now - dt.timedelta(seconds=18),
        reports_received=seq,
        spool_dropped=0,
        latest=report,
        host=None if probe else host,
        antivirus=None if probe else AntivirusStatus(state="protected", managed=True),
        firewall=None,
        lan_hosts=report.lan_hosts,
        snmp=None,
        patches=None
        if probe
        else PatchStatus(source="windows-update", last_installed_at=now - dt.timedelta(days=3)),
    )


class Province:
    """The store values of ``agents`` agents, changed a site at a time."""

    def __init__(self, agents: int, now: dt.datetime, directory: Path) -> None:
        self.sites = agents // PER_SITE
        path = directory / f"org-{self.sites}.yaml"
        write_org(path, self.sites)
        self.org: Org = load_org(path)
        self.now = now
        self.seq = 1
        self.agents = {
            (site_id(i), f"a{i}-{k}"): agent_state(i, k, now, 1)
            for i in range(self.sites)
            for k in range(PER_SITE)
        }
        # A day of 60 s checks, one down per class.
        self.windows = {(s, a, n): (1440, 1439) for (s, a) in self.agents for n in NETWORKS}
        self.received = {key: 1440 for key in self.agents}

    def report(self, sites: range) -> set[str]:
        """A new report from every agent of ``sites``; the clock moves 5 s."""
        self.now += dt.timedelta(seconds=5)
        self.seq += 1
        for i in sites:
            for k in range(PER_SITE):
                key = (site_id(i), f"a{i}-{k}")
                self.agents[key] = agent_state(i, k, self.now, self.seq)
                self.received[key] += 1
                for n in NETWORKS:
                    checks, up = self.windows[(*key, n)]
                    self.windows[(*key, n)] = (checks + 1, up + 1)
        return {site_id(i) for i in sites}

    def inputs(self) -> dict[str, Any]:
        """build_snapshot's arguments, as a refresh would read them (not timed)."""
        agent_windows = [
            AgentNetworkWindow(s, a, n, c, u)  # type: ignore[arg-type]
            for (s, a, n), (c, u) in self.windows.items()
        ]
        return {
            "org": self.org,
            "plans": [],
            "settings": SETTINGS,
            "now": self.now,
            "agents": list(self.agents.values()),
            "windows": site_windows(agent_windows),
            "received": dict(self.received),
            "agent_windows": agent_windows,
        }


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of one call, the cyclic GC held off as SnapshotBuilder does."""
    gc.collect()
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        gc.enable()


def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def measure(agents: int, repeat: int, directory: Path) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).replace(minute=10, second=0, microsecond=0)
    province = Province(agents, now, directory)
    given = province.inputs()
    full = medians([timed(lambda: build_snapshot(**given)) for _ in range(repeat)])
    cache = SnapshotCache()
    build_snapshot(**given, cache=cache)
    kept: list[tuple[float, float]] = []
    for n in range(repeat):
        start = (n * CHANGED) % max(1, province.sites - CHANGED)
        changed = province.report(range(start, min(province.sites, start + CHANGED)))
        given = province.inputs()
        kept.append(timed(lambda: build_snapshot(**given, cache=cache, changed_sites=changed)))  # noqa: B023
    same = build_snapshot(**given, cache=cache, changed_sites=set()) == build_snapshot(**given)
    return {
        "full": full,
        "kept": medians(kept),
        "same": same,
        "snapshot": held(lambda: build_snapshot(**given)),
        "cache": held(lambda: kept_builder(given)),
    }


def kept_builder(given: dict[str, Any]) -> tuple[SnapshotCache, object]:
    cache = SnapshotCache()
    return cache, build_snapshot(**given, cache=cache)


def held(make: Callable[[], object]) -> int:
    """Bytes still allocated while what ``make`` returns is kept (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = make()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return after - before


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="1000,5000,20000,50000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1k and 5k, 3 repeats")
    args = parser.parse_args()
    steps = [1000, 5000] if args.quick else [int(s) for s in args.steps.split(",")]
    repeat = 3 if args.quick else args.repeat
    print(f"build_snapshot, median of {repeat}, wall (CPU); load average {load()}")
    print(
        "| agents | sites | full build | kept, 100 changed sites | kept ÷ full | equal "
        "| snapshot | cache + snapshot |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for agents in steps:
            r = measure(agents, repeat, Path(tmp))
            (full, full_cpu), (kept, kept_cpu) = r["full"], r["kept"]
            print(
                f"| {agents:,} | {agents // PER_SITE:,} "
                f"| {full * 1e3:.0f} ms ({full_cpu * 1e3:.0f}) "
                f"| {kept * 1e3:.1f} ms ({kept_cpu * 1e3:.1f}) | {kept_cpu / full_cpu:.3f} "
                f"| {'yes' if r['same'] else 'NO'} | {r['snapshot'] / 2**20:.1f} MiB "
                f"| {r['cache'] / 2**20:.1f} MiB |",
                flush=True,
            )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()

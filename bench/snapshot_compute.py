"""build_snapshot alone, in-process: a full build, and a kept one after 100 changed sites.

The province of ``scale.py`` (N/4 communes, a site probe and three host agents each,
reports from ``province.make_report``; the host agents also carry a host inventory, an
antivirus state and patches, as Windows PCs do), given to
``collector.indicators.build_snapshot`` as the store would answer it: agents, their
windows of the last day, received counts. Per N, median of ``--repeat``:

* full: a build without a cache (start-up, and what every refresh cost before the cache);
* kept: the same builder's next refresh 5 s later after 100 sites got a new report each
  (``cache=`` and ``changed_sites=``); the result is checked equal to a full build once;
* cache: memory a kept builder holds beyond the inputs (tracemalloc: the cache with its
  snapshot, measured after a full build with the cache).

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
from common import REPO  # puts the repository on sys.path
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


def timed(call: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(agents: int, repeat: int, directory: Path) -> dict[str, float]:
    now = dt.datetime.now(dt.UTC).replace(minute=10, second=0, microsecond=0)
    province = Province(agents, now, directory)
    given = province.inputs()
    full = statistics.median(timed(lambda: build_snapshot(**given)) for _ in range(repeat))
    cache = SnapshotCache()
    build_snapshot(**given, cache=cache)
    kept: list[float] = []
    for n in range(repeat):
        start = (n * CHANGED) % max(1, province.sites - CHANGED)
        changed = province.report(range(start, min(province.sites, start + CHANGED)))
        given = province.inputs()
        kept.append(timed(lambda: build_snapshot(**given, cache=cache, changed_sites=changed)))  # noqa: B023
    same = build_snapshot(**given, cache=cache, changed_sites=set()) == build_snapshot(**given)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = SnapshotCache()
    snapshot = build_snapshot(**given, cache=held)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del snapshot, held
    return {"full": full, "kept": statistics.median(kept), "same": same, "cache": after - before}


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
    print(f"build_snapshot, median of {repeat} ({REPO.name}); load average {load()}")
    print(
        "| agents | sites | full build | kept, 100 changed sites | ratio | equal "
        "| cache + snapshot |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for agents in steps:
            r = measure(agents, repeat, Path(tmp))
            print(
                f"| {agents:,} | {agents // PER_SITE:,} | {r['full'] * 1e3:.0f} ms "
                f"| {r['kept'] * 1e3:.1f} ms | {r['kept'] / r['full']:.3f} "
                f"| {'yes' if r['same'] else 'NO'} | {r['cache'] / 2**20:.0f} MiB |",
                flush=True,
            )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()

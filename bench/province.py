"""A generated province for the collector benchmarks: org file, tokens, reports.

Not a benchmark itself: ``ingest.py`` and ``scrape.py`` build their collectors with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from common import REPO, free_port, port_open, start, wait_for

from agent.report import (
    LanHostCounts,
    LanHosts,
    Networks,
    NetworkStatus,
    ProbeResult,
    Report,
)

PROVINCE = "bench"


def site_id(i: int) -> str:
    return f"{PROVINCE}/xa-{i:05d}"


def write_org(path: Path, sites: int) -> None:
    """Province → ``sites`` communes (the two-level shape of 2025)."""
    lines = [f"province: {PROVINCE}", 'name: "Tỉnh Bench"', "units:"]
    lines.append(f'  - {{id: {PROVINCE}, name: "Tỉnh Bench", level: province}}')
    for i in range(sites):
        lines.append(
            f'  - {{id: {site_id(i)}, name: "Xã {i}", level: commune, parent: {PROVINCE}, '
            "officials: 20}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _status(kind: str, *targets: str, up: bool = True) -> NetworkStatus:
    return NetworkStatus(
        configured=True,
        up=up,
        rule="any",
        targets=[
            ProbeResult(
                kind=kind,  # type: ignore[arg-type,unused-ignore]
                target=t,
                up=up,
                rtt_seconds=0.004 + i * 0.001,
                loss_ratio=0.0 if kind == "icmp" else None,
            )
            for i, t in enumerate(targets)
        ],
    )


def make_report(site: str, agent: str, seq: int, when: dt.datetime, probe: bool) -> Report:
    """A realistic report: four network classes, two targets each (8 probe results)."""
    return Report(
        id=str(uuid.uuid4()),
        agent_id=agent,
        site=site,
        role="site-probe" if probe else "host",
        seq=seq,
        observed_at=when,
        interval_seconds=60.0,
        agent_version="bench",
        networks=Networks(
            lan=_status("icmp", "10.94.0.1", "10.94.0.2"),
            wan=_status("tcp", "10.10.0.10:8443", "10.10.0.11:8443"),
            dedicated=_status("icmp", "10.200.0.5", "10.200.0.6", up=seq % 7 != 0),
            internet=_status("http", "https://dichvucong.gov.vn/", "https://chinhphu.vn/"),
        ),
        lan_hosts=LanHosts(counts=LanHostCounts(arp=24, snmp=22, agent=12)) if probe else None,
    )


@dataclass
class Collector:
    proc: subprocess.Popen[bytes]
    url: str
    config: Path
    tokens: dict[str, str]


def write_config(
    directory: Path, sites: int, store: str = "sqlite:collector.db", name: str = "collector.yaml"
) -> tuple[Path, int]:
    """The org file (once) and one collector config on a free port: ``name`` differs per
    replica, ``store`` is shared by all of them."""
    org = directory / "org.yaml"
    if not org.exists():
        write_org(org, sites)
    port = free_port()
    config = directory / name
    config.write_text(
        f"org: {org}\nstore: {{url: '{store}'}}\n"
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        "limits: {max_inflight: 1000}\nlog: {level: warning}\n",
        encoding="utf-8",
    )
    return config, port


async def create_tokens(config: Path, sites: int) -> dict[str, str]:
    """One token per site, straight into the store (``token create`` per site is slow)."""
    from collector.app import make_store
    from collector.config import load_config

    store = make_store(load_config(config))
    await store.open()
    try:
        return {
            site_id(i): (await store.create_token(site_id(i), "bench"))[1] for i in range(sites)
        }
    finally:
        await store.close()


def serve(config: Path, port: int, tokens: dict[str, str]) -> Collector:
    proc = start([sys.executable, "-m", "collector", "serve", "--config", str(config)], cwd=REPO)
    wait_for(lambda: port_open(port) or proc.poll() is not None, timeout=120, what="collector")
    if proc.poll() is not None:
        raise RuntimeError("the collector exited at start (run it by hand to see why)")
    return Collector(proc, f"http://127.0.0.1:{port}", config, tokens)


def setup(directory: Path, sites: int) -> tuple[Path, int, dict[str, str]]:
    config, port = write_config(directory, sites)
    tokens = asyncio.run(create_tokens(config, sites))
    return config, port, tokens

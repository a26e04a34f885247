"""Evidence export of a year for 200 sites and 5,000 computers: time and peak memory.

Writes a year (2025) of back-dated history into a fresh SQLite store through the store's
ingest path (``Store.ingest``, batches of 1,000 reports of one site, as spools replay):
each site's probe every 6 h (four network classes, eight probe results), each of 25
computers per site once a day (inventory, antivirus, firewall; antivirus off for a few
weeks on one computer in ten, a three-day outage per site). Then runs the real
``hatang-collector evidence export --period 2025`` as a child process and reports its
wall time and peak RSS (``getrusage`` of the child). There is no reference tool: no
monitoring system we know exports signed evidence.

A year at the agents' real 60 s interval would be 2.6 billion reports; the history here is
sparse on purpose (2.1 million reports) and the export's cost grows with the number of
reports, so the figure is also given per million reports. ``--quick``: 20 sites, 500
computers. Run: ``python3 bench/evidence.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
from common import REPO, Row, finish, parser, tempdir
from province import make_report, site_id, write_org

from agent.report import (
    AntivirusProduct,
    AntivirusStatus,
    FirewallStatus,
    HostInventory,
    Interface,
    Report,
    encode,
)
from collector.store.sqlite import SQLiteStore

BATCH = 1000
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC) - dt.timedelta(hours=7)  # local midnight


def host_template(site: str, agent: str, index: int) -> Report:
    base = make_report(site, agent, 0, START, probe=False)
    return msgspec.structs.replace(
        base,
        interval_seconds=86400.0,
        host=HostInventory(
            hostname=f"may-{index:02d}",
            os="Windows",
            os_release="10",
            interfaces=[
                Interface(name="Ethernet", mac=f"02:00:{index >> 8:02x}:{index & 255:02x}:00:01")
            ],
        ),
        antivirus=AntivirusStatus(
            state="protected",
            products=[
                AntivirusProduct(
                    name="Microsoft Defender Antivirus",
                    source="securitycenter2",
                    state="protected",
                    signature_age_seconds=86400.0,
                )
            ],
        ),
        firewall=FirewallStatus(enabled=True, source="netsh"),
    )


def site_reports(site_index: int, computers: int, days: int) -> list[tuple[Report, bytes]]:
    """One site's year, in observation order, encoded as agents send it."""
    site = site_id(site_index)
    probe = msgspec.structs.replace(
        make_report(site, f"probe-{site_index}", 0, START, probe=True), interval_seconds=21600.0
    )
    hosts = [host_template(site, f"pc-{site_index}-{i}", i) for i in range(computers)]
    off = probe.networks.wan
    down = msgspec.structs.replace(off, up=False)
    outage_day = 30 + site_index % 300
    out: list[tuple[Report, bytes]] = []
    seq = 0
    for day in range(days):
        for quarter in range(4):
            at = START + dt.timedelta(days=day, hours=6 * quarter)
            seq += 1
            networks = probe.networks
            if outage_day <= day < outage_day + 3:
                networks = msgspec.structs.replace(networks, wan=down)
            r = msgspec.structs.replace(
                probe, id=str(uuid.uuid4()), seq=seq, observed_at=at, networks=networks
            )
            out.append((r, encode(r)))
        for i, host in enumerate(hosts):
            at = START + dt.timedelta(days=day, hours=8, minutes=i)
            av = host.antivirus
            if i % 10 == 0 and 100 <= day < 100 + 20 + i % 30:
                av = msgspec.structs.replace(av, state="disabled")  # type: ignore[type-var]
            r = msgspec.structs.replace(
                host, id=str(uuid.uuid4()), seq=day + 1, observed_at=at, antivirus=av
            )
            out.append((r, encode(r)))
    out.sort(key=lambda pair: pair[0].observed_at)
    return out


async def fill(db: Path, sites: int, computers: int, days: int) -> tuple[int, float]:
    store = SQLiteStore(db)
    await store.open()
    started = time.perf_counter()
    total = 0
    try:
        for s in range(sites):
            reports = site_reports(s, computers, days)
            for i in range(0, len(reports), BATCH):
                result = await store.ingest(site_id(s), reports[i : i + BATCH])
                total += result.accepted
            print(f"\rfilled {s + 1}/{sites} sites, {total:,} reports", end="", file=sys.stderr)
    finally:
        await store.close()
    print(file=sys.stderr)
    return total, time.perf_counter() - started


def main() -> None:
    args = parser(__doc__).parse_args()
    sites, per_site, days = (20, 25, 365) if args.quick else (200, 25, 365)
    computers = sites * per_site
    with tempdir() as tmp:
        write_org(tmp / "org.yaml", sites)
        config = tmp / "collector.yaml"
        config.write_text(
            f"org: {tmp / 'org.yaml'}\nstore: {{url: 'sqlite:collector.db'}}\n"
            "log: {level: warning}\n",
            encoding="utf-8",
        )
        reports, fill_s = asyncio.run(fill(tmp / "collector.db", sites, per_site, days))
        db_mib = sum(p.stat().st_size for p in tmp.glob("collector.db*")) / 2**20
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "collector", "evidence", "export", "--config", str(config),
             "--period", "2025", "--out", str(tmp / "out"), "--by", "bench"],
            capture_output=True, text=True, cwd=REPO, check=False,
        )  # fmt: skip
        export_s = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            raise SystemExit(f"export failed: {proc.stderr[-2000:]}")
        bundle = Path(proc.stdout.splitlines()[-1])
        size_mib = bundle.stat().st_size / 2**20
        peak_mib = max(peak, before) / 1024
        scope = f"{sites} sites / {computers:,} computers, {reports:,} reports"
        rows = [
            Row("evidence export", f"a year, {scope}: wall s", f"{export_s:.1f}",
                "none exists", "-", "-", "-"),
            Row("evidence export", "peak RSS of the export (MiB)", f"{peak_mib:.0f}",
                "-", "-", "modest", "-"),
            Row("evidence export", "s per million reports", f"{export_s / reports * 1e6:.1f}"),
            Row("evidence export", "bundle size (MiB); store size (MiB)",
                f"{size_mib:.1f}; {db_mib:.0f}"),
        ]  # fmt: skip
        notes = [
            f"History written in-process through Store.ingest in {fill_s:.0f} s "
            f"({reports / fill_s:,.0f} reports/s, batches of {BATCH})."
        ]
        finish(args, rows, notes)


if __name__ == "__main__":
    main()

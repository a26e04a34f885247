"""ARP sweep of a /24 with 60 live hosts: hatang vs arp-scan vs nmap, in namespaces.

Builds a bridge namespace with 60 host namespaces and a probe (10.55.0.0/24, all
inside namespaces this script creates and deletes), then times, in the probe
namespace, each tool's whole process: hatang's sweep with its default settings
(500 pps, 2 retries, 500 ms), the child process the daemon starts for each discovery
(``python -m agent.discovery``: sweep, vendor lookup, merge), ``arp-scan --localnet``
(defaults: 2 retries, 500 ms) and ``nmap -sn -n`` (ARP ping on a local subnet, no DNS).
Median of 5 runs each.

Run as root: ``python3 bench/arp_sweep.py`` (needs arp-scan and nmap installed).
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import netns

PREFIX = "10.55.0"
LIVE = 60
RUNS = 5

HATANG = """
import ipaddress
from agent.config import DiscoveryConfig
from agent.discovery import plan_sweep
from agent.discovery.arp import SweepTarget, sweep
c = DiscoveryConfig()
plan = plan_sweep(c)
result = sweep(plan.interface, plan.mac, [SweepTarget(n, s) for n, s in plan.targets],
               rate=c.rate, retries=c.retries, timeout=c.timeout)
for ip in sorted(result.replies):
    print(ip)
print(f"sweep_seconds={result.duration_seconds:.3f}")
"""

# The daemon's child: the request it writes on the child's stdin, default discovery.
CHILD = """
import subprocess, sys
from agent.config import parse_config
from agent.discovery import child_request
from agent.subproc import module_env
config = parse_config({"site": "bac-kan/cho-don/bang-lung", "role": "site-probe"})
sys.exit(subprocess.run([sys.executable, "-m", "agent.discovery"],
                        input=child_request(config), env=module_env()).returncode)
"""


def build(topo: netns.Topology) -> netns.Namespace:
    switch = topo.add("sw")
    bridge = topo.bridge(switch)
    probe = topo.add("probe")
    topo.attach(switch, bridge, probe, f"{PREFIX}.2/24")
    probe.ip("route", "add", "default", "via", f"{PREFIX}.1")
    for i in range(LIVE):
        host = topo.add(f"h{i:02d}")
        topo.attach(switch, bridge, host, f"{PREFIX}.{10 + i * 3}/24")  # spread over the /24
        host.ip("link", "set", "eth0", "address", f"02:55:00:00:00:{i:02x}")
    return probe


def found_ips(text: str) -> set[str]:
    own, subnet = f"{PREFIX}.2", f"{PREFIX}.0"  # the child's JSON names its subnet too
    ips = set(re.findall(rf"\b{re.escape(PREFIX)}\.\d+\b", text))
    return ips - {own, subnet}


def measure(
    probe: netns.Namespace, args: list[str], parse: str = ""
) -> tuple[float, int, float | None]:
    times: list[float] = []
    counts: list[int] = []
    inner: list[float] = []
    for _ in range(RUNS):
        started = time.perf_counter()
        proc = probe.exec(*args, timeout=120)
        times.append(time.perf_counter() - started)
        text = proc.stdout
        if m := re.search(r"sweep_seconds=([0-9.]+)", text):
            inner.append(float(m.group(1)))
        if parse == "nmap":
            text = "\n".join(line for line in text.splitlines() if "Status: Up" in line)
        counts.append(len(found_ips(text)))
    return statistics.median(times), min(counts), statistics.median(inner) if inner else None


def main() -> None:
    reason = netns.available()
    if reason:
        sys.exit(reason)
    for tool in ("arp-scan", "nmap"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    repo = str(Path(__file__).resolve().parent.parent)
    with netns.topology("-bench") as topo:
        probe = build(topo)
        hatang = [sys.executable, "-c", f"import sys; sys.path.insert(0, {repo!r})\n" + HATANG]
        child = [sys.executable, "-c", f"import sys; sys.path.insert(0, {repo!r})\n" + CHILD]
        arp_scan = ["arp-scan", "--localnet", "-I", "eth0", "-q", "-x"]
        nmap = ["nmap", "-sn", "-n", "-oG", "-", f"{PREFIX}.0/24"]
        rows = [
            ("hatang", measure(probe, hatang)),
            ("hatang daemon's child (python -m agent.discovery)", measure(probe, child)),
            ("arp-scan --localnet", measure(probe, arp_scan)),
            ("nmap -sn -n", measure(probe, nmap, "nmap")),
        ]
    base = rows[2][1][0]
    print(f"/24 with {LIVE} live hosts, median of {RUNS} runs (whole process wall time)\n")
    print("| tool | process wall time (s) | time vs arp-scan | sweep only (s) | hosts found |")
    print("|---|---|---|---|---|")
    for name, (seconds, hosts, sweep) in rows:
        only = f"{sweep:.2f}" if sweep is not None else "-"
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f}x | {only} | {hosts}/{LIVE} |")
    print("\nsweep only: hatang's own timing of the sweep, without Python and scapy start-up")


if __name__ == "__main__":
    main()

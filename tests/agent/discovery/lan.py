"""An office LAN in namespaces for discovery and SNMP tests: hosts behind a bridge,
a router running net-snmp ``snmpd``, optionally a recorded switch served by snmpsim,
and the site probe. Every sweep and poll runs inside the probe namespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests import netns

REPO = Path(__file__).resolve().parents[3]
SNMPREC_DIR = REPO / "tests" / "agent" / "snmp" / "data"
ROUTER_MAC = "02:52:00:00:00:01"  # also the uplink entry of the recorded switch's FDB
PROBE_MAC = "00:1e:c9:52:00:02"  # a Dell OUI: the probe is an office PC


@dataclass
class Host:
    ns: netns.Namespace
    ip: str
    mac: str


@dataclass
class Lan:
    """The test's own truth about the LAN it built."""

    topo: netns.Topology
    prefix: str  # e.g. "10.52.0"
    router: netns.Namespace
    probe: netns.Namespace
    switch: netns.Namespace
    hosts: dict[str, Host] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # host names whose link is down

    @property
    def router_ip(self) -> str:
        return f"{self.prefix}.1"

    @property
    def probe_ip(self) -> str:
        return f"{self.prefix}.2"

    def live(self) -> dict[str, str]:
        """ip → mac of every host that should answer ARP (router included, probe not)."""
        truth = {h.ip: h.mac for name, h in self.hosts.items() if name not in self.down}
        truth[self.router_ip] = ROUTER_MAC
        return truth


def missing_tools() -> str | None:
    """Why the snmpd tests cannot run here, or None (snmpsim comes with the test extra)."""
    for tool in ("snmpd", "snmpget"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages snmpd, snmp)"
    return None


def build_lan(topo: netns.Topology, prefix: str, macs: dict[str, str]) -> Lan:
    """Bridge ``sw`` with router .1, probe .2 and one namespace per entry of ``macs``
    (name → MAC) at .10, .11, ...; the probe's default route is the router."""
    switch = topo.add("sw")
    bridge = topo.bridge(switch, "br0")
    router = topo.add("rtr", forward=True)
    topo.attach(switch, bridge, router, f"{prefix}.1/24")
    router.ip("link", "set", "eth0", "address", ROUTER_MAC)
    probe = topo.add("probe")
    topo.attach(switch, bridge, probe, f"{prefix}.2/24")
    probe.ip("link", "set", "eth0", "address", PROBE_MAC)
    probe.ip("route", "add", "default", "via", f"{prefix}.1")
    lan = Lan(topo, prefix, router, probe, switch)
    for n, (name, mac) in enumerate(macs.items()):
        ns = topo.add(name)
        ip = f"{prefix}.{10 + n}"
        topo.attach(switch, bridge, ns, f"{ip}/24")
        ns.ip("link", "set", "eth0", "address", mac)
        lan.hosts[name] = Host(ns, ip, mac)
    return lan


def _snmp_ready(probe: netns.Namespace, address: str, community: str) -> bool:
    proc = probe.exec(
        "snmpget", "-v2c", "-c", community, "-t", "0.5", "-r", "0", "-On", "-Le",
        address, "1.3.6.1.2.1.1.5.0", check=False, timeout=10,
    )  # fmt: skip
    return proc.returncode == 0


def start_snmpd(lan: Lan, workdir: Path, *, community: str = "public", extra: str = "") -> None:
    """Real net-snmp snmpd in the router namespace, serving its own IF-MIB and ARP table."""
    conf = workdir / "snmpd.conf"
    conf.write_text(
        f"agentAddress udp:{lan.router_ip}:161\n"
        f"rocommunity {community} {lan.prefix}.0/24\n"
        "createUser alice SHA alice-auth-key AES alice-priv-key\n"
        "rouser alice priv\n"
        "createUser carol SHA carol-auth-key\n"
        "rouser carol auth\n"
        "sysName rtr-ubnd\n"
        f"{extra}",
        encoding="utf-8",
    )
    state = workdir / "snmpd-state"
    state.mkdir(exist_ok=True)
    log = (workdir / "snmpd.log").open("w")
    lan.router.popen(
        ["env", f"SNMP_PERSISTENT_DIR={state}", "MIBS=", "snmpd", "-f", "-Lo", "-C",
         "-c", str(conf), "-p", str(workdir / "snmpd.pid")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    netns.wait_for(lambda: _snmp_ready(lan.probe, lan.router_ip, community), timeout=30)


def start_snmpsim(lan: Lan, workdir: Path, port: int = 1161) -> str:
    """snmpsim serving the recorded switch on the router's address; returns the community."""
    data = workdir / "snmpsim-data"
    shutil.copytree(SNMPREC_DIR, data, dirs_exist_ok=True)
    cache = workdir / "snmpsim-cache"
    cache.mkdir(exist_ok=True)
    responder = shutil.which("snmpsim-command-responder")
    args = [responder] if responder else [sys.executable, "-m", "snmpsim.commands.responder"]
    log = (workdir / "snmpsim.log").open("w")
    lan.router.popen(
        # As root it would drop to "nobody", who cannot read this Python's files;
        # the namespace is the isolation here.
        ["env", "SNMPSIM_ALLOW_ROOT=true", *args, f"--data-dir={data}",
         f"--cache-dir={cache}", f"--agent-udpv4-endpoint={lan.router_ip}:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    community = "cisco-c2960"
    netns.wait_for(lambda: _snmp_ready(lan.probe, f"{lan.router_ip}:{port}", community), timeout=60)
    return community


def run_in_ns(
    ns: netns.Namespace,
    what: str,
    config: dict[str, Any],
    workdir: Path,
    *,
    runs: int = 1,
    timeout: float = 120,
) -> Any:
    """Run discover/poll with ``config`` inside ``ns``; return the parsed JSON result."""
    path = workdir / f"agent-{what}-{ns.short}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    proc = subprocess.run(
        ["ip", "netns", "exec", ns.name, sys.executable, "-m", "tests.agent.discovery.netns_run",
         what, str(path), "--runs", str(runs)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{what} in {ns.name} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])

"""Site probe discovery on a 36-namespace office LAN: sweep truth, SNMP merge, counts.

Every sweep runs inside the probe namespace (tests/agent/discovery/netns_run.py), so
no packet leaves the namespaces this module builds. Subnet 10.52.0.0/24.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.agent.discovery.lan import (
    PROBE_MAC,
    ROUTER_MAC,
    Lan,
    build_lan,
    missing_tools,
    run_in_ns,
    start_snmpd,
    start_snmpsim,
)

pytestmark = [pytest.mark.netns, pytest.mark.snmpd]

PREFIX = "10.52.0"
DELL, BROTHER, TPLINK, XIAOMI = (
    "f0:1f:af:52:00",
    "3c:2a:f4:52:00",
    "50:c7:bf:52:00",
    "64:09:80:52:00",
)
MACS = (
    {f"h{i:02d}": f"{DELL}:{i:02x}" for i in range(1, 21)}
    | {f"h{i:02d}": f"{BROTHER}:{i:02x}" for i in range(21, 25)}
    | {f"h{i:02d}": f"{TPLINK}:{i:02x}" for i in range(25, 27)}
    | {f"h{i:02d}": f"{XIAOMI}:{i:02x}" for i in range(27, 29)}
    | {f"h{i:02d}": f"02:52:00:00:00:{i:02x}" for i in range(29, 33)}
)
DOWN = "h32"
GHOSTS = {"f0:1f:af:52:ee:01", "f0:1f:af:52:ee:02", "f0:1f:af:52:ee:03"}  # FDB only
ROUTER_PINGS = ("h01", "h02", "h03", "h04", "h05")  # in the router's ARP table
FDB_HOSTS = ("h06", "h07", "h08")  # in the recorded switch's FDB


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lan, Path, str]]:
    """32 hosts (one with its link down), router with snmpd + recorded switch, probe."""
    reason = netns.available() or missing_tools()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("lan")
    with netns.topology("-d") as topo:
        lan = build_lan(topo, PREFIX, MACS)
        lan.hosts[DOWN].ns.link_down("eth0")
        lan.down.add(DOWN)
        for name in ROUTER_PINGS:
            lan.router.exec("ping", "-c1", "-W2", lan.hosts[name].ip)
        start_snmpd(lan, workdir)
        community = start_snmpsim(lan, workdir)
        yield lan, workdir, community


def _config(lan: Lan, **discovery: Any) -> dict[str, Any]:
    return {
        "site": "bac-kan/cho-don/bang-lung",
        "role": "site-probe",
        "agent_id": "probe-1",
        "discovery": {"retries": 1, **discovery},
    }


def _with_snmp(config: dict[str, Any], lan: Lan, community: str) -> dict[str, Any]:
    config["snmp"] = {
        "devices": [
            {"address": lan.router_ip, "community": "public", "name": "router"},
            {"address": lan.router_ip, "port": 1161, "community": community, "name": "switch"},
        ]
    }
    return config


def _by_mac(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Hosts by MAC, with the defaults the compact wire form leaves out filled in."""
    return {h["mac"]: {"kind": "unknown", "sources": [], **h} for h in result["hosts"]}


def test_sweep_finds_every_live_host_and_no_others(lan: tuple[Lan, Path, str]) -> None:
    """ARP sweep of the auto-detected /24: exactly the live hosts, with their MACs."""
    net, workdir, _ = lan
    [result] = run_in_ns(net.probe, "discover", _config(net), workdir)
    assert result["error"] is None
    assert result["interface"] == "eth0"
    assert result["subnets"] == [f"{PREFIX}.0/24"]
    swept = {h["ip"]: h["mac"] for h in result["hosts"] if "arp" in h["sources"]}
    assert swept == net.live()
    assert len(swept) >= 31
    assert net.hosts[DOWN].ip not in {h.get("ip") for h in result["hosts"]}
    assert result["counts"]["arp"] == len(net.live())
    me = _by_mac(result)[PROBE_MAC]
    assert me["sources"] == ["agent"] and me["agent_id"] == "probe-1"
    assert me["ip"] == net.probe_ip and me["kind"] == "computer"


def test_vendor_and_kind_from_oui(lan: tuple[Lan, Path, str]) -> None:
    """Without a port check the kind comes from the vendor of the OUI."""
    net, workdir, _ = lan
    [result] = run_in_ns(net.probe, "discover", _config(net), workdir)
    hosts = _by_mac(result)
    assert hosts[MACS["h01"]]["vendor"] == "Dell Inc."
    assert hosts[MACS["h01"]]["kind"] == "computer"
    assert hosts[MACS["h21"]]["kind"] == "printer"
    assert hosts[MACS["h21"]]["kind_reason"].startswith("vendor Brother")
    assert hosts[MACS["h25"]]["kind"] == "network"
    assert hosts[MACS["h27"]]["kind"] == "phone"
    assert hosts[MACS["h29"]]["kind"] == "unknown"
    assert hosts[MACS["h29"]]["kind_reason"] == "randomised MAC"


def test_reconciled_counts_with_router_arp_switch_fdb_and_agent(
    lan: tuple[Lan, Path, str],
) -> None:
    """ARP sweep + router ARP table (snmpd) + switch FDB (snmpsim) + this agent, by MAC."""
    net, workdir, community = lan
    config = _with_snmp(_config(net), net, community)
    first, second = run_in_ns(net.probe, "discover", config, workdir, runs=2)
    for result in (first, second):
        assert result["error"] is None
    hosts = _by_mac(second)
    assert set(hosts) == set(net.live().values()) | {PROBE_MAC} | GHOSTS
    for name in ROUTER_PINGS + FDB_HOSTS:
        assert hosts[MACS[name]]["sources"] == ["arp", "snmp"], name
    for mac in GHOSTS:  # switched-off PCs the switch still remembers
        assert hosts[mac]["sources"] == ["snmp"] and "ip" not in hosts[mac]
    assert hosts[PROBE_MAC]["sources"] == ["snmp", "agent"]  # the router has talked to it
    assert hosts[ROUTER_MAC]["sources"] == ["arp", "snmp"]
    assert hosts[ROUTER_MAC]["kind"] == "network"
    assert hosts[ROUTER_MAC]["kind_reason"] == "polled over SNMP"
    assert hosts[MACS["h10"]]["sources"] == ["arp"]
    live = len(net.live())
    dell_live = sum(1 for n, m in MACS.items() if m.startswith(DELL) and n not in net.down)
    assert second["counts"] == {
        "arp": live,
        "snmp": len(ROUTER_PINGS) + 1 + 1 + len(FDB_HOSTS) + len(GHOSTS),  # +probe +router
        "agent": 1,
        "total": live + 1 + len(GHOSTS),
        "computers": dell_live + len(GHOSTS) + 1,
    }
    # first/last seen persist in the daemon process across runs
    before = _by_mac(first)
    for mac, host in hosts.items():
        assert host["first_seen"] == before[mac]["first_seen"]
        assert host["last_seen"] > before[mac]["last_seen"]


def test_the_daemon_sweeps_in_a_child_process_and_keeps_first_seen(
    lan: tuple[Lan, Path, str],
) -> None:
    """The daemon's way (``python -m agent.discovery``, the LanHosts back as JSON over a
    pipe) sees what the sweep in the process sees, SNMP included; scapy never loads in
    the daemon, and first seen lives in the daemon across child runs."""
    net, workdir, community = lan
    config = _with_snmp(_config(net), net, community)
    [direct] = run_in_ns(net.probe, "discover", config, workdir)
    outcome = run_in_ns(net.probe, "discover-child", config, workdir, runs=2)
    assert outcome["scapy_here"] is False
    first, second = outcome["runs"]
    for result in (first, second):
        assert result["error"] is None
        assert result["counts"] == direct["counts"]
        assert result["subnets"] == direct["subnets"]
    hosts = _by_mac(second)
    assert {m: (h.get("ip"), h["kind"], h["sources"]) for m, h in hosts.items()} == {
        m: (h.get("ip"), h["kind"], h["sources"]) for m, h in _by_mac(direct).items()
    }
    assert hosts[MACS["h21"]]["vendor"].startswith("Brother")
    before = _by_mac(first)
    for mac, host in hosts.items():
        assert host["first_seen"] == before[mac]["first_seen"]
        assert host["last_seen"] > before[mac]["last_seen"]


def test_port_check_tells_printers_computers_and_phones(lan: tuple[Lan, Path, str]) -> None:
    """A JetDirect port makes a printer, SMB a computer; a silent random MAC a phone."""
    net, workdir, _ = lan
    listeners = {"h29": 9100, "h30": 445}
    for name, port in listeners.items():
        net.hosts[name].ns.popen(
            [sys.executable, "-c",
             "import socket, time\n"
             "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             f"s.bind(('0.0.0.0', {port})); s.listen(); time.sleep(600)"],
        )  # fmt: skip
    for name, port in listeners.items():
        ns = net.hosts[name].ns
        netns.wait_for(
            lambda ns=ns, port=port: f":{port} " in ns.exec("ss", "-ltnH").stdout, timeout=20
        )
    [result] = run_in_ns(
        net.probe, "discover", _config(net, port_check=True, port_timeout="300ms"), workdir
    )
    hosts = _by_mac(result)
    assert (hosts[MACS["h29"]]["kind"], hosts[MACS["h29"]]["kind_reason"]) == (
        "printer",
        "tcp/9100 open",
    )
    assert hosts[MACS["h29"]]["open_ports"] == [9100]
    assert (hosts[MACS["h30"]]["kind"], hosts[MACS["h30"]]["kind_reason"]) == (
        "computer",
        "tcp/445 open",
    )
    assert hosts[MACS["h31"]]["kind"] == "phone"
    assert hosts[MACS["h01"]]["kind"] == "computer"  # no ports open: the vendor decides


def test_subnet_larger_than_bound_is_refused(lan: tuple[Lan, Path, str]) -> None:
    """The interface's /24 with max_prefix 25: nothing is swept, the report says why."""
    net, workdir, _ = lan
    [result] = run_in_ns(net.probe, "discover", _config(net, max_prefix=25), workdir)
    assert result["error"] == (
        f"Không quét mạng {PREFIX}.0/24 vì lớn hơn giới hạn /25 / subnet {PREFIX}.0/24 on eth0 "
        "is larger than the sweep bound /25 (discovery.max_prefix): not swept; "
        "set discovery.subnets to the part to sweep"
    )
    assert result["subnets"] == []
    assert result["counts"]["arp"] == 0
    assert result["counts"]["agent"] == 1


def test_configured_subnet_is_swept(lan: tuple[Lan, Path, str]) -> None:
    """A configured /26 sweeps only its own addresses (.10-.62 here)."""
    net, workdir, _ = lan
    config = _config(net, subnets=[f"{PREFIX}.0/26"], interface="eth0")
    [result] = run_in_ns(net.probe, "discover", config, workdir)
    assert result["error"] is None
    swept = {h["ip"] for h in result["hosts"] if "arp" in h["sources"]}
    assert swept == {ip for ip in net.live() if int(ip.rsplit(".", 1)[1]) < 64}
    assert result["subnets"] == [f"{PREFIX}.0/26"]


def test_missing_interface_is_an_error_not_a_crash(lan: tuple[Lan, Path, str]) -> None:
    net, workdir, _ = lan
    [result] = run_in_ns(net.probe, "discover", _config(net, interface="eth9"), workdir)
    assert result["error"] == (
        "Không có giao diện eth9 / interface eth9 not found on this computer"
    )
    assert result["counts"]["arp"] == 0

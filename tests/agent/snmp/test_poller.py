"""SNMP polling against a real net-snmp snmpd in the router namespace, and a recorded
Cisco switch (snmpsim) for the bridge FDB that snmpd cannot serve. Subnet 10.53.0.0/24.

All devices are polled in one ``poll_devices`` run inside the probe namespace (as the
agent does), then each test checks one device's result.
"""

from __future__ import annotations

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

PREFIX = "10.53.0"
HOSTS = {"h1": "f0:1f:af:53:00:01", "h2": "3c:2a:f4:53:00:02", "h3": "02:53:00:00:00:03"}
TIMEOUT, RETRIES = 0.5, 1


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lan, Path, str]]:
    reason = netns.available() or missing_tools()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("snmp")
    with netns.topology("-s") as topo:
        lan = build_lan(topo, PREFIX, HOSTS)
        # An unused port pair, left administratively down.
        lan.router.ip("link", "add", "spare0", "type", "veth", "peer", "name", "spare1")
        for host in lan.hosts.values():
            lan.router.exec("ping", "-c1", "-W2", host.ip)
        start_snmpd(lan, workdir)
        community = start_snmpsim(lan, workdir)
        yield lan, workdir, community


def _devices(lan: Lan, community: str, workdir: Path) -> list[dict[str, Any]]:
    router = {"address": lan.router_ip}
    v3 = {"version": "3"}
    alice = {"user": "alice", "auth_protocol": "sha", "priv_protocol": "aes"}
    keys = {"auth_key": "alice-auth-key", "priv_key": "alice-priv-key"}
    (workdir / "alice-auth").write_text("alice-auth-key\n")
    return [
        {**router, "name": "v2c", "community": "public"},
        {**router, **v3, "name": "v3-authpriv",
         "v3": {**alice, "auth_key_file": str(workdir / "alice-auth"),
                "priv_key": "alice-priv-key"}},
        {**router, **v3, "name": "v3-authnopriv",
         "v3": {"user": "carol", "auth_protocol": "sha", "auth_key": "carol-auth-key"}},
        {**router, **v3, "name": "v3-wrong-auth",
         "v3": {**alice, "auth_key": "not-alices-key", "priv_key": "alice-priv-key"}},
        {**router, **v3, "name": "v3-unknown-user",
         "v3": {**alice, **keys, "user": "mallory"}},
        {**router, **v3, "name": "v3-wrong-priv", "timeout": TIMEOUT, "retries": 0,
         "v3": {**alice, "auth_key": "alice-auth-key", "priv_key": "not-alices-priv"}},
        {"address": f"{PREFIX}.99", "name": "unreachable", "community": "public",
         "timeout": TIMEOUT, "retries": RETRIES},
        {**router, "name": "wrong-community", "community": "guess", "timeout": TIMEOUT,
         "retries": 0},
        {**router, "name": "bounded", "community": "public", "max_rows": 2},
        {**router, "name": "missing-file", "community_file": str(workdir / "no-such-file")},
        {**router, "name": "switch", "port": 1161, "community": community},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def polled(lan: tuple[Lan, Path, str]) -> dict[str, dict[str, Any]]:
    net, workdir, community = lan
    config = {
        "site": "bac-kan",
        "role": "site-probe",
        "snmp": {"devices": _devices(net, community, workdir)},
    }
    devices = run_in_ns(net.probe, "snmp", config, workdir)
    return {d["name"]: d for d in devices}


def test_v2c_system_and_interfaces_match_the_router(polled: dict[str, dict[str, Any]]) -> None:
    device = polled["v2c"]
    assert device["up"] is True and device["error"] is None
    assert device["sys_name"] == "rtr-ubnd"
    assert device["sys_descr"].startswith("Linux")
    assert device["sys_uptime_seconds"] > 0
    assert device["sys_object_id"] == "1.3.6.1.4.1.8072.3.2.10"  # net-snmp on Linux
    interfaces = {i["name"]: i for i in device["interfaces"]}
    assert set(interfaces) == {"lo", "eth0", "spare0", "spare1"}
    eth0 = interfaces["eth0"]
    assert eth0["mac"] == ROUTER_MAC
    assert (eth0["oper_status"], eth0["admin_status"]) == ("up", "up")
    assert eth0["counter_bits"] == 64 and eth0["in_octets"] > 0 and eth0["out_octets"] > 0
    assert eth0["in_errors"] == 0
    assert interfaces["spare0"]["admin_status"] == "down"
    assert interfaces["spare0"]["oper_status"] == "down"
    assert device["arp_entries"] == len(HOSTS) + 1  # the hosts it pinged and the probe
    assert device["fdb_entries"] == 0


def test_router_arp_table_matches_what_it_talked_to(lan: tuple[Lan, Path, str]) -> None:
    net, workdir, _ = lan
    config = {
        "site": "bac-kan",
        "role": "site-probe",
        "snmp": {"devices": [{"address": net.router_ip, "community": "public"}]},
    }
    [neighbours] = run_in_ns(net.probe, "neighbours", config, workdir)
    expected = {(h.ip, h.mac) for h in net.hosts.values()} | {(net.probe_ip, PROBE_MAC)}
    assert {tuple(e) for e in neighbours["arp"]} == expected
    assert neighbours["fdb"] == []


def test_v3_credentials_work(polled: dict[str, dict[str, Any]]) -> None:
    for name in ("v3-authpriv", "v3-authnopriv"):
        device = polled[name]
        assert device["error"] is None, name
        assert device["up"] is True and device["sys_name"] == "rtr-ubnd"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "v3-wrong-auth",
            f"SNMP authentication failed: wrong authentication key or protocol for user "
            f"'alice' on {PREFIX}.1:161",
            id="wrong-auth-key",
        ),
        pytest.param(
            "v3-unknown-user",
            f"SNMP authentication failed: unknown user 'mallory' on {PREFIX}.1:161",
            id="unknown-user",
        ),
        pytest.param(
            "v3-wrong-priv",
            f"timeout: no SNMP answer from {PREFIX}.1:161 after 1 try of 0.5s (check the "
            "address and that UDP port is reachable, or a wrong privacy key: agents drop "
            "what they cannot decrypt)",
            id="wrong-priv-key",
        ),
        pytest.param(
            "wrong-community",
            f"timeout: no SNMP answer from {PREFIX}.1:161 after 1 try of 0.5s (check the "
            "address, that UDP port is reachable, and the community)",
            id="wrong-community",
        ),
        pytest.param(
            "missing-file",
            "credentials: snmp.devices[].community_file: cannot read",
            id="missing-community-file",
        ),
    ],
)
def test_credential_errors_are_clear(
    polled: dict[str, dict[str, Any]], name: str, expected: str
) -> None:
    device = polled[name]
    assert device["up"] is False
    assert device["error"].startswith(expected)
    assert device["interfaces"] == []


def test_unreachable_agent_times_out_cleanly(polled: dict[str, dict[str, Any]]) -> None:
    device = polled["unreachable"]
    assert device["up"] is False
    assert device["error"] == (
        f"timeout: no SNMP answer from {PREFIX}.99:161 after 2 tries of 0.5s "
        "(check the address, that UDP port is reachable, and the community)"
    )
    tries = RETRIES + 1
    assert device["duration_seconds"] >= TIMEOUT * tries * 0.9
    assert device["duration_seconds"] < TIMEOUT * tries + 8  # bounded; slack for a busy CI


def test_walks_are_bounded_by_max_rows(polled: dict[str, dict[str, Any]]) -> None:
    device = polled["bounded"]
    assert device["up"] is True
    assert device["truncated"] is True
    assert len(device["interfaces"]) == 2
    assert device["error"] == "a table was cut at max_rows=2"


def test_recorded_switch_fdb_and_counters(polled: dict[str, dict[str, Any]]) -> None:
    """The Cisco 2960 recording: 7 learned FDB entries (its own 'self' entry excluded)."""
    device = polled["switch"]
    assert device["error"] is None
    assert device["sys_descr"].startswith("Cisco IOS Software, C2960 Software")
    assert device["sys_name"] == "SW-UBND-TANG2"
    assert device["sys_object_id"] == "1.3.6.1.4.1.9.1.716"
    assert device["sys_uptime_seconds"] == pytest.approx(15587312.99)
    assert device["fdb_entries"] == 7
    assert device["arp_entries"] == 0
    interfaces = {i["name"]: i for i in device["interfaces"]}
    assert len(interfaces) == 27
    assert interfaces["Gi0/1"]["alias"] == "uplink router"
    assert interfaces["Gi0/1"]["speed_bps"] == 1_000_000_000
    assert interfaces["Fa0/8"]["oper_status"] == "down"
    fa3 = interfaces["Fa0/3"]
    assert (fa3["in_errors"], fa3["out_errors"], fa3["counter_bits"]) == (17, 2, 64)
    assert fa3["in_octets"] > 2**32  # the 64-bit counter, not the wrapped 32-bit one


def test_recorded_switch_fdb_macs(lan: tuple[Lan, Path, str]) -> None:
    net, workdir, community = lan
    config = {
        "site": "bac-kan",
        "role": "site-probe",
        "snmp": {"devices": [{"address": net.router_ip, "port": 1161, "community": community}]},
    }
    [neighbours] = run_in_ns(net.probe, "neighbours", config, workdir)
    assert neighbours["fdb"] == sorted(
        [ROUTER_MAC]
        + [f"f0:1f:af:52:00:0{i}" for i in (6, 7, 8)]
        + [f"f0:1f:af:52:ee:0{i}" for i in (1, 2, 3)]
    )

"""Each probe kind over IPv6, up and down, in namespaces the test creates.

Addresses are the documentation prefix 2001:db8::/32 (what the agent classifies as a
global address; it never appears on a real network) and ULA fd00::/8; the agent's
namespace also knows a dual-stack name from its own /etc/hosts, so ``family: ipv6`` is
seen to pick the IPv6 address of a name that has both.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.agent.probes.nsrun import probe_in
from tests.agent.probes.servers import dnsmasq_args
from tests.conftest import REPO

SERVER = "2001:db8:26::2"
AGENT = "2001:db8:26::1"
V4_SERVER = "10.26.0.2"


@dataclass
class Pair:
    agent: netns.Namespace
    server: netns.Namespace
    server_dev: str


def _listening(ns: netns.Namespace, proto: str, port: int) -> bool:
    out = ns.exec("ss", f"-{proto}lnH", f"sport = :{port}", check=False).stdout
    return bool(out.strip())


@pytest.fixture
def pair(topo: netns.Topology, tmp_path: Path) -> Iterator[Pair]:
    agent, server = topo.add("a"), topo.add("s")
    for ns in (agent, server):
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "0")
    a_dev, s_dev = topo.link(agent, server, "10.26.0.1/24", f"{V4_SERVER}/24")
    agent.ip("addr", "add", f"{AGENT}/64", "dev", a_dev, "nodad")
    agent.ip("addr", "add", "fd26::1/64", "dev", a_dev, "nodad")
    server.ip("addr", "add", f"{SERVER}/64", "dev", s_dev, "nodad")
    server.ip("addr", "add", "fd26::2/64", "dev", s_dev, "nodad")
    agent.write_etc("hosts", f"127.0.0.1 localhost\n{V4_SERVER} dual.test\n{SERVER} dual.test\n")
    serve = [sys.executable, "-m", "tests.agent.probes.servers"]
    server.popen([*serve, "http", "--bind", SERVER, "--port", "8080"], cwd=REPO)
    server.popen([*serve, "http", "--bind", V4_SERVER, "--port", "8080"], cwd=REPO)
    server.popen(
        dnsmasq_args(SERVER, 53, "--address=/v6.gov.vn/2001:db8:26::80"),
        stderr=open(tmp_path / "dnsmasq.log", "w"),  # noqa: SIM115 - closed with the process
    )
    netns.wait_for(lambda: _listening(server, "t", 8080), timeout=20)
    netns.wait_for(lambda: _listening(server, "u", 53), timeout=20)
    yield Pair(agent, server, s_dev)


def _targets() -> list[dict[str, Any]]:
    base = {"timeout": "2s", "family": "ipv6"}
    return [
        {"kind": "icmp", "address": SERVER, "count": 2, "interval": "50ms", **base},
        {"kind": "tcp", "address": f"[{SERVER}]:8080", **base},
        {"kind": "dns", "address": SERVER, "query": "v6.gov.vn", "record_type": "AAAA", **base},
        {"kind": "http", "address": f"http://[{SERVER}]:8080/", **base},
        # A name with A and AAAA: family ipv6 takes the AAAA.
        {"kind": "tcp", "address": "dual.test:8080", **base},
        {"kind": "http", "address": "http://dual.test:8080/", **base},
    ]


@pytest.mark.netns
def test_every_kind_is_up_over_ipv6_and_says_so(pair: Pair) -> None:
    for target in _targets():
        result = probe_in(pair.agent, target)
        assert result["up"] is True, (target, result)
        assert result["family"] == "ipv6", (target, result)
    # Without the option a dual-stack name goes over IPv4 first, and says so.
    plain = probe_in(pair.agent, {"kind": "tcp", "address": "dual.test:8080", "timeout": "2s"})
    assert plain["up"] is True and plain["family"] == "ipv4"


@pytest.mark.netns
def test_every_kind_is_down_over_ipv6_with_a_reason(pair: Pair) -> None:
    # The server loses its IPv6 addresses; IPv4 still works, so only IPv6 is down.
    pair.server.ip("-6", "addr", "flush", "dev", pair.server_dev, "scope", "global")
    pair.agent.ip("-6", "neigh", "flush", "all")
    for target in _targets():
        result = probe_in(pair.agent, target)
        assert result["up"] is False, (target, result)
        assert result["error"] in ("timeout", "unreachable", "refused"), (target, result)
        assert result["family"] == "ipv6", (target, result)
    v4 = probe_in(pair.agent, {"kind": "tcp", "address": "dual.test:8080", "family": "ipv4"})
    assert v4["up"] is True and v4["family"] == "ipv4"


@pytest.mark.netns
def test_name_without_aaaa_is_a_dns_error_over_ipv6(pair: Pair) -> None:
    pair.agent.write_etc("hosts", f"127.0.0.1 localhost\n{V4_SERVER} only4.test\n")
    result = probe_in(pair.agent, {"kind": "tcp", "address": "only4.test:8080", "family": "ipv6"})
    assert result["up"] is False and result["error"] == "dns_error"
    assert result["family"] == "ipv6"
    assert "no ipv6 address" in result["detail"]


def test_check_table_marks_checks_that_went_over_ipv6() -> None:
    from agent.render import network_rows
    from agent.report import NetworkStatus, ProbeResult, Report

    report = Report(
        id="r", agent_id="a", site="demo", role="host", seq=1,
        observed_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), interval_seconds=60,
        agent_version="t",
    )  # fmt: skip
    report.networks.internet = NetworkStatus(
        configured=True,
        up=True,
        targets=[
            ProbeResult(kind="tcp", target="v6", up=True, family="ipv6"),
            ProbeResult(kind="tcp", target="v4", up=True, family="ipv4"),
        ],
    )
    rows = [r for r in network_rows(report) if r[1] in ("v6", "v4")]
    assert [r[2] for r in rows] == ["tcp (IPv6)", "tcp"]

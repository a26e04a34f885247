"""The headline test: a commune office in namespaces, checked by the real CLI.

    pc (10.21.1.10) ── router ─┬─ wan   10.22.0.10  (the collector's WAN address, tcp/8443)
       LAN 10.21.1.0/24        ├─ ded   10.23.0.10  (dedicated-network host, icmp)
                               └─ inet  10.24.0.53  (dnsmasq) + 10.24.0.80 (HTTPS
                                        "dichvucong.gov.vn", certificate from a test CA)

The agent runs in ``pc`` as ``python -m agent check --config F --json``. Cutting the
router's uplink to one network must flip exactly that class to down, with a reason;
restoring it must flip it back. Without lan targets, the pc's default gateway (the
router) is what the LAN check probes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests import netns
from tests.agent.probes.nsrun import REPO
from tests.agent.probes.servers import dnsmasq_args, write_pem

pytestmark = pytest.mark.netns

CLASSES = ("lan", "wan", "dedicated", "internet")


@dataclass
class Office:
    topo: netns.Topology
    pc: netns.Namespace
    router: netns.Namespace
    uplinks: dict[str, str]  # network class -> router-side device
    router_lan: str  # router-side device of the office LAN
    ca_file: str
    tmp: Path

    def config(self, *, lan: bool = True) -> dict[str, Any]:
        networks: dict[str, Any] = {
            "wan": {"targets": [{"kind": "tcp", "address": "10.22.0.10:8443", "timeout": "2s"}]},
            "dedicated": {
                "targets": [
                    {
                        "kind": "icmp",
                        "address": "10.23.0.10",
                        "timeout": "2s",
                        "count": 3,
                        "interval": "100ms",
                    }
                ]
            },
            "internet": {
                "rule": "all",
                "targets": [
                    {
                        "kind": "dns",
                        "address": "10.24.0.53",
                        "query": "dichvucong.gov.vn",
                        "timeout": "2s",
                    },
                    {
                        "kind": "http",
                        "address": "https://dichvucong.gov.vn/",
                        "ca_file": self.ca_file,
                        "timeout": "3s",
                    },
                ],
            },
        }
        if lan:
            networks["lan"] = {
                "targets": [
                    {
                        "kind": "icmp",
                        "address": "10.21.1.1",
                        "timeout": "2s",
                        "count": 3,
                        "interval": "100ms",
                    }
                ]
            }
        return {
            "site": "bac-kan/cho-don/bang-lung",
            "agent_id": "topology-test",
            "inventory": {"enabled": False},
            "antivirus": {"enabled": False},
            "patches": {"enabled": False},
            "spool": {"path": str(self.tmp / "spool.db")},
            "networks": networks,
        }

    def check(self, config: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Run the agent's CLI in the pc namespace; return its exit code and the report."""
        path = self.tmp / "agent.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        proc = self.pc.exec(
            sys.executable,
            "-m",
            "agent",
            "check",
            "--config",
            str(path),
            "--json",
            check=False,
            timeout=60,
        )
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode, json.loads(proc.stdout)


def _listening(ns: netns.Namespace, proto: str, port: int) -> bool:
    out = ns.exec("ss", "-Hn", f"-l{proto}", f"sport = :{port}", check=False).stdout
    return bool(out.strip())


@pytest.fixture
def office(topo: netns.Topology, tmp_path: Path) -> Iterator[Office]:
    pc, router = topo.add("pc"), topo.add("router", forward=True)
    wan, ded, inet = topo.add("wan"), topo.add("ded"), topo.add("inet")
    _, router_lan = topo.link(pc, router, "10.21.1.10/24", "10.21.1.1/24")
    pc.ip("route", "add", "default", "via", "10.21.1.1")
    uplinks = {}
    for network, ns, subnet in (("wan", wan, 22), ("dedicated", ded, 23), ("internet", inet, 24)):
        router_dev, ns_dev = topo.link(router, ns, f"10.{subnet}.0.1/24", f"10.{subnet}.0.10/24")
        ns.ip("route", "add", "default", "via", f"10.{subnet}.0.1")
        uplinks[network] = router_dev
    for address in ("10.24.0.53/24", "10.24.0.80/24"):
        inet.ip("addr", "add", address, "dev", ns_dev)  # the last link is the internet's

    ca = trustme.CA()
    leaf = ca.issue_cert("dichvucong.gov.vn")
    cert = write_pem(tmp_path, "cert.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key = write_pem(tmp_path, "key.pem", leaf.private_key_pem.bytes())
    ca_file = write_pem(tmp_path, "ca.pem", ca.cert_pem.bytes())
    pc.write_etc("resolv.conf", "nameserver 10.24.0.53\noptions timeout:1 attempts:1\n")

    serve = [sys.executable, "-m", "tests.agent.probes.servers"]
    wan.popen([*serve, "tcp", "--bind", "10.22.0.10", "--port", "8443"], cwd=REPO)
    inet.popen(
        [*serve, "http", "--bind", "10.24.0.80", "--port", "443", "--cert", cert, "--key", key],
        cwd=REPO,
    )
    inet.popen(
        dnsmasq_args("10.24.0.53", 53, "--address=/dichvucong.gov.vn/10.24.0.80"),
        stderr=open(tmp_path / "dnsmasq.log", "w"),  # noqa: SIM115 - closed with the process
    )
    netns.wait_for(lambda: _listening(wan, "t", 8443), timeout=20)
    netns.wait_for(lambda: _listening(inet, "t", 443), timeout=20)
    netns.wait_for(lambda: _listening(inet, "u", 53), timeout=20)
    yield Office(topo, pc, router, uplinks, router_lan, ca_file, tmp_path)


def assert_truth(report: dict[str, Any], down: str | None = None) -> None:
    """Every configured class is up except ``down``, which is down with a reason per target."""
    networks = report["networks"]
    for network in CLASSES:
        status = networks[network]
        assert status["configured"] is True, network
        if network == down:
            assert status["up"] is False, (network, status)
            for target in status["targets"]:
                assert target["up"] is False and target["error"], target
        else:
            assert status["up"] is True, (network, status)


def test_check_reports_the_truth_and_follows_link_cuts(office: Office) -> None:
    config = office.config()
    code, report = office.check(config)
    assert code == 0
    assert report["site"] == "bac-kan/cho-don/bang-lung"
    assert_truth(report)
    internet = {t["kind"]: t for t in report["networks"]["internet"]["targets"]}
    assert internet["dns"]["answers"] == ["10.24.0.80"]
    assert internet["http"]["status_code"] == 200
    assert internet["http"]["tls_days_to_expiry"] > 0
    assert report["networks"]["dedicated"]["targets"][0]["method"] == "icmp-raw"
    assert report["networks"]["dedicated"]["targets"][0]["loss_ratio"] == 0.0

    for network, device in office.uplinks.items():
        office.router.link_down(device)
        try:
            code, report = office.check(config)
            assert code == 1, network
            assert_truth(report, down=network)
        finally:
            office.router.link_up(device)
        netns.wait_for(lambda: office.check(config)[0] == 0, timeout=30, interval=0.5)

    code, report = office.check(config)
    assert code == 0
    assert_truth(report)


def test_wan_cut_reason_is_unreachable(office: Office) -> None:
    office.router.link_down(office.uplinks["wan"])
    _, report = office.check(office.config())
    [target] = report["networks"]["wan"]["targets"]
    # The router has no route left to 10.22.0.0/24 and says so (ICMP net unreachable).
    assert target["error"] == "unreachable", target
    assert target["detail"] == "connect to 10.22.0.10:8443: network is unreachable"


def test_default_gateway_is_probed_without_lan_targets(office: Office) -> None:
    config = office.config(lan=False)
    code, report = office.check(config)
    lan = report["networks"]["lan"]
    assert code == 0
    assert (lan["configured"], lan["up"], lan["default_gateway"]) == (True, True, True)
    [target] = lan["targets"]
    assert target["target"] == "10.21.1.1"
    assert target["kind"] == "icmp" and target["method"] == "icmp-raw"

    # The office router's LAN port goes dark: the gateway stops answering.
    office.router.link_down(office.router_lan)
    code, report = office.check(config)
    assert code == 1
    lan = report["networks"]["lan"]
    assert lan["up"] is False and lan["targets"][0]["error"] in ("unreachable", "timeout")


def test_no_default_route_is_reported(office: Office) -> None:
    office.pc.ip("route", "del", "default")
    code, report = office.check(office.config(lan=False))
    assert code == 1
    lan = report["networks"]["lan"]
    assert (lan["configured"], lan["up"], lan["default_gateway"]) == (True, False, True)
    assert lan["targets"][0]["error"] == "unreachable"
    assert lan["targets"][0]["detail"] == "no default route"

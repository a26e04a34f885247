"""Bytes per class from a real snmpd, and the use indicator they feed. Subnets 10.62.0.0/16.

    probe (10.62.0.2) ── sw ── router (10.62.0.1, snmpd) ── ded0 ── ded (10.62.5.10)

The test sends a known number of bytes from the probe to ``ded`` over TCP, through the
router's dedicated uplink ``ded0`` (configured by ifName). The poll after it must report
those bytes out of ``ded0`` within a tolerance (TCP/IP headers: +2..10 %); a restart of
snmpd (sysUpTime starts again) must give an unknown poll, never a spike or a negative.
The polls then go, as reports, into an in-process collector whose plan says the
dedicated network must be reachable and used (4 MB a day).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from agent.config import parse_config
from agent.report import Batch, Networks, NetworkStatus, ProbeResult, SnmpDevice, encode
from agent.sections import make_report
from tests import netns
from tests.agent.discovery.lan import REPO, Lan, build_lan, missing_tools, start_snmpd

pytestmark = [pytest.mark.netns, pytest.mark.snmpd]

PREFIX = "10.62.0"
DED = "10.62.5.10"
SENT = 5_000_000
SITE = "demo/xa-an-binh"
RECEIVER = """
import socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((sys.argv[1], 9000))
listener.listen(1)
print("ready", flush=True)
conn, _ = listener.accept()
total = 0
while data := conn.recv(65536):
    total += len(data)
print(total, flush=True)
"""
SENDER = """
import socket, sys
with socket.create_connection((sys.argv[1], 9000), timeout=10) as s:
    s.sendall(b"x" * int(sys.argv[2]))
"""


@dataclass
class Office:
    lan: Lan
    ded: netns.Namespace
    workdir: Path
    poller: subprocess.Popen[str]

    def poll(self) -> dict[str, Any]:
        assert self.poller.stdin is not None and self.poller.stdout is not None
        self.poller.stdin.write("poll\n")
        self.poller.stdin.flush()
        [device] = json.loads(self.poller.stdout.readline())
        assert device["error"] is None, device["error"]
        return dict(device)

    def send(self, size: int) -> int:
        receiver = self.ded.popen(
            [sys.executable, "-c", RECEIVER, DED], stdout=subprocess.PIPE, text=True
        )
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        self.lan.probe.exec(sys.executable, "-c", SENDER, DED, str(size))
        received = int(receiver.stdout.readline())
        receiver.wait(timeout=10)
        return received

    def out_octets(self, if_index: int) -> int:
        """ifHCOutOctets of one port, read with net-snmp's own snmpget."""
        oid = f"1.3.6.1.2.1.31.1.1.1.10.{if_index}"
        proc = self.lan.probe.exec(
            "snmpget", "-v2c", "-c", "public", "-Oqv", self.lan.router_ip, oid, check=False
        )
        return int(proc.stdout.strip() or 0)

    def restart_snmpd(self) -> None:
        snmpd = [p for p in self.lan.topo.processes if "snmpd" in p.args][-1]
        snmpd.terminate()  # the snmpd this test started, by its own handle
        snmpd.wait(timeout=10)
        start_snmpd(self.lan, self.workdir)


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Office]:
    reason = netns.available() or missing_tools()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("uplink")
    with netns.topology("-u") as topo:
        lan = build_lan(topo, PREFIX, {})
        ded = topo.add("ded")
        topo.link(lan.router, ded, "10.62.5.1/24", f"{DED}/24", a_dev="ded0")
        ded.ip("route", "add", f"{PREFIX}.0/24", "via", "10.62.5.1")
        start_snmpd(lan, workdir)
        config = {
            "site": SITE,
            "role": "site-probe",
            "snmp": {
                "devices": [
                    {
                        "address": lan.router_ip,
                        "community": "public",
                        "uplinks": {"dedicated": {"if_name": "ded0"}},
                    }
                ]
            },
        }
        path = workdir / "agent.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        poller = lan.probe.popen(
            [sys.executable, "-m", "tests.agent.snmp.usage_run", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        yield Office(lan, ded, workdir, poller)


@pytest.fixture(scope="module")
def polls(office: Office) -> dict[str, Any]:
    """first poll, the poll after the transfer, after an snmpd restart, and the next one."""
    first = office.poll()
    [uplink] = first["uplinks"]
    before = next(i["out_octets"] for i in first["interfaces"] if i["index"] == uplink["if_index"])
    received = office.send(SENT)
    # snmpd caches the interface table for a few seconds: wait until it shows the transfer.
    netns.wait_for(lambda: office.out_octets(uplink["if_index"]) >= before + SENT, timeout=30)
    after_transfer = office.poll()
    # sysUpTime must have visibly advanced before the restart sets it back.
    netns.wait_for(lambda: office.poll()["sys_uptime_seconds"] > 3, timeout=30, interval=0.5)
    office.restart_snmpd()
    after_restart = office.poll()
    next_poll = office.poll()
    return {
        "received": received,
        "first": first,
        "transfer": after_transfer,
        "restart": after_restart,
        "next": next_poll,
    }


def _uplink(device: dict[str, Any]) -> dict[str, Any]:
    [uplink] = device["uplinks"]
    assert uplink["network"] == "dedicated" and uplink["if_name"] == "ded0"
    return dict(uplink)


def test_first_poll_is_unknown(polls: dict[str, Any]) -> None:
    uplink = _uplink(polls["first"])
    assert (uplink["in_bytes"], uplink["out_bytes"], uplink["unknown"]) == (
        None,
        None,
        "first poll",
    )
    assert uplink["counter_bits"] == 64


def test_bytes_sent_over_the_dedicated_uplink_are_counted(polls: dict[str, Any]) -> None:
    assert polls["received"] == SENT
    uplink = _uplink(polls["transfer"])
    print(f"sent {SENT} bytes; ded0 out {uplink['out_bytes']} in {uplink['in_bytes']}")
    assert uplink["unknown"] is None
    assert SENT <= uplink["out_bytes"] <= SENT * 1.10  # payload plus TCP/IP headers
    assert 0 < uplink["in_bytes"] < SENT * 0.10  # the receiver's ACKs


def test_snmpd_restart_is_unknown_then_counting_resumes(polls: dict[str, Any]) -> None:
    restart = _uplink(polls["restart"])
    assert polls["restart"]["sys_uptime_seconds"] < 3
    assert (restart["in_bytes"], restart["out_bytes"]) == (None, None)
    assert restart["unknown"] == "device restarted"
    after = _uplink(polls["next"])
    assert after["unknown"] is None
    assert 0 <= after["out_bytes"] < 100_000 and 0 <= after["in_bytes"] < 100_000


async def test_use_indicator_from_the_polled_bytes(
    polls: dict[str, Any], aiohttp_client: Any, tmp_path: Path
) -> None:
    from collector import api
    from collector.app import BUILDER, create_app
    from tests.collector.conftest import DEMO_ORG, collector_config

    plan = {
        "plan": "test-use",
        "title": "Kế hoạch thử sử dụng",
        "reference": "test",
        "use": {"min_bytes_per_day": 4_000_000},
        "goals": [
            {"indicator": "dedicated_network", "level": "commune", "goal": 0.6,
             "deadline": 2030, "requires": ["reachable", "used"]},
        ],
    }  # fmt: skip
    targets = tmp_path / "plan.yaml"
    targets.write_text(yaml.safe_dump(plan, allow_unicode=True), encoding="utf-8")
    client = await aiohttp_client(
        create_app(collector_config(tmp_path, org=str(DEMO_ORG), targets=[str(targets)]))
    )
    store = client.app[api.STORE]
    _, token = await store.create_token(SITE, "test")
    agent = parse_config({"site": SITE, "role": "site-probe", "agent_id": "probe-1"})
    dedicated = NetworkStatus(
        configured=True,
        up=True,
        rule="any",
        targets=[ProbeResult(kind="icmp", target=DED, up=True, rtt_seconds=0.001)],
    )

    async def post(seq: int, device: dict[str, Any]) -> str:
        report = make_report(
            agent,
            agent_id="probe-1",
            seq=seq,
            observed_at=dt.datetime.now(dt.UTC),
            results={
                "networks": Networks(dedicated=dedicated),
                "snmp": [msgspec.convert(device, SnmpDevice)],
            },
        )
        response = await client.post(
            "/api/v1/reports",
            data=encode(Batch(reports=[report])),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert response.status == 200, await response.text()
        await client.app[BUILDER].refresh()
        return str(await (await client.get("/metrics")).text())

    site = f'site="{SITE}",network="dedicated"'
    goal = 'indicator="dedicated_network",level="commune",plan="test-use"'
    text = await post(1, polls["first"])  # counters exist, no known bytes yet: not used
    assert f'hatang_site_network_used{{{site},plan="test-use"}} 0.0' in text
    assert f'hatang_indicator_goal_units{{{goal},state="not_attaining"}} 1.0' in text
    text = await post(2, polls["transfer"])
    assert f'hatang_site_network_used{{{site},plan="test-use"}} 1.0' in text
    assert f'hatang_indicator_goal_units{{{goal},state="attaining"}} 1.0' in text
    text = await post(3, polls["restart"])  # unknown: adds nothing, counted as unknown
    assert f"hatang_site_network_unknown_polls{{{site}}} 2.0" in text
    excerpt = [
        ln
        for ln in text.splitlines()
        if ln.startswith(("hatang_site_network_", "hatang_plan_use", "hatang_indicator_goal"))
        and ("dedicated" in ln or "test-use" in ln)
    ]
    print("\n".join(excerpt))
    out_series = f'hatang_site_network_bytes{{{site},direction="out"}}'
    out = next(ln for ln in excerpt if ln.startswith(out_series))
    assert SENT <= float(out.rsplit(" ", 1)[1]) <= SENT * 1.10

"""Broadband measured on a shaped line, judged by the collector. Subnets 10.61.0.0/16.

    pc (10.61.1.10, the site probe) ── router ── dc (10.61.2.10: hatang-collector serve)
                                          └ the uplink: dc's egress shaped with tc htb

The collector runs in ``dc`` as a real process and serves the payload itself
(/api/v1/throughput); the agent runs in ``pc`` as ``python -m agent check --json``. The
line is shaped to 4 and to 16 Mbit/s; the measured rate must be within ±25 % of the
shaped rate (a measurement bound: TCP/IP headers take ~5 % of the shaped rate, the
rest is slack for the shaper's burst and the kernel). The measured reports are then
stored by an in-process collector whose plan sets broadband at 8 Mbit/s: the internet
goal is not judged without a measurement, not attained at 4 Mbit/s, attained once the
window's median is at or above 8 Mbit/s. A cut uplink gives a reason, never a rate.
"""

from __future__ import annotations

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

from agent.report import Batch, Report, encode
from collector.targets import parse_plan
from tests import netns
from tests.collector.conftest import (
    DEMO_ORG,
    SITE,
    MakeClient,
    collector_config,
    new_token,
    run_cli,
    write_config,
)

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
DC = "10.61.2.10"
PORT = 8080
TOLERANCE = 0.25
PLAN = {
    "plan": "test-broadband",
    "title": "Kế hoạch thử băng rộng",
    "reference": "test",
    "broadband": {"min_download_bps": 8_000_000, "rule": "median", "window": "7d"},
    "goals": [{"indicator": "internet", "level": "commune", "goal": 0.9, "deadline": 2030}],
}


@dataclass
class Line:
    topo: netns.Topology
    pc: netns.Namespace
    router: netns.Namespace
    dc: netns.Namespace
    dc_dev: str  # dc's side of the uplink: its egress is the download direction
    router_uplink: str
    agent_config: Path

    def shape(self, mbit: int, verb: str = "change") -> None:
        rate = f"{mbit}mbit"
        self.dc.exec("tc", "class", verb, "dev", self.dc_dev, "parent", "1:", "classid", "1:10",
                     "htb", "rate", rate, "ceil", rate)  # fmt: skip

    def check(self, *, json_output: bool = True) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "agent", "check", "--config", str(self.agent_config)]
        return self.pc.exec(*args, *(["--json"] if json_output else []), check=False)

    def report(self) -> Report:
        proc = self.check()
        assert proc.returncode in (0, 1), proc.stderr
        return msgspec.json.decode(proc.stdout, type=Report)


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("broadband")
    with netns.topology("-bb") as topo:
        pc, router, dc = topo.add("pc"), topo.add("rtr", forward=True), topo.add("dc")
        topo.link(pc, router, "10.61.1.10/24", "10.61.1.1/24")
        router_dev, dc_dev = topo.link(router, dc, "10.61.2.1/24", f"{DC}/24")
        pc.ip("route", "add", "default", "via", "10.61.1.1")
        dc.ip("route", "add", "10.61.1.0/24", "via", "10.61.2.1")
        dc.exec("tc", "qdisc", "add", "dev", dc_dev, "root", "handle", "1:", "htb",
                "default", "10")  # fmt: skip
        collector_yaml = write_config(tmp, listen={"host": DC, "port": PORT})
        token = run_cli("token", "create", "--config", str(collector_yaml), "--site", SITE)
        assert token.returncode == 0, token.stderr
        log = (tmp / "collector.log").open("w")
        dc.popen(
            [sys.executable, "-m", "collector", "serve", "--config", str(collector_yaml)],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
        )  # fmt: skip
        agent_config = tmp / "agent.yaml"
        base = f"http://{DC}:{PORT}"
        agent_config.write_text(
            yaml.safe_dump(
                {
                    "site": SITE,
                    "role": "site-probe",
                    "agent_id": "probe-1",
                    # Plain http inside the test's own namespaces, knowingly.
                    "collector": {
                        "url": base,
                        "token": token.stdout.strip().splitlines()[-1],
                        "allow_insecure": True,
                    },
                    "spool": {"path": str(tmp / "spool.db")},
                    "networks": {
                        "internet": {
                            "targets": [{"kind": "tcp", "address": f"{DC}:{PORT}", "timeout": "2s"}]
                        }
                    },
                    "inventory": {"enabled": False},
                    "antivirus": {"enabled": False},
                    "discovery": {"enabled": False},
                    "throughput": {
                        "max_bytes": "2MB",
                        "max_duration": "3s",
                        "stall_timeout": "1s",
                        "targets": [{"url": f"{base}/api/v1/throughput?bytes=2000000"}],
                    },
                }
            ),
            encoding="utf-8",
        )
        built = Line(topo, pc, router, dc, dc_dev, router_dev, agent_config)
        built.shape(4, "add")
        probe = f"import socket; socket.create_connection(('{DC}', {PORT}), timeout=1).close()"
        netns.wait_for(
            lambda: pc.exec(sys.executable, "-c", probe, check=False).returncode == 0,
            timeout=60,
            interval=0.2,
        )
        yield built


@pytest.fixture(scope="module")
def measured(line: Line) -> dict[int, Report]:
    """One check at each shaped rate (module scope: each costs a few seconds of line)."""
    reports = {}
    for mbit in (4, 16):
        line.shape(mbit)
        reports[mbit] = line.report()
    return reports


@pytest.mark.parametrize("mbit", [4, 16])
def test_measured_rate_is_within_tolerance_of_the_shaped_line(
    measured: dict[int, Report], mbit: int
) -> None:
    [result] = measured[mbit].throughput or []
    assert result.up and result.error is None, result.detail
    assert result.bytes_per_second is not None
    expected = mbit * 1_000_000 / 8
    rate = result.bytes_per_second * 8 / 1e6
    print(f"shaped {mbit} Mbit/s: measured {rate:.2f} Mbit/s, {result.bytes_read} bytes")
    print(f"  in {result.duration_seconds}s ({result.ended_by})")
    assert abs(result.bytes_per_second - expected) <= TOLERANCE * expected
    assert result.bytes_read is not None and 0 < result.bytes_read <= 2_000_000


def test_cut_uplink_gives_a_reason_not_a_zero_rate(line: Line, measured: Any) -> None:
    line.router.link_down(line.router_uplink)
    try:
        report = line.report()
        text = line.check(json_output=False).stdout
    finally:
        line.router.link_up(line.router_uplink)
    [result] = report.throughput or []
    assert result.up is False
    assert result.error in ("unreachable", "timeout", "refused")
    assert result.bytes_per_second is None
    assert "Tốc độ đường truyền / Line speed" in text
    # 2 MB x 4 tests a day x 30 days.
    assert "≈ 240 MB/tháng / per month" in text


async def _post(client: Any, token: str, report: Report) -> None:
    response = await client.post(
        "/api/v1/reports",
        data=encode(Batch(reports=[report])),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()


def _value(text: str, series: str) -> float:
    [line] = [ln for ln in text.splitlines() if ln.startswith(series + " ")]
    return float(line.rsplit(" ", 1)[1])


def _lines(text: str, *names: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(names)]


async def test_internet_goal_flips_across_the_broadband_threshold(
    measured: dict[int, Report], make_client: MakeClient, tmp_path: Path
) -> None:
    targets = tmp_path / "plan.yaml"
    targets.write_text(yaml.safe_dump(PLAN, allow_unicode=True), encoding="utf-8")
    parse_plan(PLAN)  # the test's own plan is a valid one
    config = collector_config(tmp_path, org=str(DEMO_ORG), targets=[str(targets)])
    client = await make_client(config)
    token = await new_token(client)
    goal = 'indicator="internet",level="commune",plan="test-broadband"'

    async def metrics() -> str:
        assert client.app is not None
        from collector.app import BUILDER

        await client.app[BUILDER].refresh()
        return await (await client.get("/metrics")).text()

    slow, fast = measured[4], measured[16]
    unmeasured = msgspec.structs.replace(slow, id=slow.id[:-4] + "0000", throughput=None)
    await _post(client, token, unmeasured)
    text = await metrics()
    assert f'hatang_indicator_goal_units{{{goal},state="not_judged"}} 1.0' in text
    assert f"hatang_indicator_goal_measured_ratio{{{goal}}} 0.0" in text

    await _post(client, token, slow)
    text = await metrics()
    assert f'hatang_indicator_goal_units{{{goal},state="not_attaining"}} 1.0' in text
    assert f'hatang_indicator_goal_units{{{goal},state="not_judged"}} 0.0' in text
    assert f"hatang_indicator_goal_measured_ratio{{{goal}}} 0.0" in text

    await _post(client, token, fast)  # median of 4 and 16 Mbit/s: about 10 Mbit/s
    text = await metrics()
    assert f'hatang_indicator_goal_units{{{goal},state="attaining"}} 1.0' in text
    units = _value(text, f'hatang_indicator_goal_units{{{goal},state="no_data"}}') + 1
    assert _value(text, f"hatang_indicator_goal_measured_ratio{{{goal}}}") == 1 / units
    assert f'hatang_indicator_goal_rule_info{{{goal},rule="reachable_and_broadband"}} 1.0' in text
    assert (
        'hatang_plan_broadband_threshold_bytes_per_second{plan="test-broadband",'
        'statistic="median"} 1e+06' in text
    )
    # Printed for the closing note (pytest -s shows it).
    excerpt = _lines(
        text,
        "hatang_indicator_goal_",
        "hatang_plan_broadband",
        "hatang_site_download",
        "hatang_site_throughput",
        'hatang_indicator_ratio{indicator="internet"',
    )
    print("\n".join(line for line in excerpt if "internet" in line or "broadband" in line
                    or "download" in line or "throughput" in line))  # fmt: skip
    assert json.dumps(excerpt)  # the excerpt is plain text

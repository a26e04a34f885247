"""Endpoint facts through the real ingest path: patches, managed antivirus and IPv6 reach
/metrics as computers_patched, antivirus_managed and ipv6 (docs/indicators.md)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.report import (
    AntivirusProduct,
    AntivirusStatus,
    PatchStatus,
    ProbeResult,
    Report,
    encode,
)
from collector.config import load_config
from collector.indicators import IndicatorSettings, patch_state
from tests.collector.conftest import (
    MakeClient,
    agent_report,
    new_token,
    promtool_check_metrics,
    write_config,
)
from tests.collector.test_api import auth, batch_body
from tests.collector.test_security_indicators import sample, scrape

PROMTOOL = shutil.which("promtool")
AN_BINH, BINH_MINH = "demo/xa-an-binh", "demo/xa-binh-minh"
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def endpoint(
    site: str,
    agent_id: str,
    *,
    installed: dt.datetime | None,
    reboot: bool = False,
    managed: bool | None = None,
    ipv6: list[str] = (),  # type: ignore[assignment]
    ipv6_up: bool | None = None,
) -> Report:
    """A report as the agent builds it, with the endpoint facts of one computer."""
    report = agent_report(site, agent_id=agent_id, hostname=agent_id)
    assert report.host is not None
    report.host.interfaces[0].mac = "02:00:00:00:%02x:01" % (hash(agent_id) % 256)
    report.host.interfaces[0].ipv6 = ["fe80::1", *ipv6]
    report.patches = PatchStatus(
        source="apt",
        last_installed_at=installed,
        reboot_pending=reboot,
        pending_updates=3,
        pending_security_updates=1 if installed is None or installed < NOW - 40 * DAY else 0,
    )
    products = (
        [AntivirusProduct(name="Kaspersky", source="service", state="protected", managed=managed)]
        if managed is not None
        else []
    )
    report.antivirus = AntivirusStatus(state="protected", products=products, managed=managed)
    if ipv6_up is not None:
        report.networks.internet.targets.append(
            ProbeResult(kind="tcp", target="v6-web", up=ipv6_up, family="ipv6")
        )
    return report


async def test_endpoint_indicators_on_metrics(make_client: MakeClient, tmp_path: Path) -> None:
    path = write_config(tmp_path, metrics={"refresh_interval": "1h"})
    client = await make_client(load_config(path))
    reports = {
        AN_BINH: [
            endpoint(AN_BINH, "pc-1", installed=NOW - 2 * DAY, managed=True,
                     ipv6=["2001:db8:41::10"], ipv6_up=True),
            endpoint(AN_BINH, "pc-2", installed=NOW - 3 * DAY, reboot=True, managed=False),
            endpoint(AN_BINH, "pc-3", installed=NOW - 45 * DAY, managed=None),
            endpoint(AN_BINH, "pc-4", installed=None, managed=True),
        ],
        BINH_MINH: [
            # A global address and an IPv6 check, but the check is down; a ULA only.
            endpoint(BINH_MINH, "pc-5", installed=NOW - DAY, managed=True,
                     ipv6=["2001:db8:42::10"], ipv6_up=False),
            endpoint(BINH_MINH, "pc-6", installed=NOW - DAY, managed=True, ipv6=["fd42::10"],
                     ipv6_up=True),
        ],
    }  # fmt: skip
    for site, batch in reports.items():
        token = await new_token(client, site)
        for report in batch:
            reply = await client.post(
                "/api/v1/reports", data=batch_body(report), headers=auth(token)
            )
            assert reply.status == 200, await reply.text()
    text = await scrape(client)

    def value(series: str) -> float | None:
        return sample(text, series)

    ratio = 'hatang_indicator_ratio{{indicator="{}",level="commune"}}'
    # current: pc-1, pc-5, pc-6 of 6 computers reporting patches.
    assert value(ratio.format("computers_patched")) == 3 / 6
    # managed: pc-1, pc-4, pc-5, pc-6; unmanaged pc-2; unknown pc-3 (in the denominator).
    assert value(ratio.format("antivirus_managed")) == 4 / 6
    # ipv6: An Bình attains (pc-1); Bình Minh does not (a down check, a ULA); Phường Hòa
    # Bình has no agent: not attaining, counted as no data.
    assert value(ratio.format("ipv6")) == 1 / 3
    units = 'hatang_indicator_units{{indicator="ipv6",level="commune",state="{}"}}'
    assert [value(units.format(s)) for s in ("attaining", "not_attaining", "no_data")] == [
        1,
        1,
        1,
    ]
    hosts = 'hatang_patch_hosts{{site="{}",state="{}"}}'
    assert [value(hosts.format(AN_BINH, s)) for s in
            ("current", "outdated", "reboot_pending", "unknown")] == [1, 1, 1, 1]  # fmt: skip
    assert value(f'hatang_patch_pending_security_hosts{{site="{AN_BINH}"}}') == 2
    managed = 'hatang_antivirus_managed_hosts{{site="{}",state="{}"}}'
    assert [value(managed.format(AN_BINH, s)) for s in ("managed", "unmanaged", "unknown")] == [
        2,
        1,
        1,
    ]
    v6 = 'hatang_ipv6_hosts{{site="{}",state="{}"}}'
    assert [value(v6.format(BINH_MINH, s)) for s in ("working", "address_only", "no_address")] == [
        0,
        1,
        1,
    ]
    assert value("hatang_patch_max_age_seconds") == 30 * 86400
    if os.environ.get("HATANG_SHOW_METRICS"):  # the excerpt quoted in reports
        wanted = ("computers_patched", "antivirus_managed", '"ipv6"', "hatang_patch_")
        wanted += ("managed_hosts", "hatang_ipv6_hosts")
        shown = [ln for ln in text.splitlines() if any(w in ln for w in wanted)]
        print("\n".join(ln for ln in shown if not ln.startswith("#")))
    if PROMTOOL:
        await promtool_check_metrics(PROMTOOL, text)


async def test_hostile_patches_section_is_a_422_naming_the_field(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client(load_config(write_config(tmp_path)))
    token = await new_token(client, AN_BINH)
    report = msgspec.to_builtins(endpoint(AN_BINH, "pc-1", installed=NOW))
    for bad, where in (
        ({"source": "windows-update", "pending_updates": -1}, "pending_updates"),
        ({"source": "chocolatey"}, "source"),
        ({"source": "apt", "recent": ["x"] * 17}, "recent"),
    ):
        report["patches"] = bad
        body = b'{"reports":[' + msgspec.json.encode(report) + b"]}"
        reply = await client.post("/api/v1/reports", data=body, headers=auth(token))
        assert reply.status == 422, await reply.text()  # the API's invalid_report answer
        assert (await reply.json())["field"] == f"$.reports[0].patches.{where}"
    assert encode(endpoint(AN_BINH, "pc-1", installed=NOW))  # the good one still encodes


@pytest.mark.parametrize(
    ("installed_days_ago", "reboot", "state"),
    [
        (None, False, "unknown"),
        (29.9, False, "current"),
        (30.1, False, "outdated"),
        (31, True, "outdated"),  # old and waiting for a restart: outdated first
        (1, True, "reboot_pending"),
    ],
)
def test_patch_state_rule(installed_days_ago: float | None, reboot: bool, state: str) -> None:
    installed = None if installed_days_ago is None else NOW - installed_days_ago * DAY
    status = PatchStatus(source="apt", last_installed_at=installed, reboot_pending=reboot)
    assert patch_state(status, NOW, IndicatorSettings().patch_max_age_seconds) == state


def test_security_inspection_is_judged_from_declared_dates() -> None:
    """Hà Nam's yearly inspection: an agency attains with a declared inspection within the
    last 366 days; an old one does not; an agency that declared nothing is no data."""
    from collector.indicators import build_snapshot, indicator_value
    from tests.collector.test_indicators import DEMO
    from tests.collector.test_security_indicators import declaration

    now = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)
    declared = [
        declaration("demo/so-tttt", "inspection_date", '"2025-11-20"', period="2026"),
        declaration("demo/van-phong-ubnd", "inspection_date", '"2024-11-20"', period="2026"),
    ]
    snap = build_snapshot(DEMO, [], IndicatorSettings(), now, [], [], {}, [], declarations=declared)
    value = next(
        v for v in snap.indicators if (v.indicator, v.level) == ("security_inspection", "agency")
    )
    assert (value.numerator, value.denominator, value.units_no_data) == (1, 2, 0)
    communes = [v for v in snap.sites if v.unit.level == "commune"]
    none = indicator_value("security_inspection", "commune", communes, 0.95, now.date())
    assert (none.ratio, none.units_no_data) == (0.0, len(communes))


@pytest.mark.netns
async def test_ipv6_indicator_from_a_real_agent_check_in_a_namespace(
    make_client: MakeClient, tmp_path: Path, topo: Any
) -> None:
    """A real ``hatang-agent check --json`` in a namespace with a documentation-prefix
    (global) IPv6 address and an IPv6 tcp check to its peer; its report, posted through
    the real ingest path, makes the unit attain ipv6 on /metrics."""
    import asyncio
    import sys

    from agent.report import decode_report
    from tests.conftest import REPO

    pc, peer = topo.add("pc"), topo.add("peer")
    pc_dev, peer_dev = topo.link(pc, peer, "10.27.0.1/24", "10.27.0.2/24")
    pc.ip("addr", "add", "2001:db8:27::1/64", "dev", pc_dev, "nodad")
    peer.ip("addr", "add", "2001:db8:27::2/64", "dev", peer_dev, "nodad")
    serve = [sys.executable, "-m", "tests.agent.probes.servers"]
    peer.popen([*serve, "tcp", "--bind", "2001:db8:27::2", "--port", "8443"], cwd=REPO)
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"site: {AN_BINH}\n"
        "networks:\n"
        '  lan: {targets: [{kind: tcp, address: "10.27.0.2:9", timeout: 1s}]}\n'
        '  internet: {targets: [{kind: tcp, address: "[2001:db8:27::2]:8443", family: ipv6,'
        " timeout: 2s}]}\n"
        "antivirus: {enabled: false}\npatches: {enabled: false}\n"
        f"spool: {{path: {tmp_path / 'spool.db'}}}\n",
        encoding="utf-8",
    )

    def check() -> Report:
        for _ in range(50):  # until the peer listens
            proc = pc.exec(sys.executable, "-m", "agent", "check", "--config", str(config),
                           "--json", check=False)  # fmt: skip
            report = decode_report(proc.stdout.encode())
            if report.networks.internet.up:
                return report
        raise AssertionError(proc.stdout[-2000:])

    report = await asyncio.to_thread(check)
    [result] = report.networks.internet.targets
    assert result.family == "ipv6" and result.up
    client = await make_client(load_config(write_config(tmp_path)))
    token = await new_token(client, AN_BINH)
    reply = await client.post("/api/v1/reports", data=batch_body(report), headers=auth(token))
    assert reply.status == 200, await reply.text()
    text = await scrape(client)
    assert sample(text, f'hatang_ipv6_hosts{{site="{AN_BINH}",state="working"}}') == 1
    assert sample(text, 'hatang_indicator_ratio{indicator="ipv6",level="commune"}') == 1 / 3

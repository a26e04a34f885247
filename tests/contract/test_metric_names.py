"""The DESIGN metric contract: names, types and label names are what dashboards and
alert rules rely on. Checked against the one table in ``collector.metrics``, against a
rendered exposition, with ``promtool check metrics``, and over HTTP on the real app."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.report import Batch, Networks, NetworkStatus, ProbeResult, Report, encode, new_report_id
from collector.metrics import METRICS, SNAPSHOT_METRICS, Exposition, HatangCollector, ReservedNames
from tests.collector.test_metrics import StaticSource, hostile_snapshot
from tests.conftest import REPO

# Transcribed from DESIGN.md "Collector metrics": name -> (type, label names).
DESIGN: dict[str, tuple[str, tuple[str, ...]]] = {
    "hatang_site_info": ("gauge", ("site", "name", "level", "parent")),
    "hatang_site_up": ("gauge", ("site",)),
    "hatang_site_last_report_timestamp_seconds": ("gauge", ("site",)),
    "hatang_network_up": ("gauge", ("site", "network")),
    "hatang_probe_rtt_seconds": ("gauge", ("site", "network", "target")),
    "hatang_probe_loss_ratio": ("gauge", ("site", "network", "target")),
    "hatang_lan_hosts": ("gauge", ("site", "source")),
    "hatang_antivirus_hosts": ("gauge", ("site", "state")),
    "hatang_indicator_ratio": ("gauge", ("indicator", "level")),
    "hatang_indicator_goal_ratio": ("gauge", ("indicator", "level", "plan")),
}
PROMTOOL = shutil.which("promtool")


def exposed(text: str) -> dict[str, tuple[str, set[frozenset[str]]]]:
    """Family name -> (type, the label-name sets of its samples)."""
    out: dict[str, tuple[str, set[frozenset[str]]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = (family.type, {frozenset(s.labels) for s in family.samples})
    return out


def test_the_table_holds_exactly_the_design_contract() -> None:
    table = {m.name: (m.type, m.labels) for m in METRICS if m.design}
    assert table == DESIGN
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    assert all(n.startswith("hatang_") for n in names)


def served_text() -> str:
    """What /metrics serves for the hostile snapshot (Exposition, not prometheus_client)."""
    registry = CollectorRegistry()
    registry.register(ReservedNames())
    return b"".join(Exposition(StaticSource(hostile_snapshot()), registry).body()).decode("utf-8")


@pytest.mark.parametrize("renderer", ["served", "collector"])
def test_rendered_exposition_matches_the_table(renderer: str) -> None:
    registry = CollectorRegistry()
    registry.register(HatangCollector(StaticSource(hostile_snapshot())))
    text = served_text() if renderer == "served" else generate_latest(registry).decode("utf-8")
    families = exposed(text)
    for spec in SNAPSHOT_METRICS:  # the registry-scope families: test_remote_write_metrics
        kind, label_sets = families[spec.name]
        assert kind == spec.type, spec.name
        assert label_sets <= {frozenset(spec.labels)}, spec.name
    for name in DESIGN:
        assert families[name][1], f"{name} has no sample in a populated snapshot"


def promtool_check(text: str) -> None:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


@pytest.mark.prometheus
@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_an_exposition_with_hostile_label_values() -> None:
    registry = CollectorRegistry()
    registry.register(HatangCollector(StaticSource(hostile_snapshot())))
    promtool_check(generate_latest(registry).decode("utf-8"))
    promtool_check(served_text())


def _hostile_report(site: str) -> Report:
    targets = [
        ProbeResult(kind="http", target='https://x/"}\n' + "z" * 400, up=True, rtt_seconds=0.05),
        ProbeResult(kind="icmp", target="10.17.0.1", up=True, rtt_seconds=0.002, loss_ratio=0.0),
    ]
    return Report(
        id=new_report_id(),
        agent_id="contract-pc",
        site=site,
        role="site-probe",
        seq=1,
        observed_at=dt.datetime.now(dt.UTC),
        interval_seconds=60.0,
        agent_version="test",
        networks=Networks(
            lan=NetworkStatus(configured=True, up=True, rule="any", targets=targets[1:]),
            internet=NetworkStatus(configured=True, up=True, rule="any", targets=targets[:1]),
        ),
    )


@pytest.mark.prometheus
async def test_real_metrics_endpoint_over_http(aiohttp_client: Any, tmp_path: Path) -> None:
    """The real app: an agent's report in, /metrics out, with the contract and promtool."""
    from collector import api
    from collector import app as app_module
    from collector.config import parse_config

    config = parse_config(
        {
            "listen": {"host": "127.0.0.1", "port": 0},
            "store": {"url": "sqlite:collector.db"},
            "org": str(REPO / "configs" / "org.demo.yaml"),
            "targets": [str(REPO / "configs" / "targets" / "thai-nguyen-2026.yaml")],
        },
        "contract.yaml",
        tmp_path,
    )
    app = app_module.create_app(config)
    client = await aiohttp_client(app)
    _, token = await app[api.STORE].create_token("demo/xa-an-binh")
    response = await client.post(
        "/api/v1/reports",
        data=encode(Batch(reports=[_hostile_report("demo/xa-an-binh")])),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()

    async def scrape() -> str:
        reply = await client.get("/metrics")
        assert reply.status == 200
        text: str = await reply.text()
        return text

    text = ""
    for _ in range(200):  # the snapshot refreshes soon after an ingest; poll, don't sleep long
        text = await scrape()
        if 'hatang_site_up{site="demo/xa-an-binh"} 1.0' in text:
            break
        await asyncio.sleep(0.05)
    assert 'hatang_site_up{site="demo/xa-an-binh"} 1.0' in text
    assert 'hatang_site_up{site="demo/xa-binh-minh"} 0.0' in text

    families = exposed(text)
    for name, (kind, labels) in DESIGN.items():
        if name in families:
            assert families[name][0] == kind
            assert families[name][1] <= {frozenset(labels)}, name
    for name in (
        "hatang_site_info",
        "hatang_site_up",
        "hatang_network_up",
        "hatang_probe_rtt_seconds",
        "hatang_indicator_ratio",
        "hatang_indicator_goal_ratio",
    ):
        assert families[name][1], f"{name} missing from the real /metrics"
    if PROMTOOL is not None:
        promtool_check(text)

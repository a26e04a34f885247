"""Declarations and security state in the snapshot: declared officials replace the org
file's count for the period in force (seen on a real collector's /metrics after a real
``declare import``), goals that name their officials basis, firewall states, and how long
computers have been unprotected."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from agent.report import FirewallStatus
from collector.app import BUILDER
from collector.config import load_config
from collector.indicators import build_snapshot
from collector.metrics import HatangCollector
from collector.period import parse_period
from collector.store import StoredDeclaration
from collector.targets import parse_plan
from tests.collector.conftest import (
    MakeClient,
    agent_report,
    new_token,
    promtool_check_metrics,
    run_cli,
    write_config,
)
from tests.collector.test_api import auth, batch_body
from tests.collector.test_indicators import DEMO, NOW, SETTINGS, make_agent
from tests.collector.test_metrics import StaticSource

PROMTOOL = shutil.which("promtool")
SO_TTTT = "demo/so-tttt"
RATIO = 'hatang_indicator_ratio{indicator="computers_per_official",level="agency"}'


def sample(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


async def scrape(client: TestClient[web.Request, web.Application]) -> str:
    assert client.app is not None
    await client.app[BUILDER].refresh()
    reply = await client.get("/metrics")
    assert reply.status == 200
    return await reply.text()


def declare_officials(config: Path, period: str, officials: int, tmp: Path) -> str:
    """``declare template`` → a unit fills in its officials → ``declare import`` (CLI)."""
    form = tmp / f"form-{period}.xlsx"
    made = run_cli("declare", "template", "--config", str(config), "--period", period,
                   "--unit", SO_TTTT, "--out", str(form))  # fmt: skip
    assert made.returncode == 0, made.stderr
    book = openpyxl.load_workbook(form)
    ws = book[book.sheetnames[1]]
    for row in ws.iter_rows():
        if len(row) > 3 and row[3].value == "officials":
            row[1].value = officials
    book.save(form)
    done = run_cli("declare", "import", "--config", str(config), str(form), "--by", "test")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


async def test_declared_officials_change_computers_per_official_on_metrics(
    make_client: MakeClient, tmp_path: Path
) -> None:
    path = write_config(tmp_path, metrics={"refresh_interval": "1h"})
    client = await make_client(load_config(path))
    token = await new_token(client, SO_TTTT)
    body = batch_body(agent_report(SO_TTTT, agent_id="pc-1"))
    reply = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert reply.status == 200, await reply.text()
    text = await scrape(client)
    # The org file: Sở TTTT 35 officials, Văn phòng UBND 60; one computer.
    assert sample(text, RATIO) == 1 / 95
    assert sample(text, f'hatang_site_officials{{site="{SO_TTTT}",source="org_file"}}') == 35
    assert sample(text, 'hatang_declarations_units{level="agency",state="declared"}') == 0

    this_year = dt.datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).year
    # A declaration for last year is history: the count in force does not change.
    assert await asyncio.to_thread(declare_officials, path, str(this_year - 1), 4, tmp_path) == "1"
    assert sample(await scrape(client), RATIO) == 1 / 95
    # This year's declaration is in force now.
    assert await asyncio.to_thread(declare_officials, path, str(this_year), 5, tmp_path) == "1"
    text = await scrape(client)
    assert sample(text, RATIO) == 1 / 65
    assert sample(text, f'hatang_site_officials{{site="{SO_TTTT}",source="declaration"}}') == 5
    assert sample(text, f'hatang_site_officials{{site="{SO_TTTT}",source="org_file"}}') is None
    assert sample(text, f'hatang_site_declared_facts{{site="{SO_TTTT}"}}') == 1
    assert sample(text, 'hatang_declarations_units{level="agency",state="declared"}') == 1
    assert sample(text, 'hatang_declarations_units{level="agency",state="not_declared"}') == 1
    assert sample(text, 'hatang_declarations_units{level="all",state="not_declared"}') == 5


def declaration(
    unit: str, key: str, value: str, period: str = "2025", at: float = 0.0, revision: int = 1
) -> StoredDeclaration:
    p = parse_period(period)
    return StoredDeclaration(
        unit=unit,
        period=p.name,
        period_start=p.start_ts,
        period_end=p.end_ts,
        key=key,
        revision=revision,
        value=value,
        declared_by="test",
        declared_at=dt.datetime.fromtimestamp(p.start_ts + at, dt.UTC),
        source="test",
        attachment_name=None,
        attachment_sha256=None,
    )


def test_a_goal_naming_its_officials_basis_leaves_out_units_counted_otherwise() -> None:
    plan = parse_plan(
        {
            "plan": "test-plan",
            "title": "t",
            "reference": "r",
            "goals": [
                {"indicator": "computers_per_official", "level": "agency", "goal": 1.0,
                 "deadline": 2026, "officials_basis": "all_officials"},
            ],
        }
    )  # fmt: skip
    agents = [make_agent(SO_TTTT, "a"), make_agent("demo/van-phong-ubnd", "b")]
    declared = [
        declaration(SO_TTTT, "officials", "10"),
        declaration(SO_TTTT, "officials_basis", '"professional_work"'),
    ]
    snap = build_snapshot(DEMO, [plan], SETTINGS, NOW, agents, [], {}, [], declarations=declared)
    [goal] = snap.goals
    assert goal.measured.denominator == 60 and goal.measured.units == 1  # Văn phòng UBND only
    ratio = next(
        v
        for v in snap.indicators
        if v.indicator == "computers_per_official" and v.level == "agency"
    )
    assert ratio.denominator == 70  # the indicator itself takes every count in force
    # A newer quarterly declaration overrides the yearly one while its quarter lasts.
    newer = [*declared, declaration(SO_TTTT, "officials", "12", period="2025-Q1", at=3600)]
    snap = build_snapshot(DEMO, [], SETTINGS, NOW, agents, [], {}, [], declarations=newer)
    view = next(v for v in snap.sites if v.unit.id == SO_TTTT)
    assert (view.officials, view.officials_source) == (12, "declaration")


def test_firewall_states_and_unprotected_age_on_metrics() -> None:
    day = 86400.0
    on = make_agent(SO_TTTT, "on", av="protected")
    off = make_agent(SO_TTTT, "off", av="disabled")
    old = make_agent(SO_TTTT, "old", av="missing", first_seen=NOW - dt.timedelta(days=40))
    fresh = make_agent(SO_TTTT, "fresh", av="outdated")
    unknown = make_agent(SO_TTTT, "unknown", av="unknown")
    on = _with_firewall(on, True)
    off = _with_firewall(off, False)
    fresh = _with_firewall(fresh, None)
    protected_until = {
        (SO_TTTT, "off"): NOW.timestamp() - 10 * day,  # last protected 10 days ago
        (SO_TTTT, "fresh"): NOW.timestamp() - 3600,  # an hour ago
    }
    snap = build_snapshot(
        DEMO, [], SETTINGS, NOW, [on, off, old, fresh, unknown], [], {}, [],
        protected_until=protected_until,
    )  # fmt: skip
    registry = CollectorRegistry()
    registry.register(HatangCollector(StaticSource(snap)))

    def get(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"site": SO_TTTT, **labels})

    assert get("hatang_firewall_hosts", state="enabled") == 1
    assert get("hatang_firewall_hosts", state="disabled") == 1
    assert get("hatang_firewall_hosts", state="unknown") == 1
    # "old" was never protected: unprotected since its first report, 40 days ago.
    assert get("hatang_antivirus_unprotected_hosts", over="1d") == 2
    assert get("hatang_antivirus_unprotected_hosts", over="7d") == 2
    assert get("hatang_antivirus_unprotected_hosts", over="30d") == 1
    since = get("hatang_antivirus_unprotected_since_timestamp_seconds")
    assert since == (NOW - dt.timedelta(days=40)).timestamp()
    assert (
        registry.get_sample_value(
            "hatang_antivirus_unprotected_since_timestamp_seconds", {"site": "demo/xa-an-binh"}
        )
        is None
    )
    if PROMTOOL is not None:  # the new families as Prometheus's own linter sees them
        asyncio.run(promtool_check_metrics(PROMTOOL, generate_latest(registry).decode()))


def _with_firewall(agent: object, enabled: bool | None) -> object:
    import dataclasses

    return dataclasses.replace(agent, firewall=FirewallStatus(enabled=enabled))  # type: ignore[type-var]

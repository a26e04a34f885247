"""The rules and dashboards against a real Prometheus scraping the real collector.

The collector app serves on 127.0.0.1 (port 0) with a snapshot refresh every second; two
agents report (one with a 1 s interval that then goes quiet, one with outdated antivirus
signatures); the Debian ``prometheus`` binary scrapes it every second and evaluates
``hatang-rules.yml`` (``for`` set to 0s in a test copy). Then: the recording rules have
values, every rule evaluates without error (joins on real label sets), the expected alerts
fire and no others for the wrong sites, and every dashboard query runs on real data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
import yaml
from aiohttp import ClientSession, ClientTimeout, web

from agent.report import Batch, PatchStatus, encode
from collector import api
from collector.app import SERVER_KWARGS, create_app
from collector.period import parse_period
from collector.store import NewDeclaration
from tests.collector.conftest import (
    OTHER_SITE,
    REPO,
    SITE,
    agent_report,
    collector_config,
    free_port,
)
from tests.dashboards.promql import DASHBOARDS, queries, rules, substitute

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus (Debian package) not installed"),
]
DEADLINE = 60.0  # generous for a loaded 2-core machine; typically done in under 15 s


def fast_rules(path: Path) -> Path:
    """A copy of the rules evaluated every second with every ``for`` set to 0s."""
    data = rules()
    for group in data["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    out = path / "hatang-rules.yml"
    out.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return out


class PrometheusServer:
    """The real ``prometheus`` binary on a free loopback port, scraping one collector."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "prometheus.log"
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, collector_port: int) -> None:
        assert PROMETHEUS is not None
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(fast_rules(self.workdir))],
            "scrape_configs": [
                {
                    "job_name": "hatang-collector",
                    "static_configs": [{"targets": [f"127.0.0.1:{collector_port}"]}],
                }
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self) -> str:
        """The end of Prometheus's log, for a failure message."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A Prometheus to start on a collector's port; killed after the test."""
    server = PrometheusServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def _api(session: ClientSession, url: str, path: str, **params: str) -> Any:
    async with session.get(f"{url}{path}", params=params) as reply:
        body = await reply.json()
        assert body["status"] == "success", body
        return body["data"]


async def _poll(check: Any, what: str, deadline: float, server: PrometheusServer) -> Any:
    while True:
        try:
            value = await check()
        except (OSError, AssertionError, ValueError):  # not up yet / no answer yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            tail = server.log_tail()
            raise AssertionError(f"timed out waiting for {what}; prometheus log:\n{tail}")
        await asyncio.sleep(0.25)


async def test_rules_and_dashboards_on_a_real_prometheus(
    tmp_path: Path, aiohttp_server: Any, prometheus: PrometheusServer
) -> None:
    config = collector_config(
        tmp_path,
        targets=[str(REPO / "configs" / "targets" / "thai-nguyen-2026.yaml")],
        metrics={"refresh_interval": "1s", "min_refresh_interval": "0s"},
    )
    app: web.Application = create_app(config)
    server = await aiohttp_server(app, **SERVER_KWARGS)
    store = app[api.STORE]
    quiet = msgspec.structs.replace(
        agent_report(SITE, agent_id="pc-quiet", antivirus="outdated"),
        interval_seconds=1.0,
        patches=PatchStatus(
            source="hotfix", last_installed_at=dt.datetime.now(dt.UTC), reboot_pending=True
        ),
    )
    steady = msgspec.structs.replace(
        agent_report(OTHER_SITE, agent_id="pc-steady", antivirus="protected"),
        interval_seconds=3600.0,
    )
    async with ClientSession(timeout=ClientTimeout(total=10)) as session:
        for report in (quiet, steady):
            _, token = await store.create_token(report.site, "test")
            async with session.post(
                f"http://127.0.0.1:{server.port}/api/v1/reports",
                data=encode(Batch(reports=[report])),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            ) as reply:
                assert reply.status == 200, await reply.text()

        # A unit's declaration for the period containing now (evidence coverage panels).
        year = parse_period(str(dt.datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).year))
        declared = NewDeclaration(
            SITE, year.name, year.start_ts, year.end_ts, "officials", "20", "test", "test"
        )
        assert await store.declare([declared], {}) == 1

        prometheus.start(server.port)
        url = prometheus.url
        deadline = time.monotonic() + DEADLINE

        async def sites_counted() -> Any:
            data = await _api(session, url, "/api/v1/query", query="level:hatang_sites:count")
            return {r["metric"]["level"]: r["value"][1] for r in data["result"]}

        counts = await _poll(
            sites_counted, "recording rule level:hatang_sites:count", deadline, prometheus
        )
        assert counts == {"province": "1", "agency": "2", "commune": "3"}

        async def firing() -> Any:
            data = await _api(session, url, "/api/v1/alerts")
            found = {
                (a["labels"]["alertname"], a["labels"].get("site"))
                for a in data["alerts"]
                if a["state"] == "firing"
            }
            wanted = {("HatangSiteSilent", SITE), ("HatangAntivirusOutdated", SITE)}
            return found if wanted <= found else None

        alerts = await _poll(
            firing, "HatangSiteSilent and HatangAntivirusOutdated", deadline, prometheus
        )
        # the steady site reports on time, units without agents are not "silent"
        assert ("HatangSiteSilent", OTHER_SITE) not in alerts
        assert not {a for a in alerts if a[0] == "HatangSiteSilent" and a[1] != SITE}
        assert ("HatangCollectorDown", None) not in alerts
        alert = next(
            a
            for a in (await _api(session, url, "/api/v1/alerts"))["alerts"]
            if a["labels"]["alertname"] == "HatangSiteSilent"
        )
        assert alert["labels"]["name"] == "Xã An Bình"
        assert alert["annotations"]["summary"].startswith("Xã An Bình không gửi báo cáo ")

        # every rule evaluated on real label sets without error (e.g. many-to-many joins)
        groups = (await _api(session, url, "/api/v1/rules"))["groups"]
        evaluated = [r for g in groups for r in g["rules"]]
        assert len(evaluated) == sum(len(g["rules"]) for g in rules()["groups"])
        broken = [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"]
        assert not broken

        values = {"site": SITE, "level": ".*", "plan": ".*", "job": "hatang-collector"}
        for path in DASHBOARDS:
            for query in queries(path):
                expr = substitute(query.expr, values)
                async with session.get(f"{url}/api/v1/query", params={"query": expr}) as reply:
                    body = await reply.json()
                assert body["status"] == "success", (query.where, expr, body)

        async def security() -> Any:
            found = {}
            for name, expr in (
                ("declared", 'max(hatang_declarations_units{level="all",state="declared"})'),
                (
                    "unprotected",
                    "sum(max by (site, state) (hatang_antivirus_hosts"
                    '{state=~"outdated|disabled|missing"}))',
                ),
                ("since", f'hatang_antivirus_unprotected_since_timestamp_seconds{{site="{SITE}"}}'),
                (
                    "reboot",
                    'sum(max by (site, state) (hatang_patch_hosts{state="reboot_pending"}))',
                ),
            ):
                result = (await _api(session, url, "/api/v1/query", query=expr))["result"]
                if not result:
                    return None
                found[name] = float(result[0]["value"][1])
            return found

        shown = await _poll(security, "the security dashboard's numbers", deadline, prometheus)
        assert shown["declared"] == 1 and shown["unprotected"] == 1
        assert shown["since"] <= time.time()
        assert shown["reboot"] == 1  # the patch panel's number, through a real Prometheus

        gap = await _api(
            session,
            url,
            "/api/v1/query",
            query='indicator_level_plan:hatang_indicator_goal_gap:ratio{indicator="lan",'
            'level="commune",plan="thai-nguyen-2026"}',
        )
        assert gap["result"], "goal gap recorded for the plan's lan/commune goal"

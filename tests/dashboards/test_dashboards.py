"""The Grafana dashboards as an importer and Prometheus see them: valid dashboard JSON that
imports into any Grafana (datasource variable), Vietnamese-with-English titles, and PromQL
that is valid (``promtool check rules``) and reads only metrics the collector exposes or the
rules record — so a renamed metric breaks this test, not the province's wall screen."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from collector import api
from collector.app import create_app
from tests.collector.conftest import collector_config
from tests.dashboards.promql import (
    DASHBOARDS,
    PROMETHEUS_BUILTIN,
    Query,
    load,
    metric_names,
    panels,
    queries,
    recorded_names,
    substitute,
)

PROMTOOL = shutil.which("promtool")
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
ALL_QUERIES = [q for path in DASHBOARDS for q in queries(path)]
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian package prometheus) not installed"
)


@pytest.fixture(scope="module")
def known_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Names a dashboard may read: what the real app's registry exposes (ingest metrics,
    build info, the METRICS table), the recording rules, and Prometheus's own series."""
    from tests.dashboards.promql import exposed_names

    app = create_app(collector_config(tmp_path_factory.mktemp("app")))
    registry: CollectorRegistry = app[api.REGISTRY]
    return exposed_names(registry) | recorded_names() | PROMETHEUS_BUILTIN


def test_the_dashboards_are_shipped() -> None:
    assert {p.name for p in DASHBOARDS} == {
        "hatang-province.json",
        "hatang-security.json",
        "hatang-site.json",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_model(path: Path) -> None:
    """uid/title/panels, a modern schema, unique panel ids, panels inside the 24-column grid."""
    board = load(path)
    assert board["uid"] == path.stem and len(board["uid"]) <= 40
    assert " / " in board["title"] and board["schemaVersion"] >= 39
    assert "hatang" in board["tags"]
    assert "__inputs" not in board and "id" not in board, "export for sharing, not a DB row"
    all_panels = list(panels(board))
    assert len([p for p in all_panels if p["type"] != "row"]) >= 10
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_datasource_is_a_variable(path: Path) -> None:
    """Every panel, target, query variable and annotation uses ``${datasource}``."""
    board = load(path)
    variables = board["templating"]["list"]
    ds_vars = [v for v in variables if v["name"] == "datasource"]
    assert len(ds_vars) == 1 and ds_vars[0]["type"] == "datasource"
    assert ds_vars[0]["query"] == "prometheus"
    for panel in panels(board):
        if panel["type"] in ("row", "text"):
            continue  # a text panel queries nothing
        assert panel["datasource"] == DS_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS_REF, panel["title"]
    for var in variables:
        if var["type"] == "query":
            assert var["datasource"] == DS_REF, var["name"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == DS_REF


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_titles_are_vietnamese_with_english(path: Path) -> None:
    board = load(path)
    for panel in panels(board):
        assert " / " in panel["title"], panel["title"]
        if panel["type"] != "row":
            assert " / " in panel.get("description", ""), panel["title"]
    for var in board["templating"]["list"]:
        assert " / " in var["label"], var["name"]


def test_site_dashboard_is_per_site() -> None:
    """The site dashboard picks a site by name and every panel is scoped to it."""
    board = load(next(p for p in DASHBOARDS if p.name == "hatang-site.json"))
    site = next(v for v in board["templating"]["list"] if v["name"] == "site")
    assert "hatang_site_info" in site["query"]["query"] and not site["includeAll"]
    for panel in panels(board):
        for target in panel.get("targets", []):
            if "hatang_indicator_up_threshold_ratio" in target["expr"]:
                continue  # a collector setting, the same for every site
            assert 'site="$site"' in target["expr"], (panel["title"], target["expr"])


def test_security_dashboard_covers_antivirus_firewall_patches_and_evidence() -> None:
    """Each part of the security dashboard reads its metrics, patch state and central
    management included (measured since issue 13: no "not measured" text is left)."""
    board = load(next(p for p in DASHBOARDS if p.name == "hatang-security.json"))
    exprs = " ".join(t["expr"] for p in panels(board) for t in p.get("targets", []))
    for name in (
        "hatang_antivirus_hosts",
        "hatang_antivirus_unprotected_hosts",
        "hatang_antivirus_unprotected_since_timestamp_seconds",
        "hatang_firewall_hosts",
        "hatang_declarations_units",
        "hatang_site_declared_facts",
        "hatang_site_officials",
        "hatang_site_state",
        "hatang_patch_hosts",
        'indicator="computers_patched"',
        'indicator="antivirus_managed"',
    ):
        assert name in exprs, name
    rows = [p["title"] for p in panels(board) if p["type"] == "row"]
    assert rows == [
        "Phần mềm diệt virus / Antivirus",
        "Tường lửa / Firewall",
        "Cập nhật bản vá / Patches",
        "Độ phủ bằng chứng / Evidence coverage",
    ]
    assert not [p for p in panels(board) if p["type"] == "text"]
    # Per-unit tables follow the level variable.
    tables = [p for p in panels(board) if p["type"] == "table"]
    assert all('level=~"$level"' in " ".join(t["expr"] for t in p["targets"]) for p in tables)


def test_province_links_sites_to_the_site_dashboard() -> None:
    board = load(next(p for p in DASHBOARDS if p.name == "hatang-province.json"))
    urls = [
        link["url"]
        for panel in panels(board)
        for override in panel.get("fieldConfig", {}).get("overrides", [])
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert urls and all(u.startswith("/d/hatang-site/") and "var-site=" in u for u in urls)


def test_every_expression_reads_only_known_metrics(known_names: set[str]) -> None:
    assert len(ALL_QUERIES) >= 40
    unknown = {
        (q.dashboard, q.where, name)
        for q in ALL_QUERIES
        for name in metric_names(substitute(q.expr))
        if name not in known_names
    }
    assert not unknown, sorted(unknown)
    read = {name for q in ALL_QUERIES for name in metric_names(substitute(q.expr))}
    design = {
        "hatang_site_info",
        "hatang_site_up",
        "hatang_site_last_report_timestamp_seconds",
        "hatang_network_up",
        "hatang_probe_rtt_seconds",
        "hatang_probe_loss_ratio",
        "hatang_lan_hosts",
        "hatang_antivirus_hosts",
        "hatang_indicator_ratio",
        "hatang_indicator_goal_ratio",
    }
    assert design <= read, f"DESIGN metrics on no dashboard: {design - read}"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (level) (rate(hatang_x_total{a="b"}[5m]))', {"hatang_x_total"}),
        ("a:b:c * on (site) group_left (name) max by (site, name) (info)", {"a:b:c", "info"}),
        (
            'histogram_quantile(0.95, sum by (le) (rate(h_bucket{j=~"$job"}[$__rate_interval])))',
            {"h_bucket"},
        ),
        ("x offset 1h > bool 1e3 and y unless count(z) by (q)", {"x", "y", "z"}),
        ('label_replace(up, "dst", "$1", "src", "(.*)") or vector(0)', {"up"}),
        ("time() - max(ts) < scalar(year())", {"ts"}),
    ],
)
def test_metric_name_lexer(expr: str, names: set[str]) -> None:
    """The lexer the name check relies on finds exactly the metric names."""
    assert metric_names(substitute(expr)) == names


def _promtool_check(exprs: list[Query], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    groups: dict[str, list[dict[str, Any]]] = {}
    for i, query in enumerate(exprs):
        rule = {"record": f"check:expr:{i}", "expr": substitute(query.expr)}
        groups.setdefault(query.dashboard, []).append(rule)
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": name, "rules": rules} for name, rules in groups.items()]},
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    return subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.prometheus
@needs_promtool
def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    proc = _promtool_check(ALL_QUERIES, tmp_path)
    listing = "\n".join(f"check:expr:{i} = {q.where}: {q.expr}" for i, q in enumerate(ALL_QUERIES))
    assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\n{listing}"
    assert f"SUCCESS: {len(ALL_QUERIES)} rules found" in proc.stdout


@pytest.mark.prometheus
@needs_promtool
def test_the_syntax_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The check above is not vacuous: promtool fails on a bad panel query."""
    bad = Query("bad.json", "panel 1", 'sum by (site (hatang_site_up{site="$site"})')
    proc = _promtool_check([bad], tmp_path)
    assert proc.returncode != 0 and "check:expr:0" in proc.stdout + proc.stderr


def test_province_says_when_broadband_is_not_judged() -> None:
    """Without a plan threshold the internet indicator is reachability: the wall says so."""
    province = next(p for p in DASHBOARDS if p.name == "hatang-province.json")
    shown = [
        panel
        for panel in panels(load(province))
        if any(
            "hatang_plan_broadband_threshold_bytes_per_second" in t.get("expr", "")
            for t in panel.get("targets", [])
        )
    ]
    assert shown, "a panel shows the plans' broadband thresholds"
    no_value = shown[0]["fieldConfig"]["defaults"]["noValue"]
    assert no_value == "chưa đánh giá băng rộng / broadband not judged"
    exprs = " ".join(q.expr for q in queries(province))
    for name in ("hatang_indicator_goal_units", "hatang_site_download_bytes_per_second",
                 "hatang_site_network_bytes", "hatang_site_network_used"):  # fmt: skip
        assert name in exprs, name

"""The Prometheus rules as an operator relies on them: promtool accepts them and the
example config, every alert is unit-tested both firing and silent, and every alert tells
officials (Vietnamese) and engineers (English) what happened."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.dashboards.promql import (
    PROMETHEUS_EXAMPLE,
    RULES,
    RULES_TEST,
    alert_names,
    rules,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian package prometheus) not installed"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=RULES_TEST.parent
    )


@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "WARNING" not in proc.stdout + proc.stderr


@pytest.mark.prometheus
@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    proc = promtool("test", "rules", RULES_TEST.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.prometheus
@needs_promtool
def test_example_prometheus_config_loads_the_rules() -> None:
    proc = promtool("check", "config", str(PROMETHEUS_EXAMPLE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout
    config = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text(encoding="utf-8"))
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    down = next(
        r for g in rules()["groups"] for r in g["rules"] if r.get("alert") == "HatangCollectorDown"
    )
    assert jobs == ["hatang-collector"] and 'job="hatang-collector"' in down["expr"]


def _alert_cases() -> dict[str, dict[str, int]]:
    """Alert name -> how many test cases expect it firing and silent."""
    data: dict[str, Any] = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert data["rule_files"] == ["../../configs/prometheus/hatang-rules.yml"]
    cases: dict[str, dict[str, int]] = {}
    for test in data["tests"]:
        for case in test.get("alert_rule_test", []):
            seen = cases.setdefault(case["alertname"], {"fires": 0, "silent": 0})
            seen["fires" if case.get("exp_alerts") else "silent"] += 1
    return cases


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = _alert_cases()
    names = alert_names()
    assert len(names) == len(set(names)) >= 12
    missing = {n: cases.get(n) for n in names if not cases.get(n, {}).get("fires")}
    missing |= {n: cases.get(n) for n in names if not cases.get(n, {}).get("silent")}
    assert not missing, f"alerts without a firing and a non-firing test: {missing}"
    assert set(cases) <= set(names), "tests for alerts that do not exist"


def test_every_recording_rule_is_used_or_tested() -> None:
    """A recording rule nobody reads is dead weight; each has a promql_expr_test or a reader."""
    data: dict[str, Any] = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    tested = {
        case["expr"].split("{")[0]
        for test in data["tests"]
        for case in test.get("promql_expr_test", [])
    }
    records = [r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r]
    text = RULES.read_text(encoding="utf-8")
    from tests.dashboards.promql import DASHBOARDS

    dashboards = "".join(p.read_text(encoding="utf-8") for p in DASHBOARDS)
    for record in records:
        read_by_alert = text.count(record) > 1
        assert record in tested or read_by_alert or record in dashboards, record


@pytest.mark.parametrize("name", alert_names())
def test_alert_has_severity_and_bilingual_annotations(name: str) -> None:
    rule = next(r for g in rules()["groups"] for r in g["rules"] if r.get("alert") == name)
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    for key in ("summary", "description"):
        text = rule["annotations"][key]
        vietnamese, _, english = text.partition(" / ")
        assert vietnamese and english, f"{name} {key}: 'Vietnamese / English' expected"
        assert any(
            ch in vietnamese for ch in "ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ"
        )
    if rule["labels"]["severity"] == "info":
        assert rule.get("for"), f"{name}: info alerts wait before they fire"

"""What the dashboard and rule tests share: the files, the PromQL found in dashboards,
the metric names an expression reads, and the names the collector exposes.

Metric names are found by a small lexer rather than a PromQL parser: strings, label
matchers, ranges, offsets and the label lists of ``by``/``on``/``group_left``... are
removed, and an identifier that is not followed by ``(`` (a function or aggregation) and
is not a keyword is a metric or recording-rule name. Syntax itself is left to promtool.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from collector.metrics import METRICS
from tests.conftest import REPO

DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
RULES = REPO / "configs" / "prometheus" / "hatang-rules.yml"
RULES_TEST = Path(__file__).with_name("hatang-rules.test.yml")
PROMETHEUS_EXAMPLE = REPO / "configs" / "prometheus" / "prometheus.example.yml"
# Series that Prometheus itself makes: the scrape health and the alerts' own series.
PROMETHEUS_BUILTIN = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*(?![\w:])")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "offset", "inf", "nan", "start", "end"}
)
_GRAFANA_INTERVAL = re.compile(r"\$\{?__\w+\}?")
_GRAFANA_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.+),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.+)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard and where it is."""

    dashboard: str
    where: str
    expr: str


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(path: Path) -> list[Query]:
    """Every PromQL expression of a dashboard: panel targets, variables, annotations."""
    dashboard, name, found = load(path), path.name, []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} target {target.get('refId')}"
            found.append(Query(name, where, target["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = _LABEL_VALUES.match(query) or _QUERY_RESULT.match(query)
        if match:
            found.append(Query(name, f"variable {var['name']}", match["expr"]))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            found.append(Query(name, f"annotation {annotation['name']!r}", annotation["expr"]))
    return found


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """Grafana variables → concrete text: intervals become 5m, others a value (default x)."""
    values = values or {}
    expr = _GRAFANA_INTERVAL.sub("5m", expr)
    return _GRAFANA_VAR.sub(lambda m: values.get(m[1] or m[2], "x"), expr)


def metric_names(expr: str) -> set[str]:
    """Metric and recording-rule names that a PromQL expression reads."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    while True:  # `sum by (a) (x)` and nested label lists
        stripped = _LABEL_LIST.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    names = set()
    for match in _IDENT.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match[0].lower() in _KEYWORDS:
            continue
        names.add(match[0])
    return names


def rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return data


def recorded_names() -> set[str]:
    return {r["record"] for g in rules()["groups"] for r in g["rules"] if "record" in r}


def alert_names() -> list[str]:
    return [r["alert"] for g in rules()["groups"] for r in g["rules"] if "alert" in r]


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Sample names a scrape of ``registry`` can show, plus every name of the METRICS table
    (some families have no sample until agents report)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names: set[str] = set()
    for family in registry.collect():  # a labelled family has no sample before first use
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    for spec in METRICS:
        names.add(f"{spec.name}_total" if spec.type == "counter" else spec.name)
    return names

"""Closed sets of names are written once; where a second list must exist, it equals the first.

Each set is a ``Literal`` and its tuple is derived with ``get_args``. What cannot be
derived is tied here: the probe registry (a mapping to code), the label tables of the
readable ``check`` output, the indicators documented in docs/indicators.md, and the
indicator of each network class.
"""

from __future__ import annotations

import re
from typing import get_args

import msgspec

from agent import render
from agent.probes import PROBES
from agent.report import (
    AV_STATES,
    ERROR_REASONS,
    HOST_SOURCES,
    NETWORK_CLASSES,
    PROBE_KINDS,
    NetworkClass,
    Report,
)
from collector.indicators import UNIT_INDICATORS
from collector.org import LEVELS
from collector.targets import GOAL_LEVELS, INDICATORS
from tests.conftest import REPO
from tests.e2e.province import UNIT_CLASS


def test_probe_registry_is_the_design_set_of_kinds() -> None:
    """DESIGN contract: icmp, tcp, dns, http; each kind's options carry its own tag."""
    assert set(PROBES) == set(PROBE_KINDS) == {"icmp", "tcp", "dns", "http"}
    for kind, (options, _probe) in PROBES.items():
        assert options.__struct_config__.tag == kind


def test_network_classes_and_goal_levels() -> None:
    """DESIGN contract: exactly four classes; a goal's level is an org level or "all"."""
    assert get_args(NetworkClass) == ("lan", "wan", "dedicated", "internet")
    assert (*LEVELS, "all") == GOAL_LEVELS


def test_readable_output_has_a_label_for_every_name() -> None:
    assert set(render.NETWORK_LABELS) == set(NETWORK_CLASSES)
    assert set(render.REASONS) == set(ERROR_REASONS)
    assert set(render.AV_STATE_LABELS) == set(AV_STATES)


def test_each_network_class_has_its_unit_indicator() -> None:
    assert set(UNIT_INDICATORS) <= set(INDICATORS)
    assert sorted(UNIT_INDICATORS.values()) == sorted(NETWORK_CLASSES)
    assert dict(UNIT_INDICATORS) == UNIT_CLASS  # the end-to-end truth's own copy


def test_docs_describe_exactly_the_indicators() -> None:
    """docs/indicators.md: one section per indicator (network ones share a heading)."""
    text = (REPO / "docs" / "indicators.md").read_text(encoding="utf-8")
    network = re.search(r"^## Network indicators: (.+)$", text, re.MULTILINE)
    assert network is not None
    network_ids = re.findall(r"`([a-z_]+)`", network.group(1))
    computer_ids = re.findall(r"^### `([a-z0-9_]+)`$", text, re.MULTILINE)
    assert network_ids == list(UNIT_INDICATORS)
    assert sorted(network_ids + computer_ids) == sorted(INDICATORS)


def test_wire_schema_uses_the_same_sets() -> None:
    """The JSON Schema (generated from the structs) lists the Literal values as enums."""
    schema = msgspec.json.schema(Report)
    enums = {tuple(sorted(d["enum"])) for d in _walk(schema) if "enum" in d}
    for names in (AV_STATES, HOST_SOURCES, ERROR_REASONS, PROBE_KINDS):
        assert tuple(sorted(names)) in enums


def _walk(node: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found

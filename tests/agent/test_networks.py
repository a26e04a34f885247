"""How classes are planned and folded: rules, unconfigured classes, the default gateway."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import parse_config
from agent.networks import (
    GATEWAY_FALLBACK_PORTS,
    Plan,
    down_networks,
    fold,
    plan_network,
    plan_networks,
)
from agent.probes import icmp
from agent.report import Networks, ProbeResult
from agent.route import DefaultRoute, RouteError

GATEWAY4 = DefaultRoute("10.21.1.1", 4, "eth0", 0)
GATEWAY6 = DefaultRoute("fe80::1%eth0", 6, "eth0", 1024)


def config(networks: dict[str, Any]) -> Any:
    return parse_config({"site": "bac-kan/cho-don/bang-lung", "networks": networks})


def result(up: bool) -> ProbeResult:
    return ProbeResult(kind="tcp", target="x:1", up=up, error=None if up else "timeout")


@pytest.mark.parametrize(
    ("rule", "ups", "expected"),
    [
        ("any", [True, False], True),
        ("any", [False, False], False),
        ("all", [True, True], True),
        ("all", [True, False], False),
    ],
)
def test_rules(rule: str, ups: list[bool], expected: bool) -> None:
    plan = Plan(configured=True, rule=rule)  # type: ignore[arg-type]
    status = fold(plan, [result(u) for u in ups])
    assert (status.configured, status.up, status.rule) == (True, expected, rule)
    assert [t.up for t in status.targets] == ups


@pytest.mark.parametrize("section", [None, {"targets": []}])
def test_class_without_targets_is_not_configured_never_down(section: Any) -> None:
    networks = {"lan": {"targets": [{"kind": "tcp", "address": "10.21.1.1:53"}]}}
    if section is not None:
        networks["wan"] = section
    plan = plan_network("wan", config(networks), [GATEWAY4])
    status = fold(plan, [])
    assert (status.configured, status.up, status.rule, status.targets) == (False, None, None, [])


def test_configured_targets_are_used_as_given() -> None:
    cfg = config(
        {"dedicated": {"rule": "all", "targets": [{"kind": "icmp", "address": "10.23.0.5"}]}}
    )
    plan = plan_network("dedicated", cfg, [GATEWAY4])
    assert plan.configured and plan.rule == "all" and not plan.default_gateway
    assert [t.address for t in plan.targets] == ["10.23.0.5"]


@pytest.mark.parametrize("lan", [None, {"targets": []}, {"rule": "all"}])
def test_lan_without_targets_probes_the_default_gateways(lan: Any) -> None:
    cfg = config({} if lan is None else {"lan": lan})
    plan = plan_network(
        "lan", cfg, [GATEWAY6, GATEWAY4, DefaultRoute("10.21.9.1", 4, "wlan0", 600)]
    )
    assert plan.configured and plan.default_gateway
    assert plan.rule == ("all" if lan and lan.get("rule") == "all" else "any")
    assert [t.address for t in plan.targets] == ["10.21.1.1", "fe80::1%eth0"]
    for target in plan.targets:
        assert isinstance(target, icmp.Options)
        assert target.fallback_ports == GATEWAY_FALLBACK_PORTS
    status = fold(plan, [result(True), result(False)])
    assert status.default_gateway is True and status.up is (plan.rule == "any")


def test_no_default_route_is_lan_down() -> None:
    plan = plan_network("lan", config({}), [])
    status = fold(plan, [])
    assert (status.configured, status.up, status.default_gateway) == (True, False, True)
    [target] = status.targets
    assert (target.target, target.error, target.detail) == (
        "default gateway",
        "unreachable",
        "no default route",
    )


def test_unreadable_routing_table_is_unknown_not_down() -> None:
    plan = plan_network("lan", config({}), RouteError("not supported on sunos5"))
    status = fold(plan, [])
    assert (status.configured, status.up) == (False, None)
    assert status.targets[0].detail == "cannot detect the default gateway: not supported on sunos5"


def test_plan_networks_covers_every_class_and_down_networks() -> None:
    cfg = config({"wan": {"targets": [{"kind": "tcp", "address": "10.22.0.10:8443"}]}})
    plans = plan_networks(cfg, [GATEWAY4])
    assert list(plans) == ["lan", "wan", "dedicated", "internet"]
    networks = Networks(
        lan=fold(plans["lan"], [result(True)]),
        wan=fold(plans["wan"], [result(False)]),
        dedicated=fold(plans["dedicated"], []),
        internet=fold(plans["internet"], []),
    )
    assert down_networks(networks) == ["wan"]

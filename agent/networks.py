"""The four network classes: which targets each one probes and how results fold into
``NetworkStatus``.

Rules, per class:

- Targets configured: the class is ``configured``; ``rule: any`` (default) makes it up
  when at least one target answers, ``rule: all`` when every target does.
- No targets (class absent, or ``targets: []``): ``configured=False, up=None``. A class
  nobody asked about is never reported as down.
- ``lan`` without targets probes the default gateway(s) from the routing table
  (IPv4 and IPv6, best metric of each; icmp with a TCP fallback to ports the office
  router commonly listens on), and marks the status ``default_gateway=True``.
  No default route at all: ``configured=True, up=False`` with one target result
  ``error="unreachable", detail="no default route"``: a computer without a default
  route cannot reach anything beyond its own segment, and that is the finding.
  The routing table cannot be read (an unsupported OS): ``configured=False, up=None``
  with one target result saying why; hatang does not know, so it does not say down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from agent.config import AgentConfig
from agent.probes import icmp
from agent.probes.base import TargetOptions
from agent.report import (
    NETWORK_CLASSES,
    NetworkClass,
    Networks,
    NetworkStatus,
    ProbeResult,
    Rule,
)
from agent.route import DefaultRoute, RouteError, default_gateways
from agent.units import Duration

# Office routers answer ICMP almost always; when the agent may not send ICMP these are
# the ports a router most often has open or actively refuses (DNS relay, web UI, SSH).
GATEWAY_FALLBACK_PORTS: Final = [53, 80, 443, 22]
GATEWAY_TIMEOUT: Final = Duration(3.0)
NO_GATEWAY_TARGET: Final = "default gateway"


@dataclass(frozen=True)
class Plan:
    """What one class will do in a check: the targets to probe, or a known outcome."""

    configured: bool
    rule: Rule | None = None
    targets: Sequence[TargetOptions] = ()
    preset: Sequence[ProbeResult] = ()  # results known without probing (e.g. no route)
    default_gateway: bool = False


def gateway_targets(routes: Sequence[DefaultRoute]) -> list[TargetOptions]:
    """The icmp targets that check the LAN through its default gateway(s)."""
    return [
        icmp.Options(
            address=route.gateway,
            timeout=GATEWAY_TIMEOUT,
            fallback_ports=list(GATEWAY_FALLBACK_PORTS),
        )
        for route in default_gateways(list(routes))
    ]


def plan_network(
    network: NetworkClass,
    config: AgentConfig,
    routes: Sequence[DefaultRoute] | RouteError,
) -> Plan:
    """Decide what ``network`` probes in this check (``routes`` only matters for lan)."""
    section = config.networks.get(network)
    rule: Rule = section.rule if section is not None else "any"
    if section is not None and section.targets:
        return Plan(configured=True, rule=rule, targets=list(section.targets))
    if network != "lan":
        return Plan(configured=False)
    if isinstance(routes, RouteError):
        unknown = ProbeResult(
            kind="icmp",
            target=NO_GATEWAY_TARGET,
            up=False,
            error="network_error",
            detail=f"cannot detect the default gateway: {routes}",
        )
        return Plan(configured=False, preset=[unknown], default_gateway=True)
    targets = gateway_targets(routes)
    if not targets:
        missing = ProbeResult(
            kind="icmp",
            target=NO_GATEWAY_TARGET,
            up=False,
            error="unreachable",
            detail="no default route",
        )
        return Plan(
            configured=True,
            rule=rule,
            preset=[missing],
            default_gateway=True,
        )
    return Plan(configured=True, rule=rule, targets=targets, default_gateway=True)


def plan_networks(
    config: AgentConfig, routes: Sequence[DefaultRoute] | RouteError
) -> dict[NetworkClass, Plan]:
    """The plan of every class, in the DESIGN order."""
    return {network: plan_network(network, config, routes) for network in NETWORK_CLASSES}


def fold(plan: Plan, results: Sequence[ProbeResult]) -> NetworkStatus:
    """Combine the probe results of one class into its status."""
    every = [*plan.preset, *results]
    if not plan.configured:
        return NetworkStatus(configured=False, targets=every, default_gateway=plan.default_gateway)
    if not results:
        up = False  # configured but nothing could be probed (lan without a default route)
    elif plan.rule == "all":
        up = all(r.up for r in results)
    else:
        up = any(r.up for r in results)
    return NetworkStatus(
        configured=True,
        up=up,
        rule=plan.rule,
        targets=every,
        default_gateway=plan.default_gateway,
    )


def down_networks(networks: Networks) -> list[NetworkClass]:
    """The configured classes that are down (what makes ``check`` exit 1)."""
    return [n for n in NETWORK_CLASSES if networks.get(n).configured and not networks.get(n).up]

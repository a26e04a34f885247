"""The parts of a report and how each is collected: the one table the scheduler and
``check`` both read.

Each section has its own interval. ``networks`` runs every ``interval`` and each run
produces a report; the other sections refresh on their own intervals and a report
carries a section only when it was collected since the previous report (the collector
keeps the latest of each). Heavy modules (scapy, pysnmp) are imported inside the
collect functions of the site-probe sections, so the host role never loads them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from agent import __version__
from agent.config import AgentConfig
from agent.log import log_exception_limited
from agent.probes.blocking import INVENTORY
from agent.report import Report, new_report_id

log = logging.getLogger(__name__)

SectionName = Literal["networks", "host", "antivirus", "patches", "lan_hosts", "snmp", "throughput"]


@dataclass(frozen=True, slots=True)
class Section:
    """One report section: when it runs and how it is collected."""

    name: SectionName
    enabled: Callable[[AgentConfig], bool]
    interval: Callable[[AgentConfig], float]
    collect: Callable[[AgentConfig], Awaitable[Any]]
    # How a one-shot ``check`` collects it, when that differs: the daemon sweeps and
    # takes inventory in child processes to give scapy's and psutil's memory back, a
    # short-lived check needs no child.
    collect_once: Callable[[AgentConfig], Awaitable[Any]] | None = None


async def _networks(config: AgentConfig) -> Any:
    from agent.runner import check_networks

    return await check_networks(config)


# Inventory and posture block in psutil, WMI and commands (a stale network drive can
# hang a disk query): their own lane keeps them off the threads the spool and the
# sender share, and a hung one cannot hold up the daemon's exit. The daemon collects
# them in a short-lived child (agent.inventory.child: psutil's memory leaves with it);
# a one-shot ``check`` collects them in its own process.


async def _in_child(request: Any) -> Any:
    from agent.inventory.child import collect_in_child

    return await INVENTORY.run(request.part, functools.partial(collect_in_child, request))


async def _host(config: AgentConfig) -> Any:
    from agent.inventory.child import Request

    return await _in_child(Request("host"))


async def _host_once(config: AgentConfig) -> Any:
    from agent.inventory.host import collect

    return await INVENTORY.run("host", collect)


async def _antivirus(config: AgentConfig) -> Any:
    from agent.inventory.child import Request

    return await _in_child(Request("antivirus", antivirus=config.antivirus))


async def _antivirus_once(config: AgentConfig) -> Any:
    """Antivirus and firewall together: one security posture, one interval."""
    from agent.inventory.antivirus import detect
    from agent.inventory.firewall import detect as detect_firewall

    antivirus, firewall = await asyncio.gather(
        INVENTORY.run("antivirus", functools.partial(detect, config.antivirus)),
        INVENTORY.run(
            "firewall", functools.partial(detect_firewall, config.antivirus.command_timeout)
        ),
    )
    return antivirus, firewall


async def _patches(config: AgentConfig) -> Any:
    from agent.inventory.child import Request

    return await _in_child(Request("patches", patches=config.patches))


async def _patches_once(config: AgentConfig) -> Any:
    from agent.inventory.patches import detect

    return await INVENTORY.run("patches", functools.partial(detect, config.patches))


async def _lan_hosts(config: AgentConfig) -> Any:
    from agent.discovery import discover_in_child

    return await discover_in_child(config)


async def _lan_hosts_once(config: AgentConfig) -> Any:
    from agent.discovery import discover

    return await discover(config)


_usage: Any = None  # agent.snmp.usage.UsageTracker, made on the first poll (site probe only)


async def _snmp(config: AgentConfig) -> Any:
    global _usage
    from agent.snmp.poller import poll_devices
    from agent.snmp.usage import UsageTracker

    if _usage is None:
        _usage = UsageTracker()
    return await poll_devices(config.snmp, _usage)


async def _throughput(config: AgentConfig) -> Any:
    from agent.throughput import measure

    return await measure(config)


def _throughput_enabled(config: AgentConfig) -> bool:
    settings = config.throughput
    return settings.enabled and bool(settings.targets) and config.role in settings.roles


def _site_probe(config: AgentConfig) -> bool:
    return config.role == "site-probe"


SECTIONS: Final[tuple[Section, ...]] = (
    Section("networks", lambda c: True, lambda c: c.interval, _networks),
    Section(
        "host", lambda c: c.inventory.enabled, lambda c: c.inventory.interval, _host, _host_once
    ),
    Section(
        "antivirus",
        lambda c: c.antivirus.enabled,
        lambda c: c.antivirus.interval,
        _antivirus,
        _antivirus_once,
    ),
    # Package managers take seconds to minutes: hours apart, each command under a timeout.
    Section(
        "patches",
        lambda c: c.patches.enabled,
        lambda c: c.patches.interval,
        _patches,
        _patches_once,
    ),
    Section(
        "lan_hosts",
        lambda c: _site_probe(c) and c.discovery.enabled,
        lambda c: c.discovery.interval,
        _lan_hosts,
        _lan_hosts_once,
    ),
    Section(
        "snmp",
        lambda c: _site_probe(c) and bool(c.snmp.devices),
        lambda c: c.snmp.interval,
        _snmp,
    ),
    # Sparse and alone: the scheduler never starts a run while the previous one goes on.
    Section("throughput", _throughput_enabled, lambda c: c.throughput.interval, _throughput),
)


def enabled_sections(config: AgentConfig) -> list[Section]:
    """The sections this agent's role and config turn on."""
    return [s for s in SECTIONS if s.enabled(config)]


def report_fields(results: dict[SectionName, Any]) -> dict[str, Any]:
    """Map collected section results onto ``Report`` keyword arguments."""
    fields: dict[str, Any] = {}
    for name, value in results.items():
        if name == "antivirus":
            fields["antivirus"], fields["firewall"] = value
        else:
            fields[name] = value
    return fields


async def collect(config: AgentConfig, section: Section, *, once: bool = False) -> Any | None:
    """Run one section (``once``: for a one-shot ``check``); a failure is logged and
    yields None, never an exception."""
    how = section.collect_once if once and section.collect_once else section.collect
    try:
        return await how(config)
    except Exception as exc:
        log_exception_limited(log, "section.failed", exc, section=section.name)
        return None


async def collect_all(config: AgentConfig) -> dict[SectionName, Any]:
    """Run every enabled section once, concurrently (``check``)."""
    sections = enabled_sections(config)
    values = await asyncio.gather(*(collect(config, s, once=True) for s in sections))
    return {s.name: v for s, v in zip(sections, values, strict=True) if v is not None}


def make_report(
    config: AgentConfig,
    *,
    agent_id: str,
    seq: int,
    observed_at: dt.datetime,
    results: dict[SectionName, Any],
    spool_dropped: int = 0,
    duration_seconds: float | None = None,
) -> Report:
    """Assemble a report from collected sections (the one place that builds reports)."""
    return Report(
        id=new_report_id(),
        agent_id=agent_id,
        site=config.site,
        role=config.role,
        seq=seq,
        observed_at=observed_at,
        interval_seconds=float(config.interval),
        agent_version=__version__,
        duration_seconds=duration_seconds,
        spool_dropped=spool_dropped,
        **report_fields(results),
    )

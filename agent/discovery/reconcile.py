"""Merge what ARP, SNMP and agents saw into one host per machine, and count them.

A machine is identified by its MAC. A computer running the agent may have several
NICs (Ethernet and Wi-Fi); the agent reports all its MACs, and every MAC of one agent
folds into one host, so the machine counts once. Pure Python, no scapy: the collector
can reuse ``merge`` when it adds the other agents of the site.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.report import HOST_SOURCES, HostKind, HostSource, LanHost, LanHostCounts

SOURCE_ORDER: tuple[HostSource, ...] = HOST_SOURCES


def normalise_mac(mac: str) -> str | None:
    """``AA-BB-CC-DD-EE-FF`` / ``aabb.ccdd.eeff`` → ``aa:bb:cc:dd:ee:ff``; None if not unicast."""
    digits = "".join(c for c in mac.lower() if c in "0123456789abcdef")
    if len(digits) != 12 or digits == "0" * 12 or int(digits[:2], 16) & 1:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


@dataclass(frozen=True, slots=True)
class Sighting:
    """One source saw one machine: its MAC(s), maybe an IP, maybe who it is."""

    source: HostSource
    macs: tuple[str, ...]
    ip: str | None = None
    hostname: str | None = None
    agent_id: str | None = None


@dataclass(slots=True)
class MergedHost:
    """A machine after merging: its MACs (first is the one shown) and what saw it."""

    macs: list[str]
    ips: dict[HostSource, str] = field(default_factory=dict)
    sources: set[HostSource] = field(default_factory=set)
    hostname: str | None = None
    agent_id: str | None = None

    @property
    def mac(self) -> str:
        """The MAC shown for the host: one the LAN sources saw, else the agent's first."""
        return self.macs[0]

    @property
    def ip(self) -> str | None:
        """The address from the freshest source: the sweep, then SNMP's ARP table, then agent."""
        for source in SOURCE_ORDER:
            if source in self.ips:
                return self.ips[source]
        return None


def merge(sightings: Iterable[Sighting]) -> list[MergedHost]:
    """Fold sightings into machines by MAC; an agent's MACs all belong to one machine."""
    owner: dict[str, MergedHost] = {}
    hosts: list[MergedHost] = []
    ordered = sorted(sightings, key=lambda s: SOURCE_ORDER.index(s.source))
    for sighting in ordered:
        macs = [m for m in (normalise_mac(x) for x in sighting.macs) if m]
        if not macs:
            continue
        found: list[MergedHost] = []
        for mac in macs:
            host = owner.get(mac)
            if host is not None and all(host is not f for f in found):
                found.append(host)
        if found:
            target = found[0]
            for other in found[1:]:  # the agent joined two machines: they are one
                target.macs += [m for m in other.macs if m not in target.macs]
                for source, ip in other.ips.items():
                    target.ips.setdefault(source, ip)
                target.sources |= other.sources
                target.hostname = target.hostname or other.hostname
                target.agent_id = target.agent_id or other.agent_id
                for mac in other.macs:
                    owner[mac] = target
                hosts.remove(other)
        else:
            target = MergedHost(macs=[])
            hosts.append(target)
        for mac in macs:
            if mac not in target.macs:
                target.macs.append(mac)
            owner[mac] = target
        if sighting.ip:
            target.ips.setdefault(sighting.source, sighting.ip)
        target.sources.add(sighting.source)
        target.hostname = target.hostname or sighting.hostname
        target.agent_id = target.agent_id or sighting.agent_id
    return hosts


def count(hosts: Iterable[LanHost]) -> LanHostCounts:
    """Counts by source (a host seen by two sources counts in both), total, computers."""
    counts = LanHostCounts()
    for host in hosts:
        counts.total += 1
        counts.arp += "arp" in host.sources
        counts.snmp += "snmp" in host.sources
        counts.agent += "agent" in host.sources
        counts.computers += host.kind == "computer"
    return counts


class History:
    """First and last time each MAC was seen, kept for the life of the agent process."""

    def __init__(self, max_entries: int = 65536) -> None:
        self._seen: dict[str, tuple[dt.datetime, dt.datetime]] = {}
        self._max = max_entries

    def observe(self, mac: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """Record a sighting now; return (first seen, last seen)."""
        first = self._seen.get(mac, (now, now))[0]
        self._seen[mac] = (first, now)
        if len(self._seen) > self._max:  # forget the longest-unseen hosts first
            for stale in sorted(self._seen, key=lambda m: self._seen[m][1])[: self._max // 10]:
                del self._seen[stale]
        return first, now


Classifier = Callable[[MergedHost], tuple[HostKind, str | None]]


def to_lan_hosts(
    merged: Iterable[MergedHost],
    *,
    classify: Classifier,
    vendor: Callable[[str], str | None],
    history: History,
    now: dt.datetime,
    open_ports: dict[str, list[int]] | None = None,
) -> list[LanHost]:
    """Turn merged machines into report hosts, sorted by IP then MAC."""
    result: list[LanHost] = []
    for host in merged:
        first, last = history.observe(host.mac, now)
        kind, reason = classify(host)
        ports = open_ports.get(host.ip) if open_ports is not None and host.ip else None
        result.append(
            LanHost(
                mac=host.mac,
                ip=host.ip,
                vendor=vendor(host.mac),
                kind=kind,
                kind_reason=reason,
                sources=[s for s in SOURCE_ORDER if s in host.sources],
                hostname=host.hostname,
                agent_id=host.agent_id,
                first_seen=first,
                last_seen=last,
                open_ports=ports[:16] if ports else None,
                other_macs=host.macs[1:8] or None,
            )
        )
    result.sort(key=lambda h: (_ip_key(h.ip), h.mac))
    return result


def _ip_key(ip: str | None) -> tuple[int, ...]:
    if ip is None:
        return (1 << 32,)
    try:
        return tuple(int(x) for x in ip.split("."))
    except ValueError:
        return (1 << 32,)

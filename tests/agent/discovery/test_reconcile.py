"""Merging ARP, SNMP and agent sightings into one host per machine, and the counts."""

from __future__ import annotations

import datetime as dt

from agent.discovery.reconcile import History, Sighting, count, merge, normalise_mac, to_lan_hosts
from agent.report import HostKind

T0 = dt.datetime(2025, 7, 1, 8, 0, tzinfo=dt.UTC)


def _hosts(sightings: list[Sighting], kinds: dict[str, HostKind] | None = None) -> list:  # type: ignore[type-arg]
    kinds = kinds or {}
    return to_lan_hosts(
        merge(sightings),
        classify=lambda h: (
            kinds.get(h.mac, "computer" if "agent" in h.sources else "unknown"),
            None,
        ),
        vendor=lambda mac: None,
        history=History(),
        now=T0,
    )


def test_agents_arp_only_and_fdb_only_hosts_count_once() -> None:
    sightings = [
        # a PC with the agent, seen by the sweep and in the switch FDB, on two NICs
        Sighting("arp", ("aa:00:00:00:00:01",), ip="10.0.0.11"),
        Sighting("snmp", ("AA-00-00-00-00-01",)),
        Sighting(
            "agent", ("aa:00:00:00:00:01", "aa:00:00:00:00:99"), hostname="pc1", agent_id="a1"
        ),
        # a second agent whose Wi-Fi MAC the sweep saw and whose Ethernet MAC the FDB saw
        Sighting("arp", ("aa:00:00:00:00:02",), ip="10.0.0.12"),
        Sighting("snmp", ("aa00.0000.0003",)),
        Sighting("agent", ("aa:00:00:00:00:02", "aa:00:00:00:00:03"), agent_id="a2"),
        # only in ARP (a printer), only in the FDB (a PC switched off), router ARP table
        Sighting("arp", ("aa:00:00:00:00:04",), ip="10.0.0.20"),
        Sighting("snmp", ("aa:00:00:00:00:05",)),
        Sighting("snmp", ("aa:00:00:00:00:06",), ip="10.0.0.30"),
        # junk a switch can report: broadcast, multicast, all zeros
        Sighting("snmp", ("ff:ff:ff:ff:ff:ff",)),
        Sighting("snmp", ("01:00:5e:00:00:01",)),
        Sighting("snmp", ("00:00:00:00:00:00",)),
    ]
    hosts = _hosts(sightings, {"aa:00:00:00:00:04": "printer", "aa:00:00:00:00:05": "computer"})
    by_mac = {h.mac: h for h in hosts}
    assert set(by_mac) == {f"aa:00:00:00:00:0{i}" for i in (1, 2, 4, 5, 6)}
    assert by_mac["aa:00:00:00:00:01"].sources == ["arp", "snmp", "agent"]
    assert by_mac["aa:00:00:00:00:01"].other_macs == ["aa:00:00:00:00:99"]
    assert by_mac["aa:00:00:00:00:01"].hostname == "pc1"
    assert by_mac["aa:00:00:00:00:02"].sources == ["arp", "snmp", "agent"]
    assert by_mac["aa:00:00:00:00:02"].other_macs == ["aa:00:00:00:00:03"]
    assert by_mac["aa:00:00:00:00:06"].ip == "10.0.0.30"
    assert count(hosts).__struct_fields__  # a LanHostCounts
    counts = count(hosts)
    assert (counts.arp, counts.snmp, counts.agent, counts.total, counts.computers) == (
        3,
        4,
        2,
        5,
        3,
    )


def test_sweep_address_wins_over_router_arp_table() -> None:
    hosts = _hosts(
        [
            Sighting("snmp", ("aa:00:00:00:00:01",), ip="10.0.0.99"),  # stale router entry
            Sighting("arp", ("aa:00:00:00:00:01",), ip="10.0.0.11"),
        ]
    )
    assert [(h.ip, h.sources) for h in hosts] == [("10.0.0.11", ["arp", "snmp"])]


def test_hosts_sorted_by_address_then_mac() -> None:
    hosts = _hosts(
        [
            Sighting("snmp", ("aa:00:00:00:00:09",)),
            Sighting("arp", ("aa:00:00:00:00:02",), ip="10.0.0.100"),
            Sighting("arp", ("aa:00:00:00:00:03",), ip="10.0.0.9"),
        ]
    )
    assert [h.ip for h in hosts] == ["10.0.0.9", "10.0.0.100", None]


def test_history_keeps_first_seen_and_moves_last_seen() -> None:
    history = History()
    assert history.observe("aa:00:00:00:00:01", T0) == (T0, T0)
    later = T0 + dt.timedelta(minutes=10)
    assert history.observe("aa:00:00:00:00:01", later) == (T0, later)


def test_history_is_bounded() -> None:
    history = History(max_entries=100)
    for i in range(250):
        history.observe(f"aa:00:00:00:{i // 256:02x}:{i % 256:02x}", T0 + dt.timedelta(seconds=i))
    assert len(history._seen) <= 100
    # the most recently seen host is still remembered
    last = T0 + dt.timedelta(seconds=249)
    assert history.observe("aa:00:00:00:00:f9", last) == (last, last)


def test_normalise_mac_forms() -> None:
    assert normalise_mac("AA-BB-CC-DD-EE-0F") == "aa:bb:cc:dd:ee:0f"
    assert normalise_mac("aabb.ccdd.ee0f") == "aa:bb:cc:dd:ee:0f"
    assert normalise_mac("aa:bb:cc") is None
    assert normalise_mac("01:00:5e:00:00:01") is None

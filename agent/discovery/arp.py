"""ARP sweep of the local link with scapy: paced requests, retry rounds, raw replies.

One scapy L2 socket sends and receives in one blocking loop (the caller runs it in a
thread). Requests go out at most ``rate`` per second; an address that stays silent
for ``timeout`` is asked again, up to ``retries`` times (sleeping Wi-Fi clients and
busy printers often miss the first request), and the loop listens ``timeout`` after
the last request for late replies. On Linux the socket is bound to the ARP ethertype,
so the kernel hands it ARP frames only; elsewhere (Npcap) a capture filter does that.

Only this module and ``classify.vendor`` import scapy, and only when a sweep runs.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

ETH_P_ARP = 0x0806
_BROADCAST = b"\xff" * 6
_MIN_FRAME = 60  # Ethernet minimum without FCS: pad like arp-scan does
UNSPECIFIED = "0.0.0.0"  # noqa: S104 - an ARP probe's sender address, not a bind


@dataclass(frozen=True, slots=True)
class SweepTarget:
    """One subnet to sweep and the source address to ask from (0.0.0.0: ARP probe)."""

    network: ipaddress.IPv4Network
    source_ip: str


@dataclass(slots=True)
class SweepResult:
    """Who answered: ``replies[ip]`` is the set of MACs that claimed that address."""

    replies: dict[str, set[str]] = field(default_factory=dict)
    sent: int = 0
    rounds: int = 0  # the most requests any one address got
    duration_seconds: float = 0.0


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _request(src_mac: bytes, src_ip: str, dst_ip: str) -> bytes:
    """An Ethernet broadcast ARP who-has, padded to the minimum frame size."""
    frame = (
        _BROADCAST
        + src_mac
        + struct.pack("!HHHBBH", ETH_P_ARP, 1, 0x0800, 6, 4, 1)
        + src_mac
        + ipaddress.IPv4Address(src_ip).packed
        + b"\x00" * 6
        + ipaddress.IPv4Address(dst_ip).packed
    )
    return frame.ljust(_MIN_FRAME, b"\x00")


def parse_reply(frame: bytes) -> tuple[str, str, str] | None:
    """Return (sender ip, sender mac, target ip) of an ARP is-at frame, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    hw_type, proto, hw_len, proto_len, op = struct.unpack("!HHBBH", frame[14:22])
    if (hw_type, proto, hw_len, proto_len, op) != (1, 0x0800, 6, 4, 2):
        return None
    sender_mac = frame[22:28]
    if sender_mac[0] & 1 or sender_mac == b"\x00" * 6:
        return None  # a multicast or empty sender address is not a host
    sender_ip = str(ipaddress.IPv4Address(frame[28:32]))
    target_ip = str(ipaddress.IPv4Address(frame[38:42]))
    return sender_ip, _mac_text(sender_mac), target_ip


def open_socket(iface: str) -> object:
    """Open a scapy L2 socket on ``iface`` that receives ARP only, not promiscuous."""
    import scapy.arch  # noqa: F401 - puts the platform's socket classes into conf
    from scapy.config import conf

    linux = sys.platform.startswith("linux")
    if linux:
        # Bound to the ARP ethertype scapy cannot guess a link-layer class and warns;
        # we parse raw frames ourselves, so the warning is noise.
        runtime = logging.getLogger("scapy.runtime")
        level = runtime.level
        runtime.setLevel(logging.ERROR)
        try:
            return conf.L2socket(iface=iface, type=ETH_P_ARP, promisc=False)
        finally:
            runtime.setLevel(level)
    return conf.L2socket(iface=iface, filter="arp", promisc=False)


def sweep(
    iface: str,
    src_mac: str,
    targets: Sequence[SweepTarget],
    *,
    rate: int,
    retries: int,
    timeout: float,
) -> SweepResult:
    """Sweep every host address of ``targets`` from ``iface`` (blocking; run in a thread)."""
    sock = open_socket(iface)
    try:
        return _sweep(sock, _mac_bytes(src_mac), targets, rate, retries, timeout)
    finally:
        sock.close()  # type: ignore[attr-defined]


def _sweep(
    sock: object,
    src_mac: bytes,
    targets: Sequence[SweepTarget],
    rate: int,
    retries: int,
    timeout: float,
) -> SweepResult:
    started = time.monotonic()
    result = SweepResult()
    sources = {t.source_ip for t in targets}
    networks = [t.network for t in targets]
    pending: dict[str, bytes] = {}
    for target in targets:
        for host in target.network.hosts():
            ip = str(host)
            if ip not in sources:
                pending[ip] = _request(src_mac, target.source_ip, ip)
    select = type(sock).select  # type: ignore[attr-defined]

    def receive(until: float, stop_when_all_answered: bool) -> None:
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0 or (stop_when_all_answered and not pending):
                return
            if not select([sock], remaining):
                continue
            _, frame, _ = sock.recv_raw()  # type: ignore[attr-defined]
            parsed = parse_reply(frame) if frame else None
            if parsed is None:
                continue
            ip, mac, asked_by = parsed
            if asked_by not in sources and asked_by != UNSPECIFIED:
                continue  # a reply to another host's question, seen by chance
            address = ipaddress.IPv4Address(ip)
            if not any(address in n for n in networks):
                continue
            result.replies.setdefault(ip, set()).add(mac)
            pending.pop(ip, None)

    # Like arp-scan, retries are interleaved with first requests: a silent address is
    # asked again as soon as its own timeout has passed, not after a whole round, so a
    # sweep takes about (requests / rate) + timeout.
    interval = 1.0 / rate
    fresh = collections.deque(pending)
    again: collections.deque[tuple[float, str, int]] = collections.deque()  # (due, ip, tries)
    next_send = time.monotonic()
    while fresh or again:
        if again and again[0][0] <= time.monotonic():
            _, ip, tries = again.popleft()
        elif fresh:
            ip, tries = fresh.popleft(), 0
        else:
            receive(again[0][0], stop_when_all_answered=True)
            continue
        if ip not in pending:
            continue  # it answered meanwhile
        receive(next_send, stop_when_all_answered=False)
        if ip not in pending:
            continue
        sock.send(pending[ip])  # type: ignore[attr-defined]
        result.sent += 1
        result.rounds = max(result.rounds, tries + 1)
        if tries < retries:
            again.append((time.monotonic() + timeout, ip, tries + 1))
        # Never burst to catch up after a stall: the rate is an upper bound.
        next_send = max(next_send + interval, time.monotonic())
    receive(time.monotonic() + timeout, stop_when_all_answered=True)
    result.duration_seconds = time.monotonic() - started
    return result

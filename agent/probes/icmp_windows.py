"""ICMP echo on Windows through the ICMP API (``IcmpSendEcho2`` / ``Icmp6SendEcho2``).

This is what ``ping.exe`` uses: it needs no administrator rights, unlike a raw socket,
and Windows has no unprivileged ICMP socket. Without it the agent would fall back to a
TCP connect, and a router that answers ping but has no open port would read as down.

The reply structures are declared once with ctypes, with the layouts of ``ipexport.h``;
``decode_reply`` turns a reply buffer (or the API's error code) into an outcome and is
a pure function, tested on buffers built from the documented layouts. Only
``_send_echo`` calls the DLL, and only on Windows. Each echo is one blocking API call
in a worker thread, started on the burst's schedule, so a burst costs what ping costs.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from agent.report import ErrorReason, ProbeResult

if TYPE_CHECKING:
    from agent.probes.base import Deadline
    from agent.probes.icmp import Options, SockAddr

METHOD: Final = "icmp-windows-api"

# IP_STATUS values (ipexport.h). IPv6 reuses the numbers with its own names.
IP_SUCCESS: Final = 0
IP_BUF_TOO_SMALL: Final = 11001
IP_DEST_NET_UNREACHABLE: Final = 11002  # IPv6: IP_DEST_NO_ROUTE
IP_DEST_HOST_UNREACHABLE: Final = 11003  # IPv6: IP_DEST_ADDR_UNREACHABLE
IP_DEST_PROT_UNREACHABLE: Final = 11004  # IPv6: IP_DEST_PROHIBITED
IP_DEST_PORT_UNREACHABLE: Final = 11005
IP_NO_RESOURCES: Final = 11006
IP_BAD_OPTION: Final = 11007
IP_HW_ERROR: Final = 11008
IP_PACKET_TOO_BIG: Final = 11009
IP_REQ_TIMED_OUT: Final = 11010
IP_BAD_REQ: Final = 11011
IP_BAD_ROUTE: Final = 11012
IP_TTL_EXPIRED_TRANSIT: Final = 11013  # IPv6: IP_HOP_LIMIT_EXCEEDED
IP_TTL_EXPIRED_REASSEM: Final = 11014
IP_PARAM_PROBLEM: Final = 11015
IP_SOURCE_QUENCH: Final = 11016
IP_OPTION_TOO_BIG: Final = 11017
IP_BAD_DESTINATION: Final = 11018
IP_GENERAL_FAILURE: Final = 11050
# Win32 errors GetLastError() may give instead of an IP_STATUS.
ERROR_ACCESS_DENIED: Final = 5
ERROR_NETWORK_UNREACHABLE: Final = 1231
ERROR_HOST_UNREACHABLE: Final = 1232

_STATUS: Final[dict[int, tuple[ErrorReason, str]]] = {
    IP_REQ_TIMED_OUT: ("timeout", "request timed out"),
    IP_DEST_NET_UNREACHABLE: ("unreachable", "network unreachable"),
    IP_DEST_HOST_UNREACHABLE: ("unreachable", "host unreachable"),
    IP_DEST_PROT_UNREACHABLE: ("unreachable", "protocol unreachable or prohibited"),
    IP_DEST_PORT_UNREACHABLE: ("refused", "port unreachable"),
    IP_BAD_ROUTE: ("unreachable", "bad route"),
    IP_BAD_DESTINATION: ("unreachable", "bad destination"),
    IP_TTL_EXPIRED_TRANSIT: ("unreachable", "time exceeded in transit"),
    IP_TTL_EXPIRED_REASSEM: ("unreachable", "time exceeded during reassembly"),
    IP_PACKET_TOO_BIG: ("network_error", "packet too big"),
    IP_PARAM_PROBLEM: ("network_error", "parameter problem"),
    IP_SOURCE_QUENCH: ("network_error", "source quench"),
    IP_HW_ERROR: ("network_error", "hardware error"),
    IP_NO_RESOURCES: ("network_error", "no resources"),
    IP_BUF_TOO_SMALL: ("internal_error", "reply buffer too small"),
    IP_BAD_OPTION: ("internal_error", "bad IP option"),
    IP_OPTION_TOO_BIG: ("internal_error", "IP option too big"),
    IP_BAD_REQ: ("internal_error", "bad request"),
    IP_GENERAL_FAILURE: ("network_error", "general failure"),
    ERROR_ACCESS_DENIED: ("permission_denied", "access denied"),
    ERROR_NETWORK_UNREACHABLE: ("unreachable", "network unreachable"),
    ERROR_HOST_UNREACHABLE: ("unreachable", "host unreachable"),
}


class IP_OPTION_INFORMATION(ctypes.Structure):  # the Windows SDK names (ipexport.h)
    _fields_ = (
        ("Ttl", ctypes.c_uint8),
        ("Tos", ctypes.c_uint8),
        ("Flags", ctypes.c_uint8),
        ("OptionsSize", ctypes.c_uint8),
        ("OptionsData", ctypes.c_void_p),
    )


class ICMP_ECHO_REPLY(ctypes.Structure):
    """``IPAddr`` is a ULONG holding the address in network byte order (4 raw bytes)."""

    _fields_ = (
        ("Address", ctypes.c_uint8 * 4),
        ("Status", ctypes.c_uint32),
        ("RoundTripTime", ctypes.c_uint32),  # milliseconds
        ("DataSize", ctypes.c_uint16),
        ("Reserved", ctypes.c_uint16),
        ("Data", ctypes.c_void_p),
        ("Options", IP_OPTION_INFORMATION),
    )


class IPV6_ADDRESS_EX(ctypes.Structure):
    _pack_ = 1  # ipexport.h wraps it in pshpack1.h
    _fields_ = (
        ("sin6_port", ctypes.c_uint16),
        ("sin6_flowinfo", ctypes.c_uint32),
        ("sin6_addr", ctypes.c_uint8 * 16),
        ("sin6_scope_id", ctypes.c_uint32),
    )


class ICMPV6_ECHO_REPLY(ctypes.Structure):
    _fields_ = (
        ("Address", IPV6_ADDRESS_EX),
        ("Status", ctypes.c_uint32),
        ("RoundTripTime", ctypes.c_uint32),  # milliseconds
    )


class SOCKADDR_IN6(ctypes.Structure):
    _fields_ = (
        ("sin6_family", ctypes.c_uint16),
        ("sin6_port", ctypes.c_uint16),
        ("sin6_flowinfo", ctypes.c_uint32),
        ("sin6_addr", ctypes.c_uint8 * 16),
        ("sin6_scope_id", ctypes.c_uint32),
    )


@dataclass(frozen=True, slots=True)
class Echo:
    """The outcome of one echo: an RTT, or a reason and a detail."""

    rtt_seconds: float | None
    error: ErrorReason | None = None
    detail: str | None = None


def decode_reply(
    family: int, replies: int, buffer: bytes, last_error: int, target: str, elapsed: float
) -> Echo:
    """One echo's outcome from what ``Icmp(6)SendEcho2`` returned.

    ``replies`` is its return value (0: failed, ``last_error`` says why, e.g.
    IP_REQ_TIMED_OUT); otherwise the reply structure at the start of ``buffer`` holds
    the status, the answering address and the RTT in milliseconds. A reply from another
    address than the target is a router reporting an error. The API rounds RTTs to
    milliseconds and says 0 for "<1 ms": then the measured ``elapsed`` (bounded by 1 ms)
    is the better figure.
    """
    if replies == 0:
        error, text = _STATUS.get(last_error, ("network_error", f"error {last_error}"))
        return Echo(None, error, f"echo to {target}: {text}")
    reply_type = ICMP_ECHO_REPLY if family == socket.AF_INET else ICMPV6_ECHO_REPLY
    if len(buffer) < ctypes.sizeof(reply_type):
        return Echo(
            None, "internal_error", f"echo to {target}: reply buffer of {len(buffer)} bytes"
        )
    if family == socket.AF_INET:
        v4 = ICMP_ECHO_REPLY.from_buffer_copy(buffer[: ctypes.sizeof(ICMP_ECHO_REPLY)])
        status, rtt_ms = v4.Status, v4.RoundTripTime
        source = socket.inet_ntop(socket.AF_INET, bytes(v4.Address))
    else:
        v6 = ICMPV6_ECHO_REPLY.from_buffer_copy(buffer[: ctypes.sizeof(ICMPV6_ECHO_REPLY)])
        status, rtt_ms = v6.Status, v6.RoundTripTime
        source = socket.inet_ntop(socket.AF_INET6, bytes(v6.Address.sin6_addr))
    if status == IP_SUCCESS:
        return Echo(rtt_ms / 1000 if rtt_ms else min(elapsed, 0.001))
    error, text = _STATUS.get(status, ("network_error", f"status {status}"))
    return Echo(None, error, f"{text} (reported by {source})")


def summarise(options: Options, sent: int, echoes: list[Echo]) -> ProbeResult:
    """The probe result of a burst: up when one echo came back, with loss and jitter."""
    from agent.probes.icmp import rfc3550_jitter

    rtts = [e.rtt_seconds for e in echoes if e.rtt_seconds is not None]
    result = ProbeResult(
        kind="icmp",
        target=options.label,
        up=bool(rtts),
        method=METHOD,
        sent=sent,
        received=len(rtts),
        loss_ratio=1 - len(rtts) / sent if sent else 1.0,
    )
    if rtts:
        result.rtt_seconds = sum(rtts) / len(rtts)
        result.rtt_min_seconds, result.rtt_max_seconds = min(rtts), max(rtts)
        result.jitter_seconds = rfc3550_jitter(rtts)
        return result
    # An error a router reported says more than the timeouts of the other echoes.
    failed = [e for e in echoes if e.error is not None]
    telling = next((e for e in failed if e.error != "timeout"), failed[0] if failed else None)
    if telling is None:
        result.error, result.detail = "timeout", f"no echo reply from {options.address}"
    else:
        result.error, result.detail = telling.error, telling.detail
    return result


def _send_echo(sockaddr: SockAddr, payload: bytes, timeout_ms: int) -> tuple[int, bytes, int]:
    """One blocking echo through iphlpapi.dll: (replies, reply buffer, GetLastError())."""
    from ctypes import wintypes

    dll = ctypes.WinDLL("iphlpapi.dll", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    v6 = len(sockaddr) == 4
    create = dll.Icmp6CreateFile if v6 else dll.IcmpCreateFile
    create.restype = wintypes.HANDLE
    handle = create()
    if handle in (None, wintypes.HANDLE(-1).value):
        return 0, b"", ctypes.get_last_error()  # type: ignore[attr-defined,unused-ignore]
    reply_type = ICMPV6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY
    # Documented minimum: the reply, the data, 8 bytes of ICMP error and an IO_STATUS_BLOCK.
    size = ctypes.sizeof(reply_type) + len(payload) + 8 + 16
    reply = ctypes.create_string_buffer(size)
    data = ctypes.create_string_buffer(payload, len(payload))
    try:
        if v6:
            source = SOCKADDR_IN6(sin6_family=socket.AF_INET6)
            dest = SOCKADDR_IN6(sin6_family=socket.AF_INET6, sin6_scope_id=sockaddr[3])  # type: ignore[misc]
            dest.sin6_addr[:] = socket.inet_pton(socket.AF_INET6, sockaddr[0].split("%")[0])
            send = dll.Icmp6SendEcho2
            send.argtypes = [wintypes.HANDLE, wintypes.HANDLE, ctypes.c_void_p, ctypes.c_void_p]
            send.argtypes += [ctypes.POINTER(SOCKADDR_IN6), ctypes.POINTER(SOCKADDR_IN6)]
            send.argtypes += [ctypes.c_void_p, wintypes.WORD, ctypes.c_void_p, ctypes.c_void_p]
            send.argtypes += [wintypes.DWORD, wintypes.DWORD]
            send.restype = wintypes.DWORD
            replies = send(
                handle, None, None, None, ctypes.byref(source), ctypes.byref(dest),
                data, len(payload), None, reply, size, timeout_ms,
            )  # fmt: skip
        else:
            address = int.from_bytes(socket.inet_aton(sockaddr[0]), sys.byteorder)
            send = dll.IcmpSendEcho2
            send.argtypes = [wintypes.HANDLE, wintypes.HANDLE, ctypes.c_void_p, ctypes.c_void_p]
            send.argtypes += [ctypes.c_uint32, ctypes.c_void_p, wintypes.WORD, ctypes.c_void_p]
            send.argtypes += [ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD]
            send.restype = wintypes.DWORD
            replies = send(
                handle, None, None, None, address, data, len(payload), None, reply, size,
                timeout_ms,
            )  # fmt: skip
        error = 0 if replies else ctypes.get_last_error()  # type: ignore[attr-defined,unused-ignore]
        return int(replies), reply.raw, int(error)
    finally:
        dll.IcmpCloseHandle.argtypes = [wintypes.HANDLE]
        dll.IcmpCloseHandle(handle)


async def burst(
    options: Options, family: int, sockaddr: SockAddr, deadline: Deadline
) -> ProbeResult:
    """Send ``options.count`` echoes ``options.interval`` apart; Windows only."""
    payload = bytes(range(97, 123)) * (options.payload_size // 26 + 1)  # ping.exe's a..z
    payload = payload[: options.payload_size]
    target = sockaddr[0]

    async def one() -> Echo:
        timeout_ms = max(1, int(deadline.remaining() * 1000))
        started = time.monotonic()
        replies, buffer, error = await asyncio.to_thread(_send_echo, sockaddr, payload, timeout_ms)
        return decode_reply(family, replies, buffer, error, target, time.monotonic() - started)

    start = time.monotonic()
    tasks: list[asyncio.Task[Echo]] = []
    try:
        for seq in range(options.count):
            if deadline.expired():
                break
            tasks.append(asyncio.create_task(one()))
            if seq + 1 < options.count:
                next_at = start + (seq + 1) * options.interval
                await asyncio.sleep(max(0.0, min(next_at, deadline.at) - time.monotonic()))
        echoes = list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
    return summarise(options, len(tasks), echoes)

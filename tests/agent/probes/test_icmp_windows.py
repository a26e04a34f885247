"""The Windows ICMP API probe: reply buffers built from ipexport.h's documented layouts.

Windows cannot run here, so the DLL call is replaced at its one boundary
(``_send_echo``) by recorded return values; everything else runs for real.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys

import pytest

from agent.probes import icmp, icmp_windows
from agent.probes.icmp_windows import (
    ICMP_ECHO_REPLY,
    ICMPV6_ECHO_REPLY,
    IP_DEST_HOST_UNREACHABLE,
    IP_REQ_TIMED_OUT,
    IP_SUCCESS,
    IP_TTL_EXPIRED_TRANSIT,
    Echo,
    decode_reply,
    summarise,
)

V4, V6 = socket.AF_INET, socket.AF_INET6
pointer_64 = pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="x64 layout")


def icmp_echo_reply(address: str, status: int, rtt_ms: int, data: bytes = b"") -> bytes:
    """ICMP_ECHO_REPLY on x64: Address, Status, RoundTripTime, DataSize, Reserved, Data
    (pointer), then IP_OPTION_INFORMATION (Ttl, Tos, Flags, OptionsSize, pointer)."""
    head = struct.pack(
        "<4sIIHHQBBBB4xQ", socket.inet_aton(address), status, rtt_ms, len(data), 0,
        0x1F0000, 117, 0, 0, 0, 0,
    )  # fmt: skip
    return head + data


def icmpv6_echo_reply(address: str, status: int, rtt_ms: int) -> bytes:
    """ICMPV6_ECHO_REPLY: a packed IPV6_ADDRESS_EX (26 bytes), padding, Status, RTT."""
    packed = struct.pack("<HI16sI", 0, 0, socket.inet_pton(V6, address), 0)
    return packed + b"\0\0" + struct.pack("<II", status, rtt_ms)


@pointer_64
def test_structures_have_the_sdk_sizes() -> None:
    assert ctypes.sizeof(ICMP_ECHO_REPLY) == len(icmp_echo_reply("0.0.0.0", 0, 0)) == 40
    assert ctypes.sizeof(ICMPV6_ECHO_REPLY) == len(icmpv6_echo_reply("::", 0, 0)) == 36
    assert ctypes.sizeof(icmp_windows.IPV6_ADDRESS_EX) == 26
    assert ctypes.sizeof(icmp_windows.SOCKADDR_IN6) == 28


@pointer_64
@pytest.mark.parametrize(
    ("family", "replies", "buffer", "error", "expected"),
    [
        pytest.param(
            V4, 1, icmp_echo_reply("10.200.0.5", IP_SUCCESS, 12, b"abcd"), 0, Echo(0.012),
            id="v4-reply",
        ),
        pytest.param(
            V6, 1, icmpv6_echo_reply("2001:db8::5", IP_SUCCESS, 31), 0, Echo(0.031),
            id="v6-reply",
        ),
        pytest.param(
            V4, 1, icmp_echo_reply("10.1.0.1", IP_DEST_HOST_UNREACHABLE, 0), 0,
            Echo(None, "unreachable", "host unreachable (reported by 10.1.0.1)"),
            id="v4-router-says-host-unreachable",
        ),
        pytest.param(
            V6, 1, icmpv6_echo_reply("fe80::1", IP_TTL_EXPIRED_TRANSIT, 0), 0,
            Echo(None, "unreachable", "time exceeded in transit (reported by fe80::1)"),
            id="v6-hop-limit",
        ),
        pytest.param(
            V4, 0, b"", IP_REQ_TIMED_OUT,
            Echo(None, "timeout", "echo to 10.200.0.5: request timed out"),
            id="v4-timeout",
        ),
        pytest.param(
            V4, 0, b"", 1232, Echo(None, "unreachable", "echo to 10.200.0.5: host unreachable"),
            id="win32-error",
        ),
        pytest.param(
            V6, 1, b"\0" * 20, 0,
            Echo(None, "internal_error", "echo to 10.200.0.5: reply buffer of 20 bytes"),
            id="short-buffer",
        ),
        pytest.param(
            V4, 0, b"", 4242, Echo(None, "network_error", "echo to 10.200.0.5: error 4242"),
            id="unknown-error",
        ),
    ],
)  # fmt: skip
def test_decode_reply(family: int, replies: int, buffer: bytes, error: int, expected: Echo) -> None:
    assert decode_reply(family, replies, buffer, error, "10.200.0.5", 0.02) == expected


@pointer_64
def test_sub_millisecond_reply_uses_the_measured_time() -> None:
    buffer = icmp_echo_reply("127.0.0.1", IP_SUCCESS, 0)  # the API says 0 for "<1 ms"
    assert decode_reply(V4, 1, buffer, 0, "127.0.0.1", 0.0003) == Echo(0.0003)
    assert decode_reply(V4, 1, buffer, 0, "127.0.0.1", 0.2) == Echo(0.001)


def options(**extra: object) -> icmp.Options:
    return icmp.Options(address="10.200.0.5", **extra)  # type: ignore[arg-type]


def test_summarise_partial_loss_is_up() -> None:
    timeout = Echo(None, "timeout", "echo to 10.200.0.5: request timed out")
    result = summarise(options(), 5, [Echo(0.010), timeout, Echo(0.014), timeout, Echo(0.012)])
    assert (result.up, result.method, result.sent, result.received) == (
        True, "icmp-windows-api", 5, 3,
    )  # fmt: skip
    assert result.loss_ratio == pytest.approx(0.4)
    assert (result.rtt_min_seconds, result.rtt_max_seconds) == (0.010, 0.014)
    assert result.rtt_seconds == pytest.approx(0.012)
    assert result.error is None


def test_summarise_down_prefers_the_router_error_over_timeouts() -> None:
    timeout = Echo(None, "timeout", "echo to 10.200.0.5: request timed out")
    router = Echo(None, "unreachable", "host unreachable (reported by 10.1.0.1)")
    result = summarise(options(), 3, [timeout, router, timeout])
    assert (result.up, result.error, result.detail, result.loss_ratio) == (
        False, "unreachable", "host unreachable (reported by 10.1.0.1)", 1.0,
    )  # fmt: skip
    assert summarise(options(), 2, [timeout, timeout]).error == "timeout"


@pointer_64
async def test_windows_probe_uses_the_api_not_a_tcp_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A router that answers ping with no open TCP port is up (no fallback is tried)."""
    calls: list[tuple[str, int, int]] = []

    def api(sockaddr: tuple[str, int], payload: bytes, timeout_ms: int) -> tuple[int, bytes, int]:
        calls.append((sockaddr[0], len(payload), timeout_ms))
        return 1, icmp_echo_reply(sockaddr[0], IP_SUCCESS, 3, payload), 0

    monkeypatch.setattr(icmp_windows, "_send_echo", api)
    monkeypatch.setattr(icmp, "_tcp_fallback", None)  # would raise if it were tried
    monkeypatch.setattr(sys, "platform", "win32")
    result = await icmp.probe(icmp.Options(address="127.0.0.1", count=3, payload_size=32))
    monkeypatch.undo()
    assert (result.up, result.method, result.sent, result.received) == (
        True, "icmp-windows-api", 3, 3,
    )  # fmt: skip
    assert result.rtt_seconds == pytest.approx(0.003)
    assert [(a, n) for a, n, _ in calls] == [("127.0.0.1", 32)] * 3
    assert all(0 < t <= 5000 for _, _, t in calls)

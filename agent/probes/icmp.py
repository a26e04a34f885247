"""ICMP echo burst: RTT min/avg/max, loss and RFC 3550 jitter.

Tries an unprivileged ICMP datagram socket (Linux ``ping_group_range``) first, then a
raw socket when the process may open one, and as the last resort a TCP connect to
``fallback_ports`` (a refusal also proves the host is there). ``method`` says which:
``icmp-unprivileged``, ``icmp-raw`` or ``tcp-fallback:<port>``. Windows has no
unprivileged ICMP socket: there the Windows ICMP API that ping.exe uses answers
without administrator rights (``icmp-windows-api``, in ``icmp_windows``).

Everything runs on the event loop with non-blocking sockets. Replies are matched by
sequence number and a random cookie in the payload, and on raw sockets (which see
every ICMP packet of the host) also by the identifier, so concurrent probes of the
same host never take each other's replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from agent.probes import tcp
from agent.probes.base import (
    Deadline,
    PortNumber,
    ProbeFailed,
    TargetOptions,
    check_host,
    check_timeout,
    describe,
    failure,
    reason_for,
    resolve,
    with_family,
)
from agent.report import ErrorReason, ProbeResult
from agent.units import Duration

SockAddr = tuple[str, int] | tuple[str, int, int, int]


class Options(TargetOptions, frozen=True, tag="icmp"):
    count: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    interval: Duration = Duration(0.2)  # between echoes of one burst
    payload_size: Annotated[int, msgspec.Meta(ge=0, le=1472)] = 56
    fallback_ports: Annotated[list[PortNumber], msgspec.Meta(max_length=8)] = msgspec.field(
        default_factory=lambda: [443, 80]
    )

    def __post_init__(self) -> None:
        check_host(self.address)
        check_timeout(self.timeout)
        if self.interval < 0.01:
            raise ValueError("interval: must be at least 10ms")
        if (self.count - 1) * self.interval >= self.timeout * 0.9:
            raise ValueError(
                f"interval: {self.count} echoes every {self.interval:g}s do not fit in the "
                f"{self.timeout:g}s timeout (lower count or interval, or raise timeout)"
            )


# ICMP message types (RFC 792, RFC 4443).
_ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
_ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
_ERRORS: dict[int, dict[int, str]] = {
    socket.AF_INET: {3: "destination unreachable", 11: "time exceeded"},
    socket.AF_INET6: {1: "destination unreachable", 3: "time exceeded"},
}
_UNREACHABLE_CODES: dict[int, dict[int, str]] = {
    socket.AF_INET: {
        0: "network unreachable",
        1: "host unreachable",
        3: "port unreachable",
        9: "network prohibited",
        10: "host prohibited",
        13: "administratively prohibited",
    },
    socket.AF_INET6: {
        0: "no route",
        1: "administratively prohibited",
        3: "address unreachable",
        4: "port unreachable",
    },
}
_COOKIE_LEN = 8
# SO_TIMESTAMPNS is missing from the socket module; 35 is its value on the generic Linux ABI
# (x86, ARM, RISC-V, POWER, s390), not on MIPS, SPARC, Alpha or PA-RISC, which go without.
# Kernel receive timestamps keep event-loop latency out of the RTT.
_GENERIC_ABI = {"x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv7l", "armv6l"}
_GENERIC_ABI |= {"riscv64", "ppc64le", "ppc64", "s390x"}
# os.uname, not platform.machine(): the platform module costs memory and start-up time.
_SO_TIMESTAMPNS = (
    35 if sys.platform == "linux" and os.uname().machine.lower() in _GENERIC_ABI else None
)
_TIMESPEC = struct.Struct("@qq")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def echo_request(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP/ICMPv6 echo request (the kernel fills the ICMPv6 checksum itself)."""
    kind = _ECHO_REQUEST[family]
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if family == socket.AF_INET6:
        return header + payload
    return struct.pack("!BBHHH", kind, 0, checksum(header + payload), ident, seq) + payload


def rfc3550_jitter(rtts: list[float]) -> float | None:
    """Interarrival jitter over successive RTTs: J += (|D| - J) / 16 (RFC 3550 A.8)."""
    if len(rtts) < 2:
        return None
    jitter = 0.0
    for previous, current in itertools.pairwise(rtts):
        jitter += (abs(current - previous) - jitter) / 16
    return jitter


def _open_socket(family: int) -> tuple[socket.socket | None, str, list[str]]:
    """Open the least privileged ICMP socket allowed; return (socket, method, refusals)."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    kinds = [(socket.SOCK_RAW, "icmp-raw")]
    if sys.platform != "win32":
        kinds.insert(0, (socket.SOCK_DGRAM, "icmp-unprivileged"))
    refusals = []
    for kind, method in kinds:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            refusals.append(f"{method}: {describe(exc)}")
            continue
        sock.setblocking(False)
        if sys.platform == "win32":
            # Windows delivers nothing to a raw socket that is not bound.
            sock.bind(("0.0.0.0", 0) if family == socket.AF_INET else ("::", 0))  # noqa: S104
        if _SO_TIMESTAMPNS is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        return sock, method, refusals
    return None, "", refusals


@dataclass
class _Burst:
    """The state of one echo burst: what was sent, what came back."""

    family: int
    raw: bool
    ident: int
    cookie: bytes
    count: int
    sent_mono: dict[int, float] = field(default_factory=dict)
    sent_wall_ns: dict[int, int] = field(default_factory=dict)
    rtts: dict[int, float] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    send_failed: set[int] = field(default_factory=set)
    socket_error: OSError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def _strip_ip_header(self, data: bytes) -> bytes:
        # Raw IPv4 sockets (and macOS datagram ones) deliver the IP header; ICMPv6 never does.
        if self.family == socket.AF_INET and (self.raw or sys.platform == "darwin"):
            if len(data) < 20 or data[0] >> 4 != 4:
                return b""
            return data[(data[0] & 0x0F) * 4 :]
        return data

    def _ours(self, ident: int, seq: int, payload: bytes | None) -> bool:
        if seq not in self.sent_mono or seq in self.rtts or seq in self.errors:
            return False
        if seq in self.send_failed:
            return False
        if self.raw and ident != self.ident:
            return False  # datagram sockets get only their own replies; the kernel set the id
        return payload is None or payload[: len(self.cookie)] == self.cookie

    def on_packet(self, data: bytes, source: str, kernel_ns: int | None) -> None:
        """Match one received ICMP message against the echoes sent."""
        now = time.monotonic()
        icmp = self._strip_ip_header(data)
        if len(icmp) < 8:
            return
        kind, code, _, ident, seq = struct.unpack("!BBHHH", icmp[:8])
        if kind == _ECHO_REPLY[self.family]:
            if self._ours(ident, seq, icmp[8:]):
                rtt = now - self.sent_mono[seq]
                if kernel_ns is not None:
                    precise = (kernel_ns - self.sent_wall_ns[seq]) / 1e9
                    if 0 <= precise <= rtt + 0.001:  # a wall-clock step falls back to monotonic
                        rtt = precise
                self.rtts[seq] = rtt
        elif kind in _ERRORS[self.family]:
            inner = icmp[8:]
            if self.family == socket.AF_INET:
                if len(inner) < 20:
                    return
                inner = inner[(inner[0] & 0x0F) * 4 :]
            else:
                inner = inner[40:]
            if len(inner) < 8:
                return
            inner_kind, _, _, inner_ident, inner_seq = struct.unpack("!BBHHH", inner[:8])
            if inner_kind == _ECHO_REQUEST[self.family] and self._ours(
                inner_ident, inner_seq, None
            ):
                what = _ERRORS[self.family][kind]
                if what == "destination unreachable":
                    what = _UNREACHABLE_CODES[self.family].get(code, f"{what} (code {code})")
                self.errors[inner_seq] = f"{what} (reported by {source})"
        else:
            return
        self.check_done()

    def check_done(self) -> None:
        """Wake the burst up once every echo sent has an outcome."""
        if len(self.rtts) + len(self.errors) + len(self.send_failed) >= len(self.sent_mono):
            self.done.set()

    def on_error(self, exc: OSError) -> None:
        """Datagram ICMP sockets report ICMP errors (host unreachable...) as socket errors."""
        self.socket_error = exc


def _ancillary_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = _TIMESPEC.unpack(data[:16])
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


def _drain(sock: socket.socket, burst: _Burst) -> None:
    """Read every datagram waiting on the socket (called when it is readable)."""
    while True:
        try:
            if hasattr(sock, "recvmsg"):
                data, ancdata, _, addr = sock.recvmsg(65535, 128)
                kernel_ns = _ancillary_ns(ancdata)
            else:  # Windows
                data, addr = sock.recvfrom(65535)
                kernel_ns = None
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            burst.on_error(exc)
            continue
        burst.on_packet(data, str(addr[0]) if addr else "?", kernel_ns)


async def _receive_loop(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, burst: _Burst
) -> None:
    """The receiver for event loops without ``add_reader`` (Windows' proactor)."""
    while True:
        try:
            data, addr = await loop.sock_recvfrom(sock, 65535)
        except OSError as exc:
            burst.on_error(exc)
            await asyncio.sleep(0.01)
            continue
        burst.on_packet(data, str(addr[0]) if addr else "?", None)


def _start_receiver(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, burst: _Burst
) -> Callable[[], object]:
    """Start reading replies; return the function that stops it."""
    try:
        loop.add_reader(sock.fileno(), _drain, sock, burst)
    except NotImplementedError:
        task = loop.create_task(_receive_loop(loop, sock, burst))
        return task.cancel
    return lambda: loop.remove_reader(sock.fileno())


def _kernel_timestamps(sock: socket.socket) -> bool:
    """Whether replies on ``sock`` carry the kernel's receive time (SO_TIMESTAMPNS)."""
    if _SO_TIMESTAMPNS is None or not hasattr(sock, "recvmsg"):
        return False
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS))
    except OSError:
        return False


async def _burst(
    options: Options,
    sock: socket.socket,
    method: str,
    family: int,
    sockaddr: SockAddr,
    deadline: Deadline,
) -> ProbeResult:
    """Send the echoes ``interval`` apart, then wait for the replies still missing.

    With kernel receive timestamps a reply's RTT does not depend on when it is read,
    so while echoes are being sent the replies that came in are read at the next
    echo's wake-up instead of waking the loop once per reply: half the wake-ups of a
    five-echo burst, which are most of its CPU time (docs/agent-footprint.md). Without
    them (Windows' datagram path, other ABIs) every reply is read as it arrives.
    """
    loop = asyncio.get_running_loop()
    cookie = os.urandom(_COOKIE_LEN)
    payload = (cookie * (options.payload_size // _COOKIE_LEN + 1))[: options.payload_size]
    burst = _Burst(
        family=family,
        raw=method == "icmp-raw",
        ident=int.from_bytes(os.urandom(2), "big"),
        cookie=cookie[: options.payload_size],
        count=options.count,
    )
    target = sockaddr[0]
    send_error: OSError | None = None
    batched = _kernel_timestamps(sock)
    stop = None if batched else _start_receiver(loop, sock, burst)
    try:
        start = time.monotonic()
        for seq in range(options.count):
            if deadline.expired():
                break
            if batched:
                _drain(sock, burst)
            packet = echo_request(family, burst.ident, seq, payload)
            burst.sent_mono[seq] = time.monotonic()
            burst.sent_wall_ns[seq] = time.time_ns()
            try:
                await loop.sock_sendto(sock, packet, sockaddr)
            except OSError as exc:
                send_error = exc
                burst.send_failed.add(seq)
                if reason_for(exc) == "permission_denied":
                    break  # e.g. a broadcast address: every echo would be refused the same way
            if seq + 1 < options.count:
                next_at = start + (seq + 1) * options.interval
                await asyncio.sleep(max(0.0, min(next_at, deadline.at) - time.monotonic()))
        sent = len(burst.sent_mono)
        if batched:
            _drain(sock, burst)
        burst.done.clear()
        burst.check_done()
        if not burst.done.is_set():
            if stop is None:
                stop = _start_receiver(loop, sock, burst)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline.remaining()):
                    await burst.done.wait()
    finally:
        if stop is not None:
            stop()
    return _result(options, method, target, sent, burst, send_error)


def _result(
    options: Options,
    method: str,
    target: str,
    sent: int,
    burst: _Burst,
    send_error: OSError | None,
) -> ProbeResult:
    rtts = [burst.rtts[seq] for seq in sorted(burst.rtts)]
    received = len(rtts)
    result = ProbeResult(
        kind="icmp",
        target=options.label,
        up=received > 0,
        method=method,
        sent=sent,
        received=received,
        loss_ratio=1 - received / sent if sent else 1.0,
    )
    if rtts:
        result.rtt_seconds = sum(rtts) / received
        result.rtt_min_seconds = min(rtts)
        result.rtt_max_seconds = max(rtts)
        result.jitter_seconds = rfc3550_jitter(rtts)
        return result
    error: ErrorReason
    if burst.errors:
        error, detail = "unreachable", next(iter(burst.errors.values()))
    elif send_error is not None:
        error, detail = reason_for(send_error), f"send to {target}: {describe(send_error)}"
    elif burst.socket_error is not None:
        exc = burst.socket_error
        error, detail = reason_for(exc), f"echo to {target}: {describe(exc)}"
    else:
        error, detail = "timeout", f"no echo reply from {target} ({sent} sent)"
    result.error, result.detail = error, detail
    return result


async def _tcp_ping(ip: str, port: int, deadline: Deadline) -> float:
    """One TCP handshake attempt; a refusal is an answer too. Return its time."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(deadline.remaining()):
            return await tcp.connect_time(ip, port)
    except ConnectionRefusedError:
        return time.monotonic() - start


async def _first_open_port(
    ip: str, ports: list[int], deadline: Deadline
) -> tuple[int, float] | BaseException:
    """Try every port at once; return the first that answers, or the most telling error."""

    async def attempt(port: int) -> tuple[int, float]:
        return port, await _tcp_ping(ip, port, deadline)

    tasks = [asyncio.ensure_future(attempt(port)) for port in ports]
    errors: list[BaseException] = []
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                return await next_done
            except (OSError, TimeoutError) as exc:
                errors.append(exc)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    unreachable = [e for e in errors if reason_for(e) == "unreachable"]
    return (unreachable or errors or [TimeoutError()])[0]


async def _tcp_fallback(
    options: Options, ip: str, refusals: list[str], deadline: Deadline
) -> ProbeResult:
    why = "; ".join(refusals)
    if not options.fallback_ports:
        return failure(
            options,
            "permission_denied",
            f"ICMP not permitted ({why}) and no fallback_ports configured",
        )
    found = await _first_open_port(ip, list(options.fallback_ports), deadline)
    ports = ", ".join(map(str, options.fallback_ports))
    if isinstance(found, BaseException):
        result = failure(
            options,
            reason_for(found),
            f"ICMP not permitted; TCP {ip} ports {ports}: {describe(found)}",
        )
        result.method, result.sent, result.received, result.loss_ratio = "tcp-fallback", 1, 0, 1.0
        return result
    port, first_rtt = found
    rtts = [first_rtt]
    sent = 1
    start = time.monotonic()
    for attempt in range(1, options.count):
        await asyncio.sleep(
            max(0.0, min(start + attempt * options.interval, deadline.at) - time.monotonic())
        )
        if deadline.expired():
            break
        sent += 1
        with contextlib.suppress(OSError, TimeoutError):
            rtts.append(await _tcp_ping(ip, port, deadline))
    return ProbeResult(
        kind="icmp",
        target=options.label,
        up=True,
        method=f"tcp-fallback:{port}",
        sent=sent,
        received=len(rtts),
        loss_ratio=1 - len(rtts) / sent,
        rtt_seconds=sum(rtts) / len(rtts),
        rtt_min_seconds=min(rtts),
        rtt_max_seconds=max(rtts),
        jitter_seconds=rfc3550_jitter(rtts),
    )


async def probe(options: Options) -> ProbeResult:
    """Send a burst of echoes to ``address`` and summarise the replies."""
    deadline = Deadline(options.timeout)
    try:
        addresses = await resolve(options.address, kind=socket.SOCK_DGRAM, family=options.family)
    except ProbeFailed as exc:
        return with_family(failure(options, exc.error, exc.detail), options, None)
    family, sockaddr = addresses[0]
    # The port field of the address is ignored by ICMP sockets but must be 0 for raw ones.
    sockaddr = (sockaddr[0], 0, *sockaddr[2:])
    if sys.platform == "win32":
        from agent.probes import icmp_windows

        result = await icmp_windows.burst(options, family, sockaddr, deadline)
        return with_family(result, options, family)
    sock, method, refusals = _open_socket(family)
    if sock is None:
        return with_family(
            await _tcp_fallback(options, sockaddr[0], refusals, deadline), options, family
        )
    with sock:
        result = await _burst(options, sock, method, family, sockaddr, deadline)
    return with_family(result, options, family)

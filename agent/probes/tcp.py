"""TCP connect: time to establish a connection to host:port.

The name is resolved first (its time is not the connect time), then each address is
tried in order until one answers; a refusal is an answer (the host is there, the port
is closed), so it ends the probe as ``refused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from agent.probes.base import (
    Deadline,
    ProbeFailed,
    TargetOptions,
    check_host,
    check_timeout,
    describe,
    failure,
    format_host_port,
    reason_for,
    resolve,
    split_host_port,
    with_family,
)
from agent.report import ProbeResult


class Options(TargetOptions, frozen=True, tag="tcp"):
    def __post_init__(self) -> None:
        host, _ = split_host_port(self.address)
        check_host(host)
        check_timeout(self.timeout)


async def connect_time(host: str, port: int) -> float:
    """Open and close one TCP connection to an IP address; return the connect time.

    Raises OSError (ConnectionRefusedError, unreachable...); the caller bounds the time.
    """
    start = time.monotonic()
    _, writer = await asyncio.open_connection(host, port)
    elapsed = time.monotonic() - start
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    return elapsed


async def probe(options: Options) -> ProbeResult:
    """Connect to ``address`` and report the connect time or why it failed."""
    host, port = split_host_port(options.address)
    deadline = Deadline(options.timeout)
    try:
        addresses = await resolve(host, port, family=options.family)
    except ProbeFailed as exc:
        return with_family(failure(options, exc.error, exc.detail), options, None)
    last: BaseException | None = None
    tried = ""
    used: int | None = None
    for family, sockaddr in addresses:
        ip = sockaddr[0]
        used = family
        tried = format_host_port(ip, port)
        remaining = deadline.remaining()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                rtt = await connect_time(ip, port)
        except (OSError, TimeoutError) as exc:
            last = exc
            if isinstance(exc, ConnectionRefusedError):
                break
            continue
        up = ProbeResult(
            kind="tcp", target=options.label, up=True, rtt_seconds=rtt, method=f"tcp:{port}"
        )
        return with_family(up, options, family)
    if last is None:
        down = failure(options, "timeout", f"connect to {tried}: timed out")
    else:
        down = failure(options, reason_for(last), f"connect to {tried}: {describe(last)}")
    return with_family(down, options, used)

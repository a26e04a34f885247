"""ICMP echo burst: RTT min/avg/max, loss and RFC 3550 jitter.

Tries an unprivileged ICMP datagram socket (Linux ``ping_group_range``) first, then a
raw socket when the process may open one, and as the last resort a TCP connect to
``fallback_ports`` (a refusal also proves the host is there). ``method`` says which.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from agent.probes.base import PortNumber, TargetOptions, check_host
from agent.report import ProbeResult
from agent.units import Duration


class Options(TargetOptions, frozen=True, tag="icmp"):
    count: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    interval: Duration = Duration(0.2)  # between echoes of one burst
    payload_size: Annotated[int, msgspec.Meta(ge=0, le=1472)] = 56
    fallback_ports: Annotated[list[PortNumber], msgspec.Meta(max_length=8)] = msgspec.field(
        default_factory=lambda: [443, 80]
    )

    def __post_init__(self) -> None:
        check_host(self.address)


async def probe(options: Options) -> ProbeResult:
    raise NotImplementedError

"""DNS query to a named resolver (not the OS cache): answer, rcode and time."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from agent.probes.base import TargetOptions, check_host, split_host_port
from agent.report import ProbeResult


class Options(TargetOptions, frozen=True, tag="dns"):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    record_type: Literal["A", "AAAA", "CNAME", "MX", "NS", "SOA", "TXT", "PTR", "SRV"] = "A"
    transport: Literal["udp", "tcp"] = "udp"
    expect_answer: bool = True  # NOERROR with no answer is "down" unless this is false

    def __post_init__(self) -> None:
        host, _ = split_host_port(self.address, default_port=53)
        check_host(host)
        check_host(self.query)


async def probe(options: Options) -> ProbeResult:
    raise NotImplementedError

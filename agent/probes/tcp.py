"""TCP connect: time to establish a connection to host:port."""

from __future__ import annotations

from agent.probes.base import TargetOptions, check_host, split_host_port
from agent.report import ProbeResult


class Options(TargetOptions, frozen=True, tag="tcp"):
    def __post_init__(self) -> None:
        host, _ = split_host_port(self.address)
        check_host(host)


async def probe(options: Options) -> ProbeResult:
    raise NotImplementedError

"""HTTP(S) GET: status, time to first byte, certificate expiry, optional throughput.

Uses the standard library's client in a worker thread so that the host role does not
import aiohttp (its memory budget is tight; see bench/).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from agent.probes.base import TargetOptions, check_host
from agent.report import ProbeResult
from agent.units import Size


class Options(TargetOptions, frozen=True, tag="http"):
    method: Literal["GET", "HEAD"] = "GET"
    valid_status_codes: Annotated[
        list[Annotated[int, msgspec.Meta(ge=100, le=599)]], msgspec.Meta(max_length=32)
    ] = []  # empty: 2xx and 3xx
    verify_tls: bool = True
    ca_file: str | None = None
    throughput: bool = False  # read the body (up to max_bytes) and report bytes/s
    max_bytes: Size = Size(1_000_000)

    def __post_init__(self) -> None:
        parts = urlsplit(self.address)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"invalid URL {self.address!r}: scheme must be http or https")
        if not parts.hostname:
            raise ValueError(f"invalid URL {self.address!r}: host missing")
        check_host(parts.hostname)


async def probe(options: Options) -> ProbeResult:
    raise NotImplementedError

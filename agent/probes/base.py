"""What every probe kind shares: its target options base and the probe function type."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Protocol, TypeVar

import msgspec

from agent.report import ProbeResult
from agent.units import Duration

PortNumber = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class TargetOptions(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="kind"
):
    """Options common to every target; each kind subclasses it with ``tag=<kind>``.

    The runner enforces ``timeout`` as the deadline of the whole check (all packets).
    """

    address: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    timeout: Duration = Duration(5.0)
    name: Annotated[str, msgspec.Meta(max_length=128)] | None = None  # label shown to people

    @property
    def kind(self) -> str:
        """The probe kind, from the struct tag."""
        return str(type(self).__struct_config__.tag)

    @property
    def label(self) -> str:
        """How the target is shown in reports and metrics."""
        return self.name or self.address


_O_contra = TypeVar("_O_contra", bound=TargetOptions, contravariant=True)


class ProbeFn(Protocol[_O_contra]):
    """A probe: returns a result for anything the target did; raises only on bugs."""

    async def __call__(self, options: _O_contra, /) -> ProbeResult: ...


def split_host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port``; raise ValueError naming what is missing."""
    host: str
    port_text: str | None
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep:
            raise ValueError("unclosed '[' in IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected text after IPv6 address: {rest!r}")
    elif address.count(":") == 1:
        host, _, port_text = address.partition(":")
    else:
        host, port_text = address, None  # bare host or bare IPv6 address
    if not host:
        raise ValueError("host missing")
    if port_text is None or port_text == "":
        if default_port is None:
            raise ValueError("port missing (expected host:port)")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r} (expected 1-65535)")
    return host, int(port_text)


def check_host(host: str) -> None:
    """Accept an IP address or a DNS name; raise ValueError otherwise."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    ):
        raise ValueError(f"invalid host {host!r} (expected an IP address or a DNS name)")

"""What every probe kind shares: target options, the probe function type, and the
helpers that turn socket and resolver failures into the fixed error reasons."""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import ssl
import time
from typing import Annotated, Final, Literal, Protocol, TypeVar

import msgspec

from agent.report import AddressFamily, ErrorReason, ProbeResult
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
    # Which IP version to check over. "any": IPv4 first when the name has both (offices'
    # IPv6 is often configured but not routed); "ipv6" checks the target's IPv6 path only,
    # which is what the ipv6 indicator counts (docs/indicators.md).
    family: Literal["any", "ipv4", "ipv6"] = "any"

    @property
    def kind(self) -> str:
        """The probe kind, from the struct tag."""
        return str(type(self).__struct_config__.tag)

    @property
    def label(self) -> str:
        """How the target is shown in reports and metrics."""
        return self.name or self.address


def check_timeout(timeout: float) -> None:
    """Reject timeouts that make a check meaningless or let it outlive a cycle."""
    if not 0.01 <= timeout <= 300:
        raise ValueError(f"timeout: {timeout:g}s is out of range (expected 10ms to 5m)")


_O_contra = TypeVar("_O_contra", bound=TargetOptions, contravariant=True)


class ProbeFn(Protocol[_O_contra]):
    """A probe: returns a result for anything the target did; raises only on bugs."""

    async def __call__(self, options: _O_contra, /) -> ProbeResult: ...


class ProbeFailed(Exception):
    """Ends a probe early with a failure result (raised and caught inside probe modules)."""

    def __init__(self, error: ErrorReason, detail: str) -> None:
        super().__init__(detail)
        self.error: ErrorReason = error
        self.detail = detail


def failure(options: TargetOptions, error: ErrorReason, detail: str) -> ProbeResult:
    """A down result for ``options`` with a reason and a short English detail."""
    return ProbeResult(
        kind=options.kind,  # type: ignore[arg-type]
        target=options.label,
        up=False,
        error=error,
        detail=detail[:1024],
    )


def split_host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port``; raise ValueError naming what is missing."""
    host: str
    port_text: str | None
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep:
            raise ValueError("address: unclosed '[' in IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and not rest.startswith(":"):
            raise ValueError(f"address: unexpected text after IPv6 address: {rest!r}")
    elif address.count(":") == 1:
        host, _, port_text = address.partition(":")
    else:
        host, port_text = address, None  # bare host or bare IPv6 address
    if not host:
        raise ValueError("address: host missing")
    if port_text is None or port_text == "":
        if default_port is None:
            raise ValueError("address: port missing (expected host:port)")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"address: invalid port {port_text!r} (expected 1-65535)")
    return host, int(port_text)


def check_host(host: str, key: str = "address") -> None:
    """Accept an IP address (IPv6 may carry a ``%zone``) or a DNS name; raise ValueError."""
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
        raise ValueError(f"{key}: invalid host {host!r} (expected an IP address or a DNS name)")


def format_host_port(host: str, port: int) -> str:
    """``host:port`` with IPv6 addresses in brackets, as people write them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_UNREACHABLE = {
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
    *(
        getattr(errno, name)
        for name in ("WSAEHOSTUNREACH", "WSAENETUNREACH", "WSAEHOSTDOWN", "WSAENETDOWN")
        if hasattr(errno, name)
    ),
}
_TIMED_OUT = {errno.ETIMEDOUT, *([errno.WSAETIMEDOUT] if hasattr(errno, "WSAETIMEDOUT") else [])}
_DENIED = {errno.EACCES, errno.EPERM}


def reason_for(exc: BaseException) -> ErrorReason:
    """Map a socket, resolver or TLS exception to the fixed error reason."""
    if isinstance(exc, ProbeFailed):
        return exc.error
    if isinstance(exc, socket.gaierror):
        return "dns_error"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls_error"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, PermissionError):
        return "permission_denied"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in _UNREACHABLE:
            return "unreachable"
        if exc.errno in _TIMED_OUT:
            return "timeout"
        if exc.errno in _DENIED:
            return "permission_denied"
    return "network_error"


def describe(exc: BaseException) -> str:
    """A short, stable English text for an exception (no tracebacks, no reprs of objects)."""
    if isinstance(exc, ProbeFailed):
        return exc.detail
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc.strerror or type(exc).__name__}"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        # asyncio wraps connect errors ("Connect call failed ..."); the errno says it plainly.
        text = os.strerror(exc.errno) if exc.errno else ""
        if not text or text.startswith("Unknown error"):
            text = exc.strerror or text
        return text[:1].lower() + text[1:]
    return str(exc) or type(exc).__name__


_FAMILIES: Final[dict[str, socket.AddressFamily]] = {
    "any": socket.AF_UNSPEC,
    "ipv4": socket.AF_INET,
    "ipv6": socket.AF_INET6,
}


def family_name(family: int) -> AddressFamily:
    """``ipv4`` or ``ipv6`` for a socket address family (ProbeResult.family)."""
    return "ipv6" if family == socket.AF_INET6 else "ipv4"


def with_family(result: ProbeResult, options: TargetOptions, family: int | None) -> ProbeResult:
    """Set ``result.family``: the family used, else the one the target was limited to."""
    if family is not None:
        result.family = family_name(family)
    elif options.family != "any":
        result.family = "ipv6" if options.family == "ipv6" else "ipv4"
    return result


async def resolve(
    host: str,
    port: int = 0,
    *,
    kind: socket.SocketKind = socket.SOCK_STREAM,
    family: str = "any",
) -> list[tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]]:
    """Resolve a host with the OS resolver; raise ProbeFailed(dns_error) when it fails.

    IP literals are answered without a lookup (and without a thread): a LAN target by
    address never waits for a resolver. Names go through their own bounded lane of
    threads, one lookup per name at a time (a hung one is shared by later callers), so
    a resolver hanging in an internet outage cannot starve other kinds of checks.
    IPv4 answers come first unless the name has only IPv6 ones, because offices' IPv6 is
    often configured but not routed.
    ``family`` (a target's ``family`` option) keeps only the answers of one IP version.
    """
    literal = _literal(host, port)
    if literal is not None:
        if family != "any" and family_name(literal[0]) != family:
            raise ProbeFailed("dns_error", f"resolve {host}: not an {family} address")
        return [literal]
    from agent.probes.blocking import RESOLVE

    try:
        infos = await RESOLVE.run(
            (host, port, kind, family),
            functools.partial(socket.getaddrinfo, host, port, family=_FAMILIES[family], type=kind),
            share=True,
        )
    except (socket.gaierror, UnicodeError) as exc:
        if family != "any" and isinstance(exc, socket.gaierror):
            raise ProbeFailed(
                "dns_error", f"resolve {host}: no {family} address ({describe(exc)})"
            ) from None
        raise ProbeFailed("dns_error", f"resolve {host}: {describe(exc)}") from None
    seen: set[tuple[object, ...]] = set()
    found: list[tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]] = []
    for af, _, _, _, sockaddr in sorted(infos, key=lambda i: i[0] != socket.AF_INET):
        if af not in (socket.AF_INET, socket.AF_INET6) or sockaddr in seen:
            continue
        seen.add(sockaddr)
        found.append((af, sockaddr))  # type: ignore[arg-type]
    if not found:
        wanted = "IPv4 or IPv6" if family == "any" else family
        raise ProbeFailed("dns_error", f"resolve {host}: no {wanted} address")
    return found


def _literal(
    host: str, port: int
) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]] | None:
    """The socket address of an IP literal, else None (a ``%zone`` needs the OS)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return socket.AF_INET, (str(ip), port)
    if ip.scope_id:
        return None
    return socket.AF_INET6, (str(ip), port, 0, 0)


class Deadline:
    """The time a probe must finish by, a little before the runner's hard cut.

    Probes that measure several packets stop on their own at this deadline so that they
    can report what they saw (e.g. 3 of 5 replies) instead of being cancelled blind.
    """

    def __init__(self, timeout: float) -> None:
        margin = min(0.25, timeout * 0.05)
        self.at = time.monotonic() + timeout - margin

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self.at

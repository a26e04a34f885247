"""Default gateway detection: the LAN check's target when no lan target is configured.

Linux reads ``/proc/net/route`` and ``/proc/net/ipv6_route`` (per network namespace, no
tool needed). Windows runs ``route print`` and parses its table; the parser is a pure
function tested on captured output. The table is read by shape, not by its headings,
because Windows translates the headings (a Vietnamese Windows prints Vietnamese ones).
Other platforms raise ``RouteError`` saying so, rather than guessing.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent import subproc

_RTF_UP = 0x0001
_RTF_GATEWAY = 0x0002
_RTF_REJECT = 0x0200
_ANY4 = "0.0.0.0"  # noqa: S104 - the default destination, not a bind address


class RouteError(Exception):
    """The routing table could not be read (message says why, in English)."""


@dataclass(frozen=True, slots=True)
class DefaultRoute:
    """One default route: where packets leave when nothing more specific matches."""

    gateway: str  # IPv6 link-local gateways carry their zone, e.g. fe80::1%eth0
    family: Literal[4, 6]
    interface: str | None = None  # Linux: name; Windows: the interface address or index
    metric: int = 0


def parse_proc_net_route(text: str) -> list[DefaultRoute]:
    """Default routes from the text of Linux ``/proc/net/route``, best metric first."""
    routes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, destination, gateway, flags, _, _, metric, mask = fields[:8]
        try:
            flag_bits = int(flags, 16)
            if int(destination, 16) or int(mask, 16):
                continue
            gw = socket.inet_ntoa(struct.pack("<I", int(gateway, 16)))
        except (ValueError, struct.error):
            continue
        wanted = _RTF_UP | _RTF_GATEWAY
        if flag_bits & wanted != wanted or flag_bits & _RTF_REJECT or gw == _ANY4:
            continue
        routes.append(DefaultRoute(gw, 4, iface, int(metric)))
    return sorted(routes, key=lambda r: r.metric)


def parse_proc_net_ipv6_route(text: str) -> list[DefaultRoute]:
    """Default routes from the text of Linux ``/proc/net/ipv6_route``, best metric first."""
    routes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        destination, prefix, _, _, next_hop, metric, _, _, flags, iface = fields[:10]
        try:
            if int(destination, 16) or int(prefix, 16):
                continue
            flag_bits = int(flags, 16)
            gw = ipaddress.IPv6Address(bytes.fromhex(next_hop))
            metric_value = int(metric, 16)
        except ValueError:
            continue
        wanted = _RTF_UP | _RTF_GATEWAY
        if flag_bits & wanted != wanted or flag_bits & _RTF_REJECT or gw.is_unspecified:
            continue
        if iface == "lo":
            continue
        text_gw = f"{gw}%{iface}" if gw.is_link_local else str(gw)
        routes.append(DefaultRoute(text_gw, 6, iface, metric_value))
    return sorted(routes, key=lambda r: r.metric)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text.split("%")[0]).version == version
    except ValueError:
        return False


def parse_route_print(text: str) -> list[DefaultRoute]:
    """Default routes from Windows ``route print`` output (both families), best metric first.

    IPv4 active routes are five columns (destination, netmask, gateway, interface,
    metric); "On-link" in the gateway column means no gateway. Persistent routes have
    four columns and are skipped: only active routes carry traffic. IPv6 active routes
    are four columns (interface index, metric, destination, gateway), and the gateway
    may wrap to the next line when the destination is long.
    """
    routes = []
    lines = text.splitlines()
    for n, line in enumerate(lines):
        fields = line.split()
        if len(fields) == 5 and fields[0] == _ANY4 and fields[1] == _ANY4:
            gateway, interface, metric = fields[2], fields[3], fields[4]
            if _is_ip(gateway, 4) and gateway != _ANY4 and metric.isdigit():
                routes.append(DefaultRoute(gateway, 4, interface, int(metric)))
        elif len(fields) in (3, 4) and fields[2] == "::/0" and fields[0].isdigit():
            gateway = fields[3] if len(fields) == 4 else ""
            if not gateway and n + 1 < len(lines):
                gateway = lines[n + 1].strip()
            if _is_ip(gateway, 6) and fields[1].isdigit():
                zoned = f"{gateway}%{fields[0]}" if gateway.lower().startswith("fe80") else gateway
                routes.append(DefaultRoute(zoned, 6, fields[0], int(fields[1])))
    return sorted(routes, key=lambda r: (r.family, r.metric))


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return ""  # e.g. IPv6 disabled in the kernel
    except OSError as exc:
        raise RouteError(f"cannot read {path}: {exc.strerror}") from exc


def _linux() -> list[DefaultRoute]:
    return parse_proc_net_route(_read("/proc/net/route")) + parse_proc_net_ipv6_route(
        _read("/proc/net/ipv6_route")
    )


def run_route_print(timeout: float = 10.0) -> str:
    """Run Windows ``route print`` and return its output (raises RouteError on failure)."""
    try:
        proc = subproc.run(["route", "print"], timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RouteError(f"route print failed: {exc}") from exc
    if proc.returncode != 0:
        raise RouteError(f"route print exited with status {proc.returncode}")
    # The console code page varies; addresses are ASCII, headings may be mangled.
    return proc.stdout.decode("ascii", errors="replace")


def default_routes(
    platform: str = sys.platform, run: Callable[[], str] = run_route_print
) -> list[DefaultRoute]:
    """This machine's default routes, IPv4 first, each family best metric first."""
    if platform.startswith("linux"):
        return _linux()
    if platform == "win32":
        return parse_route_print(run())
    raise RouteError(f"default gateway detection is not supported on {platform}")


def default_gateways(routes: list[DefaultRoute]) -> list[DefaultRoute]:
    """The gateway to probe per family: the best-metric default route of IPv4 and IPv6."""
    chosen: dict[int, DefaultRoute] = {}
    for route in routes:
        if route.family not in chosen or route.metric < chosen[route.family].metric:
            chosen[route.family] = route
    return [chosen[f] for f in (4, 6) if f in chosen]

"""Default gateway detection: parsers on captured output, and Linux inside a namespace."""

# ruff: noqa: E501 - captured output keeps its real line length

from __future__ import annotations

import pytest

from agent.route import (
    DefaultRoute,
    RouteError,
    default_gateways,
    default_routes,
    parse_proc_net_ipv6_route,
    parse_proc_net_route,
    parse_route_print,
)
from tests import netns
from tests.agent.probes.nsrun import run_in

# Captured from a Debian 12 office PC (wired eth0 with DHCP, plus a lower-priority Wi-Fi).
PROC_NET_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0000000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0
"""

PROC_NET_IPV6_ROUTE = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000002 00000000 00450003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
"""

# `route print` on Windows 10 22H2 (English), a PC on an office LAN with IPv6 from the router.
ROUTE_PRINT_EN = """\
===========================================================================
Interface List
 12...00 15 5d 01 0a 02 ......Intel(R) Ethernet Connection (2) I219-LM
  1...........................Software Loopback Interface 1
===========================================================================

IPv4 Route Table
===========================================================================
Active Routes:
Network Destination        Netmask          Gateway       Interface  Metric
          0.0.0.0          0.0.0.0      192.168.1.1    192.168.1.105     25
        127.0.0.0        255.0.0.0         On-link         127.0.0.1    331
        127.0.0.1  255.255.255.255         On-link         127.0.0.1    331
  127.255.255.255  255.255.255.255         On-link         127.0.0.1    331
      192.168.1.0    255.255.255.0         On-link     192.168.1.105    281
    192.168.1.105  255.255.255.255         On-link     192.168.1.105    281
    192.168.1.255  255.255.255.255         On-link     192.168.1.105    281
        224.0.0.0        240.0.0.0         On-link         127.0.0.1    331
        224.0.0.0        240.0.0.0         On-link     192.168.1.105    281
  255.255.255.255  255.255.255.255         On-link         127.0.0.1    331
  255.255.255.255  255.255.255.255         On-link     192.168.1.105    281
===========================================================================
Persistent Routes:
  Network Address          Netmask  Gateway Address  Metric
          0.0.0.0          0.0.0.0      192.168.9.1  Default
===========================================================================

IPv6 Route Table
===========================================================================
Active Routes:
 If Metric Network Destination      Gateway
 12    281 ::/0                     fe80::1
  1    331 ::1/128                  On-link
 12    281 fe80::/64                On-link
 12    281 fe80::8d4:2c1a:5e3b:9f01/128
                                    On-link
  1    331 ff00::/8                 On-link
 12    281 ff00::/8                 On-link
===========================================================================
Persistent Routes:
  None
"""

# Vietnamese Windows 10 with a VPN to the provincial WAN; the console code page mangles
# the headings when decoded as ASCII, which is exactly what the parser must survive.
ROUTE_PRINT_VI = """\
===========================================================================
Danh s?ch Giao di?n
 17...00 ff 3c 5e 11 aa ......FortiClient Virtual Ethernet Adapter
 11...d4 be d9 11 22 33 ......Realtek PCIe GbE Family Controller
===========================================================================

B?ng ??nh tuy?n IPv4
===========================================================================
Tuy?n ?ang ho?t ??ng:
??ch m?ng          M?t n? m?ng        C?ng v?o       Giao di?n  S? li?u
          0.0.0.0          0.0.0.0       10.10.0.1      10.10.0.57     35
          0.0.0.0          0.0.0.0    172.16.20.1   172.16.20.34     25
        10.10.0.0      255.255.0.0         On-link      10.10.0.57    291
      172.16.20.0    255.255.255.0         On-link   172.16.20.34    281
===========================================================================
Tuy?n li?n t?c:
  Kh?ng c?

B?ng ??nh tuy?n IPv6
===========================================================================
Tuy?n ?ang ho?t ??ng:
  Kh?ng c?
"""


def test_proc_net_route_picks_default_routes_by_metric() -> None:
    assert parse_proc_net_route(PROC_NET_ROUTE) == [
        DefaultRoute("10.0.0.1", 4, "eth0", 100),
        DefaultRoute("192.168.1.1", 4, "wlan0", 600),
    ]


def test_proc_net_ipv6_route_keeps_zone_and_skips_reject_routes() -> None:
    assert parse_proc_net_ipv6_route(PROC_NET_IPV6_ROUTE) == [
        DefaultRoute("fe80::1%eth0", 6, "eth0", 1024)
    ]


def test_route_print_english() -> None:
    assert parse_route_print(ROUTE_PRINT_EN) == [
        DefaultRoute("192.168.1.1", 4, "192.168.1.105", 25),
        DefaultRoute("fe80::1%12", 6, "12", 281),
    ]


def test_route_print_vietnamese_with_vpn() -> None:
    routes = parse_route_print(ROUTE_PRINT_VI)
    assert routes == [
        DefaultRoute("172.16.20.1", 4, "172.16.20.34", 25),
        DefaultRoute("10.10.0.1", 4, "10.10.0.57", 35),
    ]
    assert default_gateways(routes) == [DefaultRoute("172.16.20.1", 4, "172.16.20.34", 25)]


def test_route_print_without_gateway() -> None:
    offline = "\n".join(
        line
        for line in ROUTE_PRINT_EN.splitlines()
        if "::/0" not in line and " 0.0.0.0 " not in line
    )
    assert parse_route_print(offline) == []
    assert parse_route_print("") == []


def test_windows_runs_route_print_through_the_injected_runner() -> None:
    assert default_routes("win32", run=lambda: ROUTE_PRINT_EN)[0].gateway == "192.168.1.1"

    def failing() -> str:
        raise RouteError("route print exited with status 1")

    with pytest.raises(RouteError, match="status 1"):
        default_routes("win32", run=failing)


def test_unsupported_platform_says_so() -> None:
    with pytest.raises(RouteError, match="not supported on sunos5"):
        default_routes("sunos5")


@pytest.mark.netns
def test_linux_reads_the_namespace_routing_table(topo: netns.Topology) -> None:
    host, router = topo.add("host"), topo.add("router", forward=True)
    host_dev, _ = topo.link(host, router, "10.27.0.10/24", "10.27.0.1/24")
    assert run_in(host, "routes") == []  # no default route yet
    host.ip("route", "add", "default", "via", "10.27.0.1")
    host.ip("-6", "route", "add", "default", "via", "fe80::1", "dev", host_dev)
    assert run_in(host, "routes") == [
        {"gateway": "10.27.0.1", "family": 4, "interface": host_dev, "metric": 0},
        {"gateway": f"fe80::1%{host_dev}", "family": 6, "interface": host_dev, "metric": 1024},
    ]

"""What kind of device a MAC belongs to: vendor from the OUI, then an optional port check.

The vendor comes from scapy's bundled Wireshark ``manuf`` database. Vendor names map
to the kinds of device that vendor sells on office LANs, most likely first; a light
TCP connect check (when ``discovery.port_check`` is on) settles the vendors that make
several kinds (HP: PCs and printers; Huawei: routers and phones). docs/discovery.md
says how often this is right and where it is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from agent.report import HostKind

COMPUTER_PORTS: Final = (445, 3389, 135)  # SMB, RDP, MS-RPC: Windows PCs and servers
PRINTER_PORTS: Final = (9100, 631, 515)  # JetDirect raw, IPP, LPD
MANAGEMENT_PORTS: Final = (22, 23, 80, 443)  # SSH, telnet, web UI of switches and routers
CHECK_PORTS: Final = COMPUTER_PORTS + PRINTER_PORTS + MANAGEMENT_PORTS

# Vendor name fragments (lower case, matched against manuf's long name) and the kinds
# that vendor's devices on an office LAN are, most likely first. This is knowledge
# about vendors, not an OUI table: the OUI → vendor step is the manuf database.
VENDOR_KINDS: Final[tuple[tuple[str, tuple[HostKind, ...]], ...]] = (
    # printers and multifunction devices
    ("brother", ("printer",)),
    ("seiko epson", ("printer",)),
    ("canon", ("printer",)),
    ("kyocera", ("printer",)),
    ("ricoh", ("printer",)),
    ("xerox", ("printer",)),
    ("lexmark", ("printer",)),
    ("konica minolta", ("printer",)),
    ("sharp", ("printer",)),
    ("oki data", ("printer",)),
    ("toshiba tec", ("printer",)),
    ("zebra", ("printer",)),
    ("pantum", ("printer",)),
    # network gear
    ("cisco", ("network", "phone")),  # Cisco also sells IP phones
    ("juniper", ("network",)),
    ("routerboard", ("network",)),  # MikroTik
    ("mikrotik", ("network",)),
    ("tp-link", ("network",)),
    ("d-link", ("network",)),
    ("netgear", ("network",)),
    ("ubiquiti", ("network",)),
    ("aruba", ("network",)),
    ("zyxel", ("network",)),
    ("draytek", ("network",)),
    ("fortinet", ("network",)),
    ("ruijie", ("network",)),
    ("new h3c", ("network",)),
    ("h3c", ("network",)),
    ("allied telesis", ("network",)),
    ("extreme networks", ("network",)),
    ("arista", ("network",)),
    ("edgecore", ("network",)),
    ("tenda", ("network",)),
    ("totolink", ("network",)),
    ("linksys", ("network",)),
    ("sophos", ("network",)),
    ("palo alto", ("network",)),
    ("sonicwall", ("network",)),
    ("check point", ("network",)),
    ("vnpt technology", ("network",)),  # the ISP routers of most Vietnamese offices
    ("huawei", ("network", "phone")),
    ("zte", ("network", "phone")),
    ("hewlett packard enterprise", ("network", "computer")),
    # computers
    ("dell", ("computer",)),
    ("lenovo", ("computer",)),
    ("hewlett packard", ("computer", "printer", "network")),
    ("hp inc", ("computer", "printer")),
    ("acer", ("computer",)),
    ("asustek", ("computer", "network")),
    ("giga-byte", ("computer",)),
    ("micro-star", ("computer",)),
    ("asrock", ("computer",)),
    ("intel corporate", ("computer",)),
    ("realtek", ("computer",)),
    ("fujitsu", ("computer",)),
    ("elitegroup", ("computer",)),
    ("super micro", ("computer",)),
    ("vmware", ("computer",)),
    ("microsoft", ("computer",)),
    ("liteon", ("computer",)),
    ("azurewave", ("computer",)),
    ("apple", ("computer", "phone")),
    # phones and tablets
    ("samsung", ("phone", "computer", "printer")),
    ("xiaomi", ("phone",)),
    ("oppo", ("phone",)),
    ("vivo mobile", ("phone",)),
    ("realme", ("phone",)),
    ("oneplus", ("phone",)),
    ("motorola mobility", ("phone",)),
    ("nokia", ("phone", "network")),
    ("htc", ("phone",)),
    ("yealink", ("phone",)),  # VoIP desk phones
    ("grandstream", ("phone",)),
    ("polycom", ("phone",)),
    ("avaya", ("phone",)),
)

_VENDOR_PATTERNS: Final = tuple(
    (re.compile(rf"\b{re.escape(fragment)}\b"), kinds) for fragment, kinds in VENDOR_KINDS
)

# Hypervisor prefixes that are locally administered, so not in manuf.
_VIRTUAL_PREFIXES: Final = {"52:54:00": "QEMU/KVM virtual NIC", "02:42": "Docker"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A kind and the short reason shown in the report (``kind_reason``)."""

    kind: HostKind
    reason: str


def vendor(mac: str) -> str | None:
    """The vendor name of a MAC from scapy's manuf database, or None when unknown."""
    mac = mac.lower()
    for prefix, name in _VIRTUAL_PREFIXES.items():
        if mac.startswith(prefix):
            return name
    from scapy.config import conf

    _, long_name = conf.manufdb.lookup(mac)
    return None if long_name == mac else str(long_name)


def is_randomised(mac: str) -> bool:
    """True for locally administered MACs: phones' private addresses, VMs, containers."""
    return bool(int(mac[:2], 16) & 0x02)


def vendor_kinds(vendor_name: str | None) -> tuple[HostKind, ...]:
    """The kinds a vendor's devices are, most likely first; () when unknown."""
    if not vendor_name:
        return ()
    name = vendor_name.lower()
    if "virtual nic" in name or name == "docker":
        return ("computer",)
    for pattern, kinds in _VENDOR_PATTERNS:
        if pattern.search(name):
            return kinds
    return ()


def classify(
    mac: str,
    vendor_name: str | None,
    open_ports: Iterable[int] | None = None,
    *,
    snmp_device: bool = False,
    has_agent: bool = False,
) -> Verdict:
    """Decide a kind: agent and SNMP facts first, then ports, then the vendor."""
    if has_agent:
        return Verdict("computer", "runs the hatang agent")
    if snmp_device:
        return Verdict("network", "polled over SNMP")
    ports = set(open_ports) if open_ports is not None else None
    kinds = vendor_kinds(vendor_name)
    label = f"vendor {vendor_name}" if vendor_name else "unknown vendor"
    if ports:
        # Each tuple lists its ports strongest signal first; the reason names that one.
        found: list[int]
        if found := [p for p in PRINTER_PORTS if p in ports]:
            return Verdict("printer", f"tcp/{found[0]} open")
        if found := [p for p in COMPUTER_PORTS if p in ports]:
            return Verdict("computer", f"tcp/{found[0]} open")
        if (found := [p for p in MANAGEMENT_PORTS if p in ports]) and "network" in kinds:
            return Verdict("network", f"{label}, tcp/{found[0]} open")
    if kinds:
        if len(kinds) == 1:
            return Verdict(kinds[0], label)
        others = ", ".join(kinds[1:])
        return Verdict(kinds[0], f"{label} (could also be {others})")
    if is_randomised(mac):
        if ports is not None:
            # Checked and no computer or printer port answered: private Wi-Fi addresses
            # of phones and tablets are by far the most common case.
            return Verdict("phone", "randomised MAC, no computer/printer port open")
        return Verdict("unknown", "randomised MAC")
    return Verdict("unknown", label)


async def _open(ip: str, port: int, connect_timeout: float) -> bool:
    try:
        async with asyncio.timeout(connect_timeout):
            _, writer = await asyncio.open_connection(ip, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def check_ports(
    ips: Sequence[str],
    *,
    ports: Sequence[int] = CHECK_PORTS,
    connect_timeout: float = 0.5,
    concurrency: int = 32,
) -> dict[str, list[int]]:
    """TCP-connect each port of each address (bounded concurrency); return open ports."""
    gate = asyncio.Semaphore(concurrency)

    async def one(ip: str, port: int) -> tuple[str, int, bool]:
        async with gate:
            return ip, port, await _open(ip, port, connect_timeout)

    results = await asyncio.gather(*(one(ip, p) for ip in ips for p in ports))
    found: dict[str, list[int]] = {ip: [] for ip in ips}
    for ip, port, is_open in results:
        if is_open:
            found[ip].append(port)
    return {ip: sorted(p) for ip, p in found.items()}

"""Host inventory, collected for real and checked against independent sources."""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
import shutil
import socket
import sys
import uuid
from pathlib import Path

import msgspec
import psutil
import pytest

from agent.inventory import host
from agent.report import HostInventory, Id, encode
from tests import netns

# Real /proc/cpuinfo excerpts (first processor only).
CPUINFO_X86 = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 158
model name\t: Intel(R) Core(TM) i5-8500 CPU @ 3.00GHz
stepping\t: 10
cpu MHz\t\t: 3000.000
"""
CPUINFO_RPI3 = """\
processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer\t: 0x41

Hardware\t: BCM2835
Revision\t: a02082
Serial\t\t: 00000000a1b2c3d4
Model\t\t: Raspberry Pi 3 Model B Rev 1.2
"""
CPUINFO_AARCH64 = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU part\t: 0xd08

Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
OS_RELEASE_DEBIAN = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
HOME_URL="https://www.debian.org/"
"""


def test_parse_cpuinfo_real_formats() -> None:
    assert host.parse_cpuinfo(CPUINFO_X86) == "Intel(R) Core(TM) i5-8500 CPU @ 3.00GHz"
    assert host.parse_cpuinfo(CPUINFO_RPI3) == "ARMv7 Processor rev 4 (v7l)"
    assert host.parse_cpuinfo(CPUINFO_AARCH64) == "Raspberry Pi 4 Model B Rev 1.4"
    assert host.parse_cpuinfo("processor\t: 0\n") is None


def test_parse_os_release() -> None:
    values = host.parse_os_release(OS_RELEASE_DEBIAN + "# comment\nVARIANT='Server'\n")
    assert values["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert values["ID"] == "debian"
    assert values["VARIANT"] == "Server"


def test_collect_matches_the_system() -> None:
    inventory = host.collect()
    assert inventory.error is None
    assert inventory.hostname == socket.gethostname()
    assert inventory.os == platform.system()
    assert inventory.memory_bytes == psutil.virtual_memory().total
    assert inventory.cpu_count == psutil.cpu_count(logical=True)
    assert inventory.architecture == platform.machine()
    assert inventory.python_version == platform.python_version()
    assert inventory.agent_version == "0.1.0"
    assert inventory.boot_time is not None
    assert inventory.boot_time.tzinfo is not None
    expected_boot = dt.datetime.fromtimestamp(psutil.boot_time(), dt.UTC)
    assert abs((inventory.boot_time - expected_boot).total_seconds()) < 2
    if sys.platform.startswith("linux"):
        assert inventory.os_release == platform.freedesktop_os_release()["PRETTY_NAME"]
        assert inventory.os_version == platform.release()
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        assert inventory.cpu_model is not None
        assert inventory.cpu_model in cpuinfo


def test_disks_are_real_filesystems_once_each() -> None:
    inventory = host.collect()
    mountpoints = [d.mountpoint for d in inventory.disks]
    assert len(mountpoints) == len(set(mountpoints))
    for disk in inventory.disks:
        assert disk.fstype not in ("squashfs", "iso9660", "tmpfs", "proc", "sysfs", "overlay")
        assert disk.total_bytes == shutil.disk_usage(disk.mountpoint).total
        assert 0 <= disk.used_bytes <= disk.total_bytes
    physical = {p.mountpoint for p in psutil.disk_partitions(all=False)}
    if "/" in physical:
        assert "/" in mountpoints


def test_interfaces_have_no_loopback_and_match_psutil() -> None:
    inventory = host.collect()
    addresses = psutil.net_if_addrs()
    for nic in inventory.interfaces:
        assert nic.name != "lo"
        assert not any(ip.startswith("127.") for ip in nic.ipv4)
        expected = {a.address for a in addresses[nic.name] if a.family == socket.AF_INET}
        assert set(nic.ipv4) == expected
        if nic.mac is not None:
            assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", nic.mac)


def test_inventory_is_valid_wire_format() -> None:
    """What the agent sends must pass the collector's bounds."""
    inventory = host.collect()
    decoded = msgspec.json.decode(encode(inventory), type=HostInventory)
    assert decoded == inventory


def test_a_failing_part_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[object]:
        raise PermissionError("access denied")

    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: broken())
    inventory = host.collect()
    assert inventory.disks == []
    assert inventory.error == "disks: PermissionError: access denied"
    assert inventory.hostname == socket.gethostname()
    assert inventory.memory_bytes == psutil.virtual_memory().total


def test_machine_agent_id_is_stable_and_derived() -> None:
    first, second = host.machine_agent_id(), host.machine_agent_id()
    assert first == second
    assert uuid.UUID(first).version == 5
    msgspec.convert(first, Id)
    machine_id = Path("/etc/machine-id")
    if machine_id.exists() and machine_id.read_text().strip():
        namespace = uuid.uuid5(uuid.NAMESPACE_DNS, "agent.hatang")
        assert first == str(uuid.uuid5(namespace, machine_id.read_text().strip()))
        assert machine_id.read_text().strip() not in first


_COLLECT = (
    "import sys; from agent.inventory.host import collect; from agent.report import encode; "
    "sys.stdout.buffer.write(encode(collect()))"
)


@pytest.mark.netns
def test_interface_in_a_namespace_appears_with_its_mac_and_addresses(
    topo: netns.Topology,
) -> None:
    """An interface with a known MAC and addresses, seen from inside its namespace."""
    office, switch = topo.add("inv"), topo.add("sw")
    topo.link(office, switch, "10.31.0.2/24", "10.31.0.1/24", a_dev="eth0", b_dev="uplink")
    office.ip("link", "set", "eth0", "address", "02:00:0a:1f:00:02")
    office.ip("-6", "addr", "add", "fd31::2/64", "dev", "eth0", "nodad")
    # A second, unplugged interface: reported as down.
    office.ip("link", "add", "eth1", "type", "veth", "peer", "name", "eth1peer")

    out = office.exec(sys.executable, "-c", _COLLECT, timeout=60).stdout
    inventory = msgspec.json.decode(out, type=HostInventory)
    by_name = {nic.name: nic for nic in inventory.interfaces}
    assert "lo" not in by_name
    eth0 = by_name["eth0"]
    assert eth0.mac == "02:00:0a:1f:00:02"
    assert eth0.ipv4 == ["10.31.0.2"]
    assert "fd31::2" in eth0.ipv6
    assert eth0.is_up is True
    assert by_name["eth1"].is_up is False
    assert by_name["eth1"].ipv4 == []
    assert inventory.hostname == socket.gethostname()
    assert json.loads(out)["error"] is None


# sys.getwindowsversion() (major, minor, build, product_type) and the registry EditionID
# (platform.win32_edition()) as recorded on real machines.
@pytest.mark.parametrize(
    ("version", "edition", "expected"),
    [
        ((10, 0, 26100, 3), "ServerStandard", "Server 2025 Standard"),
        ((10, 0, 20348, 2), "ServerDatacenter", "Server 2022 Datacenter"),  # domain controller
        ((10, 0, 17763, 3), "ServerStandardEval", "Server 2019 StandardEval"),
        ((10, 0, 14393, 3), "ServerStandard", "Server 2016 Standard"),
        ((10, 0, 19042, 3), "ServerDatacenterACor", "Server (build 19042) DatacenterACor"),
        ((10, 0, 26100, 1), "Professional", "11 Professional"),  # 24H2 shares 2025's build
        ((10, 0, 22631, 1), "Professional", "11 Professional"),
        ((10, 0, 22000, 1), "Core", "11 Core"),
        ((10, 0, 19045, 1), "Enterprise", "10 Enterprise"),
        ((10, 0, 10240, 1), "", "10"),
        ((6, 3, 9600, 1), "Professional", "8.1 Professional"),
        ((6, 3, 9600, 3), "ServerStandard", "Server 2012 R2 Standard"),
    ],
)
def test_windows_release_from_build_numbers(
    version: tuple[int, int, int, int], edition: str, expected: str
) -> None:
    assert host.windows_release(*version, edition) == expected

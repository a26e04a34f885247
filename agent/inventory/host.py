"""Host inventory: enough to count and identify a computer, nothing personal.

Reads psutil and the platform module, plus a few files (``/etc/os-release``,
``/proc/cpuinfo``) and, on Windows, two registry values. No WMI and no subprocess:
this runs on old office PCs every hour. Each part is read on its own; a part that
fails is named in ``error`` and the rest is still reported.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

import psutil

from agent import __version__
from agent.log import log_exception_limited
from agent.report import Disk, HostInventory, Interface

log = logging.getLogger(__name__)

MAX_DISKS: Final = 64  # the wire format's bound
MAX_INTERFACES: Final = 64
MAX_ADDRESSES: Final = 64
_NAME_MAX: Final = 256
# Read-only images, optical media and loop-mounted packages are not the computer's disks.
_SKIP_FSTYPES: Final = frozenset({"squashfs", "iso9660", "udf", "cdfs", "erofs"})
_SKIP_MOUNT_PREFIXES: Final = ("/snap/", "/var/lib/snapd/")
# uuid5 namespace for agent ids derived from a machine id (fixed forever: ids must be stable).
_AGENT_ID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_DNS, "agent.hatang")

_T = TypeVar("_T")


def _name(value: object) -> str:
    return str(value).strip()[:_NAME_MAX]


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release(5) ``KEY="value"`` lines."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        values[key.strip()] = value
    return values


def parse_cpuinfo(text: str) -> str | None:
    """The CPU model from /proc/cpuinfo (x86 ``model name``; ARM ``Hardware``/``Model``)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "cpu model", "hardware", "model", "processor", "cpu"):
        model = fields.get(key)
        if model and not model.isdigit():  # "processor : 0" is an index, not a model
            return model
    return None


def _linux_os_release() -> str | None:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            values = parse_os_release(Path(path).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        return values.get("PRETTY_NAME") or values.get("NAME")
    return None


def _windows_registry(key: str, value: str) -> str | None:
    import winreg  # type: ignore[import-not-found,unused-ignore]

    with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key) as handle:  # type: ignore[attr-defined,unused-ignore]
        data, _ = winreg.QueryValueEx(handle, value)  # type: ignore[attr-defined,unused-ignore]
    return str(data) if data else None


# LTSC Windows Server releases share major.minor 10.0 with Windows 10 and 11: only the
# build tells them apart (and a server's build would read as "11" by the client rule).
_SERVER_BUILDS: Final = {14393: "2016", 17763: "2019", 20348: "2022", 26100: "2025"}
_OLDER_RELEASES: Final = {  # (major, minor) -> (client, server)
    (6, 1): ("7", "Server 2008 R2"),
    (6, 2): ("8", "Server 2012"),
    (6, 3): ("8.1", "Server 2012 R2"),
}
_FIRST_WINDOWS_11_BUILD: Final = 22000
_VER_NT_WORKSTATION: Final = 1  # product_type: 2 is a domain controller, 3 a server


def windows_release(major: int, minor: int, build: int, product_type: int, edition: str) -> str:
    """The Windows release people say, from ``sys.getwindowsversion()`` and the edition.

    ``platform.win32_ver()`` calls every 10.0 build "10" (Python 3.11) and knows only the
    servers of its own release date, so a Server 2025 was reported as "11 Server...".
    Examples: ``11 Professional``, ``10 Enterprise``, ``Server 2025 Standard``.
    """
    server = product_type != _VER_NT_WORKSTATION
    if (major, minor) == (10, 0):
        if server:
            release = (
                f"Server {_SERVER_BUILDS[build]}"
                if build in _SERVER_BUILDS
                else (f"Server (build {build})")
            )
        else:
            release = "11" if build >= _FIRST_WINDOWS_11_BUILD else "10"
    elif (major, minor) in _OLDER_RELEASES:
        release = _OLDER_RELEASES[major, minor][1 if server else 0]
    else:
        release = f"{'Server ' if server else ''}{major}.{minor} (build {build})"
    if server and edition.startswith("Server"):
        edition = edition.removeprefix("Server")  # "ServerStandard" -> "Standard"
    return f"{release} {edition}".strip()


def _os_release() -> str | None:
    system = platform.system()
    if system == "Linux":
        return _linux_os_release()
    if system == "Windows":
        ver = sys.getwindowsversion()  # type: ignore[attr-defined,unused-ignore]
        return windows_release(
            ver.major, ver.minor, ver.build, ver.product_type, platform.win32_edition() or ""
        )
    if system == "Darwin":
        return platform.mac_ver()[0] or None
    return platform.release() or None


def _os_version() -> str | None:
    if platform.system() == "Windows":
        return platform.win32_ver()[1] or platform.version() or None
    return platform.release() or None  # the kernel, e.g. 6.1.0-18-amd64


def _cpu_model() -> str | None:
    system = platform.system()
    if system == "Linux":
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        return parse_cpuinfo(text)
    if system == "Windows":
        with_name = _windows_registry(
            r"HARDWARE\DESCRIPTION\System\CentralProcessor\0", "ProcessorNameString"
        )
        return with_name or platform.processor() or None
    return platform.processor() or None


def _disks() -> list[Disk]:
    disks: list[Disk] = []
    seen_devices: set[str] = set()
    partitions = sorted(psutil.disk_partitions(all=False), key=lambda p: len(p.mountpoint))
    for part in partitions:
        if (
            part.fstype.lower() in _SKIP_FSTYPES
            or not part.fstype  # Windows: a drive with no medium
            or "cdrom" in part.opts
            or part.mountpoint.startswith(_SKIP_MOUNT_PREFIXES)
            or part.device in seen_devices  # bind mounts show the same filesystem again
        ):
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue  # unmounted meanwhile, or a card reader without a card
        seen_devices.add(part.device)
        disks.append(
            Disk(
                mountpoint=_name(part.mountpoint),
                total_bytes=usage.total,
                used_bytes=usage.used,
                fstype=_name(part.fstype),
            )
        )
    disks.sort(key=lambda d: d.mountpoint)
    return disks[:MAX_DISKS]


def _mac(address: str) -> str | None:
    mac = address.replace("-", ":").lower()
    return None if mac in ("", "00:00:00:00:00:00") else mac[:32]


def _interfaces() -> list[Interface]:
    addresses = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    interfaces: list[Interface] = []
    for name in sorted(addresses):
        stat = stats.get(name)
        flags = getattr(stat, "flags", "") if stat else ""
        addrs = addresses[name]
        ipv4 = [a.address for a in addrs if a.family == socket.AF_INET]
        ipv6 = [a.address.split("%", 1)[0] for a in addrs if a.family == socket.AF_INET6]
        is_loopback = "loopback" in flags.split(",") or (
            (ipv4 or ipv6) and all(a.startswith("127.") or a == "::1" for a in ipv4 + ipv6)
        )
        if is_loopback or name.lower().startswith("loopback"):
            continue
        mac = next((_mac(a.address) for a in addrs if a.family == psutil.AF_LINK), None)
        interfaces.append(
            Interface(
                name=_name(name),
                mac=mac,
                ipv4=ipv4[:MAX_ADDRESSES],
                ipv6=ipv6[:MAX_ADDRESSES],
                is_up=stat.isup if stat else None,
                speed_mbps=stat.speed if stat and stat.speed > 0 else None,
            )
        )
    return interfaces[:MAX_INTERFACES]


def _boot_time() -> dt.datetime:
    return dt.datetime.fromtimestamp(psutil.boot_time(), dt.UTC)


def collect() -> HostInventory:
    """Read this computer's inventory; never raises (failed parts are named in ``error``)."""
    errors: list[str] = []

    def part(label: str, read: Callable[[], _T], default: _T) -> _T:
        try:
            return read()
        except Exception as exc:  # an inventory part must never take the report down
            errors.append(f"{label}: {type(exc).__name__}: {exc}"[:200])
            if not isinstance(exc, OSError):  # an OS refusal is data; anything else a bug
                log_exception_limited(log, "inventory.part_failed", exc, part=label)
            return default

    def optional_name(read: Callable[[], str | None]) -> str | None:
        value = read()
        return _name(value) if value else None

    return HostInventory(
        hostname=part("hostname", lambda: _name(socket.gethostname()), "unknown"),
        os=part("os", lambda: _name(platform.system() or sys.platform), sys.platform),
        os_release=part("os_release", lambda: optional_name(_os_release), None),
        os_version=part("os_version", lambda: optional_name(_os_version), None),
        architecture=part("architecture", lambda: optional_name(platform.machine), None),
        cpu_count=part("cpu_count", lambda: psutil.cpu_count(logical=True), None),
        cpu_model=part("cpu_model", lambda: optional_name(_cpu_model), None),
        memory_bytes=part("memory", lambda: psutil.virtual_memory().total, None),
        disks=part("disks", _disks, []),
        interfaces=part("interfaces", _interfaces, []),
        boot_time=part("boot_time", _boot_time, None),
        agent_version=__version__,
        python_version=platform.python_version(),
        error="; ".join(errors)[:1024] or None,
    )


def _machine_id() -> str | None:
    """The OS's own installation id (systemd machine-id, Windows MachineGuid)."""
    if sys.platform == "win32":
        return _windows_registry(r"SOFTWARE\Microsoft\Cryptography", "MachineGuid")
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    return None


def machine_agent_id() -> str:
    """A stable agent id for this computer when the config sets none.

    A UUIDv5 of the machine id, so the raw id (which systemd asks not to expose) never
    leaves the computer; falls back to the hostname when there is no machine id.
    """
    try:
        basis = _machine_id()
    except Exception:  # registry or file unreadable: the hostname still identifies the PC
        basis = None
    if not basis:
        basis = "hostname:" + socket.gethostname().lower()
    return str(uuid.uuid5(_AGENT_ID_NAMESPACE, basis))

"""Antivirus products recognised by their services and processes (the second source).

Security Center only exists on Windows client editions and Linux has nothing like it,
so hatang also looks for the services and processes each vendor installs. The table
below is the one list of what is recognised; names are matched case-insensitively with
shell wildcards, against the executable's base name without ``.exe``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import psutil

Platform = Literal["windows", "linux"]


@dataclass(frozen=True, slots=True)
class Vendor:
    """One product family and the names that reveal it."""

    product: str  # name shown in reports
    vendor: str
    platforms: tuple[Platform, ...]
    services: tuple[str, ...] = ()  # Windows service names (documentation on Linux)
    processes: tuple[str, ...] = ()  # executable base names, without .exe
    display_keywords: tuple[str, ...] = ()  # words in a Security Center displayName
    # Linux: files whose newest mtime tells when signatures were last updated (best effort).
    signature_globs: tuple[str, ...] = ()


VENDORS: Final[tuple[Vendor, ...]] = (
    Vendor(
        "Microsoft Defender Antivirus",
        "Microsoft",
        ("windows",),
        services=("WinDefend",),
        processes=("MsMpEng",),
        display_keywords=("defender",),
    ),
    Vendor(
        "Microsoft Defender for Endpoint (Linux)",
        "Microsoft",
        ("linux",),
        services=("mdatp",),
        processes=("wdavdaemon",),
        signature_globs=("/var/opt/microsoft/mdatp/definitions/*",),
    ),
    Vendor(
        "BKAV",
        "Bkav",
        ("windows", "linux"),
        services=("Bkav*",),
        processes=("Bkav*",),
        display_keywords=("bkav",),
    ),
    Vendor(
        "CMC Antivirus",
        "CMC Cyber Security",
        ("windows",),
        services=("CMCAV*", "CmcService*", "CMCSvc*"),
        processes=("CMCAV*", "CmcService*", "CMCTray*", "CMCSvc*"),
        display_keywords=("cmc",),
    ),
    Vendor(
        "Kaspersky",
        "Kaspersky",
        ("windows",),
        services=("AVP", "AVP.*", "klnagent", "kavfs*"),
        processes=("avp", "avpui", "klnagent", "kavfs*"),
        display_keywords=("kaspersky",),
    ),
    Vendor(
        "Kaspersky Endpoint Security for Linux",
        "Kaspersky",
        ("linux",),
        services=("kesl", "kesl-supervisor"),
        processes=("kesl", "kesl-supervisor", "klnagent"),
        signature_globs=("/var/opt/kaspersky/kesl/common/updates/*",),
    ),
    Vendor(
        "ESET",
        "ESET",
        ("windows",),
        services=("ekrn",),
        processes=("ekrn", "egui"),
        display_keywords=("eset",),
    ),
    Vendor(
        "ESET for Linux",
        "ESET",
        ("linux",),
        services=("esets", "eea", "efs"),
        processes=("esets", "esets_daemon", "oaeventd", "startd"),
        signature_globs=("/var/opt/eset/esets/lib/*.dat", "/var/opt/eset/eea/lib/*.dat"),
    ),
    Vendor(
        "Trend Micro",
        "Trend Micro",
        ("windows",),
        services=("ntrtscan", "tmlisten", "TMBMServer", "ds_agent"),
        processes=("ntrtscan", "tmlisten", "PccNTMon", "ds_agent", "coreServiceShell"),
        display_keywords=("trend micro",),
    ),
    Vendor(
        "Trend Micro Deep Security Agent",
        "Trend Micro",
        ("linux",),
        services=("ds_agent",),
        processes=("ds_agent", "ds_am"),
        signature_globs=("/var/opt/ds_agent/am/pattern/*",),
    ),
    Vendor(
        "Symantec Endpoint Protection",
        "Broadcom",
        ("windows", "linux"),
        services=("SepMasterService", "SmcService", "symcfgd", "rtvscand"),
        processes=("ccSvcHst", "Smc", "SepMasterService", "rtvscand", "symcfgd"),
        display_keywords=("symantec", "norton"),
    ),
    Vendor(
        "McAfee / Trellix",
        "Trellix",
        ("windows", "linux"),
        services=("mfemms", "mfevtp", "McShield", "masvc", "mfetp", "isectpd"),
        processes=("mfemms", "mfevtps", "mcshield", "masvc", "mfetpd", "isectpd"),
        display_keywords=("mcafee", "trellix"),
    ),
    Vendor(
        "Sophos",
        "Sophos",
        ("windows",),
        services=("Sophos*", "SAVService", "SAVAdminService", "SEDService"),
        processes=("SavService", "SophosHealth", "SEDService", "SophosFileScanner"),
        display_keywords=("sophos",),
    ),
    Vendor(
        "Sophos for Linux",
        "Sophos",
        ("linux",),
        services=("sophos-spl", "sav-protect"),
        processes=("savd", "sophos_threat_detector", "sophos_managementagent", "mcsrouter"),
        signature_globs=("/opt/sophos-av/lib/sav/*.ide", "/opt/sophos-spl/plugins/av/chroot/*"),
    ),
)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """A Windows service as psutil lists it."""

    name: str
    display_name: str = ""
    status: str = ""  # psutil: running, stopped, paused, start_pending, ...


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A running process: its base name without ``.exe`` and its command line."""

    name: str
    pid: int = 0
    cmdline: tuple[str, ...] = ()


@dataclass(slots=True)
class VendorMatch:
    """What the services/processes said about one vendor's product."""

    vendor: Vendor
    services: list[ServiceInfo] = field(default_factory=list)
    processes: list[ProcessInfo] = field(default_factory=list)

    @property
    def running(self) -> bool:
        """True when a matching process runs or a matching service is running."""
        return bool(self.processes) or any(s.status == "running" for s in self.services)

    def evidence(self) -> str:
        """The names that matched, for the product's ``detail``."""
        names = [f"service {s.name} ({s.status or '?'})" for s in self.services]
        names += sorted({f"process {p.name}" for p in self.processes})
        return ", ".join(names)[:1000]


def base_name(path_or_name: str) -> str:
    """``C:\\Program Files\\Bkav\\BkavService.exe`` → ``BkavService``."""
    name = path_or_name.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-4] if name.lower().endswith(".exe") else name


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    lowered = name.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


def match_vendors(
    platform: Platform,
    services: Sequence[ServiceInfo],
    processes: Sequence[ProcessInfo],
) -> list[VendorMatch]:
    """The vendors of ``platform`` whose services or processes are present, table order."""
    found: list[VendorMatch] = []
    for vendor in VENDORS:
        if platform not in vendor.platforms:
            continue
        match = VendorMatch(
            vendor,
            [s for s in services if matches_any(s.name, vendor.services)],
            [p for p in processes if matches_any(p.name, vendor.processes)],
        )
        if match.services or match.processes:
            found.append(match)
    return found


def list_processes() -> list[ProcessInfo]:
    """Running processes via psutil; processes that vanish or deny access are skipped."""
    out: list[ProcessInfo] = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            info = proc.info
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # pragma: no cover - races
            continue
        cmdline = tuple(info.get("cmdline") or ())
        # psutil's name is the kernel's 15-char comm on Linux; the command line is exact.
        name = base_name(cmdline[0]) if cmdline else (info.get("name") or "")
        if name:
            out.append(ProcessInfo(name, proc.pid, cmdline))
    return out


def list_windows_services() -> list[ServiceInfo]:
    """Windows services via psutil (empty elsewhere)."""
    iterate = getattr(psutil, "win_service_iter", None)
    if iterate is None:
        return []
    out: list[ServiceInfo] = []
    for service in iterate():
        try:
            out.append(ServiceInfo(service.name(), service.display_name(), service.status()))
        except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):  # pragma: no cover
            continue
    return out


def newest_mtime(globs: Iterable[str], root: str = "/") -> float | None:
    """The newest modification time among files matching ``globs`` under ``root``."""
    import glob

    newest: float | None = None
    for pattern in globs:
        for path in glob.glob(os.path.join(root, pattern.lstrip("/"))):
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            newest = mtime if newest is None else max(newest, mtime)
    return newest

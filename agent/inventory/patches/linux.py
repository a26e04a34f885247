"""Patch currency on Linux: the apt family (Debian, Ubuntu) and the dnf/rpm family.

apt: pending updates from ``apt-get -s dist-upgrade`` (a simulation over the local
package lists: no lock, no download; ``dist-upgrade`` because security fixes that need a
new package, such as a kernel, are held back by plain ``upgrade``). An update is a
security update when one of the archives it comes from is a ``-security`` suite
(``Debian-Security:12/stable-security``, ``Ubuntu:24.04/noble-security``). The last
update is the newest ``install``/``upgrade`` line of ``/var/log/dpkg.log`` (and its
first rotation), else the newest package file list in ``/var/lib/dpkg/info``. A reboot
is pending when ``/var/run/reboot-required`` exists.

dnf: ``dnf -C check-update`` (exit 100 when updates are pending; ``-C`` keeps it on the
cache) and ``dnf -C updateinfo list --security``; the last update from
``rpm -qa --queryformat '%{INSTALLTIME}'`` (Unix seconds: ``rpm -qa --last`` prints
dates in the locale's format, which this avoids).

The agent never refreshes the package lists (no ``apt-get update``, no ``dnf makecache``):
that needs the network and is the system's own job (apt-daily, dnf-automatic). Pending
counts are therefore as of the last refresh the system did.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.inventory.antivirus.command import Runner, run_command, which
from agent.report import PatchStatus

DPKG_LOGS: Final = ("/var/log/dpkg.log", "/var/log/dpkg.log.1")
DPKG_INFO: Final = "/var/lib/dpkg/info"
REBOOT_REQUIRED: Final = "/var/run/reboot-required"
APT_SIMULATE: Final = ("apt-get", "-s", "-q", "-o", "Debug::NoLocking=1", "dist-upgrade")
DNF_CHECK: Final = ("-C", "-q", "check-update")  # after "dnf" (or "yum" where dnf is absent)
DNF_SECURITY: Final = ("-C", "-q", "updateinfo", "list", "--security")
RPM_INSTALL_TIMES: Final = ("rpm", "-qa", "--queryformat", "%{INSTALLTIME} %{NAME}\\n")
MAX_LOG_BYTES: Final = 20_000_000  # a dpkg.log is a few MB at most


@dataclass(frozen=True, slots=True)
class Pending:
    """Updates a package manager would install now."""

    total: int
    security: int
    packages: tuple[str, ...] = ()


# --- apt -------------------------------------------------------------------------------

# Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/
# oldstable-security [amd64]) — the bracketed current version is absent for new packages.
_INST = re.compile(r"^Inst (\S+)(?: \[[^\]]*\])? \((\S+) (.*?) \[[^\]]*\]\)")


def parse_apt_simulation(text: str) -> Pending:
    """Parse ``apt-get -s dist-upgrade``: each ``Inst`` line is one package to install."""
    total = security = 0
    names: list[str] = []
    for line in text.splitlines():
        match = _INST.match(line)
        if match is None:
            continue
        total += 1
        names.append(match.group(1))
        origins = [o.strip() for o in match.group(3).split(",")]
        if any(o.split("/", 1)[-1].endswith("-security") for o in origins):
            security += 1
    return Pending(total, security, tuple(names))


# 2026-12-01 10:08:39 install poppler-utils:amd64 <none> 22.12.0-2+deb12u3
_DPKG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (install|upgrade) \S+ ")


def parse_dpkg_log(text: str) -> dt.datetime | None:
    """The newest package installation or upgrade in a dpkg.log (local time, as aware UTC)."""
    newest: str | None = None
    for line in text.splitlines():
        match = _DPKG_LINE.match(line)
        if match and (newest is None or match.group(1) > newest):
            newest = match.group(1)
    if newest is None:
        return None
    return dt.datetime.strptime(newest, "%Y-%m-%d %H:%M:%S").astimezone().astimezone(dt.UTC)


def newest_file(directory: str, suffix: str) -> dt.datetime | None:
    """The newest modification time among ``directory``'s files ending in ``suffix``."""
    newest: float | None = None
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(suffix):
                    try:
                        mtime = entry.stat().st_mtime
                    except OSError:
                        continue
                    newest = mtime if newest is None else max(newest, mtime)
    except OSError:
        return None
    return None if newest is None else dt.datetime.fromtimestamp(newest, dt.UTC)


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_LOG_BYTES).decode("utf-8", "replace")
    except OSError:
        return None


def last_dpkg_update(logs: Iterable[str] = DPKG_LOGS, info: str = DPKG_INFO) -> dt.datetime | None:
    """From the dpkg logs (newest first), else from the package file lists' mtimes."""
    for path in logs:
        text = _read(path)
        when = parse_dpkg_log(text) if text else None
        if when is not None:
            return when
    return newest_file(info, ".list")


def detect_apt(runner: Runner, timeout: float, root: str = "/") -> PatchStatus:
    """The apt family's patch state."""
    logs = [os.path.join(root, p.lstrip("/")) for p in DPKG_LOGS]
    status = PatchStatus(
        source="apt",
        last_installed_at=last_dpkg_update(logs, os.path.join(root, DPKG_INFO.lstrip("/"))),
        reboot_pending=Path(root, REBOOT_REQUIRED.lstrip("/")).exists(),
    )
    result = runner(APT_SIMULATE, timeout)
    if result.ok:
        pending = parse_apt_simulation(result.stdout)
        status.pending_updates = pending.total
        status.pending_security_updates = pending.security
    else:
        status.warnings.append(result.describe()[:1024])
    if status.last_installed_at is None:
        status.error = "no package installation found in the dpkg log or package lists"
    return status


# --- dnf / rpm -------------------------------------------------------------------------

# openssl-libs.x86_64     1:3.0.7-27.el9     baseos
_CHECK_LINE = re.compile(r"^(\S+)\.(\w+)\s+(\S+)\s+(\S+)\s*$")


def parse_dnf_check_update(text: str) -> tuple[str, ...]:
    """Packages ``dnf check-update`` lists (name.arch version repo), up to the obsoletes."""
    names: list[str] = []
    for line in text.splitlines():
        if line.startswith("Obsoleting"):
            break  # what follows replaces packages already counted or is counted above
        match = _CHECK_LINE.match(line)
        if match:
            names.append(f"{match.group(1)}.{match.group(2)}")
    return tuple(names)


def parse_dnf_security(text: str) -> int:
    """Distinct packages with a security advisory in ``dnf updateinfo list --security``.

    dnf 4: ``ADVISORY Severity/Sec. PACKAGE``; dnf 5: ``ADVISORY security SEVERITY
    PACKAGE ISSUED`` under a header line.
    """
    packages = set()
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 3 and tokens[1].endswith("/Sec."):
            packages.add(tokens[2])
        elif len(tokens) >= 4 and tokens[1] == "security":
            packages.add(tokens[3])
    return len(packages)


def parse_rpm_install_times(text: str) -> dt.datetime | None:
    """The newest ``%{INSTALLTIME}`` (Unix seconds) among ``rpm -qa`` lines."""
    newest: int | None = None
    for line in text.splitlines():
        first = line.split(" ", 1)[0]
        if first.isdigit():
            value = int(first)
            newest = value if newest is None else max(newest, value)
    return None if not newest else dt.datetime.fromtimestamp(newest, dt.UTC)


def detect_dnf(runner: Runner, timeout: float, tool: str = "dnf") -> PatchStatus:
    """The dnf/rpm family's patch state (``tool``: dnf, or yum on older systems)."""
    status = PatchStatus(source="dnf")
    rpm = runner(RPM_INSTALL_TIMES, timeout)
    if rpm.ok:
        status.last_installed_at = parse_rpm_install_times(rpm.stdout)
    else:
        status.warnings.append(rpm.describe()[:1024])
    check = runner((tool, *DNF_CHECK), timeout)
    # check-update exits 100 when updates are available, 0 when there are none.
    if check.error is None and check.returncode in (0, 100):
        status.pending_updates = len(parse_dnf_check_update(check.stdout))
        security = runner((tool, *DNF_SECURITY), timeout)
        if security.ok:
            status.pending_security_updates = parse_dnf_security(security.stdout)
        else:
            status.warnings.append(security.describe()[:1024])
    else:
        status.warnings.append(check.describe()[:1024])
    if status.last_installed_at is None:
        status.error = "no package installation time from rpm"
    return status


def detect(timeout: float, runner: Runner = run_command) -> PatchStatus:
    """The patch state from whichever package manager this system has."""
    if which("dpkg") and which("apt-get"):
        return detect_apt(runner, timeout)
    if which("rpm") and (which("dnf") or which("yum")):
        return detect_dnf(runner, timeout, "dnf" if which("dnf") else "yum")
    return PatchStatus(source="unsupported", error="no apt or dnf package manager found")

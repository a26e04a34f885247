"""The agent as a systemd service: the hardened unit, install, uninstall, status.

The unit runs the agent as its own unprivileged user with the file system read-only
except the directories systemd creates for it (``StateDirectory`` for the spool,
``LogsDirectory``, ``ConfigurationDirectory``), no capabilities for the host role, and
only ``CAP_NET_RAW`` plus ``AF_PACKET`` for the site probe (ARP discovery), added by a
drop-in so that the host unit stays the one hardened base. ``configs/systemd/`` holds
the rendered files for people who install by hand; a test checks they are current
(``python -m agent.service.systemd configs/systemd`` rewrites them).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent import paths, subproc

UNIT_NAME: Final = "hatang-agent.service"
DROP_IN_NAME: Final = "site-probe.conf"
USER: Final = "hatang"
DEFAULT_EXEC: Final = "/opt/hatang/bin/hatang-agent"
SYSTEMCTL_TIMEOUT: Final = 60.0
# What `status` reads; systemctl prints these as KEY=value lines in any locale.
STATUS_PROPERTIES: Final = (
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "ExecMainStatus",
    "NRestarts",
    "Result",
    "ActiveEnterTimestamp",
    "FragmentPath",
)

_UNIT: Final = """\
# hatang agent: connectivity checks, inventory and antivirus state of this computer,
# reported to the provincial collector. Written by `hatang-agent service install`;
# the site probe adds hatang-agent.service.d/site-probe.conf. See docs/install.md.
[Unit]
Description=hatang agent (giám sát hạ tầng / infrastructure monitoring)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={exec_start} run --config {config}
User={user}
Group={user}
# Exit 2 is a configuration error: restarting cannot fix it, the log says what to fix.
Restart=on-failure
RestartSec=10s
RestartPreventExitStatus=2
TimeoutStopSec=30s
# The spool (/var/lib/hatang), logs (/var/log/hatang), config and credential (/etc/hatang).
StateDirectory=hatang
StateDirectoryMode=0750
LogsDirectory=hatang
LogsDirectoryMode=0750
ConfigurationDirectory=hatang
ConfigurationDirectoryMode=0750
UMask=0027
# Hardening: nothing but its own directories is writable, no privileges to gain.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
# IP for the checks and the collector, UNIX for clamd's socket, netlink for the
# interface list of the inventory. The site probe adds AF_PACKET (ARP).
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""

_SITE_PROBE_DROP_IN: Final = """\
# hatang site probe: ARP discovery of the office LAN needs raw packets, and nothing more.
# Written by `hatang-agent service install --role site-probe`.
[Service]
AmbientCapabilities=CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_RAW
RestrictAddressFamilies=AF_PACKET
"""


class ServiceError(Exception):
    """A service operation failed; the message says what and what to do."""


def render_unit(
    exec_start: str = DEFAULT_EXEC,
    config: str = str(paths.default_config("linux")),
    user: str = USER,
) -> str:
    """The unit file text for an agent at ``exec_start`` running ``config``."""
    for name, value in (("exec", exec_start), ("config", config), ("user", user)):
        if not value or any(c.isspace() or c in "\"'\\%$;" for c in value):
            raise ServiceError(f"{name}: {value!r} cannot go in a unit file (spaces or quotes)")
    return _UNIT.format(exec_start=exec_start, config=config, user=user)


def render_drop_in() -> str:
    """The site probe's drop-in: CAP_NET_RAW and AF_PACKET on top of the host unit."""
    return _SITE_PROBE_DROP_IN


@dataclass(frozen=True, slots=True)
class Plan:
    """The files ``install`` writes (and removes), relative to the root."""

    unit: Path
    unit_text: str
    drop_in: Path
    drop_in_text: str | None  # None: the host role, any drop-in is removed


def plan(root: Path, exec_start: str, config: str, role: str) -> Plan:
    """What installing for ``role`` under ``root`` means, before anything is written."""
    unit_dir = root / "etc/systemd/system"
    return Plan(
        unit=unit_dir / UNIT_NAME,
        unit_text=render_unit(exec_start, config),
        drop_in=unit_dir / f"{UNIT_NAME}.d" / DROP_IN_NAME,
        drop_in_text=render_drop_in() if role == "site-probe" else None,
    )


Run = Callable[[Sequence[str]], subprocess.CompletedProcess[bytes]]


def _systemctl(args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        return subproc.run(["systemctl", *args], timeout=SYSTEMCTL_TIMEOUT)
    except FileNotFoundError:
        raise ServiceError("systemctl not found: this system does not run systemd") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"systemctl {' '.join(args)}: {exc}") from None


def _check(proc: subprocess.CompletedProcess[bytes], what: str) -> None:
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
        raise ServiceError(f"systemctl {what}: {text}")


def install(root: Path, exec_start: str, config: str, role: str, *, run: Run = _systemctl) -> Plan:
    """Write the unit (and the site probe's drop-in), then enable it and (re)start it on
    the real root, so that an upgrade runs the new code; under a test root,
    ``systemctl --root`` only links it."""
    chosen = plan(root, exec_start, config, role)
    chosen.unit.parent.mkdir(parents=True, exist_ok=True)
    chosen.unit.write_text(chosen.unit_text, encoding="utf-8")
    chosen.unit.chmod(0o644)
    if chosen.drop_in_text is not None:
        chosen.drop_in.parent.mkdir(parents=True, exist_ok=True)
        chosen.drop_in.write_text(chosen.drop_in_text, encoding="utf-8")
        chosen.drop_in.chmod(0o644)
    else:
        chosen.drop_in.unlink(missing_ok=True)
    if root == Path("/"):
        _check(run(["daemon-reload"]), "daemon-reload")
        _check(run(["enable", UNIT_NAME]), f"enable {UNIT_NAME}")
        _check(run(["restart", UNIT_NAME]), f"restart {UNIT_NAME}")
    else:
        _check(run([f"--root={root}", "enable", UNIT_NAME]), f"enable {UNIT_NAME}")
    return chosen


def uninstall(root: Path, *, run: Run = _systemctl) -> list[Path]:
    """Stop and disable the service, remove its unit files; return what was removed.

    The spool, logs and config stay (``install.sh`` documents how to purge them): a
    reinstall then continues with the same identity and unsent reports.
    """
    unit_dir = root / "etc/systemd/system"
    unit = unit_dir / UNIT_NAME
    drop_in = unit_dir / f"{UNIT_NAME}.d" / DROP_IN_NAME
    if unit.exists():
        if root == Path("/"):
            _check(run(["disable", "--now", UNIT_NAME]), f"disable --now {UNIT_NAME}")
        else:
            _check(run([f"--root={root}", "disable", UNIT_NAME]), f"disable {UNIT_NAME}")
    removed = [p for p in (drop_in, unit) if p.exists()]
    for path in removed:
        path.unlink()
    if drop_in.parent.is_dir() and not any(drop_in.parent.iterdir()):
        drop_in.parent.rmdir()
    if root == Path("/") and removed:
        _check(run(["daemon-reload"]), "daemon-reload")
    return removed


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show`` output: ``KEY=value`` lines (values may contain ``=``)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and key.isidentifier():
            values[key] = value
    return values


@dataclass(frozen=True, slots=True)
class Status:
    """The service as systemd sees it, in words for the officer."""

    installed: bool
    running: bool
    state: str  # ActiveState/SubState, e.g. "active/running", "failed/failed"
    lines: list[str]


_STATE_WORDS: Final = {
    "active": "đang chạy / running",
    "activating": "đang khởi động / starting",
    "deactivating": "đang dừng / stopping",
    "inactive": "đã dừng / stopped",
    "failed": "lỗi, đã dừng / failed",
    "reloading": "đang nạp lại / reloading",
}


def describe_status(values: dict[str, str]) -> Status:
    """Turn ``systemctl show`` values into a status (pure: tested on recorded output)."""
    load = values.get("LoadState", "")
    if load in ("not-found", ""):
        return Status(
            False,
            False,
            "not-found",
            [
                "Dịch vụ chưa được cài / The service is not installed: "
                "run `hatang-agent service install` (as root)."
            ],
        )
    active, sub = values.get("ActiveState", "unknown"), values.get("SubState", "unknown")
    lines = [
        f"Dịch vụ / Service: {UNIT_NAME} ({values.get('FragmentPath') or 'no unit file'})",
        f"Trạng thái / State: {_STATE_WORDS.get(active, active)} ({active}/{sub})",
        f"Khởi động cùng máy / Enabled at boot: {values.get('UnitFileState', 'unknown')}",
    ]
    if active == "active" and values.get("MainPID", "0") != "0":
        lines.append(f"Tiến trình / PID: {values['MainPID']}")
    if values.get("ActiveEnterTimestamp"):
        lines.append(f"Từ lúc / Since: {values['ActiveEnterTimestamp']}")
    restarts = values.get("NRestarts", "0")
    if restarts not in ("", "0"):
        lines.append(f"Số lần tự khởi động lại / Restarts: {restarts}")
    result, status = values.get("Result", "success"), values.get("ExecMainStatus", "0")
    if result != "success" or status not in ("", "0"):
        hint = " (lỗi cấu hình / configuration error)" if status == "2" else ""
        lines.append(
            f"Lần dừng trước / Last exit: {result}, status {status}{hint}; "
            "xem nhật ký / see the log: journalctl -u hatang-agent"
        )
    return Status(True, active == "active", f"{active}/{sub}", lines)


def status(*, run: Run = _systemctl) -> Status:
    """Ask systemd about the service."""
    proc = run(["show", UNIT_NAME, f"--property={','.join(STATUS_PROPERTIES)}"])
    _check(proc, f"show {UNIT_NAME}")
    return describe_status(parse_show(proc.stdout.decode("utf-8", "replace")))


def write_examples(directory: Path) -> list[Path]:
    """Write the rendered unit and drop-in for a by-hand install (``configs/systemd``)."""
    unit = directory / UNIT_NAME
    drop_in = directory / f"{UNIT_NAME}.d" / DROP_IN_NAME
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(render_unit(), encoding="utf-8")
    drop_in.write_text(render_drop_in(), encoding="utf-8")
    return [unit, drop_in]


if __name__ == "__main__":
    for written in write_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "configs/systemd")):
        print(written)

"""``hatang-agent service install|uninstall|status``: the platform's service manager.

Linux: systemd (``systemd.py``); Windows: the service control manager through pywin32
(``windows.py``, the service itself in ``winservice.py``). Exit codes follow the CLI
contract: 0 done (``status``: running), 1 the operation failed (``status``: not
running), 2 usage or configuration error. The last line is the machine-readable value.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_parser(commands: Any) -> None:
    """Add ``service`` and its actions to the CLI."""
    service = commands.add_parser(
        "service",
        help="install, remove or show the agent's system service",
        description="Run the agent as a system service (systemd on Linux, a Windows "
        "service on Windows): install registers and starts it, uninstall stops and "
        "removes it (the spool, logs and config stay), status shows its state.",
    )
    actions = service.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=type(service)
    )
    install = actions.add_parser("install", help="register, enable and start the service")
    install.add_argument(
        "--config", "-c", metavar="FILE", help="agent YAML the service runs (default: per OS)"
    )
    install.add_argument(
        "--role",
        choices=("host", "site-probe"),
        help="site-probe adds raw packets for ARP (default: the config's role)",
    )
    install.add_argument(
        "--root", metavar="DIR", help="Linux: install into DIR instead of / (tests, images)"
    )
    install.add_argument(
        "--dry-run", action="store_true", help="print what would be installed, change nothing"
    )
    uninstall = actions.add_parser("uninstall", help="stop and remove the service")
    uninstall.add_argument("--root", metavar="DIR", help="Linux: remove from DIR instead of /")
    actions.add_parser("status", help="show whether the service runs")


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    sys.stderr.write(f"Lỗi / Error: {message}\n")
    return code


def _role(config: Path, given: str | None) -> str:
    """The role to install for: as given, else the config's (the config must be valid)."""
    from agent.config import load_config

    loaded = load_config(config)  # ConfigError: exit 2 naming the file and key
    if given is not None and given != loaded.role:
        from agent.config import ConfigError

        raise ConfigError(
            str(config), "role", f"is {loaded.role!r} but --role {given} was asked: make them agree"
        )
    return loaded.role


def _linux(args: argparse.Namespace) -> int:
    from agent import paths
    from agent.service import systemd

    root = Path(getattr(args, "root", None) or "/").resolve()
    if args.action == "status":
        try:
            state = systemd.status()
        except systemd.ServiceError as exc:
            return _fail(str(exc))
        sys.stdout.write("".join(f"{line}\n" for line in state.lines) + f"{state.state}\n")
        return EXIT_OK if state.running else EXIT_FAILED
    if args.action == "uninstall":
        try:
            removed = systemd.uninstall(root)
        except systemd.ServiceError as exc:
            return _fail(str(exc))
        for path in removed:
            sys.stdout.write(f"Đã gỡ / Removed: {path}\n")
        if not removed:
            sys.stdout.write("Dịch vụ chưa được cài / The service was not installed.\n")
        sys.stdout.write("uninstalled\n")
        return EXIT_OK

    config = str(args.config or paths.default_config("linux"))
    if not config.startswith("/"):
        return _fail(f"--config {config}: give an absolute path (the service runs from /)", 2)
    in_root = root / config.lstrip("/")
    exec_start = str(Path(sys.executable).parent / "hatang-agent")
    if args.dry_run and not in_root.exists():
        role = args.role or "host"
    else:
        if not in_root.exists():
            return _fail(
                f"{in_root} does not exist: enroll first (hatang-agent enroll --config "
                f"{config} --collector URL --code CODE)",
                EXIT_USAGE,
            )
        role = _role(in_root, args.role)
    try:
        chosen = systemd.plan(root, exec_start, config, role)
    except systemd.ServiceError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.dry_run:
        sys.stdout.write(f"# {chosen.unit}\n{chosen.unit_text}")
        if chosen.drop_in_text is not None:
            sys.stdout.write(f"\n# {chosen.drop_in}\n{chosen.drop_in_text}")
        sys.stdout.write(f"{chosen.unit}\n")
        return EXIT_OK
    if root == Path("/"):
        import pwd

        if os.geteuid() != 0:
            return _fail("run as root (sudo hatang-agent service install)", EXIT_USAGE)
        try:
            pwd.getpwnam(systemd.USER)
        except KeyError:
            return _fail(
                f"user {systemd.USER!r} does not exist: install.sh creates it "
                f"(useradd --system --home-dir /var/lib/hatang --shell /usr/sbin/nologin "
                f"{systemd.USER})",
                EXIT_USAGE,
            )
    try:
        systemd.install(root, exec_start, config, role)
    except (systemd.ServiceError, OSError) as exc:
        return _fail(str(exc))
    sys.stdout.write(f"Đã cài dịch vụ / Service installed ({role}): {chosen.unit}\n")
    if chosen.drop_in_text is not None:
        sys.stdout.write(f"Quyền gói tin thô / Raw packets (CAP_NET_RAW): {chosen.drop_in}\n")
    if root == Path("/"):
        sys.stdout.write("Xem trạng thái / Status: hatang-agent service status\n")
    sys.stdout.write(f"{chosen.unit}\n")
    return EXIT_OK


def _windows(args: argparse.Namespace) -> int:
    from agent.service import windows

    try:
        if args.action == "status":
            state, lines = windows.status()
            sys.stdout.write("".join(f"{line}\n" for line in lines) + f"{state}\n")
            return EXIT_OK if state == "running" else EXIT_FAILED
        if args.action == "uninstall":
            removed = windows.uninstall()
            sys.stdout.write(
                "Đã gỡ dịch vụ / Service removed.\n"
                if removed
                else "Dịch vụ chưa được cài / The service was not installed.\n"
            )
            sys.stdout.write("uninstalled\n")
            return EXIT_OK
        reg = windows.registration(args.config)
        role = _role(Path(reg.config), args.role) if Path(reg.config).exists() else None
        if role is None and not args.dry_run:
            return _fail(
                f"{reg.config} does not exist: enroll first (hatang-agent enroll --config "
                f'"{reg.config}" --collector URL --code CODE)',
                EXIT_USAGE,
            )
        if args.dry_run:
            sys.stdout.write(f"{windows.SERVICE_NAME}: {reg.command_line}\n{reg.command_line}\n")
            return EXIT_OK
        windows.install(reg)
    except windows.ServiceError as exc:
        return _fail(str(exc))
    sys.stdout.write(
        f"Đã cài và chạy dịch vụ / Service installed and started: {windows.SERVICE_NAME}\n"
        f"Nhật ký / Log: {windows.default_log_file()}\n{windows.SERVICE_NAME}\n"
    )
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    """Run one ``service`` action on this platform."""
    platform: str = sys.platform  # a variable: mypy would prune the other branches
    if platform == "win32":
        return _windows(args)
    if platform.startswith("linux"):
        return _linux(args)
    return _fail(f"services are not supported on {platform} (run `hatang-agent run`)", 2)

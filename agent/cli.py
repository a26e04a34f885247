"""``hatang-agent``: ``check`` once and print, or ``run`` the daemon.

Exit codes (DESIGN contract): 0 every configured network is up, 1 some configured
network is down, 2 configuration error (the message names the file and key path).
Imports stay light: the host role's memory budget is 25 MiB, so heavy modules load
only inside the sections that need them, and nothing here imports aiohttp.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from agent import __version__

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.report import Report
    from agent.scheduler import StopSignal

EXIT_UP: Final = 0
EXIT_DOWN: Final = 1
EXIT_CONFIG: Final = 2
EXIT_INTERRUPTED: Final = 130
CONFIG_LEAD: Final = "Lỗi cấu hình / Configuration error"


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter with the width found here: its own lookup imports ``shutil``
    (and with it bz2, lzma...), half a MiB the daemon would keep for nothing."""

    def __init__(self, prog: str) -> None:
        env = os.environ.get("COLUMNS")
        try:
            columns = int(env) if env else os.get_terminal_size().columns
        except (ValueError, OSError):
            columns = 80
        super().__init__(prog, width=max(columns, 40) - 2)


class _Parser(argparse.ArgumentParser):
    """argparse with the usage error in both languages, exit code 2 as for bad config."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: lỗi dòng lệnh / usage error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hatang-agent",
        description="hatang agent: connectivity checks, inventory and antivirus state "
        "of an office computer, reported to the provincial collector.",
    )
    parser.add_argument("--version", action="version", version=f"hatang-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = commands.add_parser(
        "check",
        help="run every enabled check once and print the result",
        description="Run every enabled check once and print the result. Exit 0 when every "
        "configured network is up, 1 when some is down, 2 on a configuration error.",
    )
    check.add_argument("--config", "-c", required=True, metavar="FILE", help="agent YAML file")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--verbose", "-v", action="store_true", help="log every event to standard error"
    )
    run = commands.add_parser(
        "run",
        help="run the agent daemon",
        description="Run the agent daemon: checks on their intervals, reports spooled and "
        "sent to the collector. Stops cleanly on SIGTERM/SIGINT.",
    )
    run.add_argument("--config", "-c", required=True, metavar="FILE", help="agent YAML file")
    from agent.enroll import add_parser as add_enroll
    from agent.service import add_parser as add_service_parser

    add_enroll(commands)
    add_service_parser(commands)
    return parser


def _utf8_output() -> None:
    """Vietnamese must print even when output is redirected on a Windows code page."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        reconfigure = getattr(stream, "reconfigure", None)
        if encoding != "utf8" and reconfigure is not None:
            reconfigure(encoding="utf-8", errors="replace")


def exit_code(report: Report) -> int:
    """0 when every configured network class is up, else 1 (unconfigured never counts)."""
    from agent.report import NETWORK_CLASSES

    for network in NETWORK_CLASSES:
        status = report.networks.get(network)
        if status.configured and status.up is not True:
            return EXIT_DOWN
    return EXIT_UP


def agent_id(config: AgentConfig) -> str:
    """The configured agent id, else the daemon's (from its spool), else this machine's."""
    if config.agent_id:
        return config.agent_id
    from agent.spool import stored_identity

    if stored := stored_identity(config.spool.path):
        return stored
    from agent.inventory.host import machine_agent_id

    return machine_agent_id()


async def check_once(config: AgentConfig) -> tuple[Report, bool]:
    """Run every enabled section once; return the report and whether networks ran."""
    import time

    from agent.report import utcnow
    from agent.sections import collect_all, make_report

    observed_at, started = utcnow(), time.monotonic()
    results = await collect_all(config)
    report = make_report(
        config,
        agent_id=agent_id(config),
        seq=0,
        observed_at=observed_at,
        results=results,
        duration_seconds=time.monotonic() - started,
    )
    return report, "networks" in results


def _check(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from agent.config import load_config, security_warnings
    from agent.log import event, setup

    config = with_central_cache(load_config(args.config), args.config)
    # Interactive: events go to stderr (stdout stays pure JSON with --json).
    setup("debug" if args.verbose else "warning")
    warnings = [f"Cảnh báo / Warning: {key}: {text}\n" for key, text in security_warnings(config)]
    sys.stderr.writelines(warnings)
    report, networks_ran = asyncio.run(check_once(config))
    if args.json:
        import msgspec

        from agent.report import encode

        sys.stdout.buffer.write(msgspec.json.format(encode(report), indent=2) + b"\n")
    else:
        from agent.render import render_report
        from agent.sections import SECTIONS

        cost = None
        if any(s.name == "throughput" and s.enabled(config) for s in SECTIONS):
            from agent.throughput import monthly_cost_text

            cost = monthly_cost_text(config.throughput)
        sys.stdout.write(render_report(report, networks_ran=networks_ran, throughput_cost=cost))
        sys.stdout.writelines(["\n", *warnings] if warnings else [])
    sys.stdout.flush()
    if not networks_ran:
        event(logging.getLogger("agent.cli"), logging.ERROR, "check.networks_failed")
        sys.stderr.write(
            "Lỗi / Error: không chạy được kiểm tra mạng / the network checks did not run "
            "(see the log above)\n"
        )
        return EXIT_DOWN
    return exit_code(report)


def with_central_cache(config: AgentConfig, path: str) -> AgentConfig:
    """An enrolled agent's config with its last good central config (what `run` starts on),
    so that `check` probes the targets the province set; the local file alone otherwise."""
    if config.central is None or config.collector is None:
        return config
    from agent.central import Refresher

    refresher = Refresher({}, config, path, "-", "-", lambda c: None)
    from agent.config import read_yaml

    refresher.local = read_yaml(path)
    cached = refresher.load_cache()
    return cached.config if cached is not None else config


def _run(args: argparse.Namespace) -> int:
    return serve(args.config)


def _service(args: argparse.Namespace) -> int:
    from agent.service import main as service_main

    return service_main(args)


def serve(
    config_path: str | Path,
    stop: StopSignal | None = None,
    *,
    default_log_file: str | None = None,
) -> int:
    """Load the config, set up logging and run the daemon until ``stop``; the exit code.

    ``hatang-agent run`` and the Windows service both start here (the service passes its
    ``StopSignal`` and a log file under ProgramData, having no standard error). Raises
    ConfigError for a config that cannot run.
    """
    import asyncio

    from agent.config import ConfigError, load_config
    from agent.log import configure

    config = load_config(config_path)
    name = str(config_path)
    if config.collector is None:
        raise ConfigError(
            name, "collector", "required for `run` (url and token or token_file of the collector)"
        )
    config.collector.read_token()  # fail now, not at the first send an interval from now
    log_file = config.log.file or default_log_file
    if log_file:
        from agent.files import create_private

        try:
            if not config.log.file:  # the service's own default: its folder may be new
                Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            create_private(log_file)  # logs name hosts and addresses: owner-only
            Path(log_file).open("a", encoding="utf-8").close()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(name, "log.file", f"cannot write {log_file}: {reason}") from None
    configure(config.log, log_file)
    from agent.scheduler import run_daemon

    return asyncio.run(run_daemon(config, config_path, stop))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hatang-agent`` and ``python -m agent``; returns the exit code."""
    _utf8_output()
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    from agent.config import ConfigError  # after parsing: --version needs no config code

    if args.command == "enroll":
        from agent.enroll import run as enroll

        return enroll(args)
    handler = {"check": _check, "run": _run, "service": _service}[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        exc.in_file(str(getattr(args, "config", None) or ""))
        sys.stderr.write(f"{CONFIG_LEAD}: {exc}\n")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `hatang-agent check | head`
        return EXIT_UP

"""``hatang-agent enroll``: exchange an enrollment code for this PC's own credential.

The order is what makes "nothing written on failure" true: every check that can fail
locally comes first (the code's form, the URLs, the CA file, an existing config), then
the collector is asked; only a 201 writes anything — the credential (owner-only), then
the config file, each atomically — and if the config cannot be written the credential
is removed again. Exit 0 enrolled, 1 the collector refused (or could not be reached),
2 bad usage or an existing config without ``--force``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Final

import yaml

from agent import __version__
from agent.config import ConfigError, parse_config
from agent.paths import state_dir

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
CODE_CHARS: Final = re.compile(r"^[0-9A-Za-z\s\-_.]{16,40}$")


def add_parser(commands: Any) -> None:
    """The ``enroll`` sub-command (the contract the install scripts call)."""
    enroll = commands.add_parser(
        "enroll",
        help="enroll this computer with an enrollment code from the provincial IT centre",
        description="Ask the collector for this computer's own credential with an enrollment "
        "code, then write the agent config FILE (site, role, collector, credential). Exit 0 "
        "enrolled, 1 the collector refused the code, 2 bad usage. Nothing is written when the "
        "code is refused.",
    )
    enroll.add_argument("--config", "-c", required=True, metavar="FILE", help="config to write")
    enroll.add_argument(
        "--collector",
        required=True,
        action="append",
        metavar="URL",
        help="collector URL, e.g. https://10.10.0.10:8443 (repeat for a second address)",
    )
    enroll.add_argument("--code", required=True, metavar="CODE", help="e.g. K7QM-3XWD-9PTA-HN4R")
    enroll.add_argument("--role", choices=("host", "site-probe"), default="host")
    enroll.add_argument("--ca-file", metavar="F", help="CA certificate of the collector (PEM)")
    enroll.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"credential, spool and config cache (default {state_dir()})",
    )
    enroll.add_argument("--force", action="store_true", help="replace an existing config")
    if sys.platform != "win32":
        enroll.add_argument(
            "--user",
            metavar="NAME",
            help="the service's user: it is made owner of the credential and the state "
            "directory (enroll runs as root, the agent as this user)",
        )


def _usage(message: str) -> int:
    sys.stderr.write(f"Lỗi dòng lệnh / usage error: {message}\n")
    return EXIT_USAGE


def _refused(message: str) -> int:
    sys.stderr.write(f"Không đăng ký được / Enrollment refused: {message}\n")
    return EXIT_REFUSED


def _proposed_id(spool: Path) -> str:
    """This PC's own stable id (its spool's, else its machine's), kept when still free."""
    from agent.spool import stored_identity

    stored = stored_identity(str(spool)) if spool.exists() else None
    if stored:
        return stored
    from agent.inventory.host import machine_agent_id

    return machine_agent_id()


def _first_central(data: dict[str, Any], path: str, token: str, agent_id: str) -> str:
    """Fetch and cache the central config now, so that `check` and the first `run` cycle
    probe what the province set; a line saying what happened (never fatal)."""
    import asyncio
    import logging

    from agent.central import Refresher

    logging.getLogger("agent.central").setLevel(logging.CRITICAL)  # the line below says it
    config = parse_config(data, path)
    refresher = Refresher(data, config, path, token, agent_id, lambda c: None)
    applied = asyncio.run(refresher.fetch())
    if applied is not None:
        networks = [n for n in ("lan", "wan", "dedicated", "internet")
                    if applied.config.networks.get(n) is not None]  # fmt: skip
        return (
            f"Cấu hình tập trung / central configuration {applied.version}: "
            f"{', '.join(networks) or 'lan (default gateway)'}"
        )
    if refresher.rejected is not None:
        return (
            "Cảnh báo / Warning: this PC rejected the central configuration "
            f"({refresher.rejected[1]}); the collector sees it in `agents list`"
        )
    if refresher.standalone:
        return "Máy chủ không có cấu hình tập trung / no central configuration: local file only"
    return "Chưa tải được cấu hình tập trung / central configuration not fetched yet (retried)"


def run(args: argparse.Namespace) -> int:
    """Enroll; print what was done and what comes next (Vietnamese and English)."""
    target = Path(args.config)
    state = Path(args.state_dir) if args.state_dir else Path(state_dir())
    credential = state / "credential"
    spool = state / "spool.db"
    if not CODE_CHARS.match(args.code):
        return _usage("--code: an enrollment code is 4 groups of 4 letters or digits")
    collector: dict[str, Any] = {"url": args.collector, "token_file": str(credential)}
    if args.ca_file:
        collector["ca_file"] = str(Path(args.ca_file).resolve())
    data: dict[str, Any] = {
        "site": "pending",  # replaced by the collector's answer; validated again then
        "role": args.role,
        "collector": collector,
        "spool": {"path": str(spool)},
        "central": {"refresh": "5m", "cache": str(state / "central.json")},
    }
    try:
        checked = parse_config(data, "--collector/--ca-file")
    except ConfigError as exc:
        return _usage(str(exc).replace("--collector/--ca-file: collector.url", "--collector"))
    assert checked.collector is not None
    for existing, what in ((target, "the config"), (credential, "a credential")):
        if existing.exists() and not args.force:
            return _usage(
                f"{existing} exists ({what} of an enrolled agent?); nothing was changed. "
                "Use --force to enroll again and replace it / đã có tệp, dùng --force để thay"
            )
    if target.is_dir():
        return _usage(f"--config: {target} is a directory")
    owner = getattr(args, "user", None)
    if owner is not None:
        import pwd

        try:
            pwd.getpwnam(owner)
        except KeyError:
            return _usage(f"--user: no user {owner!r} on this computer")
    from agent.central import ENROLL_PATH, call
    from agent.sender import TransportError

    request = {
        "code": args.code,
        "hostname": socket.gethostname()[:253] or "unknown",
        "role": args.role,
        "agent_version": __version__,
        "agent_id": _proposed_id(spool),
    }
    try:
        resp = call(checked.collector, "POST", ENROLL_PATH, body=json.dumps(request).encode())
    except ConfigError as exc:
        return _usage(str(exc).replace("collector.ca_file", "--ca-file"))
    except TransportError as exc:
        return _refused(f"không kết nối được máy chủ / cannot reach the collector: {exc}")
    answer = resp.json()
    if resp.status != 201:
        said = answer.get("message") or resp.describe()
        hint = ""
        if resp.status == 429:
            hint = f" (retry after {resp.headers.get('retry-after', '?')}s)"
        return _refused(f"HTTP {resp.status} {answer.get('error', '')}: {said}{hint}")
    try:
        site, agent_id, token = str(answer["site"]), str(answer["agent_id"]), str(answer["token"])
    except KeyError as exc:
        return _refused(f"the collector's answer lacks {exc}")
    data["site"], data["agent_id"] = site, agent_id
    try:
        parse_config(data, str(target))  # exactly what `run` will load
    except ConfigError as exc:
        return _refused(f"the collector's answer does not make a valid config: {exc}")
    from agent.private_file import write_private

    header = (
        f"# Written by `hatang-agent enroll` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\n"
        "# Probe targets and intervals come from the collector (central configuration);\n"
        "# a key set here overrides the central one (see docs/central-config.md).\n"
    )
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    try:
        write_private(credential, (token + "\n").encode())
    except OSError as exc:
        return _refused(f"cannot write the credential {credential}: {exc}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        credential.unlink(missing_ok=True)
        return _refused(f"cannot write {target}: {exc}; nothing was kept")
    central = _first_central(data, str(target), token, agent_id)
    if owner is not None:
        import shutil

        try:
            for path in (state, credential, state / "central.json"):
                if path.exists():
                    shutil.chown(path, owner)
        except OSError as exc:
            return _refused(
                f"enrolled, but {state} could not be given to {owner}: {exc}; "
                f"run: chown -R {owner} {state}"
            )
    name = answer.get("site_name") or site
    sys.stdout.write(
        f"Đã đăng ký máy này với đơn vị {name} ({site}), mã tác tử {agent_id}, "
        f"vai trò {args.role}.\n"
        f"Enrolled this computer for {name} ({site}) as agent {agent_id}, role {args.role}.\n"
        f"  cấu hình / config:       {target}\n"
        f"  chứng thực / credential: {credential} (chỉ quản trị viên đọc được / owner-only)\n"
        "Bước tiếp theo / Next:\n"
        f"  hatang-agent check --config {target}   # kiểm tra kết nối / check the links\n"
        f"  hatang-agent run --config {target}     # hoặc cài dịch vụ / or install the service\n"
        f"{central}\n"
    )
    sys.stdout.write(f"{target}\n")
    return EXIT_OK

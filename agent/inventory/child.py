"""Inventory and posture in a short-lived child process (the daemon's way).

psutil, the platform probes and the posture modules cost the host role about 3 MiB
that it would otherwise hold between runs that come an hour (inventory), 15 minutes
(antivirus and firewall) or six hours (patches) apart (docs/agent-footprint.md). The
daemon runs each of them in ``python -m agent.inventory``: the request (which part,
its settings) on standard input, the result as JSON on standard output, bounded in
size and time. ``check`` is short-lived itself and collects in its own process.

What the child logs (warnings and above, on its standard error) is logged again by
the daemon as ``inventory.child_said``. A child that fails (cannot start, killed at
its deadline, unreadable answer) raises ``ChildFailed``; the section then logs
``section.failed`` and the report goes without that part, as when collecting in the
daemon raised.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any, Final, Literal

import msgspec

from agent import subproc
from agent.inventory.settings import AntivirusConfig, PatchesConfig
from agent.log import event
from agent.report import AntivirusStatus, FirewallStatus, HostInventory, PatchStatus
from agent.units import dec_hook

log = logging.getLogger(__name__)

Part = Literal["host", "antivirus", "patches"]
PARTS: Final[tuple[Part, ...]] = ("host", "antivirus", "patches")
# A full inventory or posture is a few KiB of JSON; a runaway child is cut well before
# it could matter to the daemon's memory.
CHILD_OUTPUT_LIMIT: Final = 1 << 20
CHILD_START_SECONDS: Final = 30.0  # interpreter and psutil imports on a slow office PC
# Commands a part may run one after the other, each under the part's command_timeout
# (antivirus: vendor queries, then the firewall's; patches: the package manager's).
_COMMANDS_PER_RUN: Final = 4


class ChildFailed(Exception):
    """The child gave no usable answer; the message says why (for the log)."""


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the child collects, with the settings that part reads."""

    part: Part
    antivirus: AntivirusConfig | None = None
    patches: PatchesConfig | None = None


def _answer_type(part: Part) -> Any:
    if part == "host":
        return HostInventory
    if part == "antivirus":
        return tuple[AntivirusStatus, FirewallStatus]
    return PatchStatus


def timeout_for(request: Request) -> float:
    """A generous bound on one child: start-up, then every command at its own timeout."""
    if request.antivirus is not None:
        return CHILD_START_SECONDS + _COMMANDS_PER_RUN * float(request.antivirus.command_timeout)
    if request.patches is not None:
        return CHILD_START_SECONDS + _COMMANDS_PER_RUN * float(request.patches.command_timeout)
    return CHILD_START_SECONDS * 2  # host: files, psutil and (Windows) the registry


def collect_in_child(request: Request) -> Any:
    """Run one part in ``python -m agent.inventory`` and return its decoded result.

    Blocks (subprocess): the daemon calls it in the inventory lane's thread.
    """
    timeout = timeout_for(request)
    try:
        proc = subproc.run(
            [subproc.python_executable(), "-m", "agent.inventory"],
            timeout=timeout,
            env=subproc.module_env(),
            input=msgspec.json.encode(request, enc_hook=float),  # Duration: seconds
            max_output=CHILD_OUTPUT_LIMIT,
        )
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"{request.part}: no answer within {timeout:.0f}s (killed)") from None
    except subproc.OutputTooLarge:
        limit = CHILD_OUTPUT_LIMIT
        raise ChildFailed(f"{request.part}: answer larger than {limit} bytes") from None
    except OSError as exc:
        detail = exc.strerror or str(exc)
        raise ChildFailed(f"{request.part}: cannot start the child: {detail}") from None
    said = proc.stderr.decode("utf-8", "replace").strip()
    if said:  # the child's own warnings, which the daemon's log would have had in-process
        event(log, logging.WARNING, "inventory.child_said", part=request.part, text=said[-2000:])
    try:
        return msgspec.json.decode(proc.stdout, type=_answer_type(request.part))
    except msgspec.DecodeError as exc:
        detail = f"exit {proc.returncode}, unreadable answer ({str(exc)[:200]})"
        raise ChildFailed(f"{request.part}: {detail}; it said: {said[-500:]}") from None


def collect(request: Request) -> Any:
    """Collect one part in this process (the child's work)."""
    if request.part == "host":
        from agent.inventory.host import collect as collect_host

        return collect_host()
    if request.part == "antivirus":
        from agent.inventory.antivirus import detect
        from agent.inventory.firewall import detect as detect_firewall

        settings = request.antivirus or AntivirusConfig()
        return detect(settings), detect_firewall(float(settings.command_timeout))
    from agent.inventory.patches import detect as detect_patches

    return detect_patches(request.patches or PatchesConfig())


def child_main(stdin: bytes) -> tuple[int, bytes]:
    """The child's work: the request in, (exit code, result JSON) out; exit 2 for a
    request it cannot read."""
    try:
        data = msgspec.json.decode(stdin)
        request = msgspec.convert(data, Request, dec_hook=dec_hook)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        sys.stderr.write(f"inventory request refused: {exc}\n")
        return 2, b""
    return 0, msgspec.json.encode(collect(request))

"""Every external program goes through ``agent.subproc`` (no console window on Windows)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from agent import subproc

AGENT = Path(__file__).resolve().parents[2] / "agent"
_SPAWNERS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}


def test_windows_children_get_no_console_window() -> None:
    assert subproc.creation_flags("win32") == 0x08000000
    assert subproc.creation_flags("linux") == 0


def test_run_captures_output() -> None:
    proc = subproc.run([sys.executable, "-c", "print('xin chào')"], timeout=30)
    assert (proc.returncode, proc.stdout.decode().strip()) == (0, "xin chào")


def test_no_module_spawns_a_process_but_the_helper() -> None:
    """A direct subprocess call would flash a console window on an office PC."""
    offenders = []
    for path in sorted(AGENT.rglob("*.py")):
        if path == AGENT / "subproc.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value.id if isinstance(node.value, ast.Name) else ""
            direct = base == "subprocess" and node.attr in _SPAWNERS
            spawn = node.attr in {"create_subprocess_exec", "create_subprocess_shell"}
            if direct or spawn or (base == "os" and node.attr in {"system", "popen"}):
                offenders.append(f"{path.relative_to(AGENT.parent)}:{node.lineno}")
    assert offenders == []

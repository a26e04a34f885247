"""Every external program goes through ``agent.subproc`` (no console window on Windows)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_bounded_run_passes_input_and_keeps_the_output() -> None:
    code = "import sys; data = sys.stdin.buffer.read(); sys.stdout.buffer.write(data[::-1])"
    proc = subproc.run(
        [sys.executable, "-c", code], timeout=30, input=b"abc" * 50000, max_output=1 << 20
    )
    assert (proc.returncode, proc.stdout) == (0, b"cba" * 50000)


def test_a_child_writing_too_much_is_killed() -> None:
    code = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    with pytest.raises(subproc.OutputTooLarge):
        subproc.run([sys.executable, "-c", code], timeout=60, max_output=100_000)


def test_a_child_that_hangs_is_killed_at_the_timeout() -> None:
    code = "import sys, time; sys.stderr.write('stuck'); sys.stderr.flush(); time.sleep(600)"
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        subproc.run([sys.executable, "-c", code], timeout=1, max_output=1000)
    assert caught.value.stderr == b"stuck"


def test_python_executable_runs_modules() -> None:
    proc = subproc.run([subproc.python_executable(), "-m", "agent", "--help"], timeout=30)
    assert proc.returncode == 0

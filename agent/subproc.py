"""The one way hatang starts an external program (route, PowerShell, netsh, nft, systemctl...).

On Windows a console program started by a service or a windowless agent opens a console
window unless told not to: on an office PC that is a black window flashing every few
minutes, which officers report as a virus. ``CREATE_NO_WINDOW`` on every call prevents it,
so every subprocess goes through ``run`` (a test checks that nothing else calls
``subprocess`` directly).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final

# winbase.h: the child gets no console window (ignored for GUI programs).
CREATE_NO_WINDOW: Final = 0x08000000
_CHUNK: Final = 65536


class OutputTooLarge(Exception):
    """The child wrote more than the caller's ``max_output``; it was killed."""


def creation_flags(platform: str = sys.platform) -> int:
    """The ``creationflags`` for a child process on ``platform`` (0 off Windows)."""
    return CREATE_NO_WINDOW if platform == "win32" else 0


def python_executable() -> str:
    """The interpreter to run ``python -m agent...`` children with.

    Under the Windows service host ``sys.executable`` is ``pythonservice.exe``, which
    cannot run a module: use the ``python.exe`` of the same installation then.
    """
    exe = Path(sys.executable)
    if sys.platform == "win32" and not exe.name.lower().startswith("python.exe"):
        candidate = Path(sys.exec_prefix) / "python.exe"
        if candidate.exists():
            return str(candidate)
    return str(exe)


def run(
    args: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    max_output: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``args`` (no shell, no window) and capture its output as bytes.

    ``input`` is written to the child's standard input (else it gets none). With
    ``max_output`` the child is killed and ``OutputTooLarge`` raised as soon as its
    standard output passes that many bytes, so a runaway child cannot fill the
    agent's memory; its standard error keeps only the last ``max_output`` bytes.
    Raises what ``subprocess.run`` raises (``OSError``, ``subprocess.TimeoutExpired``);
    callers turn those into their own error results.
    """
    if max_output is not None:
        return _run_bounded(list(args), timeout, env, input or b"", max_output)
    return subprocess.run(
        list(args),
        capture_output=True,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        creationflags=creation_flags(),
        check=False,
    )


def _run_bounded(
    args: list[str], timeout: float, env: Mapping[str, str] | None, data: bytes, limit: int
) -> subprocess.CompletedProcess[bytes]:
    """``run`` reading at most ``limit`` bytes; a timer kills the child at ``timeout``."""
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        creationflags=creation_flags(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()  # closes its pipes: the reads below end

    err = bytearray()

    def feed(pipe: IO[bytes]) -> None:
        try:
            pipe.write(data)
            pipe.close()
        except OSError:
            pass  # the child exited without reading: its exit status says why

    def drain(pipe: IO[bytes]) -> None:
        while chunk := pipe.read(_CHUNK):
            err.extend(chunk)
            del err[:-limit]

    killer = threading.Timer(timeout, expire)
    helpers = [
        threading.Thread(target=feed, args=(proc.stdin,), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr,), daemon=True),
    ]
    out = bytearray()
    try:
        killer.start()
        for helper in helpers:
            helper.start()
        while chunk := proc.stdout.read(_CHUNK):
            out.extend(chunk)
            if len(out) > limit:
                proc.kill()
                raise OutputTooLarge(f"{args[0]} wrote more than {limit} bytes")
        code = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for helper in helpers:
            helper.join(timeout=5)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(args, timeout, bytes(out), bytes(err))
    return subprocess.CompletedProcess(args, code, bytes(out), bytes(err))


def child_process_main(work: Callable[[bytes], tuple[int, bytes]]) -> int:
    """The body of a ``python -m agent...`` child: warnings to standard error (the daemon
    logs them), the request from standard input through ``work``, its answer to
    standard output; returns ``work``'s exit code."""
    from agent.log import setup

    setup("warning", None)
    code, answer = work(sys.stdin.buffer.read())
    sys.stdout.buffer.write(answer)
    sys.stdout.buffer.flush()
    return code


def module_env() -> dict[str, str]:
    """The environment for a ``python -m agent...`` child: ours, with the directory
    this package was loaded from first on its path (a source checkout works too)."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}

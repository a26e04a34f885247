"""Running the external tools that posture detection reads (PowerShell, nft, clamd ...).

Every tool runs from an argument list (never a shell), with a timeout, and its output is
decoded tolerantly: Windows tools write UTF-16, UTF-8 with a BOM or the ANSI code page
depending on version and locale. A tool that cannot run becomes a ``CommandResult`` with
``error`` set, never an exception, so a detector can report it and try the next source.
Detectors take a ``Runner`` argument so tests can replay recorded output (STYLE rule 7).
"""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent import subproc

MAX_OUTPUT = 4_000_000  # bytes kept per stream; posture output is a few KiB


def which(tool: str) -> str | None:
    """The path of ``tool`` on PATH, like ``shutil.which`` on POSIX.

    Not ``shutil.which`` itself: importing shutil (with bz2, lzma...) costs the daemon
    half a MiB for this one lookup every 15 minutes.
    """
    if os.sep in tool:
        return tool if os.path.isfile(tool) and os.access(tool, os.X_OK) else None
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or os.curdir, tool)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What one tool run produced; ``error`` is set when it did not run to completion."""

    args: tuple[str, ...]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # "not found", "timed out after 30s", "permission denied", ...

    @property
    def ok(self) -> bool:
        """True when the tool ran and exited 0."""
        return self.error is None and self.returncode == 0

    def describe(self) -> str:
        """A one-line English reason for a failed run, for warnings in the report."""
        tool = os.path.basename(self.args[0]) if self.args else "command"
        if self.error:
            return f"{tool}: {self.error}"
        text = first_line(self.stderr) or first_line(self.stdout)
        return f"{tool}: exit status {self.returncode}" + (f": {text}" if text else "")


Runner = Callable[[Sequence[str], float], CommandResult]


def first_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of ``text``, shortened for a report field."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:limit]
    return ""


def decode_output(data: bytes) -> str:
    """Decode tool output: BOMs first, then UTF-16 without BOM, UTF-8, cp1258, latin-1.

    The result is NFC-normalised: cp1258 writes Vietnamese tone marks as separate
    combining characters, and parsers compare against composed words ("BẬT").
    """
    return unicodedata.normalize("NFC", _decode(data))


def _decode(data: bytes) -> str:
    if not data:
        return ""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    # PowerShell redirected to a pipe may write UTF-16LE without a BOM: ASCII text then
    # has a NUL in every odd byte.
    sample = data[:200]
    if len(sample) >= 4 and sample[1::2].count(0) >= len(sample[1::2]) * 0.6:
        return data.decode("utf-16-le", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        # Vietnamese Windows ANSI code page; decodes almost every byte, so it goes last
        # among the real encodings.
        return data.decode("cp1258")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    if sys.platform != "win32":
        # Parse the tools' own words, not a translation (parsers still accept some).
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
    if extra:
        env.update(extra)
    return env


def run_command(
    args: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> CommandResult:
    """Run one tool without a shell; return its decoded output or why it did not run."""
    argv = tuple(args)
    try:
        proc = subproc.run(argv, timeout=timeout, env=_env(env))
    except FileNotFoundError:
        return CommandResult(argv, None, error="not found")
    except PermissionError:
        return CommandResult(argv, None, error="permission denied")
    except subprocess.TimeoutExpired:
        return CommandResult(argv, None, error=f"timed out after {timeout:g}s")
    except OSError as exc:
        return CommandResult(argv, None, error=f"cannot run: {exc.strerror or exc}")
    return CommandResult(
        argv,
        proc.returncode,
        decode_output(proc.stdout[:MAX_OUTPUT]),
        decode_output(proc.stderr[:MAX_OUTPUT]),
    )

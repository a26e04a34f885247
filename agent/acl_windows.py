"""Windows only: restrict a file to SYSTEM and Administrators with ``icacls``.

The decisions are pure functions (the command line, reading ``icacls`` output) tested
on recorded output; only ``protect`` and ``is_protected`` run the tool. Principals are
named by SID (``*S-1-5-18``), never by name: group names are translated on localised
Windows, SIDs are not.
"""

from __future__ import annotations

import locale
import re
from typing import Final

from agent.subproc import run as subprocess_run

SYSTEM_SID: Final = "S-1-5-18"
ADMINISTRATORS_SID: Final = "S-1-5-32-544"
# How icacls prints the two principals on an English system (names are localised
# elsewhere; the SID form is printed for accounts it cannot name).
ALLOWED_NAMES: Final = frozenset(
    {
        "nt authority\\system",
        "builtin\\administrators",
        f"*{SYSTEM_SID}".lower(),
        f"*{ADMINISTRATORS_SID}".lower(),
        SYSTEM_SID.lower(),
        ADMINISTRATORS_SID.lower(),
    }
)
_ACE: Final = re.compile(r"^(?P<who>.+?):(?P<rights>(?:\([A-Z,]+\))+)\s*$")


def protect_command(path: str) -> list[str]:
    """icacls arguments: drop inherited entries, grant only SYSTEM and Administrators."""
    return [
        "icacls",
        path,
        "/inheritance:r",
        "/grant:r",
        f"*{SYSTEM_SID}:(F)",
        f"*{ADMINISTRATORS_SID}:(F)",
        "/q",
    ]


def parse_icacls(output: str, path: str) -> list[tuple[str, str]]:
    """The (principal, rights) entries of ``icacls PATH`` output.

    The first line starts with the path, following entries are indented under it, and a
    summary line ("Successfully processed 1 files...", translated) ends the output.
    """
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(output.splitlines()):
        text = line.strip()
        if number == 0 and text.lower().startswith(path.lower()):
            text = text[len(path) :].strip()
        if not text:
            continue
        match = _ACE.match(text)
        if match:
            entries.append((match.group("who").strip(), match.group("rights")))
    return entries


def only_administrators(entries: list[tuple[str, str]]) -> bool:
    """True when every entry is SYSTEM or Administrators and none is inherited (``(I)``)."""
    if not entries:
        return False
    return all(who.lower() in ALLOWED_NAMES and "(I)" not in rights for who, rights in entries)


def _run(args: list[str]) -> str:
    proc = subprocess_run(args, timeout=30)
    encoding = locale.getpreferredencoding(False)
    out = proc.stdout.decode(encoding, errors="replace")
    if proc.returncode != 0:
        err = proc.stderr.decode(encoding, errors="replace") or out
        raise OSError(f"{' '.join(args[:2])} failed: {err.strip()[:300]}")
    return out


def protect(path: str) -> None:
    """Restrict ``path`` to SYSTEM and Administrators; OSError when icacls refuses."""
    _run(protect_command(path))


def is_protected(path: str) -> bool:
    """Whether ``path`` is readable only by SYSTEM and Administrators."""
    return only_administrators(parse_icacls(_run(["icacls", path]), path))

"""Patch currency on Windows: the update history, the installed hotfixes, pending reboot.

Sources, both read (they disagree on purpose-built machines, so the newest wins):

1. The Windows Update Agent's history (``Microsoft.Update.Session`` COM,
   ``QueryHistory``): every installation with its date and result, whether it came from
   Windows Update, WSUS or the province's own update server. Antivirus signature and
   platform updates (Defender's KB2267602 several times a day) and the malicious-software
   removal tool are not patches and are skipped by KB number, since titles are localised.
2. ``Win32_QuickFixEngineering`` (what ``Get-HotFix`` reads): present on every version,
   Server 2016 included, when the COM API is blocked or its history was cleared. Its
   ``InstalledOn`` is a string in the system's short-date format ("11/13/2024" on
   English, "13/11/2024" on Vietnamese Windows), sometimes empty; the day/month order is
   taken from the rows that make it unambiguous.

A reboot is pending when Windows Update (``Auto Update\\RebootRequired``), component
servicing (``Component Based Servicing\\RebootPending``) or a pending file rename says so.
Pending updates are not counted: that needs an update search, which contacts the update
server and can take minutes; ``pending_updates`` stays None.

``run_*`` functions run PowerShell; ``parse_*`` functions are pure and tested on
recorded output in ``tests/fixtures/windows/``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final

from agent.inventory.antivirus.command import Runner, run_command
from agent.inventory.antivirus.windows import (
    ParseError,
    load_json_objects,
    parse_ps_datetime,
    powershell_args,
    ps_bool,
    ps_field,
    ps_int,
    ps_text,
)
from agent.report import PatchSource, PatchStatus

HISTORY_LIMIT: Final = 200  # entries read from the newest: months of monthly patching
HISTORY_SCRIPT: Final = (
    "$s=New-Object -ComObject Microsoft.Update.Session;$q=$s.CreateUpdateSearcher();"
    "$n=$q.GetTotalHistoryCount();if($n -gt 0){$q.QueryHistory(0,[Math]::Min($n,"
    f"{HISTORY_LIMIT}))|Select-Object Date,Title,Operation,ResultCode,HResult"
    "|ConvertTo-Json -Depth 2}"
)
HOTFIX_SCRIPT: Final = (
    "Get-CimInstance -ClassName Win32_QuickFixEngineering -ErrorAction Stop"
    "|Select-Object HotFixID,Description,InstalledOn,InstalledBy|ConvertTo-Json -Depth 2"
)
_CURRENT: Final = "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\"
REBOOT_SCRIPT: Final = (
    "$r=(Get-ItemProperty 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager'"
    " -Name PendingFileRenameOperations -ErrorAction SilentlyContinue)"
    ".PendingFileRenameOperations;[pscustomobject]@{"
    f"WindowsUpdate=(Test-Path '{_CURRENT}WindowsUpdate\\Auto Update\\RebootRequired');"
    f"ComponentBasedServicing=(Test-Path '{_CURRENT}Component Based Servicing\\RebootPending');"
    "PendingFileRenameOperations=[bool]$r}|ConvertTo-Json"
)
# Not patches: Defender/Security Essentials signatures and platform, the removal tool.
NOT_PATCHES: Final = frozenset({"KB2267602", "KB2461484", "KB4052623", "KB890830", "KB915597"})
_KB = re.compile(r"\bKB\d{6,8}\b", re.IGNORECASE)
_INSTALLATION: Final = 1  # UpdateOperation.uoInstallation
_SUCCEEDED: Final = frozenset({2, 3})  # OperationResultCode: succeeded (with errors)


@dataclass(frozen=True, slots=True)
class Installed:
    """One successfully installed update."""

    kb: str | None
    installed_at: dt.datetime
    title: str = ""


def parse_update_history(text: str) -> list[Installed]:
    """Successful installations in ``QueryHistory | ConvertTo-Json``, newest first."""
    found: list[Installed] = []
    for obj in load_json_objects(text):
        if ps_int(ps_field(obj, "Operation")) != _INSTALLATION:
            continue
        if ps_int(ps_field(obj, "ResultCode")) not in _SUCCEEDED:
            continue
        when = parse_ps_datetime(ps_field(obj, "Date"))
        title = ps_text(ps_field(obj, "Title")) or ""
        match = _KB.search(title)
        kb = match.group(0).upper() if match else None
        if when is None or kb in NOT_PATCHES:
            continue
        found.append(Installed(kb, when, title[:256]))
    return sorted(found, key=lambda i: i.installed_at, reverse=True)


_SHORT_DATE = re.compile(r"^(\d{1,4})[/.-](\d{1,2})[/.-](\d{1,4})$")


def _date_parts(text: str) -> tuple[int, int, int] | None:
    match = _SHORT_DATE.match(text.strip())
    if match is None:
        return None
    a, b, c = (int(g) for g in match.groups())
    return a, b, c


def _to_date(parts: tuple[int, int, int], day_first: bool) -> dt.date | None:
    a, b, c = parts
    try:
        if a > 31:  # 2024-11-13: ISO order whatever the locale
            return dt.date(a, b, c)
        return dt.date(c, b, a) if day_first else dt.date(c, a, b)
    except ValueError:
        return None


def parse_hotfixes(text: str, now: dt.datetime | None = None) -> list[Installed]:
    """Hotfixes with a date in ``Win32_QuickFixEngineering | ConvertTo-Json``, newest first.

    ``InstalledOn`` is the system's short date: day first on Vietnamese (and most
    non-US) Windows, month first on US English. A row whose first number is above 12
    proves day first, one whose second is proves month first; without proof, month first
    (the class's documented form) unless that puts a date in the future. The date is
    midnight local time: the class keeps no time of day.
    """
    now = now or dt.datetime.now(dt.UTC)
    rows: list[tuple[str | None, tuple[int, int, int] | dt.datetime]] = []
    for obj in load_json_objects(text):
        kb = ps_text(ps_field(obj, "HotFixID"))
        value = ps_field(obj, "InstalledOn")
        # Get-HotFix (not Get-CimInstance) turns it into a DateTime: /Date(...)/ or an object.
        if isinstance(value, dict) or (isinstance(value, str) and "Date(" in value):
            when = parse_ps_datetime(value)
            if when is not None:
                rows.append((kb, when))
            continue
        parts = _date_parts(ps_text(value) or "")
        if parts is not None:
            rows.append((kb, parts))
    dated = [p for _, p in rows if isinstance(p, tuple) and p[0] <= 31]
    day_first = any(p[0] > 12 for p in dated) and not any(p[1] > 12 for p in dated)
    found: list[Installed] = []
    tomorrow = (now + dt.timedelta(days=1)).date()
    for kb, value in rows:
        if isinstance(value, dt.datetime):
            when = value
        else:
            day = _to_date(value, day_first)
            if day is None or day > tomorrow:
                day = _to_date(value, not day_first)
            if day is None or day > tomorrow or day.year < 1990:
                continue
            when = dt.datetime.combine(day, dt.time()).astimezone().astimezone(dt.UTC)
        if kb is not None and kb.upper() in NOT_PATCHES:
            continue
        found.append(Installed(kb, when))
    return sorted(found, key=lambda i: i.installed_at, reverse=True)


def parse_reboot_pending(text: str) -> tuple[bool | None, list[str]]:
    """Whether a reboot is pending, and which of the three places says so."""
    objects = load_json_objects(text)
    if not objects:
        return None, []
    obj = objects[0]
    reasons = [
        key
        for key in ("WindowsUpdate", "ComponentBasedServicing", "PendingFileRenameOperations")
        if ps_bool(ps_field(obj, key)) is True
    ]
    return bool(reasons), reasons


def detect(
    timeout: float, runner: Runner = run_command, now: dt.datetime | None = None
) -> PatchStatus:
    """Read the update history, the hotfixes and the reboot flags of this computer."""
    warnings: list[str] = []
    history: list[Installed] = []
    hotfixes: list[Installed] = []
    for name, script in (("windows-update", HISTORY_SCRIPT), ("hotfix", HOTFIX_SCRIPT)):
        result = runner(powershell_args(script), timeout)
        if not result.ok:
            warnings.append(f"{name}: {result.describe()}"[:1024])
            continue
        try:
            if name == "windows-update":
                history = parse_update_history(result.stdout)
            else:
                hotfixes = parse_hotfixes(result.stdout, now)
        except ParseError as exc:
            warnings.append(f"{name}: {exc}"[:1024])
    reboot: bool | None = None
    result = runner(powershell_args(REBOOT_SCRIPT), timeout)
    if result.ok:
        try:
            reboot, _ = parse_reboot_pending(result.stdout)
        except ParseError as exc:
            warnings.append(f"reboot: {exc}"[:1024])
    else:
        warnings.append(f"reboot: {result.describe()}"[:1024])
    newest_history = history[0].installed_at if history else None
    newest_hotfix = hotfixes[0].installed_at if hotfixes else None
    source: PatchSource = (
        "hotfix"
        if newest_history is None or (newest_hotfix is not None and newest_hotfix > newest_history)
        else "windows-update"
    )
    recent = [i.kb for i in (history or hotfixes) if i.kb][:16]
    last = max((t for t in (newest_history, newest_hotfix) if t is not None), default=None)
    return PatchStatus(
        source=source,
        last_installed_at=last,
        reboot_pending=reboot,
        recent=list(dict.fromkeys(recent)),
        error=None
        if last is not None
        else "; ".join(warnings)[:1024] or "no installed update found",
        warnings=warnings[:16],
    )

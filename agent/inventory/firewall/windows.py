"""Windows Firewall: the domain, private and public profiles, judged on the active ones.

Each connected network uses one profile (its ``NetworkCategory``); a profile that no
network uses filters nothing. So the verdict is taken on the active profiles only: a PC
on a public Wi-Fi with the public profile off is unprotected even if domain and private
are on ("any profile on" called it protected).

``Get-NetFirewallProfile`` and ``Get-NetConnectionProfile`` answer on Windows 8 / Server
2012 and later; older or locked-down machines fall back to ``netsh advfirewall show
allprofiles state`` and ``show currentprofile state``, whose text is translated on
localised Windows, so its parser keys on layout and on the words for on/off in English
and Vietnamese rather than on full sentences.
"""

from __future__ import annotations

import re
from typing import Any, Final

from agent.inventory.antivirus.command import Runner, run_command
from agent.inventory.antivirus.windows import (
    ParseError,
    load_json_objects,
    powershell_args,
    ps_bool,
    ps_field,
    ps_text,
)
from agent.report import FirewallProfile, FirewallStatus

PROFILE_SCRIPT: Final = (
    "Get-NetFirewallProfile -ErrorAction Stop | Select-Object Name,Enabled | ConvertTo-Json"
)
NETSH_ARGS: Final = ("netsh", "advfirewall", "show", "allprofiles", "state")
CONNECTION_SCRIPT: Final = (
    "Get-NetConnectionProfile -ErrorAction Stop"
    " | Select-Object Name,InterfaceAlias,NetworkCategory | ConvertTo-Json"
)
NETSH_CURRENT_ARGS: Final = ("netsh", "advfirewall", "show", "currentprofile", "state")
# NetworkCategory: a number in ConvertTo-Json (PowerShell 5.1 and 7), its name with
# -EnumsAsStrings or when the value went through a string.
_CATEGORIES: Final[dict[int | str, str]] = {
    0: "public",
    1: "private",
    2: "domain",
    "public": "public",
    "private": "private",
    "domainauthenticated": "domain",
}
PROFILE_ORDER: Final = ("domain", "private", "public")  # netsh prints them in this order
_PROFILE_WORDS: Final = {
    "domain": ("domain", "miền", "mien"),
    "private": ("private", "riêng", "rieng"),
    "public": ("public", "công cộng", "cong cong", "chung"),
}
_ON: Final = {"on", "bật", "bat", "true", "enabled"}
_OFF: Final = {"off", "tắt", "tat", "false", "disabled"}


def _enabled(value: Any) -> bool | None:
    """``Enabled`` is a GpoBoolean: JSON 1/0 (2 = not configured), true/false or text."""
    if isinstance(value, int) and not isinstance(value, bool) and value == 2:
        return None
    return ps_bool(value)


def _profile_name(text: str) -> str | None:
    lowered = text.lower()
    for name, words in _PROFILE_WORDS.items():
        if any(w in lowered for w in words):
            return name
    return None


def parse_firewall_profiles(text: str) -> list[FirewallProfile]:
    """Parse ``Get-NetFirewallProfile | Select-Object Name,Enabled | ConvertTo-Json``."""
    profiles = []
    for obj in load_json_objects(text):
        name = ps_text(ps_field(obj, "Name"))
        if name is None:
            continue
        profiles.append(
            FirewallProfile(
                name=_profile_name(name) or name.lower()[:256],
                enabled=_enabled(ps_field(obj, "Enabled")),
            )
        )
    return profiles


_RULE = re.compile(r"^\s*-{10,}\s*$")


def parse_connection_profiles(text: str) -> set[str]:
    """The active profiles from ``Get-NetConnectionProfile | ... | ConvertTo-Json``."""
    active = set()
    for obj in load_json_objects(text):
        value = ps_field(obj, "NetworkCategory")
        key = value.strip().lower() if isinstance(value, str) else value
        name = _CATEGORIES.get(key) if isinstance(key, int | str) else None
        if name is None:
            raise ParseError(f"Get-NetConnectionProfile: unknown NetworkCategory {value!r}")
        active.add(name)
    return active


def parse_netsh_state(text: str, *, by_position: bool = True) -> list[FirewallProfile]:
    """Parse ``netsh advfirewall show allprofiles state`` in any language.

    Each profile is a header line, a line of dashes, then ``State  ON`` (Vietnamese:
    ``Trạng thái  BẬT``). Headers are recognised by their profile word when possible,
    otherwise by position, since netsh always prints domain, private, public
    (``by_position=False`` for ``show currentprofile``, which prints only the active ones
    and where a position means nothing: an unknown header then raises ParseError).
    """
    lines = text.splitlines()
    profiles: list[FirewallProfile] = []
    for i, line in enumerate(lines):
        if not _RULE.match(line) or i == 0:
            continue
        header = lines[i - 1]
        state: bool | None = None
        for following in lines[i + 1 :]:
            if _RULE.match(following):
                break
            words = following.strip().split()
            if len(words) >= 2:
                last = words[-1].lower()
                if last in _ON or last in _OFF:
                    state = last in _ON
                    break
        position = PROFILE_ORDER[len(profiles)] if len(profiles) < 3 else f"profile{len(profiles)}"
        name = _profile_name(header)
        if name is None and not by_position:
            raise ParseError(f"netsh: unknown profile heading {header.strip()!r}")
        name = name or position
        profiles.append(FirewallProfile(name=name, enabled=state))
    if not profiles:
        raise ParseError("netsh: no profile sections in output")
    return profiles


def judge(profiles: list[FirewallProfile], active: set[str] | None) -> FirewallStatus:
    """The verdict on the active profiles; without them, only a unanimous one.

    ``active`` is None when Windows could not say which profiles are in use: then
    every profile on is "on", every profile off is "off", and a mix is "unknown"
    (the one that is off may be the one in use).
    """
    marked = [
        FirewallProfile(
            name=p.name,
            enabled=p.enabled,
            rules=p.rules,
            detail=p.detail,
            active=None if active is None else p.name in active,
        )
        for p in profiles
    ]
    warnings: list[str] = []
    missing: list[str] = []
    if active:
        judged = [p for p in marked if p.active]
        missing = sorted(active - {p.name for p in marked})
        if missing:
            warnings.append(f"active profile not listed: {', '.join(missing)}")
    else:
        judged = marked
        warnings.append("active network profile unknown: judged on every profile")
    states = {p.enabled for p in judged}
    enabled: bool | None
    if False in states:
        enabled = False if active or states == {False} else None
    elif states == {True} and not (active and missing):
        enabled = True
    else:
        enabled = None
    return FirewallStatus(enabled=enabled, profiles=marked[:16], warnings=warnings)


def _active_profiles(runner: Runner, timeout: float, warnings: list[str]) -> set[str] | None:
    """Which profiles the connected networks use (PowerShell, then netsh); None if unknown."""
    result = runner(powershell_args(CONNECTION_SCRIPT), timeout)
    if result.ok:
        try:
            active = parse_connection_profiles(result.stdout)
        except ParseError as exc:
            warnings.append(str(exc))
        else:
            if active:
                return active
            warnings.append("Get-NetConnectionProfile: no connected network")
    else:
        warnings.append(f"Get-NetConnectionProfile: {result.describe()}")
    result = runner(list(NETSH_CURRENT_ARGS), timeout)
    if result.error is not None:
        warnings.append(result.describe())
        return None
    try:
        return {p.name for p in parse_netsh_state(result.stdout, by_position=False)}
    except ParseError as exc:
        warnings.append(f"{exc} (currentprofile)")
        return None


def detect(timeout: float, *, runner: Runner = run_command) -> FirewallStatus:
    """Read the firewall profiles and the active ones, through PowerShell first, netsh next."""
    warnings: list[str] = []
    profiles: list[FirewallProfile] = []
    source = "Get-NetFirewallProfile"
    result = runner(powershell_args(PROFILE_SCRIPT), timeout)
    if result.ok:
        try:
            profiles = parse_firewall_profiles(result.stdout)
            if not profiles:
                warnings.append("Get-NetFirewallProfile: no profiles in output")
        except ParseError as exc:
            warnings.append(f"Get-NetFirewallProfile: {exc}")
    else:
        warnings.append(f"Get-NetFirewallProfile: {result.describe()}")
    if not profiles:
        source = "netsh"
        result = runner(list(NETSH_ARGS), timeout)
        if result.error is None:
            try:
                profiles = parse_netsh_state(result.stdout)
            except ParseError as exc:
                warnings.append(str(exc))
        else:
            warnings.append(result.describe())
    if not profiles:
        return FirewallStatus(
            enabled=None, error="; ".join(warnings)[:1024], warnings=warnings[:16]
        )
    status = judge(profiles, _active_profiles(runner, timeout, warnings))
    return FirewallStatus(
        enabled=status.enabled,
        profiles=status.profiles,
        source=source,
        error=None,
        warnings=[w[:1024] for w in [*warnings, *status.warnings]][:16],
    )

"""Windows Firewall: the domain, private and public profiles.

``Get-NetFirewallProfile`` answers on Windows 8 / Server 2012 and later; older or
locked-down machines fall back to ``netsh advfirewall show allprofiles state``, whose
text is translated on localised Windows, so its parser keys on layout and on the
words for on/off in English and Vietnamese rather than on full sentences.
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
from agent.inventory.firewall.linux import summarise
from agent.report import FirewallProfile, FirewallStatus

PROFILE_SCRIPT: Final = (
    "Get-NetFirewallProfile -ErrorAction Stop | Select-Object Name,Enabled | ConvertTo-Json"
)
NETSH_ARGS: Final = ("netsh", "advfirewall", "show", "allprofiles", "state")
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


def parse_netsh_state(text: str) -> list[FirewallProfile]:
    """Parse ``netsh advfirewall show allprofiles state`` in any language.

    Each profile is a header line, a line of dashes, then ``State  ON`` (Vietnamese:
    ``Trạng thái  BẬT``). Headers are recognised by their profile word when possible,
    otherwise by position, since netsh always prints domain, private, public.
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
        name = _profile_name(header) or position
        profiles.append(FirewallProfile(name=name, enabled=state))
    if not profiles:
        raise ParseError("netsh: no profile sections in output")
    return profiles


def detect(timeout: float, *, runner: Runner = run_command) -> FirewallStatus:
    """Read the firewall profiles, through PowerShell first and netsh second."""
    warnings: list[str] = []
    result = runner(powershell_args(PROFILE_SCRIPT), timeout)
    if result.ok:
        try:
            profiles = parse_firewall_profiles(result.stdout)
            if profiles:
                return _status(profiles, "Get-NetFirewallProfile", warnings)
            warnings.append("Get-NetFirewallProfile: no profiles in output")
        except ParseError as exc:
            warnings.append(f"Get-NetFirewallProfile: {exc}")
    else:
        warnings.append(f"Get-NetFirewallProfile: {result.describe()}")
    result = runner(list(NETSH_ARGS), timeout)
    if result.error is None:
        try:
            return _status(parse_netsh_state(result.stdout), "netsh", warnings)
        except ParseError as exc:
            warnings.append(str(exc))
    else:
        warnings.append(result.describe())
    return FirewallStatus(enabled=None, error="; ".join(warnings)[:1024], warnings=warnings[:16])


def _status(profiles: list[FirewallProfile], source: str, warnings: list[str]) -> FirewallStatus:
    """Windows: the firewall is on when any profile is on (the active one is not known)."""
    status = summarise(profiles)
    return FirewallStatus(
        enabled=status.enabled,
        profiles=status.profiles,
        source=source,
        error=None,
        warnings=[*warnings, *status.warnings][:16],
    )

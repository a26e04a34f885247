"""Linux host firewall: nftables, iptables (nft and legacy back ends), ufw, firewalld.

Each tool that is installed becomes one profile. The host firewall is *enabled* when any
of them shows active filtering: a filtering rule, a filter chain whose policy drops, an
active ufw, a running firewalld. NAT-only rulesets (e.g. container masquerading) are not
filtering and do not count.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from agent.inventory.antivirus.command import (
    CommandResult,
    Runner,
    first_line,
    run_command,
    which,
)
from agent.report import FirewallProfile, FirewallStatus

Which = Callable[[str], str | None]


class ParseError(ValueError):
    """Tool output that is not what the tool documents."""


def parse_nft_ruleset(text: str) -> FirewallProfile:
    """Parse ``nft -j list ruleset``: filtering rules and dropping filter chains."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ParseError(f"nft: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    items = data.get("nftables", []) if isinstance(data, dict) else []
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    filter_tables: set[tuple[str, str]] = set()
    rules: Counter[tuple[str, str, str]] = Counter()
    for item in items:
        if not isinstance(item, dict):
            continue
        if isinstance(chain := item.get("chain"), dict):
            key = (str(chain.get("family")), str(chain.get("table")), str(chain.get("name")))
            chains[key] = chain
            if chain.get("type") == "filter":
                filter_tables.add(key[:2])
        elif isinstance(rule := item.get("rule"), dict):
            rules[(str(rule.get("family")), str(rule.get("table")), str(rule.get("chain")))] += 1

    def filtering(key: tuple[str, str, str]) -> bool:
        chain = chains.get(key, {})
        if "type" in chain:
            return bool(chain["type"] == "filter")
        # A regular chain only runs when jumped to; it filters if its table filters.
        return key[:2] in filter_tables

    count = sum(n for key, n in rules.items() if filtering(key))
    n_chains = sum(1 for key, n in rules.items() if n and filtering(key))
    dropping = sorted(
        f"{k[0]} {k[1]} {k[2]}"
        for k, c in chains.items()
        if c.get("type") == "filter" and str(c.get("policy", "")).lower() == "drop"
    )
    detail = f"{count} filtering rules in {n_chains} chains"
    if dropping:
        detail += f"; policy drop: {', '.join(dropping)}"[:300]
    return FirewallProfile(
        name="nftables", enabled=bool(count or dropping), rules=count, detail=detail
    )


def parse_iptables_rules(text: str, name: str = "iptables") -> FirewallProfile:
    """Parse ``iptables -S`` (filter table): rules beyond the default ACCEPT policies."""
    rules = 0
    dropping = []
    seen = False
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "-P" and len(parts) >= 3:
            seen = True
            if parts[2].upper() != "ACCEPT":
                dropping.append(parts[1])
        elif parts[0] == "-A":
            seen = True
            rules += 1
        elif parts[0] == "-N":
            seen = True
    if not seen and text.strip():
        raise ParseError(f"{name}: unexpected output: {first_line(text, 120)!r}")
    detail = f"{rules} rules in the filter table"
    if dropping:
        detail += f"; policy DROP on {', '.join(dropping)}"
    return FirewallProfile(name=name, enabled=bool(rules or dropping), rules=rules, detail=detail)


_UFW_STATUS = re.compile(r"^\s*(status|trạng thái)\s*:\s*(?P<value>.+?)\s*$", re.I | re.M)


def parse_ufw_status(text: str) -> FirewallProfile:
    """Parse ``ufw status``: ``Status: active`` / ``Status: inactive`` (or translated)."""
    match = _UFW_STATUS.search(text)
    if not match:
        raise ParseError(f"ufw: no status line in {first_line(text, 120)!r}")
    value = match.group("value").lower()
    if value in ("inactive", "không hoạt động", "tắt"):
        enabled = False
    elif value in ("active", "hoạt động", "bật"):
        enabled = True
    else:
        raise ParseError(f"ufw: unknown status {match.group('value')!r}")
    rules = sum(
        1 for line in text.splitlines() if re.search(r"\b(ALLOW|DENY|REJECT|LIMIT)\b", line)
    )
    return FirewallProfile(
        name="ufw", enabled=enabled, rules=rules, detail=f"Status: {match.group('value')}"
    )


def parse_firewalld_state(result: CommandResult) -> FirewallProfile:
    """``firewall-cmd --state`` prints ``running`` (exit 0) or ``not running`` (exit 252)."""
    text = (result.stdout or result.stderr).strip().lower()
    if result.returncode == 0 and text.startswith("running"):
        return FirewallProfile(name="firewalld", enabled=True, detail="running")
    if result.returncode == 252 or "not running" in text:
        return FirewallProfile(name="firewalld", enabled=False, detail="not running")
    raise ParseError(f"firewalld: {result.describe()}")


def _iptables_parser(tool: str) -> Callable[[CommandResult], FirewallProfile]:
    return lambda result: parse_iptables_rules(result.stdout, tool)


def _check(
    name: str,
    args: list[str],
    parse: Callable[[CommandResult], FirewallProfile],
    runner: Runner,
    timeout: float,
    *,
    any_exit: bool = False,
) -> FirewallProfile:
    result = runner(args, timeout)
    if result.error is not None or (result.returncode != 0 and not any_exit):
        return FirewallProfile(name=name, enabled=None, detail=result.describe()[:1024])
    try:
        return parse(result)
    except ParseError as exc:
        return FirewallProfile(name=name, enabled=None, detail=str(exc)[:1024])


def detect(timeout: float, *, runner: Runner = run_command, which: Which = which) -> FirewallStatus:
    """Check every installed firewall tool; enabled when any shows active filtering."""
    profiles: list[FirewallProfile] = []
    if which("nft"):
        profiles.append(
            _check(
                "nftables",
                ["nft", "-j", "list", "ruleset"],
                lambda r: parse_nft_ruleset(r.stdout),
                runner,
                timeout,
            )
        )
    for tool in ("iptables-legacy", "iptables"):
        if which(tool):
            profiles.append(_check(tool, [tool, "-S"], _iptables_parser(tool), runner, timeout))
    if which("ufw"):
        profiles.append(
            _check("ufw", ["ufw", "status"], lambda r: parse_ufw_status(r.stdout), runner, timeout)
        )
    if which("firewall-cmd"):
        profiles.append(
            _check(
                "firewalld",
                ["firewall-cmd", "--state"],
                parse_firewalld_state,
                runner,
                timeout,
                any_exit=True,
            )
        )
    return summarise(profiles)


def summarise(profiles: list[FirewallProfile]) -> FirewallStatus:
    """One firewall verdict from the tools' profiles."""
    if not profiles:
        return FirewallStatus(
            enabled=None, error="no firewall tool found (nft, iptables, ufw, firewall-cmd)"
        )
    answered = [p for p in profiles if p.enabled is not None]
    warnings = [f"{p.name}: {p.detail}" for p in profiles if p.enabled is None and p.detail]
    enabled: bool | None
    if any(p.enabled for p in answered):
        enabled = True
    elif answered and not warnings:
        enabled = False
    else:
        # A tool that could not be read may hold the rules: do not claim "off".
        enabled = None
    error = None
    if not answered:
        error = "; ".join(warnings)[:1024] or "no firewall tool could be read"
    return FirewallStatus(
        enabled=enabled,
        profiles=profiles[:16],
        source=",".join(p.name for p in answered) or None,
        error=error,
        warnings=[w[:1024] for w in warnings][:16],
    )

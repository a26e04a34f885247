"""Firewall state: Linux for real inside a fresh network namespace, Windows on recordings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.inventory.antivirus.command import CommandResult, Runner, decode_output, run_command
from agent.inventory.firewall import linux, windows
from agent.inventory.firewall.linux import (
    ParseError,
    parse_firewalld_state,
    parse_iptables_rules,
    parse_nft_ruleset,
    parse_ufw_status,
)
from agent.inventory.firewall.windows import parse_firewall_profiles, parse_netsh_state
from tests import netns

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "windows"

FILTER_RULESET = """
table inet hatang {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    tcp dport 22 accept
    ip saddr 10.57.0.0/16 counter drop
  }
  chain blocked {
    counter reject
  }
}
"""
NAT_ONLY_RULESET = """
table ip nat {
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    oifname "eth0" masquerade
  }
}
"""
DROP_POLICY_RULESET = """
table inet lockdown {
  chain input {
    type filter hook input priority 0; policy drop;
  }
}
"""


def in_namespace(ns: netns.Namespace) -> Runner:
    """A runner that runs each tool inside ``ns``: the detector sees only its rules."""

    def runner(args: Sequence[str], timeout: float) -> CommandResult:
        return run_command(["ip", "netns", "exec", ns.name, *args], timeout)

    return runner


def only_nft(tool: str) -> str | None:
    return "/usr/sbin/nft" if tool == "nft" else None


@pytest.mark.netns
def test_nftables_in_a_fresh_namespace(topo: netns.Topology) -> None:
    ns = topo.add("fw")
    runner = in_namespace(ns)

    status = linux.detect(10.0, runner=runner, which=only_nft)
    assert status.enabled is False
    [nft] = status.profiles
    assert (nft.name, nft.enabled, nft.rules) == ("nftables", False, 0)
    assert status.source == "nftables" and status.error is None

    _load(ns, FILTER_RULESET)
    status = linux.detect(10.0, runner=runner, which=only_nft)
    assert status.enabled is True
    assert status.profiles[0].rules == 4
    assert status.profiles[0].detail == "4 filtering rules in 2 chains"

    ns.exec("nft", "flush", "ruleset")
    _load(ns, NAT_ONLY_RULESET)
    status = linux.detect(10.0, runner=runner, which=only_nft)
    assert status.enabled is False, "masquerading is not filtering"

    _load(ns, DROP_POLICY_RULESET)
    status = linux.detect(10.0, runner=runner, which=only_nft)
    assert status.enabled is True
    assert "policy drop: inet lockdown input" in (status.profiles[0].detail or "")


@pytest.mark.netns
def test_every_installed_tool_runs_in_the_namespace(topo: netns.Topology) -> None:
    """With the machine's real tool set (nft here; iptables, ufw where installed)."""
    ns = topo.add("fw2")
    _load(ns, FILTER_RULESET)
    status = linux.detect(10.0, runner=in_namespace(ns))
    assert status.enabled is True
    assert "nftables" in [p.name for p in status.profiles]


def _load(ns: netns.Namespace, ruleset: str) -> None:
    import subprocess

    subprocess.run(
        ["ip", "netns", "exec", ns.name, "nft", "-f", "-"],
        input=ruleset,
        text=True,
        check=True,
        timeout=30,
    )


def test_no_tool_at_all_is_an_error_not_off() -> None:
    status = linux.detect(5.0, which=lambda tool: None)
    assert status.enabled is None
    assert status.error == "no firewall tool found (nft, iptables, ufw, firewall-cmd)"


def test_a_tool_that_fails_does_not_claim_off() -> None:
    def runner(args: Sequence[str], timeout: float) -> CommandResult:
        if args[0] == "nft":
            return CommandResult(tuple(args), 1, stderr="Error: Operation not permitted")
        return CommandResult(tuple(args), 0, stdout="Status: inactive\n")

    status = linux.detect(5.0, runner=runner, which=lambda t: t if t in ("nft", "ufw") else None)
    assert status.enabled is None
    assert status.warnings == ["nftables: nft: exit status 1: Error: Operation not permitted"]
    assert status.source == "ufw"


IPTABLES_DEFAULT = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"
IPTABLES_RULES = (
    "-P INPUT DROP\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-N f2b-sshd\n"
    "-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j f2b-sshd\n"
    "-A f2b-sshd -j RETURN\n"
)


def test_parse_iptables() -> None:
    assert parse_iptables_rules(IPTABLES_DEFAULT).enabled is False
    rules = parse_iptables_rules(IPTABLES_RULES, "iptables-legacy")
    assert (rules.name, rules.enabled, rules.rules) == ("iptables-legacy", True, 3)
    assert rules.detail == "3 rules in the filter table; policy DROP on INPUT, FORWARD"
    with pytest.raises(ParseError):
        parse_iptables_rules("iptables v1.8.9 (legacy): can't initialize iptables table\n")


def test_parse_ufw_and_firewalld() -> None:
    active = parse_ufw_status(
        "Status: active\n\nTo                         Action      From\n"
        "--                         ------      ----\n"
        "22/tcp                     ALLOW       Anywhere\n"
        "22/tcp (v6)                ALLOW       Anywhere (v6)\n"
    )
    assert (active.enabled, active.rules) == (True, 2)
    assert parse_ufw_status("Status: inactive\n").enabled is False
    assert parse_ufw_status("Trạng thái: không hoạt động\n").enabled is False
    with pytest.raises(ParseError):
        parse_ufw_status("ERROR: You need to be root to run this script\n")
    running = parse_firewalld_state(CommandResult(("firewall-cmd",), 0, stdout="running\n"))
    assert running.enabled is True
    stopped = parse_firewalld_state(CommandResult(("firewall-cmd",), 252, stdout="not running\n"))
    assert stopped.enabled is False


def test_parse_nft_json_shapes() -> None:
    assert parse_nft_ruleset('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}').enabled is False
    with pytest.raises(ParseError):
        parse_nft_ruleset("table inet x {")


# --- Windows -----------------------------------------------------------------------------


def fixture(name: str) -> str:
    return decode_output((FIXTURES / name).read_bytes())


def test_parse_get_netfirewallprofile_gpo_booleans() -> None:
    profiles = parse_firewall_profiles(fixture("firewall_profiles.json"))
    assert [(p.name, p.enabled) for p in profiles] == [
        ("domain", True),
        ("private", True),
        ("public", False),
    ]
    assert [p.enabled for p in parse_firewall_profiles(fixture("firewall_profiles_off.json"))] == [
        False
    ] * 3
    [not_configured] = parse_firewall_profiles('{"Name": "Public", "Enabled": 2}')
    assert not_configured.enabled is None


def test_parse_netsh_english() -> None:
    profiles = parse_netsh_state(fixture("netsh_allprofiles_en.txt"))
    assert [(p.name, p.enabled) for p in profiles] == [
        ("domain", True),
        ("private", True),
        ("public", False),
    ]


def test_parse_netsh_vietnamese_cp1258() -> None:
    profiles = parse_netsh_state(fixture("netsh_allprofiles_vi_cp1258.txt"))
    assert [(p.name, p.enabled) for p in profiles] == [
        ("domain", True),
        ("private", False),
        ("public", True),
    ]


def test_parse_netsh_unknown_language_uses_the_fixed_order() -> None:
    text = "\n".join(
        f"{word}:\n{'-' * 70}\nZustand                               {state}\n"
        for word, state in (("Domänenprofil", "EIN"), ("Privat", "ON"), ("Öffentlich", "OFF"))
    )
    profiles = parse_netsh_state(text)
    assert [(p.name, p.enabled) for p in profiles] == [
        ("domain", None),  # "EIN" is not a word hatang knows: not guessed
        ("private", True),
        ("public", False),
    ]


class Recorded:
    """Replays recorded output per tool: firewall profiles, connection profiles, netsh."""

    def __init__(
        self,
        powershell: CommandResult,
        netsh: CommandResult,
        connections: CommandResult | None = None,
        current: CommandResult | None = None,
    ) -> None:
        self.powershell, self.netsh = powershell, netsh
        self.connections = connections or CommandResult(
            ("powershell.exe",), 0, stdout=fixture("netconnectionprofile_private_ps51.json")
        )
        self.current = current or CommandResult(("netsh",), None, error="not found")
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(list(args))
        if args[0] == "netsh":
            return self.current if "currentprofile" in args else self.netsh
        return self.connections if "Get-NetConnectionProfile" in args[-1] else self.powershell


def ps(name: str) -> CommandResult:
    return CommandResult(("powershell.exe",), 0, stdout=fixture(name))


def netsh(name: str) -> CommandResult:
    return CommandResult(("netsh",), 0, stdout=fixture(name))


def test_windows_detect_uses_powershell_first() -> None:
    runner = Recorded(ps("firewall_profiles.json"), CommandResult(("netsh",), 0, stdout=""))
    status = windows.detect(10.0, runner=runner)
    assert (status.enabled, status.source, status.error) == (True, "Get-NetFirewallProfile", None)
    assert [c[0] for c in runner.calls] == ["powershell.exe", "powershell.exe"]
    assert [(p.name, p.active) for p in status.profiles] == [
        ("domain", False),
        ("private", True),
        ("public", False),
    ]


def test_parse_connection_profiles_real_formats() -> None:
    assert windows.parse_connection_profiles(fixture("netconnectionprofile_private_ps51.json")) == {
        "private"
    }
    assert windows.parse_connection_profiles(
        fixture("netconnectionprofile_domain_and_public_ps7.json")
    ) == {"domain", "public"}
    # -EnumsAsStrings (or a [string] cast) writes the enum's name.
    assert windows.parse_connection_profiles('{"NetworkCategory": "DomainAuthenticated"}') == {
        "domain"
    }
    with pytest.raises(windows.ParseError, match="unknown NetworkCategory 7"):
        windows.parse_connection_profiles('{"NetworkCategory": 7}')
    with pytest.raises(windows.ParseError, match="unknown NetworkCategory None"):
        windows.parse_connection_profiles('[{"Name": "x"}]')
    with pytest.raises(windows.ParseError, match="invalid JSON"):
        windows.parse_connection_profiles('{"NetworkCategory": 1,')


def test_unreadable_connection_profiles_leave_the_verdict_to_a_unanimous_state() -> None:
    garbled = CommandResult(("powershell.exe",), 0, stdout="<Objs Version=1.1.0.1")
    runner = Recorded(ps("firewall_profiles.json"), netsh("netsh_allprofiles_en.txt"), garbled)
    status = windows.detect(10.0, runner=runner)
    assert status.enabled is None
    assert status.warnings[0].startswith("no JSON in output")


@pytest.mark.parametrize(
    ("connections", "expected"),
    [
        pytest.param("netconnectionprofile_private_ps51.json", True, id="private-on"),
        # The defect: domain and private on, but the Wi-Fi in use is public and it is off.
        pytest.param("netconnectionprofile_public_ps51.json", False, id="public-off"),
        pytest.param("netconnectionprofile_domain_and_public_ps7.json", False, id="one-off"),
    ],
)
def test_windows_verdict_is_the_active_profiles(connections: str, expected: bool) -> None:
    runner = Recorded(
        ps("firewall_profiles.json"), netsh("netsh_allprofiles_en.txt"), ps(connections)
    )
    status = windows.detect(10.0, runner=runner)
    assert status.enabled is expected
    assert status.warnings == []


def test_windows_active_profile_unknown_needs_a_unanimous_verdict() -> None:
    no_profile = CommandResult(
        ("powershell.exe",), 1, stderr="Get-NetConnectionProfile : No MSFT_NetConnectionProfile"
    )
    mixed = Recorded(ps("firewall_profiles.json"), netsh("netsh_allprofiles_en.txt"), no_profile)
    status = windows.detect(10.0, runner=mixed)
    assert status.enabled is None  # public is off and may be the one in use
    assert {p.active for p in status.profiles} == {None}
    assert status.warnings[-1] == "active network profile unknown: judged on every profile"
    off = Recorded(ps("firewall_profiles_off.json"), netsh("netsh_allprofiles_en.txt"), no_profile)
    assert windows.detect(10.0, runner=off).enabled is False


@pytest.mark.parametrize(
    ("allprofiles", "current", "expected"),
    [
        ("netsh_allprofiles_en.txt", "netsh_currentprofile_en.txt", False),  # public: OFF
        ("netsh_allprofiles_vi_cp1258.txt", "netsh_currentprofile_vi_cp1258.txt", True),
    ],
)
def test_windows_netsh_fallback_reads_the_current_profile(
    allprofiles: str, current: str, expected: bool
) -> None:
    broken = CommandResult(("powershell.exe",), None, error="not found")
    runner = Recorded(broken, netsh(allprofiles), broken, netsh(current))
    status = windows.detect(10.0, runner=runner)
    assert (status.enabled, status.source) == (expected, "netsh")
    assert [p.name for p in status.profiles if p.active] == ["public"]
    assert runner.calls[-1] == ["netsh", "advfirewall", "show", "currentprofile", "state"]


def test_netsh_current_profile_with_an_unknown_heading_is_not_guessed() -> None:
    text = f"Öffentliches Profil:\n{'-' * 70}\nZustand                               ON\n"
    with pytest.raises(windows.ParseError, match="unknown profile heading"):
        parse_netsh_state(text, by_position=False)


def test_windows_detect_falls_back_to_netsh() -> None:
    runner = Recorded(
        CommandResult(("powershell.exe",), 1, stderr="Get-NetFirewallProfile : Access denied"),
        netsh("netsh_allprofiles_vi_cp1258.txt"),
        CommandResult(("powershell.exe",), 1, stderr="Get-NetConnectionProfile : Access denied"),
        netsh("netsh_currentprofile_vi_cp1258.txt"),
    )
    status = windows.detect(10.0, runner=runner)
    assert (status.enabled, status.source) == (True, "netsh")
    assert status.warnings == [
        "Get-NetFirewallProfile: powershell.exe: exit status 1:"
        " Get-NetFirewallProfile : Access denied",
        "Get-NetConnectionProfile: powershell.exe: exit status 1:"
        " Get-NetConnectionProfile : Access denied",
    ]
    assert runner.calls[1] == ["netsh", "advfirewall", "show", "allprofiles", "state"]


def test_windows_detect_all_off_and_total_failure() -> None:
    off = Recorded(ps("firewall_profiles_off.json"), CommandResult(("netsh",), 0, stdout=""))
    assert windows.detect(10.0, runner=off).enabled is False
    broken = Recorded(
        CommandResult(("powershell.exe",), None, error="timed out after 10s"),
        CommandResult(("netsh",), None, error="not found"),
    )
    status = windows.detect(10.0, runner=broken)
    assert status.enabled is None
    assert status.error == (
        "Get-NetFirewallProfile: powershell.exe: timed out after 10s; netsh: not found"
    )

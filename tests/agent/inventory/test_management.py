"""Central management of the antivirus: the shipped data, recorded Windows registry output
(PowerShell 5.1 ConvertTo-Json of the Defender for Endpoint status key), management
services as psutil lists them, and the real Linux detection (ClamAV: unmanaged unless
configured)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from agent.config import AntivirusConfig
from agent.configerror import ConfigError
from agent.inventory import antivirus
from agent.inventory.antivirus import management
from agent.inventory.antivirus.command import CommandResult, decode_output
from agent.inventory.antivirus.vendors import VENDORS, ProcessInfo, ServiceInfo
from agent.report import AntivirusProduct, AntivirusStatus
from agent.yamlfile import parse_yaml

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "windows"
NOW = dt.datetime(2024, 11, 16, 8, 0, tzinfo=dt.UTC)
WEEK = 7 * 86400.0


def recorded(name: str) -> management.Runner:
    def run(args: Sequence[str], timeout: float) -> CommandResult:
        assert "Windows Advanced Threat Protection" in args[-1]
        return CommandResult(tuple(args), 0, decode_output((FIXTURES / name).read_bytes()))

    return run


def product(name: str, vendor: str | None, source: str = "service") -> AntivirusProduct:
    return AntivirusProduct(name=name, source=source, state="protected", vendor=vendor)


def status(*products: AntivirusProduct) -> AntivirusStatus:
    return AntivirusStatus(state="protected" if products else "missing", products=list(products))


def annotate(
    s: AntivirusStatus,
    *,
    services: Sequence[ServiceInfo] = (),
    processes: Sequence[ProcessInfo] = (),
    registry: str = "mde_registry_absent.json",
    platform: management.Platform = "windows",
    clamav_managed: bool = False,
) -> AntivirusStatus:
    return management.annotate(
        s,
        platform,
        max_age=WEEK,
        clamav_managed=clamav_managed,
        runner=recorded(registry),
        timeout=30,
        services=services,
        processes=processes,
        now=NOW,
    )


def test_shipped_data_loads_and_names_known_vendors() -> None:
    agents = management.management_agents()
    names = {a.name for a in agents}
    for wanted in ("Kaspersky Network Agent", "ESET Management Agent", "BKAV Endpoint agent",
                   "Trend Micro Apex One Security Agent listener",
                   "Symantec Endpoint Protection client communication",
                   "Microsoft Defender for Endpoint"):  # fmt: skip
        assert wanted in names
    assert {a.vendor for a in agents} <= {v.vendor for v in VENDORS}


def test_defender_for_endpoint_onboarded_and_in_contact() -> None:
    s = annotate(status(product("Microsoft Defender Antivirus", "Microsoft", "defender")),
                 registry="mde_registry_onboarded.json")  # fmt: skip
    assert s.managed is True
    assert s.products[0].management_agent == "Microsoft Defender for Endpoint"
    contact = dt.datetime(2024, 11, 13, 2, 30, tzinfo=dt.UTC)
    assert s.last_console_contact_at == s.products[0].last_console_contact_at == contact


def test_contact_older_than_the_limit_is_not_managed() -> None:
    s = management.annotate(
        status(product("Microsoft Defender Antivirus", "Microsoft", "defender")),
        "windows",
        max_age=86400.0,  # one day; the recorded contact is three days old
        clamav_managed=False,
        runner=recorded("mde_registry_onboarded.json"),
        timeout=30,
        services=[],
        processes=[],
        now=NOW,
    )
    assert s.managed is False and s.products[0].last_console_contact_at is not None


def test_defender_alone_is_unmanaged() -> None:
    s = annotate(status(product("Microsoft Defender Antivirus", "Microsoft", "defender")))
    assert s.managed is False and s.products[0].management_agent is None


@pytest.mark.parametrize(("service_status", "managed"), [("running", True), ("stopped", False)])
def test_kaspersky_network_agent_service(service_status: str, managed: bool) -> None:
    s = annotate(
        status(product("Kaspersky", "Kaspersky")),
        services=[
            ServiceInfo("klnagent", "Kaspersky Security Center Network Agent", service_status)
        ],
    )
    assert s.managed is managed
    assert s.products[0].management_agent == "Kaspersky Network Agent"


def test_vendor_with_data_but_no_agent_is_unmanaged_without_data_unknown() -> None:
    s = annotate(status(product("BKAV", "Bkav")))
    assert s.managed is False
    s = annotate(status(product("CMC Antivirus", "CMC Cyber Security")))
    assert s.managed is None and s.products[0].managed is None


def test_one_managed_product_makes_the_computer_managed() -> None:
    s = annotate(
        status(product("ESET", "ESET"), product("Microsoft Defender Antivirus", "Microsoft")),
        processes=[ProcessInfo("ERAAgent", 4242)],
    )
    assert s.managed is True
    assert [p.managed for p in s.products] == [True, False]


def test_no_antivirus_is_not_managed_and_failed_detection_is_unknown() -> None:
    assert annotate(status()).managed is False
    failed = AntivirusStatus(state="unknown", error="securitycenter2: timed out")
    assert annotate(failed).managed is None


def test_clamav_is_managed_only_when_configured() -> None:
    clam = status(product("ClamAV", "Cisco Talos", "clamav"))
    assert annotate(clam, platform="linux").managed is False
    assert annotate(clam, platform="linux", clamav_managed=True).managed is True


def test_registry_that_cannot_be_read_is_a_warning() -> None:
    def denied(args: Sequence[str], timeout: float) -> CommandResult:
        return CommandResult(tuple(args), 1, stderr="Access is denied")

    s = management.annotate(
        status(product("Microsoft Defender Antivirus", "Microsoft")), "windows", max_age=WEEK,
        clamav_managed=False, runner=denied, timeout=30, services=[], processes=[], now=NOW,
    )  # fmt: skip
    assert "management: registry could not be read" in s.warnings
    assert s.managed is False


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("agents: 3\n", "agents", "expected a list of management agents"),
        ("agents:\n  - {vendor: X, platforms: [windows]}\n", "agents[0].name", "missing"),
        ("agents:\n  - {name: A, vendor: X, platforms: [dos]}\n", "agents[0].platforms",
         "must list windows and/or linux"),
        ("agents:\n  - {name: A, vendor: X, platforms: [linux], colour: red}\n",
         "agents[0].colour", "unknown key"),
        ("agents:\n  - {name: A, vendor: X, platforms: [windows], registry: [{key: K, value: V,"
         " means: maybe}]}\n", "agents[0].registry[0].means", "must be onboarded or last_contact"),
        ("agents:\n  - {name: A, vendor: X, platforms: [linux], services: [1]}\n",
         "agents[0].services", "must be a list of names"),
    ],
)  # fmt: skip
def test_hostile_management_data_names_the_entry(text: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        management.parse_agents(parse_yaml(text, name="management.yaml"))
    assert str(caught.value) == f"management.yaml: {path}: {message}"


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="ClamAV not installed")
def test_real_linux_detection_reports_clamav_unmanaged_by_default() -> None:
    s = antivirus.detect(AntivirusConfig())
    clam = [p for p in s.products if p.source == "clamav"]
    if clam:
        assert clam[0].managed is False and clam[0].management_agent is None
        config = msgspec.structs.replace(AntivirusConfig(), clamav_managed=True)
        configured = antivirus.detect(config)
        assert [p.managed for p in configured.products if p.source == "clamav"] == [True]
        assert configured.managed is True
    else:
        assert s.managed is False  # no product at all: not centrally managed

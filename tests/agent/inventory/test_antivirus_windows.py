"""Windows antivirus detection driven by recorded PowerShell output (tests/fixtures/windows).

The recorded files are in the formats Windows writes: ``Get-CimInstance ... |
ConvertTo-Json`` from PowerShell 5.1 (two-space separators, ``\\/Date(ms)\\/``) and 7
(ISO dates), unselected CIM output, UTF-16 and cp1258 bytes, English and Vietnamese
error text. The whole ``detect`` path runs on Linux with an injected runner.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.config import AntivirusConfig
from agent.inventory.antivirus import windows
from agent.inventory.antivirus.command import CommandResult, decode_output
from agent.inventory.antivirus.vendors import ProcessInfo, ServiceInfo
from agent.inventory.antivirus.windows import (
    ParseError,
    decode_product_state,
    is_invalid_namespace,
    load_json_objects,
    parse_mp_computer_status,
    parse_ps_datetime,
    parse_security_center,
)
from agent.report import AntivirusProduct, AntivirusStatus

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "windows"
UTC = dt.UTC
SIGNATURES_UPDATED = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # /Date(1700000000000)/
NOW = dt.datetime(2023, 11, 16, 8, 0, tzinfo=UTC)


def fixture(name: str) -> str:
    return decode_output((FIXTURES / name).read_bytes())


def ok(name: str) -> CommandResult:
    return CommandResult(("powershell.exe",), 0, stdout=fixture(name))


def failed(name: str, code: int = 1) -> CommandResult:
    return CommandResult(("powershell.exe",), code, stderr=fixture(name))


EMPTY = CommandResult(("powershell.exe",), 0, stdout="")
NOT_RECOGNIZED = failed("mp_not_recognized.txt")


class RecordedPowerShell:
    """A runner that answers each PowerShell query with a recorded result."""

    def __init__(
        self,
        security_center: CommandResult,
        defender: CommandResult = NOT_RECOGNIZED,
        defender_cim: CommandResult = NOT_RECOGNIZED,
    ) -> None:
        self.answers = {
            "SecurityCenter2": security_center,
            "Get-MpComputerStatus": defender,
            "MSFT_MpComputerStatus": defender_cim,
        }
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, args: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append((list(args), timeout))
        script = args[-1]
        for key, result in self.answers.items():
            if key in script:
                return result
        raise AssertionError(f"unexpected command {args!r}")


def run(
    runner: RecordedPowerShell,
    *,
    services: Sequence[ServiceInfo] = (),
    processes: Sequence[ProcessInfo] = (),
    now: dt.datetime = NOW,
    config: AntivirusConfig | None = None,
) -> AntivirusStatus:
    return windows.detect(
        config or AntivirusConfig(),
        runner=runner,
        services=lambda: services,
        processes=lambda: processes,
        now=now,
    )


def by_name(status: AntivirusStatus) -> dict[str, AntivirusProduct]:
    return {p.name: p for p in status.products}


# --- productState ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "scanner", "microsoft", "out_of_date", "enabled", "up_to_date"),
    [
        pytest.param(397568, "on", True, False, True, True, id="0x061100-defender-on-current"),
        pytest.param(393472, "off", True, False, False, True, id="0x060100-defender-off"),
        pytest.param(397584, "on", True, True, True, False, id="0x061110-defender-on-outdated"),
        pytest.param(393488, "off", True, True, False, False, id="0x060110-defender-off-outdated"),
        pytest.param(266240, "on", False, False, True, True, id="0x041000-third-party-on"),
        pytest.param(262144, "off", False, False, False, True, id="0x040000-third-party-off"),
        pytest.param(270336, "snoozed", False, False, False, True, id="0x042000-snoozed"),
        pytest.param(274432, "expired", False, False, True, False, id="0x043000-expired"),
        pytest.param(331776, "on", False, False, True, True, id="0x051000-av-and-firewall"),
        pytest.param(266256, "on", False, True, True, False, id="0x041010-on-outdated"),
        pytest.param(397312, "on", False, False, True, True, id="0x061000-autoupdate-on"),
    ],
)
def test_product_state_decodes_documented_values(
    value: int,
    scanner: str,
    microsoft: bool,
    out_of_date: bool,
    enabled: bool,
    up_to_date: bool,
) -> None:
    state = decode_product_state(value)
    assert (state.scanner, state.microsoft, state.signatures_out_of_date) == (
        scanner,
        microsoft,
        out_of_date,
    )
    assert (state.enabled, state.up_to_date) == (enabled, up_to_date)
    assert state.providers & 0x04, "every AntiVirusProduct registers the antivirus provider"


def test_product_state_outside_the_documented_scanner_values_is_unknown() -> None:
    state = decode_product_state(0x045000)
    assert state.scanner is None
    assert state.enabled is None


# --- parsers ---------------------------------------------------------------------------


def test_parse_security_center_single_object() -> None:
    [product] = parse_security_center(fixture("sc_defender_on.json"))
    assert product.name == "Windows Defender"
    assert product.guid == "{D68DDC3A-831F-4fae-9E44-DA132C1ACF46}"
    assert product.state is not None and product.state.raw == 397568
    assert product.timestamp == dt.datetime(2023, 11, 16, 2, 31, 48, tzinfo=UTC)


def test_parse_security_center_utf16_output_is_the_same() -> None:
    assert parse_security_center(fixture("sc_defender_on_utf16.json")) == parse_security_center(
        fixture("sc_defender_on.json")
    )


def test_parse_security_center_array_of_products() -> None:
    products = parse_security_center(fixture("sc_bkav_defender_off.json"))
    assert [(p.name, p.state and p.state.raw) for p in products] == [
        ("Windows Defender", 393472),
        ("Bkav Pro", 266240),
    ]
    assert products[1].product_exe == r"C:\Program Files (x86)\BkavPro\BkavPro.exe"


def test_parse_security_center_unselected_cim_output_with_vietnamese_name_and_nulls() -> None:
    cmc, defender = parse_security_center(fixture("sc_raw_cim_cmc.json"))
    assert cmc.name == "Phần mềm diệt virus CMC"
    assert cmc.state is not None and cmc.state.scanner == "on"
    assert defender.state is None
    assert defender.timestamp is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty-pipeline"),
        pytest.param("\ufeff\r\n", id="bom-only"),
        pytest.param('[{"instanceGuid": "{x}"}]', id="no-display-name"),
    ],
)
def test_parse_security_center_without_products(text: str) -> None:
    assert parse_security_center(text) == []


def test_warning_lines_before_the_json_are_skipped() -> None:
    text = "WARNING: The names of some imported commands ...\r\n" + fixture("sc_defender_on.json")
    assert [p.name for p in parse_security_center(text)] == ["Windows Defender"]


@pytest.mark.parametrize("text", ["not json at all", '{"displayName": '])
def test_parse_security_center_rejects_garbage_with_a_reason(text: str) -> None:
    with pytest.raises(ParseError):
        load_json_objects(text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sc_invalid_namespace.txt", True),
        ("sc_invalid_namespace_vi.txt", True),
        ("mp_not_running.txt", False),
        ("mp_not_recognized.txt", False),
    ],
)
def test_invalid_namespace_is_recognised_in_english_and_vietnamese(
    name: str, expected: bool
) -> None:
    assert is_invalid_namespace(fixture(name)) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/Date(1700000000000)/", SIGNATURES_UPDATED),
        ("\\/Date(1700000000000)\\/", SIGNATURES_UPDATED),
        ("/Date(1700000000000+0700)/", SIGNATURES_UPDATED),
        ("/Date(-62135596800000)/", None),  # DateTime.MinValue: never updated
        ("2023-11-15T05:13:20.0000000+07:00", SIGNATURES_UPDATED),
        ("2023-11-14T22:13:20Z", SIGNATURES_UPDATED),
        ("Tue, 14 Nov 2023 22:13:20 GMT", SIGNATURES_UPDATED),
        ({"value": "/Date(1700000000000)/", "DisplayHint": 2}, SIGNATURES_UPDATED),
        ("thứ Ba, 14 tháng 11 2023", None),
        ("", None),
        (None, None),
        (12345, None),
    ],
)
def test_parse_ps_datetime(value: object, expected: dt.datetime | None) -> None:
    assert parse_ps_datetime(value) == expected


def test_parse_mp_computer_status_full_ps51_output() -> None:
    mp = parse_mp_computer_status(fixture("mp_status_ps51_full.json"))
    assert mp is not None
    assert (mp.service_enabled, mp.antivirus_enabled, mp.real_time_protection) == (True,) * 3
    assert mp.signature_version == "1.401.1166.0"
    assert mp.signature_updated_at == SIGNATURES_UPDATED
    assert mp.engine_version == "1.1.23100.2009"
    assert mp.running_mode == "Normal" and not mp.passive
    assert mp.signature_age_seconds(NOW) == (NOW - SIGNATURES_UPDATED).total_seconds()


def test_parse_mp_computer_status_ps7_iso_dates_give_the_same_instant() -> None:
    mp = parse_mp_computer_status(fixture("mp_status_ps7_selected.json"))
    assert mp is not None and mp.signature_updated_at == SIGNATURES_UPDATED


def test_parse_mp_computer_status_server_2016_missing_fields_and_date_object() -> None:
    mp = parse_mp_computer_status(fixture("mp_status_server2016.json"))
    assert mp is not None
    assert mp.running_mode is None and mp.signatures_out_of_date is None
    assert mp.signature_updated_at == dt.datetime(2023, 2, 1, tzinfo=UTC)


def test_defender_age_falls_back_to_whole_days_and_ignores_never() -> None:
    mp = parse_mp_computer_status('{"AntivirusSignatureAge": 3}')
    assert mp is not None and mp.signature_age_seconds(NOW) == 3 * 86400
    never = parse_mp_computer_status('{"AntivirusSignatureAge": 65535}')
    assert never is not None and never.signature_age_seconds(NOW) is None


def test_decode_output_handles_windows_encodings() -> None:
    text = "Trạng thái BẬT"
    assert decode_output(text.encode("utf-8-sig")) == text
    assert decode_output(text.encode("utf-16")) == text
    assert decode_output(text.encode("utf-16-le")) == text
    assert decode_output(b"") == ""
    assert "BẬT" in decode_output((FIXTURES / "netsh_allprofiles_vi_cp1258.txt").read_bytes())


# --- the whole detect path ---------------------------------------------------------------

DEFENDER_RUNNING = [ServiceInfo("WinDefend", "Microsoft Defender Antivirus Service", "running")]


def test_workstation_with_defender_on_and_fresh_is_protected() -> None:
    runner = RecordedPowerShell(ok("sc_defender_on.json"), ok("mp_status_ps51_full.json"))
    status = run(runner, services=DEFENDER_RUNNING, processes=[ProcessInfo("MsMpEng", 4012)])
    assert status.state == "protected"
    [product] = status.products
    assert product.name == "Windows Defender"
    assert product.source == "securitycenter2+defender"
    assert product.state == "protected"
    assert (product.enabled, product.up_to_date, product.real_time_protection) == (True,) * 3
    assert product.product_state == 397568
    assert product.signature_version == "1.401.1166.0"
    assert product.engine_version == "1.1.23100.2009"
    assert product.signature_updated_at == SIGNATURES_UPDATED
    assert product.running is True
    assert product.vendor == "Microsoft"
    assert "service WinDefend (running)" in (product.detail or "")
    assert status.sources == ["securitycenter2", "defender", "services"]
    assert status.warnings == []
    # Every command is an argument list for powershell.exe with the configured timeout.
    for args, timeout in runner.calls:
        assert args[:3] == ["powershell.exe", "-NoProfile", "-NonInteractive"]
        assert timeout == 30.0


def test_defender_signatures_older_than_the_policy_are_outdated() -> None:
    runner = RecordedPowerShell(ok("sc_defender_on.json"), ok("mp_status_ps51_full.json"))
    status = run(runner, now=SIGNATURES_UPDATED + dt.timedelta(days=8))
    assert status.state == "outdated"
    assert status.products[0].signature_age_seconds == 8 * 86400


def test_max_signature_age_comes_from_config() -> None:
    runner = RecordedPowerShell(ok("sc_defender_on.json"), ok("mp_status_ps51_full.json"))
    config = AntivirusConfig(max_signature_age=3600.0)  # type: ignore[arg-type]
    status = run(runner, config=config)
    assert status.state == "outdated"
    assert status.max_signature_age_seconds == 3600.0


def test_bkav_on_with_defender_passive_is_protected_by_bkav() -> None:
    runner = RecordedPowerShell(ok("sc_bkav_defender_off.json"), ok("mp_status_passive.json"))
    services = [ServiceInfo("BkavService", "Bkav Service", "running"), *DEFENDER_RUNNING]
    status = run(runner, services=services, processes=[ProcessInfo("BkavPro", 3120)])
    assert status.state == "protected"
    products = by_name(status)
    bkav, defender = products["Bkav Pro"], products["Windows Defender"]
    assert (bkav.state, bkav.source, bkav.vendor, bkav.running) == (
        "protected",
        "securitycenter2",
        "Bkav",
        True,
    )
    assert "service BkavService (running)" in (bkav.detail or "")
    assert defender.state == "disabled"
    assert defender.real_time_protection is False
    assert "Passive Mode" in (defender.detail or "")
    assert len(status.products) == 2, "the Defender service is not listed a second time"


def test_kaspersky_outdated_with_defender_off_is_outdated() -> None:
    runner = RecordedPowerShell(ok("sc_kaspersky_outdated.json"), failed("mp_not_running.txt"))
    services = [ServiceInfo("AVP.KES.11.11.0", "Kaspersky Endpoint Security Service", "running")]
    status = run(runner, services=services, processes=[ProcessInfo("avp", 2200)])
    assert status.state == "outdated"
    kaspersky = by_name(status)["Kaspersky Endpoint Security for Windows"]
    assert (kaspersky.state, kaspersky.enabled, kaspersky.up_to_date) == ("outdated", True, False)
    assert "signatures out of date" in (kaspersky.detail or "")
    assert by_name(status)["Windows Defender"].state == "disabled"
    assert any("0x800106ba" in w for w in status.warnings)


def test_eset_snoozed_and_defender_off_is_disabled() -> None:
    runner = RecordedPowerShell(ok("sc_eset_snoozed.json"), failed("mp_not_running.txt"))
    status = run(runner, services=[ServiceInfo("ekrn", "ESET Service", "running")])
    assert status.state == "disabled"
    eset = by_name(status)["ESET Security"]
    assert eset.state == "disabled" and "snoozed" in (eset.detail or "")
    assert eset.running is True


def test_cmc_with_vietnamese_name_in_raw_cim_output() -> None:
    runner = RecordedPowerShell(ok("sc_raw_cim_cmc.json"))
    status = run(runner, processes=[ProcessInfo("CMCAV", 1800)])
    assert status.state == "protected"
    cmc = by_name(status)["Phần mềm diệt virus CMC"]
    assert (cmc.state, cmc.vendor, cmc.running) == ("protected", "CMC Cyber Security", True)
    assert by_name(status)["Windows Defender"].state == "unknown"  # no productState


def test_windows_server_falls_back_to_defender() -> None:
    runner = RecordedPowerShell(failed("sc_invalid_namespace.txt"), ok("mp_status_server2016.json"))
    status = run(runner, services=DEFENDER_RUNNING)
    assert status.state == "outdated"  # signatures from February, checked in November
    [defender] = status.products
    assert defender.name == "Microsoft Defender Antivirus"
    assert defender.source == "defender"
    assert defender.signature_version == "1.381.2140.0"
    assert defender.running is True
    assert "defender" in status.sources and "securitycenter2" not in status.sources
    assert status.warnings == ["securitycenter2: not available on this edition (Windows Server)"]


def test_windows_server_vietnamese_falls_back_to_defender_cim_class() -> None:
    runner = RecordedPowerShell(
        failed("sc_invalid_namespace_vi.txt"),
        NOT_RECOGNIZED,
        ok("mp_status_ps7_selected.json"),
    )
    status = run(runner)
    assert status.state == "protected"
    assert status.products[0].source == "defender-cim"
    assert any("not recognized" in w for w in status.warnings)


def test_windows_server_without_defender_finds_bkav_and_kaspersky_by_service() -> None:
    runner = RecordedPowerShell(failed("sc_invalid_namespace.txt"))
    services = [
        ServiceInfo("BkavService", "Bkav Service", "running"),
        ServiceInfo("klnagent", "Kaspersky Security Center Network Agent", "stopped"),
    ]
    status = run(runner, services=services)
    products = by_name(status)
    bkav, kaspersky = products["BKAV"], products["Kaspersky"]
    assert (bkav.source, bkav.enabled, bkav.state) == ("service", True, "unknown")
    assert (kaspersky.enabled, kaspersky.state) == (False, "disabled")
    # Running, but nothing on this server says how fresh BKAV's signatures are.
    assert status.state == "unknown"
    assert status.error is None


def test_cmc_found_by_process_only() -> None:
    runner = RecordedPowerShell(failed("sc_invalid_namespace.txt"))
    status = run(runner, processes=[ProcessInfo("CMCAVService", 999)])
    [cmc] = status.products
    assert (cmc.name, cmc.source, cmc.running) == ("CMC Antivirus", "process", True)


def test_no_product_anywhere_is_missing() -> None:
    status = run(RecordedPowerShell(EMPTY))
    assert status.state == "missing"
    assert status.products == []
    assert status.error is None


def test_security_center_timeout_with_nothing_else_is_unknown() -> None:
    timeout = CommandResult(("powershell.exe",), None, error="timed out after 30s")
    status = run(RecordedPowerShell(timeout))
    assert status.state == "unknown"
    assert status.error is not None and "timed out after 30s" in status.error


def test_garbage_from_security_center_is_a_warning_not_a_crash() -> None:
    garbage = CommandResult(("powershell.exe",), 0, stdout="<Objs Version=1.1.0.1>")
    status = run(RecordedPowerShell(garbage), services=[ServiceInfo("ekrn", "", "running")])
    assert status.state == "unknown"
    assert [p.name for p in status.products] == ["ESET"]
    assert any(w.startswith("securitycenter2: no JSON") for w in status.warnings)


def test_psutil_failure_keeps_security_center_result() -> None:
    def broken() -> list[ServiceInfo]:
        raise OSError("access denied")

    status = windows.detect(
        AntivirusConfig(),
        runner=RecordedPowerShell(ok("sc_defender_on.json"), ok("mp_status_ps51_full.json")),
        services=broken,
        now=NOW,
    )
    assert status.state == "protected"
    assert status.warnings == ["services: OSError: access denied"]


def test_status_travels_in_a_report_and_decodes_unchanged() -> None:
    from agent.report import Report, decode_report, encode, new_report_id

    runner = RecordedPowerShell(ok("sc_bkav_defender_off.json"), ok("mp_status_passive.json"))
    status = run(runner, services=[ServiceInfo("BkavService", "Bkav Service", "running")])
    report = Report(
        id=new_report_id(),
        agent_id="pc-01",
        site="bac-kan/cho-don/bang-lung",
        role="host",
        seq=1,
        observed_at=NOW,
        interval_seconds=60.0,
        agent_version="test",
        antivirus=status,
    )
    assert decode_report(encode(report)).antivirus == status

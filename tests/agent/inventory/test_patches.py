"""Patch currency: the real apt of this machine, a dnf-family recording, and Windows
PowerShell output recorded in the formats Windows writes (PowerShell 5.1 ConvertTo-Json
with ``\\/Date(ms)\\/``, UTF-8 with a BOM, Vietnamese titles and day-first short dates)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.config import PatchesConfig
from agent.inventory import patches
from agent.inventory.antivirus.command import CommandResult, decode_output, run_command
from agent.inventory.patches import linux, windows

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
UTC = dt.UTC


def fixture(name: str) -> str:
    return decode_output((FIXTURES / name).read_bytes())


def ok(text: str, code: int = 0) -> CommandResult:
    return CommandResult(("tool",), code, stdout=text)


# --- apt, for real ---------------------------------------------------------------------

needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get not installed")


@needs_apt
def test_real_apt_simulation_is_parsed() -> None:
    """The machine's own ``apt-get -s dist-upgrade``: every Inst line is counted, and the
    security ones are exactly those from a -security suite."""
    status_file = Path("/var/lib/dpkg/status")
    before = status_file.stat().st_mtime_ns
    result = run_command(linux.APT_SIMULATE, 120)
    assert result.ok, result.describe()
    assert status_file.stat().st_mtime_ns == before  # a simulation: nothing installed
    inst = [line for line in result.stdout.splitlines() if line.startswith("Inst ")]
    pending = linux.parse_apt_simulation(result.stdout)
    assert pending.total == len(inst)
    assert pending.security == sum(1 for line in inst if re.search(r"/\S*-security[ ,]", line))
    assert pending.security <= pending.total


@needs_apt
def test_real_detect_reads_apt_and_dpkg_log() -> None:
    status = patches.detect(PatchesConfig())
    assert status.source == "apt" and status.error is None, status
    assert status.pending_updates is not None and status.pending_security_updates is not None
    assert status.last_installed_at is not None
    assert status.last_installed_at <= dt.datetime.now(UTC) + dt.timedelta(minutes=1)
    log = Path("/var/log/dpkg.log")
    if log.exists():
        lines = re.findall(r"^(\S+ \S+) (?:install|upgrade) ", log.read_text(), re.MULTILINE)
        if lines:
            newest = dt.datetime.strptime(max(lines), "%Y-%m-%d %H:%M:%S").astimezone()
            assert status.last_installed_at == newest.astimezone(UTC)
    assert status.reboot_pending == Path("/var/run/reboot-required").exists()


def test_apt_simulation_lines() -> None:
    text = (
        "NOTE: This is only a simulation!\n"
        "Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])\n"
        "Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, "
        "Debian-Security:12/oldstable-security [amd64])\n"
        "Inst linux-image-6.1.0-28-amd64 (6.1.119-1 Debian-Security:12/stable-security [amd64])\n"
        "Inst openssl [3.0.2-0ubuntu1.15] (3.0.2-0ubuntu1.18 Ubuntu:22.04/jammy-security [amd64])\n"
        "Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])\n"
    )
    pending = linux.parse_apt_simulation(text)
    assert (pending.total, pending.security) == (4, 3)
    assert pending.packages[2] == "linux-image-6.1.0-28-amd64"  # a new package: no [old]


def test_dpkg_log_then_package_lists(tmp_path: Path) -> None:
    (tmp_path / "var/log").mkdir(parents=True)
    info = tmp_path / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "bash.list").write_text("/bin/bash\n")
    status = linux.detect_apt(lambda args, timeout: ok(""), 5, root=str(tmp_path))
    listed = dt.datetime.fromtimestamp((info / "bash.list").stat().st_mtime, UTC)
    assert status.last_installed_at == listed  # no log: the newest package file list
    (tmp_path / "var/log/dpkg.log").write_text(
        "2024-11-13 10:22:01 startup archives unpack\n"
        "2024-11-13 10:22:02 upgrade openssl:amd64 3.0.14-1 3.0.15-1\n"
        "2024-11-13 10:22:09 status installed openssl:amd64 3.0.15-1\n"
        "2024-11-14 08:00:00 remove foo:amd64 1.0 <none>\n"
    )
    (tmp_path / "var/run").mkdir()
    (tmp_path / "var/run/reboot-required").write_text("*** System restart required ***\n")
    status = linux.detect_apt(lambda args, timeout: ok(""), 5, root=str(tmp_path))
    expected = dt.datetime(2024, 11, 13, 10, 22, 2).astimezone().astimezone(UTC)
    assert status.last_installed_at == expected  # removals are not updates
    assert status.reboot_pending is True and status.pending_updates == 0


def test_apt_that_cannot_run_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    def runner(args: Sequence[str], timeout: float) -> CommandResult:
        return CommandResult(tuple(args), None, error="timed out after 5s")

    status = linux.detect_apt(runner, 5, root=str(tmp_path))
    assert status.pending_updates is None
    assert status.warnings == ["apt-get: timed out after 5s"]
    assert status.error == "no package installation found in the dpkg log or package lists"


# --- dnf / rpm, recorded ---------------------------------------------------------------


class RecordedDnf:
    def __init__(self, security: str = "linux/dnf_updateinfo_security_el9.txt") -> None:
        self.security = security
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, args: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(tuple(args))
        if args[0] == "rpm":
            return ok(fixture("linux/rpm_installtime_el9.txt"))
        if "check-update" in args:
            return ok(fixture("linux/dnf_check_update_el9.txt"), code=100)
        return ok(fixture(self.security))


def test_dnf_family_from_recorded_output() -> None:
    runner = RecordedDnf()
    status = linux.detect_dnf(runner, 60)
    assert status.source == "dnf" and status.error is None and status.warnings == []
    assert status.pending_updates == 6  # the obsoletes section is not counted again
    assert status.pending_security_updates == 4  # glibc, glibc-common, kernel, openssl-libs
    assert status.last_installed_at == dt.datetime.fromtimestamp(1718186411, UTC)
    assert all("-C" in call for call in runner.calls if call[0] == "dnf")  # cache only


def test_dnf5_security_table() -> None:
    assert linux.parse_dnf_security(fixture("linux/dnf5_updateinfo_security_fc40.txt")) == 3


def test_dnf_without_updates_exits_zero() -> None:
    def runner(args: Sequence[str], timeout: float) -> CommandResult:
        if args[0] == "rpm":
            return ok("1718186411 kernel\n")
        return ok("")

    status = linux.detect_dnf(runner, 60, tool="yum")
    assert (status.pending_updates, status.pending_security_updates) == (0, 0)


def test_dnf_error_exit_is_a_warning() -> None:
    def runner(args: Sequence[str], timeout: float) -> CommandResult:
        if args[0] == "rpm":
            return ok("1718186411 kernel\n")
        return CommandResult(tuple(args), 1, stderr="Error: Cache-only enabled but no cache")

    status = linux.detect_dnf(runner, 60)
    assert status.pending_updates is None and status.last_installed_at is not None
    assert status.warnings == ["dnf: exit status 1: Error: Cache-only enabled but no cache"]


# --- Windows, recorded -----------------------------------------------------------------

NOW = dt.datetime(2024, 11, 20, 8, 0, tzinfo=UTC)


def test_update_history_skips_signatures_failures_and_removals() -> None:
    found = windows.parse_update_history(fixture("windows/wua_history_ps51.json"))
    assert [i.kb for i in found] == ["KB5046613", "KB5044029"]
    assert found[0].installed_at == dt.datetime(2024, 11, 13, 3, 12, tzinfo=UTC)


def test_update_history_in_vietnamese_with_bom() -> None:
    found = windows.parse_update_history(fixture("windows/wua_history_vi.json"))
    assert [i.kb for i in found] == ["KB5046633", "KB5044285"]
    assert "Bản cập nhật tích lũy" in found[0].title


def test_hotfix_dates_on_vietnamese_server_2016() -> None:
    """dd/MM/yyyy: 13/11/2024 proves day first, so 8/10/2024 is 8 October; empty and
    null InstalledOn rows are skipped."""
    found = windows.parse_hotfixes(fixture("windows/qfe_server2016_vi.json"), NOW)
    assert [(i.kb, i.installed_at.astimezone().date()) for i in found] == [
        ("KB5046612", dt.date(2024, 11, 13)),
        ("KB4049065", dt.date(2024, 10, 8)),
        ("KB3199986", dt.date(2016, 11, 21)),
    ]


def test_hotfix_dates_on_english_windows() -> None:
    found = windows.parse_hotfixes(fixture("windows/qfe_en.json"), NOW)
    assert [(i.kb, i.installed_at.astimezone().date()) for i in found] == [
        ("KB5046613", dt.date(2024, 11, 13)),
        ("KB5045933", dt.date(2024, 10, 9)),
        ("KB5011048", dt.date(2022, 3, 2)),
    ]


def test_ambiguous_date_is_never_in_the_future() -> None:
    text = '[{"HotFixID": "KB1", "InstalledOn": "5/12/2024"}]'  # 12 May or 5 December
    (found,) = windows.parse_hotfixes(text, dt.datetime(2024, 6, 1, tzinfo=UTC))
    assert found.installed_at.astimezone().date() == dt.date(2024, 5, 12)
    # Both readings in the future: a wrong clock or a wrong row, left out rather than guessed.
    assert windows.parse_hotfixes(text, dt.datetime(2024, 5, 1, tzinfo=UTC)) == []


def test_get_hotfix_datetime_object() -> None:
    (found,) = windows.parse_hotfixes(fixture("windows/hotfix_getcmdlet.json"), NOW)
    assert found.installed_at == dt.datetime(2024, 11, 12, 17, 0, tzinfo=UTC)


def test_reboot_flags() -> None:
    assert windows.parse_reboot_pending(fixture("windows/reboot_pending_cbs.json")) == (
        True,
        ["ComponentBasedServicing"],
    )
    assert windows.parse_reboot_pending(fixture("windows/reboot_none.json")) == (False, [])


class RecordedPowerShell:
    def __init__(self, history: CommandResult, hotfix: CommandResult, reboot: CommandResult):
        self.answers = {"QueryHistory": history, "Win32_QuickFix": hotfix, "RebootPending": reboot}

    def __call__(self, args: Sequence[str], timeout: float) -> CommandResult:
        script = args[-1]
        return next(v for k, v in self.answers.items() if k in script)


BLOCKED = CommandResult(
    ("powershell.exe",),
    1,
    stderr="New-Object : Retrieving the COM class factory for component with CLSID "
    "{4CB43D7F-7EEE-4906-8698-60DA1C38F2FE} failed due to the following error: 80070005",
)


def test_windows_detect_newest_of_both_sources() -> None:
    runner = RecordedPowerShell(
        ok(fixture("windows/wua_history_ps51.json")),
        ok(fixture("windows/qfe_en.json")),
        ok(fixture("windows/reboot_pending_cbs.json")),
    )
    status = windows.detect(60, runner, NOW)
    assert status.source == "windows-update"
    assert status.last_installed_at == dt.datetime(2024, 11, 13, 3, 12, tzinfo=UTC)
    assert status.reboot_pending is True and status.pending_updates is None
    assert status.recent[:2] == ["KB5046613", "KB5044029"] and status.error is None


def test_windows_detect_falls_back_to_hotfixes_when_the_api_is_blocked() -> None:
    """Server 2016 with the Windows Update COM API denied: the hotfix list answers."""
    runner = RecordedPowerShell(
        BLOCKED,
        ok(fixture("windows/qfe_server2016_vi.json")),
        ok(fixture("windows/reboot_none.json")),
    )
    status = windows.detect(60, runner, NOW)
    assert status.source == "hotfix" and status.error is None
    assert status.last_installed_at is not None
    assert status.last_installed_at.astimezone().date() == dt.date(2024, 11, 13)
    assert status.reboot_pending is False
    assert status.warnings[0].startswith("windows-update: powershell.exe: exit status 1")


def test_windows_detect_with_nothing_readable_says_why() -> None:
    runner = RecordedPowerShell(BLOCKED, BLOCKED, BLOCKED)
    status = windows.detect(60, runner, NOW)
    assert status.last_installed_at is None and status.reboot_pending is None
    assert status.error is not None and "80070005" in status.error


def test_broken_json_is_a_warning() -> None:
    runner = RecordedPowerShell(ok("{not json"), ok(fixture("windows/qfe_en.json")), ok(""))
    status = windows.detect(60, runner, NOW)
    assert status.warnings == [
        "windows-update: invalid JSON at line 1: Expecting property name enclosed in double quotes"
    ]
    assert status.reboot_pending is None and status.source == "hotfix"


def test_patch_commands_go_through_the_one_windowless_runner() -> None:
    """No console window flashes on office PCs: every command runs via run_command
    (agent.subproc, CREATE_NO_WINDOW), never subprocess directly."""
    import inspect

    for module in (linux, windows):
        assert "import subprocess" not in inspect.getsource(module)
    assert windows.detect.__defaults__ is not None and run_command in windows.detect.__defaults__


def test_check_output_shows_the_patch_state_in_both_languages() -> None:
    from agent.render import patch_lines
    from agent.report import PatchStatus

    status = PatchStatus(
        source="hotfix",
        last_installed_at=dt.datetime(2024, 11, 13, 3, 12, tzinfo=UTC),
        reboot_pending=True,
        recent=["KB5046613"],
    )
    text = "\n".join(patch_lines(status))
    assert "Cài lần cuối / Last installed:" in text and "2024-11-13 03:12 UTC (hotfix)" in text
    assert "Chờ cài / Pending:" in text and "không rõ / unknown" in text
    assert "Chờ khởi động lại / Reboot pending:  có / yes" in text
    assert "KB5046613" in text

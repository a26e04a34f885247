"""The Windows service registration: its command line, recovery actions and states.

pywin32 and the service control manager exist only on Windows; what is registered is
decided by pure functions, tested here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent import cli
from agent.service import windows


def test_command_line_quotes_program_files_and_programdata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROGRAMDATA", r"C:\ProgramData")
    reg = windows.registration(
        python=r"C:\Program Files\Python311\python.exe",
        host=r"C:\Program Files\hatang\venv\Lib\site-packages\agent\service\winhost.py",
    )
    assert reg.config == r"C:\ProgramData\hatang\agent.yaml"
    assert reg.command_line == (
        r'"C:\Program Files\Python311\python.exe" -E -s '
        r'"C:\Program Files\hatang\venv\Lib\site-packages\agent\service\winhost.py" '
        r'--config "C:\ProgramData\hatang\agent.yaml"'
    )
    assert windows.default_log_file() == r"C:\ProgramData\hatang\logs\agent.log"


def test_a_quote_in_a_path_is_refused() -> None:
    with pytest.raises(windows.ServiceError, match="double quote"):
        windows.registration(r'C:\x"y\agent.yaml', python="python.exe", host="winhost.py")


def test_recovery_restarts_with_growing_delays_and_resets_daily() -> None:
    actions = windows.failure_actions()
    assert actions["Actions"] == [(1, 10_000), (1, 60_000), (1, 300_000)]  # SC_ACTION_RESTART
    assert (actions["ResetPeriod"], actions["RebootMsg"], actions["Command"]) == (
        86_400,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("state", "exit_code", "name", "expected"),
    [
        (4, 0, "running", "Trạng thái / State: đang chạy / running"),
        (1, 1, "stopped", "Lần dừng trước / Last exit code: 1"),
        (None, 0, "not-found", "The service is not installed"),
        (9, 0, "state-9", "trạng thái 9 / state 9"),
    ],
)
def test_states_for_the_officer(
    state: int | None, exit_code: int, name: str, expected: str
) -> None:
    got, lines = windows.describe_state(state, exit_code)
    assert got == name
    assert any(expected in line for line in lines), lines


def test_service_install_dry_run_on_windows_prints_the_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's Windows branch, up to the pywin32 call (which needs a real Windows)."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don\nrole: site-probe\n"
        'collector: {url: "http://127.0.0.1:9", token: t}\n'
    )
    monkeypatch.setattr(sys, "platform", "win32")
    code = cli.main(["service", "install", "--dry-run", "--config", str(config)])
    monkeypatch.undo()
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[-1].endswith(f'--config "{config}"') and " -E -s " in out[-1]
    assert out[-1].startswith(f'"{windows.base_python()}"')


def test_service_install_on_windows_refuses_a_missing_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    code = cli.main(["service", "install", "--config", str(tmp_path / "none.yaml")])
    monkeypatch.undo()
    assert code == 2
    assert "none.yaml does not exist: enroll first" in capsys.readouterr().err

"""The agent as a Windows service: what is registered, and the pywin32 calls that do it.

The service runs ``python.exe winhost.py --config FILE`` with the *base* interpreter:
a venv's ``python.exe`` is a launcher that starts the real interpreter as a child, and
the service control manager talks only to the process it started, so a service run
through it never connects ("error 1053"). ``winhost.py`` puts the venv's site-packages
on the path and hands over to ``winservice`` (the ``ServiceFramework`` subclass).

Start type: automatic, delayed (the network is up by then, and boot is not slowed).
Recovery: restart after 10 s, 1 min, 5 min, counters reset after a day, also when the
agent exits with an error rather than crashing. The pure parts here (command line,
recovery actions) are tested on Linux; the calls need a real Windows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Final

from agent import paths

SERVICE_NAME: Final = "hatang-agent"
DISPLAY_NAME: Final = "hatang agent (giám sát hạ tầng / infrastructure monitoring)"
DESCRIPTION: Final = (
    "Kiểm tra kết nối LAN/WAN/mạng chuyên dùng/Internet, kiểm kê máy và phần mềm diệt "
    "virus, gửi về máy chủ tỉnh. / Connectivity checks, inventory and antivirus state, "
    "reported to the provincial collector."
)
SC_ACTION_RESTART: Final = 1  # winsvc.h SC_ACTION_TYPE
RESTART_DELAYS_MS: Final = (10_000, 60_000, 300_000)
RESET_PERIOD_SECONDS: Final = 86_400
STOP_WAIT_HINT_MS: Final = 30_000  # the daemon's shutdown grace is 10 s


class ServiceError(Exception):
    """A service operation failed; the message says what and what to do."""


def failure_actions() -> dict[str, Any]:
    """``SERVICE_FAILURE_ACTIONS`` as ``ChangeServiceConfig2`` takes it (what ``sc failure``
    sets): restart three times with growing delays, forget failures after a day."""
    return {
        "ResetPeriod": RESET_PERIOD_SECONDS,
        "RebootMsg": None,
        "Command": None,
        "Actions": [(SC_ACTION_RESTART, delay) for delay in RESTART_DELAYS_MS],
    }


def _quote(value: str) -> str:
    if '"' in value:
        raise ServiceError(f"{value!r}: a path with a double quote cannot be a service command")
    return f'"{value}"'


def base_python() -> str:
    """The real interpreter behind this (possibly venv) Python."""
    return str(getattr(sys, "_base_executable", None) or sys.executable)


@dataclass(frozen=True, slots=True)
class Registration:
    """What ``install`` registers: the program, its arguments, the config it runs."""

    python: str
    arguments: str  # after the program, as the service control manager passes them
    config: str

    @property
    def command_line(self) -> str:
        """The service's ``ImagePath``."""
        return f"{_quote(self.python)} {self.arguments}"


def registration(
    config: str | None = None, *, python: str | None = None, host: str | None = None
) -> Registration:
    """The service command for ``config`` (default ``%ProgramData%\\hatang\\agent.yaml``).

    ``-E -s``: no PYTHON* variables, no user site-packages; the service sees only what the
    installer put in its venv.
    """
    config = config or str(paths.default_config("win32"))
    python = python or base_python()
    host = host or str(Path(__file__).with_name("winhost.py"))
    arguments = f"-E -s {_quote(host)} --config {_quote(config)}"
    return Registration(python, arguments, config)


def default_log_file() -> str:
    """The service has no console: its log goes under ProgramData and rotates."""
    return str(PureWindowsPath(paths.log_dir("win32")) / "agent.log")


def install(reg: Registration) -> None:
    """Register (or update) the service, set recovery and start it; Windows only."""
    import pywintypes
    import win32service
    import win32serviceutil

    common = {
        "startType": win32service.SERVICE_AUTO_START,
        "exeName": reg.python,
        "exeArgs": reg.arguments,
        "description": DESCRIPTION,
        "delayedstart": True,
    }
    try:
        try:
            win32serviceutil.InstallService(None, SERVICE_NAME, DISPLAY_NAME, **common)
        except pywintypes.error as exc:
            if exc.winerror != 1073:  # ERROR_SERVICE_EXISTS: update it instead
                raise
            win32serviceutil.ChangeServiceConfig(
                None, SERVICE_NAME, displayName=DISPLAY_NAME, **common
            )
        manager = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
        try:
            handle = win32service.OpenService(
                manager, SERVICE_NAME, win32service.SERVICE_ALL_ACCESS
            )
            try:
                win32service.ChangeServiceConfig2(
                    handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS, failure_actions()
                )
                # Also recover when the agent exits with an error, not only on a crash.
                win32service.ChangeServiceConfig2(
                    handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True
                )
            finally:
                win32service.CloseServiceHandle(handle)
        finally:
            win32service.CloseServiceHandle(manager)
        try:
            win32serviceutil.StartService(SERVICE_NAME)
        except pywintypes.error as exc:
            if exc.winerror != 1056:  # ERROR_SERVICE_ALREADY_RUNNING: run the new version
                raise
            win32serviceutil.RestartService(SERVICE_NAME)
    except pywintypes.error as exc:
        raise ServiceError(f"{exc.funcname}: {exc.strerror} (error {exc.winerror})") from None


def uninstall() -> bool:
    """Stop and remove the service; False when it was not installed. Windows only."""
    import pywintypes
    import win32serviceutil

    try:
        try:
            win32serviceutil.StopServiceWithDeps(SERVICE_NAME, waitSecs=60)
        except pywintypes.error as exc:
            if exc.winerror == 1060:  # ERROR_SERVICE_DOES_NOT_EXIST
                return False
            if exc.winerror != 1062:  # ERROR_SERVICE_NOT_ACTIVE
                raise
        win32serviceutil.RemoveService(SERVICE_NAME)
    except pywintypes.error as exc:
        raise ServiceError(f"{exc.funcname}: {exc.strerror} (error {exc.winerror})") from None
    return True


# QueryServiceStatus's dwCurrentState (winsvc.h).
STATES: Final = {
    1: ("stopped", "đã dừng / stopped"),
    2: ("start-pending", "đang khởi động / starting"),
    3: ("stop-pending", "đang dừng / stopping"),
    4: ("running", "đang chạy / running"),
    5: ("continue-pending", "đang tiếp tục / continuing"),
    6: ("pause-pending", "đang tạm dừng / pausing"),
    7: ("paused", "tạm dừng / paused"),
}


def describe_state(state: int | None, exit_code: int = 0) -> tuple[str, list[str]]:
    """(machine state, lines for the officer) from the service's current state."""
    if state is None:
        return "not-found", [
            "Dịch vụ chưa được cài / The service is not installed: run install.ps1 "
            "(as administrator) or `hatang-agent service install`."
        ]
    name, words = STATES.get(state, (f"state-{state}", f"trạng thái {state} / state {state}"))
    lines = [f"Dịch vụ / Service: {SERVICE_NAME}", f"Trạng thái / State: {words}"]
    if state == 1 and exit_code:
        lines.append(
            f"Lần dừng trước / Last exit code: {exit_code}; xem nhật ký / see the log: "
            f"{default_log_file()}"
        )
    return name, lines


def status() -> tuple[str, list[str]]:
    """The service's state; Windows only."""
    import pywintypes
    import win32serviceutil

    try:
        _, state, _, exit_code, specific, _, _ = win32serviceutil.QueryServiceStatus(SERVICE_NAME)
    except pywintypes.error as exc:
        if exc.winerror == 1060:
            return describe_state(None)
        raise ServiceError(f"{exc.funcname}: {exc.strerror} (error {exc.winerror})") from None
    return describe_state(int(state), int(specific or exit_code))

"""The Windows service itself (pywin32 ``ServiceFramework``); imported only on Windows.

``SvcStop`` requests the stop through the daemon's ``StopSignal``, the same path as
SIGTERM on Linux: the spool is committed, an unanswered batch stays queued. Windows
delivers no signal to a service, so without this the agent would be killed mid-write.
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Sequence
from typing import Any

import servicemanager
import win32service
import win32serviceutil

from agent.scheduler import StopSignal
from agent.service.windows import (
    DESCRIPTION,
    DISPLAY_NAME,
    SERVICE_NAME,
    STOP_WAIT_HINT_MS,
    default_log_file,
    registration,
)


class AgentService(win32serviceutil.ServiceFramework):  # type: ignore[misc,unused-ignore]
    """hatang-agent under the service control manager."""

    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = DISPLAY_NAME
    _svc_description_ = DESCRIPTION
    config_path = registration().config

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.stop_signal = StopSignal()

    def SvcStop(self) -> None:  # pywin32 calls it by this name
        """Called on the service control thread: ask the daemon to stop, and say so."""
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)
        self.stop_signal.request("service stop")

    def SvcShutdown(self) -> None:  # Windows is shutting down
        self.SvcStop()

    def SvcDoRun(self) -> None:
        """Run the daemon until stopped; a failure raises so that recovery restarts it."""
        from agent.cli import CONFIG_LEAD, EXIT_CONFIG, serve
        from agent.config import ConfigError

        # ServiceFramework.SvcRun has reported SERVICE_RUNNING; an exception raised here
        # makes the C framework report SERVICE_STOPPED with an error code (recovery).
        try:
            code = serve(self.config_path, self.stop_signal, default_log_file=default_log_file())
        except ConfigError as exc:
            # Restarting cannot fix a config: log it where officers look and stop cleanly.
            servicemanager.LogErrorMsg(f"{CONFIG_LEAD}: {exc.in_file(self.config_path)}")
            return
        except Exception:
            servicemanager.LogErrorMsg(traceback.format_exc())
            raise
        if code not in (0, EXIT_CONFIG):
            raise RuntimeError(f"hatang-agent exited with status {code}; see {default_log_file()}")


def main(argv: Sequence[str]) -> int:
    """Entry of ``winhost.py``: host the service in this process."""
    parser = argparse.ArgumentParser(prog="winhost.py")
    parser.add_argument("--config", default=AgentService.config_path)
    args, _ = parser.parse_known_args(argv)
    AgentService.config_path = args.config
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(AgentService)
    servicemanager.StartServiceCtrlDispatcher()
    return 0

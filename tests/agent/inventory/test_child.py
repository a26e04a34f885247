"""Inventory and posture in the daemon's short-lived child (``python -m agent.inventory``).

The child runs for real (it reads this machine, it sends nothing); the daemon test
checks that the host inventory reaches the report while psutil never enters the
daemon's own process.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agent.config import AntivirusConfig, PatchesConfig, parse_config
from agent.inventory import child
from agent.inventory.child import ChildFailed, Request, child_main, collect_in_child
from agent.report import AntivirusStatus, FirewallStatus, HostInventory, decode_report
from agent.scheduler import Daemon
from tests.agent.test_scheduler import Started, queued_reports, until
from tests.receiver import agent_config

REPO = Path(__file__).resolve().parents[3]


def test_host_inventory_comes_back_from_the_child() -> None:
    inventory = collect_in_child(Request("host"))
    assert isinstance(inventory, HostInventory)
    assert inventory.hostname == socket.gethostname()[: len(inventory.hostname)]
    assert inventory.cpu_count is not None and inventory.cpu_count >= 1


def test_posture_comes_back_as_antivirus_and_firewall() -> None:
    settings = AntivirusConfig(command_timeout=5.0)  # type: ignore[arg-type]
    antivirus, firewall = collect_in_child(Request("antivirus", antivirus=settings))
    assert isinstance(antivirus, AntivirusStatus)
    assert isinstance(firewall, FirewallStatus)


def test_settings_travel_to_the_child_with_their_units() -> None:
    """A Duration goes over as seconds and is read back as the same Duration."""
    request = Request("patches", patches=PatchesConfig(command_timeout=120.0))  # type: ignore[arg-type]
    raw = msgspec.json.encode(request, enc_hook=float)
    back = msgspec.convert(msgspec.json.decode(raw), Request, dec_hook=child.dec_hook)
    assert back == request
    assert child.timeout_for(back) > 120


@pytest.mark.parametrize(
    ("stdin", "says"),
    [
        (b"{not json", "inventory request refused"),
        (b'{"part": "disks"}', "Invalid enum value 'disks'"),
        (b'{"part": "host", "extra": 1}', "unknown field"),
        (b'{"part": "antivirus", "antivirus": {"command_timeout": "soon"}}', "command_timeout"),
        (b"[]", "inventory request refused"),
    ],
)
def test_hostile_request_is_refused_with_exit_2(stdin: bytes, says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.inventory"],
        input=stdin,
        capture_output=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == b""
    assert says in result.stderr.decode()


def test_child_main_answers_json_the_daemon_decodes() -> None:
    code, answer = child_main(b'{"part": "host"}')
    assert code == 0
    assert msgspec.json.decode(answer, type=HostInventory).hostname


def test_unreadable_answer_is_a_child_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that prints something else (here ``echo``) fails the run, named."""
    monkeypatch.setattr(child.subproc, "python_executable", lambda: "/bin/echo")
    with pytest.raises(ChildFailed, match="host: exit 0, unreadable answer"):
        collect_in_child(Request("host"))


def test_child_that_cannot_start_is_a_child_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(child.subproc, "python_executable", lambda: str(tmp_path / "nope"))
    with pytest.raises(ChildFailed, match="host: cannot start the child"):
        collect_in_child(Request("host"))


async def test_daemon_reports_inventory_collected_in_the_child(
    tmp_path: Path, listener: int
) -> None:
    cfg = parse_config(agent_config(tmp_path, tcp_port=listener, inventory={"enabled": True}))
    async with Started(Daemon(cfg, "agent.yaml")) as daemon:
        reports = await until(lambda: [r for r in queued_reports(daemon) if r.host is not None], 60)
    assert reports[0].host is not None and reports[0].host.hostname


DRIVER = r"""
import json, os, signal, sqlite3, sys, threading, time
spool = sys.argv[2]
def stop():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{spool}?mode=ro", uri=True) as c:
                bodies = [r[0] for r in c.execute("SELECT body FROM queue")]
        except sqlite3.Error:
            bodies = []
        if any(b'"host":{' in b for b in bodies):
            break
        time.sleep(0.1)
    print(json.dumps({"psutil": "psutil" in sys.modules}), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=stop, daemon=True).start()
from agent.cli import main
main(json.loads(sys.argv[1]))
"""


def test_daemon_never_imports_psutil(tmp_path: Path, listener: int, closed_port: int) -> None:
    """Until a report carries the host inventory (a collector that is not there keeps
    every report in the spool, where the driver reads them)."""
    url = f"http://127.0.0.1:{closed_port}"
    data = agent_config(tmp_path, urls=[url], tcp_port=listener, inventory={"enabled": True})
    data["antivirus"] = {"enabled": True}
    data["log"] = {"level": "warning"}
    config = tmp_path / "agent.yaml"
    config.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
    spool = data["spool"]["path"]
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(["run", "--config", str(config)]), spool],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[0])
    assert outcome == {"psutil": False}, result.stderr
    with sqlite3.connect(spool) as conn:
        bodies = [decode_report(r[0]) for r in conn.execute("SELECT body FROM queue")]
    assert any(r.host is not None for r in bodies)


def test_what_the_child_says_reaches_the_daemons_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A child's warnings on standard error are logged again, then its answer is used."""
    script = tmp_path / "child.sh"
    script.write_text(
        "#!/bin/sh\necho 'WARNING antivirus.source_failed' >&2\n"
        'echo \'{"hostname": "pc-1", "os": "Linux"}\'\n',
        encoding="utf-8",
    )
    script.chmod(0o755)
    monkeypatch.setattr(child.subproc, "python_executable", lambda: str(script))
    with caplog.at_level("WARNING", logger="agent.inventory.child"):
        inventory = collect_in_child(Request("host"))
    assert inventory == HostInventory(hostname="pc-1", os="Linux")
    said = [r for r in caplog.records if r.getMessage() == "inventory.child_said"]
    assert said and "antivirus.source_failed" in said[0].text  # type: ignore[attr-defined]

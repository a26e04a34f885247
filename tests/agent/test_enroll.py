"""Enrollment and central configuration end to end: a real ``hatang-collector serve`` on
loopback, real ``hatang-agent enroll`` and ``hatang-agent run`` processes.

The central layer files of the collector give the agents their targets (TCP listeners on
127.0.0.1); a change plus SIGHUP reaches a running agent within one refresh, a broken
layer is refused by the collector, and a layer the agent rejects leaves it on the last
good config and shows in ``agents list``.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import load_config
from tests.agent.test_daemon import Agent, agents  # noqa: F401 - the fixture
from tests.collector.conftest import (
    SITE,
    CollectorProcess,
    collector_process,  # noqa: F401 - the fixture
    run_cli,
    write_config,
)
from tests.netns import wait_for

REPO = Path(__file__).resolve().parents[2]
StartCollector = Callable[..., CollectorProcess]


def province_layer(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "interval": "1s",
        "jitter": 0.1,
        "inventory": {"enabled": False},
        "antivirus": {"enabled": False},
        "networks": {"lan": {"targets": [{"kind": "tcp", "address": f"127.0.0.1:{port}"}]}},
        **extra,
    }


def write_layer(tmp_path: Path, data: Any, name: str = "province.yaml") -> None:
    path = tmp_path / "agents" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")


def start(start_collector: StartCollector, tmp_path: Path, port: int) -> CollectorProcess:
    write_layer(tmp_path, province_layer(port))
    return start_collector(
        agent_config={"dir": "agents"},
        metrics={"refresh_interval": "1s", "min_refresh_interval": "0s"},
    )


def new_code(collector: CollectorProcess, uses: int = 5) -> str:
    done = run_cli("enroll-code", "create", "--config", str(collector.config_path),
                   "--site", SITE, "--uses", str(uses))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def enroll(
    collector: CollectorProcess, home: Path, code: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "enroll", "--config", str(home / "agent.yaml"),
         "--collector", collector.url, "--code", code, "--state-dir", str(home / "state"),
         *extra],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def agents_list(collector: CollectorProcess) -> dict[str, dict[str, Any]]:
    done = run_cli("agents", "list", "--config", str(collector.config_path), "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return {row["agent_id"]: row for row in rows}


def latest_targets(collector: CollectorProcess, agent_id: str) -> list[str]:
    """The lan targets of the agent's newest stored report (read beside the running server)."""
    db = collector.config_path.parent / "collector.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        row = conn.execute(
            "SELECT body FROM reports WHERE agent_id = ? ORDER BY seq DESC LIMIT 1", (agent_id,)
        ).fetchone()
    conn.close()
    if row is None:
        return []
    return [t["target"] for t in json.loads(row[0])["networks"]["lan"]["targets"]]


def metric(collector: CollectorProcess, prefix: str) -> float | None:
    with urllib.request.urlopen(f"{collector.url}/metrics", timeout=30) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
    return None


def set_local(home: Path, **keys: Any) -> None:
    """Edit the enrolled config as an officer would (local keys override central ones)."""
    path = home / "agent.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in keys.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def test_enroll_writes_a_private_credential_and_a_config_that_runs(
    collector_process: StartCollector,  # noqa: F811
    tmp_path: Path,
    listener: int,
    agents: list[Agent],  # noqa: F811 - the fixture
) -> None:
    collector = start(collector_process, tmp_path, listener)
    code = new_code(collector, uses=2)
    home = tmp_path / "pc1"
    done = enroll(collector, home, code.lower())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(home / "agent.yaml")
    assert "Đã đăng ký" in done.stdout and "Enrolled this computer" in done.stdout
    assert "hatang-agent run --config" in done.stdout
    credential = home / "state" / "credential"
    assert os.stat(credential).st_mode & 0o777 == 0o600
    config = load_config(home / "agent.yaml")  # the agent's own loader accepts it
    assert config.site == SITE and config.role == "host" and config.agent_id
    assert config.collector is not None and config.collector.token_file == str(credential)
    assert config.central is not None
    # Refused again without --force: the config exists; nothing changes.
    before = (home / "agent.yaml").read_bytes()
    again = enroll(collector, home, code)
    assert again.returncode == 2 and "--force" in again.stderr
    assert (home / "agent.yaml").read_bytes() == before

    # A second PC, the site probe, with a second collector address (never run here: a site
    # probe sweeps its LAN).
    probe_home = tmp_path / "probe"
    service_user = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    done = enroll(collector, probe_home, code, "--role", "site-probe",
                  "--collector", "http://127.0.0.2:9", "--user", service_user)  # fmt: skip
    assert done.returncode == 0, done.stderr
    owner = pwd.getpwnam(service_user).pw_uid
    assert os.stat(probe_home / "state" / "credential").st_uid == owner
    assert os.stat(probe_home / "state").st_uid == owner
    probe = load_config(probe_home / "agent.yaml")
    assert probe.role == "site-probe" and probe.agent_id != config.agent_id
    assert probe.collector is not None
    assert probe.collector.urls == [collector.url, "http://127.0.0.2:9"]
    assert {r["role"] for r in agents_list(collector).values()} == {"host", "site-probe"}

    # `check` right after enrolling probes what the province set (the cached central config).
    checked = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(home / "agent.yaml"), "--json"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    lan = json.loads(checked.stdout)["networks"]["lan"]
    assert [t["target"] for t in lan["targets"]] == [f"127.0.0.1:{listener}"] and lan["up"]

    set_local(home, central={"refresh": "1s"})
    agent = Agent(home / "agent.yaml", home / "agent.log")
    agents.append(agent)
    wait_for(lambda: latest_targets(collector, str(config.agent_id)), timeout=60)
    assert latest_targets(collector, str(config.agent_id)) == [f"127.0.0.1:{listener}"]
    row = agents_list(collector)[str(config.agent_id)]
    assert row["site"] == SITE and row["last_report"] is not None
    wait_for(lambda: agents_list(collector)[str(config.agent_id)]["config_version"], timeout=30)
    assert agent.signal(signal.SIGTERM) == 0
    assert "Traceback" not in agent.text()


@pytest.mark.parametrize("case", ["wrong", "expired", "used_up", "bad_form", "unreachable"])
def test_refused_codes_exit_nonzero_and_write_nothing(
    collector_process: StartCollector,  # noqa: F811
    tmp_path: Path,
    listener: int,
    case: str,
) -> None:
    collector = start(collector_process, tmp_path, listener)
    code = new_code(collector, uses=1)
    if case == "wrong":
        code = code[:-1] + ("X" if code[-1] != "X" else "Y")
    elif case == "expired":
        with sqlite3.connect(collector.config_path.parent / "collector.db") as conn:
            conn.execute("UPDATE enroll_codes SET expires_at = 0")
        conn.close()
    elif case == "used_up":
        assert enroll(collector, tmp_path / "first", code).returncode == 0
    elif case == "bad_form":
        code = "not-a-code"
    elif case == "unreachable":
        collector.stop()
    home = tmp_path / "pc"
    done = enroll(collector, home, code)
    expected = {"bad_form": 2}.get(case, 1)
    assert done.returncode == expected, done.stdout + done.stderr
    reason = {
        "wrong": "không đúng",
        "expired": "expired",
        "used_up": "used_up",
        "bad_form": "--code",
        "unreachable": "cannot reach the collector",
    }[case]
    assert reason in done.stderr
    assert not home.exists(), sorted(p.name for p in home.rglob("*"))


def test_central_config_changes_reach_a_running_agent_and_rejections_are_visible(
    collector_process: StartCollector,  # noqa: F811
    tmp_path: Path,
    listener: int,
    closed_port: int,
    agents: list[Agent],  # noqa: F811 - the fixture
) -> None:
    collector = start(collector_process, tmp_path, listener)
    home = tmp_path / "pc1"
    assert enroll(collector, home, new_code(collector)).returncode == 0
    agent_id = str(load_config(home / "agent.yaml").agent_id)
    # The officer narrowed this PC's discovery bound: a local key, it wins over central.
    set_local(home, central={"refresh": "1s"}, discovery={"max_prefix": 24})
    agent = Agent(home / "agent.yaml", home / "agent.log")
    agents.append(agent)
    wait_for(lambda: latest_targets(collector, agent_id) == [f"127.0.0.1:{listener}"], timeout=60)
    first = agents_list(collector)[agent_id]["config_version"]

    # 1. A target changed centrally reaches the running agent within one refresh.
    write_layer(tmp_path, province_layer(closed_port))
    assert collector.proc is not None
    collector.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: latest_targets(collector, agent_id) == [f"127.0.0.1:{closed_port}"], timeout=30
    )
    wait_for(lambda: agents_list(collector)[agent_id]["config_version"] != first, timeout=30)
    second = agents_list(collector)[agent_id]["config_version"]
    # Unchanged since: the refreshes are answered 304.
    not_modified = 'hatang_http_requests_total{code="304",handler="config"}'
    wait_for(lambda: (metric(collector, not_modified) or 0) >= 2, timeout=30)

    # 2. A broken layer is refused at reload: logged with file and key, the old one served.
    write_layer(tmp_path, {"networks": {"wan": {"targets": [{"kind": "tcp", "address": "x"}]}}})
    collector.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "central.reload_failed" in collector.log.read_text(), timeout=30)
    log = collector.log.read_text()
    assert "province.yaml: networks.wan.targets[0].address" in log
    assert agents_list(collector)[agent_id]["config_version"] == second

    # 3. A layer the collector accepts but this agent rejects (its local discovery bound is
    #    /24; the province asks for a /22): it stays on the last good config and says so.
    write_layer(tmp_path, province_layer(closed_port, discovery={"subnets": ["10.77.0.0/22"]}))
    collector.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: agents_list(collector)[agent_id]["config_error"], timeout=30)
    row = agents_list(collector)[agent_id]
    assert row["config_version"] == second and row["config_rejected"] not in (None, second)
    assert "discovery.subnets[0]" in row["config_error"]
    errors = f'hatang_site_agent_config_errors{{site="{SITE}"}}'
    wait_for(lambda: metric(collector, errors) == 1, timeout=30)
    assert latest_targets(collector, agent_id) == [f"127.0.0.1:{closed_port}"]
    assert "event=central.rejected" in agent.text()
    assert agent.signal(signal.SIGTERM) == 0

    # The last good config survives a restart with the collector gone.
    collector.stop()
    cache = home / "state" / "central.json"
    assert os.stat(cache).st_mode & 0o777 == 0o600
    assert json.loads(cache.read_text())["version"] == second


def test_a_broken_central_config_stops_the_collector_at_start(tmp_path: Path) -> None:
    write_layer(tmp_path, {"networks": {"lan": {"targets": [{"kind": "icmp", "adress": "x"}]}}})
    write_layer(tmp_path, {"networks": {}}, "level-comune.yaml")
    path = write_config(tmp_path, agent_config={"dir": "agents"})
    done = run_cli("serve", "--config", str(path))
    assert done.returncode == 2
    assert "level-comune.yaml: unknown level" in done.stderr
    (tmp_path / "agents" / "level-comune.yaml").unlink()
    done = run_cli("serve", "--config", str(path))
    assert done.returncode == 2
    assert "province.yaml: networks.lan.targets[0]: unknown key 'adress'" in done.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--collector", "ftp://x"], "--collector[0]: 'ftp://x' does not start with http://"),
        (
            ["--collector", "https://127.0.0.1:9", "--ca-file", "/nonexistent.pem"],
            "--ca-file: cannot load /nonexistent.pem",
        ),
        (["--collector", "http://127.0.0.1:9", "--role", "boss"], "--role: invalid choice"),
        (["--collector", "http://127.0.0.1:9", "--code", "!!!"], "--code: an enrollment code"),
        (["--code", "K7QM-3XWD-9PTA-HN4R"], "the following arguments are required: --collector"),
        (["--collector", "http://127.0.0.1:9", "--user", "no-such-user-x"], "--user: no user"),
    ],
)
def test_bad_enroll_usage_exits_2_naming_the_option(
    tmp_path: Path, args: list[str], named: str
) -> None:
    argv = [*args] if "--code" in args else [*args, "--code", "K7QM-3XWD-9PTA-HN4R"]
    done = subprocess.run(
        [sys.executable, "-m", "agent", "enroll", "--config", str(tmp_path / "pc" / "a.yaml"),
         "--state-dir", str(tmp_path / "pc" / "state"), *argv],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert not (tmp_path / "pc").exists()

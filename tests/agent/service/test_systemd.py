"""The systemd unit: ``systemd-analyze verify``, its hardening, and ``hatang-agent service``
installing into a test root (``systemctl --root`` links it as on a real system)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.service import systemd
from agent.service.systemd import UNIT_NAME, describe_status, parse_show

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "systemd"
HATANG_AGENT = str(Path(sys.executable).parent / "hatang-agent")
CONFIG = """\
site: bac-kan/cho-don/bang-lung
role: {role}
collector: {{url: "http://127.0.0.1:9", token_file: /etc/hatang/token}}
networks:
  lan: {{targets: [{{kind: tcp, address: "127.0.0.1:9"}}]}}
"""


def settings(text: str) -> dict[str, list[str]]:
    """Unit file assignments by key (a key may be assigned more than once)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key, []).append(value)
    return found


def test_configs_systemd_is_current() -> None:
    """configs/systemd is what ``service install`` writes (run the module to refresh it)."""
    assert (REPO / "configs/systemd" / UNIT_NAME).read_text() == systemd.render_unit()
    drop_in = REPO / "configs/systemd" / f"{UNIT_NAME}.d" / "site-probe.conf"
    assert drop_in.read_text() == systemd.render_drop_in(), (
        "configs/systemd is out of date: run `python -m agent.service.systemd configs/systemd`"
    )


def test_host_unit_is_hardened_and_the_probe_gets_only_raw_packets() -> None:
    unit = settings(systemd.render_unit())
    for key, value in [
        ("User", "hatang"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "hatang"),
        ("LogsDirectory", "hatang"),
        ("ConfigurationDirectory", "hatang"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "2"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
    ]:
        assert unit[key] == [value], key
    assert unit["ExecStart"] == ["/opt/hatang/bin/hatang-agent run --config /etc/hatang/agent.yaml"]
    assert "AF_PACKET" not in unit["RestrictAddressFamilies"][0]
    probe = settings(systemd.render_drop_in())
    assert probe["AmbientCapabilities"] == probe["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    assert probe["RestrictAddressFamilies"] == ["AF_PACKET"]


def verify(unit_dir: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: scripts/test.sh installs Debian's systemd"
    return subprocess.run(
        [analyze, "verify", str(unit_dir / UNIT_NAME)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


@pytest.mark.parametrize("role", ["host", "site-probe"])
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, role: str) -> None:
    """verify exits 0 even on unknown keys, so its warnings count as failures too."""
    agent = tmp_path / "opt/bin/hatang-agent"
    agent.parent.mkdir(parents=True)
    agent.write_text("#!/bin/sh\nexit 0\n")
    agent.chmod(0o755)
    chosen = systemd.plan(tmp_path, str(agent), "/etc/hatang/agent.yaml", role)
    unit_dir = chosen.unit.parent
    unit_dir.mkdir(parents=True)
    chosen.unit.write_text(chosen.unit_text)
    if chosen.drop_in_text is not None:
        chosen.drop_in.parent.mkdir()
        chosen.drop_in.write_text(chosen.drop_in_text)
    proc = verify(unit_dir)
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "")
    # The check is real: a key systemd does not know is reported.
    chosen.unit.write_text(chosen.unit_text.replace("PrivateTmp=yes", "PrivateTemp=yes"))
    assert "Unknown key" in verify(unit_dir).stderr


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "service", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def write_config(root: Path, role: str = "host") -> Path:
    config = root / "etc/hatang/agent.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG.format(role=role))
    return config


def test_service_install_writes_and_enables_the_unit(tmp_path: Path) -> None:
    write_config(tmp_path, "site-probe")
    proc = cli("install", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    unit = tmp_path / "etc/systemd/system" / UNIT_NAME
    drop_in = tmp_path / "etc/systemd/system" / f"{UNIT_NAME}.d/site-probe.conf"
    assert proc.stdout.splitlines()[-1] == str(unit)
    assert "Đã cài dịch vụ / Service installed (site-probe)" in proc.stdout
    assert settings(unit.read_text())["ExecStart"] == [
        f"{HATANG_AGENT} run --config /etc/hatang/agent.yaml"
    ]
    assert drop_in.read_text() == systemd.render_drop_in()
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants" / UNIT_NAME
    assert os.readlink(wants) == f"/etc/systemd/system/{UNIT_NAME}"

    # The same PC becomes a plain host: the raw-packet drop-in goes.
    write_config(tmp_path, "host")
    assert cli("install", "--root", str(tmp_path)).returncode == 0
    assert not drop_in.exists() and unit.exists()

    proc = cli("uninstall", "--root", str(tmp_path))
    assert (proc.returncode, proc.stdout.splitlines()[-1]) == (0, "uninstalled")
    assert not unit.exists() and not wants.exists()
    assert (tmp_path / "etc/hatang/agent.yaml").exists()  # config and state stay


def test_service_install_dry_run_prints_and_writes_nothing(tmp_path: Path) -> None:
    proc = cli("install", "--root", str(tmp_path), "--dry-run", "--role", "site-probe")
    assert proc.returncode == 0, proc.stderr
    assert f"ExecStart={HATANG_AGENT} run --config /etc/hatang/agent.yaml" in proc.stdout
    assert "AmbientCapabilities=CAP_NET_RAW" in proc.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        pytest.param(
            None, [], "etc/hatang/agent.yaml does not exist: enroll first", id="no-config"
        ),
        pytest.param(
            "site: Bad Site\n", [], "agent.yaml: site: 'Bad Site' is not a unit id", id="bad"
        ),
        pytest.param(
            CONFIG.format(role="host"),
            ["--role", "site-probe"],
            "role: is 'host' but --role site-probe was asked",
            id="role-mismatch",
        ),
        pytest.param(
            None, ["--config", "agent.yaml"], "give an absolute path", id="relative-config"
        ),
        pytest.param(
            None,
            ["--config", "/etc/hatang/my agent.yaml", "--dry-run"],
            "cannot go in a unit file",
            id="space-in-path",
        ),
    ],
)
def test_service_install_refuses_bad_input_with_exit_2(
    tmp_path: Path, setup: str | None, args: list[str], message: str
) -> None:
    if setup is not None:
        config = tmp_path / "etc/hatang/agent.yaml"
        config.parent.mkdir(parents=True)
        config.write_text(setup)
    proc = cli("install", "--root", str(tmp_path), *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "etc/systemd").exists()


@pytest.mark.parametrize(
    ("recorded", "running", "state", "expected"),
    [
        ("show_running.txt", True, "active/running", "Tiến trình / PID: 812"),
        (
            "show_failed_config.txt",
            False,
            "failed/failed",
            "Lần dừng trước / Last exit: exit-code, status 2 (lỗi cấu hình / configuration "
            "error); xem nhật ký / see the log: journalctl -u hatang-agent",
        ),
        ("show_auto_restart.txt", False, "activating/auto-restart", "Restarts: 3"),
        ("show_not_found.txt", False, "not-found", "The service is not installed"),
    ],
)
def test_status_from_recorded_systemctl_show(
    recorded: str, running: bool, state: str, expected: str
) -> None:
    values = parse_show((FIXTURES / recorded).read_text())
    status = describe_status(values)
    assert (status.running, status.state) == (running, state)
    assert any(expected in line for line in status.lines), status.lines


def test_parse_show_keeps_equals_in_values() -> None:
    values = parse_show("ExecStart={ path=/opt/hatang/bin/hatang-agent ; argv[]=a=b }\nnoise\n")
    assert values == {"ExecStart": "{ path=/opt/hatang/bin/hatang-agent ; argv[]=a=b }"}

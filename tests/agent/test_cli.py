"""``hatang-agent``: what a person at the office PC sees, and the exit codes.

Every target is on loopback (a TCP listener the test opens, or a port nothing listens
on), so the checks are real and no packet leaves the machine. ``lan`` always has a
target: without one the agent would probe the machine's real default gateway.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agent.cli import agent_id, main
from agent.config import load_config
from agent.render import render_report
from agent.report import (
    AntivirusProduct,
    AntivirusStatus,
    LanHostCounts,
    LanHosts,
    Networks,
    NetworkStatus,
    ProbeResult,
    Report,
    SnmpDevice,
    utcnow,
)
from agent.spool import open_spool
from tests.netns import wait_for

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "tests" / "testdata" / "agent"
SITE = "bac-kan/cho-don/bang-lung"


def agent(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agent`` as a user would, capturing both streams."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def host_config(tmp_path: Path, lan_port: int, wan_port: int | None = None) -> Path:
    wan = (
        f'  wan: {{targets: [{{kind: tcp, address: "127.0.0.1:{wan_port}", timeout: 3s}}]}}\n'
        if wan_port
        else ""
    )
    return write_config(
        tmp_path / "agent.yaml",
        f"site: {SITE}\n"
        "networks:\n"
        f'  lan: {{targets: [{{kind: tcp, address: "127.0.0.1:{lan_port}", timeout: 3s}}]}}\n'
        f"{wan}"
        "antivirus: {enabled: false}\npatches: {enabled: false}\n",
    )


def test_version() -> None:
    result = agent("--version")
    assert (result.returncode, result.stdout) == (0, "hatang-agent 0.1.0\n")


def test_console_script_is_the_same_program() -> None:
    script = Path(sys.executable).with_name("hatang-agent")
    if not script.exists():
        pytest.skip("hatang-agent console script is not installed beside this python")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "hatang-agent 0.1.0\n")


def test_config_error_exits_2_naming_file_and_key_path() -> None:
    result = agent("check", "--config", "invalid-tcp-port-missing.yaml", cwd=TESTDATA)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Lỗi cấu hình / Configuration error: invalid-tcp-port-missing.yaml: "
        "networks.dedicated.targets[1].address: port missing (expected host:port)\n"
    )


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = agent("check", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr == (
        f"Lỗi cấu hình / Configuration error: {tmp_path / 'nope.yaml'}: "
        "cannot read: No such file or directory\n"
    )


def test_usage_errors_exit_2_without_traceback() -> None:
    result = agent("check")
    assert result.returncode == 2
    assert "lỗi dòng lệnh / usage error: the following arguments are required: --config" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert agent().returncode == 2
    assert agent("frobnicate").returncode == 2


def _row(stdout: str, *cells: str) -> str:
    rows = [line for line in stdout.splitlines() if all(cell in line for cell in cells)]
    assert len(rows) == 1, (cells, stdout)
    return rows[0]


def test_check_table_shows_each_class_and_target(
    tmp_path: Path, listener: int, closed_port: int
) -> None:
    result = agent("check", "--config", str(host_config(tmp_path, listener, closed_port)))
    assert result.returncode == 1, result.stderr  # wan is configured and down
    out = result.stdout
    lan = _row(out, f"127.0.0.1:{listener}")
    assert lan.startswith("LAN ")
    assert " tcp " in lan and "ĐẠT / OK" in lan
    wan = _row(out, f"127.0.0.1:{closed_port}")
    assert wan.startswith("WAN ")
    assert "LỖI / FAIL" in wan and "bị từ chối / refused" in wan
    assert "chưa cấu hình / not configured" in _row(out, "Mạng chuyên dùng / Dedicated  ")
    assert "chưa cấu hình / not configured" in _row(out, "Internet  ")
    assert "  LAN: ĐẠT / OK (1/1 đích đạt / targets OK" in out
    assert "  WAN: LỖI / FAIL (0/1 đích đạt / targets OK" in out
    assert f"Tên máy / Hostname:      {socket.gethostname()}" in out
    assert "Bảo mật / Security" in out
    assert "Traceback" not in result.stderr


def test_check_json_all_up_exits_0(tmp_path: Path, listener: int) -> None:
    result = agent("check", "--config", str(host_config(tmp_path, listener)), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["site"] == SITE
    assert report["role"] == "host"
    assert report["seq"] == 0
    networks = report["networks"]
    assert networks["lan"]["up"] is True
    [target] = networks["lan"]["targets"]
    assert (target["kind"], target["target"], target["up"]) == (
        "tcp",
        f"127.0.0.1:{listener}",
        True,
    )
    assert target["rtt_seconds"] > 0
    assert target["error"] is None
    for name in ("wan", "dedicated", "internet"):  # not configured is never down
        assert (networks[name]["configured"], networks[name]["up"]) == (False, None)
    assert report["host"]["hostname"] == socket.gethostname()
    assert report["antivirus"] is None  # disabled in this config


def test_check_json_some_down_exits_1(tmp_path: Path, listener: int, closed_port: int) -> None:
    result = agent("check", "--config", str(host_config(tmp_path, listener, closed_port)), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    wan = report["networks"]["wan"]
    assert wan["up"] is False
    assert wan["targets"][0]["error"] == "refused"


def test_agent_id_is_stable_without_config(tmp_path: Path, listener: int) -> None:
    config = host_config(tmp_path, listener)
    first = json.loads(agent("check", "--config", str(config), "--json").stdout)
    second = json.loads(agent("check", "--config", str(config), "--json").stdout)
    assert first["agent_id"] == second["agent_id"]
    assert first["id"] != second["id"]


def test_configured_agent_id_is_used(tmp_path: Path, listener: int) -> None:
    config = host_config(tmp_path, listener)
    config.write_text(config.read_text() + "agent_id: pc-01\n", encoding="utf-8")
    assert json.loads(agent("check", "--config", str(config), "--json").stdout)["agent_id"] == (
        "pc-01"
    )


def test_main_returns_codes_in_process(
    tmp_path: Path, listener: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """``main()`` returns instead of exiting, so ``python -c`` drivers can call it."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "hatang-agent 0.1.0\n"
    assert main(["check", "--config", str(host_config(tmp_path, listener)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["networks"]["lan"]["up"] is True


# --- run -------------------------------------------------------------------------------


def test_run_requires_a_collector(tmp_path: Path, listener: int) -> None:
    result = agent("run", "--config", str(host_config(tmp_path, listener)))
    assert result.returncode == 2
    assert result.stderr == (
        f"Lỗi cấu hình / Configuration error: {tmp_path / 'agent.yaml'}: collector: "
        "required for `run` (url and token or token_file of the collector)\n"
    )


def test_run_checks_the_token_file_first(tmp_path: Path, listener: int, closed_port: int) -> None:
    config = host_config(tmp_path, listener)
    token = tmp_path / "token"
    config.write_text(
        config.read_text()
        + f'collector: {{url: "http://127.0.0.1:{closed_port}", token_file: {token}}}\n',
        encoding="utf-8",
    )
    result = agent("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        f"Lỗi cấu hình / Configuration error: {config}: collector.token_file: "
        f"cannot read {token}: No such file or directory\n"
    )


def test_run_starts_spools_and_stops_on_sigterm(
    tmp_path: Path, listener: int, closed_port: int
) -> None:
    """The daemon starts with a valid config, spools while the collector is away, and
    exits 0 on SIGTERM."""
    config = host_config(tmp_path, listener)
    token = tmp_path / "token"
    token.write_text("test-token\n", encoding="utf-8")
    spool = tmp_path / "spool.db"
    config.write_text(
        config.read_text()
        + f'collector: {{url: "http://127.0.0.1:{closed_port}", token_file: {token}}}\n'
        + f"spool: {{path: {spool}}}\n"
        + "inventory: {enabled: false}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        wait_for(spool.exists, timeout=60)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "test-token" not in stderr  # the secret never reaches the log


# --- the readable table ----------------------------------------------------------------


def _report(**fields: object) -> Report:
    base: dict[str, object] = {
        "id": "r1",
        "agent_id": "a1",
        "site": SITE,
        "role": "host",
        "seq": 0,
        "observed_at": utcnow(),
        "interval_seconds": 60.0,
        "agent_version": "0.1.0",
    }
    return Report(**{**base, **fields})  # type: ignore[arg-type]


def test_render_site_probe_shows_lan_hosts_by_source() -> None:
    report = _report(
        role="site-probe",
        networks=Networks(
            lan=NetworkStatus(
                configured=True,
                up=True,
                rule="any",
                targets=[
                    ProbeResult(
                        kind="icmp",
                        target="10.31.0.1",
                        up=True,
                        rtt_seconds=0.0004,
                        loss_ratio=0.2,
                        method="icmp-unprivileged",
                    )
                ],
            )
        ),
        lan_hosts=LanHosts(
            counts=LanHostCounts(arp=12, snmp=10, agent=3, total=14, computers=9),
            subnets=["10.31.0.0/24"],
        ),
        snmp=[SnmpDevice(address="10.31.0.1", up=True, sys_name="sw1", arp_entries=12)],
        antivirus=AntivirusStatus(
            state="outdated",
            products=[
                AntivirusProduct(
                    name="Windows Defender",
                    source="securitycenter2",
                    state="outdated",
                    enabled=True,
                    signature_age_seconds=9 * 86400,
                )
            ],
        ),
    )
    text = render_report(report)
    row = _row(text, "10.31.0.1  ")
    assert row.split()[:2] == ["LAN", "10.31.0.1"]
    assert "0.40" in row and "20 %" in row and "icmp-unprivileged" in row
    assert "vai trò / role: máy dò / site probe" in text
    assert _row(text, "Số máy / Hosts:").endswith(" 14 (máy tính / computers: 9)")
    assert _row(text, "Theo nguồn / By source:").endswith(" ARP 12 · SNMP 10 · agent 3")
    assert "sw1 (10.31.0.1): ĐẠT / OK" in text
    assert "Diệt virus / Antivirus: chữ ký cũ / outdated" in text
    assert "Windows Defender (securitycenter2): chữ ký cũ / outdated, chữ ký 9.0 ngày" in text
    assert "Máy tính / Computer\n  không thu thập được / not collected" in text


def test_render_columns_line_up_with_vietnamese_text() -> None:
    """Column widths count characters on screen, not bytes or code points."""
    report = _report(
        networks=Networks(
            lan=NetworkStatus(
                configured=True,
                up=False,
                targets=[ProbeResult(kind="tcp", target="Máy chủ Sở", up=False, error="timeout")],
            )
        )
    )
    lines = render_report(report).splitlines()
    header = next(line for line in lines if line.startswith("Mạng / Network"))
    row = next(line for line in lines if "Máy chủ Sở" in line)
    assert row.index("tcp") == header.index("Kiểu / Kind")
    assert row.endswith("hết thời gian chờ / timeout")
    decoded = msgspec.json.decode(msgspec.json.encode(report), type=Report)
    assert render_report(decoded) == render_report(report)


def test_check_names_the_same_agent_as_the_daemon(tmp_path: Path) -> None:
    """A one-shot check reports the agent id the daemon keeps in its spool."""
    spool_path = tmp_path / "spool.db"
    spool = open_spool(spool_path, 10_000_000)
    daemon_id = spool.identity()
    spool.close()
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don/bang-lung\n"
        f"spool: {{path: {spool_path}}}\n"
        "inventory: {enabled: false}\nantivirus: {enabled: false}\npatches: {enabled: false}\n"
        "networks:\n  lan: {targets: [{kind: tcp, address: '127.0.0.1:9', timeout: 1s}]}\n",
        encoding="utf-8",
    )
    assert agent_id(load_config(config)) == daemon_id


# --- security of the agent's own settings and files ---------------------------------------


def test_check_refuses_plain_http_to_another_machine(tmp_path: Path, listener: int) -> None:
    config = host_config(tmp_path, listener)
    config.write_text(
        config.read_text() + 'collector: {url: "http://10.10.0.10:8080", token: abc}\n',
        encoding="utf-8",
    )
    result = agent("check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"Lỗi cấu hình / Configuration error: {config}: collector.url: "
        "'http://10.10.0.10:8080': gửi mã thông báo không mã hoá / would send"
    )


def test_check_warns_about_allowed_insecure_settings(tmp_path: Path, listener: int) -> None:
    """allow_insecure and a token file other users can read: `check` says so, in both
    languages, in its table (and on stderr, so --json stays pure JSON)."""
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n", encoding="utf-8")
    token.chmod(0o644)
    config = host_config(tmp_path, listener)
    config.write_text(
        config.read_text() + "collector: {url: 'http://10.10.0.10:8080', "
        f"allow_insecure: true, token_file: {token}}}\n"
        f"spool: {{path: {tmp_path / 'spool.db'}}}\ninventory: {{enabled: false}}\n",
        encoding="utf-8",
    )
    table = agent("check", "--config", str(config))
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if line.startswith("Cảnh báo")]
    assert lines == [
        "Cảnh báo / Warning: collector.url: mã thông báo và báo cáo gửi không mã hoá tới "
        "http://10.10.0.10:8080 / the token and reports travel unencrypted "
        "(allow_insecure: true); use https://",
        f"Cảnh báo / Warning: collector.token_file: tệp bí mật {token} để người khác đọc được "
        f"/ the secret file {token} is readable by other users; run: chmod 600 {token}",
    ]
    as_json = agent("check", "--config", str(config), "--json")
    assert as_json.returncode == 0
    json.loads(as_json.stdout)
    assert as_json.stderr.splitlines()[:2] == lines
    assert "s3cr3t-token" not in table.stdout + table.stderr + as_json.stderr


def test_run_creates_its_spool_and_log_owner_only(
    tmp_path: Path, listener: int, closed_port: int
) -> None:
    config = host_config(tmp_path, listener)
    spool, log = tmp_path / "state" / "spool.db", tmp_path / "agent.log"
    config.write_text(
        config.read_text()
        + f'collector: {{url: "http://127.0.0.1:{closed_port}", token: test-token}}\n'
        + f"spool: {{path: {spool}}}\nlog: {{file: {log}}}\ninventory: {{enabled: false}}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)], cwd=REPO
    )
    try:
        wait_for(lambda: log.exists() and "event=send.unreachable" in log.read_text(), 60)
        modes = {p.name: p.stat().st_mode & 0o777 for p in (spool.parent.iterdir())}
        modes[log.name] = log.stat().st_mode & 0o777
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert modes == {
        "spool.db": 0o600,
        "spool.db-wal": 0o600,
        "spool.db-shm": 0o600,
        "agent.log": 0o600,
    }

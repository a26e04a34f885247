"""``hatang-collector`` as a user runs it: exit codes, messages naming the key path, token
output contract (the token alone on the last line), never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.collector.conftest import DEMO_ORG, SITE, run_cli, write_config


def test_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("hatang-collector ")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"listen": {"prot": 1}},
            "test: listen: unknown key 'prot' (did you mean 'port'?)",
            id="unknown-key",
        ),
        pytest.param({"limits": {"max_body": "lots"}}, "limits.max_body", id="bad-size"),
        pytest.param({"window": {"up_ratio": 1.5}}, "window.up_ratio", id="ratio-range"),
        pytest.param(
            {"store": {"url": "postgresql://db:port/hatang"}},
            "store.url: not a valid PostgreSQL url",
            id="postgres-url",
        ),
        pytest.param({"store": {"url": "mysql://x"}}, "unsupported store url", id="bad-url"),
        pytest.param(
            {"listen": {"cert_file": "a.pem"}}, "set both cert_file and key_file", id="tls-half"
        ),
        pytest.param({"org": None}, "org", id="org-null"),
    ],
)
def test_config_errors_exit_2_naming_the_key(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    path = write_config(tmp_path, **overrides)
    path = path.rename(tmp_path / "test")
    proc = run_cli("token", "list", "--config", str(path))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("hatang-collector: test: ")


def test_missing_org_file_exits_2_naming_it(tmp_path: Path) -> None:
    path = write_config(tmp_path, org="khong-co.yaml")
    proc = run_cli("token", "create", "--config", str(path), "--site", SITE)
    assert proc.returncode == 2
    assert "khong-co.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_token_create_prints_the_token_alone_on_the_last_line(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    proc = run_cli("token", "create", "--config", str(path), "--site", SITE, "--note", "xã An Bình")
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.splitlines()[-1]
    assert token.startswith("hat_") and " " not in token and len(token) > 40
    listing = run_cli("token", "list", "--config", str(path))
    assert listing.returncode == 0
    assert SITE in listing.stdout and "xã An Bình" in listing.stdout
    assert token not in listing.stdout + listing.stderr
    secret = token.split("_", 2)[2]
    assert secret not in listing.stdout


def test_token_create_for_an_unknown_site_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    proc = run_cli("token", "create", "--config", str(path), "--site", "demo/khong-co")
    assert proc.returncode == 2
    assert "unknown site 'demo/khong-co'" in proc.stderr
    assert str(DEMO_ORG) in proc.stderr


def test_revoke_unknown_id_exits_1(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    proc = run_cli("token", "revoke", "--config", str(path), "abc123")
    assert proc.returncode == 1
    assert "no token with id 'abc123'" in proc.stderr


def test_usage_errors_exit_2() -> None:
    assert run_cli().returncode == 2
    assert run_cli("token", "create", "--config", "x.yaml").returncode == 2  # --site missing
    assert run_cli("frobnicate").returncode == 2


def test_serve_reports_a_busy_port_without_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, listen={"host": "127.0.0.1", "port": port})
        proc = run_cli("serve", "--config", str(path))
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr

"""The offline bundles (scripts/build-bundles.sh) resolve with no index and install.

Building downloads wheels for the target platforms from the package registry (through
pip's cache), so the tests are ``slow``; after the build nothing touches the network:
every install is ``--no-index``. Linux: ``install.sh --root`` into a test root (venv,
directories, the check on a loopback-only config, the systemd unit linked by
``systemctl --root``), the installed agent reporting to a real collector on loopback
until the site is up on ``/metrics``, then ``uninstall.sh``. Windows cannot run here:
pip resolves the bundle for ``win_amd64`` in a dry run, and every dependency marker is
evaluated for Windows against the wheels in the bundle (pip evaluates markers for this
machine).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.collector.conftest import SITE, CollectorProcess, free_port, run_cli, write_config
from tests.netns import wait_for
from tests.test_bundle_scripts import syntax_errors

REPO = Path(__file__).resolve().parents[1]
VERSION = "0.1.0"
BASE_PYTHON = str(getattr(sys, "_base_executable", None) or sys.executable)


def interpreter(version: str) -> str | None:
    """A working python{version} on this machine (PATH or pyenv), or None."""
    if sys.version_info[:2] == tuple(int(n) for n in version.split(".")):
        return BASE_PYTHON
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python{version}"), *sorted(pyenv.glob(f"{version}.*/bin/python3"))]
    for candidate in candidates:
        if candidate is None:
            continue
        probe = subprocess.run(
            [str(candidate), "-c", "import sys, venv; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(
            tuple(map(int, version.split(".")))
        ):
            return str(candidate)
    return None


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/build-bundles.sh"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "HATANG_PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == str(out)
    return out


def windows(bundles: Path) -> Path:
    return bundles / f"hatang-agent-{VERSION}-windows-x64"


def linux(bundles: Path) -> Path:
    return bundles / f"hatang-agent-{VERSION}-linux-x86_64"


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_bundles_have_their_parts_and_checksums(bundles: Path) -> None:
    win, lin = windows(bundles), linux(bundles)
    for name in ("install.ps1", "uninstall.ps1", "install.cmd", "uninstall.cmd", "README.txt"):
        assert (win / name).is_file(), name
    for name in ("install.sh", "uninstall.sh", "README.txt"):
        assert (lin / name).is_file(), name
        assert (lin / name).stat().st_mode & stat.S_IXUSR or name.endswith(".txt")
    for bundle in (win, lin):
        assert (bundle / "docs/install.md").is_file() and (bundle / "docs/cai-dat.md").is_file()
        check = subprocess.run(
            ["sha256sum", "--check", "--quiet", "SHA256SUMS"],
            cwd=bundle,
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    with zipfile.ZipFile(f"{win}.zip") as archive:
        assert f"{win.name}/wheels/hatang-{VERSION}-py3-none-any.whl" in archive.namelist()
    assert Path(f"{lin}.tar.gz").stat().st_size > 0


def test_windows_scripts_are_strict_and_readable_by_powershell_5(bundles: Path) -> None:
    """PowerShell 5.1 reads a BOM-less script in the ANSI code page: Vietnamese breaks."""
    for name in ("install.ps1", "uninstall.ps1"):
        raw = (windows(bundles) / name).read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf"), f"{name}: no UTF-8 BOM"
        assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""), f"{name}: not CRLF"
        assert syntax_errors(raw) == [], name  # as shipped: BOM and CRLF
        text = raw.decode("utf-8-sig")
        assert "Set-StrictMode -Version Latest" in text
        assert "$ErrorActionPreference = 'Stop'" in text
    readme = (windows(bundles) / "README.txt").read_bytes().decode("utf-8-sig")
    assert "Chuột phải vào install.cmd" in readme and "Right-click install.cmd" in readme
    assert f"hatang-agent {VERSION}" in readme


@pytest.mark.parametrize("python", ["3.11", "3.12"])
@pytest.mark.parametrize("requirement", ["hatang", "hatang[site-probe]"])
def test_windows_bundle_resolves_with_no_index(
    bundles: Path, tmp_path: Path, python: str, requirement: str
) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
            "--find-links", str(windows(bundles) / "wheels"), "--platform", "win_amd64",
            "--python-version", python, "--only-binary=:all:", "--target", str(tmp_path / "t"),
            "--report", str(tmp_path / "report.json"), requirement, "pywin32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Would install" in proc.stdout and "pywin32" in proc.stdout


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(name).decode("utf-8"))
    return message.get_all("Requires-Dist") or []


@pytest.mark.parametrize("python", ["3.11", "3.12"])
def test_windows_bundle_has_every_dependency_markers_ask_for_on_windows(
    bundles: Path, python: str
) -> None:
    """Walk hatang[site-probe]'s requirements with Windows markers (pip cannot)."""
    tag = f"cp{python.replace('.', '')}"
    wheels: dict[str, Path] = {}
    for wheel in (windows(bundles) / "wheels").glob("*.whl"):
        name, _, _, tags = parse_wheel_filename(wheel.name)
        if any(t.interpreter in (tag, "py3") or t.abi == "abi3" for t in tags):
            wheels[canonicalize_name(name)] = wheel
    environment = {
        "sys_platform": "win32",
        "platform_system": "Windows",
        "os_name": "nt",
        "platform_machine": "AMD64",
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    wanted = [("hatang", {"site-probe"})]
    seen: set[str] = set()
    missing: list[str] = []
    while wanted:
        name, extras = wanted.pop()
        key = canonicalize_name(name)
        if key in seen:
            continue
        seen.add(key)
        if key not in wheels:
            missing.append(name)
            continue
        for text in _metadata(wheels[key]):
            req = Requirement(text)
            marker: Marker | None = req.marker
            if marker is None or any(
                marker.evaluate({**environment, "extra": extra}) for extra in extras | {""}
            ):
                wanted.append((req.name, set(req.extras)))
    assert missing == []
    assert "pywin32" in seen  # the Windows service needs it


LOOPBACK_CONFIG = """\
site: demo/xa-an-binh
role: host
agent_id: bundle-test
interval: 2s
collector: {{url: "{collector}", token_file: {token}}}
spool: {{path: {spool}}}
inventory: {{enabled: false}}
antivirus: {{enabled: false}}
networks:
  lan: {{targets: [{{kind: tcp, address: "127.0.0.1:{port}", name: gateway}}]}}
  wan: {{targets: [{{kind: icmp, address: 127.0.0.1, count: 2}}]}}
"""


def site_up(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return 'hatang_site_up{site="demo/xa-an-binh"} 1.0' in text


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_linux_bundle_installs_offline_checks_and_reports_to_the_collector(
    bundles: Path, tmp_path: Path, listener: int, version: str
) -> None:
    """From the bundle to the office up on the collector's /metrics, all on loopback."""
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine")
    collector_dir = tmp_path / "collector"
    collector_dir.mkdir()
    port = free_port()
    collector = CollectorProcess(
        write_config(
            collector_dir,
            listen={"host": "127.0.0.1", "port": port},
            metrics={"refresh_interval": "1s", "min_refresh_interval": "0s"},
        ),
        port,
    )
    collector.start()
    try:
        _install_report_uninstall(bundles, tmp_path, listener, collector, python)
    finally:
        collector.stop()


def _install_report_uninstall(
    bundles: Path, tmp_path: Path, listener: int, collector: CollectorProcess, python: str
) -> None:
    created = run_cli("token", "create", "--config", str(collector.config_path), "--site", SITE)
    assert created.returncode == 0, created.stderr
    token = tmp_path / "token"
    token.write_text(created.stdout.splitlines()[-1])
    root = tmp_path / "root"
    config = tmp_path / "agent.yaml"
    config.write_text(
        LOOPBACK_CONFIG.format(
            spool=tmp_path / "spool.db", port=listener, collector=collector.url, token=token
        )
    )
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}
    proc = subprocess.run(
        [str(linux(bundles) / "install.sh"), "--root", str(root), "--config", str(config),
         "--python", python],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    agent = root / "opt/hatang/bin/hatang-agent"
    assert agent.is_file()
    # The check ran from the installed venv on the loopback config, and every network is up.
    assert "mọi mạng đều thông / every network is up" in out
    assert re.search(r"^LAN +gateway +tcp +ĐẠT / OK", out, re.MULTILINE), out
    for directory in ("etc/hatang", "var/lib/hatang", "var/log/hatang"):
        assert stat.S_IMODE((root / directory).stat().st_mode) == 0o750, directory
    assert stat.S_IMODE((root / "etc/hatang/agent.yaml").stat().st_mode) == 0o640
    unit = (root / "etc/systemd/system/hatang-agent.service").read_text()
    assert f"ExecStart={agent} run --config /etc/hatang/agent.yaml" in unit
    assert (root / "etc/systemd/system/multi-user.target.wants/hatang-agent.service").is_symlink()
    # Only the host role's dependencies: no scapy, no pysnmp, no aiohttp.
    installed = subprocess.run(
        [str(root / "opt/hatang/bin/python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "psutil==" in installed and "msgspec==" in installed
    assert not {"scapy", "pysnmp", "aiohttp"} & {line.split("==")[0] for line in installed.split()}

    # The installed agent, run as its unit would run it, makes the office up on /metrics.
    with (tmp_path / "agent.log").open("wb") as log:
        agent_proc = subprocess.Popen(
            [str(agent), "run", "--config", str(root / "etc/hatang/agent.yaml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: site_up(collector.url), timeout=60, interval=0.5)
    finally:
        agent_proc.send_signal(signal.SIGTERM)
        assert agent_proc.wait(timeout=30) == 0

    proc = subprocess.run(
        [str(linux(bundles) / "uninstall.sh"), "--root", str(root), "--purge"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (root / "opt/hatang").exists() and not (root / "etc/hatang").exists()
    assert not (root / "etc/systemd/system/hatang-agent.service").exists()


def test_linux_install_refuses_bad_options(bundles: Path, tmp_path: Path) -> None:
    install = str(linux(bundles) / "install.sh")
    for args, message in [
        (["--role", "router"], "--role must be host or site-probe"),
        (["--config", "a.yaml", "--code", "X"], "give either --config or --collector/--code"),
        (["--python", "/nonexistent/python3"], "Python not found"),
        (["--bogus"], "unknown option --bogus"),
    ]:
        proc = subprocess.run(
            [install, "--root", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr

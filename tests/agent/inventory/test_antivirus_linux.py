"""Linux antivirus detection against a real clamd with a signature database built here.

There is no internet for freshclam, so each test builds a small database itself (an MD5
``.hdb`` from ``sigtool --md5`` and a body-pattern ``.ndb``), writes a clamd.conf in a
temp dir and starts clamd for real. Containers (``.cvd``/``.cud``) are built with
``sigtool --build --unsigned`` so the header parser is checked against ClamAV's own.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AntivirusConfig
from agent.inventory.antivirus import linux
from agent.inventory.antivirus.command import run_command
from agent.inventory.antivirus.linux import (
    ParseError,
    parse_clamav_version,
    parse_clamd_conf,
    parse_cvd_header,
    query_clamd,
    scan_databases,
)
from agent.report import AntivirusProduct, AntivirusStatus
from tests.netns import wait_for

DAY = 86400
UTC = dt.UTC
needs_clamav = pytest.mark.skipif(
    shutil.which("clamd") is None or shutil.which("sigtool") is None,
    reason="ClamAV (clamd, sigtool) is not installed",
)

SAMPLE = b"hatang test sample: this file is flagged by the test database\n"


class Clamd:
    """A clamd with its own config, socket and database in a temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "db"
        self.db.mkdir()
        self.sample = root / "sample.txt"
        self.sample.write_bytes(SAMPLE)
        self.socket = root / "clamd.sock"
        self.conf = root / "clamd.conf"
        self.conf.write_text(
            "# written by the hatang test\n"
            f"DatabaseDirectory {self.db}\n"
            f"LocalSocket {self.socket}\n"
            "Foreground yes\n"
            f"User {os.environ.get('USER') or 'root'}\n"
            f"LogFile {root / 'clamd.log'}\n"
            f"PidFile {root / 'clamd.pid'}\n"
            f"TemporaryDirectory {root}\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def build_database(self) -> None:
        md5 = subprocess.run(
            ["sigtool", "--md5", str(self.sample)], capture_output=True, check=True
        ).stdout.decode()
        name = md5.strip().rsplit(":", 1)[0]
        (self.db / "hatang.hdb").write_text(f"{name}:Hatang.Test.Md5-1\n", encoding="ascii")
        (self.db / "hatang.ndb").write_text(
            f"Hatang.Test.Body-1:0:*:{b'flagged by the test database'.hex()}\n", encoding="ascii"
        )

    def config(self, **overrides: object) -> AntivirusConfig:
        return AntivirusConfig(clamav_config=str(self.conf), command_timeout=10.0, **overrides)  # type: ignore[arg-type]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["clamd", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        conf = parse_clamd_conf(self.conf.read_text())

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            return query_clamd(conf, "PING", 2.0) == "PONG"

        wait_for(ready, timeout=60, interval=0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def clamd(tmp_path: Path) -> Iterator[Clamd]:
    daemon = Clamd(tmp_path)
    try:
        yield daemon
    finally:
        daemon.stop()


def detect(config: AntivirusConfig) -> AntivirusStatus:
    return linux.detect(config)


def clamav(status: AntivirusStatus) -> AntivirusProduct:
    [product] = [p for p in status.products if p.name == "ClamAV"]
    return product


@pytest.mark.clamav
@needs_clamav
def test_real_clamd_protected_then_disabled_outdated_missing(clamd: Clamd) -> None:
    clamd.build_database()
    clamd.start()
    conf = parse_clamd_conf(clamd.conf.read_text())
    # The database is real: clamd flags the sample with our signature.
    reply = query_clamd(conf, f"SCAN {clamd.sample}", 30.0)
    assert reply is not None and "Hatang.Test" in reply and reply.endswith("FOUND")

    status = detect(clamd.config())
    product = clamav(status)
    assert status.state == "protected"
    assert (product.state, product.enabled, product.running, product.source) == (
        "protected",
        True,
        True,
        "clamav",
    )
    assert product.engine_version and product.engine_version[0].isdigit()
    assert product.signature_version == "2 local database files"
    assert product.signature_age_seconds is not None and product.signature_age_seconds < 3600
    assert "clamd answers on its socket" in (product.detail or "")

    clamd.stop()
    status = detect(clamd.config())
    assert status.state == "disabled"
    assert clamav(status).enabled is False
    assert "clamd is not running" in (clamav(status).detail or "")

    clamd.start()
    month_ago = dt.datetime.now(UTC).timestamp() - 30 * DAY
    for path in clamd.db.iterdir():
        os.utime(path, (month_ago, month_ago))
    status = detect(clamd.config())
    assert status.state == "outdated"
    assert clamav(status).signature_age_seconds == pytest.approx(30 * DAY, abs=600)
    # The same age is fresh under a 60-day policy.
    assert detect(clamd.config(max_signature_age=60 * DAY)).state == "protected"

    for path in clamd.db.iterdir():
        path.unlink()
    status = detect(clamd.config())
    assert status.state == "missing"
    assert f"no signature database in {clamd.db}" in (clamav(status).detail or "")


@pytest.mark.clamav
@needs_clamav
def test_database_dir_override_and_missing_directory(clamd: Clamd, tmp_path: Path) -> None:
    clamd.build_database()
    other = tmp_path / "elsewhere"
    other.mkdir()
    status = detect(clamd.config(clamav_database_dir=str(other)))
    assert status.state == "missing"
    status = detect(clamd.config(clamav_database_dir=str(tmp_path / "absent")))
    assert status.state == "missing"
    assert "cannot read" in (clamav(status).detail or "")


def _build_cud(workdir: Path, version: int) -> Path:
    """Build an unsigned container with ClamAV's own sigtool (no signing service needed)."""
    (workdir / "COPYING").write_text("test\n")
    (workdir / "daily.hdb").write_text(
        "269723bf9872726bbd834b22761f9f9e:17:Hatang.Test.Cud-1\n", encoding="ascii"
    )
    subprocess.run(
        [
            "sigtool",
            "--build=daily.cud",
            "--unsigned",
            f"--cvd-version={version}",
            "--no-cdiff",
            f"--datadir={workdir}",
        ],
        cwd=workdir,
        input=b"hatang\n",  # sigtool asks for the builder name
        capture_output=True,
        check=True,
        timeout=120,
    )
    return workdir / "daily.cud"


@pytest.mark.clamav
@needs_clamav
def test_container_header_matches_sigtool_info(tmp_path: Path) -> None:
    cud = _build_cud(tmp_path, 27100)
    header = parse_cvd_header(cud.read_bytes())
    info = subprocess.run(
        ["sigtool", f"--info={cud}"], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
    assert header.version == int(fields["Version"]) == 27100
    assert header.signatures == int(fields["Signatures"]) == 1
    assert header.functionality_level == int(fields["Functionality level"])
    assert header.builder == fields["Builder"] == "hatang"
    assert header.build_time.strftime("%d %b %Y %H:%M +0000") == fields["Build time"]


def test_cvd_header_in_the_documented_format() -> None:
    raw = (
        b"ClamAV-VDB:14 Nov 2023 08-28 -0500:27093:2045843:90:"
        b"0123456789abcdef0123456789abcdef:AbCdEf:raynman:1699968528"
    ).ljust(512, b" ")
    header = parse_cvd_header(raw + b"\x1f\x8b...")
    assert header.version == 27093
    assert header.signatures == 2045843
    assert header.functionality_level == 90
    assert header.builder == "raynman"
    assert header.build_time == dt.datetime.fromtimestamp(1699968528, UTC)
    # Without the unix-time field the text build time is used.
    old = b"ClamAV-VDB:14 Nov 2023 08-28 -0500:27093:2045843:90:md5:dsig:raynman"
    assert parse_cvd_header(old.ljust(512)).build_time == dt.datetime(
        2023, 11, 14, 13, 28, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x1f\x8b\x08\x00" + b"\0" * 508, id="gzip-without-header"),
        pytest.param(b"ClamAV-VDB:14 Nov 2023 08-28 -0500:abc:1:90", id="bad-version"),
        pytest.param(b"ClamAV-VDB:yesterday:27093:1:90", id="bad-time"),
        pytest.param(b"ClamAV-VDB:x", id="truncated"),
    ],
)
def test_bad_cvd_header_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_cvd_header(raw)


def test_scan_uses_container_build_time_and_newest_database(tmp_path: Path) -> None:
    header = b"ClamAV-VDB:01 Jan 2023 00-00 +0000:62:6647427:90:md5:dsig:builder:1672531200"
    (tmp_path / "main.cvd").write_bytes(header.ljust(512) + b"body")
    daily = b"ClamAV-VDB:14 Nov 2023 08-28 -0500:27093:2045843:90:md5:dsig:b:1699968528"
    (tmp_path / "daily.cld").write_bytes(daily.ljust(512))
    (tmp_path / "broken.cvd").write_bytes(b"garbage")
    (tmp_path / "local.ign2").write_text("ignored\n")  # an ignore list carries no signatures
    (tmp_path / "freshclam.dat").write_bytes(b"\0" * 16)
    scan = scan_databases(str(tmp_path))
    assert [d.name for d in scan.databases] == ["daily.cld", "main.cvd"]
    assert scan.newest is not None and scan.newest.name == "daily.cld"
    assert scan.newest.time == dt.datetime.fromtimestamp(1699968528, UTC)
    assert scan.version_text() == "daily:27093 main:62"
    assert scan.errors == ["broken.cvd: not a ClamAV database header (expected ClamAV-VDB:)"]


def test_parse_clamd_conf() -> None:
    conf = parse_clamd_conf(
        "# Comment\nExample\nLocalSocket /run/clamav/clamd.ctl\n"
        "DatabaseDirectory\t/srv/clamav\nTCPSocket 3310\nTCPAddr 127.0.0.1\n"
    )
    assert conf.database_dir == "/srv/clamav"
    assert conf.local_socket == "/run/clamav/clamd.ctl"
    assert (conf.tcp_socket, conf.tcp_addr) == (3310, ("127.0.0.1",))
    assert conf.example is True
    assert parse_clamd_conf("").database_dir == "/var/lib/clamav"


def test_parse_clamav_version() -> None:
    assert parse_clamav_version("ClamAV 1.4.6/27100/Tue Nov 21 09:32:10 2023") == ("1.4.6", 27100)
    assert parse_clamav_version("ClamAV 1.4.6") == ("1.4.6", None)
    assert parse_clamav_version("UNKNOWN COMMAND") == (None, None)


@pytest.fixture
def fake_kesl(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real process whose executable is named like Kaspersky's Linux daemon."""
    exe = tmp_path / "kesl"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_other_linux_product_found_by_its_process(fake_kesl: subprocess.Popen[bytes]) -> None:
    status = linux.detect(AntivirusConfig(clamav_config="/nonexistent/clamd.conf"))
    [kesl] = [p for p in status.products if p.source == "process"]
    assert kesl.name == "Kaspersky Endpoint Security for Linux"
    assert (kesl.vendor, kesl.enabled, kesl.running, kesl.state) == (
        "Kaspersky",
        True,
        True,
        "unknown",
    )
    assert "process kesl" in (kesl.detail or "")
    assert "update state not readable" in (kesl.detail or "")


def test_process_listing_failure_is_a_warning() -> None:
    def broken() -> list[object]:
        raise PermissionError("/proc is hidepid=2")

    status = linux.detect(
        AntivirusConfig(
            clamav_config="/nonexistent/clamd.conf", clamav_database_dir="/nonexistent"
        ),
        processes=broken,  # type: ignore[arg-type]
    )
    assert status.warnings == ["process: PermissionError: /proc is hidepid=2"]


def test_run_command_reports_failures_instead_of_raising(tmp_path: Path) -> None:
    missing = run_command([str(tmp_path / "no-such-tool")], 5)
    assert (missing.ok, missing.error) == (False, "not found")
    slow = run_command([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert slow.error == "timed out after 0.5s"
    failing = run_command([sys.executable, "-c", "import sys; sys.exit('bad things')"], 10)
    assert failing.returncode == 1 and failing.describe().endswith("exit status 1: bad things")
    utf16 = run_command(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write('Bật'.encode('utf-16'))"], 10
    )
    assert utf16.ok and utf16.stdout == "Bật"

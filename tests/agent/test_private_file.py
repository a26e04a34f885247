"""Owner-only files (credential, central cache): POSIX modes here, and the Windows ACL
decisions on recorded ``icacls`` output (only a real Windows runs icacls itself)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent.acl_windows import only_administrators, parse_icacls, protect_command
from agent.private_file import is_private, write_private

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"
PATH = r"C:\ProgramData\hatang\credential"


def test_write_private_is_owner_only_and_atomic(tmp_path: Path) -> None:
    target = tmp_path / "state" / "credential"
    old_umask = os.umask(0o000)  # even a permissive umask must not widen the mode
    try:
        write_private(target, b"secret-1\n")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"secret-1\n"
    assert os.stat(target).st_mode & 0o777 == 0o600 and is_private(target)
    target.chmod(0o644)
    write_private(target, b"secret-2\n")  # replaced whole, with the private mode again
    assert target.read_bytes() == b"secret-2\n" and is_private(target)
    assert [p.name for p in target.parent.iterdir()] == ["credential"]  # no temp file left


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "credential"
    write_private(target, b"old\n")
    with pytest.raises(TypeError):
        write_private(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["credential"]


def test_concurrent_writers_never_leave_a_half_file(tmp_path: Path) -> None:
    target = tmp_path / "central.json"
    bodies = [bytes([65 + i]) * 100_000 for i in range(4)]
    threads = [threading.Thread(target=write_private, args=(target, b)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in bodies


def test_icacls_command_grants_only_system_and_administrators_by_sid() -> None:
    assert protect_command(PATH) == [
        "icacls", PATH, "/inheritance:r", "/grant:r", "*S-1-5-18:(F)", "*S-1-5-32-544:(F)", "/q",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fixture", "protected"),
    [
        ("icacls_protected.txt", True),
        ("icacls_inherited.txt", False),  # a new file under ProgramData: Users may read it
        ("icacls_sids_vi.txt", True),  # SIDs printed, Vietnamese summary line
    ],
)
def test_icacls_output_is_judged(fixture: str, protected: bool) -> None:
    output = (FIXTURES / fixture).read_text(encoding="utf-8")
    entries = parse_icacls(output, PATH)
    assert entries and all(":" not in who for who, _ in entries)
    assert only_administrators(entries) is protected


def test_no_entries_is_not_protected() -> None:
    assert only_administrators(parse_icacls("", PATH)) is False

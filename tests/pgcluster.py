"""A real, throwaway PostgreSQL cluster for tests: initdb into a temp dir, Unix socket only.

No TCP listener (``listen_addresses = ''``): the cluster is reachable only through a socket
in its own directory, so parallel test runs never collide and nothing leaves the machine.
Run as root (CI), the cluster belongs to the ``postgres`` user, because PostgreSQL refuses
to run as root. ``fsync`` is off: the cluster is thrown away after the session, and the
store's durability contract (reply after COMMIT) does not depend on it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUPERUSER = "hatang"


def bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: $HATANG_PG_BINDIR, Debian's, or PATH."""
    candidates: list[str] = []
    if os.environ.get("HATANG_PG_BINDIR"):
        candidates.append(os.environ["HATANG_PG_BINDIR"])
    found = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(found, key=lambda p: int(Path(p).parent.name), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to own the cluster"
    return None


class Cluster:
    """One running cluster; ``url(db)`` gives an asyncpg/libpq url over its Unix socket."""

    def __init__(self) -> None:
        found = bindir()
        if found is None:
            raise RuntimeError(unavailable() or "no PostgreSQL binaries")
        self.bin = found
        self.dir = Path(tempfile.mkdtemp(prefix="ht-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        self.running = False

    def _run(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            args,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"},
            **self._as,
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {proc.stdout}{proc.stderr}{log}")

    def start(self, overrides: Mapping[str, str] | None = None) -> None:
        """initdb and start; ``overrides`` replace the test settings below (bench/scale.py
        turns fsync back on, so PostgreSQL is as durable as the SQLite store it is set
        against)."""
        reap_orphans()
        (self.dir / "owner.pid").write_text(str(os.getpid()), encoding="utf-8")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            **(overrides or {}),
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "start",
        )  # fmt: skip
        self.running = True

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and delete its files."""
        try:
            if self.running:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
                self.running = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, sql: str) -> None:
        """Run one SQL command as the superuser (outside any transaction)."""
        self._run(
            str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir),
            "-U", SUPERUSER, "-d", "postgres", "-c", sql,
        )  # fmt: skip

    def create_database(self, name: str) -> str:
        """A new empty database; returns its url."""
        self.psql(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dump(self, name: str) -> bytes:
        """``pg_dump`` of a database: everything it holds, as SQL text."""
        proc = subprocess.run(
            [str(self.bin / "pg_dump"), "-h", str(self.dir), "-U", SUPERUSER, "-d", name],
            capture_output=True,
            timeout=120,
            check=True,
        )
        return proc.stdout

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.dir}"


def reap_orphans() -> None:
    """Stop and delete clusters left by test sessions that were killed (their owner is gone).

    Clusters of sessions still running (other engineers' parallel runs) are left alone.
    """
    found = bindir()
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), "ht-pg-*")):
        try:
            owner = int(Path(folder, "owner.pid").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        data = Path(folder, "data")
        if found is not None and (data / "postmaster.pid").exists():
            subprocess.run(
                [str(found / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
                cwd=folder,
                **_owner_of(folder),
            )
        shutil.rmtree(folder, ignore_errors=True)


def _owner_of(folder: str) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    st = os.stat(folder)
    return {"user": st.st_uid, "group": st.st_gid, "extra_groups": []}

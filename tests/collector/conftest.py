"""Collector fixtures: a config on a fresh SQLite file, the app over real loopback HTTP,
tokens, and reports built by the agent's own code (``agent.sections.make_report``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.config import parse_config as parse_agent_config
from agent.report import (
    AntivirusStatus,
    HostInventory,
    Interface,
    Networks,
    NetworkStatus,
    ProbeResult,
    Report,
)
from agent.sections import make_report
from collector import api
from collector.app import SERVER_KWARGS, create_app
from collector.config import CollectorConfig, parse_config
from collector.store import Store
from collector.store.sqlite import SQLiteStore
from tests import pgcluster
from tests.netns import wait_for

REPO = Path(__file__).resolve().parents[2]
DEMO_ORG = REPO / "configs" / "org.demo.yaml"
SITE = "demo/xa-an-binh"
OTHER_SITE = "demo/xa-binh-minh"
_seq = itertools.count(1)


def collector_config(tmp_path: Path, **overrides: Any) -> CollectorConfig:
    """A config on a fresh database in ``tmp_path``; ``overrides`` are top-level keys."""
    data: dict[str, Any] = {
        "org": str(DEMO_ORG),
        "store": {"url": f"sqlite:///{tmp_path}/collector.db", "busy_timeout": "2s"},
        "listen": {"host": "127.0.0.1", "port": 0},
        "metrics": {"refresh_interval": "1h", "min_refresh_interval": "0s"},
    }
    data.update(overrides)
    return parse_config(data, "test.yaml", tmp_path)


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    """Write a config file for CLI/subprocess tests; return its path."""
    data: dict[str, Any] = {
        "org": str(DEMO_ORG),
        "store": {"url": "sqlite:collector.db"},
        "listen": {"host": "127.0.0.1", "port": 0},
    }
    data.update(overrides)
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def agent_report(
    site: str = SITE,
    *,
    agent_id: str = "pc-01",
    seq: int | None = None,
    observed_at: dt.datetime | None = None,
    lan_up: bool = True,
    internet_up: bool = True,
    hostname: str = "may-01",
    antivirus: str | None = "protected",
    target: str = "10.41.0.1",
) -> Report:
    """A report as the agent builds it (same config loader, same report assembly).

    ``target`` is what the report claims was probed: a hostile agent may send anything.
    """
    config = parse_agent_config(
        {
            "site": site,
            "interval": "60s",
            "networks": {
                "lan": {"targets": [{"kind": "icmp", "address": "10.41.0.1"}]},
                "internet": {"targets": [{"kind": "tcp", "address": "10.41.0.2:443"}]},
            },
        }
    )
    networks = Networks(
        lan=NetworkStatus(
            configured=True,
            up=lan_up,
            rule="any",
            targets=[
                ProbeResult(
                    kind="icmp",
                    target=target,
                    up=lan_up,
                    rtt_seconds=0.002 if lan_up else None,
                    loss_ratio=0.0 if lan_up else 1.0,
                    error=None if lan_up else "timeout",
                )
            ],
        ),
        internet=NetworkStatus(
            configured=True,
            up=internet_up,
            rule="any",
            targets=[
                ProbeResult(
                    kind="tcp",
                    target="10.41.0.2:443",
                    up=internet_up,
                    rtt_seconds=0.02 if internet_up else None,
                    error=None if internet_up else "refused",
                )
            ],
        ),
    )
    results: dict[Any, Any] = {
        "networks": networks,
        "host": HostInventory(
            hostname=hostname,
            os="Linux",
            interfaces=[Interface(name="eth0", mac="02:00:00:00:00:01", ipv4=["10.41.0.10"])],
        ),
    }
    if antivirus is not None:
        results["antivirus"] = (AntivirusStatus(state=antivirus), None)  # type: ignore[arg-type]
    return make_report(
        config,
        agent_id=agent_id,
        seq=next(_seq) if seq is None else seq,
        observed_at=observed_at or dt.datetime.now(dt.UTC),
        results=results,
    )


@pytest.fixture
def config(tmp_path: Path) -> CollectorConfig:
    return collector_config(tmp_path)


MakeClient = Callable[[CollectorConfig], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def make_client(
    aiohttp_server: Callable[..., Any], aiohttp_client: Callable[..., Any]
) -> MakeClient:
    """Factory: the collector app for a config, served as in production, on loopback port 0."""

    async def make(config: CollectorConfig) -> TestClient[web.Request, web.Application]:
        server = await aiohttp_server(create_app(config), **SERVER_KWARGS)
        client: TestClient[web.Request, web.Application] = await aiohttp_client(server)
        return client

    return make


@pytest.fixture
async def client(
    make_client: MakeClient, config: CollectorConfig
) -> TestClient[web.Request, web.Application]:
    """The collector app on a real loopback socket (port 0)."""
    return await make_client(config)


def store_of(client: TestClient[web.Request, web.Application]) -> Store:
    assert client.app is not None
    return client.app[api.STORE]


async def new_token(client: TestClient[web.Request, web.Application], site: str = SITE) -> str:
    _, token = await store_of(client).create_token(site, "test")
    return token


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgcluster.Cluster]:
    """A real PostgreSQL cluster for the session (Unix socket in a temp dir), always removed."""
    reason = pgcluster.unavailable()
    if reason:
        pytest.skip(reason)
    cluster = pgcluster.Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(pg_cluster: pgcluster.Cluster) -> Iterator[str]:
    """A fresh, empty database in the session's cluster, dropped after the test."""
    name = f"hatang_test_{next(_databases)}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        pg_cluster.drop_database(name)


@dataclass(frozen=True)
class StoreBackend:
    """One implementation of the Store Protocol, and what the shared suite needs to look
    beneath it (raw SQL, the bytes it keeps)."""

    name: str
    location: str  # the SQLite file, or the PostgreSQL url
    cluster: pgcluster.Cluster | None = None

    def make(self, **kwargs: Any) -> Store:
        kwargs.setdefault("busy_timeout", 1.0)
        if self.name == "sqlite":
            return SQLiteStore(self.location, **kwargs)
        from collector.store.postgres import PostgresStore

        return PostgresStore(self.location, **kwargs)

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run SQL beside the store (its own connection, committed)."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.location)
            try:
                rows = conn.execute(sql).fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        import asyncpg

        pg = await asyncpg.connect(self.location)
        try:
            return [tuple(r) for r in await pg.fetch(sql)]
        finally:
            await pg.close()

    def raw_bytes(self) -> bytes:
        """Everything the backend keeps: SQLite's files, or a pg_dump of the database."""
        if self.name == "sqlite":
            path = Path(self.location)
            return b"".join(
                p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)
            )
        assert self.cluster is not None
        return self.cluster.dump(urlsplit(self.location).path.lstrip("/"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StoreBackend:
    """Each Store implementation in turn, on a fresh database (the shared store suite)."""
    if request.param == "sqlite":
        return StoreBackend("sqlite", str(tmp_path / "store.db"))
    url: str = request.getfixturevalue("postgres_url")
    return StoreBackend("postgres", url, request.getfixturevalue("pg_cluster"))


@pytest.fixture
async def store(store_backend: StoreBackend) -> AsyncIterator[Store]:
    s = store_backend.make()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CollectorProcess:
    """``hatang-collector serve`` as a real subprocess on a loopback port."""

    def __init__(self, config_path: Path, port: int) -> None:
        self.config_path, self.port = config_path, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = config_path.parent / "collector.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "collector", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_for(self._ready, timeout=60, interval=0.1)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"collector exited: {self.log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=30)


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """Factory: start a collector subprocess on a free port; stopped after the test."""
    started: list[CollectorProcess] = []

    def start(**overrides: Any) -> CollectorProcess:
        port = free_port()
        listen = {"host": "127.0.0.1", "port": port}
        path = write_config(tmp_path, listen=listen, **overrides)
        proc = CollectorProcess(path, port)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m collector ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


async def promtool_check_metrics(promtool: str, text: str) -> None:
    """Assert ``promtool check metrics`` accepts an exposition without a remark."""
    proc = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


async def eventually(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], within: float = 10.0
) -> Any:
    """Await ``probe()`` until ``done`` says yes (a token change made by another process
    counts within a documented delay, ``store.sqlite.TOKENS_POLL_SECONDS``); its last value."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if done(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


def now_minus(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)

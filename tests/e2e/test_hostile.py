"""Access control and overload with real processes: ``hatang-collector serve`` and
``hatang-agent run`` as subprocesses on 127.0.0.1.

- A token revoked with ``token revoke`` is refused on the running agent's next send
  (403 ``token_revoked``); its reports stay queued and nothing more is stored.
- An agent whose token belongs to another site gets 403 ``site_mismatch``; a token for a
  site removed from the org file gets 403 ``unknown_site``; both keep their reports
  queued, and while they keep trying the store digest (``store verify``) does not move.
- Many concurrent clients beyond ``limits.max_inflight`` get 429 with ``Retry-After``;
  honouring it, every report is stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agent.report import Batch, encode
from collector.store.sqlite import StoreCheck, verify_file
from tests.agent.test_daemon import Agent, queued
from tests.collector.conftest import DEMO_ORG, OTHER_SITE, SITE, agent_report, free_port
from tests.netns import wait_for
from tests.receiver import agent_config, write_config

REPO = Path(__file__).resolve().parents[2]
REMOVED_SITE = "demo/xa-da-sap-nhap"


class Collector:
    """``python -m collector serve`` on a free loopback port, with its config and log."""

    def __init__(self, workdir: Path, **overrides: Any) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "collector.yaml"
        data: dict[str, Any] = {
            "org": str(DEMO_ORG),
            "store": {"url": "sqlite:collector.db"},
            "listen": {"host": "127.0.0.1", "port": self.port},
            "metrics": {"refresh_interval": "1h"},
            **overrides,
        }
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")
        self.db = workdir / "collector.db"
        self.log = workdir / "collector.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "collector", *args, "--config", str(config or self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )

    def token(self, site: str, config: Path | None = None) -> tuple[str, str]:
        """(token id, token) from ``token create``."""
        done = self.cli("token", "create", "--site", site, config=config)
        assert done.returncode == 0, done.stderr
        first, *_, last = done.stdout.strip().splitlines()
        return first.split()[2], last

    def start(self) -> Collector:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "collector", "serve", "--config", str(self.config)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_for(self._listening, timeout=60, interval=0.1)
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"collector exited: {self.text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def check(self) -> StoreCheck:
        """``store verify`` in-process: integrity, report count and digest (read-only)."""
        check = verify_file(self.db)
        assert check.ok, check.problems
        return check

    def stored_ids(self) -> set[str]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
            return {row[0] for row in conn.execute("SELECT id FROM reports")}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture
def processes() -> Iterator[list[Collector | Agent]]:
    """Everything started by a test; stopped at its end."""
    started: list[Collector | Agent] = []
    yield started
    for proc in reversed(started):
        if isinstance(proc, Agent):
            proc.close()
        else:
            proc.stop()


def start_agent(
    workdir: Path, name: str, url: str, token: str, site: str, listener: int, **collector: Any
) -> tuple[Agent, Path]:
    """One ``hatang-agent run`` with its own spool; returns the agent and its spool path."""
    home = workdir / name
    home.mkdir()
    data = agent_config(home, urls=[url], token=token, tcp_port=listener, collector=collector)
    data["site"] = site
    config = write_config(home / "agent.yaml", data)
    return Agent(config, home / "agent.log"), Path(data["spool"]["path"])


def events(agent: Agent, name: str) -> list[str]:
    return [line for line in agent.text().splitlines() if f"event={name}" in line]


def test_revoked_foreign_and_removed_site_tokens_are_refused_and_reports_stay_queued(
    tmp_path: Path, listener: int, processes: list[Collector | Agent]
) -> None:
    collector = Collector(tmp_path)
    # A token issued while the org still had a commune that a later org file dropped.
    old_org = yaml.safe_load(DEMO_ORG.read_text(encoding="utf-8"))
    old_org["units"].append(
        {"id": REMOVED_SITE, "name": "Xã Đã Sáp Nhập", "level": "commune", "parent": "demo"}
    )
    (tmp_path / "org.old.yaml").write_text(yaml.safe_dump(old_org, allow_unicode=True))
    old_config = tmp_path / "collector.old.yaml"
    old_config.write_text(
        yaml.safe_dump({"org": "org.old.yaml", "store": {"url": "sqlite:collector.db"}})
    )
    _, removed_token = collector.token(REMOVED_SITE, config=old_config)
    revoked_id, revoked_token = collector.token(SITE)
    _, site_token = collector.token(SITE)
    processes.append(collector.start())
    url = f"http://127.0.0.1:{collector.port}"

    # Phase 1: the agent whose token will be revoked delivers normally.
    revoked, revoked_spool = start_agent(tmp_path, "revoked", url, revoked_token, SITE, listener)
    processes.append(revoked)
    wait_for(lambda: len(collector.stored_ids()) >= 2, timeout=60)

    # Phase 2: revoke it while it runs; start an agent reporting for another site with a
    # token of SITE, and one whose token's site left the org tree.
    done = collector.cli("token", "revoke", revoked_id)
    assert done.returncode == 0, done.stderr
    foreign, foreign_spool = start_agent(tmp_path, "foreign", url, site_token, OTHER_SITE, listener)
    removed, removed_spool = start_agent(
        tmp_path, "removed", url, removed_token, REMOVED_SITE, listener
    )
    processes += [foreign, removed]
    refused = {"token_revoked": revoked, "site_mismatch": foreign, "unknown_site": removed}

    def all_refused() -> bool:
        return all(
            any(f"error={code}" in line for line in events(agent, "send.auth_refused"))
            for code, agent in refused.items()
        )

    wait_for(all_refused, timeout=60)
    before = collector.check()
    stored_before = collector.stored_ids()
    attempts = {code: len(events(agent, "send.auth_refused")) for code, agent in refused.items()}

    # Each agent keeps trying (and keeps being refused) while its queue grows.
    def retried() -> bool:
        return all(
            len(events(agent, "send.auth_refused")) >= attempts[code] + 3
            for code, agent in refused.items()
        ) and all(len(queued(s)) >= 3 for s in (revoked_spool, foreign_spool, removed_spool))

    wait_for(retried, timeout=60)
    after = collector.check()
    assert after.digest == before.digest, "a refused request changed the store"
    assert collector.stored_ids() == stored_before
    for spool in (foreign_spool, removed_spool):
        assert not {i for i, _ in queued(spool)} & stored_before  # nothing of theirs stored
    for code, agent in refused.items():
        line = next(x for x in events(agent, "send.auth_refused") if f"error={code}" in x)
        assert "level=error" in line and "queued_kept=True" in line, line
        assert "status=403" in line, line
        assert "Traceback" not in agent.text()
    assert "revoked" in events(revoked, "send.auth_refused")[-1]
    # The collector logged each refusal as a warning naming the reason, with no token.
    log = collector.text()
    for reason in ("revoked", "site_mismatch", "unknown_site"):
        assert f"reason={reason}" in log
    for token in (revoked_token, site_token, removed_token):
        assert token not in log and all(token not in a.text() for a in refused.values())


def _hold(port: int, token: str) -> socket.socket:
    """An ingest whose body never finishes (until the collector's body_timeout)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        (
            "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            'Content-Length: 5000\r\n\r\n{"reports": ['
        ).encode()
    )
    return sock


async def _clients(port: int, token: str, n: int) -> tuple[list[int], list[str], int]:
    """``n`` concurrent agents posting one report each, retrying after 429 as told.

    Returns the first answer of each, the Retry-After values seen, and how many ended 200.
    """
    url = f"http://127.0.0.1:{port}/api/v1/reports"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    first: list[int] = []
    retry_after: list[str] = []
    start = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> int:
        body = encode(Batch(reports=[agent_report(agent_id=f"pc-{os.urandom(4).hex()}")]))
        await start.wait()
        for attempt in range(60):
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if attempt == 0:
                    first.append(resp.status)
                if resp.status != 429:
                    return resp.status
                retry_after.append(resp.headers["Retry-After"])
                # As the agent does: at least Retry-After, plus jitter so they spread out.
                await asyncio.sleep(float(resp.headers["Retry-After"]) + random.uniform(0, 2))
        return 429

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(n)]
        await asyncio.sleep(0.2)
        start.set()
        results = await asyncio.gather(*tasks)
    return first, retry_after, sum(1 for s in results if s == 200)


def test_overload_answers_429_with_retry_after_and_every_report_lands_once(
    tmp_path: Path, processes: list[Collector | Agent]
) -> None:
    """Eight stalled uploads fill ``max_inflight: 8``; forty agents arrive at once: each
    gets 429 with Retry-After, /healthz still answers, the stalled ones are cut off by
    ``body_timeout`` (408), and after retrying all forty reports are stored once."""
    collector = Collector(tmp_path, limits={"max_inflight": 8, "body_timeout": "2s"})
    _, token = collector.token(SITE)
    processes.append(collector.start())
    held = [_hold(collector.port, token) for _ in range(8)]
    try:
        wait_for(
            lambda: "hatang_ingest_inflight_requests 8.0" in _get(collector.port, "/metrics")[1],
            timeout=30,
        )
        first, retry_after, ok = asyncio.run(_clients(collector.port, token, 40))
        status, health = _get(collector.port, "/healthz")
        assert status == 200, health
    finally:
        answers = []
        for sock in held:
            sock.settimeout(30)
            try:
                answers.append(sock.recv(65536))
            except OSError:
                answers.append(b"")
            sock.close()
    assert first.count(429) >= 36, first  # a slot may free up (408) while they arrive
    assert all(int(v) > 0 for v in retry_after)
    assert ok == 40
    assert collector.check().reports == 40
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
    assert set(first) <= {200, 429}


def _get(port: int, path: str) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def test_collector_log_has_no_traceback_for_unparseable_requests(
    tmp_path: Path, processes: list[Collector | Agent]
) -> None:
    """Oversized headers or smuggling attempts: a 400 and one short log line, not a
    traceback per request (which would let anyone flood the log)."""
    collector = Collector(tmp_path)
    processes.append(collector.start())
    for bad in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n",
        b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", collector.port), timeout=30) as sock:
            sock.sendall(bad)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    wait_for(lambda: collector.text().count("event=http.bad_request") >= 2, timeout=30)
    assert "Traceback" not in collector.text()
    assert _get(collector.port, "/healthz")[0] == 200
    json.loads(_get(collector.port, "/healthz")[1])

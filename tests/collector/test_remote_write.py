"""Late reports into Prometheus: the sender against a stub receiver, hostile remote_write
config, and the whole path against the real Debian ``prometheus`` (remote-write receiver
and out-of-order window on), through the real ingest API with back-dated observations.

Timeline of the real-Prometheus test (agent interval 1 s, so the scrape horizon is 3 s and
the grace refresh + scrape interval is 2 s): the site's WAN goes down while it still
reports on time (scraped 0), then the site is cut off from the collector for 14 s (the
agent keeps measuring: WAN 0, LAN 1, dedicated 1), then its spool is delivered (late,
back-dated) and on-time reports resume with the WAN restored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession, web

from agent.report import (
    Batch,
    Networks,
    NetworkStatus,
    ProbeResult,
    Report,
    encode,
    new_report_id,
)
from collector import api
from collector.app import SENDER, SERVER_KWARGS, create_app, late_rule
from collector.late import LateRule
from collector.remote_write import HEADERS, Sender, backoff, decode
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import collector_config, free_port, run_cli, write_config

PROMETHEUS = shutil.which("prometheus")
SITE = "demo/xa-an-binh"
DEADLINE = 60.0


def report(
    observed: dt.datetime, *, wan: bool, seq: int, site: str = SITE, agent: str = "probe-1"
) -> Report:
    """A site probe's report with LAN, WAN and dedicated checks (interval 1 s)."""

    def status(up: bool, target: str) -> NetworkStatus:
        result = ProbeResult(
            kind="icmp",
            target=target,
            up=up,
            rtt_seconds=0.01 if up else None,
            loss_ratio=0.0 if up else 1.0,
        )
        return NetworkStatus(configured=True, up=up, rule="any", targets=[result])

    return Report(
        id=new_report_id(),
        agent_id=agent,
        site=site,
        role="site-probe",
        seq=seq,
        observed_at=observed,
        interval_seconds=1.0,
        agent_version="test",
        networks=Networks(
            lan=status(True, "10.41.0.1"),
            wan=status(wan, "10.10.0.10"),
            dedicated=status(True, "10.200.0.5"),
        ),
    )


async def post(session: ClientSession, url: str, token: str, reports: list[Report]) -> None:
    body = encode(Batch(reports=reports, sent_at=dt.datetime.now(dt.UTC)))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with session.post(f"{url}/api/v1/reports", data=body, headers=headers) as reply:
        assert reply.status == 200, await reply.text()


# ------------------------------------------------------------------ the stub receiver


class Stub:
    """A remote-write receiver on loopback answering a scripted list of statuses."""

    def __init__(self, script: list[tuple[int, dict[str, str]]]) -> None:
        self.script = script
        self.requests: list[tuple[dict[str, str], list[Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), decode(body)))
        status, headers = self.script.pop(0) if self.script else (204, {})
        return web.Response(status=status, headers=headers)


async def late_store(tmp_path: Path, reports: int) -> SQLiteStore:
    """A store with ``reports`` late reports of one site queued (each 7 samples + marker)."""
    store = SQLiteStore(tmp_path / "q.db")
    store.late_rule = LateRule(horizon_intervals=3, grace_seconds=2)
    await store.open()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    batch = [report(start + dt.timedelta(seconds=i), wan=False, seq=i + 1) for i in range(reports)]
    await store.ingest(SITE, [(r, encode(r)) for r in batch])
    return store


async def test_sender_retries_5xx_and_429_then_drops_a_400_with_a_count(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    store = await late_store(tmp_path, 3)
    try:
        queued = (await store.rw_stats()).pending
        assert queued == 3 * 11  # marker, site_up, lan_hosts, 3 network_up, 3 loss, 2 rtt
        stub = Stub([(500, {}), (429, {"Retry-After": "7"}), (204, {})])
        app = web.Application()
        app.router.add_post("/api/v1/write", stub.handle)
        server = await aiohttp_server(app)
        config = collector_config(
            tmp_path, remote_write={"url": f"http://127.0.0.1:{server.port}/api/v1/write"}
        ).remote_write
        assert config is not None
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        async with ClientSession() as session:
            sender = Sender(store, config, session, sleep=sleep, rng=lambda: 0.0)
            assert await sender.step() == queued  # 500: released, backoff
            assert await sender.step() == queued  # 429: released, Retry-After honoured
            assert await sender.step() == queued  # 204: acknowledged
            assert await sender.step() == 0  # nothing left: acknowledged rows never resent
            assert slept == [backoff(1, lambda: 0.0), 7.0]
            assert len(stub.requests) == 3
            # Every attempt carried the whole batch, with the remote-write 1.0 headers.
            for headers, series in stub.requests:
                for name, value in HEADERS.items():
                    assert headers[name] == value
                assert sum(len(samples) for _, samples in series) == queued
                for labels, samples in series:
                    assert list(labels) == sorted(labels)
                    assert [t for t, _ in samples] == sorted(t for t, _ in samples)
            assert sender.stats.retries["http_5xx"] == 1
            assert sender.stats.retries["http_429"] == 1
            stats = await store.rw_stats()
            assert stats.pending == 0 and stats.counts["sent"] == queued

            # A 400: the receiver refuses the content; no retry, dropped with a count.
            more = [report(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), wan=True, seq=99)]
            await store.ingest(SITE, [(r, encode(r)) for r in more])
            stub.script = [(400, {})]
            assert await sender.step() == 12  # the WAN up: its rtt too
            assert await sender.step() == 0
            assert len(stub.requests) == 4 and slept == [0.25, 7.0]
            stats = await store.rw_stats()
            assert stats.counts["http_4xx"] == 12 and stats.pending == 0
    finally:
        await store.close()


async def test_a_collector_restart_loses_nothing_and_resends_nothing(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    store = await late_store(tmp_path, 3)
    stub = Stub([])
    app = web.Application()
    app.router.add_post("/w", stub.handle)
    server = await aiohttp_server(app)
    config = collector_config(
        tmp_path, remote_write={"url": f"http://127.0.0.1:{server.port}/w", "batch": 20}
    ).remote_write
    assert config is not None
    async with ClientSession() as session:
        assert await Sender(store, config, session).step() == 20
        await store.close()  # the collector stops with 13 samples still queued
        store = SQLiteStore(tmp_path / "q.db")
        await store.open()
        try:
            assert (await store.rw_stats()).pending == 13
            restarted = Sender(store, config, session)
            assert await restarted.step() == 13
            assert await restarted.step() == 0
        finally:
            await store.close()
    sent = [
        (tuple(sorted(labels.items())), ts)
        for _, body in stub.requests
        for labels, samples in body
        for ts, _v in samples
    ]
    assert len(stub.requests) == 2 and len(sent) == len(set(sent)) == 33


async def test_samples_older_than_max_sample_age_are_counted_not_sent(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    store = await late_store(tmp_path, 2)
    try:
        stub = Stub([])
        app = web.Application()
        app.router.add_post("/w", stub.handle)
        server = await aiohttp_server(app)
        config = collector_config(
            tmp_path,
            remote_write={"url": f"http://127.0.0.1:{server.port}/w", "max_sample_age": "5m"},
        ).remote_write
        assert config is not None
        async with ClientSession() as session:
            assert await Sender(store, config, session).step() == 0
        assert stub.requests == []
        stats = await store.rw_stats()
        assert stats.counts["too_old"] == 22 and stats.pending == 0
        assert await store.report_count() == 2  # the reports stay (evidence)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("remote_write", "message"),
    [
        ({"url": "ftp://prometheus:9090/"}, "remote_write.url: 'ftp://prometheus:9090/' is not"),
        ({"url": "http://[::1"}, "remote_write.url: not a valid url"),
        (
            {"url": "http://127.0.0.1:9090/api/v1/write", "timeout": "-5s"},
            "remote_write.timeout: '-5s' is negative",
        ),
        (
            {
                "url": "http://127.0.0.1:9090/api/v1/write",
                "basic_auth": {"username": "hatang", "password_file": "missing.txt"},
            },
            "remote_write.basic_auth.password_file: cannot read",
        ),
        ({"url": "http://127.0.0.1:9090/api/v1/write", "batch": 0}, "remote_write.batch"),
        (
            {"url": "http://127.0.0.1:9090/api/v1/write", "headers": {"Content-Type": "x"}},
            "remote_write.headers: Content-Type is set by the remote-write protocol",
        ),
    ],
    ids=["scheme", "unparsable", "negative-timeout", "password-file", "batch", "header"],
)
def test_hostile_remote_write_config_exits_2_naming_the_key(
    tmp_path: Path, remote_write: dict[str, Any], message: str
) -> None:
    path = write_config(tmp_path, remote_write=remote_write)
    result = run_cli("store", "verify", "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "collector.yaml: " + message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday", "--to", "2026-05-02"], "--from: 'yesterday' is not an ISO date"),
        (["--from", "2026-05-02", "--to", "2026-05-01"], "--from: must be before --to"),
    ],
    ids=["not-a-time", "reversed"],
)
def test_hostile_backfill_arguments_exit_2_naming_the_option(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = write_config(tmp_path)
    result = run_cli("backfill", "--config", str(path), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_example_config_documents_remote_write(tmp_path: Path) -> None:
    """The commented remote_write block of the example config, uncommented, loads."""
    example = Path(__file__).resolve().parents[2] / "configs" / "collector.example.yaml"
    lines = example.read_text(encoding="utf-8").splitlines()
    start = lines.index("# remote_write:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else line[1:])
    data = yaml.safe_load("\n".join(block))
    for key in ("password_file",):
        (tmp_path / data["remote_write"]["basic_auth"][key]).write_text("secret\n")
    tls = data["remote_write"].pop("tls")
    assert set(tls) >= {"ca_file", "cert_file", "key_file", "insecure_skip_verify"}
    config = collector_config(tmp_path, remote_write=data["remote_write"])
    assert config.remote_write is not None and config.remote_write.batch == 2000


# ------------------------------------------------------------- the real Prometheus


class Prometheus:
    """Debian's prometheus with the remote-write receiver and an out-of-order window,
    scraping the collector on ``collector_port`` every second."""

    def __init__(self, workdir: Path, collector_port: int) -> None:
        assert PROMETHEUS is not None
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "storage": {"tsdb": {"out_of_order_time_window": "1h"}},
                    "scrape_configs": [
                        {
                            "job_name": "hatang-collector",
                            "static_configs": [{"targets": [f"127.0.0.1:{collector_port}"]}],
                        }
                    ],
                }
            ),
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert PROMETHEUS is not None
        log = (self.workdir / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-remote-write-receiver",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def log_tail(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    async def query(self, session: ClientSession, path: str, **params: str) -> Any:
        async with session.get(f"{self.url}/api/v1/{path}", params=params) as reply:
            body = await reply.json()
            assert body["status"] == "success", body
            return body["data"]["result"]

    async def ready(self, session: ClientSession) -> None:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                async with session.get(f"{self.url}/-/ready") as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, self.log_tail()
            await asyncio.sleep(0.2)


def needs_prometheus(test: Any) -> Any:
    """Mark a test that starts the real Prometheus (skipped where it is not installed)."""
    skip = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus (Debian package) missing")
    return pytest.mark.prometheus(skip(test))


@pytest.fixture(scope="module")
def collector_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, collector_port: int
) -> Iterator[Prometheus]:
    """One Prometheus for the module (both tests use it; the second stops it a while)."""
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), collector_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def collector(
    tmp_path: Path, aiohttp_server: Any, collector_port: int, prometheus: Prometheus
) -> AsyncIterator[tuple[str, web.Application]]:
    config = collector_config(
        tmp_path,
        metrics={"refresh_interval": "1s", "min_refresh_interval": "0s"},
        remote_write={
            "url": f"{prometheus.url}/api/v1/write",
            "timeout": "2s",
            "scrape_interval": "1s",
        },
    )
    assert late_rule(config) is not None
    app = create_app(config)
    server = await aiohttp_server(app, port=collector_port, **SERVER_KWARGS)
    app[SENDER].poll = 0.1
    yield f"http://127.0.0.1:{server.port}", app


async def until(check: Any, what: str, prometheus: Prometheus) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{prometheus.log_tail()}"
        await asyncio.sleep(0.25)


def series_by(result: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for series in result:
        out.setdefault(series["metric"][key], []).append(series)
    return out


@needs_prometheus
async def test_a_cut_site_reaches_prometheus_history_at_its_observation_times(
    collector: tuple[str, web.Application], prometheus: Prometheus
) -> None:
    url, app = collector
    _token_id, token = await app[api.STORE].create_token(SITE)
    seq = iter(range(1, 10_000))
    async with ClientSession() as session:
        await prometheus.ready(session)
        # On time: WAN up for 3 s, then down for 3 s (scraped as it happens).
        for wan in [True] * 3 + [False] * 3:
            await post(
                session, url, token, [report(dt.datetime.now(dt.UTC), wan=wan, seq=next(seq))]
            )
            await asyncio.sleep(1.0)
        cut_start = time.time()
        # Cut off from the collector: the agent measures into its spool.
        spool = []
        for _i in range(14):
            spool.append(report(dt.datetime.now(dt.UTC), wan=False, seq=next(seq)))
            await asyncio.sleep(1.0)
        cut_end = time.time()
        # The scraped series of the cut, before the spool arrives (the "before" picture).
        window = {"start": f"{cut_start:.3f}", "end": f"{cut_end:.3f}", "step": "1"}
        before = await prometheus.query(
            session, "query_range", query=f'hatang_network_up{{site="{SITE}"}}', **window
        )
        # Restored: the spool is delivered (back-dated), then on-time reports, WAN up.
        await post(session, url, token, spool)
        for _i in range(3):
            await post(
                session, url, token, [report(dt.datetime.now(dt.UTC), wan=True, seq=next(seq))]
            )
            await asyncio.sleep(1.0)

        async def drained() -> bool:
            stats = await app[api.STORE].rw_stats()  # type: ignore[attr-defined]
            return stats.pending == 0 and stats.counts.get("sent", 0) > 0

        await until(drained, "the queue to drain", prometheus)
        # The pushed stretch starts once the scrape could no longer show the last fresh
        # observation: horizon 3 s + grace 2 s after it (the one rule).
        pushed_from = spool[0].observed_at.timestamp() + 5.5
        pushed_to = spool[-1].observed_at.timestamp()
        pushed = {"start": f"{pushed_from:.3f}", "end": f"{pushed_to:.3f}", "step": "1"}
        query = f'hatang_network_up{{site="{SITE}"}}'
        after = await prometheus.query(session, "query_range", query=query, **pushed)
        by_network = series_by(after, "network")
        assert set(by_network) == {"lan", "wan", "dedicated"}, after
        steps = int(pushed_to - pushed_from) + 1
        for network, expected in (("wan", "0"), ("lan", "1"), ("dedicated", "1")):
            values: dict[float, list[str]] = {}
            for series in by_network[network]:
                for ts, value in series["values"]:
                    values.setdefault(ts, []).append(value)
            # No gap, no conflicting duplicate: one value at every step, the measured one.
            assert len(values) >= steps, (network, values)
            assert all(v == [expected] for v in values.values()), (network, values)
        marker = await prometheus.query(
            session, "query_range", query=f'hatang_backfilled_report{{site="{SITE}"}}', **pushed
        )
        assert marker and all(v == "1" for _, v in marker[0]["values"])
        site_up = await prometheus.query(
            session, "query_range", query=f'hatang_site_up{{site="{SITE}",instance=""}}', **pushed
        )
        assert site_up and all(v == "1" for _, v in site_up[0]["values"])
        # From the WAN cut to now (restore included), scraped and pushed never both hold a
        # value of a series at one step: the takeover marker ends the pushed stretch.
        whole = {**window, "start": f"{cut_start - 4:.3f}", "end": f"{time.time():.3f}"}
        everything = await prometheus.query(
            session, "query_range", query=f"count by (network) ({query})", **whole
        )
        assert all(v == "1" for s in everything for _, v in s["values"]), everything
        # The scraped series are unchanged by the push: the cut's scrape is what it was,
        # and the present is the scrape's (WAN up again).
        scraped_after = await prometheus.query(
            session,
            "query_range",
            query=f'hatang_network_up{{site="{SITE}",instance!=""}}',
            **window,
        )
        assert scraped_after == [s for s in before if s["metric"].get("instance")]
        now = await prometheus.query(
            session, "query", query=f'hatang_network_up{{site="{SITE}",network="wan"}}'
        )
        assert [(s["metric"].get("instance", ""), s["value"][1]) for s in now] == [
            (f"127.0.0.1:{url.rsplit(':', 1)[1]}", "1")
        ]


@needs_prometheus
async def test_prometheus_down_the_queue_holds_then_everything_arrives_once(
    collector: tuple[str, web.Application], prometheus: Prometheus
) -> None:
    url, app = collector
    site = "demo/xa-binh-minh"
    _token_id, token = await app[api.STORE].create_token(site)
    sender = app[SENDER]
    prometheus.stop()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    late = [
        report(start + dt.timedelta(seconds=i), wan=i % 2 == 0, seq=i + 1, site=site)
        for i in range(40)
    ]
    async with ClientSession() as session:
        await post(session, url, token, late)

        async def held() -> bool:
            failed = sender.stats.retries["network"]
            return failed > 0 and sender.stats.queue.pending > 0

        await until(held, "failed pushes with a pending queue", prometheus)
        metrics = await (await session.get(f"{url}/metrics")).text()
        pending = [
            ln for ln in metrics.splitlines() if ln.startswith("hatang_remote_write_pending")
        ]
        assert pending and float(pending[0].split()[-1]) > 0, pending
        queued = sender.stats.queue.pending
        prometheus.start()
        await prometheus.ready(session)
        sender.wake.set()

        async def drained() -> bool:
            return sender.stats.queue.pending == 0 and sender.stats.queue.counts.get("sent", 0)

        await until(drained, "the queue to drain", prometheus)
        assert sender.stats.queue.counts["sent"] == queued  # each row acknowledged once
        counted = await prometheus.query(
            session,
            "query",
            query=f'count_over_time(hatang_backfilled_report{{site="{site}"}}[30m])',
        )
        assert counted and counted[0]["value"][1] == "40", counted
        wan = await prometheus.query(
            session,
            "query",
            query=f'sum_over_time(hatang_network_up{{site="{site}",network="wan"}}[30m])',
        )
        assert wan[0]["value"][1] == "20"  # every other observation had the WAN up


async def test_the_queue_on_both_backends_two_replicas_claim_disjoint_rows(
    store_backend: Any,
) -> None:
    """Late reports are queued in the ingest transaction; two replicas (two stores on one
    database) claiming at once never hold the same row; acknowledged rows are never
    claimed again; released ones are."""
    stores = [store_backend.make(), store_backend.make()]
    for store in stores:
        store.late_rule = LateRule(horizon_intervals=3, grace_seconds=2)
        await store.open()
    one, two = stores
    try:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        batch = [report(start + dt.timedelta(seconds=i), wan=False, seq=i + 1) for i in range(4)]
        await one.ingest(SITE, [(r, encode(r)) for r in batch])
        await two.ingest(SITE, [(r, encode(r)) for r in batch])  # a replay adds nothing
        assert (await one.rw_stats()).pending == 44
        a, b = await asyncio.gather(one.rw_claim("a", 30, 60.0, 0), two.rw_claim("b", 30, 60.0, 0))
        keys_a = {(s, t) for s, t, _, _ in a.samples}
        keys_b = {(s, t) for s, t, _, _ in b.samples}
        assert not keys_a & keys_b and len(keys_a | keys_b) == 44
        assert await one.rw_finish("a", "sent") == len(keys_a)
        assert await two.rw_finish("b", "retry") == len(keys_b)
        again = await one.rw_claim("c", 100, 60.0, 0)
        assert {(s, t) for s, t, _, _ in again.samples} == keys_b
        stats = await two.rw_stats()
        assert stats.counts["sent"] == len(keys_a) and stats.pending == len(keys_b)
    finally:
        for store in stores:
            await store.close()


async def test_remote_write_metrics_come_from_the_table_and_pass_promtool(
    tmp_path: Path, make_client: Any
) -> None:
    """With remote write on, /metrics carries the sender's families as METRICS says
    (the receiver here is a closed port: the failures are counted)."""
    from prometheus_client.parser import text_string_to_metric_families

    from collector.metrics import SPECS
    from collector.remote_write import REMOTE_WRITE_METRICS
    from tests.collector.conftest import promtool_check_metrics

    config = collector_config(
        tmp_path, remote_write={"url": f"http://127.0.0.1:{free_port()}/api/v1/write"}
    )
    client = await make_client(config)
    text = await (await client.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in REMOTE_WRITE_METRICS:
        spec = SPECS[name]
        assert spec.scope == "registry" and families[name].type == spec.type
        for sample in families[name].samples:
            assert set(sample.labels) == set(spec.labels)
    dropped = {s.labels["reason"] for s in families["hatang_remote_write_dropped_samples"].samples}
    assert dropped == {"too_old", "queue_full", "http_4xx"}
    if PROMTOOL is not None:
        await promtool_check_metrics(PROMTOOL, text)


def test_with_remote_write_the_scrape_shows_only_fresh_observations() -> None:
    """A site whose newest observation is older than the horizon has no observation
    series in the scrape (its moments are the push's); without remote write it keeps
    showing the latest observation however old."""
    from collector.indicators import IndicatorSettings, build_snapshot
    from collector.metrics import emit
    from collector.org import load_org
    from collector.store import AgentState
    from tests.collector.conftest import DEMO_ORG

    org = load_org(DEMO_ORG)
    now = dt.datetime.now(dt.UTC)

    def agent(age: float) -> AgentState:
        seen = now - dt.timedelta(seconds=age)
        return AgentState(
            site=SITE,
            agent_id="probe-1",
            role="site-probe",
            interval_seconds=60.0,
            first_seen=seen,
            last_observed_at=seen,
            last_received_at=seen,
            reports_received=1,
            spool_dropped=0,
            latest=report(seen, wan=True, seq=1),
            host=None,
            antivirus=None,
            firewall=None,
            lan_hosts=None,
            snmp=None,
            last_effective_at=seen,
        )

    def network_up(fresh_only: bool, age: float) -> list[tuple[str, ...]]:
        settings = IndicatorSettings(fresh_observations_only=fresh_only)
        snap = build_snapshot(org, [], settings, now, [agent(age)], [], {}, [])

        class Source:
            snapshot = snap
            failures = 0
            refreshes = 0
            last_duration_seconds = None

        out: list[tuple[str, ...]] = []
        emit(
            Source(),
            lambda name, labels, _v: (
                out.append(labels) if name == "hatang_network_up" and labels[0] == SITE else None
            ),
        )
        return out

    assert len(network_up(True, 100)) == 3  # 100 s < 3 x 60 s: fresh, scraped
    assert network_up(True, 200) == []  # older than the horizon: the push's
    assert len(network_up(False, 200)) == 3  # remote write off: unchanged


PROMTOOL = shutil.which("promtool")


@pytest.mark.prometheus
@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package) not installed")
async def test_backfill_pushes_the_recent_part_and_writes_the_old_part_for_promtool(
    tmp_path: Path, prometheus: Prometheus
) -> None:
    """``hatang-collector backfill``: stored reports of a range, the part inside
    max_sample_age by remote write into the real Prometheus, the older part into an
    OpenMetrics file that the real promtool turns into TSDB blocks."""
    site = "demo/so-tttt"
    store = SQLiteStore(tmp_path / "collector.db")
    await store.open()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old = [
        report(now - dt.timedelta(minutes=40, seconds=-i), wan=False, seq=i + 1, site=site)
        for i in range(5)
    ]
    recent = [
        report(now - dt.timedelta(minutes=5, seconds=-i), wan=True, seq=i + 10, site=site)
        for i in range(5)
    ]
    await store.ingest(site, [(r, encode(r)) for r in old + recent])
    await store.close()
    path = write_config(
        tmp_path,
        remote_write={"url": f"{prometheus.url}/api/v1/write", "max_sample_age": "20m"},
    )
    out = tmp_path / "old.om"
    start = (now - dt.timedelta(hours=1)).isoformat()
    end = (now - dt.timedelta(minutes=1)).isoformat()
    without = run_cli("backfill", "--config", str(path), "--from", start, "--to", end)
    assert without.returncode == 2 and "--openmetrics: " in without.stderr, without.stderr
    result = run_cli(
        "backfill", "--config", str(path), "--from", start, "--to", end, "--openmetrics", str(out)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    per_report = 12  # marker, site_up, lan_hosts, 3 x network_up and loss, rtt of the up ones
    markers = per_report  # one staleness marker at --to per series pushed
    assert int(result.stdout.splitlines()[-1]) == 5 * 11 + 5 * per_report + markers
    async with ClientSession() as session:
        await prometheus.ready(session)
        counted = await prometheus.query(
            session,
            "query",
            query=f'count_over_time(hatang_backfilled_report{{site="{site}"}}[30m])',
        )
        assert counted and counted[0]["value"][1] == "5", counted
    blocks = tmp_path / "blocks"
    made = await asyncio.to_thread(
        subprocess.run,
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(out), str(blocks)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    (blocks / "wal").mkdir()  # `tsdb dump` opens the directory as a TSDB, WAL included
    dump = await asyncio.to_thread(
        subprocess.run,
        [PROMTOOL, "tsdb", "dump", str(blocks)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dump.returncode == 0, dump.stderr
    wan = [
        ln
        for ln in dump.stdout.splitlines()
        if "hatang_network_up" in ln and 'network="wan"' in ln and site in ln
    ]
    assert len(wan) == 5 and all(ln.split()[-2] == "0" for ln in wan), dump.stdout[-2000:]
    first = int(old[0].observed_at.timestamp() * 1000)
    assert sorted(int(ln.split()[-1]) for ln in wan)[0] == first

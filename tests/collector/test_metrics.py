"""HatangCollector on a per-test registry: values come from the Snapshot, hostile label
values stay bounded, and what is unknown is absent rather than zero. The Exposition that
serves /metrics yields the same samples, renders once per snapshot, gzips as one member;
a bad store row is left out and counted instead of failing the snapshot."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import sqlite3
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.report import NetworkStatus, ProbeResult, encode
from collector.indicators import Snapshot
from collector.metrics import (
    MAX_LABEL_LENGTH,
    MAX_TARGETS_PER_NETWORK,
    METRICS,
    SNAPSHOT_METRICS,
    SPECS,
    Exposition,
    HatangCollector,
    ReservedNames,
    accepts_gzip,
    label_value,
)
from collector.targets import load_plan
from tests.collector.test_indicators import (
    BAC_KAN,
    BANG_LUNG,
    DEMO,
    NOW,
    make_agent,
    report,
    snapshot,
    window,
)
from tests.conftest import REPO


@dataclass
class StaticSource:
    snapshot: Snapshot
    failures: int = 0
    refreshes: int = 1
    last_duration_seconds: float | None = 0.25


def registry_for(snap: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(HatangCollector(StaticSource(snap)))
    return registry


def test_units_without_agents_have_site_up_zero_and_info() -> None:
    registry = registry_for(snapshot(DEMO))
    labels = {"site": "demo/xa-an-binh", "name": "Xã An Bình", "level": "commune", "parent": "demo"}
    assert registry.get_sample_value("hatang_site_info", labels) == 1
    assert registry.get_sample_value("hatang_site_up", {"site": "demo/xa-an-binh"}) == 0
    # No data is not down: one state of three, all three series present.
    states = {
        state: registry.get_sample_value(
            "hatang_site_state", {"site": "demo/xa-an-binh", "state": state}
        )
        for state in ("reporting", "silent", "never_reported")
    }
    assert states == {"reporting": 0, "silent": 0, "never_reported": 1}
    province = {"site": "demo", "name": "Tỉnh Demo", "level": "province", "parent": ""}
    assert registry.get_sample_value("hatang_site_info", province) == 1
    # Unknown is absent, not zero.
    assert (
        registry.get_sample_value(
            "hatang_site_last_report_timestamp_seconds", {"site": "demo/xa-an-binh"}
        )
        is None
    )
    assert (
        registry.get_sample_value(
            "hatang_indicator_ratio", {"indicator": "computers_per_official", "level": "commune"}
        )
        is None
    )
    # Units without agents are counted, as not attaining.
    assert (
        registry.get_sample_value(
            "hatang_indicator_ratio", {"indicator": "lan", "level": "commune"}
        )
        == 0
    )
    assert (
        registry.get_sample_value(
            "hatang_indicator_units", {"indicator": "lan", "level": "commune", "state": "no_data"}
        )
        == 3
    )


def test_site_values_and_indicators() -> None:
    agents = [
        make_agent(
            BANG_LUNG,
            "probe",
            role="site-probe",
            up={"lan": True, "internet": False},
            av="protected",
            spool_dropped=4,
        ),
        make_agent(BANG_LUNG, "pc", av="outdated"),
    ]
    # The dead-letter and reset counts come from each agent's newest report.
    agents[0].latest.spool_rejected, agents[0].latest.spool_resets = 2, 1
    agents[1].latest.spool_rejected = 3
    plans = [load_plan(REPO / "configs" / "targets" / "bac-kan-2012.yaml")]
    snap = snapshot(BAC_KAN, agents, [window(BANG_LUNG, "dedicated", 97)], plans=plans)
    reg = registry_for(snap)
    s = {"site": BANG_LUNG}
    assert reg.get_sample_value("hatang_site_up", s) == 1
    assert reg.get_sample_value("hatang_site_last_report_timestamp_seconds", s) == NOW.timestamp()
    assert reg.get_sample_value("hatang_network_up", {**s, "network": "lan"}) == 1
    assert reg.get_sample_value("hatang_network_up", {**s, "network": "internet"}) == 0
    assert reg.get_sample_value("hatang_network_up", {**s, "network": "wan"}) is None
    target = {**s, "network": "lan", "target": "10.17.0.1"}
    assert reg.get_sample_value("hatang_probe_rtt_seconds", target) == 0.012
    assert reg.get_sample_value("hatang_probe_loss_ratio", target) == 0.0
    assert reg.get_sample_value("hatang_antivirus_hosts", {**s, "state": "protected"}) == 1
    assert reg.get_sample_value("hatang_antivirus_hosts", {**s, "state": "outdated"}) == 1
    assert reg.get_sample_value("hatang_antivirus_hosts", {**s, "state": "missing"}) == 0
    assert reg.get_sample_value("hatang_lan_hosts", {**s, "source": "agent"}) == 2
    assert reg.get_sample_value("hatang_site_spool_dropped_reports", s) == 4
    assert reg.get_sample_value("hatang_site_spool_rejected_reports", s) == 5
    assert reg.get_sample_value("hatang_site_spool_resets", s) == 1
    ded = {"indicator": "dedicated_network", "level": "commune"}
    assert reg.get_sample_value("hatang_indicator_ratio", ded) == pytest.approx(1 / 51)
    assert reg.get_sample_value("hatang_indicator_numerator", ded) == 1
    assert reg.get_sample_value("hatang_indicator_denominator", ded) == 51
    goal = {**ded, "plan": "bac-kan-2012"}
    assert reg.get_sample_value("hatang_indicator_goal_ratio", goal) == 0.6
    # The plan's commune goal says "reaches and is used": reachable, but no use is known.
    assert reg.get_sample_value("hatang_indicator_goal_measured_ratio", goal) == 0
    rule = {**goal, "rule": "reachable_and_used"}
    assert reg.get_sample_value("hatang_indicator_goal_rule_info", rule) == 1
    assert reg.get_sample_value("hatang_indicator_goal_deadline_year", goal) == 2015
    assert reg.get_sample_value("hatang_indicator_window_seconds") == 86400
    assert reg.get_sample_value("hatang_snapshot_refresh_failures_total") == 0


def test_goals_without_a_number_expose_no_goal_ratio() -> None:
    plans = [load_plan(REPO / "configs" / "targets" / "ca-mau-2013.yaml")]
    reg = registry_for(snapshot(BAC_KAN, plans=plans))
    labels = {"indicator": "internet", "level": "commune", "plan": "ca-mau-2013"}
    assert reg.get_sample_value("hatang_indicator_goal_ratio", labels) is None
    assert reg.get_sample_value("hatang_indicator_goal_deadline_year", labels) == 2014


def test_label_value_bounds() -> None:
    assert label_value("10.0.0.1:443") == "10.0.0.1:443"
    assert label_value('a"b\nc\\d') == 'a"b c\\d'
    long_a, long_b = "x" * 10_000 + "a", "x" * 10_000 + "b"
    assert len(label_value(long_a)) == MAX_LABEL_LENGTH
    assert label_value(long_a) != label_value(long_b)


def hostile_snapshot() -> Snapshot:
    """A site whose probe reports hostile target names, and too many of them."""
    targets = [
        ProbeResult(
            kind="http",
            target='https://x/"}\n# HELP evil\nhatang_site_up{site="y"} 1',
            up=True,
            rtt_seconds=0.1,
            loss_ratio=0.0,
        ),
        ProbeResult(kind="http", target="https://" + "a" * 10_000, up=True, rtt_seconds=0.2),
        ProbeResult(kind="http", target="https://" + "a" * 9_999 + "b", up=True, rtt_seconds=0.3),
        ProbeResult(kind="dns", target="\\\x00\t\r\u2028 tab", up=False, loss_ratio=1.0),
    ] + [
        ProbeResult(kind="icmp", target=f"10.17.9.{i}", up=True, rtt_seconds=0.001)
        for i in range(40)
    ]
    agent = make_agent(BANG_LUNG, "probe", role="site-probe", av="protected")
    latest = agent.latest
    latest.networks.internet = NetworkStatus(configured=True, up=True, rule="any", targets=targets)
    plans = [load_plan(REPO / "configs" / "targets" / "bac-kan-2012.yaml")]
    return snapshot(BAC_KAN, [agent], plans=plans)


def test_hostile_targets_stay_bounded_and_parseable() -> None:
    text = generate_latest(registry_for(hostile_snapshot())).decode("utf-8")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    rtt = [s for s in families["hatang_probe_rtt_seconds"].samples if s.labels["site"] == BANG_LUNG]
    internet = [s for s in rtt if s.labels["network"] == "internet"]
    assert len(internet) <= MAX_TARGETS_PER_NETWORK
    assert all(len(s.labels["target"]) <= MAX_LABEL_LENGTH for s in internet)
    assert len({s.labels["target"] for s in internet}) == len(internet)
    # The injected "sample" stayed inside a label value.
    ups = [s for s in families["hatang_site_up"].samples if s.labels["site"] == "y"]
    assert ups == []


def test_every_family_comes_from_the_table() -> None:
    text = generate_latest(registry_for(hostile_snapshot())).decode("utf-8")
    specs = {spec.name: spec for spec in METRICS}
    for family in text_string_to_metric_families(text):
        spec = specs[family.name]
        assert family.type == spec.type
        for sample in family.samples:
            assert tuple(sample.labels) == spec.labels or set(sample.labels) == set(spec.labels)


def test_describe_lets_the_registry_refuse_duplicates() -> None:
    registry = registry_for(snapshot(DEMO))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(HatangCollector(StaticSource(snapshot(DEMO))))


def test_collect_does_no_io_and_reads_the_current_snapshot() -> None:
    source = StaticSource(snapshot(DEMO))
    registry = CollectorRegistry()
    registry.register(HatangCollector(source))
    assert registry.get_sample_value("hatang_site_up", {"site": "demo/so-tttt"}) == 0
    source.snapshot = snapshot(DEMO, [make_agent("demo/so-tttt", "a")])
    assert registry.get_sample_value("hatang_site_up", {"site": "demo/so-tttt"}) == 1
    assert (
        dt.datetime.fromtimestamp(
            registry.get_sample_value("hatang_snapshot_timestamp_seconds") or 0, dt.UTC
        )
        == NOW
    )


# ------------------------------------------------------- Exposition: what /metrics serves


def samples(text: str) -> dict[str, tuple[str, set[tuple[str, frozenset[tuple[str, str]], float]]]]:
    """Family name -> (type, its samples as (name, labels, value))."""
    return {
        f.name: (f.type, {(s.name, frozenset(s.labels.items()), s.value) for s in f.samples})
        for f in text_string_to_metric_families(text)
    }


def self_registry() -> tuple[CollectorRegistry, Counter]:
    """A registry like the app's: the collector's own metrics, METRICS names reserved."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ReservedNames())
    received = Counter("hatang_reports_received", "Reports stored.", registry=registry)
    return registry, received


@pytest.mark.parametrize(
    "snap", [hostile_snapshot, lambda: snapshot(DEMO)], ids=["hostile", "demo"]
)
def test_exposition_serves_exactly_the_collector_samples(snap: Callable[[], Snapshot]) -> None:
    """The fast text and prometheus_client's rendering of the same samples agree."""
    source = StaticSource(snap(), failures=2)
    registry, received = self_registry()
    received.inc(7)
    text = b"".join(Exposition(source, registry).body()).decode("utf-8")
    served = samples(text)
    reference = CollectorRegistry()
    reference.register(HatangCollector(source))
    expected = samples(generate_latest(reference).decode("utf-8"))
    assert {k: v for k, v in served.items() if k in SPECS} == expected
    assert served["hatang_reports_received"][1] == {
        ("hatang_reports_received_total", frozenset(), 7)
    }
    assert served["hatang_snapshot_refresh_failures"][1] == {
        ("hatang_snapshot_refresh_failures_total", frozenset(), 2)
    }


def test_exposition_renders_once_per_snapshot() -> None:
    source = StaticSource(snapshot(DEMO))
    registry, received = self_registry()
    exposition = Exposition(source, registry)
    first = b"".join(exposition.body())
    received.inc()
    second = b"".join(exposition.body())
    assert exposition.renders == 1
    assert b"hatang_reports_received_total 0.0" in first
    assert b"hatang_reports_received_total 1.0" in second  # own metrics are live per scrape
    source.snapshot = snapshot(DEMO, [make_agent("demo/so-tttt", "a")])
    assert b'hatang_site_up{site="demo/so-tttt"} 1.0' in b"".join(exposition.body())
    assert exposition.renders == 2
    source.failures += 1  # a failed refresh keeps the snapshot but shows in the count
    assert b"hatang_snapshot_refresh_failures_total 1.0" in b"".join(exposition.body())
    assert exposition.renders == 3


async def test_prepared_render_is_served_and_replaces_the_old_one() -> None:
    """``prepare`` renders in a worker thread, once for concurrent callers; the next body
    is served from it, and a new snapshot's render replaces the old one."""
    source = StaticSource(snapshot(DEMO))
    registry, _ = self_registry()
    exposition = Exposition(source, registry)
    await asyncio.gather(*(exposition.prepare() for _ in range(3)))  # concurrent scrapes
    assert (exposition.renders, exposition.render_thread != threading.get_ident()) == (1, True)
    first = b"".join(exposition.body())
    await exposition.prepare()  # nothing changed: nothing to render
    assert exposition.renders == 1
    source.snapshot = snapshot(DEMO, [make_agent("demo/so-tttt", "a")])
    await exposition.prepare()
    assert exposition.renders == 2 and exposition.render_thread != threading.get_ident()
    second = b"".join(exposition.body())
    assert exposition.renders == 2
    assert b'hatang_site_up{site="demo/so-tttt"} 1.0' in second
    assert b'hatang_site_up{site="demo/so-tttt"} 1.0' not in first


def test_gzip_body_is_one_member_equal_to_the_plain_body() -> None:
    source = StaticSource(hostile_snapshot())
    registry, received = self_registry()
    exposition = Exposition(source, registry)
    for step in range(3):
        received.inc()
        packed = b"".join(exposition.body(gzip=True))
        plain = b"".join(exposition.body())
        inflater = zlib.decompressobj(wbits=31)  # one member, as most scrapers read it
        assert inflater.decompress(packed) == plain and inflater.eof and not inflater.unused_data
        assert f"hatang_reports_received_total {step + 1}.0".encode() in plain
    assert exposition.renders == 1


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.5", True),
        ("x-gzip", True),
        ("gzip; q=1.0", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=abc", False),
        ("identity", False),
        ("gzipx, br", False),
        ("*", False),
        ("", False),
    ],
)
def test_accept_encoding(header: str, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


def test_the_app_registry_refuses_a_self_metric_named_like_the_table() -> None:
    registry, _ = self_registry()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Gauge("hatang_site_up", "clash", registry=registry)


async def _app_client(aiohttp_client: Any, tmp_path: Path) -> Any:
    from collector.app import SERVER_KWARGS, create_app
    from collector.config import parse_config

    config = parse_config(
        {
            "listen": {"host": "127.0.0.1", "port": 0},
            "store": {"url": "sqlite:collector.db"},
            "org": str(REPO / "configs" / "org.demo.yaml"),
        },
        "collector.yaml",
        tmp_path,
    )
    return await aiohttp_client(create_app(config), server_kwargs=SERVER_KWARGS)


async def test_metrics_endpoint_gzip_plain_and_head(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await _app_client(aiohttp_client, tmp_path)
    plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.status == 200
    assert plain.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in plain.headers
    text = await plain.text()
    assert 'hatang_site_up{site="demo/xa-an-binh"} 0.0' in text
    assert "hatang_http_requests_total" in text or "hatang_collector_build_info" in text

    packed = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert packed.status == 200 and packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"]
    raw = await packed.read()
    assert int(packed.headers["Content-Length"]) == len(raw)
    families = samples(gzip.decompress(raw).decode("utf-8"))
    snapshot_names = {spec.name for spec in SNAPSHOT_METRICS}
    assert families.keys() >= snapshot_names - {"hatang_snapshot_refresh_duration_seconds"}

    head = await client.head("/metrics")
    assert head.status == 200 and await head.read() == b""


# ------------------------------------------------------- a bad store row costs only itself


async def test_a_bad_store_row_is_skipped_and_counted(tmp_path: Path) -> None:
    """A report with an invalid agent_id written straight into the database (and a damaged
    section) used to fail every refresh; now they are left out and counted."""
    from collector.snapshot import SnapshotBuilder
    from collector.store.sqlite import SQLiteStore

    path = tmp_path / "collector.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        now = dt.datetime.now(dt.UTC)
        for site, agent in (("demo/xa-an-binh", "pc-1"), ("demo/so-tttt", "pc-2")):
            rep = report(site, agent, when=now, lan=True)
            await store.ingest(site, [(rep, encode(rep))])
        bad = report("demo/xa-binh-minh", "pc-3", when=now, lan=True)
        body = encode(bad).decode().replace('"pc-3"', '"bad id/with spaces"')
        with sqlite3.connect(path, timeout=30) as conn:
            conn.execute(
                "INSERT INTO reports (id, site, agent_id, seq, observed_at, effective_at,"
                " received_at, content_hash, body) VALUES (?, ?, ?, 1, ?, ?, ?, 'x', ?)",
                (bad.id, bad.site, "pc-3", now.timestamp(), now.timestamp(), now.timestamp(), body),
            )
            conn.execute(
                "INSERT INTO agents (site, agent_id, role, interval_seconds, first_seen,"
                " last_effective_at, last_observed_at, last_received_at, reports_received,"
                " spool_dropped, latest_report_id)"
                " VALUES (?, 'pc-3', 'host', 60, ?, ?, ?, ?, 1, 0, ?)",
                (bad.site, *[now.timestamp()] * 4, bad.id),
            )
            conn.execute(
                "INSERT INTO agent_sections VALUES ('demo/so-tttt', 'pc-2', 'antivirus', ?, ?)",
                (now.timestamp(), '{"state": "no such state"}'),
            )
        builder = SnapshotBuilder(DEMO, [], store)
        assert await builder.refresh()
        registry = CollectorRegistry()
        registry.register(HatangCollector(builder))
        assert registry.get_sample_value("hatang_site_up", {"site": "demo/xa-an-binh"}) == 1
        assert registry.get_sample_value("hatang_site_up", {"site": "demo/so-tttt"}) == 1
        assert registry.get_sample_value("hatang_site_up", {"site": "demo/xa-binh-minh"}) == 0
        assert registry.get_sample_value("hatang_snapshot_skipped_rows") == 2
        assert registry.get_sample_value("hatang_snapshot_refresh_failures_total") == 0
    finally:
        await store.close()


def test_a_site_whose_agents_break_the_arithmetic_is_shown_without_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = make_agent("demo/so-tttt", "zero", interval=0.0)  # division by its interval
    snap = snapshot(DEMO, [broken, make_agent("demo/xa-an-binh", "ok")])
    reg = registry_for(snap)
    assert reg.get_sample_value("hatang_site_up", {"site": "demo/xa-an-binh"}) == 1
    assert reg.get_sample_value("hatang_site_up", {"site": "demo/so-tttt"}) == 0
    assert reg.get_sample_value("hatang_site_agents", {"site": "demo/so-tttt"}) == 0
    assert reg.get_sample_value("hatang_snapshot_skipped_rows") == 1
    assert "snapshot.bad_site" in caplog.text

"""HatangCollector on a per-test registry: values come from the Snapshot, hostile label
values stay bounded, and what is unknown is absent rather than zero."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.report import NetworkStatus, ProbeResult
from collector.indicators import Snapshot
from collector.metrics import (
    MAX_LABEL_LENGTH,
    MAX_TARGETS_PER_NETWORK,
    METRICS,
    HatangCollector,
    label_value,
)
from collector.targets import load_plan
from tests.collector.test_indicators import (
    BAC_KAN,
    BANG_LUNG,
    DEMO,
    NOW,
    make_agent,
    snapshot,
    window,
)
from tests.conftest import REPO


@dataclass
class _Source:
    snapshot: Snapshot
    failures: int = 0
    last_duration_seconds: float | None = 0.25


def registry_for(snap: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(HatangCollector(_Source(snap)))
    return registry


def test_units_without_agents_have_site_up_zero_and_info() -> None:
    registry = registry_for(snapshot(DEMO))
    labels = {"site": "demo/xa-an-binh", "name": "Xã An Bình", "level": "commune", "parent": "demo"}
    assert registry.get_sample_value("hatang_site_info", labels) == 1
    assert registry.get_sample_value("hatang_site_up", {"site": "demo/xa-an-binh"}) == 0
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
    ded = {"indicator": "dedicated_network", "level": "commune"}
    assert reg.get_sample_value("hatang_indicator_ratio", ded) == pytest.approx(1 / 51)
    assert reg.get_sample_value("hatang_indicator_numerator", ded) == 1
    assert reg.get_sample_value("hatang_indicator_denominator", ded) == 51
    goal = {**ded, "plan": "bac-kan-2012"}
    assert reg.get_sample_value("hatang_indicator_goal_ratio", goal) == 0.6
    assert reg.get_sample_value("hatang_indicator_goal_measured_ratio", goal) == pytest.approx(
        1 / 51
    )
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
        registry.register(HatangCollector(_Source(snapshot(DEMO))))


def test_collect_does_no_io_and_reads_the_current_snapshot() -> None:
    source = _Source(snapshot(DEMO))
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

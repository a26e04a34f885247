"""What /metrics says about the province equals the truth the test bed was built to."""

from __future__ import annotations

import math

import pytest

from agent.report import AV_STATES
from tests.e2e.province import (
    CLASSES,
    PLAN,
    PROVINCE_ID,
    Metrics,
    Province,
    expected_goals,
    expected_indicators,
)
from tests.netns import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.e2e]


def _differs(actual: float | None, expected: float | None) -> bool:
    if expected is None or actual is None:
        return expected is not actual
    return not math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


def mismatches(
    province: Province, m: Metrics, skip_sites: frozenset[str] = frozenset()
) -> list[str]:
    """Every way the scrape differs from the plan (empty when it is the truth)."""
    problems: list[str] = []

    def check(name: str, expected: float | None, **labels: str) -> None:
        actual = m.value(name, **labels)
        if _differs(actual, expected):
            problems.append(f"{name}{labels}: {actual} != {expected}")

    check("hatang_site_up", 0, site=PROVINCE_ID)
    for s in province.sites:
        if s.key in skip_sites:
            continue
        site = s.unit_id
        check("hatang_site_up", 1, site=site)
        check("hatang_site_agents", s.agents, site=site)
        for network in CLASSES:
            check("hatang_network_up", 1 if s.up[network] else 0, site=site, network=network)
            check(
                "hatang_site_network_window_up_ratio",
                1.0 if s.up[network] else 0.0,
                site=site,
                network=network,
            )
        check("hatang_lan_hosts", s.arp_hosts, site=site, source="arp")
        check("hatang_lan_hosts", 0, site=site, source="snmp")
        check("hatang_lan_hosts", s.agents, site=site, source="agent")
        check("hatang_site_computers", s.computers, site=site)
        check("hatang_site_agent_coverage_ratio", s.agents / s.computers, site=site)
        for state in AV_STATES:
            expected: float | None = None
            if s.av_agents:
                expected = s.av_agents if state == province.av_state else 0
            check("hatang_antivirus_hosts", expected, site=site, state=state)
        check("hatang_site_spool_dropped_reports", 0, site=site)
        check("hatang_site_clock_skew_agents", 0, site=site)
        completeness = m.value("hatang_site_report_completeness_ratio", site=site)
        if completeness is None or completeness < 0.95:
            problems.append(f"completeness of {site}: {completeness} < 0.95")
    for (indicator, level), expected in expected_indicators(
        province.sites, province.av_state
    ).items():
        check("hatang_indicator_ratio", expected, indicator=indicator, level=level)
    for (indicator, level), (goal, measured) in expected_goals(
        province.sites, province.av_state
    ).items():
        labels = {"indicator": indicator, "level": level, "plan": PLAN}
        check("hatang_indicator_goal_ratio", goal, **labels)
        check("hatang_indicator_goal_measured_ratio", measured, **labels)
    return problems


def wait_for_truth(province: Province, timeout: float = 120, **kwargs: frozenset[str]) -> None:
    """Poll /metrics until it equals the truth; on timeout, fail listing the differences."""
    last: list[str] = []

    def matches() -> bool:
        nonlocal last
        last = mismatches(province, province.metrics(), **kwargs)
        return not last

    try:
        wait_for(matches, timeout=timeout, interval=1.0)
    except TimeoutError:
        pytest.fail("metrics differ from the truth:\n" + "\n".join(last))


def test_metrics_equal_the_truth_of_the_province(province: Province) -> None:
    """Per site and class up/down, LAN hosts by source, coverage, AV, every indicator and goal.

    c6 has no WAN link at all: that it is up (with WAN down) proves its agent fell back to
    the collector's internet address, the second URL in its list.
    """
    wait_for_truth(province)
    m = province.metrics()
    ratios = m.series("hatang_indicator_ratio")
    province.observations["truth"] = {
        "sites": len(province.sites),
        "agents": len(province.agents),
        "antivirus_state_here": province.av_state,
        "indicator_series": len(ratios),
        "dedicated_network_commune": m.value(
            "hatang_indicator_ratio", indicator="dedicated_network", level="commune"
        ),
    }
    # Absent means absent: computer indicators have no series where no unit has data.
    ratio = "hatang_indicator_ratio"
    assert m.value(ratio, indicator="antivirus_protected", level="commune") is None
    assert m.value(ratio, indicator="computers_connected", level="province") is None

"""The broadband and use rules on exact inputs: which measurements, which days, and what
a unit without measurements or counters is (docs/indicators.md)."""

from __future__ import annotations

import datetime as dt

import pytest

from collector.indicators import (
    GoalRule,
    IndicatorSettings,
    Throughput,
    WindowRatio,
    download_rate,
    group_throughput,
    median,
    site_view,
    unit_meets,
)
from collector.org import load_org
from collector.store import NetworkUseDay, ThroughputRecord
from collector.targets import Broadband, Use
from tests.conftest import REPO

NOW = dt.datetime(2025, 3, 10, 9, 30, tzinfo=dt.UTC)  # 16:30 in Viet Nam
UNIT = load_org(REPO / "configs" / "org.demo.yaml").units[-1]
SETTINGS = IndicatorSettings()
MBIT = 1_000_000 / 8  # bytes per second of 1 Mbit/s
BROADBAND = Broadband(min_download_bps=10_000_000, rule="median", window_seconds=7 * 86400)
USE = Use(min_bytes_per_day=10_000_000)
REACHABLE = {"internet": WindowRatio(100, 100), "dedicated": WindowRatio(100, 100)}


def _view(
    windows: dict[str, WindowRatio] | None = None,
    rates: list[tuple[float, float]] | None = None,
    failed: int = 0,
    days: list[NetworkUseDay] | None = None,
) -> object:
    throughput = {"internet": Throughput(tuple(rates or []), failed)}
    return site_view(
        UNIT, [], windows if windows is not None else REACHABLE, {}, {}, SETTINGS, NOW,
        throughput=throughput,  # type: ignore[arg-type]
        use_days={"dedicated": tuple(days or [])},
    )  # fmt: skip


def _ago(days: float) -> float:
    return (NOW - dt.timedelta(days=days)).timestamp()


def _day(
    offset: int, *, in_b: int = 0, out_b: int = 0, polls: int = 0, app: int = 0
) -> NetworkUseDay:
    day = dt.date(2025, 3, 10) - dt.timedelta(days=offset)
    return NetworkUseDay(day, UNIT.id, "dedicated", in_b, out_b, polls, 0, app)


def test_median_of_the_window_judges_broadband() -> None:
    rule = GoalRule(("reachable", "broadband"), BROADBAND)
    fast_then_slow = [(_ago(3), 50 * MBIT), (_ago(2), 4 * MBIT), (_ago(1), 6 * MBIT)]
    assert unit_meets(_view(rates=fast_then_slow), "internet", 0.95, rule, NOW) is False
    mostly_fast = [(_ago(3), 4 * MBIT), (_ago(2), 12 * MBIT), (_ago(1), 20 * MBIT)]
    assert unit_meets(_view(rates=mostly_fast), "internet", 0.95, rule, NOW) is True
    exactly = [(_ago(1), 10 * MBIT)]
    assert unit_meets(_view(rates=exactly), "internet", 0.95, rule, NOW) is True  # at or above


def test_latest_rule_and_measurements_outside_the_window() -> None:
    latest = GoalRule(("reachable", "broadband"), Broadband(10_000_000, "latest", 86400))
    rates = [(_ago(0.5), 4 * MBIT), (_ago(0.2), 20 * MBIT)]
    assert unit_meets(_view(rates=rates), "internet", 0.95, latest, NOW) is True
    old = [(_ago(2), 20 * MBIT)]  # before the 1-day window: no measurement
    assert unit_meets(_view(rates=old), "internet", 0.95, latest, NOW) is None


def test_no_measurement_is_not_judged_and_failures_are_not_zero_rates() -> None:
    rule = GoalRule(("reachable", "broadband"), BROADBAND)
    assert unit_meets(_view(), "internet", 0.95, rule, NOW) is None
    assert unit_meets(_view(failed=5), "internet", 0.95, rule, NOW) is None
    # Not reachable: does not attain, measured or not.
    down = {"internet": WindowRatio(100, 50)}
    fast = [(_ago(1), 50 * MBIT)]
    assert unit_meets(_view(windows=down, rates=fast), "internet", 0.95, rule, NOW) is False


def test_skipped_tests_are_neither_rates_nor_failures() -> None:
    at = _ago(1)
    records = [
        ThroughputRecord(UNIT.id, "internet", "t", at, True, False, 2 * MBIT, None),
        ThroughputRecord(UNIT.id, "internet", "t", at + 1, False, True, None, None),
        ThroughputRecord(UNIT.id, "internet", "t", at + 2, False, False, None, "timeout"),
    ]
    grouped = group_throughput(records)[UNIT.id]["internet"]
    assert grouped.rates == ((at, 2 * MBIT),) and grouped.failed == 1
    assert download_rate(grouped, BROADBAND, NOW) == 2 * MBIT


@pytest.mark.parametrize(
    ("days", "used"),
    [
        pytest.param([_day(0, in_b=4_000_000, out_b=6_000_000, polls=10)], True, id="bytes-today"),
        pytest.param([_day(1, out_b=20_000_000, polls=3)], True, id="bytes-yesterday-in-window"),
        pytest.param([_day(0, out_b=9_999_999, polls=10, app=50)], False, id="counters-win"),
        pytest.param([_day(0, app=1)], True, id="no-counters-an-http-check"),
        pytest.param([_day(0)], False, id="no-counters-no-check"),
        pytest.param([_day(3, out_b=50_000_000, polls=5)], False, id="outside-the-window"),
    ],
)
def test_use_on_a_day_of_the_window(days: list[NetworkUseDay], used: bool) -> None:
    rule = GoalRule(("reachable", "used"), use=USE)
    assert unit_meets(_view(days=days), "dedicated", 0.95, rule, NOW) is used


def test_median() -> None:
    assert median([]) is None
    assert median([3.0]) == 3.0
    assert median([1.0, 9.0, 4.0]) == 4.0
    assert median([1.0, 3.0]) == 2.0

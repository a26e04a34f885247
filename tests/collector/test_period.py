"""Reporting periods: what ``--period`` accepts, and the exact spans auditors get."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector.config import ConfigError, load_config, parse_config
from collector.period import PeriodError, WindowDef, parse_period

VN = ZoneInfo("Asia/Ho_Chi_Minh")
EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "collector.example.yaml"


@pytest.mark.parametrize(
    ("text", "first", "last", "title"),
    [
        ("2026", dt.date(2026, 1, 1), dt.date(2026, 12, 31), "Năm 2026"),
        ("2026-H1", dt.date(2026, 1, 1), dt.date(2026, 6, 30), "6 tháng đầu năm 2026"),
        ("2026-H2", dt.date(2026, 7, 1), dt.date(2026, 12, 31), "6 tháng cuối năm 2026"),
        ("2026-Q3", dt.date(2026, 7, 1), dt.date(2026, 9, 30), "Quý 3 năm 2026"),
        ("2024-02", dt.date(2024, 2, 1), dt.date(2024, 2, 29), "Tháng 2/2024"),
    ],
)
def test_calendar_periods(text: str, first: dt.date, last: dt.date, title: str) -> None:
    period = parse_period(text)
    assert period.start == dt.datetime(first.year, first.month, first.day, tzinfo=VN)
    assert period.last_day == last
    assert period.title_vi == title
    days = list(period.days())
    assert days[0] == first and days[-1] == last


def test_period_is_local_days() -> None:
    """Midnight in Hà Nội is 17:00 UTC the day before: a report then belongs to the new year."""
    period = parse_period("2026")
    new_year_vn = dt.datetime(2025, 12, 31, 17, 0, tzinfo=dt.UTC).timestamp()
    assert period.contains(new_year_vn)
    assert not period.contains(new_year_vn - 1)
    assert next(period.months()) == (2026, 1) and len(list(period.months())) == 12


def test_named_window_from_the_example_config() -> None:
    """The national security reporting year: 15 December of the year before to 14 December."""
    config = load_config(EXAMPLE)
    period = config.reporting.period("security-2026")
    assert period.start.date() == dt.date(2025, 12, 15)
    assert period.last_day == dt.date(2026, 12, 14)
    assert "15/12/2025 – 14/12/2026" in period.title_vi
    assert next(period.months()) == (2025, 12) and len(list(period.months())) == 13


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-Q5", "is not a year (2026), a half (2026-H1), a quarter (2026-Q3)"),
        ("2026-13", "is not a year"),
        ("1999", "year must be between 2000 and 2100"),
        ("security-2026", "is not a year"),  # no windows configured
        ("2026\nx", "is not a year"),  # fullmatch: nothing may follow the period
        ("20260", "is not a year"),
    ],
)
def test_bad_periods_name_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(PeriodError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_period(text)


def test_unknown_window_lists_the_configured_ones() -> None:
    windows = {"security": WindowDef("12-15", -1)}
    with pytest.raises(PeriodError, match="named window: security-YYYY"):
        parse_period("budget-2026", windows=windows)


@pytest.mark.parametrize(
    ("reporting", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "reporting.timezone: unknown time zone 'Mars/Olympus'"),
        ({"windows": {"x": {"start": "02-30"}}}, "reporting.windows[...]: start: day 30"),
        ({"windows": {"x": {"start": "1215"}}}, "reporting.windows[...]: start: '1215' is not"),
        ({"windows": {"Bad Name": {"start": "01-01"}}}, "reporting.windows"),
        (
            {"windows": {"x": {"start": "01-01", "months": 0}}},
            "reporting.windows[...].months: Expected `int` >= 1",
        ),
    ],
)
def test_bad_reporting_config_names_the_key(reporting: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"org": "org.yaml", "reporting": reporting}, "collector.yaml")
    assert message in str(caught.value)

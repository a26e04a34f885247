"""Reporting periods for evidence and attainment reports: ``2026``, ``2026-H1``, ``2026-Q3``,
``2026-05``, or a named window from the collector config (``security-2026``).

Plans report quarterly, half-yearly and yearly (Bắc Kạn, Hà Nam); the national security
reporting year runs from 15 December of the previous year to 14 December, so such windows
are data (``reporting.windows`` in the collector config), not code. Periods are calendar
days in the province's time zone (``reporting.timezone``), half-open ``[start, end)``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

from agent.configerror import show

__all__ = ["Period", "PeriodError", "WindowDef", "parse_period"]

_CALENDAR: Final = re.compile(
    r"(?P<year>\d{4})(?:-(?:H(?P<half>[12])|Q(?P<quarter>[1-4])|(?P<month>0[1-9]|1[0-2])))?"
)
_NAMED: Final = re.compile(r"(?P<name>[a-z][a-z0-9_]*(?:-[a-z][a-z0-9_]*)*)-(?P<year>\d{4})")
_MIN_YEAR: Final = 2000
_MAX_YEAR: Final = 2100


class PeriodError(ValueError):
    """A period the collector cannot report on; the text says what is accepted."""


@dataclass(frozen=True, slots=True)
class WindowDef:
    """A named reporting window: it starts on ``start`` (``MM-DD``) of the period's year plus
    ``year_offset`` and lasts ``months`` months (``security-2026`` with ``start: 12-15``,
    ``year_offset: -1`` is 2025-12-15 to 2026-12-14 inclusive)."""

    start: str
    year_offset: int = 0
    months: int = 12
    title: str = ""

    def __post_init__(self) -> None:
        match = re.fullmatch(r"(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])", self.start)
        if match is None:
            raise ValueError(
                f"start: {show(self.start)} is not a month and day (MM-DD, e.g. 12-15)"
            )
        month, day = int(match[1]), int(match[2])
        if day > 28:
            # A window must start on the same day every year (29 February does not exist
            # every year, and 31 April never).
            raise ValueError(f"start: day {day} does not exist in every month; use 01-28")
        del month
        if not -1 <= self.year_offset <= 1:
            raise ValueError("year_offset: -1, 0 or 1")
        if not 1 <= self.months <= 24:
            raise ValueError("months: between 1 and 24")


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open span of local calendar days ``[start, end)``, with its canonical name."""

    name: str
    start: dt.datetime  # aware, local midnight
    end: dt.datetime  # aware, local midnight after the last day
    title_vi: str
    title_en: str

    @property
    def start_ts(self) -> float:
        """Unix seconds of the first instant."""
        return self.start.timestamp()

    @property
    def end_ts(self) -> float:
        """Unix seconds of the first instant after the period."""
        return self.end.timestamp()

    @property
    def last_day(self) -> dt.date:
        """The last calendar day inside the period."""
        return (self.end - dt.timedelta(days=1)).date()

    def days(self) -> Iterator[dt.date]:
        """Every local calendar day of the period, in order."""
        day = self.start.date()
        while day < self.end.date():
            yield day
            day += dt.timedelta(days=1)

    def months(self) -> Iterator[tuple[int, int]]:
        """(year, month) of every calendar month the period touches, in order."""
        year, month = self.start.year, self.start.month
        last = self.last_day
        while (year, month) <= (last.year, last.month):
            yield year, month
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    def contains(self, ts: float) -> bool:
        """Whether a unix time falls inside the period."""
        return self.start_ts <= ts < self.end_ts


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _span(
    name: str, tz: ZoneInfo, start: dt.date, months: int, title_vi: str, title_en: str
) -> Period:
    end_year, end_month = _add_months(start.year, start.month, months)
    end = dt.date(end_year, end_month, start.day)
    return Period(
        name=name,
        start=dt.datetime(start.year, start.month, start.day, tzinfo=tz),
        end=dt.datetime(end.year, end.month, end.day, tzinfo=tz),
        title_vi=title_vi,
        title_en=title_en,
    )


def _check_year(year: int, text: str) -> None:
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        raise PeriodError(f"period {text!r}: year must be between {_MIN_YEAR} and {_MAX_YEAR}")


def parse_period(
    text: str,
    *,
    tz: ZoneInfo | None = None,
    windows: Mapping[str, WindowDef] | None = None,
) -> Period:
    """Parse a period name; raise PeriodError naming what is accepted."""
    zone = tz or ZoneInfo("Asia/Ho_Chi_Minh")
    text = text.strip()
    if (match := _CALENDAR.fullmatch(text)) is not None:
        year = int(match["year"])
        _check_year(year, text)
        if match["half"]:
            half = int(match["half"])
            start = dt.date(year, 1 + 6 * (half - 1), 1)
            return _span(
                text,
                zone,
                start,
                6,
                f"6 tháng {'đầu' if half == 1 else 'cuối'} năm {year}",
                f"{'first' if half == 1 else 'second'} half of {year}",
            )
        if match["quarter"]:
            quarter = int(match["quarter"])
            start = dt.date(year, 1 + 3 * (quarter - 1), 1)
            return _span(text, zone, start, 3, f"Quý {quarter} năm {year}", f"Q{quarter} {year}")
        if match["month"]:
            month = int(match["month"])
            return _span(
                text,
                zone,
                dt.date(year, month, 1),
                1,
                f"Tháng {month}/{year}",
                f"{dt.date(year, month, 1):%B %Y}",
            )
        return _span(text, zone, dt.date(year, 1, 1), 12, f"Năm {year}", f"year {year}")
    named = windows or {}
    if (match := _NAMED.fullmatch(text)) is not None and match["name"] in named:
        window = named[match["name"]]
        year = int(match["year"])
        _check_year(year, text)
        month, day = (int(part) for part in window.start.split("-"))
        start = dt.date(year + window.year_offset, month, day)
        period = _span(text, zone, start, window.months, "", "")
        span_vi = f"{period.start:%d/%m/%Y} – {period.last_day:%d/%m/%Y}"
        title = window.title or match["name"]
        return Period(
            name=period.name,
            start=period.start,
            end=period.end,
            title_vi=f"{title} {year} ({span_vi})",
            title_en=f"{match['name']} {year} "
            f"({period.start:%Y-%m-%d} to {period.last_day:%Y-%m-%d})",
        )
    accepted = "a year (2026), a half (2026-H1), a quarter (2026-Q3), a month (2026-05)"
    if named:
        accepted += ", or a named window: " + ", ".join(f"{name}-YYYY" for name in sorted(named))
    raise PeriodError(f"period {text!r} is not {accepted}")

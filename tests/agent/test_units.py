"""Durations and sizes as people write them in config files."""

from __future__ import annotations

from typing import Any

import pytest

from agent.units import Duration, Size, dec_hook


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1.5m", 90.0),
        (" 30 s ", 30.0),
        ("45", 45.0),
        (45, 45.0),
        (0.25, 0.25),
        ("0s", 0.0),
    ],
)
def test_duration_forms(text: Any, seconds: float) -> None:
    value = Duration.parse(text)
    assert isinstance(value, Duration)
    assert value == seconds


FORMS = "a number of seconds or a number with a unit: 500ms, 30s, 5m, 1h, 7d"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 minutes", f"'5 minutes' is not a duration (expected {FORMS})"),
        ("30S", f"'30S' is not a duration (expected {FORMS})"),
        ("", f"'' is not a duration (expected {FORMS})"),
        (True, f"true is not a duration (expected {FORMS})"),
        ([30], f"a list is not a duration (expected {FORMS})"),
        (None, f"no value given (expected {FORMS})"),
        ("-1s", "'-1s' is negative (expected a duration of 0 or more)"),
        (-3, "-3 is negative (expected a duration of 0 or more)"),
        (float("inf"), "inf is not a finite duration"),
    ],
)
def test_bad_durations_say_what_is_accepted(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Duration.parse(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("200MB", 200_000_000),
        ("512KB", 512_000),
        ("1GiB", 2**30),
        ("64 KiB", 65536),
        ("1.5MB", 1_500_000),
        ("10b", 10),
        ("2mb", 2_000_000),
        (4096, 4096),
        ("4096", 4096),
    ],
)
def test_size_forms(text: Any, size: int) -> None:
    value = Size.parse(text)
    assert isinstance(value, Size)
    assert value == size


SIZE_FORMS = "a number of bytes or a number with a unit: 512KB, 200MB, 1GiB"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("200 megabytes", f"'200 megabytes' is not a size (expected {SIZE_FORMS})"),
        ("1TB", f"'1TB' is not a size (expected {SIZE_FORMS})"),
        (1.5, f"1.5 is not a size (expected {SIZE_FORMS})"),
        (False, f"false is not a size (expected {SIZE_FORMS})"),
        (None, f"no value given (expected {SIZE_FORMS})"),
        ("-1MB", "'-1MB' is negative (expected a size of 0 or more)"),
    ],
)
def test_bad_sizes_say_what_is_accepted(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Size.parse(value)
    assert str(info.value) == message


def test_dec_hook_refuses_other_types() -> None:
    with pytest.raises(NotImplementedError):
        dec_hook(complex, 1)

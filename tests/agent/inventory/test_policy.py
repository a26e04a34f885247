"""The one-state rule: per-product states and the computer's state from combinations."""

from __future__ import annotations

import pytest

from agent.inventory.antivirus.policy import best_state, evaluate, product_state
from agent.report import AntivirusProduct, AvState

DAY = 86400.0
MAX = 7 * DAY


@pytest.mark.parametrize(
    ("enabled", "rtp", "up_to_date", "age", "expected"),
    [
        pytest.param(True, True, True, 1 * DAY, "protected", id="on-fresh"),
        pytest.param(True, None, None, 6.9 * DAY, "protected", id="on-age-only-fresh"),
        pytest.param(True, None, None, 7 * DAY, "protected", id="age-at-limit-is-fresh"),
        pytest.param(True, None, None, 7.01 * DAY, "outdated", id="age-over-limit"),
        pytest.param(True, True, False, 1 * DAY, "outdated", id="source-says-out-of-date"),
        pytest.param(True, True, True, 30 * DAY, "outdated", id="flag-fresh-but-old"),
        pytest.param(True, None, True, None, "protected", id="flag-only-fresh"),
        pytest.param(True, None, None, None, "unknown", id="running-no-freshness"),
        pytest.param(False, None, True, 1 * DAY, "disabled", id="off"),
        pytest.param(True, False, True, 1 * DAY, "disabled", id="real-time-off"),
        pytest.param(False, False, False, 99 * DAY, "disabled", id="off-and-old"),
        pytest.param(None, None, True, 1 * DAY, "unknown", id="enabled-not-known"),
    ],
)
def test_product_state(
    enabled: bool | None,
    rtp: bool | None,
    up_to_date: bool | None,
    age: float | None,
    expected: str,
) -> None:
    state = product_state(
        enabled=enabled,
        up_to_date=up_to_date,
        signature_age_seconds=age,
        max_signature_age_seconds=MAX,
        real_time_protection=rtp,
    )
    assert state == expected


def _product(name: str, state: AvState) -> AntivirusProduct:
    return AntivirusProduct(name=name, source="test", state=state)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param([], "missing", id="no-product"),
        pytest.param(["protected"], "protected", id="one-protected"),
        pytest.param(["disabled", "protected"], "protected", id="defender-off-bkav-on"),
        pytest.param(["outdated", "disabled"], "outdated", id="kaspersky-old-defender-off"),
        pytest.param(["disabled", "disabled"], "disabled", id="all-off"),
        pytest.param(["unknown", "disabled"], "unknown", id="running-unverified-beats-off"),
        pytest.param(["outdated", "unknown"], "outdated", id="outdated-beats-unverified"),
        pytest.param(["missing"], "missing", id="clamav-without-signatures"),
        pytest.param(["missing", "disabled"], "disabled", id="installed-off-beats-missing"),
        pytest.param(["protected", "outdated", "unknown", "disabled"], "protected", id="mixed"),
    ],
)
def test_best_product_wins(states: list[AvState], expected: str) -> None:
    assert best_state(states) == expected
    status = evaluate(
        [_product(f"p{i}", s) for i, s in enumerate(states)], max_signature_age_seconds=MAX
    )
    assert status.state == expected
    assert [p.state for p in status.products] == states
    assert status.max_signature_age_seconds == MAX
    assert status.error is None


def test_no_product_after_a_failed_source_is_unknown_not_missing() -> None:
    status = evaluate(
        [],
        max_signature_age_seconds=MAX,
        warnings=["securitycenter2: powershell.exe: timed out after 30s"],
        detection_failed=True,
    )
    assert status.state == "unknown"
    assert status.error == "securitycenter2: powershell.exe: timed out after 30s"


def test_a_found_product_is_judged_even_when_a_source_failed() -> None:
    status = evaluate(
        [_product("Bkav", "protected")],
        max_signature_age_seconds=MAX,
        sources=["services", "services"],
        warnings=["defender: not found"],
        detection_failed=True,
    )
    assert status.state == "protected"
    assert status.error is None
    assert status.sources == ["services"]
    assert status.warnings == ["defender: not found"]

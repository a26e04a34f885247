"""The one-state rule: what an inspector would conclude from the per-product facts.

A product is ``protected`` when it is enabled (and real-time protection, where the source
reports it, is on) and its signatures are younger than the configured maximum age;
``outdated`` when enabled with old signatures; ``disabled`` when installed but off;
``unknown`` when a source saw it running but nothing says how fresh its signatures are.
The computer takes the best state among its products, because one working product is
enough protection and a second product (e.g. Defender in passive mode beside BKAV) is
normally switched off on purpose. Ranking: protected > outdated > unknown > disabled >
missing. With no product at all the computer is ``missing``, unless a source that
should have answered failed, in which case it is ``unknown``: absence was not observed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from agent.report import AntivirusProduct, AntivirusStatus, AvState

RANK: Final[dict[AvState, int]] = {
    "protected": 4,
    "outdated": 3,
    "unknown": 2,
    "disabled": 1,
    "missing": 0,
}


def product_state(
    *,
    enabled: bool | None,
    up_to_date: bool | None,
    signature_age_seconds: float | None,
    max_signature_age_seconds: float,
    real_time_protection: bool | None = None,
) -> AvState:
    """The state of one product from what its sources said (None: the source did not say)."""
    if enabled is False or real_time_protection is False:
        return "disabled"
    if enabled is None:
        return "unknown"
    # Any source that says "out of date" wins over one that says "fresh": the inspector
    # would not accept a product its own console flags as outdated.
    if up_to_date is False:
        return "outdated"
    if signature_age_seconds is not None:
        return "protected" if signature_age_seconds <= max_signature_age_seconds else "outdated"
    if up_to_date is True:
        return "protected"
    return "unknown"


def best_state(states: Iterable[AvState]) -> AvState:
    """The best of several product states; ``missing`` when there are none."""
    return max(states, key=RANK.__getitem__, default="missing")


def evaluate(
    products: Sequence[AntivirusProduct],
    *,
    max_signature_age_seconds: float,
    sources: Sequence[str] = (),
    warnings: Sequence[str] = (),
    detection_failed: bool = False,
) -> AntivirusStatus:
    """Build the computer's status: one state from the products, details kept behind it.

    ``detection_failed`` says that a source which would have seen a product could not be
    read, so "no product found" must not be reported as ``missing``.
    """
    state = best_state(p.state for p in products)
    error = None
    if not products and detection_failed:
        state = "unknown"
        error = "; ".join(warnings)[:1024] or "antivirus detection failed"
    return AntivirusStatus(
        state=state,
        products=list(products)[:32],
        max_signature_age_seconds=max_signature_age_seconds,
        error=error,
        sources=list(dict.fromkeys(sources))[:16],
        warnings=[w[:1024] for w in warnings][:16],
    )

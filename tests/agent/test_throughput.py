"""The throughput section: who runs it, how often, and what it costs (the measurement
itself is tested against a real collector in tests/collector/test_throughput.py and on a
shaped namespace line in tests/collector/test_broadband.py)."""

from __future__ import annotations

from typing import Any

from agent.config import parse_config
from agent.sections import enabled_sections
from agent.throughput import monthly_cost_text

TARGET = {"url": "https://10.10.0.10:8443/api/v1/throughput?bytes=4000000"}


def _config(**throughput: Any) -> Any:
    role = throughput.pop("role", "site-probe")
    return parse_config(
        {"site": "bac-kan", "role": role, "discovery": {"enabled": False}, "throughput": throughput}
    )


def _intervals(config: Any) -> dict[str, float]:
    return {s.name: s.interval(config) for s in enabled_sections(config)}


def test_site_probe_tests_every_six_hours_by_default() -> None:
    assert _intervals(_config(targets=[TARGET]))["throughput"] == 6 * 3600


def test_hosts_test_only_when_their_role_is_listed() -> None:
    assert "throughput" not in _intervals(_config(role="host", targets=[TARGET]))
    assert "throughput" in _intervals(_config(role="host", roles=["host"], targets=[TARGET]))


def test_no_targets_or_disabled_means_no_section() -> None:
    assert "throughput" not in _intervals(_config())
    assert "throughput" not in _intervals(_config(enabled=False, targets=[TARGET]))


def test_monthly_data_cost() -> None:
    assert monthly_cost_text(_config(targets=[TARGET]).throughput) == "≈ 480 MB/tháng / per month"
    wan = {**TARGET, "network": "wan"}
    twice = _config(targets=[TARGET, wan], interval="12h", max_bytes="1MB").throughput
    assert monthly_cost_text(twice) == "≈ 120 MB/tháng / per month"
    small = _config(targets=[TARGET], interval="24h", max_bytes="100KB").throughput
    assert monthly_cost_text(small) == "≈ 3.0 MB/tháng / per month"

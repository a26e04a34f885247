"""Times at the edges of the calendar (issue 10 item 1).

A report may carry any ISO time the JSON parser accepts, from year 1 to year 9999 with
any UTC offset. For ``observed_at`` and ``sent_at`` (what reports are filed by and clocks
measured with) the collector accepts ``agent.report.TIMESTAMP_MIN`` .. ``TIMESTAMP_MAX``
and answers 422 naming the field outside it; every date computation of the store, the
indicators and the metrics is total, so a time that got in anyway (an older collector
stored it, a caller of ``Store.ingest``) never costs an agent its state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from agent.report import TIMESTAMP_MAX, TIMESTAMP_MIN, Batch, encode
from collector.metrics import HatangCollector
from collector.org import load_org
from collector.snapshot import SnapshotBuilder
from collector.store import Store, from_unix
from collector.store.ingest import rollup_day
from tests.collector.conftest import DEMO_ORG, SITE, agent_report, new_token, store_of

Client = TestClient[web.Request, web.Application]
EDGE = "9999-12-31T23:59:59-14:00"  # the latest time ISO 8601 can write, 14h behind UTC


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def body_with(observed_at: str | None = None, sent_at: str | None = None, **section: Any) -> bytes:
    doc: dict[str, Any] = json.loads(encode(Batch(reports=[agent_report()])))
    if observed_at is not None:
        doc["reports"][0]["observed_at"] = observed_at
    if sent_at is not None:
        doc["sent_at"] = sent_at
    for key, value in section.items():
        doc["reports"][0]["host"][key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(body_with("0001-01-01T00:00:00+14:00"), "$.reports[0].observed_at", id="y1"),
        pytest.param(body_with("9999-12-31T23:59:59Z"), "$.reports[0].observed_at", id="y9999"),
        pytest.param(body_with(EDGE), "$.reports[0].observed_at", id="y9999-14h"),
        pytest.param(body_with("1969-12-31T23:59:59Z"), "$.reports[0].observed_at", id="pre-1970"),
        pytest.param(body_with("2100-01-01T00:00:00Z"), "$.reports[0].observed_at", id="2100"),
        pytest.param(
            body_with("1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z"), "$.sent_at", id="sent-9999"
        ),
        pytest.param(body_with(sent_at="0001-01-01T00:00:00+14:00"), "$.sent_at", id="sent-y1"),
    ],
)
async def test_times_outside_the_accepted_range_are_422_naming_the_field(
    client: Client, body: bytes, field: str
) -> None:
    token = await new_token(client)
    store = store_of(client)
    before = await store.digest()
    resp = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert resp.status == 422, await resp.text()
    error = await resp.json()
    assert error["error"] == "invalid_report"
    assert error["field"] == field
    assert "1970-01-01" in error["message"] and "2100-01-01" in error["message"]
    assert await store.digest() == before


async def test_a_clock_reset_to_the_epoch_is_accepted_and_moved_onto_the_collector_clock(
    client: Client,
) -> None:
    """A PC whose clock battery died reports from 1970: kept, and the clock rule files it
    now (its sent_at tells the offset), so its site is up."""
    token = await new_token(client)
    body = body_with("1970-01-01T00:00:00Z", "1970-01-01T00:00:05Z")
    resp = await client.post("/api/v1/reports", data=body, headers=auth(token))
    assert resp.status == 200, await resp.text()
    states = await store_of(client).agent_states()
    assert [s.site for s in states] == [SITE]
    assert states[0].last_observed_at == TIMESTAMP_MIN
    assert abs((states[0].last_effective_at or TIMESTAMP_MIN) - dt.datetime.now(dt.UTC)) < (
        dt.timedelta(minutes=5)
    )


@pytest.mark.parametrize(
    "section",
    [
        {"boot_time": "9999-12-31T23:59:59-14:00"},
        {"boot_time": "0001-01-01T00:00:00+14:00"},
        {"boot_time": "1601-01-01T00:00:00Z"},  # Windows' "never" (FILETIME 0)
    ],
)
async def test_times_the_collector_only_keeps_are_kept_as_sent(
    client: Client, section: dict[str, str]
) -> None:
    """Boot time, signature dates, LAN host first/last seen are never computed with:
    refusing a Windows PC's 1601 "never" would refuse every report of that PC."""
    token = await new_token(client)
    resp = await client.post("/api/v1/reports", data=body_with(**section), headers=auth(token))
    assert resp.status == 200, await resp.text()
    (state,) = await store_of(client).agent_states()
    host: Any = state.host
    assert host.boot_time == dt.datetime.fromisoformat(section["boot_time"].replace("Z", "+00:00"))


def _at(report: Any, when: dt.datetime) -> Any:
    return msgspec.structs.replace(report, observed_at=when)


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=-14))),
        dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14))),
        dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
    ],
    ids=["y9999-14h", "y1+14h", "y9999"],
)
async def test_the_store_is_total_for_any_time_a_report_can_carry(
    store: Store, when: dt.datetime
) -> None:
    """Past the API (a caller of Store.ingest, or rows an older collector stored): the
    roll-ups do not fail and the agent's state stays readable."""
    normal = agent_report(agent_id="pc-ok")
    edge = _at(agent_report(agent_id="pc-edge"), when)
    result = await store.ingest(SITE, [(normal, encode(normal)), (edge, encode(edge))])
    assert result.accepted == 2
    states = await store.agent_states()
    assert sorted(s.agent_id for s in states) == ["pc-edge", "pc-ok"]
    assert getattr(states, "skipped", 0) == 0
    # The indicators and the metrics over them are computed, the edge agent included.
    builder = SnapshotBuilder(load_org(DEMO_ORG), [], store)
    assert await builder.refresh()
    assert builder.snapshot.skipped_rows == 0
    (view,) = [v for v in builder.snapshot.sites if v.unit.id == SITE]
    assert view.up and view.agents == 2
    registry = CollectorRegistry()
    registry.register(HatangCollector(builder))
    assert generate_latest(registry)
    # The day roll-ups are readable too.
    today = dt.datetime.now(dt.UTC).date()
    assert await store.daily_networks(dt.date(1, 1, 1), today + dt.timedelta(days=2))
    assert await store.daily_hosts(dt.date(1, 1, 1), dt.date(9999, 12, 31))


def test_date_conversions_are_total() -> None:
    for value in (-1e300, -62135647200.0 - 86400, 0.0, 253402300799.0 + 86400, 1e300):
        assert isinstance(from_unix(value), dt.datetime)
        assert len(rollup_day(value, 7 * 3600.0)) == 10
    assert from_unix(float("inf")) == dt.datetime.max.replace(tzinfo=dt.UTC)
    assert from_unix(float("-inf")) == dt.datetime.min.replace(tzinfo=dt.UTC)
    assert TIMESTAMP_MIN < TIMESTAMP_MAX


async def test_the_site_of_an_edge_report_stays_up(client: Client) -> None:
    """The reproduced failure: one edge report made its agent unreadable and the reporting
    site showed hatang_site_up 0. Now the report is refused and the site stays up."""
    token = await new_token(client)
    good = await client.post(
        "/api/v1/reports", data=encode(Batch(reports=[agent_report()])), headers=auth(token)
    )
    assert good.status == 200
    bad = await client.post("/api/v1/reports", data=body_with(EDGE), headers=auth(token))
    assert bad.status == 422
    assert client.app is not None
    from collector.app import BUILDER

    builder = client.app[BUILDER]
    await builder.refresh()
    (view,) = [v for v in builder.snapshot.sites if v.unit.id == SITE]
    assert view.up
    await asyncio.sleep(0)

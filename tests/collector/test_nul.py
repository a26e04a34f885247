"""A text holding U+0000 (found while looking for the rest of issue 10's class "5xx on
bad input"): JSON carries it escaped and SQLite kept it, but PostgreSQL has no text type
for it, so the hostname's day row failed the insert and the agent got a 503 for its batch
for ever. Such a report is stored on both backends: the body exactly, the plain hostname
column of the day roll-up with U+FFFD in place of the NUL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.report import Batch, encode
from tests.collector.conftest import (
    MakeClient,
    StoreBackend,
    agent_report,
    collector_config,
    new_token,
    store_of,
)

Client = TestClient[web.Request, web.Application]


async def test_a_nul_character_in_a_hostname_is_stored_on_both_backends(
    make_client: MakeClient, store_backend: StoreBackend, tmp_path: Path
) -> None:
    url = store_backend.location
    config = collector_config(
        tmp_path, store={"url": url if url.startswith("postgres") else f"sqlite:///{url}"}
    )
    client: Client = await make_client(config)
    token = await new_token(client)
    report = agent_report(hostname="MAY\u000001")  # a registry value read with its NUL
    doc = json.loads(encode(Batch(reports=[report])))
    doc["reports"][0]["networks"]["lan"]["targets"][0]["detail"] = "x\u0000y"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    resp = await client.post("/api/v1/reports", data=json.dumps(doc), headers=headers)
    assert resp.status == 200, await resp.text()
    store = store_of(client)
    (stored,) = [
        r
        async for r in store.reports(
            None, dt.datetime(2000, 1, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
        )
    ]
    assert stored.host is not None and stored.host.hostname == "MAY\u000001"  # body exact
    assert stored.networks.lan.targets[0].detail == "x\u0000y"
    (state,) = await store.agent_states()
    assert state.host is not None and state.host.hostname == "MAY\u000001"  # type: ignore[attr-defined]
    (day,) = await store.daily_hosts(dt.date(2000, 1, 1), dt.date(2100, 1, 1))
    assert day.hostname == "MAY\ufffd01"

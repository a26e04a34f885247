"""Ids with a trailing newline are refused everywhere (issue 10 weakness).

Python's ``$`` also matches before a final newline, and msgspec's ``Meta(pattern=...)``
uses ``re.search``: ``^…$`` let ``"pc-01\\n"`` through. Every validated id is now
anchored with ``\\A…\\Z`` or checked with ``fullmatch``; one case per id.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.config import ConfigError
from agent.config import parse_config as parse_agent_config
from agent.report import Batch, encode
from collector.auth import AuthFailure, bearer_token
from collector.config import ConfigError as CollectorConfigError
from collector.config import parse_config
from collector.org import OrgError, parse_org
from collector.targets import TargetsError, parse_plan
from tests.collector.conftest import DEMO_ORG, agent_report, new_token, store_of

Client = TestClient[web.Request, web.Application]


@pytest.mark.parametrize(
    ("set_value", "field"),
    [
        (lambda d: d["reports"][0].update(site=d["reports"][0]["site"] + "\n"), "site"),
        (lambda d: d["reports"][0].update(agent_id="pc-01\n"), "agent_id"),
        (lambda d: d["reports"][0].update(id=d["reports"][0]["id"] + "\n"), "id"),
    ],
    ids=["site-id", "agent-id", "report-id"],
)
async def test_report_ids_with_a_trailing_newline_are_422(
    client: Client, set_value: Any, field: str
) -> None:
    token = await new_token(client)
    doc = json.loads(encode(Batch(reports=[agent_report()])))
    set_value(doc)
    before = await store_of(client).digest()
    resp = await client.post(
        "/api/v1/reports",
        data=json.dumps(doc),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["field"] == f"$.reports[0].{field}"
    assert await store_of(client).digest() == before


def test_a_lan_host_agent_id_with_a_trailing_newline_is_refused() -> None:
    import msgspec

    from agent.report import LanHost

    with pytest.raises(msgspec.ValidationError, match="agent_id"):
        msgspec.convert({"mac": "02:00:00:00:00:01", "agent_id": "pc-01\n"}, LanHost)


def test_a_bearer_token_with_a_trailing_newline_is_malformed() -> None:
    assert bearer_token("Bearer hat_abc_def") == "hat_abc_def"
    assert bearer_token("Bearer hat_abc_def\n") == AuthFailure("malformed")


def test_org_unit_and_province_ids_with_a_trailing_newline_are_refused() -> None:
    import yaml

    org: dict[str, Any] = yaml.safe_load(DEMO_ORG.read_text(encoding="utf-8"))
    bad_unit = json.loads(json.dumps(org))
    bad_unit["units"][1]["id"] += "\n"
    with pytest.raises(OrgError, match=r"units\[1\].*invalid"):
        parse_org(bad_unit, "org.yaml")
    bad_province = json.loads(json.dumps(org))
    bad_province["province"] += "\n"
    with pytest.raises(OrgError, match="province"):
        parse_org(bad_province, "org.yaml")


def test_a_plan_id_with_a_trailing_newline_is_refused() -> None:
    plan = {"plan": "bac-kan-2012\n", "title": "t", "reference": "r", "goals": []}
    with pytest.raises(TargetsError, match="plan"):
        parse_plan(plan, "targets.yaml")


def test_the_agent_config_ids_with_a_trailing_newline_are_refused() -> None:
    with pytest.raises(ConfigError, match="agent_id"):
        parse_agent_config({"site": "demo/xa-an-binh", "agent_id": "pc-01\n"})
    with pytest.raises(ConfigError, match="site"):
        parse_agent_config({"site": "demo/xa-an-binh\n"})


def test_a_reporting_window_name_with_a_trailing_newline_is_refused() -> None:
    data = {
        "org": str(DEMO_ORG),
        "reporting": {"windows": {"fiscal\n": {"start": "01-01"}}},
    }
    with pytest.raises(CollectorConfigError, match=r"reporting\.windows"):
        parse_config(data, "collector.yaml")

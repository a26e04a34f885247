"""Central agent configuration on the collector: layer merging, validation with the agent's
own rules (errors name the layer file and key), the ETag endpoint and reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.config import ConfigError, load_config, parse_config
from collector.central import CENTRAL, CentralHolder, load_central
from collector.config import load_config as load_collector_config
from collector.org import load_org
from tests.collector.conftest import DEMO_ORG, REPO, SITE, MakeClient, collector_config, new_token

Client = TestClient[web.Request, web.Application]
ORG = load_org(DEMO_ORG)


def layers(tmp_path: Path, files: dict[str, Any]) -> Path:
    root = tmp_path / "agents"
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    root.mkdir(exist_ok=True)
    return root


def tcp(address: str) -> dict[str, Any]:
    return {"targets": [{"kind": "tcp", "address": address}]}


def test_every_agent_key_is_either_central_or_local() -> None:
    import msgspec

    from agent.config import AgentConfig
    from agent.layers import CENTRAL_KEYS, LOCAL_KEYS

    fields = {f.encode_name for f in msgspec.structs.fields(AgentConfig)}
    assert set(CENTRAL_KEYS) | set(LOCAL_KEYS) == fields
    assert not set(CENTRAL_KEYS) & set(LOCAL_KEYS)


def test_layers_merge_province_level_ancestors_site_later_wins_lists_replace(
    tmp_path: Path,
) -> None:
    root = layers(
        tmp_path,
        {
            "province.yaml": {
                "interval": "60s",
                "networks": {"dedicated": tcp("10.200.0.5:443"), "wan": tcp("10.10.0.10:8443")},
                "roles": {"site-probe": {"discovery": {"rate": 100}}},
            },
            "level-commune.yaml": {"interval": "2m", "inventory": {"interval": "12h"}},
            "sites/demo.yaml": {"antivirus": {"max_signature_age": "3d"}},
            "sites/demo/phuong-hoa-binh.yaml": {"networks": {"wan": tcp("10.10.24.1:80")}},
        },
    )
    central = load_central(root, ORG)
    hoa_binh = central.get("demo/phuong-hoa-binh", "host")
    assert hoa_binh is not None
    config = hoa_binh.config
    assert config["interval"] == "2m"  # the level wins over the province
    assert config["networks"]["dedicated"] == tcp("10.200.0.5:443")  # mappings merge
    assert config["networks"]["wan"] == tcp("10.10.24.1:80")  # lists replace
    assert config["antivirus"] == {"max_signature_age": "3d"}  # an ancestor's layer
    assert "discovery" not in config
    probe = central.get("demo/phuong-hoa-binh", "site-probe")
    assert probe is not None and probe.config["discovery"] == {"rate": 100}
    agency = central.get("demo/so-tttt", "host")
    assert agency is not None and agency.config["interval"] == "60s"
    assert agency.config["networks"]["wan"] == tcp("10.10.0.10:8443")
    assert agency.version != hoa_binh.version
    an_binh = central.get(SITE, "host")
    binh_minh = central.get("demo/xa-binh-minh", "host")
    assert an_binh is not None and binh_minh is not None
    assert an_binh.version == binh_minh.version  # same content, same version
    # The agent accepts the result with its own loader.
    parse_config({"site": "demo/phuong-hoa-binh", **config})


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"province.yaml": {"site": "demo"}}, "province.yaml: site: is local to each agent"),
        ({"province.yaml": {"collector": {}}}, "province.yaml: collector: is local"),
        ({"province.yaml": {"netwroks": {}}}, "province.yaml: netwroks: unknown key"),
        (
            {"province.yaml": {"roles": {"boss": {}}}},
            "province.yaml: roles.boss: unknown role",
        ),
        (
            {"province.yaml": {"roles": {"host": {"spool": {}}}}},
            "province.yaml: roles.host.spool: is local",
        ),
        ({"province.yaml": "- a\n- list\n"}, "province.yaml: expected a mapping"),
        ({"province.yaml": "networks: [\n"}, "province.yaml: line 2"),
        ({"province.yaml": "a: 1\na: 2\n"}, "duplicate key 'a'"),
        ({"level-comune.yaml": {}}, "level-comune.yaml: unknown level"),
        ({"sites/demo/xa-khong-co.yaml": {}}, "sites/demo/xa-khong-co.yaml: no unit"),
        ({"notes.txt": "hello"}, "notes.txt: not a layer file"),
        (
            {"level-commune.yaml": {"networks": {"wan": tcp("10.0.0.1")}}},
            "level-commune.yaml: networks.wan.targets[0].address: ",
        ),
        (
            {
                "province.yaml": {"networks": {"lan": tcp("10.0.0.1:80")}},
                "sites/demo/xa-an-binh.yaml": {"interval": "0s"},
            },
            "sites/demo/xa-an-binh.yaml: interval: 0s is too short",
        ),
        (
            {"level-agency.yaml": {"jitter": 2}},
            "level-agency.yaml: jitter: 2 is out of range",
        ),
    ],
)
def test_a_broken_layer_is_refused_naming_the_file_and_key(
    tmp_path: Path, files: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_central(layers(tmp_path, files), ORG)
    assert message in str(caught.value)


def test_a_layer_no_unit_uses_yet_is_still_checked(tmp_path: Path) -> None:
    org = load_org(REPO / "configs" / "org.demo.yaml")
    assert not org.of_level("district")
    root = layers(tmp_path, {"level-district.yaml": {"interval": "fast"}})
    with pytest.raises(ConfigError, match=r"level-district\.yaml: interval: 'fast'"):
        load_central(root, org)


def test_the_shipped_example_layers_load(tmp_path: Path) -> None:
    config = load_collector_config(REPO / "configs" / "collector.example.yaml")
    assert config.agent_config is not None
    central = load_central(config.agent_config.dir, load_org(config.org))
    assert central.files >= 3
    agent = load_config(REPO / "configs" / "agent.example.yaml")
    assert agent.central is None  # the example is standalone; enroll writes central:


def test_reload_keeps_the_old_config_when_the_new_one_is_broken(tmp_path: Path) -> None:
    root = layers(tmp_path, {"province.yaml": {"networks": {"wan": tcp("10.10.0.10:8443")}}})
    holder = CentralHolder(str(root), ORG)
    assert holder.current is not None
    before = holder.current.get(SITE, "host")
    (root / "province.yaml").write_text("networks: {wan: {targets: [{kind: tcp}]}}\n")
    assert holder.reload() is False
    assert holder.last_error is not None and "province.yaml: networks.wan.targets[0]" in (
        holder.last_error
    )
    assert holder.current.get(SITE, "host") == before
    (root / "province.yaml").write_text(yaml.safe_dump({"networks": {"wan": tcp("10.9.9.9:1")}}))
    assert holder.reload() is True
    after = holder.current.get(SITE, "host")
    assert after is not None and before is not None and after.version != before.version


async def test_config_endpoint_serves_the_site_and_role_with_etag(
    make_client: MakeClient, tmp_path: Path
) -> None:
    layers(
        tmp_path,
        {
            "province.yaml": {
                "networks": {"wan": tcp("10.10.0.10:8443")},
                "roles": {"site-probe": {"discovery": {"rate": 50}}},
            }
        },
    )
    client = await make_client(collector_config(tmp_path, agent_config={"dir": "agents"}))
    token = await new_token(client)
    auth = {"Authorization": f"Bearer {token}"}
    resp = await client.get("/api/v1/config", headers=auth)
    assert resp.status == 200
    body = await resp.json()
    assert body["site"] == SITE and body["role"] == "host"
    assert body["config"] == {"networks": {"wan": tcp("10.10.0.10:8443")}}
    etag = resp.headers["ETag"]
    assert etag == f'"{body["version"]}"'
    again = await client.get("/api/v1/config", headers={**auth, "If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    probe = await client.get(
        "/api/v1/config?role=site-probe", headers={**auth, "If-None-Match": etag}
    )
    assert probe.status == 200 and (await probe.json())["config"]["discovery"] == {"rate": 50}
    bad = await client.get("/api/v1/config?role=boss", headers=auth)
    assert bad.status == 400 and (await bad.json())["field"] == "role"
    assert (await client.get("/api/v1/config")).status == 401
    # A reload that changes the layer changes the version: the old ETag gets the new config.
    (tmp_path / "agents" / "province.yaml").write_text(yaml.safe_dump({"interval": "2m"}))
    assert client.app is not None and client.app[CENTRAL].reload()
    changed = await client.get("/api/v1/config", headers={**auth, "If-None-Match": etag})
    assert changed.status == 200 and (await changed.json())["config"] == {"interval": "2m"}


async def test_without_agent_config_the_endpoint_says_so(client: Client) -> None:
    token = await new_token(client)
    resp = await client.get("/api/v1/config", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 404 and (await resp.json())["error"] == "no_central_config"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{", 400, "$"),
        (b"{}", 422, "$"),
        (b'{"agent_id": "a b"}', 422, "$.agent_id"),
        (b'{"agent_id": "pc", "version": ""}', 422, "$"),
        (b'{"agent_id": "pc", "error": 5}', 422, "$.error"),
        (b'{"agent_id": "pc", "other": 1}', 422, "$"),
    ],
)
async def test_hostile_config_status_bodies(
    client: Client, body: bytes, status: int, field: str
) -> None:
    token = await new_token(client)
    resp = await client.post(
        "/api/v1/config/status", data=body, headers={"Authorization": f"Bearer {token}"}
    )
    answer = await resp.json()
    assert (resp.status, answer["field"]) == (status, field), answer

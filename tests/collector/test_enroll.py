"""Enrollment on the collector: codes, the endpoint over real loopback HTTP, throttling and
lockout, per-agent credentials at ingest, revocation of one agent, the store on both
backends, and the ``enroll-code`` / ``agents`` commands."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.report import Batch, encode
from collector import api
from collector.enroll import (
    ALPHABET,
    CodeFormatError,
    FailureThrottle,
    code_id,
    hash_code,
    make_codes,
    new_code,
    normalize_code,
    verify_code,
)
from collector.store import NewAgent, Store, hash_token, new_token
from tests.collector.conftest import (
    OTHER_SITE,
    SITE,
    MakeClient,
    agent_report,
    collector_config,
    eventually,
    run_cli,
    store_of,
    write_config,
)

Client = TestClient[web.Request, web.Application]


# -- codes ------------------------------------------------------------------------------


def test_codes_are_four_groups_of_unambiguous_characters() -> None:
    code = new_code()
    groups = code.split("-")
    assert [len(g) for g in groups] == [4, 4, 4, 4]
    assert set("".join(groups)) <= set(ALPHABET)
    assert not set("ILOU") & set(ALPHABET)


def test_typed_codes_are_forgiven_case_dashes_and_lookalikes() -> None:
    raw = normalize_code("K7QM-3XWD-9PTA-HN4R")
    assert normalize_code("k7qm 3xwd 9pta hn4r") == raw
    assert normalize_code("k7qm3xwd9ptahn4r") == raw
    assert normalize_code("K7QM-3XWD-9PTA-HN4R".replace("1", "I")) == raw
    assert normalize_code("10QM-3XWD-9PTA-HN4R") == normalize_code("iOqm-3xwd-9pta-hn4r")
    with pytest.raises(CodeFormatError, match="16 characters"):
        normalize_code("K7QM-3XWD-9PTA")
    with pytest.raises(CodeFormatError, match="'U'"):
        normalize_code("U7QM-3XWD-9PTA-HN4R")


def test_a_code_is_stored_as_a_salted_slow_hash() -> None:
    raw = normalize_code(new_code())
    stored = hash_code(raw)
    assert raw not in stored and stored.startswith("scrypt$8192$8$1$")
    assert stored != hash_code(raw)  # salted
    assert verify_code(raw, stored)
    assert not verify_code(raw[:-1] + ("0" if raw[-1] != "0" else "1"), stored)
    assert not verify_code(raw, "sha256$whatever")


def test_make_codes_never_reuses_an_id() -> None:
    taken = {f"{i:04d}" for i in range(100)}
    made = make_codes([SITE] * 20, 5, 86400, taken)
    ids = [record.code_id for record, _ in made]
    assert len(set(ids)) == 20 and not set(ids) & {f"{i:04d}" for i in range(100)}
    for record, code in made:
        assert code_id(normalize_code(code)) == record.code_id


def test_throttle_allows_a_burst_then_one_failure_a_minute() -> None:
    throttle = FailureThrottle(burst=3, per_minute=1.0)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1", now=0.0) == 0
        throttle.failed("10.0.0.1", now=0.0)
    assert throttle.retry_after("10.0.0.1", now=0.0) == pytest.approx(60.0)
    assert throttle.retry_after("10.0.0.2", now=0.0) == 0  # per address
    assert throttle.retry_after("10.0.0.1", now=30.0) == pytest.approx(30.0)
    assert throttle.retry_after("10.0.0.1", now=60.0) == 0


# -- the endpoint -----------------------------------------------------------------------


async def make_code(client: Client, site: str = SITE, uses: int = 5, expires: float = 3600) -> str:
    store = store_of(client)
    taken = {c.code_id for c in await store.list_enroll_codes()}
    ((record, code),) = make_codes([site], uses, expires, taken)
    await store.add_enroll_codes([record])
    return code


async def enroll(client: Client, code: str, **body: Any) -> tuple[int, dict[str, Any], Any]:
    payload = {"code": code, "hostname": "may-01", "role": "host", "agent_version": "0.1.0"}
    payload.update(body)
    resp = await client.post("/api/v1/enroll", json=payload)
    return resp.status, await resp.json(), resp.headers


async def send(client: Client, token: str, agent_id: str, site: str = SITE) -> tuple[int, Any]:
    body = encode(Batch(reports=[agent_report(site, agent_id=agent_id)]))
    resp = await client.post(
        "/api/v1/reports",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    return resp.status, await resp.json()


async def test_code_gives_a_credential_that_reports_for_its_site_and_agent(
    client: Client,
) -> None:
    code = await make_code(client)
    status, answer, _ = await enroll(client, code.lower().replace("-", ""), agent_id="pc-01")
    assert status == 201, answer
    assert answer["site"] == SITE and answer["agent_id"] == "pc-01"
    assert answer["site_name"] == "Xã An Bình"
    token = answer["token"]
    assert await send(client, token, "pc-01") == (
        200,
        {"accepted": 1, "duplicates": 0, "conflicts": 0},
    )
    # The credential speaks for its own agent and site only.
    status, error = await send(client, token, "pc-02")
    assert (status, error["error"], error["field"]) == (
        403,
        "agent_mismatch",
        "$.reports[0].agent_id",
    )
    status, error = await send(client, token, "pc-01", site=OTHER_SITE)
    assert (status, error["error"]) == (403, "site_mismatch")
    # Only hashes are stored: neither the code nor the token appears in the database.
    store = store_of(client)
    (agent,) = await store.enrolled_agents()
    assert (agent.agent_id, agent.site, agent.hostname, agent.role) == (
        "pc-01",
        SITE,
        "may-01",
        "host",
    )
    assert agent.last_report_at is not None
    db = Path(client.app[api.CONFIG].store.url.removeprefix("sqlite:///").join(["/", ""]))
    raw = b"".join(p.read_bytes() for p in db.parent.glob("collector.db*"))
    assert token.encode() not in raw and normalize_code(code).encode() not in raw


async def test_a_taken_agent_id_gets_a_suffix(client: Client) -> None:
    """Cloned PCs share a machine id: the second one is told a distinct id."""
    code = await make_code(client)
    first = (await enroll(client, code, agent_id="clone"))[1]["agent_id"]
    second = (await enroll(client, code, agent_id="clone"))[1]["agent_id"]
    assert first == "clone" and second.startswith("clone-") and len(second) == len("clone-") + 4


async def test_wrong_expired_and_used_up_codes_are_refused_and_issue_nothing(
    client: Client,
) -> None:
    store = store_of(client)
    good = await make_code(client, uses=1)
    expired = await make_code(client, expires=-1)
    status, answer, _ = await enroll(client, expired)
    assert (status, answer["error"], answer["field"]) == (403, "expired", "$.code")
    assert "hết hạn" in answer["message"] and "expired" in answer["message"]
    wrong = good[:-1] + ("X" if good[-1] != "X" else "Y")
    status, answer, _ = await enroll(client, wrong)
    assert (status, answer["error"]) == (403, "wrong_code")
    unknown_id = ("Z" if good[0] != "Z" else "Y") + good[1:]
    assert (await enroll(client, unknown_id))[1] == answer  # the same answer: no oracle
    assert (await enroll(client, good))[0] == 201
    status, answer, _ = await enroll(client, good)
    assert (status, answer["error"]) == (403, "used_up")
    assert len(await store.enrolled_agents()) == 1
    tokens = await store.list_tokens()
    assert len(tokens) == 1


async def test_guessing_is_throttled_per_address_and_locks_the_code(
    make_client: MakeClient, tmp_path: Path
) -> None:
    config = collector_config(
        tmp_path, enroll={"max_failures": 3, "throttle_burst": 5, "throttle_per_minute": 1}
    )
    client = await make_client(config)
    code = await make_code(client)
    wrong = code[:-1] + ("X" if code[-1] != "X" else "Y")
    for _ in range(3):
        assert (await enroll(client, wrong))[0] == 403
    # Locked: even the right code is refused now, and says why.
    status, answer, _ = await enroll(client, code)
    assert (status, answer["error"]) == (403, "locked")
    (stored,) = await store_of(client).list_enroll_codes()
    assert stored.failures == 3 and stored.locked_at is not None
    assert (await enroll(client, wrong))[0] == 403  # the 5th failure empties the bucket
    status, answer, headers = await enroll(client, code)
    assert (status, answer["error"]) == (429, "too_many_attempts")
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert await store_of(client).enrolled_agents() == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"not json", 400, "$"),
        (b"[]", 422, "$"),
        (b'{"hostname": "may"}', 422, "$"),
        (b'{"code": 12, "hostname": "may"}', 422, "$.code"),
        (b'{"code": "K7QM-3XWD-9PTA-HN4R", "hostname": ""}', 422, "$.hostname"),
        (b'{"code": "K7QM-3XWD-9PTA-HN4R", "hostname": "m", "role": "boss"}', 422, "$.role"),
        (b'{"code": "K7QM-3XWD-9PTA-HN4R", "hostname": "m", "agent_id": "a b"}', 422, "$.agent_id"),
        (b'{"code": "K7QM-3XWD-9PTA-HN4R", "hostname": "m", "extra": 1}', 422, "$"),
        (b'{"code": "K7QM-3XWD", "hostname": "m"}', 422, "$.code"),
        (b'{"code": "' + b"K" * 70 + b'", "hostname": "m"}', 422, "$.code"),
    ],
)
async def test_hostile_enroll_bodies_get_4xx_naming_the_field(
    client: Client, body: bytes, status: int, field: str
) -> None:
    resp = await client.post(
        "/api/v1/enroll", data=body, headers={"Content-Type": "application/json"}
    )
    answer = await resp.json()
    assert (resp.status, answer["field"]) == (status, field), answer
    assert await store_of(client).enrolled_agents() == []


async def test_oversized_and_wrong_media_enroll_bodies(client: Client) -> None:
    resp = await client.post(
        "/api/v1/enroll",
        data=b"{" + b" " * 10_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 413
    resp = await client.post(
        "/api/v1/enroll", data=b"code=x", headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415


async def test_revoking_one_agent_leaves_the_others_of_its_site_reporting(
    client: Client, tmp_path: Path
) -> None:
    code = await make_code(client)
    a = (await enroll(client, code, agent_id="pc-a"))[1]
    b = (await enroll(client, code, agent_id="pc-b"))[1]
    site_token = (await store_of(client).create_token(SITE, "old site token"))[1]
    assert (await send(client, a["token"], "pc-a"))[0] == 200
    # Revoked by another process (the CLI) on the same store, while the app serves.
    path = write_config(
        tmp_path, store={"url": client.app[api.CONFIG].store.url}, org=client.app[api.CONFIG].org
    )
    done = run_cli("agents", "revoke", "--config", str(path), "pc-a")
    assert done.returncode == 0, done.stderr
    # Another process's revocation counts within TOKENS_POLL_SECONDS (plus one reload).
    status, error = await eventually(
        lambda: send(client, a["token"], "pc-a"), lambda r: r[0] != 200
    )
    assert (status, error["error"]) == (403, "token_revoked")
    assert (await send(client, b["token"], "pc-b"))[0] == 200
    assert (await send(client, site_token, "any-pc"))[0] == 200  # site tokens keep working
    listed = run_cli("agents", "list", "--config", str(path), "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {r["agent_id"]: r["revoked"] is not None for r in rows} == {"pc-a": True, "pc-b": False}


# -- the store, both backends ------------------------------------------------------------


async def test_store_redeems_atomically_and_binds_the_credential(store: Store) -> None:
    ((record, _code),) = make_codes([SITE], 2, 3600, set())
    await store.add_enroll_codes([record])
    assert await store.get_enroll_code(record.code_id) == record
    now = time.time()
    made = []
    for name in ("pc-1", "pc-1", "pc-3"):
        token_id, token = new_token()
        agent = NewAgent(name, "host-" + name, "host", "0.1.0", token_id, hash_token(token))
        made.append((await store.redeem_enroll_code(record.code_id, agent, now), token))
    (ok1, t1), (ok2, _), (used_up, _) = made
    assert ok1 == ("ok", "pc-1") and ok2[0] == "ok" and ok2[1].startswith("pc-1-")
    assert used_up == ("used_up", "")
    found = await store.lookup_token(t1)
    assert found is not None and (found.site, found.agent_id) == (SITE, "pc-1")
    missing = await store.redeem_enroll_code("ZZZZ", agent, now)
    assert missing == ("unknown", "")
    await store.enroll_failed(record.code_id, 2)
    await store.enroll_failed(record.code_id, 2)
    locked = await store.get_enroll_code(record.code_id)
    assert locked is not None and locked.failures == 2 and locked.locked_at is not None
    assert await store.revoke_enroll_code(record.code_id) and not await store.revoke_enroll_code(
        "NONE"
    )
    await store.record_config_status(SITE, "pc-1", "v1", None, None)
    await store.record_config_status(SITE, ok2[1], "v1", "networks: bad", "v2")
    assert await store.config_error_counts() == {SITE: 1}
    agents = {a.agent_id: a for a in await store.enrolled_agents()}
    assert agents[ok2[1]].config_error == "networks: bad" and agents[ok2[1]].config_rejected == "v2"
    assert agents["pc-1"].config_version == "v1" and agents["pc-1"].revoked_at is None
    assert await store.revoke_agent("pc-1") and not await store.revoke_agent("nobody")
    revoked = await store.lookup_token(t1)
    assert revoked is not None and revoked.revoked_at is not None


# -- the commands -------------------------------------------------------------------------


def test_enroll_code_create_prints_the_code_alone_on_the_last_line(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    done = run_cli("enroll-code", "create", "--config", str(path), "--site", SITE, "--uses", "3")
    assert done.returncode == 0, done.stderr
    code = done.stdout.splitlines()[-1]
    assert normalize_code(code) and len(code) == 19
    assert "Xã An Bình" in done.stdout
    listed = run_cli("enroll-code", "list", "--config", str(path), "--json")
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["code_id"], row["site"], row["max_uses"], row["state"]) == (
        code[:4],
        SITE,
        3,
        "active",
    )
    assert code not in listed.stdout
    done = run_cli("enroll-code", "revoke", "--config", str(path), code)
    assert done.returncode == 0, done.stderr
    listed = run_cli("enroll-code", "list", "--config", str(path))
    assert "revoked" in listed.stdout


def test_enroll_codes_for_a_level_make_a_csv_and_xlsx_sheet(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    path = write_config(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    done = run_cli(
        "enroll-code", "create", "--config", str(path), "--level", "commune", "--out", str(out),
        "--expires", "30d",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    csv_path = Path(done.stdout.splitlines()[-1])
    assert csv_path.suffix == ".csv" and csv_path.parent == out
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert os.stat(csv_path).st_mode & 0o077 == 0
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][0] == "Mã đơn vị / Site id"
    sites = {r[0]: r for r in rows[1:]}
    assert set(sites) == {"demo/xa-an-binh", "demo/xa-binh-minh", "demo/phuong-hoa-binh"}
    assert sites["demo/xa-an-binh"][1] == "Xã An Bình"
    assert all(normalize_code(r[3]) for r in rows[1:])
    book = load_workbook(csv_path.with_suffix(".xlsx"))
    sheet = book.active
    assert sheet is not None
    cells = [[c.value for c in row] for row in sheet.iter_rows()]
    assert [str(v) for v in cells[1]] == [str(v) for v in rows[1]]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--site", "demo/nowhere"], "--site: unknown site 'demo/nowhere'"),
        (["--site", SITE, "--expires", "soon"], "--expires: 'soon' is not a duration"),
        (["--site", SITE, "--expires", "900d"], "--expires: '900d' must be between"),
        (["--site", SITE, "--uses", "0"], "--uses: 0 must be between"),
        (["--site", SITE, "--uses", "many"], "--uses: invalid int value"),
        (
            ["--all-sites", "--out", "/nonexistent/dir"],
            "--out: /nonexistent/dir is not a directory",
        ),
        (["--site", SITE, "--level", "commune"], "not allowed with argument"),
    ],
)
def test_enroll_code_create_refuses_bad_options_with_exit_2(
    tmp_path: Path, args: list[str], named: str
) -> None:
    path = write_config(tmp_path)
    done = run_cli("enroll-code", "create", "--config", str(path), *args)
    assert done.returncode == 2, done.stdout
    assert named in done.stderr
    db = tmp_path / "collector.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM enroll_codes").fetchone() == (0,)


def test_agents_list_rejects_an_unknown_site_and_revoke_an_unknown_agent(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    done = run_cli("agents", "list", "--config", str(path), "--site", "demo/nowhere")
    assert done.returncode == 2 and "--site: unknown site 'demo/nowhere'" in done.stderr
    done = run_cli("agents", "revoke", "--config", str(path), "nobody")
    assert done.returncode == 1 and "no enrolled agent 'nobody'" in done.stderr

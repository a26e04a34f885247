"""Tokens end to end: created and revoked with the CLI while a real collector process
serves; revocation takes effect within a second (``TOKENS_POLL_SECONDS``), and changes
made through the serving process on its very next request."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.report import Batch, encode
from collector.auth import Authenticator, AuthFailure, bearer_token
from collector.store.sqlite import SQLiteStore
from tests.collector.conftest import (
    OTHER_SITE,
    SITE,
    CollectorProcess,
    agent_report,
    eventually,
    run_cli,
)
from tests.netns import wait_for


def post(url: str, token: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/api/v1/reports",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, AuthFailure("missing")),
        ("", AuthFailure("missing")),
        ("Bearer", AuthFailure("malformed")),
        ("Basic dXNlcjpwYXNz", AuthFailure("malformed")),
        ("Bearer a b", AuthFailure("malformed")),
        ("Bearer " + "x" * 400, AuthFailure("malformed")),
        ("Bearer tok\u00e9n", AuthFailure("malformed")),
        ("Bearer hat_abc_DEF-123", "hat_abc_DEF-123"),
        ("bearer  hat_abc_DEF-123 ", "hat_abc_DEF-123"),
    ],
)
def test_bearer_header_parsing(header: str | None, expected: object) -> None:
    assert bearer_token(header) == expected


def test_cli_tokens_work_and_revocation_counts_within_a_second(
    collector_process: Callable[..., CollectorProcess],
) -> None:
    server = collector_process()
    config = str(server.config_path)
    created = run_cli("token", "create", "--config", config, "--site", SITE)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]
    token_id = token.split("_")[1]

    def send() -> tuple[int, dict[str, Any]]:
        return post(server.url, token, encode(Batch(reports=[agent_report()])))

    status, body = wait_for(lambda: (r := send())[0] != 401 and r, timeout=10)
    assert (status, body["accepted"]) == (200, 1)

    # The token belongs to one site: reporting for a neighbour is refused.
    status, body = post(server.url, token, encode(Batch(reports=[agent_report(OTHER_SITE)])))
    assert (status, body["error"], body["field"]) == (403, "site_mismatch", "$.reports[0].site")

    revoked = run_cli("token", "revoke", "--config", config, token_id)
    assert revoked.returncode == 0, revoked.stderr
    status, body = wait_for(lambda: (r := send())[0] != 200 and r, timeout=10)
    assert (status, body["error"]) == (403, "token_revoked")
    assert token_id in body["message"]

    assert server.stop() == 0  # a clean stop flushes last-used times
    listing = run_cli("token", "list", "--config", config, "--json")
    [row] = [json.loads(line) for line in listing.stdout.splitlines()]
    assert row["id"] == token_id and row["site"] == SITE
    assert row["revoked"] is not None and row["last_used"] is not None
    assert token not in listing.stdout


async def test_token_changes_by_another_connection_count_within_the_poll_delay(
    tmp_path: Path,
) -> None:
    """The serving store answers token checks from memory without I/O on the loop, yet a
    token created or revoked through another connection to the same file (what
    ``hatang-collector token`` in another process does) counts within the documented delay,
    and one revoked through the serving store on its very next check; last-use bookkeeping
    needs no reload."""
    serving, admin = SQLiteStore(tmp_path / "c.db"), SQLiteStore(tmp_path / "c.db")
    await serving.open()
    await admin.open()
    try:
        auth = Authenticator(serving)
        assert await auth.authenticate("Bearer hat_nope_x") == AuthFailure("unknown")
        token_id, token = await admin.create_token(SITE, "new")
        record = await eventually(
            lambda: auth.authenticate(f"Bearer {token}"),
            lambda r: not isinstance(r, AuthFailure),
        )
        assert not isinstance(record, AuthFailure) and record.site == SITE
        for _ in range(3):  # served from memory while nothing changes
            assert not isinstance(await auth.authenticate(f"Bearer {token}"), AuthFailure)
        assert await admin.revoke_token(token_id)
        refused = await eventually(
            lambda: auth.authenticate(f"Bearer {token}"), lambda r: isinstance(r, AuthFailure)
        )
        assert refused == AuthFailure("revoked", token_id)
        used = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        await serving.touch_tokens({token_id: used})
        found = await serving.lookup_token(token)
        assert found is not None and found.last_used_at == used
        [listed] = await admin.list_tokens()
        assert listed.last_used_at == used and listed.revoked_at is not None
        other_id, other = await serving.create_token(SITE, "made here")
        assert not isinstance(await auth.authenticate(f"Bearer {other}"), AuthFailure)
        assert await serving.revoke_token(other_id)  # through the serving store: at once
        assert await auth.authenticate(f"Bearer {other}") == AuthFailure("revoked", other_id)
    finally:
        await admin.close()
        await serving.close()

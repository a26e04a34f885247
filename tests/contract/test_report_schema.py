"""The wire format contract: the schema file, the structs and ``check --json`` agree.

``agent/report.schema.json`` is what the collector (and anyone else) validates reports
against; ``agent.report`` is what both programs decode with. The JSON that
``hatang-agent check --json`` prints must pass both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import msgspec
import pytest

from agent.report import SCHEMA_PATH, decode_batch, decode_report, render_schema

REPO = Path(__file__).resolve().parents[2]


def test_schema_file_is_generated_from_the_structs() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), (
        "agent/report.schema.json is out of date: run `python3 -m agent.report`"
    )


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _check_json(config: Path) -> tuple[int, dict[str, Any], bytes]:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config), "--json"],
        capture_output=True,
        timeout=180,
        cwd=REPO,
    )
    assert result.returncode in (0, 1), result.stderr.decode()
    return result.returncode, json.loads(result.stdout), result.stdout


def test_check_json_validates_against_schema_and_decodes(
    tmp_path: Path, listener: int, closed_port: int
) -> None:
    """Host role with every host section on (inventory, antivirus, firewall)."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don/bang-lung\n"
        "role: host\n"
        "networks:\n"
        f'  lan: {{targets: [{{kind: tcp, address: "127.0.0.1:{listener}"}}]}}\n'
        f'  wan: {{targets: [{{kind: tcp, address: "127.0.0.1:{closed_port}", timeout: 2s}}]}}\n'
        "  internet:\n"
        "    rule: all\n"
        f'    targets: [{{kind: tcp, address: "127.0.0.1:{listener}", name: web}}]\n',
        encoding="utf-8",
    )
    code, report, raw = _check_json(config)
    assert code == 1  # wan is down

    errors = sorted(_validator().iter_errors({"reports": [report]}), key=str)
    assert errors == [], "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)

    decoded = decode_report(raw)
    assert decoded.site == "bac-kan/cho-don/bang-lung"
    assert decoded.networks.lan.up is True
    assert decoded.networks.wan.up is False
    assert decoded.networks.wan.targets[0].error == "refused"
    assert decoded.networks.internet.targets[0].target == "web"
    assert decoded.networks.dedicated.configured is False
    assert decoded.host is not None
    # The collector parses batches: the same report as a request body.
    assert decode_batch(b'{"reports": [' + raw + b"]}").reports[0] == decoded


def test_schema_rejects_what_the_decoder_rejects(tmp_path: Path, listener: int) -> None:
    """The schema is not looser than the structs on the contract's key fields."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        "site: bac-kan/cho-don/bang-lung\n"
        f'networks: {{lan: {{targets: [{{kind: tcp, address: "127.0.0.1:{listener}"}}]}}}}\n'
        "antivirus: {enabled: false}\ninventory: {enabled: false}\n",
        encoding="utf-8",
    )
    _, report, _ = _check_json(config)
    validator = _validator()
    mutations: list[Callable[[dict[str, Any]], object]] = [
        lambda r: r.update(site="Not A Site"),
        lambda r: r["networks"]["lan"]["targets"][0].update(kind="ping"),
        lambda r: r["networks"]["lan"]["targets"][0].update(loss_ratio=1.5),
        lambda r: r.pop("agent_id"),
    ]
    for mutate in mutations:
        bad = json.loads(json.dumps(report))
        mutate(bad)
        assert not validator.is_valid({"reports": [bad]})
        with pytest.raises(msgspec.ValidationError):
            decode_report(json.dumps(bad).encode())

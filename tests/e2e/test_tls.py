"""TLS between the real agent and the real collector, with a test CA made by the test.

One ``hatang-collector serve`` with ``listen.cert_file/key_file`` (a certificate for
127.0.0.1 from the test CA) and four ``hatang-agent run`` processes at once:

- ``collector.ca_file`` = the test CA: reports are delivered;
- ``ca_file`` = another CA: refused, the reports stay in the spool, an ERROR line says
  the certificate was not trusted;
- the right CA but the URL names ``localhost`` (not in the certificate): refused too;
- ``verify_tls: false``: delivered, with a warning at start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trustme

from tests.agent.test_daemon import Agent, queued
from tests.collector.conftest import SITE
from tests.e2e.test_hostile import (  # the fixtures are shared with the access tests
    Collector,
    events,
    processes,  # noqa: F401
    start_agent,
)
from tests.netns import wait_for


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_agents_trust_only_the_collector_certificate_of_their_ca(
    tmp_path: Path,
    listener: int,
    processes: list[Collector | Agent],  # noqa: F811
) -> None:
    ca, other_ca = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")  # an IP SAN only: "localhost" does not match
    pki = tmp_path / "pki"
    pki.mkdir()
    listen_tls = {
        "cert_file": write(pki / "collector.pem", cert.cert_chain_pems[0].bytes()),
        "key_file": write(pki / "collector.key", cert.private_key_pem.bytes()),
    }
    ca_file = write(pki / "ca.pem", ca.cert_pem.bytes())
    other_ca_file = write(pki / "other-ca.pem", other_ca.cert_pem.bytes())

    collector = Collector(tmp_path)
    config = collector.config.read_text(encoding="utf-8")
    collector.config.write_text(
        config.replace("listen:", f"listen:\n  cert_file: {listen_tls['cert_file']}\n"
                       f"  key_file: {listen_tls['key_file']}", 1),
        encoding="utf-8",
    )  # fmt: skip
    tokens = {name: collector.token(SITE)[1] for name in ("good", "other", "name", "insecure")}
    processes.append(collector.start())
    assert "url=https://127.0.0.1:" in collector.text()
    url = f"https://127.0.0.1:{collector.port}"
    wrong_name = f"https://localhost:{collector.port}"

    agents: dict[str, Agent] = {}
    spools: dict[str, Path] = {}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("good", url, {"ca_file": ca_file}),
        ("other", url, {"ca_file": other_ca_file}),
        ("name", wrong_name, {"ca_file": ca_file}),
        ("insecure", url, {"ca_file": other_ca_file, "verify_tls": False}),
    ]
    for name, agent_url, extra in cases:
        agents[name], spools[name] = start_agent(
            tmp_path, name, agent_url, tokens[name], SITE, listener, **extra
        )
        processes.append(agents[name])

    def settled() -> bool:
        stored = collector.stored_ids()
        delivered = all(
            len({i for i, _ in queued(spools[n])}) == 0 and len(stored) >= 2 for n in ("good",)
        )
        refused = all(
            len(queued(spools[n])) >= 3 and len(events(agents[n], "send.tls_refused")) >= 2
            for n in ("other", "name")
        )
        insecure = len(events(agents["insecure"], "report.sent")) >= 2
        return delivered and refused and insecure

    wait_for(settled, timeout=90)
    stored = collector.stored_ids()
    for name in ("other", "name"):
        assert not {i for i, _ in queued(spools[name])} & stored
        assert not events(agents[name], "report.sent")
        line = events(agents[name], "send.tls_refused")[0]
        assert "level=error" in line and "queued_kept=True" in line, line
        assert "certificate not trusted" in line, line
    assert (
        "unable to get local issuer certificate" in events(agents["other"], "send.tls_refused")[0]
    )
    assert "mismatch" in events(agents["name"], "send.tls_refused")[0]
    assert events(agents["good"], "report.sent")
    [warning] = events(agents["insecure"], "sender.tls_unverified")
    assert "level=warning" in warning
    for agent in agents.values():
        assert "Traceback" not in agent.text()
    assert "Traceback" not in collector.text()

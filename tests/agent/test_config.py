"""Agent config: every bad file gets one exact message naming file and key path.

The table follows blackbox_exporter's ``config/testdata/invalid-*.yml``: each broken
file sits in ``tests/testdata/agent`` and is listed here with the message a person
sees. The example config must load and document every key of every config struct.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
import yaml

from agent.config import (
    AgentConfig,
    ConfigError,
    load_config,
    parse_config,
    redact_url,
    security_warnings,
)
from agent.probes import PROBES

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "tests" / "testdata" / "agent"
EXAMPLE = REPO / "configs" / "agent.example.yaml"

# (file, the message after "<file>: ") — one row per file in tests/testdata/agent.
INVALID = [
    (
        "invalid-agent-id.yaml",
        "agent_id: 'may tinh 01' is not an agent id (expected 1-64 letters, digits, "
        "'.', '_', ':' or '-')",
    ),
    ("invalid-collector-retry.yaml", "collector.retry_max: 60s is less than retry_initial (600s)"),
    ("invalid-collector-too-many-urls.yaml", "collector.url: too many items: 9 (at most 8)"),
    (
        "invalid-collector-token-both.yaml",
        "collector.token_file: set either token or token_file, not both",
    ),
    (
        "invalid-collector-token-neither.yaml",
        "collector.token: required (or token_file: a file holding the agent's token)",
    ),
    (
        "invalid-collector-plain-http.yaml",
        "collector.url: 'http://10.10.0.10:8080': gửi mã thông báo không mã hoá / would send "
        "the agent's token and reports unencrypted over http:// to another machine; use "
        "https:// (or, knowingly, set allow_insecure: true in the collector section)",
    ),
    (
        "invalid-collector-url-credentials.yaml",
        "collector.url[1]: 'https://***@hatang.bac-kan.gov.vn' contains credentials "
        "(user:password@); the token goes in token or token_file (expected "
        "http(s)://host[:port], e.g. https://10.10.0.10:8443)",
    ),
    (
        "invalid-collector-url-list.yaml",
        "collector.url[1]: 'https://hatang.bac-kan.gov.vn:99999' has an invalid port "
        "(expected http(s)://host[:port], e.g. https://10.10.0.10:8443)",
    ),
    (
        "invalid-collector-url.yaml",
        "collector.url: '10.10.0.10:8443' does not start with http:// or https:// "
        "(expected http(s)://host[:port], e.g. https://10.10.0.10:8443)",
    ),
    ("invalid-binary-value.yaml", "site: expected a string, got binary data (!!binary)"),
    ("invalid-comments-only.yaml", "file is empty (expected at least site:)"),
    (
        "invalid-dns-query.yaml",
        "networks.internet.targets[0].query: invalid host 'dichvucong gov vn' "
        "(expected an IP address or a DNS name)",
    ),
    (
        "invalid-duplicate-key.yaml",
        "line 4, column 1: duplicate key 'interval' (each key may appear once per mapping)",
    ),
    (
        "invalid-duplicate-target.yaml",
        "networks.wan.targets[2]: duplicate target '10.10.0.10' (same as targets[0]; "
        "give one of them a distinct name)",
    ),
    ("invalid-empty.yaml", "file is empty (expected at least site:)"),
    (
        "invalid-http-url.yaml",
        "networks.internet.targets[0].address: invalid URL 'dichvucong.gov.vn': "
        "scheme must be http or https",
    ),
    (
        "invalid-icmp-address.yaml",
        "networks.lan.targets[0].address: invalid host '192.168.1.1/24' (expected an "
        "IP address or a DNS name)",
    ),
    (
        "invalid-icmp-count.yaml",
        "networks.lan.targets[0].count: 1000 is out of range (expected an integer from 1 to 100)",
    ),
    (
        "invalid-interval-duration.yaml",
        "interval: '5 minutes' is not a duration (expected a number of seconds or a "
        "number with a unit: 500ms, 30s, 5m, 1h, 7d)",
    ),
    ("invalid-interval-too-short.yaml", "interval: 0.5s is too short (at least 1s)"),
    ("invalid-jitter-range.yaml", "jitter: 0.9 is out of range (expected a number from 0 to 0.5)"),
    (
        "invalid-kind-missing.yaml",
        "networks.lan.targets[0].kind: required key is missing (one of icmp, tcp, dns, http)",
    ),
    ("invalid-log-level.yaml", "log.level: 'verbose' is not one of: debug, error, info, warning"),
    ("invalid-log-rotation-size.yaml", "log.max_size: 1000 bytes is too small (at least 10kB)"),
    (
        "invalid-log-rotation-backups.yaml",
        "log.backups: 0 is out of range (expected an integer from 1 to 100)",
    ),
    (
        "invalid-negative-timeout.yaml",
        "networks.internet.targets[0].timeout: '-5s' is negative (expected a duration"
        " of 0 or more)",
    ),
    ("invalid-non-text-key.yaml", "networks: key 1 is not text (quote it)"),
    (
        "invalid-probe-kind.yaml",
        "networks.lan.targets[0].kind: 'ping' is not a probe kind (expected one of "
        "icmp, tcp, dns, http)",
    ),
    ("invalid-role.yaml", "role: 'probe' is not one of: host, site-probe"),
    ("invalid-rule.yaml", "networks.wan.rule: 'most' is not one of: all, any"),
    ("invalid-section-null.yaml", "networks: no value given (expected a mapping of keys)"),
    (
        "invalid-site-format.yaml",
        "site: 'Bac Kan/Cho Don' is not a unit id (expected lowercase words joined by"
        " '-' and '/', e.g. bac-kan/cho-don/bang-lung)",
    ),
    ("invalid-site-missing.yaml", "site: required key is missing"),
    (
        "invalid-spool-size.yaml",
        "spool.max_size: '200 megabytes' is not a size (expected a number of bytes or"
        " a number with a unit: 512KB, 200MB, 1GiB)",
    ),
    (
        "invalid-tab-indent.yaml",
        "line 3, column 1: found character '\\t' that cannot start any token (indent "
        "with spaces, not tabs)",
    ),
    (
        "invalid-target-not-mapping.yaml",
        "networks.lan.targets[0]: expected a mapping of keys, got a string "
        "'192.168.1.1'; write a target as {kind: icmp, address: 192.168.1.1}",
    ),
    (
        "invalid-tcp-port-missing.yaml",
        "networks.dedicated.targets[1].address: port missing (expected host:port)",
    ),
    (
        "invalid-tcp-port-range.yaml",
        "networks.wan.targets[0].address: invalid port '84430' (expected 1-65535)",
    ),
    ("invalid-top-level-list.yaml", "expected a mapping of keys at the top level, got a list"),
    (
        "invalid-unknown-key-no-match.yaml",
        "spool: unknown key 'location' (expected one of: path, max_size)",
    ),
    ("invalid-unknown-key.yaml", "unknown key 'intervall' (did you mean 'interval'?)"),
    (
        "invalid-unknown-network.yaml",
        "networks: unknown key 'dedicate' (did you mean 'dedicated'?)",
    ),
    (
        "invalid-unknown-target-key.yaml",
        "networks.lan.targets[0]: unknown key 'cuont' (did you mean 'count'?)",
    ),
    (
        "invalid-wrong-type.yaml",
        "inventory.enabled: expected true or false, got a string 'sometimes'",
    ),
    (
        "invalid-yaml-syntax.yaml",
        "line 4, column 1: expected ',' or ']', but got '<stream end>' (while parsing"
        " a flow sequence at line 3, column 18)",
    ),
    (
        "invalid-yes-as-string.yaml",
        "log.file: expected a string, got a boolean true (YAML reads yes/no/on/off as"
        " true/false: quote the text)",
    ),
    (
        "invalid-throughput-interval.yaml",
        "throughput.interval: 60s is too short (at least 10m)",
    ),
    (
        "invalid-throughput-max-bytes.yaml",
        "throughput.max_bytes: 1000000000 bytes is out of range (16KB to 100MB)",
    ),
    (
        "invalid-throughput-network.yaml",
        "throughput.targets[0].network: 'lan' is not one of: dedicated, internet, wan",
    ),
    (
        "invalid-throughput-role.yaml",
        "throughput.roles[0]: 'server' is not one of: host, site-probe",
    ),
    (
        "invalid-throughput-stall.yaml",
        "throughput.stall_timeout: 10s is out of range (100ms to max_duration, 5s)",
    ),
    (
        "invalid-throughput-url.yaml",
        "throughput.targets[0].url: 'ftp://10.10.0.10/payload' does not start with"
        " http:// or https:// (expected http(s)://host[:port]/path, e.g."
        " https://10.10.0.10:8443/api/v1/throughput?bytes=4000000)",
    ),
    (
        "invalid-uplink-both.yaml",
        "snmp.devices[0].uplinks.dedicated.if_name: set exactly one of if_name or"
        ' if_index (e.g. "Gi0/1" or 3)',
    ),
    (
        "invalid-uplink-class.yaml",
        "snmp.devices[0].uplinks: unknown key 'lan' (did you mean 'wan'?)",
    ),
    (
        "invalid-uplink-snmp-interval.yaml",
        "snmp: interval 60s is shorter than the report interval (300s); with uplinks"
        " configured it must be at least as long",
    ),
    (
        "invalid-uplink-index.yaml",
        "snmp.devices[0].uplinks.wan.if_index: 0 is out of range (expected an integer"
        " from 1 to 2147483647)",
    ),
]


def test_every_invalid_file_is_in_the_table() -> None:
    files = {p.name for p in TESTDATA.glob("invalid-*.yaml")}
    assert files == {name for name, _ in INVALID}


@pytest.mark.parametrize(("name", "expected"), INVALID, ids=[n for n, _ in INVALID])
def test_invalid_config_is_rejected_with_exact_message(name: str, expected: str) -> None:
    path = TESTDATA / name
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {expected}"
    assert info.value.file == str(path)


def test_minimal_config_gets_defaults() -> None:
    config = parse_config({"site": "bac-kan/cho-don/bang-lung"}, "agent.yaml")
    assert config.role == "host"
    assert config.interval == 60.0
    assert config.collector is None
    assert config.networks.wan is None
    assert config.antivirus.max_signature_age == 7 * 86400.0
    assert config.spool.max_size == 200_000_000


def test_design_example_loads(tmp_path: Path) -> None:
    """The agent config block of DESIGN.md, verbatim."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        """\
site: bac-kan/cho-don/bang-lung        # unit id known to the collector
role: host                              # or site-probe (LAN discovery, SNMP)
interval: 60s                           # how often checks run (first run at start)
collector: {url: "https://10.10.0.10:8443", token_file: /etc/hatang/token}  # or token:
spool: {path: /var/lib/hatang/spool.db}
networks:                               # any subset of the four classes
  lan:       {targets: [{kind: icmp, address: 192.168.1.1}]}
  wan:       {targets: [{kind: tcp,  address: "10.10.0.10:8443"}]}
  dedicated: {targets: [{kind: icmp, address: 10.200.0.5}, {kind: tcp, address: "10.200.0.5:443"}]}
  internet:  {targets: [{kind: dns, address: 203.0.113.53, query: dichvucong.gov.vn},
                        {kind: http, address: "https://dichvucong.gov.vn/"}]}
""",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.collector is not None
    assert config.collector.urls == ["https://10.10.0.10:8443"]
    dedicated = config.networks.dedicated
    assert dedicated is not None
    assert [t.kind for t in dedicated.targets] == ["icmp", "tcp"]
    assert [t.label for t in dedicated.targets] == ["10.200.0.5", "10.200.0.5:443"]


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_binary_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"site: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == "not UTF-8 text (byte 6)"


def test_huge_file_is_rejected_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: a\n" + "# padding\n" * 200_000, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.message == "file is larger than 1 MiB"


def test_bom_is_accepted(tmp_path: Path) -> None:
    """Windows Notepad saves UTF-8 with a byte order mark."""
    path = tmp_path / "agent.yaml"
    path.write_bytes("\ufeffsite: bac-kan/cho-don/bang-lung\n".encode())
    assert load_config(path).site == "bac-kan/cho-don/bang-lung"


def test_probe_option_errors_name_the_option(tmp_path: Path) -> None:
    data = {
        "site": "a",
        "networks": {"lan": {"targets": [{"kind": "icmp", "address": "10.0.0.1", "count": 0}]}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "agent.yaml")
    assert str(info.value) == (
        "agent.yaml: networks.lan.targets[0].count: 0 is out of range "
        "(expected an integer from 1 to 100)"
    )


def _collector(**extra: Any) -> dict[str, Any]:
    return {"site": "a", "collector": {"url": "https://127.0.0.1:8443", **extra}}


def test_token_file_is_read_and_trimmed(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  s3cr3t-token\n", encoding="utf-8")
    config = parse_config(_collector(token_file=str(token)))
    assert config.collector is not None
    assert config.collector.read_token() == "s3cr3t-token"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("\n", "{path} is empty"),
        ("one two\n", "{path} holds more than one token"),
    ],
    ids=["missing", "empty", "two-words"],
)
def test_unusable_token_file(tmp_path: Path, content: str | None, expected: str) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content, encoding="utf-8")
    config = parse_config(_collector(token_file=str(token)))
    assert config.collector is not None
    with pytest.raises(ConfigError) as info:
        config.collector.read_token()
    error = info.value.in_file("agent.yaml")
    assert str(error) == f"agent.yaml: collector.token_file: {expected.format(path=token)}"


def test_inline_token_is_used_as_is() -> None:
    config = parse_config(_collector(token="abc123"))
    assert config.collector is not None
    assert config.collector.read_token() == "abc123"


# --- the example config ---------------------------------------------------------------


def _uncommented(text: str) -> str:
    """Turn every commented-out setting ("# key: value") on; "##" lines are prose."""
    return re.sub(r"(?m)^(\s*)# ", r"\1", text)


def _struct_types(info: Any) -> list[Any]:
    """Every struct type reachable from ``info`` (each probe kind's options included)."""
    found: list[Any] = []

    def visit(t: Any) -> None:
        if isinstance(t, mi.Metadata):
            visit(t.type)
        elif isinstance(t, mi.UnionType):
            for option in t.types:
                visit(option)
        elif isinstance(t, mi.ListType):
            visit(t.item_type)
        elif isinstance(t, mi.StructType) and all(t.cls is not f.cls for f in found):
            found.append(t)
            for field in t.fields:
                visit(field.type)

    visit(info)
    return found


def _seen_keys(info: Any, value: Any, seen: dict[type, set[str]]) -> None:
    """Record, per struct type, the keys the example writes wherever that type occurs."""
    if isinstance(info, mi.Metadata):
        _seen_keys(info.type, value, seen)
    elif isinstance(info, mi.UnionType):
        for option in info.types:
            if isinstance(option, mi.StructType) and isinstance(value, dict):
                if option.tag is None or value.get(option.tag_field) == option.tag:
                    _seen_keys(option, value, seen)
            elif isinstance(option, mi.ListType) and isinstance(value, list):
                _seen_keys(option, value, seen)
    elif isinstance(info, mi.ListType) and isinstance(value, list):
        for item in value:
            _seen_keys(info.item_type, item, seen)
    elif isinstance(info, mi.StructType) and isinstance(value, dict):
        seen.setdefault(info.cls, set()).update(value)
        for field in info.fields:
            if field.encode_name in value:
                _seen_keys(field.type, value[field.encode_name], seen)


def _example_all_on() -> dict[str, Any]:
    data = yaml.safe_load(_uncommented(EXAMPLE.read_text(encoding="utf-8")))
    assert isinstance(data, dict)
    return data


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.site == "bac-kan/cho-don/bang-lung"
    assert {n for n in ("lan", "wan", "dedicated", "internet") if config.networks.get(n)} == {
        "lan",
        "wan",
        "dedicated",
        "internet",
    }


def test_example_config_documents_every_key() -> None:
    """Every key of every config struct (and of every probe kind) appears in the example."""
    root = mi.type_info(AgentConfig)
    seen: dict[type, set[str]] = {}
    _seen_keys(root, _example_all_on(), seen)
    missing = [
        f"{struct.cls.__module__}.{struct.cls.__qualname__}.{field.encode_name}"
        for struct in _struct_types(root)
        for field in struct.fields
        if field.encode_name not in seen.get(struct.cls, set())
    ]
    assert missing == [], f"configs/agent.example.yaml does not document: {missing}"


def test_example_documents_every_probe_kind() -> None:
    targets = [
        t for network in _example_all_on()["networks"].values() for t in network.get("targets", [])
    ]
    assert {t["kind"] for t in targets} == set(PROBES)


def test_example_defaults_are_valid() -> None:
    """With every commented-out value switched on, the file still validates.

    Keys that are alternatives to an active key (token vs token_file, a secret vs its
    file) are removed first: setting both is an error by design.
    """
    data = _example_all_on()
    del data["collector"]["token"]
    for device in data["snmp"]["devices"]:
        device.pop("community_file", None)
        for key in ("auth_key_file", "priv_key_file"):
            (device.get("v3") or {}).pop(key, None)
    config = parse_config(data, "agent.example.yaml (all settings on)")
    assert config.role == "host"


def test_example_defaults_match_the_structs() -> None:
    """A commented-out value claims to be the default: check it for the top sections."""
    data = _example_all_on()
    defaults = AgentConfig(site="x")
    for section in ("inventory", "antivirus", "discovery"):
        shown = parse_config({"site": "x", section: data[section]})
        documented = msgspec.structs.asdict(getattr(shown, section))
        actual = msgspec.structs.asdict(getattr(defaults, section))
        # Example values that are deliberately not defaults (examples of a setting).
        for key in ("interface", "subnets", "clamav_database_dir"):
            documented.pop(key, None)
            actual.pop(key, None)
        assert documented == actual, section


def test_plain_http_is_allowed_to_loopback_and_when_the_config_says_so() -> None:
    for url, extra in (
        ("http://127.0.0.1:8080", {}),
        ("http://localhost:8080", {}),
        ("http://[::1]:8080", {}),
        ("http://10.10.0.10:8080", {"allow_insecure": True}),
    ):
        config = parse_config(_collector(url=url, token="abc", **extra))
        assert config.collector is not None and config.collector.urls == [url]
    config = parse_config(_collector(url="http://10.10.0.10:8080", token="a", allow_insecure=True))
    assert [key for key, _ in security_warnings(config)] == ["collector.url"]


def test_a_secret_file_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t\n", encoding="utf-8")
    token.chmod(0o600)
    config = parse_config(_collector(token_file=str(token)))
    assert security_warnings(config) == []
    token.chmod(0o644)
    ((key, text),) = security_warnings(config)
    assert key == "collector.token_file"
    assert text == (
        f"tệp bí mật {token} để người khác đọc được / the secret file {token} is readable "
        f"by other users; run: chmod 600 {token}"
    )
    assert config.collector is not None and config.collector.read_token() == "s3cr3t"


def test_redact_url_hides_credentials_only() -> None:
    assert redact_url("https://admin:s3cret@10.0.0.1:8443/x@y") == "https://***@10.0.0.1:8443/x@y"
    assert redact_url("https://10.0.0.1:8443/") == "https://10.0.0.1:8443/"

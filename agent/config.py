"""Agent configuration: YAML validated completely at load into frozen structs.

Defaults are applied by the structs, unknown keys are rejected, and every error names
the file and the key path (``agent.yaml: networks.dedicated.targets[1].address: port
missing (expected host:port)``). The same schema will validate centrally distributed
configuration later, so nothing here reads the network or the spool.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from agent.probes import PROBES, TargetConfig
from agent.probes.base import PortNumber
from agent.report import NETWORK_CLASSES, NetworkClass, Role, SiteId
from agent.units import Duration, Size, dec_hook


class ConfigError(Exception):
    """A configuration problem: the file, the key path and what is wrong."""

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file, self.path, self.message = file, path, message
        super().__init__(f"{file}: {path}: {message}" if path else f"{file}: {message}")


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for config sections: immutable, unknown keys are errors."""


def _default_state_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "hatang"
    return Path("/var/lib/hatang")


class NetworkConfig(_Section, frozen=True):
    """One network class: its targets and when the class counts as up."""

    targets: Annotated[list[TargetConfig], msgspec.Meta(max_length=64)] = []
    rule: Literal["any", "all"] = "any"  # any: one target answering is enough


class NetworksConfig(_Section, frozen=True):
    lan: NetworkConfig | None = None  # no lan targets: the default gateway is probed
    wan: NetworkConfig | None = None
    dedicated: NetworkConfig | None = None
    internet: NetworkConfig | None = None

    def get(self, network: NetworkClass) -> NetworkConfig | None:
        """Return one class's config by name."""
        value: NetworkConfig | None = getattr(self, network)
        return value


class CollectorConfig(_Section, frozen=True):
    """Where reports go. ``url`` may list several, tried in order (WAN first, then internet)."""

    url: str | Annotated[list[str], msgspec.Meta(min_length=1, max_length=8)]
    token: str | None = None
    token_file: str | None = None
    ca_file: str | None = None  # extra CA for the collector's certificate
    verify_tls: bool = True
    timeout: Duration = Duration(30.0)
    batch_max_reports: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    batch_max_bytes: Size = Size(1_000_000)
    retry_initial: Duration = Duration(5.0)
    retry_max: Duration = Duration(600.0)

    def __post_init__(self) -> None:
        for url in self.urls:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"invalid url {url!r} (expected http(s)://host[:port])")
        if (self.token is None) == (self.token_file is None):
            raise ValueError("set exactly one of token or token_file")

    @property
    def urls(self) -> list[str]:
        """The collector URLs in the order they are tried."""
        return [self.url] if isinstance(self.url, str) else list(self.url)

    def read_token(self) -> str:
        """Return the bearer token; raise ConfigError when the token file is unusable."""
        if self.token is not None:
            return self.token
        assert self.token_file is not None
        try:
            token = Path(self.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError("", "collector.token_file", f"cannot read: {exc}") from exc
        if not token:
            raise ConfigError("", "collector.token_file", f"{self.token_file} is empty")
        return token


class SpoolConfig(_Section, frozen=True):
    path: str = str(_default_state_dir() / "spool.db")
    max_size: Size = Size(200_000_000)  # when full, the oldest reports are dropped and counted


class InventoryConfig(_Section, frozen=True):
    enabled: bool = True
    interval: Duration = Duration(3600.0)


class AntivirusConfig(_Section, frozen=True):
    enabled: bool = True
    interval: Duration = Duration(900.0)
    max_signature_age: Duration = Duration(7 * 86400.0)  # older signatures are "outdated"
    command_timeout: Duration = Duration(30.0)


class DiscoveryConfig(_Section, frozen=True):
    """Site probe only: ARP sweep of the office LAN."""

    enabled: bool = True
    interval: Duration = Duration(600.0)
    interface: str | None = None  # default: the interface of the default route
    subnets: Annotated[list[str], msgspec.Meta(max_length=16)] = []  # default: the interface's
    max_prefix: Annotated[int, msgspec.Meta(ge=16, le=32)] = 22  # refuse wider sweeps
    rate: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 500  # packets per second
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    timeout: Duration = Duration(1.0)  # wait after the last packet of each round
    port_check: bool = False  # light TCP check to tell computers from printers


class SnmpAuth(_Section, frozen=True):
    user: str
    auth_protocol: Literal["md5", "sha", "sha224", "sha256", "sha384", "sha512"] | None = None
    auth_key: str | None = None
    auth_key_file: str | None = None
    priv_protocol: Literal["des", "3des", "aes", "aes192", "aes256"] | None = None
    priv_key: str | None = None
    priv_key_file: str | None = None


class SnmpDeviceConfig(_Section, frozen=True):
    address: str
    port: PortNumber = 161
    version: Literal["2c", "3"] = "2c"
    community: str | None = None
    community_file: str | None = None
    v3: SnmpAuth | None = None
    timeout: Duration = Duration(2.0)
    retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 1
    max_rows: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 10000  # per table walk


class SnmpConfig(_Section, frozen=True):
    """Site probe only: the office switch/router polled over SNMP."""

    interval: Duration = Duration(300.0)
    devices: Annotated[list[SnmpDeviceConfig], msgspec.Meta(max_length=16)] = []


class LogConfig(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    file: str | None = None  # default: standard error


class AgentConfig(_Section, frozen=True):
    """The whole agent configuration (see configs/agent.example.yaml)."""

    site: SiteId
    role: Role = "host"
    interval: Duration = Duration(60.0)
    jitter: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.1  # fraction of each interval
    agent_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")] | None = None
    collector: CollectorConfig | None = None
    spool: SpoolConfig = SpoolConfig()
    networks: NetworksConfig = NetworksConfig()
    inventory: InventoryConfig = InventoryConfig()
    antivirus: AntivirusConfig = AntivirusConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    snmp: SnmpConfig = SnmpConfig()
    log: LogConfig = LogConfig()

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError("interval: must be at least 1s")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file; raise ConfigError with line and column on a syntax error."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"cannot read: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(name, "", f"{where}{exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(name, "", f"invalid YAML: {exc}") from exc
    if data is None:
        raise ConfigError(name, "", "file is empty")
    return data


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_KEY_AT = re.compile(r"^(?P<msg>.*?) - at `key` in `\$(?P<path>[^`]*)`$", re.DOTALL)


def _humanise(error: msgspec.ValidationError) -> tuple[str, str]:
    """Turn msgspec's ``msg - at `$.a.b[1]``` into (``a.b[1]``, plain message)."""
    text = str(error)
    match = _KEY_AT.match(text) or _AT.match(text)
    assert match is not None
    msg, path = match.group("msg"), (match.group("path") or "").lstrip(".")
    if m := re.match(r"Object contains unknown field `(.+)`", msg):
        return (f"{path}.{m.group(1)}" if path else m.group(1)), "unknown key"
    if m := re.match(r"Object missing required field `(.+)`", msg):
        return (f"{path}.{m.group(1)}" if path else m.group(1)), "required key missing"
    if path.endswith(".kind") and msg.startswith("Invalid value"):
        kinds = ", ".join(PROBES)
        return path, f"{msg[len('Invalid value ') :]} is not a probe kind (expected one of {kinds})"
    if m := re.match(r"Expected `(.+?)`, got `(.+?)`", msg):
        return path, f"expected {m.group(1)}, got {m.group(2)}"
    if msg.startswith("Expected `object`"):
        return path, "expected a mapping"
    return path, msg


def parse_config(data: Any, file: str = "<config>") -> AgentConfig:
    """Validate already-parsed YAML data; raise ConfigError naming the key path."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", "expected a mapping of keys at the top level")
    try:
        return msgspec.convert(data, AgentConfig, dec_hook=dec_hook, strict=True)
    except msgspec.ValidationError as exc:
        path, message = _humanise(exc)
        raise ConfigError(file, path, message) from None


def load_config(path: str | Path) -> AgentConfig:
    """Load and validate an agent config file."""
    return parse_config(read_yaml(path), Path(path).name)


def configured_networks(config: AgentConfig) -> list[NetworkClass]:
    """The network classes this agent checks (lan is always checked: default gateway)."""
    return [n for n in NETWORK_CLASSES if n == "lan" or config.networks.get(n) is not None]

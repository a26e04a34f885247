"""Agent configuration: YAML validated completely at load into frozen structs.

Defaults are applied by the structs, unknown keys are rejected, and every error names
the file and the key path (``agent.yaml: networks.dedicated.targets[1].address: port
missing (expected host:port)``). The same schema will validate centrally distributed
configuration later, so nothing here reads the network or the spool.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import yaml

from agent.probes import PROBES, TargetConfig
from agent.probes.base import PortNumber, check_host
from agent.report import NETWORK_CLASSES, NetworkClass, Role, SiteId
from agent.units import Duration, Size, dec_hook


class ConfigError(Exception):
    """A configuration problem: the file, the key path and what is wrong."""

    def __init__(self, file: str, path: str, message: str) -> None:
        self.file, self.path, self.message = file, path, message
        super().__init__(file, path, message)

    def __str__(self) -> str:
        where = [part for part in (self.file, self.path) if part]
        return ": ".join([*where, self.message])

    def in_file(self, file: str) -> ConfigError:
        """Name the config file when the error was raised without one (e.g. ``read_token``)."""
        if not self.file:
            self.file = file
        return self


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

    def __post_init__(self) -> None:
        # The label is the series identity in reports and metrics, so it must be unique.
        seen: dict[str, int] = {}
        for i, target in enumerate(self.targets):
            if target.label in seen:
                raise ValueError(
                    f"targets[{i}]: duplicate target {target.label!r} (same as "
                    f"targets[{seen[target.label]}]; give one of them a distinct name)"
                )
            seen[target.label] = i


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
        for i, url in enumerate(self.urls):
            problem = _url_problem(url)
            if problem:
                key = "url" if isinstance(self.url, str) else f"url[{i}]"
                raise ValueError(
                    f"{key}: {url!r} {problem} (expected http(s)://host[:port], "
                    "e.g. https://10.10.0.10:8443)"
                )
        if self.token is not None and self.token_file is not None:
            raise ValueError("token_file: set either token or token_file, not both")
        if self.token is None and self.token_file is None:
            raise ValueError("token: required (or token_file: a file holding the agent's token)")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ValueError("token: must be a non-empty token without spaces")
        if self.token_file == "":
            raise ValueError("token_file: must not be empty")
        if self.timeout <= 0:
            raise ValueError("timeout: must be more than 0s")
        if self.retry_initial <= 0:
            raise ValueError("retry_initial: must be more than 0s")
        if self.retry_max < self.retry_initial:
            raise ValueError(
                f"retry_max: {self.retry_max:g}s is less than retry_initial "
                f"({self.retry_initial:g}s)"
            )
        if self.batch_max_bytes < 1024:
            raise ValueError("batch_max_bytes: must be at least 1KiB")

    @property
    def urls(self) -> list[str]:
        """The collector URLs in the order they are tried."""
        return [self.url] if isinstance(self.url, str) else list(self.url)

    def read_token(self) -> str:
        """Return the bearer token; raise ConfigError when the token file is unusable."""
        if self.token is not None:
            return self.token
        assert self.token_file is not None
        key = "collector.token_file"
        try:
            token = Path(self.token_file).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError("", key, f"{self.token_file} is not UTF-8 text") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError("", key, f"cannot read {self.token_file}: {reason}") from None
        if not token:
            raise ConfigError("", key, f"{self.token_file} is empty")
        if any(c.isspace() for c in token):
            raise ConfigError("", key, f"{self.token_file} holds more than one token")
        return token


def _url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable collector URL, or None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        return "has an invalid port"
    if parts.scheme not in ("http", "https"):
        return "does not start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if any(c.isspace() for c in url):
        return "contains spaces"
    try:
        check_host(parts.hostname)
    except ValueError:
        return "has an invalid host"
    return None


class SpoolConfig(_Section, frozen=True):
    path: Annotated[str, msgspec.Meta(min_length=1)] = str(_default_state_dir() / "spool.db")
    max_size: Size = Size(200_000_000)  # when full, the oldest reports are dropped and counted

    def __post_init__(self) -> None:
        if self.max_size < 1_000_000:
            raise ValueError(f"max_size: {self.max_size} bytes is too small (at least 1MB)")


class InventoryConfig(_Section, frozen=True):
    enabled: bool = True
    interval: Duration = Duration(3600.0)


class AntivirusConfig(_Section, frozen=True):
    """Antivirus and firewall posture (see docs/security-posture.md)."""

    enabled: bool = True
    interval: Duration = Duration(900.0)
    max_signature_age: Duration = Duration(7 * 86400.0)  # older signatures are "outdated"
    command_timeout: Duration = Duration(30.0)  # per command (PowerShell, nft, clamd, ...)
    clamav_config: str = "/etc/clamav/clamd.conf"  # Linux: where DatabaseDirectory is read
    clamav_database_dir: str | None = None  # Linux: overrides clamd.conf's DatabaseDirectory

    def __post_init__(self) -> None:
        if self.command_timeout <= 0:
            raise ValueError("command_timeout: must be more than 0s")
        if self.max_signature_age <= 0:
            raise ValueError("max_signature_age: must be more than 0s")


class DiscoveryConfig(_Section, frozen=True):
    """Site probe only: ARP sweep of the office LAN (see docs/discovery.md)."""

    enabled: bool = True
    interval: Duration = Duration(600.0)
    interface: str | None = None  # default: the interface of the default route
    subnets: Annotated[list[str], msgspec.Meta(max_length=16)] = []  # default: the interface's
    max_prefix: Annotated[int, msgspec.Meta(ge=16, le=32)] = 22  # refuse wider sweeps
    rate: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 500  # packets per second
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1  # extra requests to silent hosts
    timeout: Duration = Duration(0.5)  # wait after the last packet of each round
    port_check: bool = False  # light TCP check to tell computers from printers
    port_timeout: Duration = Duration(0.5)  # per TCP connect of the port check

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= 30:
            raise ValueError("timeout: must be between 0 and 30s")
        if not 0 < self.port_timeout <= 10:
            raise ValueError("port_timeout: must be between 0 and 10s")
        for i, text in enumerate(self.subnets):
            try:
                network = ipaddress.IPv4Network(text, strict=False)
            except ValueError:
                raise ValueError(
                    f"subnets[{i}]: {text!r} is not an IPv4 subnet in CIDR form "
                    "(e.g. 192.168.1.0/24)"
                ) from None
            if network.prefixlen < self.max_prefix:
                raise ValueError(
                    f"subnets[{i}]: {network} is larger than the sweep bound "
                    f"/{self.max_prefix} (max_prefix); split it or raise max_prefix"
                )


_AUTH_PROTOCOLS = ("md5", "sha", "sha224", "sha256", "sha384", "sha512")
_PRIV_PROTOCOLS = ("des", "3des", "aes", "aes192", "aes256")


def _read_secret(path: str, key: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", key, f"cannot read {path}: {exc}") from exc
    if not value:
        raise ConfigError("", key, f"{path} is empty")
    return value


class SnmpAuth(_Section, frozen=True):
    """SNMPv3 user (USM). Keys are pass phrases (at least 8 characters, RFC 3414)."""

    user: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    auth_protocol: Literal["md5", "sha", "sha224", "sha256", "sha384", "sha512"] | None = None
    auth_key: str | None = None
    auth_key_file: str | None = None
    priv_protocol: Literal["des", "3des", "aes", "aes192", "aes256"] | None = None
    priv_key: str | None = None
    priv_key_file: str | None = None

    def __post_init__(self) -> None:
        for kind in ("auth", "priv"):
            protocol = getattr(self, f"{kind}_protocol")
            key, key_file = getattr(self, f"{kind}_key"), getattr(self, f"{kind}_key_file")
            if protocol is None:
                if key is not None or key_file is not None:
                    raise ValueError(f"{kind}_protocol: required when a {kind} key is set")
                continue
            if (key is None) == (key_file is None):
                raise ValueError(f"{kind}_key: set exactly one of {kind}_key or {kind}_key_file")
            if key is not None and len(key) < 8:
                raise ValueError(f"{kind}_key: must be at least 8 characters (RFC 3414)")
        if self.priv_protocol is not None and self.auth_protocol is None:
            raise ValueError("auth_protocol: privacy (priv_protocol) needs authentication too")

    def read_keys(self) -> tuple[str | None, str | None]:
        """Return (auth key, priv key), reading key files now so rotated keys apply."""
        auth = self.auth_key
        if self.auth_key_file is not None:
            auth = _read_secret(self.auth_key_file, "snmp.devices[].v3.auth_key_file")
        priv = self.priv_key
        if self.priv_key_file is not None:
            priv = _read_secret(self.priv_key_file, "snmp.devices[].v3.priv_key_file")
        for name, key in (("auth", auth), ("priv", priv)):
            if key is not None and len(key) < 8:
                raise ConfigError("", f"snmp.devices[].v3.{name}_key_file", "key is shorter than 8")
        return auth, priv


class SnmpDeviceConfig(_Section, frozen=True):
    """One switch or router; v2c needs a community, v3 a ``v3`` user."""

    address: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: PortNumber = 161
    version: Literal["2c", "3"] = "2c"
    community: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    community_file: str | None = None
    v3: SnmpAuth | None = None
    timeout: Duration = Duration(2.0)  # per request
    retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 1
    max_rows: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 10000  # per table walk
    max_duration: Duration = Duration(60.0)  # the whole poll of this device
    name: Annotated[str, msgspec.Meta(max_length=128)] | None = None  # label shown to people

    def __post_init__(self) -> None:
        check_host(self.address)
        if not 0 < self.timeout <= 60:
            raise ValueError("timeout: must be between 0 and 60s")
        if self.version == "2c":
            if (self.community is None) == (self.community_file is None):
                raise ValueError("community: set exactly one of community or community_file")
            if self.v3 is not None:
                raise ValueError('v3: only for version "3"')
        else:
            if self.v3 is None:
                raise ValueError('v3: required for version "3" (user, auth_protocol, ...)')
            if self.community is not None or self.community_file is not None:
                raise ValueError('community: not used with version "3"')

    def read_community(self) -> str:
        """Return the v2c community, reading ``community_file`` now."""
        if self.community is not None:
            return self.community
        assert self.community_file is not None
        return _read_secret(self.community_file, "snmp.devices[].community_file")


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
            raise ValueError(f"interval: {self.interval:g}s is too short (at least 1s)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        mark = key_node.start_mark
        try:
            duplicate = key in seen
        except TypeError:
            problem = "a key must be plain text, not a list or mapping"
            raise yaml.constructor.ConstructorError(None, None, problem, mark) from None
        if duplicate:
            problem = f"duplicate key {key!r} (each key may appear once per mapping)"
            raise yaml.constructor.ConstructorError(None, None, problem, mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


_MAX_FILE_BYTES: Final = 1 << 20


def read_yaml(
    path: str | Path,
    *,
    empty_hint: str = "expected at least site:",
    max_bytes: int = _MAX_FILE_BYTES,
) -> Any:
    """Read a YAML file (bounded, UTF-8, unique keys); raise ConfigError with line and column.

    The one reader of every hatang YAML file: agent and collector configs, org and targets.
    """
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ConfigError(name, "", f"file is larger than {max_bytes / 2**20:g} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(name, "", f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or str(exc)
        start = exc.context_mark
        if exc.context and start and mark and start.line != mark.line:
            problem += f" ({exc.context} at line {start.line + 1}, column {start.column + 1})"
        if "'\\t'" in problem:
            problem += " (indent with spaces, not tabs)"
        raise ConfigError(name, "", f"{where}{problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(name, "", f"invalid YAML: {exc}") from None
    if data is None:
        raise ConfigError(name, "", f"file is empty ({empty_hint})")
    return data


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_KEY_AT = re.compile(r"^(?P<msg>.*?) - at `key` in `\$(?P<path>[^`]*)`$", re.DOTALL)
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
# A __post_init__ error may name the key inside its struct: "subnets[1]: not a subnet".
_KEY_PREFIX = re.compile(
    r"^(?P<key>[a-z_][a-z0-9_]*)(?P<rest>(?:\[\d+\])*): (?P<msg>.+)$", re.DOTALL
)
_TYPE_WORDS: Final[dict[str, str]] = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "null": "nothing (null)",
    "array": "a list",
    "object": "a mapping of keys",
    "date": "a date",
    "datetime": "a date and time",
}
# Regex constraints described the way a person writes the value.
_PATTERN_HINTS: Final[dict[str, str]] = {
    "site": "is not a unit id (expected lowercase words joined by '-' and '/', "
    "e.g. bac-kan/cho-don/bang-lung)",
    "agent_id": "is not an agent id (expected 1-64 letters, digits, '.', '_', ':' or '-')",
}
_TARGET_EXAMPLE = "write a target as {kind: icmp, address: 192.168.1.1}"


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)[:60]


def _words(types: str) -> str:
    names = [t.strip() for t in types.split("|")]
    if len(names) > 1 and "null" in names:  # "optional" needs no mention: the key can go
        names.remove("null")
    return " or ".join(_TYPE_WORDS.get(name, name) for name in names)


def _segments(path: str) -> list[str | int]:
    return [int(i) if i else key for key, i in _SEGMENT.findall(path)]


def _lookup(data: Any, segments: list[str | int]) -> Any:
    """The raw value at a path, or None when the path does not exist in the data."""
    for segment in segments:
        if isinstance(segment, int):
            data = data[segment] if isinstance(data, list) and segment < len(data) else None
        else:
            data = data.get(segment) if isinstance(data, dict) else None
    return data


def _resolve(info: Any, value: Any) -> Any:
    """Strip metadata and optionality; pick the tagged struct the raw value names."""
    import msgspec.inspect as mi

    while True:
        if isinstance(info, mi.Metadata):
            info = info.type
        elif isinstance(info, mi.UnionType):
            options = [t for t in info.types if not isinstance(t, mi.NoneType)]
            structs = [t for t in options if isinstance(t, mi.StructType)]
            tagged = [t for t in structs if t.tag_field is not None]
            if tagged and isinstance(value, dict):
                tag = value.get(tagged[0].tag_field)
                chosen = [t for t in tagged if t.tag == tag]
                if chosen:
                    return chosen[0]
            if len(options) == 1:
                info = options[0]
            elif len(structs) == 1 and isinstance(value, dict):
                return structs[0]
            else:
                return info
        else:
            return info


def _type_at(segments: list[str | int], data: Any, root: type[msgspec.Struct]) -> Any:
    """The msgspec type info expected at a path of the raw data (None if unknown)."""
    import msgspec.inspect as mi

    info: Any = mi.type_info(root)
    value = data
    for segment in segments:
        info = _resolve(info, value)
        if isinstance(segment, int) and isinstance(info, mi.ListType):
            info = info.item_type
        elif isinstance(segment, str) and isinstance(info, mi.StructType):
            fields = {f.encode_name: f.type for f in info.fields}
            if segment not in fields:
                return None
            info = fields[segment]
        else:
            return None
        value = _lookup(value, [segment])
    return _resolve(info, value)


def _known_keys(info: Any) -> list[str]:
    import msgspec.inspect as mi

    structs = [info] if isinstance(info, mi.StructType) else []
    if isinstance(info, mi.UnionType):
        structs = [t for t in info.types if isinstance(t, mi.StructType)]
    keys: list[str] = []
    for struct in structs:
        if struct.tag_field and struct.tag_field not in keys:
            keys.append(struct.tag_field)
        keys += [f.encode_name for f in struct.fields if f.encode_name not in keys]
    return keys


def _join(path: str, key: str) -> str:
    if not path or key.startswith("["):
        return f"{path}{key}"
    return f"{path}.{key}"


def _bounds(info: Any) -> str:
    """``from 1 to 100`` / ``>= 1`` for an IntType or FloatType."""
    low = f">= {info.ge}" if info.ge is not None else f"> {info.gt}" if info.gt is not None else ""
    high = f"<= {info.le}" if info.le is not None else f"< {info.lt}" if info.lt is not None else ""
    if info.ge is not None and info.le is not None:
        return f"from {info.ge} to {info.le}"
    return " and ".join(part for part in (low, high) if part)


def _humanise(
    error: msgspec.ValidationError, data: Any = None, root: type[msgspec.Struct] | None = None
) -> tuple[str, str]:
    """Turn msgspec's ``msg - at `$.a.b[1]``` into (``a.b[1]``, a message for people).

    ``data`` (the decoded YAML) and ``root`` (the struct it was converted to, default
    AgentConfig) let the message quote the bad value, list allowed values and suggest
    the closest known key; without them the message is plainer but still names the path.
    """
    import msgspec.inspect as mi

    text = str(error)
    key_match = _KEY_AT.match(text)
    match = key_match or _AT.match(text)
    assert match is not None
    msg, path = match.group("msg"), (match.group("path") or "").lstrip(".")
    segments = _segments(path)
    known = data is not None  # without the data, never guess at values or types
    value = _lookup(data, segments)
    info = _type_at(segments, data, root or AgentConfig) if known else None
    shown_value = _show(value) if known else "the value"
    if key_match:
        bad = [k for k in value if not isinstance(k, str)] if isinstance(value, dict) else []
        return path, f"key {_show(bad[0]) if bad else ''} is not text (quote it)"

    if m := re.match(r"Object contains unknown field `(.+)`", msg):
        key, keys = m.group(1), _known_keys(info)
        import difflib

        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        if close:
            return path, f"unknown key {key!r} (did you mean {close[0]!r}?)"
        if not keys:
            return path, f"unknown key {key!r}"
        return path, f"unknown key {key!r} (expected one of: {', '.join(keys)})"
    if m := re.match(r"Object missing required field `(.+)`", msg):
        key = m.group(1)
        if isinstance(info, mi.UnionType) and key == "kind":
            return _join(path, key), f"required key is missing (one of {', '.join(PROBES)})"
        return _join(path, key), "required key is missing"
    if msg.startswith("Invalid value ") and path.endswith(".kind"):
        return path, f"{shown_value} is not a probe kind (expected one of {', '.join(PROBES)})"
    if msg.startswith("Invalid enum value") and isinstance(info, mi.LiteralType):
        choices = ", ".join(str(v) for v in info.values)
        return path, f"{_show(value)} is not one of: {choices}"
    if m := re.match(r"Expected `(.+?)`, got `(.+?)`$", msg):
        expected, got = m.group(1), m.group(2)
        shown = "" if got in ("object", "array", "null") or not known else f" {_show(value)}"
        got_words = "a boolean" if got == "bool" else _words(got)
        message = f"expected {_words(expected)}, got {got_words}{shown}"
        if got == "null":
            message = f"no value given (expected {_words(expected)})"
        elif "str" in expected and got == "bool":
            message += " (YAML reads yes/no/on/off as true/false: quote the text)"
        elif "str" in expected and got in ("int", "float", "date", "datetime"):
            message += " (quote the text)"
        if expected == "object" and segments[-2:-1] == ["targets"]:
            message += f"; {_TARGET_EXAMPLE}"
        return path, message
    if m := re.match(r"Expected `str` matching regex '(.+)'$", msg):
        last = segments[-1] if segments else ""
        hint = _PATTERN_HINTS.get(str(last), f"does not have the expected form ({m.group(1)})")
        return path, f"{shown_value} {hint}"
    if m := re.match(r"Expected `(str|array)` of length ([<>]=) (\d+)$", msg):
        kind, op, limit = m.group(1), m.group(2), int(m.group(3))
        if op == ">=" and limit == 1:
            return path, "must not be empty"
        count = len(value) if isinstance(value, str | list) else None
        bound = "at least" if op == ">=" else "at most"
        if kind == "array":
            amount = "too few items" if op == ">=" else "too many items"
            size = f": {count}" if count is not None else ""
        else:
            amount = "too short" if op == ">=" else "too long"
            size = f": {count} characters" if count is not None else ""
        return path, f"{amount}{size} ({bound} {limit})"
    if re.match(r"Expected `(int|float)` [<>]=? ", msg) and isinstance(
        info, mi.IntType | mi.FloatType
    ):
        word = "an integer" if isinstance(info, mi.IntType) else "a number"
        return path, f"{_show(value)} is out of range (expected {word} {_bounds(info)})"
    if (m := _KEY_PREFIX.match(msg)) and (not known or m.group("key") in _known_keys(info)):
        return _join(path, m.group("key") + m.group("rest")), m.group("msg")
    if isinstance(info, mi.StructType) and info.tag_field is not None and isinstance(value, dict):
        # A probe's own validation does not name the key: the quoted value tells which one
        # (dns: address or query); otherwise it is the address, the one key every kind checks.
        for key, item in value.items():
            if key not in ("kind", "name") and isinstance(item, str) and repr(item) in msg:
                return _join(path, str(key)), msg
        return _join(path, "address"), msg
    return path, msg


def _check_size(data: Any, file: str, limit: int = 100_000) -> None:
    """Bound the value count: YAML aliases can expand a small file into a huge tree."""
    stack, count = [data], 0
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            raise ConfigError(file, "", f"too many values (more than {limit}, aliases expanded)")
        if isinstance(value, dict):
            stack += value.values()
        elif isinstance(value, list):
            stack += value


def parse_config(data: Any, file: str = "<config>") -> AgentConfig:
    """Validate already-parsed YAML data; raise ConfigError naming the key path."""
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else f"{_show(data)}"
        raise ConfigError(file, "", f"expected a mapping of keys at the top level, got {got}")
    _check_size(data, file)
    try:
        return msgspec.convert(data, AgentConfig, dec_hook=dec_hook, strict=True)
    except msgspec.ValidationError as exc:
        path, message = _humanise(exc, data)
        raise ConfigError(file, path, message) from None


def load_config(path: str | Path) -> AgentConfig:
    """Load and validate an agent config file; errors name the file as it was given."""
    return parse_config(read_yaml(path), str(path))


def configured_networks(config: AgentConfig) -> list[NetworkClass]:
    """The network classes this agent checks (lan is always checked: default gateway)."""
    return [n for n in NETWORK_CLASSES if n == "lan" or config.networks.get(n) is not None]

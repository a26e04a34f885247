"""Agent configuration: YAML validated completely at load into frozen structs.

Defaults are applied by the structs, unknown keys are rejected, and every error names
the file and the key path (``agent.yaml: networks.dedicated.targets[1].address: port
missing (expected host:port)``). The same schema will validate centrally distributed
configuration later, so nothing here reads the network or the spool.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

from agent import paths
from agent.configerror import ConfigError, Wording, humanise, show
from agent.inventory.settings import AntivirusConfig, InventoryConfig, PatchesConfig
from agent.layers import CENTRAL_KEYS, merge_config
from agent.log import LogConfig
from agent.probes import TargetConfig
from agent.probes.base import PortNumber, check_host
from agent.report import NETWORK_CLASSES, NetworkClass, Role, Rule, SiteId
from agent.units import Duration, Size, dec_hook
from agent.units import Section as _Section
from agent.yamlfile import read_yaml

# ConfigError and read_yaml live in agent.configerror and agent.yamlfile, the inventory
# settings in agent.inventory.settings (they import no probe modules, so the inventory
# child need not load this one); the names stay importable from here for older callers.
__all__ = [
    "CENTRAL_KEYS",
    "AgentConfig",
    "AntivirusConfig",
    "ConfigError",
    "InventoryConfig",
    "PatchesConfig",
    "load_config",
    "merge_config",
    "parse_config",
    "read_yaml",
]


class NetworkConfig(_Section, frozen=True):
    """One network class: its targets and when the class counts as up."""

    targets: Annotated[list[TargetConfig], msgspec.Meta(max_length=64)] = []
    rule: Rule = "any"

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
    allow_insecure: bool = False  # accept http:// to a non-loopback collector (token in clear)
    timeout: Duration = Duration(30.0)
    batch_max_reports: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    batch_max_bytes: Size = Size(1_000_000)
    retry_initial: Duration = Duration(5.0)
    retry_max: Duration = Duration(600.0)

    def __post_init__(self) -> None:
        for i, url in enumerate(self.urls):
            key = "url" if isinstance(self.url, str) else f"url[{i}]"
            problem = _url_problem(url)
            if problem:
                raise ValueError(
                    f"{key}: {show(redact_url(url))} {problem} (expected http(s)://host[:port], "
                    "e.g. https://10.10.0.10:8443)"
                )
            if plaintext_remote(url) and not self.allow_insecure:
                raise ValueError(
                    f"{key}: {show(url)}: gửi mã thông báo không mã hoá / would send the agent's "
                    "token and reports unencrypted over http:// to another machine; use "
                    "https:// (or, knowingly, set allow_insecure: true in the collector section)"
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


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: the one form URLs are shown in."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (127.0.0.0/8, ::1 or ``localhost``)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower().rstrip(".") == "localhost"


def plaintext_remote(url: str) -> bool:
    """Whether ``url`` is plain http:// to another machine (the token would travel in clear)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback(parts.hostname or "")


def _url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable collector URL, or None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        return "has an invalid port"
    if parts.username is not None or parts.password is not None:
        return "contains credentials (user:password@); the token goes in token or token_file"
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
    path: Annotated[str, msgspec.Meta(min_length=1)] = str(paths.state_dir() / "spool.db")
    max_size: Size = Size(200_000_000)  # when full, the oldest reports are dropped and counted

    def __post_init__(self) -> None:
        if self.max_size < 1_000_000:
            raise ValueError(f"max_size: {self.max_size} bytes is too small (at least 1MB)")


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
                    f"subnets[{i}]: {show(text)} is not an IPv4 subnet in CIDR form "
                    "(e.g. 192.168.1.0/24)"
                ) from None
            if network.prefixlen < self.max_prefix:
                raise ValueError(
                    f"subnets[{i}]: {network} is larger than the sweep bound "
                    f"/{self.max_prefix} (max_prefix); split it or raise max_prefix"
                )


AuthProtocol = Literal["md5", "sha", "sha224", "sha256", "sha384", "sha512"]
PrivProtocol = Literal["des", "3des", "aes", "aes192", "aes256"]


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
    auth_protocol: AuthProtocol | None = None
    auth_key: str | None = None
    auth_key_file: str | None = None
    priv_protocol: PrivProtocol | None = None
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


class UplinkConfig(_Section, frozen=True):
    """One router port, by ifName (or ifDescr) or by ifIndex."""

    if_name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    if_index: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None

    def __post_init__(self) -> None:
        if (self.if_name is None) == (self.if_index is None):
            raise ValueError('if_name: set exactly one of if_name or if_index (e.g. "Gi0/1" or 3)')


class UplinksConfig(_Section, frozen=True):
    """Which router port carries which network class (for bytes per class)."""

    wan: UplinkConfig | None = None
    dedicated: UplinkConfig | None = None
    internet: UplinkConfig | None = None

    def items(self) -> list[tuple[NetworkClass, UplinkConfig]]:
        """The configured classes and their ports."""
        pairs: list[tuple[NetworkClass, UplinkConfig | None]] = [
            ("wan", self.wan),
            ("dedicated", self.dedicated),
            ("internet", self.internet),
        ]
        return [(network, port) for network, port in pairs if port is not None]


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
    uplinks: UplinksConfig = UplinksConfig()

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


class CentralFetchConfig(_Section, frozen=True):
    """Fetch the central configuration from the collector (docs/central-config.md)."""

    enabled: bool = True
    refresh: Duration = Duration(300.0)  # how often to ask (an unchanged config costs a 304)
    cache: str | None = None  # the last good one; default: central.json next to the spool

    def __post_init__(self) -> None:
        if not 1 <= self.refresh <= 86400:
            raise ValueError("refresh: between 1s and 1d")
        if self.cache == "":
            raise ValueError("cache: must not be empty")


THROUGHPUT_NETWORKS: Final = ("internet", "wan", "dedicated")


class ThroughputTarget(_Section, frozen=True):
    """One endpoint to download from, over one network class."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    network: Literal["internet", "wan", "dedicated"] = "internet"
    name: Annotated[str, msgspec.Meta(max_length=128)] | None = None  # label shown to people
    verify_tls: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        problem = _url_problem(self.url)
        if problem:
            raise ValueError(
                f"url: {self.url!r} {problem} (expected http(s)://host[:port]/path, e.g. "
                "https://10.10.0.10:8443/api/v1/throughput?bytes=4000000)"
            )

    @property
    def label(self) -> str:
        """How the endpoint is shown in reports and metrics."""
        return self.name or self.url


class ThroughputConfig(_Section, frozen=True):
    """Bounded downloads that measure the site's line speed (see docs/broadband.md)."""

    enabled: bool = True
    roles: Annotated[list[Role], msgspec.Meta(min_length=1, max_length=2)] = msgspec.field(
        default_factory=lambda: ["site-probe"]
    )
    interval: Duration = Duration(6 * 3600.0)  # sparse: each test costs max_bytes of data
    max_bytes: Size = Size(4_000_000)  # stop reading after this many bytes
    max_duration: Duration = Duration(15.0)  # stop reading after this long (still a result)
    stall_timeout: Duration = Duration(5.0)  # no byte for this long: the link is cut (a failure)
    targets: Annotated[list[ThroughputTarget], msgspec.Meta(max_length=4)] = []

    def __post_init__(self) -> None:
        if self.interval < 600:
            raise ValueError(f"interval: {self.interval:g}s is too short (at least 10m)")
        if not 16_384 <= self.max_bytes <= 100_000_000:
            raise ValueError(f"max_bytes: {self.max_bytes} bytes is out of range (16KB to 100MB)")
        if not 1 <= self.max_duration <= 120:
            raise ValueError(f"max_duration: {self.max_duration:g}s is out of range (1s to 2m)")
        if not 0.1 <= self.stall_timeout <= self.max_duration:
            raise ValueError(
                f"stall_timeout: {self.stall_timeout:g}s is out of range "
                f"(100ms to max_duration, {self.max_duration:g}s)"
            )
        seen: dict[tuple[str, str], int] = {}
        for i, target in enumerate(self.targets):
            key = (target.network, target.label)
            if key in seen:
                raise ValueError(
                    f"targets[{i}]: duplicate target {target.label!r} on {target.network} "
                    f"(same as targets[{seen[key]}])"
                )
            seen[key] = i

    def bytes_per_month(self) -> int:
        """Data the tests may use in 30 days: every target, every interval, full size."""
        return int(self.max_bytes * len(self.targets) * 30 * 86400 / self.interval)


class AgentConfig(_Section, frozen=True):
    """The whole agent configuration (see configs/agent.example.yaml)."""

    site: SiteId
    role: Role = "host"
    interval: Duration = Duration(60.0)
    jitter: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.1  # fraction of each interval
    agent_id: Annotated[str, msgspec.Meta(pattern=r"\A[A-Za-z0-9._:-]{1,64}\Z")] | None = None
    collector: CollectorConfig | None = None
    spool: SpoolConfig = SpoolConfig()
    networks: NetworksConfig = NetworksConfig()
    inventory: InventoryConfig = InventoryConfig()
    antivirus: AntivirusConfig = AntivirusConfig()
    patches: PatchesConfig = PatchesConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    snmp: SnmpConfig = SnmpConfig()
    throughput: ThroughputConfig = ThroughputConfig()
    log: LogConfig = LogConfig()
    central: CentralFetchConfig | None = None  # none: standalone, this file is the whole config

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"interval: {self.interval:g}s is too short (at least 1s)")
        if self.snmp.interval < self.interval and any(d.uplinks.items() for d in self.snmp.devices):
            # A report carries the newest SNMP poll only: a poll in between would lose bytes.
            raise ValueError(
                f"snmp: interval {self.snmp.interval:g}s is shorter than the report interval "
                f"({self.interval:g}s); with uplinks configured it must be at least as long"
            )


# The agent's words for what the generic error translation cannot know.
_WORDING: Final = Wording(
    patterns={
        "site": "is not a unit id (expected lowercase words joined by '-' and '/', "
        "e.g. bac-kan/cho-don/bang-lung)",
        "agent_id": "is not an agent id (expected 1-64 letters, digits, '.', '_', ':' or '-')",
    },
    tags={"kind": "probe kind"},
    item_examples={"targets": "write a target as {kind: icmp, address: 192.168.1.1}"},
)


def _humanise(
    error: msgspec.ValidationError, data: Any = None, root: type[msgspec.Struct] | None = None
) -> tuple[str, str]:
    """``agent.configerror.humanise`` with the agent's wording (kept for older callers)."""
    return humanise(error, data, root or AgentConfig, _WORDING)


def parse_config(data: Any, file: str = "<config>") -> AgentConfig:
    """Validate already-parsed YAML data; raise ConfigError naming the key path."""
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else show(data)
        raise ConfigError(file, "", f"expected a mapping of keys at the top level, got {got}")
    try:
        return msgspec.convert(data, AgentConfig, dec_hook=dec_hook, strict=True)
    except msgspec.ValidationError as exc:
        path, message = _humanise(exc, data)
        raise ConfigError(file, path, message) from None


def load_config(path: str | Path) -> AgentConfig:
    """Load and validate an agent config file; errors name the file as it was given."""
    return parse_config(read_yaml(path), str(path))


def security_warnings(config: AgentConfig) -> list[tuple[str, str]]:
    """(key path, Vietnamese / English warning) for risky but allowed settings.

    ``check`` prints them and the daemon logs them at start, so an official running a
    check sees what an administrator reading the log sees.
    """
    from agent.files import readable_by_others

    found: list[tuple[str, str]] = []
    collector = config.collector
    if collector is not None:
        for url in collector.urls:
            if plaintext_remote(url):
                found.append(
                    (
                        "collector.url",
                        f"mã thông báo và báo cáo gửi không mã hoá tới {redact_url(url)} / "
                        "the token and reports travel unencrypted (allow_insecure: true); "
                        "use https://",
                    )
                )
        if not collector.verify_tls:
            found.append(
                (
                    "collector.verify_tls",
                    "không kiểm tra chứng chỉ của máy chủ thu thập / the collector's "
                    "certificate is not checked (verify_tls: false)",
                )
            )
    secrets = [("collector.token_file", collector.token_file if collector else None)]
    for i, device in enumerate(config.snmp.devices):
        secrets.append((f"snmp.devices[{i}].community_file", device.community_file))
        if device.v3 is not None:
            secrets.append((f"snmp.devices[{i}].v3.auth_key_file", device.v3.auth_key_file))
            secrets.append((f"snmp.devices[{i}].v3.priv_key_file", device.v3.priv_key_file))
    for key, path in secrets:
        if path is not None and readable_by_others(path):
            found.append(
                (
                    key,
                    f"tệp bí mật {path} để người khác đọc được / the secret file {path} is "
                    f"readable by other users; run: chmod 600 {path}",
                )
            )
    return found


def configured_networks(config: AgentConfig) -> list[NetworkClass]:
    """The network classes this agent checks (lan is always checked: default gateway)."""
    return [n for n in NETWORK_CLASSES if n == "lan" or config.networks.get(n) is not None]

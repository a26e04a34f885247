"""Collector configuration: YAML validated completely at load into frozen structs.

Same approach as ``agent/config.py``, with the same YAML reader (``agent.yamlfile``)
and error wording (``agent.configerror``): defaults live in the structs, unknown keys
are rejected, and every error names the file and the key path (``collector.yaml:
limits.max_body: invalid size 'lots'``). Relative paths (org, targets, store, TLS files)
resolve against the config file's directory, so a config works from any working
directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from agent.configerror import ConfigError, humanise, show
from agent.log import LogConfig
from agent.units import Duration, Size, dec_hook
from agent.units import Section as _Section
from agent.yamlfile import read_yaml
from collector.period import Period, WindowDef, parse_period

__all__ = ["CollectorConfig", "ConfigError", "load_config", "parse_config", "sqlite_path"]

DEFAULT_SIGNING_KEY = "evidence-signing-key.pem"  # beside the config file


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:`` url (``sqlite:///abs`` is absolute)."""
    if url.startswith("sqlite:///"):
        return "/" + url[len("sqlite:///") :]
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    return url[len("sqlite:") :]


def _check_postgres_url(url: str) -> None:
    """Reject a PostgreSQL url that cannot work, naming the part (never the password)."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            "url: a PostgreSQL url starts with postgresql:// (e.g. "
            "postgresql://hatang@db.example:5432/hatang)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError as exc:
        raise ValueError(f"url: not a valid PostgreSQL url ({exc})") from None
    if parts.fragment:
        raise ValueError("url: a PostgreSQL url has no #fragment")
    if "," in parts.netloc:
        raise ValueError("url: list one PostgreSQL host (several hosts are not supported)")


class ListenConfig(_Section, frozen=True):
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    cert_file: str | None = None  # TLS is on when both files are set
    key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file for TLS, or neither")


class StoreConfig(_Section, frozen=True):
    """Where reports live: ``sqlite:///abs/path.db``, ``sqlite:relative/path.db`` or
    ``postgresql://user:password@host:5432/database`` (``?host=/run/postgresql`` for a
    Unix socket)."""

    url: str = "sqlite:///var/lib/hatang/collector.db"
    busy_timeout: Duration = Duration(5.0)  # wait this long for a lock held by another process
    hourly_retention: Duration = Duration(35 * 86400.0)  # hourly buckets; daily roll-ups stay
    # SQLite: ``serve`` runs PRAGMA quick_check first and refuses a damaged database; a
    # check longer than start_check_timeout is abandoned (logged) and the collector starts.
    start_check: Literal["quick", "off"] = "quick"
    start_check_timeout: Duration = Duration(60.0)

    def __post_init__(self) -> None:
        if self.url.startswith(("postgresql:", "postgres:")):
            _check_postgres_url(self.url)
        elif not self.url.startswith("sqlite:") or not sqlite_path(self.url):
            raise ValueError(
                f"unsupported store url {show(self.url)} (expected sqlite:///absolute/path.db, "
                "sqlite:relative/path.db or postgresql://user@host:5432/database)"
            )
        if self.busy_timeout > 600:
            raise ValueError("busy_timeout: at most 600s")
        if not 0.1 <= self.start_check_timeout <= 86400:
            raise ValueError("start_check_timeout: between 100ms and 24h")


class WindowConfig(_Section, frozen=True):
    """How "up" is judged for indicators: the share of checks up over a sliding window."""

    duration: Duration = Duration(86400.0)
    up_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.95
    # Width of the store's buckets that windows are summed from. Hourly in production;
    # test beds shrink it (with the window) so that minutes of data move the indicators.
    bucket: Duration = Duration(3600.0)

    def __post_init__(self) -> None:
        if not 1 <= self.bucket <= 3600 or 3600 % self.bucket:
            raise ValueError(
                "bucket: must divide 1h evenly and be between 1s and 1h (e.g. 10s, 1m, 1h)"
            )
        if self.duration < self.bucket:
            raise ValueError(
                f"duration: at least one bucket ({self.bucket:g}s; windows are summed "
                "from whole buckets)"
            )


class PostureConfig(_Section, frozen=True):
    """How endpoint facts are judged (docs/indicators.md: computers_patched).

    Here rather than in a targets file: ``hatang_indicator_ratio`` is one number per
    level that every plan's goal is compared against, so the rule must be one per
    province; the metric ``hatang_patch_max_age_seconds`` shows which was applied.
    """

    patch_max_age: Duration = Duration(30 * 86400.0)

    def __post_init__(self) -> None:
        if not 86400 <= self.patch_max_age <= 366 * 86400:
            raise ValueError("patch_max_age: must be between 1d and 366d (e.g. 30d)")


class LimitsConfig(_Section, frozen=True):
    """Bounds that keep hostile or broken agents from exhausting the collector."""

    max_body: Size = Size(1_000_000)  # request body as sent (compressed or not)
    max_decompressed: Size = Size(10_000_000)  # after gzip
    max_reports_per_batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1000
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 64  # concurrent ingests
    # A body not received in full this long after its headers gets 408 and the connection
    # is closed (a client trickling its body must not hold an ingest slot for long).
    body_timeout: Duration = Duration(30.0)
    # Request headers not complete this long after the connection opened (or after the
    # previous answer on a kept-alive connection) close the connection.
    header_timeout: Duration = Duration(30.0)

    def __post_init__(self) -> None:
        for key in ("body_timeout", "header_timeout"):
            if not 0.1 <= getattr(self, key) <= 3600:
                raise ValueError(f"{key}: between 100ms and 1h")
        if self.max_body < 1024:
            raise ValueError("max_body: at least 1KB")
        if self.max_decompressed < self.max_body:
            raise ValueError("max_decompressed: must not be smaller than max_body")


class ClockSkewConfig(_Section, frozen=True):
    """The clock rule. An agent whose clock (the batch's ``sent_at``) differs from the
    collector's by more than ``max_offset`` has its observation times moved onto the
    collector's clock for windows; reports still more than ``max_future`` ahead are filed
    under their arrival time. Both are counted; stored ``observed_at`` is kept as sent."""

    max_future: Duration = Duration(300.0)
    max_offset: Duration = Duration(120.0)


class AuthConfig(_Section, frozen=True):
    # Token lookups are cached this long. 0 (the default) checks the store on every request,
    # so a revocation from `token revoke` takes effect on the very next request.
    cache_ttl: Duration = Duration(0.0)

    def __post_init__(self) -> None:
        if self.cache_ttl > 60:
            raise ValueError("cache_ttl: at most 60s (revocation must take effect quickly)")


class MetricsConfig(_Section, frozen=True):
    refresh_interval: Duration = Duration(15.0)  # rebuild the indicator snapshot this often
    min_refresh_interval: Duration = Duration(1.0)  # after ingests, at most this often


class ReportingWindowConfig(_Section, frozen=True):
    """A named reporting window (``--period NAME-YYYY``); see collector/period.py."""

    start: str  # MM-DD, e.g. 12-15
    year_offset: Annotated[int, msgspec.Meta(ge=-1, le=1)] = 0
    months: Annotated[int, msgspec.Meta(ge=1, le=24)] = 12
    title: Annotated[str, msgspec.Meta(max_length=200)] = ""

    def __post_init__(self) -> None:
        self.window()  # the one validation of a window lives in collector/period.py

    def window(self) -> WindowDef:
        """The period module's view of this window."""
        return WindowDef(self.start, self.year_offset, self.months, self.title)


class ReportingConfig(_Section, frozen=True):
    """Reporting periods for evidence and attainment reports: local calendar days."""

    timezone: str = "Asia/Ho_Chi_Minh"
    windows: Annotated[
        dict[Annotated[str, msgspec.Meta(pattern=r"\A[a-z][a-z0-9_]*\Z")], ReportingWindowConfig],
        msgspec.Meta(max_length=32),
    ] = {}

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ValueError, OSError, ZoneInfoNotFoundError):
            # OSError: a name too long for a file name; all mean "no such zone".
            raise ValueError(
                f"timezone: unknown time zone {show(self.timezone)} (e.g. Asia/Ho_Chi_Minh)"
            ) from None

    def period(self, text: str) -> Period:
        """Parse ``--period`` with this config's zone and named windows (PeriodError)."""
        windows = {name: w.window() for name, w in self.windows.items()}
        return parse_period(text, tz=ZoneInfo(self.timezone), windows=windows)


class RemoteWriteAuth(_Section, frozen=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    password_file: str


class RemoteWriteTLS(_Section, frozen=True):
    ca_file: str | None = None
    cert_file: str | None = None  # client certificate (mutual TLS): set with key_file
    key_file: str | None = None
    insecure_skip_verify: bool = False

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file for a client certificate, or neither")


class RemoteWriteConfig(_Section, frozen=True):
    """Late observations pushed into Prometheus at their observation times (docs/late-data.md)."""

    url: str
    timeout: Duration = Duration(30.0)  # one request, connect to answer
    batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000  # samples per request
    # Prometheus' storage.tsdb.out_of_order_time_window: older samples are not sent (it
    # would refuse the whole request), they are counted; the store still has the reports.
    max_sample_age: Duration = Duration(7 * 86400.0)
    max_pending: Annotated[int, msgspec.Meta(ge=1000, le=100_000_000)] = 1_000_000
    # The Prometheus scrape interval of the collector job: the scrape can show an
    # observation this much (plus metrics.refresh_interval) after it stopped being fresh,
    # so late samples start after that (the one rule, docs/late-data.md).
    scrape_interval: Duration = Duration(30.0)
    job: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "hatang-collector"
    headers: Annotated[
        dict[Annotated[str, msgspec.Meta(pattern=r"\A[A-Za-z0-9-]{1,64}\Z")], str],
        msgspec.Meta(max_length=32),
    ] = {}
    basic_auth: RemoteWriteAuth | None = None
    bearer_token_file: str | None = None
    tls: RemoteWriteTLS = RemoteWriteTLS()

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError as exc:
            raise ValueError(f"url: not a valid url ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url: {self.url!r} is not an http(s) url (e.g. http://127.0.0.1:9090/api/v1/write)"
            )
        if not 0.1 <= self.timeout <= 600:
            raise ValueError("timeout: between 100ms and 10m")
        if self.max_sample_age < 60:
            raise ValueError("max_sample_age: at least 1m (match out_of_order_time_window)")
        if not 1 <= self.scrape_interval <= 3600:
            raise ValueError("scrape_interval: between 1s and 1h")
        if self.basic_auth is not None and self.bearer_token_file is not None:
            raise ValueError("basic_auth: set basic_auth or bearer_token_file, not both")
        for name in self.headers:
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"headers: {name} is set by the remote-write protocol itself")


_RESERVED_HEADERS = frozenset(
    {
        "content-encoding",
        "content-type",
        "x-prometheus-remote-write-version",
        "authorization",
        "content-length",
        "host",
        "user-agent",
    }
)


class EvidenceConfig(_Section, frozen=True):
    """Evidence bundles (``hatang-collector evidence``): the signing key and the rules."""

    # Ed25519 private key (PKCS#8 PEM) that signs every bundle's manifest. Created with
    # owner-only permissions by the first export when missing; default: beside the config
    # file (evidence-signing-key.pem). Keep a backup: auditors verify against its public key.
    signing_key: str | None = None
    # Directory of compliance rules files (configs/compliance/*.yaml); default: the shipped one.
    compliance: str | None = None


class AgentLayersConfig(_Section, frozen=True):
    """Central agent configuration (docs/central-config.md): the directory of layer files."""

    dir: Annotated[str, msgspec.Meta(min_length=1)]  # relative to this file's directory


class EnrollConfig(_Section, frozen=True):
    """Enrollment codes (docs/security.md has the arithmetic behind the defaults)."""

    max_failures: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10  # wrong guesses lock a code
    throttle_burst: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10  # failures per address
    throttle_per_minute: Annotated[float, msgspec.Meta(gt=0, le=600)] = 1.0  # refill rate


class ThroughputConfig(_Section, frozen=True):
    """GET /api/v1/throughput: the payload agents download to measure line speed."""

    enabled: bool = True
    max_bytes: Size = Size(16_000_000)  # the largest ?bytes= a request may ask for
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4  # streams province-wide
    per_site_per_hour: Annotated[int, msgspec.Meta(ge=1, le=60)] = 6  # test starts per site
    # A client that stops reading is cut off after this long, freeing the site's slot.
    stream_timeout: Duration = Duration(60.0)

    def __post_init__(self) -> None:
        if not 1_000 <= self.max_bytes <= 1_000_000_000:
            raise ValueError(f"max_bytes: {self.max_bytes} bytes is out of range (1KB to 1GB)")
        if not 1 <= self.stream_timeout <= 3600:
            raise ValueError("stream_timeout: between 1s and 1h")


class CollectorConfig(_Section, frozen=True):
    """The whole collector configuration (see configs/collector.example.yaml)."""

    org: str  # the organisation tree file
    listen: ListenConfig = ListenConfig()
    store: StoreConfig = StoreConfig()
    targets: Annotated[list[str], msgspec.Meta(max_length=256)] = []
    window: WindowConfig = WindowConfig()
    posture: PostureConfig = PostureConfig()
    site_up_after_intervals: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 3
    limits: LimitsConfig = LimitsConfig()
    clock_skew: ClockSkewConfig = ClockSkewConfig()
    auth: AuthConfig = AuthConfig()
    metrics: MetricsConfig = MetricsConfig()
    reporting: ReportingConfig = ReportingConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    throughput: ThroughputConfig = ThroughputConfig()
    log: LogConfig = LogConfig()
    remote_write: RemoteWriteConfig | None = None  # off by default
    agent_config: AgentLayersConfig | None = None  # none: agents run their local files only
    enroll: EnrollConfig = EnrollConfig()


def _resolve(base: Path, path: str) -> str:
    return path if Path(path).is_absolute() else str((base / path).resolve())


def parse_config(data: Any, file: str = "<config>", base: Path | None = None) -> CollectorConfig:
    """Validate already-parsed YAML data; raise ConfigError naming the key path.

    Relative paths are resolved against ``base`` (the config file's directory).
    """
    if not isinstance(data, dict):
        raise ConfigError(file, "", "expected a mapping of keys at the top level")
    try:
        config = msgspec.convert(data, CollectorConfig, dec_hook=dec_hook, strict=True)
    except msgspec.ValidationError as exc:
        path, message = humanise(exc, data, CollectorConfig)
        raise ConfigError(file, path, message) from None
    if base is None:
        return config
    listen = config.listen
    if listen.cert_file and listen.key_file:
        listen = msgspec.structs.replace(
            listen,
            cert_file=_resolve(base, listen.cert_file),
            key_file=_resolve(base, listen.key_file),
        )
    store = config.store
    if store.url.startswith("sqlite:"):
        store = msgspec.structs.replace(
            store, url="sqlite:///" + _resolve(base, sqlite_path(store.url)).lstrip("/")
        )
    log = config.log
    if log.file:
        log = msgspec.structs.replace(log, file=_resolve(base, log.file))
    remote = config.remote_write
    if remote is not None:
        remote = _resolve_remote_write(file, base, remote)
    evidence = msgspec.structs.replace(
        config.evidence,
        signing_key=_resolve(base, config.evidence.signing_key or DEFAULT_SIGNING_KEY),
        compliance=None
        if config.evidence.compliance is None
        else _resolve(base, config.evidence.compliance),
    )
    layers = config.agent_config
    if layers is not None:
        layers = msgspec.structs.replace(layers, dir=_resolve(base, layers.dir))
    return msgspec.structs.replace(
        config,
        agent_config=layers,
        listen=listen,
        store=store,
        log=log,
        remote_write=remote,
        evidence=evidence,
        org=_resolve(base, config.org),
        targets=[_resolve(base, t) for t in config.targets],
    )


def _resolve_remote_write(file: str, base: Path, remote: RemoteWriteConfig) -> RemoteWriteConfig:
    """Resolve the secret and TLS files and check now that they can be read (exit 2 at
    start, naming the key, rather than a failing push hours later)."""
    auth, tls = remote.basic_auth, remote.tls
    checks: list[tuple[str, str]] = []
    if auth is not None:
        auth = msgspec.structs.replace(auth, password_file=_resolve(base, auth.password_file))
        checks.append(("remote_write.basic_auth.password_file", auth.password_file))
    bearer = remote.bearer_token_file
    if bearer is not None:
        bearer = _resolve(base, bearer)
        checks.append(("remote_write.bearer_token_file", bearer))
    files = {k: getattr(tls, k) for k in ("ca_file", "cert_file", "key_file")}
    resolved = {k: None if v is None else _resolve(base, v) for k, v in files.items()}
    tls = msgspec.structs.replace(tls, **resolved)
    checks += [(f"remote_write.tls.{k}", v) for k, v in resolved.items() if v is not None]
    for key, path in checks:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigError(file, key, f"cannot read {path}: {exc.strerror or exc}") from None
    return msgspec.structs.replace(remote, basic_auth=auth, bearer_token_file=bearer, tls=tls)


def load_config(path: str | Path) -> CollectorConfig:
    """Load and validate a collector config file."""
    path = Path(path)
    return parse_config(read_yaml(path), path.name, path.resolve().parent)

"""Central agent configuration: layer files merged per site and role, served to agents.

The files live in ``agent_config.dir`` next to the collector config (docs/central-config.md):

- ``province.yaml``: every agent of the province (e.g. the dedicated-network targets);
- ``level-<level>.yaml``: every unit of one level (``level-commune.yaml``...);
- ``sites/<unit id>.yaml``: that unit and every unit below it (``sites/bac-kan/cho-don.yaml``
  gives the communes of Chợ Đồn their WAN target).

For a site the layers apply in that order (province → level → ancestors from the root
down → the site itself); later wins, mappings merge key by key, lists replace. A layer
may hold a ``roles: {host: {...}, site-probe: {...}}`` part applied right after it.
Layers carry only the central keys (``CENTRAL_KEYS``); site, role, collector, spool and
log stay in each agent's local file.

Every site's effective config, for both roles, is validated at load with exactly the
agent's own validation (``agent.config.parse_config``), so a broken central config is
refused here, once, with the file and key named, instead of by 3,000 agents.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, get_args

import msgspec
from aiohttp import web

from agent.configerror import ConfigError
from agent.layers import CENTRAL_KEYS, LOCAL_KEYS, merge_config
from agent.log import event
from agent.report import Id, Role
from agent.yamlfile import read_yaml
from collector import api
from collector.org import Org

log = logging.getLogger(__name__)

ROLES: Final[tuple[str, ...]] = get_args(Role)
LEVELS: Final = ("province", "agency", "district", "commune")
MAX_LAYER_FILES: Final = 20_000
MAX_STATUS_BODY: Final = 8192


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer file: its own keys and its per-role parts."""

    file: str  # relative to the layer directory, as errors name it
    base: Mapping[str, Any]
    roles: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Effective:
    """One site's configuration for one role, as served."""

    version: str
    config: Mapping[str, Any]
    body: bytes  # the JSON answer, encoded once


@dataclass(frozen=True, slots=True)
class CentralConfig:
    """The validated effective configuration of every (site, role)."""

    directory: str
    effective: Mapping[tuple[str, str], Effective] = field(default_factory=dict)
    files: int = 0

    def get(self, site: str, role: str) -> Effective | None:
        """The effective config of a site and role, or None for an unknown site."""
        return self.effective.get((site, role))


def _check_layer(data: Any, file: str) -> Layer:
    if not isinstance(data, dict):
        raise ConfigError(file, "", "expected a mapping of central keys at the top level")
    base: dict[str, Any] = {}
    roles: dict[str, Mapping[str, Any]] = {}
    for key, value in data.items():
        if key == "roles":
            if not isinstance(value, dict):
                raise ConfigError(file, "roles", "expected a mapping of role → central keys")
            for role, part in value.items():
                if role not in ROLES:
                    raise ConfigError(
                        file, f"roles.{role}", f"unknown role (expected one of: {', '.join(ROLES)})"
                    )
                if not isinstance(part, dict):
                    raise ConfigError(file, f"roles.{role}", "expected a mapping of central keys")
                for inner in part:
                    _check_key(inner, file, f"roles.{role}.")
                roles[role] = part
            continue
        _check_key(key, file, "")
        base[key] = value
    return Layer(file, base, roles)


def _check_key(key: Any, file: str, prefix: str) -> None:
    if key in CENTRAL_KEYS:
        return
    if key in LOCAL_KEYS:
        raise ConfigError(
            file,
            f"{prefix}{key}",
            "is local to each agent and cannot be set centrally (central keys: "
            f"{', '.join(CENTRAL_KEYS)})",
        )
    raise ConfigError(
        file, f"{prefix}{key}", f"unknown key (central keys: {', '.join(CENTRAL_KEYS)}, roles)"
    )


def _layer_files(root: Path) -> Iterator[Path]:
    count = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            count += 1
            if count > MAX_LAYER_FILES:
                raise ConfigError(str(root), "", f"more than {MAX_LAYER_FILES} files")
            yield path


def _name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def load_layers(directory: str | Path, org: Org) -> dict[str, Layer]:
    """Read and check every layer file; raise ConfigError naming the file and key."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(str(root), "", "agent_config.dir: no such directory")
    layers: dict[str, Layer] = {}
    for path in _layer_files(root):
        name = _name(path, root)
        if path.name.startswith(".") or name.endswith("~"):
            continue  # editor and backup files
        if not name.endswith(".yaml"):
            raise ConfigError(
                name, "", "not a layer file (expected province.yaml, level-<level>.yaml or "
                "sites/<unit id>.yaml)",
            )  # fmt: skip
        stem = name[: -len(".yaml")]
        if stem.startswith("sites/"):
            unit = stem[len("sites/") :]
            if unit not in org:
                raise ConfigError(name, "", f"no unit {unit!r} in the organisation file")
        elif stem.startswith("level-"):
            if stem[len("level-") :] not in LEVELS:
                raise ConfigError(
                    name, "", f"unknown level (expected level-<{'|'.join(LEVELS)}>.yaml)"
                )
        elif stem != "province":
            raise ConfigError(
                name, "", "not a layer file (expected province.yaml, level-<level>.yaml or "
                "sites/<unit id>.yaml)",
            )  # fmt: skip
        try:
            data = read_yaml(path, empty_hint="expected central keys such as networks:")
        except ConfigError as exc:
            raise ConfigError(name, exc.path, exc.message) from None
        layers[stem] = _check_layer(data, name)
    return layers


def _chain(org: Org, site: str) -> list[str]:
    """The layer names that apply to ``site``, in merge order."""
    unit = org.get(site)
    assert unit is not None
    ancestors: list[str] = []
    current: str | None = site
    while current is not None:
        ancestors.append(current)
        parent = org.get(current)
        current = parent.parent if parent is not None else None
    return ["province", f"level-{unit.level}", *(f"sites/{u}" for u in reversed(ancestors))]


def _origin(origin: Mapping[str, str], path: str) -> str | None:
    """The file that set ``path`` or the nearest enclosing key."""
    while path:
        if path in origin:
            return origin[path]
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            break
        path = path[:cut]
    return origin.get(path)


def effective_for(
    layers: Mapping[str, Layer], chain: list[str], role: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged central keys for one site and role, and which file set each key."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in chain:
        layer = layers.get(name)
        if layer is None:
            continue
        merge_config(merged, layer.base, file=layer.file, origin=origin)
        if role in layer.roles:
            merge_config(merged, layer.roles[role], file=layer.file, origin=origin)
    return merged, origin


def version_of(config: Mapping[str, Any]) -> str:
    """A config's version: a hash of its canonical JSON (the ETag)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def validate(site: str, role: str, config: Mapping[str, Any], file: str = "<central>") -> None:
    """Validate central keys exactly as an agent will (placeholders for the local keys).

    The agent's own validation, imported only here: a collector without ``agent_config``
    never loads the agent's probe modules.
    """
    from agent.config import parse_config

    parse_config({"site": site, "role": role, **config}, file)


def load_central(directory: str | Path, org: Org) -> CentralConfig:
    """Load, merge and validate; raise ConfigError naming the layer file and key."""
    layers = load_layers(directory, org)
    effective: dict[tuple[str, str], Effective] = {}
    checked: dict[str, Effective] = {}
    used: set[str] = set()
    for unit in org.units:
        chain = _chain(org, unit.id)
        used.update(chain)
        for role in ROLES:
            merged, origin = effective_for(layers, chain, role)
            key = json.dumps(merged, sort_keys=True, default=str)
            known = checked.get(key)
            if known is None:
                try:
                    validate(unit.id, role, merged)
                except ConfigError as exc:
                    file = _origin(origin, exc.path) or chain[-1] + ".yaml"
                    raise ConfigError(
                        file, exc.path, f"{exc.message} (effective config of {unit.id}, {role})"
                    ) from None
                version = version_of(merged)
                known = checked[key] = Effective(version, merged, b"")
            body = json.dumps(
                {"version": known.version, "site": unit.id, "role": role, "config": merged},
                ensure_ascii=False,
                default=str,
            ).encode()
            effective[(unit.id, role)] = Effective(known.version, known.config, body)
    for name, layer in layers.items():
        if name in used:
            continue
        for role in ROLES:  # a layer no unit uses yet is still checked on its own
            merged, _ = effective_for({name: layer}, [name], role)
            try:
                validate(org.province, role, merged, layer.file)
            except ConfigError as exc:
                raise ConfigError(layer.file, exc.path, exc.message) from None
    return CentralConfig(str(directory), effective, len(layers))


class CentralHolder:
    """The config being served, replaced whole by ``reload`` only when the new one is valid."""

    def __init__(self, directory: str | None, org: Org) -> None:
        self.directory = directory
        self.org = org
        self.current: CentralConfig | None = (
            load_central(directory, org) if directory is not None else None
        )
        self.reloads = 0
        self.last_error: str | None = None

    def reload(self) -> bool:
        """Reload the layer files; on error log it (file and key) and keep the old config."""
        if self.directory is None:
            return True
        try:
            new = load_central(self.directory, self.org)
        except ConfigError as exc:
            self.last_error = str(exc)
            event(
                log,
                logging.ERROR,
                "central.reload_failed",
                error=str(exc),
                kept=self.current.files if self.current else 0,
                hint="the previous central configuration keeps being served",
            )
            return False
        self.current, self.last_error = new, None
        self.reloads += 1
        versions = {e.version for e in new.effective.values()}
        event(log, logging.INFO, "central.loaded", files=new.files, versions=len(versions))
        return True


CENTRAL: Final = web.AppKey("central", CentralHolder)
_ETAG: Final = re.compile(r'(?:W/)?"([^"]*)"')


async def get_config(request: web.Request) -> web.Response:
    """GET /api/v1/config: the effective config of the caller's site and role (ETag)."""
    site = await api.authenticate_request(request)
    role = request.query.get("role", "host")
    if role not in ROLES:
        raise api.Rejection(
            400,
            "invalid_role",
            f"role: {role[:40]!r} is not one of: {', '.join(ROLES)}",
            f"role: {role[:40]!r} không phải một trong: {', '.join(ROLES)}",
            reason="invalid",
            field="role",
        )
    current = request.app[CENTRAL].current
    effective = current.get(site, role) if current is not None else None
    if effective is None:
        raise api.Rejection(
            404,
            "no_central_config",
            "this collector serves no central configuration (agent_config is not set); "
            "the agent keeps its local file",
            "Máy chủ không cung cấp cấu hình tập trung; tác tử dùng tệp cấu hình tại chỗ",
            reason="invalid",
        )
    etag = f'"{effective.version}"'
    wanted = request.headers.get("If-None-Match", "")
    if wanted.strip() == "*" or effective.version in _ETAG.findall(wanted):
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(
        body=effective.body,
        content_type="application/json",
        headers={"ETag": etag, "Cache-Control": "no-cache"},
    )


class ConfigStatus(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /api/v1/config/status``."""

    agent_id: Id
    version: str | None = msgspec.field(default=None)
    error: str | None = None  # why the agent rejected ``rejected`` (None: it runs ``version``)
    rejected: str | None = None

    def __post_init__(self) -> None:
        for name in ("version", "rejected"):
            value = getattr(self, name)
            if value is not None and not 1 <= len(value) <= 64:
                raise ValueError(f"{name}: 1 to 64 characters")
        if self.error is not None and len(self.error) > 1024:
            raise ValueError("error: at most 1024 characters")


async def post_config_status(request: web.Request) -> web.Response:
    """POST /api/v1/config/status: which central config an agent runs, what it rejected."""
    site = await api.authenticate_request(request)
    body = await request.content.read(MAX_STATUS_BODY + 1)
    if len(body) > MAX_STATUS_BODY:
        raise api.Rejection(
            413, "too_large", f"body over {MAX_STATUS_BODY} bytes", "Nội dung quá lớn",
            reason="too_large",
        )  # fmt: skip
    try:
        status = msgspec.json.decode(body, type=ConfigStatus)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        text = str(exc)
        match = re.match(r"^(?P<msg>.*?) - at `(?P<field>\$[^`]*)`$", text, re.DOTALL)
        field_name = match.group("field") if match else "$"
        raise api.Rejection(
            422 if isinstance(exc, msgspec.ValidationError) else 400,
            "invalid_status",
            f"{field_name}: {match.group('msg') if match else text}"[:300],
            f"Trạng thái cấu hình không hợp lệ tại {field_name}",
            reason="invalid",
            field=field_name,
        ) from None
    api.check_agent(request, status.agent_id, "$.agent_id")
    await request.app[api.STORE].record_config_status(
        site, status.agent_id, status.version, status.error, status.rejected
    )
    if status.error:
        event(
            log,
            logging.WARNING,
            "central.rejected_by_agent",
            site=site,
            agent_id=status.agent_id,
            rejected=status.rejected,
            error=status.error[:300],
        )
    return web.Response(status=204)

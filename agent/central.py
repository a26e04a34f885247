"""Central configuration on the agent: fetch, validate exactly like a local file, apply,
keep the last good one, and tell the collector which version runs.

``GET /api/v1/config?role=R`` with ``If-None-Match`` (an unchanged config is a 304) every
``central.refresh``. The answer's ``config`` holds only central keys; the agent's
effective config is that, with the local file merged over it (a key the local file sets
wins, docs/central-config.md), validated by ``agent.config.parse_config``. A config that
fails is not applied: the agent keeps running the last good one and reports the error
(``POST /api/v1/config/status``), which ``hatang-collector agents list`` and the
``hatang_site_agent_config_errors`` metric show. The last good one is cached next to the
spool (owner-only), so an agent that restarts while the collector is unreachable still
runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from agent.config import (
    CENTRAL_KEYS,
    AgentConfig,
    CollectorConfig,
    ConfigError,
    merge_config,
    parse_config,
)
from agent.log import event
from agent.private_file import write_private
from agent.sender import (
    MAX_RESPONSE_BYTES,
    USER_AGENT,
    Response,
    TransportError,
    _classify,
    make_ssl_context,
)

log = logging.getLogger(__name__)

CONFIG_PATH: Final = "/api/v1/config"
STATUS_PATH: Final = "/api/v1/config/status"
ENROLL_PATH: Final = "/api/v1/enroll"


def call(
    collector: CollectorConfig,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """One request to the collector, trying its URLs in order; TransportError when none
    answered. One connection per call: these requests come minutes apart."""
    context = (
        make_ssl_context(collector) if any(u.startswith("https:") for u in collector.urls) else None
    )
    sent = {"User-Agent": USER_AGENT, **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    errors: list[str] = []
    for url in collector.urls:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=float(collector.timeout), context=context
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=float(collector.timeout))
        try:
            conn.request(method, parts.path.rstrip("/") + path, body=body, headers=sent)
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE_BYTES)
            return Response(
                resp.status, resp.reason, {k.lower(): v for k, v in resp.getheaders()}, data
            )
        except Exception as exc:
            error = _classify(exc)
            errors.append(f"{url}: {error}")
            if error.reason == "tls_error":
                raise TransportError(error.reason, "; ".join(errors)) from None
        finally:
            conn.close()
    raise TransportError("unreachable", "; ".join(errors))


def default_cache(config: AgentConfig) -> Path:
    """Where the last good central config is kept: next to the spool."""
    if config.central is not None and config.central.cache:
        return Path(config.central.cache)
    return Path(config.spool.path).with_name("central.json")


def effective(local: Mapping[str, Any], central: Any, version: str, file: str) -> AgentConfig:
    """The agent config from central keys with the local file over them; ConfigError when
    the result fails the agent's validation, or the collector sent a local key."""
    where = f"{file} + central config {version}"
    if not isinstance(central, dict):
        raise ConfigError(where, "", "the central config is not a mapping")
    for key in central:
        if key not in CENTRAL_KEYS:
            raise ConfigError(where, str(key), "is not a central key (only the local file sets it)")
    merged = merge_config(json.loads(json.dumps(central)), dict(local))
    return parse_config(merged, where)


@dataclass(frozen=True, slots=True)
class Applied:
    """A central config the agent runs."""

    version: str
    config: AgentConfig


class Refresher:
    """Keeps the agent on the newest valid central config (see the module docstring)."""

    def __init__(
        self,
        local: Mapping[str, Any],
        config: AgentConfig,
        config_path: str,
        token: str,
        agent_id: str,
        apply: Callable[[AgentConfig], None],
    ) -> None:
        assert config.collector is not None and config.central is not None
        self.local = dict(local)
        self.collector = config.collector
        self.refresh = float(config.central.refresh)
        self.role = config.role
        self.config_path = config_path
        self.token = token
        self.agent_id = agent_id
        self.apply = apply
        self.cache = default_cache(config)
        self.version: str | None = None  # the central version running now
        self.rejected: tuple[str, str] | None = None  # (version, error) last rejected
        self.fetches = 0
        self.not_modified = 0
        self.standalone = False  # the collector serves no central config (404)
        self._reported: tuple[Any, ...] | None = None

    def load_cache(self) -> Applied | None:
        """The cached last good config, validated again (None when absent or no longer valid)."""
        try:
            data = json.loads(self.cache.read_bytes())
            version = str(data["version"])
            config = effective(self.local, data["config"], version, self.config_path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            event(
                log,
                logging.WARNING,
                "central.cache_unusable",
                path=str(self.cache),
                error=str(exc)[:300],
            )
            return None
        self.version = version
        applied = Applied(version, config)
        return applied

    async def fetch(self) -> Applied | None:
        """Ask once; the new config when one was applied, else None (304, error, rejected)."""
        headers = {"Accept": "application/json"}
        if self.version is not None:
            headers["If-None-Match"] = f'"{self.version}"'
        self.fetches += 1
        try:
            resp = await asyncio.to_thread(
                call, self.collector, "GET", f"{CONFIG_PATH}?role={self.role}",
                token=self.token, headers=headers,
            )  # fmt: skip
        except TransportError as exc:
            event(log, logging.WARNING, "central.unreachable", error=str(exc)[:300])
            return None
        if resp.status == 304:
            self.not_modified += 1
            await self._report()
            return None
        self.standalone = resp.status == 404
        if resp.status != 200:
            level = logging.DEBUG if resp.status == 404 else logging.WARNING
            event(log, level, "central.fetch_failed", collector_says=resp.describe())
            return None
        data = resp.json()
        version = data.get("version")
        if not isinstance(version, str) or not 1 <= len(version) <= 64:
            self.rejected = ("?", "the answer has no version")
            await self._report()
            return None
        try:
            config = effective(self.local, data.get("config"), version, self.config_path)
        except ConfigError as exc:
            self.rejected = (version, str(exc)[:1000])
            event(
                log,
                logging.ERROR,
                "central.rejected",
                version=version,
                error=str(exc),
                running=self.version or "local file",
                hint="the agent keeps its last good configuration; fix the central layer files",
            )
            await self._report()
            return None
        text = json.dumps({"version": version, "config": data["config"]}, ensure_ascii=False)
        try:
            await asyncio.to_thread(write_private, self.cache, text.encode())
        except OSError as exc:
            event(log, logging.WARNING, "central.cache_not_written", error=str(exc)[:300])
        self.version, self.rejected = version, None
        event(log, logging.INFO, "central.applied", version=version)
        self.apply(config)
        await self._report()
        return Applied(version, config)

    async def _report(self) -> None:
        """Tell the collector the version running and the last rejection, once per change."""
        state = (self.version, self.rejected)
        if state == self._reported:
            return
        body = {
            "agent_id": self.agent_id,
            "version": self.version,
            "error": self.rejected[1] if self.rejected else None,
            "rejected": self.rejected[0] if self.rejected else None,
        }
        try:
            resp = await asyncio.to_thread(
                call, self.collector, "POST", STATUS_PATH,
                token=self.token, body=json.dumps(body).encode(),
            )  # fmt: skip
        except TransportError as exc:
            event(log, logging.WARNING, "central.status_not_sent", error=str(exc)[:300])
            return
        if resp.status == 204:
            self._reported = state
        else:
            event(log, logging.WARNING, "central.status_refused", collector_says=resp.describe())

    async def first(self, stop: asyncio.Event) -> bool:
        """Wait for a first good central config (no cache yet); False when stopped first.

        Without one the agent would probe what its local file alone says (the default
        gateway, nothing else) and report that as the office's state: better to wait.
        A collector that serves no central config (404) means standalone: go on.
        """
        delay = 1.0
        while not stop.is_set():
            if await self.fetch() is not None or self.version is not None or self.standalone:
                return True
            event(log, logging.WARNING, "central.waiting", retry_in_seconds=delay,
                  hint="no central configuration yet; checks start once it arrives")  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self.refresh, 60.0)
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch now, then every ``refresh`` until ``stop``."""
        while not stop.is_set():
            try:
                await self.fetch()
            except Exception as exc:  # never let the refresher take the daemon down
                event(log, logging.ERROR, "central.internal_error", error=repr(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.refresh)

"""Agent authentication: bearer token → the one site it may report for.

Tokens are random secrets created by ``hatang-collector token create``; the store keeps
only their SHA-256, so a copy of the database does not let anyone report. Every request
looks the hash up in the store, which answers from an in-memory table that it reloads
when a token changed in any process (see ``SQLiteStore.lookup_token``): no I/O per
request, yet a token revoked from the command line stops working on the next request of
a running server. ``auth.cache_ttl`` (off by default) only matters for stores that must
ask their database each time.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Final, Literal

from collector.store import Store, TokenRecord

MAX_TOKEN_LENGTH: Final = 256
_BEARER: Final = re.compile(r"Bearer +([A-Za-z0-9._~+/=-]+) *", re.IGNORECASE)
TOUCH_EVERY: Final = 60.0  # last_used_at is written at most this often per token


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """Why a request is not authenticated: ``missing``/``unknown`` → 401, ``revoked`` → 403."""

    reason: Literal["missing", "malformed", "unknown", "revoked"]
    token_id: str | None = None


def bearer_token(header: str | None) -> str | AuthFailure:
    """Extract the token from an ``Authorization`` header value."""
    if not header:
        return AuthFailure("missing")
    if len(header) > MAX_TOKEN_LENGTH + 16:
        return AuthFailure("malformed")
    match = _BEARER.fullmatch(header)  # fullmatch: no trailing newline
    if not match:
        return AuthFailure("malformed")
    return match.group(1)


class Authenticator:
    """Checks tokens against the store, with an optional short cache."""

    def __init__(self, store: Store, cache_ttl: float = 0.0) -> None:
        self.store = store
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self._last_touch: dict[str, float] = {}
        self._pending: dict[str, dt.datetime] = {}

    async def authenticate(self, header: str | None) -> TokenRecord | AuthFailure:
        """Return the token's record when it may report, else why not."""
        token = bearer_token(header)
        if isinstance(token, AuthFailure):
            return token
        record = await self._lookup(token)
        if record is None:
            return AuthFailure("unknown")
        if record.revoked_at is not None:
            return AuthFailure("revoked", record.token_id)
        self._note_use(record.token_id)
        return record

    async def _lookup(self, token: str) -> TokenRecord | None:
        if self.cache_ttl <= 0:
            return await self.store.lookup_token(token)
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and now - hit[0] < self.cache_ttl:
            return hit[1]
        record = await self.store.lookup_token(token)
        if len(self._cache) > 10_000:  # unknown tokens must not grow the cache without bound
            self._cache.clear()
        self._cache[token] = (now, record)
        return record

    def _note_use(self, token_id: str) -> None:
        now = time.monotonic()
        if now - self._last_touch.get(token_id, -TOUCH_EVERY) >= TOUCH_EVERY:
            self._last_touch[token_id] = now
            self._pending[token_id] = dt.datetime.now(dt.UTC)

    async def flush(self) -> None:
        """Write pending ``last_used_at`` updates (called periodically by the app)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        await self.store.touch_tokens(pending)

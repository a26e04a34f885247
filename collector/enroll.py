"""Enrollment: short codes the IT centre hands out, exchanged for per-agent credentials.

A code is 16 characters of Crockford base32 in four groups, ``K7QM-3XWD-9PTA-HN4R``: the
first group is the code's id (the lookup key, 20 bits), the other three its secret (60
bits). Typing is forgiving: lower case, missing dashes and spaces are accepted, and the
letters that Crockford's alphabet leaves out because they look like digits (I, L, O)
are read as the digits (1, 1, 0). U is not in the alphabet either.

Guessing must not pay (docs/security.md has the arithmetic): a wrong guess at a code id
counts against that code, which locks after ``enroll.max_failures``; failures also drain
a token bucket per source address (429 with Retry-After once empty); an unknown id and
a wrong secret get the same answer after the same work, so a guess cannot even tell
that an id exists. Only a caller who typed the whole code correctly learns that it
expired, is used up, revoked or locked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from typing import Annotated, Final

import msgspec
from aiohttp import web

from agent import __version__
from agent.log import event
from agent.report import Id, Name, Role
from collector import api
from collector.store import (
    EnrollCode,
    NewAgent,
    RedeemOutcome,
    StoreError,
    hash_token,
    new_token,
)

log = logging.getLogger(__name__)

ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_READ_AS: Final = str.maketrans({"I": "1", "L": "1", "O": "0"})
GROUPS: Final = 4
GROUP_LENGTH: Final = 4
CODE_LENGTH: Final = GROUPS * GROUP_LENGTH
ID_LENGTH: Final = GROUP_LENGTH
SECRET_BITS: Final = (CODE_LENGTH - ID_LENGTH) * 5  # 60
# scrypt cost: 8 MiB and some 50 ms per check. Verifying costs the collector that much
# only for requests that passed the per-address throttle.
SCRYPT_N: Final = 2**13
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
MAX_ENROLL_BODY: Final = 4096
_FIELD: Final = re.compile(r"^(?P<msg>.*?) - at `(?P<field>\$[^`]*)`$", re.DOTALL)
# A fixed salt for the dummy verification of unknown ids (same work, same timing).
_DUMMY_HASH: Final = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$AAAAAAAAAAAAAAAAAAAAAA$" + "0" * 64


class CodeFormatError(ValueError):
    """A code that cannot be one of ours (wrong length or characters)."""


def new_code() -> str:
    """A fresh code, formatted in groups (``secrets``: every character uniform)."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return format_code(raw)


def format_code(raw: str) -> str:
    """``K7QM3XWD9PTAHN4R`` → ``K7QM-3XWD-9PTA-HN4R``."""
    return "-".join(raw[i : i + GROUP_LENGTH] for i in range(0, CODE_LENGTH, GROUP_LENGTH))


def normalize_code(text: str) -> str:
    """The canonical 16 characters of a typed code; raise CodeFormatError when it cannot be one."""
    raw = re.sub(r"[\s\-_.]", "", text).upper().translate(_READ_AS)
    if len(raw) != CODE_LENGTH:
        raise CodeFormatError(
            f"an enrollment code has {CODE_LENGTH} characters (4 groups of 4, e.g. "
            f"K7QM-3XWD-9PTA-HN4R), this one has {len(raw)}"
        )
    bad = sorted({c for c in raw if c not in ALPHABET})
    if bad:
        raise CodeFormatError(f"an enrollment code has no {', '.join(map(repr, bad))}")
    return raw


def code_id(raw: str) -> str:
    """The public lookup key of a normalised code: its first group."""
    return raw[:ID_LENGTH]


def hash_code(raw: str) -> str:
    """The stored form of a code: scrypt with a random salt.

    Why slow and not a plain SHA-256 like the agent tokens: a token has 256 random bits,
    a code only 60 (it must be typed by hand). With a copy of the database and a fast
    hash, a GPU tries 2^60 SHA-256 in weeks, inside a code's lifetime; with scrypt at
    8 MiB per try the same search costs some 10^9 CPU-years. A keyed hash (pepper)
    would protect as well only while the key is kept apart from the database, which a
    single-machine collector cannot promise; scrypt needs no second secret. The cost is
    paid online only for requests that pass the throttle, and 3,000 enrollments cost the
    collector a few CPU-minutes in total.
    """
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(raw.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${digest.hex()}"


def verify_code(raw: str, stored: str) -> bool:
    """Whether ``raw`` is the code ``stored`` was made from (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            raw.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 2**20
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_codes(
    sites: list[str], uses: int, expires_in: float, taken: set[str], note: str | None = None
) -> list[tuple[EnrollCode, str]]:
    """New codes for ``sites`` (ids distinct from ``taken`` and each other): (record, code)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    now = time.time()
    codes: list[str] = []
    for _site in sites:
        while True:
            code = new_code()
            if code_id(normalize_code(code)) not in taken:
                break
        taken.add(code_id(normalize_code(code)))
        codes.append(code)
    # scrypt releases the GIL: a province's 3,000 codes hash on every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        hashes = list(pool.map(hash_code, (normalize_code(c) for c in codes)))
    made: list[tuple[EnrollCode, str]] = []
    for site, code, digest in zip(sites, codes, hashes, strict=True):
        raw = normalize_code(code)
        record = EnrollCode(
            code_id=code_id(raw),
            code_hash=digest,
            site=site,
            max_uses=uses,
            uses=0,
            failures=0,
            created_at=now,
            expires_at=now + expires_in,
            note=note,
        )
        made.append((record, code))
    return made


# -- throttle --------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class FailureThrottle:
    """A token bucket of failed attempts per source address.

    Each failure takes a token; tokens come back at ``per_minute``; an empty bucket means
    429 until the next token. Successes cost nothing, so an office enrolling 20 PCs
    behind one NAT address is never slowed by its own correct codes.
    """

    def __init__(self, burst: int, per_minute: float, max_addresses: int = 100_000) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.max_addresses = max_addresses
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, peer: str, now: float) -> _Bucket:
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self.max_addresses:
                # Forget full buckets first: they are the ones nobody is throttled by.
                self._buckets = {
                    k: b for k, b in self._buckets.items() if self._level(b, now) < self.burst
                }
                if len(self._buckets) >= self.max_addresses:
                    self._buckets.clear()
            bucket = self._buckets[peer] = _Bucket(self.burst, now)
        return bucket

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)

    def retry_after(self, peer: str, now: float | None = None) -> float:
        """0 when ``peer`` may try now, else seconds until it may."""
        now = time.monotonic() if now is None else now
        bucket = self._bucket(peer, now)
        level = self._level(bucket, now)
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate

    def failed(self, peer: str, now: float | None = None) -> None:
        """Take a token for one failed attempt."""
        now = time.monotonic() if now is None else now
        bucket = self._bucket(peer, now)
        bucket.tokens, bucket.at = max(0.0, self._level(bucket, now) - 1.0), now


# -- the endpoint ----------------------------------------------------------------------


class EnrollRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /api/v1/enroll``."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    hostname: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    role: Role = "host"
    agent_version: Name = "unknown"
    agent_id: Id | None = None  # the agent's own stable id, kept when free


class EnrollState:
    """Per-app enrollment state: the throttle and a bound on concurrent scrypt checks."""

    def __init__(self, burst: int, per_minute: float, max_failures: int) -> None:
        self.throttle = FailureThrottle(burst, per_minute)
        self.max_failures = max_failures
        self.checks = asyncio.Semaphore(2)


ENROLL: Final = web.AppKey("enroll", EnrollState)

_REFUSALS: Final[dict[str, tuple[str, str]]] = {
    "wrong_code": (
        "this enrollment code is wrong; check it with the paper from the provincial IT centre",
        "Mã đăng ký không đúng; hãy đối chiếu với giấy của trung tâm CNTT tỉnh",
    ),
    "expired": (
        "this enrollment code has expired; ask the provincial IT centre for a new one",
        "Mã đăng ký đã hết hạn; hãy xin mã mới từ trung tâm CNTT tỉnh",
    ),
    "used_up": (
        "this enrollment code has been used as many times as allowed; ask for a new one",
        "Mã đăng ký đã dùng hết số lần cho phép; hãy xin mã mới",
    ),
    "revoked": (
        "this enrollment code was revoked; ask the provincial IT centre for a new one",
        "Mã đăng ký đã bị thu hồi; hãy xin mã mới từ trung tâm CNTT tỉnh",
    ),
    "locked": (
        "this enrollment code is locked after too many wrong attempts; ask for a new one",
        "Mã đăng ký đã bị khóa do nhập sai quá nhiều lần; hãy xin mã mới",
    ),
}


def _refused(reason: str) -> api.Rejection:
    english, vietnamese = _REFUSALS[reason]
    rej = api.Rejection(403, reason, english, vietnamese, reason="unauthorized", field="$.code")
    return rej


def _bad_body(message: str, field: str = "$", status: int = 422) -> api.Rejection:
    return api.Rejection(
        status,
        "invalid_enrollment",
        f"{field}: {message}",
        f"Yêu cầu đăng ký không hợp lệ tại {field}: {message}",
        reason="invalid",
        field=field,
    )


def parse_request(body: bytes) -> EnrollRequest:
    """Decode and validate an enroll body; Rejection naming the field."""
    try:
        return msgspec.json.decode(body, type=EnrollRequest)
    except msgspec.ValidationError as exc:
        match = _FIELD.match(str(exc))
        msg, path = (match.group("msg"), match.group("field")) if match else (str(exc), "$")
        raise _bad_body(msg, path) from None
    except msgspec.DecodeError as exc:
        raise _bad_body(f"body is not valid JSON: {exc}", status=400) from None


async def _read(request: web.Request) -> bytes:
    if request.content_type != "application/json":
        raise api.Rejection(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, not {request.content_type!r}"[:200],
            "Content-Type phải là application/json",
            reason="unsupported_media_type",
        )
    if request.content_length is not None and request.content_length > MAX_ENROLL_BODY:
        raise api.Rejection(
            413, "too_large", f"body over {MAX_ENROLL_BODY} bytes", "Nội dung quá lớn",
            reason="too_large",
        )  # fmt: skip
    body = bytearray()
    async for chunk in request.content.iter_chunked(4096):
        body += chunk
        if len(body) > MAX_ENROLL_BODY:
            raise api.Rejection(
                413, "too_large", f"body over {MAX_ENROLL_BODY} bytes", "Nội dung quá lớn",
                reason="too_large",
            )  # fmt: skip
    return bytes(body)


async def post_enroll(request: web.Request) -> web.Response:
    """POST /api/v1/enroll: a valid code → a credential for one agent (shown once)."""
    state = request.app[ENROLL]
    peer = request.remote or "unknown"
    try:
        wait = math.ceil(state.throttle.retry_after(peer))
        if wait > 0:
            raise api.Rejection(
                429,
                "too_many_attempts",
                f"too many wrong enrollment attempts from this address; retry in {wait}s",
                f"Nhập sai mã đăng ký quá nhiều lần từ địa chỉ này; thử lại sau {wait} giây",
                reason="overloaded",
                headers={"Retry-After": str(wait)},
            )
        enrolled = await _enroll(request, state, peer, parse_request(await _read(request)))
    except api.Rejection as rej:
        if rej.status in (400, 403, 422):
            state.throttle.failed(peer)
        event(log, logging.WARNING, "enroll.refused", status=rej.status, error=rej.code, peer=peer)
        return api.error_response(
            rej.status, rej.code, rej.english, rej.vietnamese, field=rej.field, headers=rej.headers
        )
    except StoreError as exc:
        event(log, logging.WARNING, "enroll.store_unavailable", error=str(exc)[:300])
        return api.error_response(
            503,
            "store_unavailable",
            "the store is unavailable; nothing was issued, retry later",
            "Kho dữ liệu tạm thời không dùng được; chưa cấp gì, hãy thử lại sau",
            headers={"Retry-After": api.RETRY_AFTER_STORE},
        )
    return web.json_response(enrolled, status=201)


async def _enroll(
    request: web.Request, state: EnrollState, peer: str, body: EnrollRequest
) -> dict[str, object]:
    try:
        raw = normalize_code(body.code)
    except CodeFormatError as exc:
        raise _bad_body(str(exc), "$.code") from None
    store = request.app[api.STORE]
    record = await store.get_enroll_code(code_id(raw))
    async with state.checks:
        ok = await asyncio.to_thread(
            verify_code, raw, record.code_hash if record is not None else _DUMMY_HASH
        )
    if record is None or not ok:
        if record is not None:
            await store.enroll_failed(record.code_id, state.max_failures)
        raise _refused("wrong_code")
    if record.site not in request.app[api.ORG]:
        raise api.Rejection(
            403,
            "unknown_site",
            f"this code is for site {record.site!r}, which is no longer in the organisation tree",
            f"Mã này thuộc đơn vị {record.site!r}, đơn vị này không còn trong cây tổ chức",
            reason="unknown_site",
        )
    token_id, token = new_token()
    proposed = body.agent_id or _slug(body.hostname)
    agent = NewAgent(
        agent_id=proposed,
        hostname=body.hostname,
        role=body.role,
        agent_version=body.agent_version,
        token_id=token_id,
        token_hash=hash_token(token),
        peer=peer,
    )
    outcome: RedeemOutcome
    outcome, agent_id = await store.redeem_enroll_code(record.code_id, agent, time.time())
    if outcome != "ok":
        raise _refused("wrong_code" if outcome == "unknown" else outcome)
    event(
        log,
        logging.INFO,
        "enroll.issued",
        site=record.site,
        agent_id=agent_id,
        hostname=body.hostname[:100],
        role=body.role,
        code_id=record.code_id,
        peer=peer,
    )
    unit = request.app[api.ORG].get(record.site)
    return {
        "agent_id": agent_id,
        "site": record.site,
        "site_name": unit.name if unit is not None else record.site,
        "role": body.role,
        "token": token,
        "token_id": token_id,
        "collector_version": __version__,
    }


def _slug(hostname: str) -> str:
    """An agent id from a hostname when the agent proposed none."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", hostname).strip("-.") or "agent"
    return text[:59]


def expiry_text(ts: float) -> str:
    """A code's expiry for people: ``2026-12-15 10:07 UTC``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

"""The remote-write sender: queued late samples into Prometheus at their observation times.

Prometheus remote write 1.0: a snappy-compressed (block format) protobuf ``WriteRequest``
of ``TimeSeries{labels, samples}``, labels sorted by name with ``__name__``, millisecond
timestamps, the samples of one series in time order, POSTed with ``Content-Encoding:
snappy``, ``Content-Type: application/x-protobuf`` and ``X-Prometheus-Remote-Write-Version:
0.1.0``. 2xx: the samples are acknowledged (marked sent in the store, never sent again).
5xx, 429 and network failures: released and retried with exponential backoff and jitter
(429 and 503 honour ``Retry-After``). Any other 4xx: the receiver refuses the content, so
a retry cannot help; the samples are dropped and counted by reason (the reports stay in
the store and in evidence).

The message classes are built at import from a ``FileDescriptorProto`` (the four messages
and field numbers of prometheus/prompb ``remote.proto`` and ``types.proto``) with
``google.protobuf``'s descriptor pool: no generated ``*_pb2.py`` to regenerate whenever
the protobuf runtime moves a major version (generated code checks its runtime version),
and nothing to build at install time. Snappy is ``cramjam``: wheels for every platform,
no system library, and its ``snappy.compress_raw`` is the block format remote write uses
(not the framed stream format).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import logging
import math
import random
import ssl
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import aiohttp
import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.log import event
from collector.config import RemoteWriteConfig
from collector.late import STALE_NAN_BITS, series_labels
from collector.metrics import SPECS
from collector.store import Claim, QueueStats

log = logging.getLogger(__name__)

HEADERS: Final = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "hatang-collector",
}
STALE_NAN: Final[float] = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
BACKOFF_BASE: Final = 0.5
BACKOFF_MAX: Final = 30.0
RETRY_AFTER_MAX: Final = 300.0
RETRY_REASONS: Final = ("http_429", "http_5xx", "network", "timeout")
DROP_REASONS: Final = ("too_old", "queue_full", "http_4xx")


def _message_classes() -> tuple[type[Any], type[Any], type[Any], type[Any]]:
    """WriteRequest, TimeSeries, Label, Sample of remote write 1.0 (package prometheus)."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="hatang/prometheus_remote_write.proto", package="prometheus", syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:  # message fields only: a scalar with a type_name is refused
                added.type_name = type_name

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("Label", ("name", 1, f.TYPE_STRING, one, ""), ("value", 2, f.TYPE_STRING, one, ""))
    message("Sample", ("value", 1, f.TYPE_DOUBLE, one, ""), ("timestamp", 2, f.TYPE_INT64, one, ""))
    message(
        "TimeSeries",
        ("labels", 1, f.TYPE_MESSAGE, many, ".prometheus.Label"),
        ("samples", 2, f.TYPE_MESSAGE, many, ".prometheus.Sample"),
    )
    message("WriteRequest", ("timeseries", 1, f.TYPE_MESSAGE, many, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get = message_factory.GetMessageClass
    names = ("WriteRequest", "TimeSeries", "Label", "Sample")
    classes = [get(pool.FindMessageTypeByName(f"prometheus.{n}")) for n in names]
    return classes[0], classes[1], classes[2], classes[3]


WriteRequest, TimeSeries, Label, Sample = _message_classes()

Series = tuple[Sequence[tuple[str, str]], Sequence[tuple[int, float]]]


def encode(series: Iterable[Series]) -> bytes:
    """A snappy-compressed ``WriteRequest``: labels sorted by name, samples in time order."""
    request = WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, text in sorted(labels):
            ts.labels.add(name=name, value=text)
        for timestamp, number in sorted(samples, key=lambda s: s[0]):
            ts.samples.add(value=number, timestamp=timestamp)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def decode(body: bytes) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """The series of a remote-write body (for stub receivers in tests and benches)."""
    request = WriteRequest()
    request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [
        (
            {label.name: label.value for label in ts.labels},
            [(sample.timestamp, sample.value) for sample in ts.samples],
        )
        for ts in request.timeseries
    ]


def claim_series(claim: Claim) -> list[Series]:
    """Group a claim's rows into series (rows come ordered by series, then time)."""
    out: list[Series] = []
    for key, rows in itertools.groupby(claim.samples, key=lambda row: row[0]):
        samples = [(ts, STALE_NAN if stale else value) for _, ts, value, stale in rows]
        out.append((series_labels(key), samples))
    return out


class RemoteWriteQueue(Protocol):
    """The part of the store the sender uses (both store backends implement it)."""

    async def rw_claim(self, owner: str, limit: int, lease: float, oldest_ms: int) -> Claim: ...
    async def rw_finish(self, owner: str, outcome: str) -> int: ...
    async def rw_stats(self) -> QueueStats: ...


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), bounded."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: half to all of 0.5 s x 2^(attempt-1), at most 30 s."""
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** max(0, attempt - 1))
    return float(ceiling * (0.5 + rng() / 2))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request achieved: ``sent``, ``retry`` (with a delay) or a drop reason."""

    result: str
    reason: str = ""
    delay: float = 0.0


@dataclass(slots=True)
class SenderStats:
    """What the sender exposes (the store's counters plus this process's retries)."""

    queue: QueueStats = field(default_factory=lambda: QueueStats(0, None, {}))
    retries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RETRY_REASONS, 0))
    requests: int = 0
    updated_at: float = 0.0


def ssl_context(config: RemoteWriteConfig) -> ssl.SSLContext | bool:
    """The TLS settings of ``remote_write.tls`` (True: the system's defaults)."""
    tls = config.tls
    if tls.ca_file is None and tls.cert_file is None and not tls.insecure_skip_verify:
        return True
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


class Sender:
    """Claims queued samples, sends them, and records the outcome in the store."""

    def __init__(
        self,
        queue: RemoteWriteQueue,
        config: RemoteWriteConfig,
        session: aiohttp.ClientSession,
        *,
        poll: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.queue, self.config, self.session = queue, config, session
        self.poll, self.clock, self.sleep, self.rng = poll, clock, sleep, rng
        self.stats = SenderStats()
        self._ssl = ssl_context(config)
        self.owner = uuid.uuid4().hex  # this replica; a claim adds a counter
        self._claims = itertools.count(1)
        self._attempt = 0
        self.wake = asyncio.Event()  # set after ingests that may have queued samples

    def _headers(self) -> dict[str, str]:
        headers = {**self.config.headers, **HEADERS}
        auth, bearer = self.config.basic_auth, self.config.bearer_token_file
        if auth is not None:  # read at each request: a rotated secret needs no restart
            basic = aiohttp.BasicAuth(auth.username, _read_secret(auth.password_file))
            headers["Authorization"] = basic.encode()
        elif bearer is not None:
            headers["Authorization"] = f"Bearer {_read_secret(bearer)}"
        return headers

    async def post(self, body: bytes) -> Outcome:
        """One request; what to do with its samples."""
        self.stats.requests += 1
        try:
            async with self.session.post(
                self.config.url, data=body, headers=self._headers(), ssl=self._ssl
            ) as reply:
                status = reply.status
                waited = retry_after(reply.headers.get("Retry-After"), self.clock())
                # The start of the answer only: it goes to the log, bounded.
                text = (await reply.content.read(300)).decode("utf-8", "replace")
        except TimeoutError:
            return Outcome("retry", "timeout")
        except (aiohttp.ClientError, OSError) as exc:
            event(log, logging.WARNING, "remote_write.network", error=str(exc)[:300])
            return Outcome("retry", "network")
        if 200 <= status < 300:
            return Outcome("sent")
        if status == 429 or status >= 500:
            reason = "http_429" if status == 429 else "http_5xx"
            event(log, logging.WARNING, "remote_write.retry", status=status, answer=text)
            return Outcome("retry", reason, waited or 0.0)
        event(log, logging.ERROR, "remote_write.refused", status=status, answer=text)
        return Outcome("drop", "http_4xx")

    async def step(self) -> int:
        """Claim one batch and push it once; the samples claimed (0: the queue is empty)."""
        config = self.config
        owner = f"{self.owner}:{next(self._claims)}"
        oldest = math.floor((self.clock() - config.max_sample_age) * 1000)
        claim = await self.queue.rw_claim(owner, config.batch, config.timeout * 2 + 5, oldest)
        if claim.too_old:
            event(log, logging.WARNING, "remote_write.too_old", samples=claim.too_old)
        if not claim.samples:
            return 0
        outcome = await self.post(encode(claim_series(claim)))
        if outcome.result == "sent":
            self._attempt = 0
            await self.queue.rw_finish(owner, "sent")
        elif outcome.result == "retry":
            self._attempt += 1
            self.stats.retries[outcome.reason] = self.stats.retries.get(outcome.reason, 0) + 1
            await self.queue.rw_finish(owner, "retry")
            delay = max(outcome.delay, backoff(self._attempt, self.rng))
            await self.sleep(delay)
        else:
            self._attempt = 0
            await self.queue.rw_finish(owner, outcome.reason)
        return len(claim.samples)

    async def refresh_stats(self) -> None:
        self.stats.queue = await self.queue.rw_stats()
        self.stats.updated_at = self.clock()

    async def run(self) -> None:
        """Push until cancelled; a store failure waits a poll and tries again."""
        while True:
            try:
                # A read first: an idle collector does not queue a write every poll.
                await self.refresh_stats()
                while self.stats.queue.pending and await self.step():
                    await self.refresh_stats()
            except Exception as exc:  # the store is down: the rows stay queued
                event(log, logging.WARNING, "remote_write.failed", error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.poll)
            self.wake.clear()


class RemoteWriteCollector(Collector):
    """The sender's families (names, help and labels from ``collector.metrics.METRICS``)."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        stats = self._sender.stats
        queue = stats.queue
        families = self._families()
        pending, age, sent, dropped, failed = families
        pending.add_metric([], queue.pending)
        oldest = (
            0.0 if queue.oldest_ms is None else max(0.0, stats.updated_at - queue.oldest_ms / 1000)
        )
        age.add_metric([], oldest)
        sent.add_metric([], queue.counts.get("sent", 0))
        for reason in DROP_REASONS:
            dropped.add_metric([reason], queue.counts.get(reason, 0))
        for reason in RETRY_REASONS:
            failed.add_metric([reason], stats.retries.get(reason, 0))
        yield from families

    @staticmethod
    def _families() -> list[GaugeMetricFamily | CounterMetricFamily]:
        out: list[GaugeMetricFamily | CounterMetricFamily] = []
        for name in REMOTE_WRITE_METRICS:
            spec = SPECS[name]
            kind = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
            out.append(kind(spec.name, spec.help, labels=list(spec.labels)))
        return out


REMOTE_WRITE_METRICS: Final = (
    "hatang_remote_write_pending_samples",
    "hatang_remote_write_oldest_pending_age_seconds",
    "hatang_remote_write_sent_samples",
    "hatang_remote_write_dropped_samples",
    "hatang_remote_write_failed_requests",
)

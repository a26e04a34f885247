"""``hatang-collector backfill``: the stored history of a range into a new Prometheus.

The samples are those of the one rule's push (``collector.late.late_rows``: the /metrics
names and labels plus ``job``, no ``instance``, the ``hatang_backfilled_report`` marker),
for every stored report of ``[--from, --to)``, as if none had been scraped: the range
must end where the new Prometheus' own scrapes begin.

Two ways in, by age. Inside Prometheus' out-of-order window (``remote_write.max_sample_age``)
the samples go into the durable remote-write queue and are pushed like late reports
(staleness markers at ``--to`` end them, so the lookback does not carry them over the
first scrapes). Older samples would be refused by remote write, so they are written to an
OpenMetrics file for ``promtool tsdb create-blocks-from openmetrics FILE DATA_DIR``, which
builds TSDB blocks that Prometheus loads (from 2.39 overlapping blocks are merged).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.report import Report
from collector.late import LateRule, QueueRow, SiteContext, late_rows, series_labels
from collector.metrics import SPECS
from collector.store.ingest import Accepted

CHUNK = 500  # reports per step: memory stays bounded by a chunk plus the file's families


@dataclass(slots=True)
class Plan:
    """What a backfill produced: queued for remote write, and written for promtool."""

    queued: list[QueueRow]
    old: dict[str, dict[str, list[tuple[int, float]]]]  # name -> series -> samples

    @property
    def old_samples(self) -> int:
        return sum(len(s) for series in self.old.values() for s in series.values())


async def plan(
    reports: AsyncIterator[Report],
    rule: LateRule,
    probe_sites: set[str],
    cutoff_ms: int,
    end_ms: int,
) -> Plan:
    """The samples of ``reports`` (oldest first): ``cutoff_ms`` and newer are queued (with
    staleness markers at ``end_ms``), older ones kept for the OpenMetrics file."""
    context: dict[str, SiteContext] = defaultdict(SiteContext)
    result = Plan([], defaultdict(lambda: defaultdict(list)))
    chunk: list[Accepted] = []
    pushed: dict[str, str] = {}  # series -> site, of the queued part

    def flush() -> None:
        for site in {a.report.site for a in chunk}:
            context[site].has_probe = site in probe_sites
        rows = late_rows(chunk, rule, context)
        for a in chunk:  # the antivirus states carry on through history
            if a.report.antivirus is not None:
                context[a.report.site].av_states[a.report.agent_id] = a.report.antivirus.state
        for row in rows:
            if row.ts_ms >= cutoff_ms:
                result.queued.append(row)
                pushed[row.series] = row.site
            else:
                name = dict(series_labels(row.series))["__name__"]
                result.old[name][row.series].append((row.ts_ms, row.value))
        chunk.clear()

    async for report in reports:
        ts = report.observed_at.timestamp()
        chunk.append(Accepted(report, "", "", ts, ts))
        if len(chunk) >= CHUNK:
            flush()
    flush()
    result.queued += [
        QueueRow(series, end_ms, site, 0.0, stale=True) for series, site in sorted(pushed.items())
    ]
    return result


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def openmetrics_lines(old: dict[str, dict[str, list[tuple[int, float]]]]) -> Iterable[str]:
    """The OpenMetrics text of the old samples: one family after the other, each series'
    samples in time order, timestamps in seconds, ``# EOF`` last."""
    for name in sorted(old):
        spec = SPECS.get(name)
        yield f"# TYPE {name} gauge\n"  # the pushed families are all gauges
        if spec is not None:
            yield f"# HELP {name} {_escape(spec.help)}\n"
        for series in sorted(old[name]):
            labels = ",".join(
                f'{k}="{_escape(v)}"' for k, v in series_labels(series) if k != "__name__"
            )
            for ts, value in sorted(old[name][series]):
                text = repr(float(value)) if math.isfinite(value) else "NaN"
                yield f"{name}{{{labels}}} {text} {ts / 1000:.3f}\n"
    yield "# EOF\n"


def write_openmetrics(path: Path, old: dict[str, dict[str, list[tuple[int, float]]]]) -> None:
    """Write the file atomically (a half-written file must not be imported)."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        handle.writelines(openmetrics_lines(old))
    partial.replace(path)

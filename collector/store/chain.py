"""The tamper-evident history: every stored report chained by hash to the one before it.

Per site and in arrival order, each report gets a position ``chain_seq`` (1, 2, ...), the
chain hash of the report before it (``prev_hash``; ``GENESIS`` for the first) and its own

    chain_hash = sha256("hatang-chain-v1\\n" prev_hash \\n site \\n chain_seq \\n id \\n
                        sha256(body) \\n repr(received_at))

``chain_heads`` keeps each site's newest (seq, hash). Editing a stored report (its body or
its arrival time) breaks its own hash; deleting one leaves a gap in the positions (or a head
that points past the newest row); inserting one outside the collector leaves a row without
a chain or one that does not link. Rewriting a site's whole chain from some point onwards
(and its head) is only detectable against heads recorded earlier, which is why every
evidence manifest records them. Replays (same id, same content) are not stored, so they
are never chained; a late report is chained where it arrived, while evidence files it under
its observation time.

Appending is the writer's job inside the ingest transaction (SQLite: the single writer;
PostgreSQL: the site's ``chain_heads`` row locked ``FOR UPDATE``); checking is ``Checker``,
fed by ``hatang-collector store verify``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

GENESIS: Final = "0" * 64
MAX_PROBLEMS: Final = 100


def link(
    prev: str, site: str, seq: int, report_id: str, body_sha256: str, received_at: float
) -> str:
    """The chain hash of one report (see the module docstring)."""
    parts = ("hatang-chain-v1", prev, site, str(seq), report_id, body_sha256)
    text = "\n".join(parts) + f"\n{float(received_at)!r}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def body_hash(body: str | bytes) -> str:
    """SHA-256 of a stored body, as at ingest (the canonical JSON bytes)."""
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    """The chain columns of one report."""

    seq: int
    prev: str
    hash: str

    def values(self) -> tuple[int, str, str]:
        """(chain_seq, prev_hash, chain_hash), the column order of every write."""
        return self.seq, self.prev, self.hash


def extend(
    heads: Mapping[str, tuple[int, str]],
    reports: Iterable[tuple[str, str, str, float]],
) -> tuple[dict[str, Link], dict[str, tuple[int, str]]]:
    """Append reports ``(site, id, body_sha256, received_at)``, in arrival order, to the
    chains whose heads are ``heads`` (site → (seq, hash); a missing site starts afresh).

    Returns each report's ``Link`` by id and the new heads of the sites that moved.
    """
    moved: dict[str, tuple[int, str]] = {}
    links: dict[str, Link] = {}
    for site, report_id, digest, received_at in reports:
        seq, prev = moved.get(site) or heads.get(site) or (0, GENESIS)
        new = link(prev, site, seq + 1, report_id, digest, received_at)
        links[report_id] = Link(seq + 1, prev, new)
        moved[site] = (seq + 1, new)
    return links, moved


@dataclass(slots=True)
class Checker:
    """Walks ``reports`` rows ordered by (site, chain_seq) and names what does not fit.

    ``feed`` takes (site, chain_seq, id, prev_hash, chain_hash, received_at, body); rows
    without a chain may come anywhere. ``finish`` compares each site's last row with its
    head and returns the problems found (at most ``MAX_PROBLEMS``, then a count).
    """

    heads: Mapping[str, tuple[int, str]]
    problems: list[str] = field(default_factory=list)
    more: int = 0
    rows: int = 0
    _site: str | None = None
    _last: tuple[int, str, str] | None = None  # seq, hash, id of the site's previous row
    _seen: set[str] = field(default_factory=set)

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more += 1

    def feed(self, row: Sequence[Any]) -> None:
        site, seq, report_id, prev, stored, received_at, body = row
        self.rows += 1
        if seq is None or stored is None or prev is None:
            self._problem(
                f"report {report_id} (site {site}): not in the hash chain"
                " (inserted outside the collector)"
            )
            return
        seq = int(seq)
        if site != self._site:
            self._close_site()
            self._site, self._last = site, None
            self._seen.add(site)
        last_seq, last_hash, last_id = self._last or (0, GENESIS, "")
        where = f"report {report_id} (site {site}, chain #{seq})"
        if seq == last_seq:
            self._problem(f"{where}: a second report at the same chain position (inserted)")
            return
        if seq > last_seq + 1:
            missing = seq - last_seq - 1
            after = f"#{last_seq} ({last_id})" if last_id else "the start"
            self._problem(
                f"site {site}: {missing} report(s) missing between {after} and #{seq}"
                f" ({report_id}) (deleted)"
            )
        elif prev != last_hash:
            self._problem(f"{where}: does not link to the report before it (inserted or altered)")
        if link(prev, site, seq, report_id, body_hash(body), received_at) != stored:
            self._problem(f"{where}: content differs from what was chained (altered)")
        self._last = (seq, str(stored), str(report_id))

    def _close_site(self) -> None:
        if self._site is None:
            return
        head = self.heads.get(self._site)
        last_seq, last_hash, last_id = self._last or (0, GENESIS, "")
        if head is None:
            self._problem(f"site {self._site}: reports without a chain head (inserted)")
        elif head[0] > last_seq:
            self._problem(
                f"site {self._site}: the newest {head[0] - last_seq} report(s) after"
                f" #{last_seq} ({last_id or 'none'}) are missing (deleted)"
            )
        elif head[0] == last_seq and head[1] != last_hash:
            self._problem(
                f"site {self._site}: chain head does not match report {last_id} (altered)"
            )
        elif head[0] < last_seq:
            self._problem(
                f"site {self._site}: report {last_id} at #{last_seq} is beyond the chain head"
                f" #{head[0]} (inserted)"
            )

    def finish(self) -> list[str]:
        self._close_site()
        self._site = None
        for site, (seq, _) in sorted(self.heads.items()):
            if site not in self._seen and seq > 0:
                self._problem(f"site {site}: all {seq} chained report(s) are missing (deleted)")
        if self.more:
            self.problems.append(f"... and {self.more} more chain problem(s)")
        return self.problems


# The read that feeds a Checker, and the pages a migration chains old rows from.
VERIFY_SQL: Final = (
    "SELECT site, chain_seq, id, prev_hash, chain_hash, received_at, body FROM reports"
    " ORDER BY site, chain_seq"
)
HEADS_SQL: Final = "SELECT site, seq, head FROM chain_heads"
BACKFILL_PAGE: Final = 1000
CHAIN_VERSION: Final = 4  # the migration that adds the chain (0004_hash_chain.sql)

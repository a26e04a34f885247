"""Faults against the running province: link cut, crashes, a full spool, a wrong clock.

Each test observes and asserts, records what it saw in ``province.observations`` (written
to ``observations.json`` and summarised in docs/e2e.md), and restores links and
processes before it ends. The books of every agent are checked after each fault:
every seq the agent made is stored exactly once or still queued, except the oldest ones
a full spool dropped and counted.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from collections.abc import Iterator

import pytest

from agent.report import (
    Networks,
    NetworkStatus,
    ProbeResult,
    Report,
    new_report_id,
)
from agent.spool import open_spool
from tests.e2e.province import (
    BUCKET,
    INTERVAL,
    Province,
    add_agent,
    drained,
    ledger,
    spool_state,
    stored_seqs,
)
from tests.netns import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.e2e, pytest.mark.slow]
SPOOL_BOUND = 1_000_000  # c7-h0's spool.max_size (1MB, the configured minimum)


def check_books(province: Province, *, allow_dropped: dict[str, int] | None = None) -> None:
    """Nothing lost, nothing stored twice, for every agent of the province."""
    allow = dict(allow_dropped or {})
    if "spool_full" in province.observations:  # drops counted by an earlier fault stay counted
        allow.setdefault("c7-h0", province.observations["spool_full"]["dropped"])
    for agent_id in province.agents:
        books = ledger(province, agent_id)
        assert not books.duplicates, f"{agent_id}: seqs stored twice: {books.duplicates}"
        lost = books.lost
        dropped = allow.get(agent_id, 0)
        assert len(lost) == dropped, f"{agent_id}: lost {lost} (spool dropped {dropped})"
        assert books.dropped == dropped, f"{agent_id}: spool dropped {books.dropped}"


def wait_drained(province: Province, timeout: float = 120) -> None:
    wait_for(lambda: drained(province), timeout=timeout, interval=0.5)


@pytest.fixture
def restore_all(province: Province) -> Iterator[None]:
    """Whatever a fault did: links up, collector and every agent running again."""
    yield
    for key in province.uplinks:
        province.restore(key)
    for agent_id in province.hosts:
        if agent_id in province.agents:
            province.restore_host(agent_id)
    if province.collector is None or province.collector.poll() is not None:
        province.start_collector()
    for agent in province.agents.values():
        if not agent.running and not agent.wrapper:
            agent.start()


def test_a_cut_commune_goes_down_and_every_report_made_meanwhile_arrives_once(
    province: Province, restore_all: None
) -> None:
    """Cut c1's uplinks; site down; on restore every report of the cut arrives exactly once,
    with its original observation time, and shows the networks down; completeness recovers."""
    site = province.site("c1")
    unit = site.unit_id
    agent_ids = [a.agent_id for a in province.site_agents("c1")]
    wait_drained(province)
    before = {i: max(stored_seqs(province, i)) for i in agent_ids}
    cut_at = time.time()
    province.cut("c1")
    wait_for(
        lambda: province.metrics().value("hatang_site_up", site=unit) == 0,
        timeout=60,
        interval=0.5,
    )
    site_down_after = time.time() - cut_at
    # Let the cut last long enough that the window ratio falls below up_ratio.
    wait_for(lambda: time.time() - cut_at >= 10 * INTERVAL, timeout=60, interval=0.5)
    queued = {i: len(spool_state(province.agents[i].spool)[0]) for i in agent_ids}
    assert all(n >= 5 for n in queued.values()), queued
    restored_at = time.time()
    province.restore("c1")
    wait_drained(province)
    wait_for(
        lambda: province.metrics().value("hatang_site_up", site=unit) == 1, timeout=60, interval=0.5
    )

    conn = province.store()
    try:
        rows = conn.execute(
            "SELECT agent_id, seq, observed_at, received_at, body FROM reports"
            " WHERE site = ? AND observed_at > ? AND observed_at < ? ORDER BY agent_id, seq",
            (unit, cut_at + 1, restored_at - 1),
        ).fetchall()
    finally:
        conn.close()
    during = [r for r in rows if r[3] >= restored_at]  # made during the cut, received after
    assert len(during) >= sum(queued.values()) - len(agent_ids)
    for agent_id, _seq, observed, received, body in during:
        report = json.loads(body)
        assert report["networks"]["wan"]["up"] is False, (agent_id, _seq)
        assert report["networks"]["internet"]["up"] is False
        assert report["networks"]["lan"]["up"] is True
        assert cut_at < observed < restored_at <= received  # original time kept, stored later
    for agent_id in agent_ids:
        seqs = stored_seqs(province, agent_id)
        assert seqs == list(range(1, seqs[-1] + 1)), f"{agent_id}: gaps or repeats"
        assert seqs[-1] > before[agent_id] + queued[agent_id] - 1

    # The replayed down checks pull the commune's window below up_ratio.
    m = province.metrics()
    window = m.value("hatang_site_network_window_up_ratio", site=unit, network="wan")
    assert window is not None and window < 0.9
    not_attaining = m.value(
        "hatang_indicator_units", indicator="wan", level="commune", state="not_attaining"
    )
    assert not_attaining == 2  # c6 (no WAN by design) and now c1
    wait_for(
        lambda: (
            (province.metrics().value("hatang_site_report_completeness_ratio", site=unit) or 0)
            >= 0.95
        ),
        timeout=90,
        interval=1.0,
    )
    check_books(province)
    province.observations["link_cut"] = {
        "site_down_after_seconds": round(site_down_after, 1),
        "queued_at_restore": queued,
        "replayed_reports": len(during),
        "wan_window_ratio_after_replay": window,
        "wan_commune_not_attaining_after_replay": not_attaining,
    }


def test_kill_9_collector_while_agents_send_loses_and_duplicates_nothing(
    province: Province, restore_all: None
) -> None:
    """The collector dies mid-traffic and comes back: every agent's books balance."""
    duplicates_before = province.metrics().value("hatang_reports_duplicate_total") or 0
    province.kill_collector()
    killed_at = time.time()
    wait_for(lambda: time.time() - killed_at >= 3 * INTERVAL, timeout=30, interval=0.5)
    queued = sum(len(spool_state(a.spool)[0]) for a in province.agents.values() if a.running)
    assert queued > 0
    province.start_collector()
    wait_drained(province)
    check_books(province)
    m = province.metrics()
    province.observations["kill_collector"] = {
        "queued_while_down": queued,
        # Counters restart with the process; replays of batches committed just before the
        # kill but never answered show here.
        "duplicates_after_restart": (m.value("hatang_reports_duplicate_total") or 0),
        "duplicates_before": duplicates_before,
    }


def _in_flight(province: Province, agent_id: str) -> bool:
    """Whether the agent has a connection to the collector open (a request outstanding)."""
    ns = province.hosts[agent_id]
    out = ns.exec("ss", "-Htn", "state", "established", "dport", "=", "8080", check=False).stdout
    return bool(out.strip())


def test_kill_9_agent_mid_batch_loses_and_duplicates_nothing(
    province: Province, restore_all: None
) -> None:
    """c8's host agent is killed while a batch is in flight: the collector is frozen
    (SIGSTOP) so that the agent's backlog grows and its request hangs; three rounds."""
    agent = province.agents["c8-h0"]
    assert province.collector is not None
    duplicates_before = province.metrics().value("hatang_reports_duplicate_total") or 0
    kills = []
    for round_ in range(3):
        province.collector.send_signal(signal.SIGSTOP)
        try:
            wait_for(
                lambda: (
                    len(spool_state(agent.spool)[0]) >= 3 and _in_flight(province, agent.agent_id)
                ),
                timeout=60,
                interval=0.1,
            )
            agent.stop(signal.SIGKILL)
            kills.append({"round": round_, "queued_after_kill": len(spool_state(agent.spool)[0])})
        finally:
            province.collector.send_signal(signal.SIGCONT)
        agent.start()
    wait_drained(province)
    check_books(province)
    duplicates = (province.metrics().value("hatang_reports_duplicate_total") or 0) - (
        duplicates_before
    )
    province.observations["kill_agent"] = {"kills": kills, "duplicates_acknowledged": duplicates}
    assert all(k["queued_after_kill"] >= 3 for k in kills), kills


def _prefill(province: Province, agent_id: str, room: int, start: dt.datetime) -> int:
    """Fill a stopped agent's spool with reports of a long cut (every network down) until
    about ``room`` reports' worth of space is left; return how many were appended."""
    agent = province.agents[agent_id]
    detail = "connect to 10.60.0.10:8080: network is unreachable (đường truyền bị cắt)"
    down = NetworkStatus(
        configured=True,
        up=False,
        rule="any",
        targets=[ProbeResult(kind="tcp", target="10.60.0.10:8080", up=False,
                             error="unreachable", detail=detail)],
    )  # fmt: skip
    spool = open_spool(agent.spool, SPOOL_BOUND)
    try:
        i = 0
        while True:

            def build(seq: int, dropped: int, i: int = i) -> Report:
                return Report(
                    id=new_report_id(),
                    agent_id=agent_id,
                    site=agent.site.unit_id,
                    role="host",
                    seq=seq,
                    observed_at=start + dt.timedelta(seconds=INTERVAL * i),
                    interval_seconds=INTERVAL,
                    agent_version="e2e-prefill",
                    networks=Networks(lan=down, wan=down, dedicated=down, internet=down),
                    spool_dropped=dropped,
                )

            appended = spool.append(build)
            i += 1
            if spool.stats().queued_bytes + room * (appended.size + 64) > SPOOL_BOUND:
                return i
    finally:
        spool.close()


def test_a_full_spool_drops_the_oldest_and_the_count_reaches_the_metrics(
    province: Province, restore_all: None
) -> None:
    """c7's host agent (1 MB spool) through a long cut: prefilled near the bound, then the
    running agent pushes the oldest out; after the restore the count shows in /metrics."""
    agent = province.agents["c7-h0"]
    unit = agent.site.unit_id
    wait_drained(province)
    agent.stop()
    province.cut_host(agent.agent_id)
    queued, next_seq, _ = spool_state(agent.spool)
    first = min(queued) if queued else next_seq  # the oldest seq not yet stored
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    # Stop a few reports short of the bound, so that the running agent itself drops.
    prefilled = _prefill(province, agent.agent_id, 4, start)
    assert spool_state(agent.spool)[2] == 0
    agent.start()
    wait_for(lambda: spool_state(agent.spool)[2] >= 3, timeout=120, interval=0.5)
    agent.stop()  # freeze the count so the test can compare it exactly
    queued, next_seq, dropped = spool_state(agent.spool)
    assert min(queued) == first + dropped  # the oldest went, in order
    province.restore_host(agent.agent_id)
    agent.start()
    wait_drained(province)
    wait_for(
        lambda: province.metrics().value("hatang_site_spool_dropped_reports", site=unit) == dropped,
        timeout=60,
        interval=0.5,
    )
    seqs = stored_seqs(province, agent.agent_id)
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    assert missing == list(range(first, first + dropped))
    check_books(province, allow_dropped={agent.agent_id: dropped})
    province.observations["spool_full"] = {
        "prefilled_reports": prefilled,
        "dropped": dropped,
        "missing_seqs": [missing[0], missing[-1]],
        "metric_hatang_site_spool_dropped_reports": dropped,
    }


def test_clock_skewed_agents_are_counted_filed_sanely_and_do_not_corrupt_windows(
    province: Province, restore_all: None
) -> None:
    """Two extra agents on a3's PC under faketime, +3 h and −3 h: the collector measures
    each clock from the batch's ``sent_at`` and moves the observations onto its own."""
    site = province.site("a3")
    unit = site.unit_id
    ns = province.agents["a3-p"].ns
    future = add_agent(province, site, "a3-skew-future", ns, wrapper=("faketime", "-f", "+3h"))
    past = add_agent(province, site, "a3-skew-past", ns, wrapper=("faketime", "-f", "-3h"))
    skewed_before = province.metrics().value("hatang_reports_clock_skew_total") or 0
    future.start()
    past.start()
    try:
        wait_for(
            lambda: (
                len(stored_seqs(province, future.agent_id)) >= 5
                and len(stored_seqs(province, past.agent_id)) >= 5
            ),
            timeout=90,
            interval=0.5,
        )
        m = province.metrics()
        skew_agents = m.value("hatang_site_clock_skew_agents", site=unit)
        assert skew_agents == 2
        assert m.value("hatang_network_up", site=unit, network="wan") == 1  # the probe's view
    finally:
        future.stop()
        past.stop()
    wait_for(lambda: drained(province, [future.agent_id, past.agent_id]), timeout=60)
    m = province.metrics()
    skewed = (m.value("hatang_reports_clock_skew_total") or 0) - skewed_before
    now = time.time()
    conn = province.store()
    try:
        rows = {
            agent_id: conn.execute(
                "SELECT observed_at, effective_at, received_at FROM reports WHERE agent_id = ?",
                (agent_id,),
            ).fetchall()
            for agent_id in (future.agent_id, past.agent_id)
        }
        (newest_bucket,) = conn.execute("SELECT MAX(hour) FROM network_hourly").fetchone()
    finally:
        conn.close()
    assert skewed == len(rows[future.agent_id]) + len(rows[past.agent_id])
    for agent_id, sign in ((future.agent_id, 1), (past.agent_id, -1)):
        for observed, effective, received in rows[agent_id]:
            assert sign * (observed - received) > 2.9 * 3600  # stored as the agent said
            # ...but filed on the collector's clock: at most the spool delay before arrival.
            assert received - 120 <= effective <= received + 1
    assert newest_bucket <= now  # no bucket in the future
    conn = province.store()
    try:
        buckets = {
            agent_id: [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT hour FROM network_hourly WHERE agent_id = ?", (agent_id,)
                )
            ]
            for agent_id in (future.agent_id, past.agent_id)
        }
    finally:
        conn.close()
    for agent_id in (future.agent_id, past.agent_id):
        received = [r[2] for r in rows[agent_id]]
        assert all(min(received) - BUCKET - 120 <= b <= max(received) for b in buckets[agent_id])
    assert m.value("hatang_network_up", site=unit, network="wan") == 1
    province.observations["clock_skew"] = {
        "future_reports": len(rows[future.agent_id]),
        "hatang_reports_clock_skew_total_delta": skewed,
        "site_clock_skew_agents_while_running": skew_agents,
        "past_reports": len(rows[past.agent_id]),
        "site_window_up_ratios": {
            n: m.value("hatang_site_network_window_up_ratio", site=unit, network=n)
            for n in ("lan", "wan", "dedicated", "internet")
        },
        "site_completeness_after": m.value("hatang_site_report_completeness_ratio", site=unit),
    }
    check_books(province)
    # The skewed agents are gone for good: their books are checked, drop them from the bed.
    del province.agents[future.agent_id], province.agents[past.agent_id]

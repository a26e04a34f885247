"""A year (2025) of back-dated history for the evidence tests, written through the store's
real ingest path: site probes every 6 h with a 3-day internet outage in March and a
19-day silence in August, a PC whose antivirus is off for 45 days, a unit that never
reports."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

from agent.report import (
    AntivirusProduct,
    AntivirusStatus,
    FirewallStatus,
    HostInventory,
    Interface,
    Networks,
    NetworkStatus,
    PatchStatus,
    Report,
    encode,
    new_report_id,
)
from collector.store import Store

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
SITE_A = "demo/xa-an-binh"  # outage in March, a PC unprotected 45 days
SITE_B = "demo/xa-binh-minh"  # silent 1-19 August
SITE_C = "demo/phuong-hoa-binh"  # never reports
SIX_HOURS = 6 * 3600.0
OUTAGE = (dt.datetime(2025, 3, 10, tzinfo=TZ), dt.datetime(2025, 3, 13, tzinfo=TZ))
SILENCE = (dt.datetime(2025, 8, 1, tzinfo=TZ), dt.datetime(2025, 8, 20, tzinfo=TZ))
UNPROTECTED = (dt.datetime(2025, 5, 1, tzinfo=TZ), dt.datetime(2025, 6, 15, tzinfo=TZ))
_seq = itertools.count(1)


def status(up: bool) -> NetworkStatus:
    return NetworkStatus(configured=True, up=up, rule="any")


def probe_report(site: str, agent_id: str, at: dt.datetime, internet_up: bool) -> Report:
    return Report(
        id=new_report_id(),
        agent_id=agent_id,
        site=site,
        role="site-probe",
        seq=next(_seq),
        observed_at=at.astimezone(dt.UTC),
        interval_seconds=SIX_HOURS,
        agent_version="test",
        networks=Networks(lan=status(True), internet=status(internet_up)),
    )


def pc_report(site: str, at: dt.datetime, av_state: str, firewall: bool) -> Report:
    return Report(
        id=new_report_id(),
        agent_id="pc-a1",
        site=site,
        role="host",
        seq=next(_seq),
        observed_at=at.astimezone(dt.UTC),
        interval_seconds=86400.0,
        agent_version="test",
        networks=Networks(lan=status(True), internet=status(True)),
        host=HostInventory(
            hostname="may-ke-toan",
            os="Windows",
            os_release="10",
            interfaces=[Interface(name="eth0", mac="02:00:00:00:0a:01")],
        ),
        antivirus=AntivirusStatus(
            state=av_state,  # type: ignore[arg-type]
            products=[
                AntivirusProduct(
                    name="Microsoft Defender Antivirus",
                    source="defender",
                    state=av_state,  # type: ignore[arg-type]
                    signature_age_seconds=2 * 86400.0,
                )
            ],
        ),
        firewall=FirewallStatus(enabled=firewall, source="netsh"),
        # updates installed three days before each observation, one security update waiting
        patches=PatchStatus(
            source="windows-update",
            last_installed_at=(at - dt.timedelta(days=3)).astimezone(dt.UTC),
            pending_security_updates=1,
            reboot_pending=False,
        ),
    )


def history() -> list[Report]:
    """Every report of the year, in observation order."""
    out: list[Report] = []
    at = dt.datetime(2025, 1, 1, tzinfo=TZ)
    end = dt.datetime(2026, 1, 1, tzinfo=TZ)
    while at < end:
        out.append(probe_report(SITE_A, "probe-a", at, not OUTAGE[0] <= at < OUTAGE[1]))
        if not SILENCE[0] <= at < SILENCE[1]:
            out.append(probe_report(SITE_B, "probe-b", at, True))
        if at.hour == 6:  # the PC reports once a day, at 09:00
            pc_at = at + dt.timedelta(hours=3)
            state = "disabled" if UNPROTECTED[0] <= pc_at < UNPROTECTED[1] else "protected"
            out.append(pc_report(SITE_A, pc_at, state, firewall=pc_at.month != 12))
        at += dt.timedelta(seconds=SIX_HOURS)
    return out


async def write_history(store: Store, batch: int = 500) -> int:
    """Ingest the year in batches per site, as agents' spools would send it."""
    reports = history()
    count = 0
    for site in (SITE_A, SITE_B):
        mine = [r for r in reports if r.site == site]
        for i in range(0, len(mine), batch):
            chunk = mine[i : i + batch]
            result = await store.ingest(site, [(r, encode(r)) for r in chunk])
            count += result.accepted
    return count

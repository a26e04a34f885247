"""``hatang-collector``: ``serve``, ``token create|list|revoke``, ``store verify``,
``declare template|import|list``, ``evidence export|verify|public-key``, ``report``,
``backfill``, ``enroll-code create|list|revoke``, ``agents list|revoke``, ``--version``.

Exit codes: 0 success, 1 a runtime failure (store cannot open, unknown token id, a
corrupt store for ``store verify``), 2 a
usage or configuration error — the message names the file and key path (or the unknown
site), 141 when standard output was closed before everything was written (``| head``;
quietly, as a program stopped by SIGPIPE). ``token create`` prints the token alone on
the last line so scripts can take it with ``tail -n 1``; it is shown once and stored only
as a hash. ``enroll-code create`` prints the code (or, for many sites, the sheet's CSV
path) alone on the last line. ``serve`` re-reads the central agent configuration on SIGHUP.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from agent import __version__
from agent.log import configure, event
from collector.compliance import ComplianceError
from collector.config import CollectorConfig, ConfigError, load_config
from collector.evidence.bundle import EvidenceError
from collector.org import Org, OrgError, Unit, load_org
from collector.period import PeriodError
from collector.store import Store, StoreError
from collector.targets import TargetsError

log = logging.getLogger("collector")
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a program stopped by SIGPIPE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hatang-collector", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hatang-collector {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the collector service")
    serve.add_argument("--config", required=True, metavar="FILE")

    token = commands.add_parser("token", help="manage agent tokens")
    tokens = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    create = tokens.add_parser("create", help="create a token for one site (printed once)")
    create.add_argument("--config", required=True, metavar="FILE")
    create.add_argument("--site", required=True, metavar="ID", help="unit id from the org file")
    create.add_argument("--note", metavar="TEXT", help="who or what the token is for")
    listing = tokens.add_parser("list", help="list tokens (never the secrets)")
    listing.add_argument("--config", required=True, metavar="FILE")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = tokens.add_parser("revoke", help="revoke a token (effective at once)")
    revoke.add_argument("--config", required=True, metavar="FILE")
    revoke.add_argument("token_id", metavar="ID", help="token id as shown by `token list`")

    _enroll_parsers(commands)

    store = commands.add_parser("store", help="check the store")
    stores = store.add_subparsers(dest="store_command", required=True, parser_class=_Parser)
    verify = stores.add_parser(
        "verify", help="integrity check and content digest (read-only; safe while serving)"
    )
    verify.add_argument("--config", required=True, metavar="FILE")
    verify.add_argument("--json", action="store_true", help="one JSON object")

    declare = commands.add_parser("declare", help="facts units declare (officials, security)")
    declares = declare.add_subparsers(dest="declare_command", required=True, parser_class=_Parser)
    template = declares.add_parser("template", help="write the XLSX form units fill in")
    template.add_argument("--config", required=True, metavar="FILE")
    template.add_argument("--period", required=True, metavar="P", help="2026, 2026-H1, 2026-Q3")
    template.add_argument("--unit", metavar="ID", help="this unit and every unit under it")
    template.add_argument("--layout", choices=("per-unit", "per-row"), default="per-unit")
    template.add_argument("--out", required=True, metavar="FILE", help="the .xlsx to write")
    imports = declares.add_parser("import", help="read a filled form (all or nothing)")
    imports.add_argument("--config", required=True, metavar="FILE")
    imports.add_argument("form", metavar="FORM.xlsx")
    imports.add_argument("--by", metavar="NAME", help="who declares (default: the form's column)")
    imports.add_argument("--attach", metavar="DIR", help="folder holding the attached files")
    listing = declares.add_parser("list", help="declarations in force")
    listing.add_argument("--config", required=True, metavar="FILE")
    listing.add_argument("--period", metavar="P", help="declarations overlapping this period")
    listing.add_argument("--unit", metavar="ID", help="this unit and every unit under it")
    listing.add_argument("--history", action="store_true", help="superseded revisions too")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    backfill = commands.add_parser(
        "backfill", help="put the stored history of a range into Prometheus (docs/late-data.md)"
    )
    backfill.add_argument("--config", required=True, metavar="FILE")
    backfill.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="TIME",
        help="ISO date or time; without a zone, the reporting time zone",
    )
    backfill.add_argument(
        "--to",
        dest="end",
        required=True,
        metavar="TIME",
        help="end (exclusive): where the new Prometheus' own scrapes begin",
    )
    backfill.add_argument(
        "--openmetrics",
        metavar="FILE",
        help="write samples older than remote_write.max_sample_age here, for "
        "`promtool tsdb create-blocks-from openmetrics FILE DATA_DIR`",
    )
    evidence = commands.add_parser("evidence", help="signed evidence bundles for auditors")
    evidences = evidence.add_subparsers(
        dest="evidence_command", required=True, parser_class=_Parser
    )
    export = evidences.add_parser("export", help="write one signed bundle (.zip) for a period")
    export.add_argument("--config", required=True, metavar="FILE")
    export.add_argument("--period", required=True, metavar="P", help="2026, 2026-H1, 2026-Q3...")
    export.add_argument("--unit", metavar="ID", help="a unit and everything under it")
    export.add_argument("--out", required=True, metavar="DIR")
    export.add_argument("--by", metavar="NAME", help="who exports (default: the OS user)")
    check = evidences.add_parser("verify", help="check a bundle's members and signature")
    check.add_argument("bundle", metavar="BUNDLE")
    check.add_argument("--key", metavar="PUBKEY", help="public key file (PEM or base64)")
    public = evidences.add_parser("public-key", help="print the bundles' public key")
    public.add_argument("--config", required=True, metavar="FILE")

    report = commands.add_parser("report", help="attainment report for a period (xlsx or pdf)")
    report.add_argument("--config", required=True, metavar="FILE")
    report.add_argument("--period", required=True, metavar="P", help="2026, 2026-H1, 2026-Q3...")
    report.add_argument("--unit", metavar="ID", help="a unit and everything under it")
    report.add_argument("--format", choices=("xlsx", "pdf"), default="xlsx")
    report.add_argument("--out", required=True, metavar="DIR")
    report.add_argument("--by", metavar="NAME", help="who reports (default: the OS user)")
    return parser


def _enroll_parsers(commands: Any) -> None:
    """``enroll-code create|list|revoke`` and ``agents list|revoke`` (collector/enroll.py)."""
    code = commands.add_parser("enroll-code", help="enrollment codes for new agents")
    codes = code.add_subparsers(dest="code_command", required=True, parser_class=_Parser)
    create = codes.add_parser(
        "create",
        help="create codes: one site (code on the last line) or a sheet for many",
        description="Create enrollment codes. With --site the code is printed alone on the "
        "last line; with --all-sites or --level a CSV and an XLSX sheet (site, Vietnamese "
        "name, code, expiry) are written to --out and the CSV path is the last line.",
    )
    create.add_argument("--config", required=True, metavar="FILE")
    which = create.add_mutually_exclusive_group(required=True)
    which.add_argument("--site", metavar="ID", help="unit id from the org file")
    which.add_argument("--all-sites", action="store_true", help="every unit of the org file")
    which.add_argument("--level", choices=("province", "agency", "district", "commune"))
    create.add_argument(
        "--uses", type=int, default=20, metavar="N", help="computers per code (default 20)"
    )
    create.add_argument(
        "--expires", default="14d", metavar="DURATION", help="e.g. 14d, 48h (default 14d)"
    )
    create.add_argument("--note", metavar="TEXT", help="what the codes are for")
    create.add_argument("--out", default=".", metavar="DIR", help="where sheets go (default .)")
    listing = codes.add_parser("list", help="list codes (never the codes themselves)")
    listing.add_argument("--config", required=True, metavar="FILE")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = codes.add_parser("revoke", help="revoke a code (its remaining uses are void)")
    revoke.add_argument("--config", required=True, metavar="FILE")
    revoke.add_argument("code_id", metavar="CODE_ID", help="the code's first group, or the code")

    agents = commands.add_parser("agents", help="enrolled agents")
    agent_cmds = agents.add_subparsers(dest="agents_command", required=True, parser_class=_Parser)
    alist = agent_cmds.add_parser("list", help="enrolled agents, last report, config in use")
    alist.add_argument("--config", required=True, metavar="FILE")
    alist.add_argument("--site", metavar="ID", help="only this site")
    alist.add_argument("--json", action="store_true", help="one JSON object per line")
    arevoke = agent_cmds.add_parser("revoke", help="revoke one agent (effective at once)")
    arevoke.add_argument("--config", required=True, metavar="FILE")
    arevoke.add_argument("agent_id", metavar="AGENT_ID")


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"hatang-collector: {message}\n")
    return code


def _store(config: CollectorConfig) -> Store:
    from collector.app import make_store

    return make_store(config, start_check=False)


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _token_create(config: CollectorConfig, org: Org, site: str, note: str | None) -> int:
    if site not in org:
        return _fail(f"unknown site {site!r}: not a unit in {config.org}")
    store = _store(config)
    await store.open()
    try:
        token_id, token = await store.create_token(site, note)
    finally:
        await store.close()
    sys.stdout.write(f"token id {token_id} for site {site} (shown once; store it safely):\n")
    sys.stdout.write(f"{token}\n")
    return 0


async def _token_list(config: CollectorConfig, as_json: bool) -> int:
    store = _store(config)
    await store.open()
    try:
        records = await store.list_tokens()
    finally:
        await store.close()
    if as_json:
        for r in records:
            row = {
                "id": r.token_id,
                "site": r.site,
                "created": _when(r.created_at),
                "revoked": None if r.revoked_at is None else _when(r.revoked_at),
                "last_used": None if r.last_used_at is None else _when(r.last_used_at),
                "note": r.note,
            }
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return 0
    header = ("ID", "SITE", "CREATED", "REVOKED", "LAST USED", "NOTE")
    table = [
        (
            r.token_id,
            r.site,
            *map(_when, (r.created_at, r.revoked_at, r.last_used_at)),
            r.note or "",
        )
        for r in records
    ]
    _print_table(header, table)
    return 0


async def _token_revoke(config: CollectorConfig, token_id: str) -> int:
    store = _store(config)
    await store.open()
    try:
        found = await store.revoke_token(token_id)
    finally:
        await store.close()
    if not found:
        return _fail(f"no token with id {token_id!r} (see `hatang-collector token list`)", 1)
    sys.stdout.write(f"token {token_id} revoked\n")
    return 0


def _store_verify(config: CollectorConfig, as_json: bool) -> int:
    """Print the integrity check and digest; exit 0 when sound, 1 when not."""
    from collector.config import sqlite_path
    from collector.store import POSTGRES_SCHEMES
    from collector.store.sqlite import verify_file

    if config.store.url.startswith(POSTGRES_SCHEMES):
        from collector.store.postgres import verify_database

        check: Any = asyncio.run(verify_database(config.store.url))
        return _print_check(check.where, _with_chain(config, check), as_json)
    path = sqlite_path(config.store.url)
    if not os.path.isfile(path):
        return _fail(f"store: {path}: no such file (see store.url in the config)", 1)
    return _print_check(str(path), _with_chain(config, verify_file(path)), as_json)


def _with_chain(config: CollectorConfig, check: Any) -> Any:
    """The check with the hash chain's findings added (``collector.store.chain``): which
    report was altered, inserted or deleted. Only a store that opened sound is walked."""
    import dataclasses

    from collector.config import sqlite_path
    from collector.store import POSTGRES_SCHEMES

    if not check.ok:
        return check
    if config.store.url.startswith(POSTGRES_SCHEMES):
        from collector.store.postgres import verify_chain_database

        problems = asyncio.run(verify_chain_database(config.store.url))
    else:
        from collector.store.sqlite import verify_chain_file

        problems = verify_chain_file(sqlite_path(config.store.url))
    return dataclasses.replace(check, problems=[*check.problems, *problems]) if problems else check


def _print_check(where: str, check: Any, as_json: bool) -> int:
    """Print a store check (SQLite file or PostgreSQL database); 0 when sound, 1 when not."""
    if as_json:
        row = {
            "path": where,
            "ok": check.ok,
            "problems": check.problems,
            "schema_version": check.schema_version,
            "reports": check.reports,
            "digest": check.digest,
            "altered_reports": check.altered,
        }
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif check.ok:
        sys.stdout.write(f"store {where}: ok\n")
        sys.stdout.write(
            f"schema version {check.schema_version}, {check.reports} reports"
            " (every body matches its content hash)\n"
        )
        sys.stdout.write(f"digest {check.digest}\n")
    else:
        sys.stdout.write(f"store {where}: CORRUPT\n")
        for problem in check.problems:
            sys.stdout.write(f"  {problem}\n")
        sys.stdout.write(
            "restore the store from a backup; the agents resend what their spools still hold\n"
        )
    return 0 if check.ok else 1


class _UnknownUnit(Exception):
    pass


def _units(config: CollectorConfig, org: Org, unit: str | None) -> list[Unit]:
    """``--unit``: the unit and everything under it; without it, the whole province."""
    if unit is None:
        return list(org.units)
    found = org.subtree(unit)
    if not found:
        raise _UnknownUnit(f"--unit: unknown unit {unit!r}: not a unit in {config.org}")
    return found


def _declare_template(config: CollectorConfig, org: Org, args: argparse.Namespace) -> int:
    from collector.declaration_form import write_template

    period = config.reporting.period(args.period)
    units = _units(config, org, args.unit)
    out = Path(args.out)
    try:
        write_template(out, org, units, period, args.layout)
    except OSError as exc:
        return _fail(f"--out: cannot write {out}: {exc.strerror or exc}", 1)
    sys.stdout.write(f"form for {len(units)} units, period {period.name} ({args.layout}):\n")
    sys.stdout.write(f"{out}\n")
    return 0


def _user() -> str:
    """Who runs the import, for declarations whose form names nobody."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no LOGNAME/USER
        return "unknown"


async def _declare_import(config: CollectorConfig, org: Org, args: argparse.Namespace) -> int:
    from collector.declaration_form import FormError, read_form

    attach = Path(args.attach) if args.attach else None
    if attach is not None and not attach.is_dir():
        return _fail(f"--attach: {attach}: not a folder")
    try:
        contents = read_form(
            Path(args.form),
            org,
            config.reporting.period,
            attach_dir=attach,
            declared_by=args.by or _user(),
        )
    except FormError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"hatang-collector: {problem}\n")
        sys.stderr.write("hatang-collector: nothing imported; fix the form and import it again\n")
        return 2
    store = _store(config)
    await store.open()
    try:
        stored = await store.declare(contents.declarations, contents.files)
    finally:
        await store.close()
    unchanged = len(contents.declarations) - stored
    sys.stdout.write(
        f"period {contents.period.name}: {len(contents.units)} units, "
        f"{stored} declarations stored, {unchanged} unchanged\n"
    )
    sys.stdout.write(f"{stored}\n")
    return 0


async def _declare_list(config: CollectorConfig, org: Org, args: argparse.Namespace) -> int:
    from collector.declarations import declarations_for
    from collector.period import Period

    ids = None if args.unit is None else [u.id for u in _units(config, org, args.unit)]
    if args.period is not None:
        period = config.reporting.period(args.period)
    else:
        forever = dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
        period = Period("all", *forever, "mọi kỳ", "every period")
    store = _store(config)
    await store.open()
    try:
        rows = await declarations_for(store, org, ids, period, history=args.history)
    finally:
        await store.close()
    if args.json:
        for r in rows:
            item = {
                "unit": r.unit,
                "unit_name": r.unit_name,
                "period": r.period,
                "key": r.key,
                "value": r.value,
                "revision": r.revision,
                "declared_by": r.declared_by,
                "declared_at": _when(r.declared_at),
                "attachment_name": r.attachment_name,
                "attachment_sha256": r.attachment_sha256,
                "source": r.source,
            }
            sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")
        return 0
    header = ("UNIT", "PERIOD", "KEY", "VALUE", "REV", "BY", "AT", "FILE")
    table = [
        (
            r.unit,
            r.period,
            r.key,
            r.display,
            str(r.revision),
            r.declared_by,
            _when(r.declared_at),
            r.attachment_name or "",
        )
        for r in rows
    ]
    _print_table(header, table)
    return 0


def _print_table(header: tuple[str, ...], table: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(x) for x in col) for col in zip(header, *table, strict=True)]
    for line in (header, *table):
        cells = (x.ljust(w) for x, w in zip(line, widths, strict=True))
        sys.stdout.write("  ".join(cells).rstrip() + "\n")


class _UsageError(Exception):
    """A bad command line: exit 2 with the message."""


def _backfill_time(config: CollectorConfig, option: str, text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _UsageError(
            f"{option}: {text!r} is not an ISO date or time (e.g. 2026-05-01 or "
            "2026-05-01T08:00:00+07:00)"
        ) from None
    if value.tzinfo is None:
        from zoneinfo import ZoneInfo

        value = value.replace(tzinfo=ZoneInfo(config.reporting.timezone))
    return value


RETRIES_BEFORE_GIVING_UP = 5  # failed pushes in a row before backfill leaves them queued


async def _backfill(
    config: CollectorConfig, start_text: str, end_text: str, out: str | None
) -> int:
    """Queue (and push) the range's samples; write the older part for promtool."""
    from pathlib import Path

    from aiohttp import ClientSession, ClientTimeout

    from collector.app import late_rule
    from collector.backfill import plan, write_openmetrics
    from collector.late import LateRule, to_ms
    from collector.remote_write import Sender

    start = _backfill_time(config, "--from", start_text)
    end = _backfill_time(config, "--to", end_text)
    if start >= end:
        raise _UsageError("--from: must be before --to")
    remote = config.remote_write
    now = dt.datetime.now(dt.UTC)
    cutoff = (
        end if remote is None else max(start, now - dt.timedelta(seconds=remote.max_sample_age))
    )
    rule = late_rule(config) or LateRule(config.site_up_after_intervals, 0.0)
    store = _store(config)
    await store.open()
    try:
        probes = {a.site for a in await store.agent_states() if a.role == "site-probe"}
        result = await plan(
            store.reports(None, start, end),
            rule,
            probes,
            to_ms(cutoff.timestamp()),
            to_ms(end.timestamp()),
        )
        if result.old and out is None:
            raise _UsageError(
                f"--openmetrics: {result.old_samples} samples are older than "
                "remote_write.max_sample_age (Prometheus refuses them by remote write); "
                "name a file to write them to for promtool"
            )
        if result.old and out is not None:
            write_openmetrics(Path(out), result.old)
            sys.stdout.write(
                f"wrote {result.old_samples} samples to {out}; import them with:\n"
                f"  promtool tsdb create-blocks-from openmetrics {out} DATA_DIR\n"
            )
        if result.queued and remote is not None:
            queued = await store.rw_enqueue(result.queued)  # type: ignore[attr-defined]
            sys.stdout.write(f"queued {queued} samples for remote write\n")
            timeout = ClientTimeout(total=remote.timeout)
            async with ClientSession(timeout=timeout) as session:
                sender = Sender(store, remote, session)  # type: ignore[arg-type]
                failures = 0
                while failures < RETRIES_BEFORE_GIVING_UP:
                    before = sum(sender.stats.retries.values())
                    if not await sender.step():
                        break
                    failures = failures + 1 if sum(sender.stats.retries.values()) > before else 0
                await sender.refresh_stats()
                if failures >= RETRIES_BEFORE_GIVING_UP:
                    return _fail(
                        f"remote_write: {remote.url} does not accept the samples now; "
                        f"{sender.stats.queue.pending} stay queued and the collector's sender "
                        "pushes them when it answers",
                        1,
                    )
            sys.stdout.write("remote-write queue drained\n")
        sys.stdout.write(f"{result.old_samples + len(result.queued)}\n")
    finally:
        await store.close()
    return 0


async def _enroll_command(config: CollectorConfig, args: argparse.Namespace) -> int:
    from collector import sheets

    if args.command == "enroll-code" and args.code_command == "create":
        return await sheets.create_codes(config, load_org(config.org), args)
    store = _store(config)
    await store.open()
    try:
        if args.command == "enroll-code" and args.code_command == "list":
            codes = await store.list_enroll_codes()
            return sheets.print_codes(codes, args.json)
        if args.command == "enroll-code":
            from collector.enroll import CodeFormatError, normalize_code

            code_id = args.code_id.strip().upper()
            if len(code_id) > 4:
                try:
                    code_id = normalize_code(code_id)[:4]
                except CodeFormatError as exc:
                    return _fail(f"CODE_ID: {exc}")
            if not await store.revoke_enroll_code(code_id):
                return _fail(f"no enrollment code with id {code_id!r} (see `enroll-code list`)", 1)
            sys.stdout.write(f"enrollment code {code_id} revoked / đã thu hồi mã {code_id}\n")
            return 0
        if args.agents_command == "list":
            if args.site is not None and args.site not in load_org(config.org):
                return _fail(f"--site: unknown site {args.site!r}: not a unit in {config.org}")
            agents = [a for a in await store.enrolled_agents() if args.site in (None, a.site)]
            return sheets.print_agents(agents, args.json)
        if not await store.revoke_agent(args.agent_id):
            return _fail(f"no enrolled agent {args.agent_id!r} (see `agents list`)", 1)
        sys.stdout.write(
            f"agent {args.agent_id} revoked: its next request is refused / "
            f"đã thu hồi tác tử {args.agent_id}\n"
        )
        return 0
    finally:
        await store.close()


async def _serve(config: CollectorConfig) -> int:
    from aiohttp import web

    from collector.app import (
        create_app,
        loop_exception_handler,
        raise_fd_limit,
        server_kwargs,
        tune_for_serving,
    )
    from collector.central import CENTRAL

    limits = raise_fd_limit()
    if limits is not None:
        event(log, logging.INFO, "collector.fd_limit", soft=limits[0], hard=limits[1])
    asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
    app = create_app(config)
    tune_for_serving(app)
    ssl_context = None
    if config.listen.cert_file and config.listen.key_file:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(config.listen.cert_file, config.listen.key_file)
        except (OSError, ssl.SSLError) as exc:
            return _fail(f"listen.cert_file/key_file: cannot load: {exc}")
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=10, **server_kwargs(config)
    )
    await runner.setup()  # opens the store (cleanup_ctx)
    try:
        site = web.TCPSite(
            runner, config.listen.host, config.listen.port, ssl_context=ssl_context, backlog=1024
        )
        try:
            await site.start()
        except OSError as exc:
            return _fail(
                f"listen: cannot listen on {config.listen.host}:{config.listen.port}: "
                f"{exc.strerror or exc}",
                1,
            )
        scheme = "https" if ssl_context else "http"
        for address in runner.addresses:
            host, port = address[0], address[1]
            event(log, logging.INFO, "collector.listening", url=f"{scheme}://{host}:{port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # SIGHUP re-reads the central agent configuration; a broken one is logged (file and
        # key) and the previous one keeps being served.
        reloads: set[asyncio.Future[bool]] = set()

        def reload() -> None:
            # In a thread: a province's layers take some 0.4 s to merge and validate, which
            # ingests must not wait for; the new config is swapped in whole at the end.
            future = asyncio.ensure_future(asyncio.to_thread(app[CENTRAL].reload))
            reloads.add(future)
            future.add_done_callback(reloads.discard)

        if hasattr(signal, "SIGHUP"):  # not on Windows
            loop.add_signal_handler(signal.SIGHUP, reload)
        await stop.wait()
        event(log, logging.INFO, "collector.stopping")
    finally:
        await runner.cleanup()
    return 0


def _note(text: str) -> None:
    sys.stderr.write(f"hatang-collector: {text}\n")


async def _evidence_export(config: CollectorConfig, args: argparse.Namespace) -> int:
    from collector.evidence.export import export, inputs, progress_printer

    given = inputs(config, args.period, args.unit)
    store = _store(config)
    await store.open()
    try:
        path = await export(
            config,
            store,
            given,
            Path(args.out),
            args.by,
            note=_note,
            progress=progress_printer(sys.stderr.isatty()),
        )
    finally:
        await store.close()
    sys.stdout.write(f"{path}\n")
    return 0


def _evidence_verify(args: argparse.Namespace) -> int:
    """Print every problem and the signature's verdict; OK alone when the bundle holds."""
    from collector.evidence.bundle import EvidenceError, read_public_key, verify

    try:
        key = None if args.key is None else read_public_key(Path(args.key))
        verdict = verify(Path(args.bundle), key)
    except EvidenceError as exc:
        return _fail(str(exc))
    if verdict.ok:
        sys.stdout.write(f"{verdict.signature}\nOK\n")
        return 0
    for problem in verdict.problems:
        sys.stdout.write(f"{problem}\n")
    sys.stdout.write(f"{verdict.signature}\nFAILED\n")
    return 1


def _evidence_public_key(config: CollectorConfig) -> int:
    from collector.config import DEFAULT_SIGNING_KEY
    from collector.evidence.bundle import load_or_create_key, public_key_info

    path = Path(config.evidence.signing_key or DEFAULT_SIGNING_KEY)
    key, created = load_or_create_key(path)
    if created:
        sys.stderr.write(f"hatang-collector: created the evidence signing key {path}\n")
    info = public_key_info(key.public_key())
    sys.stdout.write(info["public_key_pem"])
    sys.stdout.write(f"fingerprint (sha256 of the raw key): {info['fingerprint_sha256']}\n")
    sys.stdout.write(f"{info['public_key_base64']}\n")
    return 0


async def _report(config: CollectorConfig, args: argparse.Namespace) -> int:
    from collector.evidence.export import inputs, progress_printer
    from collector.report import write_report

    given = inputs(config, args.period, args.unit)
    store = _store(config)
    await store.open()
    try:
        path = await write_report(
            config,
            store,
            given,
            Path(args.out),
            args.format,
            args.by,
            progress=progress_printer(sys.stderr.isatty()),
        )
    finally:
        await store.close()
    sys.stdout.write(f"{path}\n")
    return 0


def _evidence(config: CollectorConfig, args: argparse.Namespace) -> int:
    if args.command == "report":
        return asyncio.run(_report(config, args))
    if args.evidence_command == "public-key":
        return _evidence_public_key(config)
    return asyncio.run(_evidence_export(config, args))


def _missing_store_directory(config: CollectorConfig) -> str | None:
    """The directory a ``sqlite:`` store.url names when it does not exist (a config
    error: the collector never creates directory trees on its own)."""
    from collector.config import sqlite_path

    if not config.store.url.startswith("sqlite:"):
        return None
    parent = os.path.dirname(sqlite_path(config.store.url)) or "."
    return None if os.path.isdir(parent) else parent


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (141 when stdout was closed early)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the guard: a closed pipe fails here, not at exit
    except BrokenPipeError:
        # ``token list | head``: the reader has all it wanted. No traceback; stdout goes
        # to /dev/null so the interpreter's own flush at exit stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "evidence" and args.evidence_command == "verify":
        return _evidence_verify(args)  # an auditor's command: no collector config needed
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    missing = _missing_store_directory(config)
    if missing is not None:
        return _fail(
            f"{args.config}: store.url: directory {missing} does not exist; create it"
            f" (mkdir -p {missing}) or change store.url"
        )
    try:
        configure(config.log)
    except OSError as exc:
        return _fail(f"{args.config}: log.file: cannot open: {exc.strerror or exc}")
    try:
        if args.command == "serve":
            return asyncio.run(_serve(config))
        if args.command == "store":
            return _store_verify(config, args.json)
        if args.command == "declare":
            org = load_org(config.org)
            if args.declare_command == "template":
                return _declare_template(config, org, args)
            if args.declare_command == "import":
                return asyncio.run(_declare_import(config, org, args))
            return asyncio.run(_declare_list(config, org, args))
        if args.command == "backfill":
            return asyncio.run(_backfill(config, args.start, args.end, args.openmetrics))
        if args.command in ("evidence", "report"):
            return _evidence(config, args)
        if args.command in ("enroll-code", "agents"):
            return asyncio.run(_enroll_command(config, args))
        if args.token_command == "create":  # noqa: S105 - a sub-command name
            return asyncio.run(_token_create(config, load_org(config.org), args.site, args.note))
        if args.token_command == "list":  # noqa: S105
            return asyncio.run(_token_list(config, args.json))
        return asyncio.run(_token_revoke(config, args.token_id))
    except (
        OrgError,
        TargetsError,
        PeriodError,
        _UnknownUnit,
        _UsageError,
        ComplianceError,
        EvidenceError,
        ConfigError,
    ) as exc:
        return _fail(str(exc))
    except StoreError as exc:
        return _fail(f"store: {exc}", 1)
    except KeyboardInterrupt:
        return 130

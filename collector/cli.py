"""``hatang-collector``: ``serve``, ``token create|list|revoke``, ``store verify``, ``--version``.

Exit codes: 0 success, 1 a runtime failure (store cannot open, unknown token id, a
corrupt store for ``store verify``), 2 a
usage or configuration error — the message names the file and key path (or the unknown
site). ``token create`` prints the token alone on the last line so scripts can take it
with ``tail -n 1``; it is shown once and stored only as a hash.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from agent import __version__
from agent.log import event, setup
from collector.config import CollectorConfig, ConfigError, load_config
from collector.org import Org, OrgError, load_org
from collector.store import Store, StoreError
from collector.targets import TargetsError

log = logging.getLogger("collector")


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

    store = commands.add_parser("store", help="check the store")
    stores = store.add_subparsers(dest="store_command", required=True, parser_class=_Parser)
    verify = stores.add_parser(
        "verify", help="integrity check and content digest (read-only; safe while serving)"
    )
    verify.add_argument("--config", required=True, metavar="FILE")
    verify.add_argument("--json", action="store_true", help="one JSON object")
    return parser


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"hatang-collector: {message}\n")
    return code


def _store(config: CollectorConfig) -> Store:
    from collector.app import make_store

    return make_store(config)


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
    widths = [max(len(x) for x in col) for col in zip(header, *table, strict=True)]
    for line in (header, *table):
        cells = (x.ljust(w) for x, w in zip(line, widths, strict=True))
        sys.stdout.write("  ".join(cells).rstrip() + "\n")
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
        return _print_check(check.where, check, as_json)
    path = sqlite_path(config.store.url)
    if not os.path.isfile(path):
        return _fail(f"store: {path}: no such file (see store.url in the config)", 1)
    return _print_check(str(path), verify_file(path), as_json)


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
        }
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif check.ok:
        sys.stdout.write(f"store {where}: ok\n")
        sys.stdout.write(f"schema version {check.schema_version}, {check.reports} reports\n")
        sys.stdout.write(f"digest {check.digest}\n")
    else:
        sys.stdout.write(f"store {where}: CORRUPT\n")
        for problem in check.problems:
            sys.stdout.write(f"  {problem}\n")
        sys.stdout.write(
            "restore the store from a backup; the agents resend what their spools still hold\n"
        )
    return 0 if check.ok else 1


async def _serve(config: CollectorConfig) -> int:
    from aiohttp import web

    from collector.app import create_app, server_kwargs

    app = create_app(config)
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
        await stop.wait()
        event(log, logging.INFO, "collector.stopping")
    finally:
        await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        setup(config.log.level, config.log.file)
    except OSError as exc:
        return _fail(f"{args.config}: log.file: cannot open: {exc.strerror or exc}")
    try:
        if args.command == "serve":
            return asyncio.run(_serve(config))
        if args.command == "store":
            return _store_verify(config, args.json)
        if args.token_command == "create":  # noqa: S105 - a sub-command name
            return asyncio.run(_token_create(config, load_org(config.org), args.site, args.note))
        if args.token_command == "list":  # noqa: S105
            return asyncio.run(_token_list(config, args.json))
        return asyncio.run(_token_revoke(config, args.token_id))
    except (OrgError, TargetsError) as exc:
        return _fail(str(exc))
    except StoreError as exc:
        return _fail(f"store: {exc}", 1)
    except KeyboardInterrupt:
        return 130

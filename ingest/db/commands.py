"""``ingest db``: schema migrations and database statistics.

    ingest db upgrade [--to N]         apply pending migrations (+ TimescaleDB policies)
    ingest db downgrade VERSION        revert down to VERSION (0: remove everything)
    ingest db status                   applied / skipped / pending, like showmigrations
    ingest db sql VERSION [--down]     print one migration
    ingest db stats [--json] [--exact] row counts, sizes, freshness, chunks, compression
    ingest db init [--with-sample-data]
    ingest db reset --yes              drop everything the migrations created, re-create

With no database configured these use the embedded cluster (see ``ingest.db.local``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from ingest.db import migrate
from ingest.db.bootstrap import BootstrapResult, bootstrap
from ingest.db.local import database_settings
from ingest.db.pool import connect_with_retry
from ingest.db.sample import load_sample_data
from ingest.db.stats import collect_stats, render_text
from ingest.settings import Settings, redact_dsn


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a migration version number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    sub.required = True
    up = sub.add_parser("upgrade", help="apply pending migrations, then TimescaleDB policies")
    up.add_argument("--to", type=_version, metavar="N", help="stop after migration N")
    down = sub.add_parser("downgrade", help="revert migrations above VERSION (0: everything)")
    down.add_argument("version", type=_version, metavar="VERSION")
    sub.add_parser("status", help="list applied, skipped and pending migrations")
    sql = sub.add_parser("sql", help="print a migration's SQL")
    sql.add_argument("version", type=_version, metavar="VERSION")
    sql.add_argument("--down", action="store_true", help="the down step instead of the up step")
    stats = sub.add_parser("stats", help="row counts, newest rows, sizes, chunks, compression")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument("--exact", action="store_true",
                       help="count every table exactly (slow on big tables)")
    init = sub.add_parser("init", help="create the schema (and optionally load sample data)")
    init.add_argument("--with-sample-data", action="store_true",
                      help="insert a few sample candles and market metrics")
    reset = sub.add_parser("reset", help="drop everything the migrations created and re-create it")
    reset.add_argument("--yes", action="store_true", help="really drop all data")


def _print_bootstrap(result: BootstrapResult) -> None:
    m = result.migrations
    if m.applied:
        print("applied: " + ", ".join(m.applied))
    if m.skipped:
        print("skipped (needs TimescaleDB): " + ", ".join(m.skipped))
    if not m.applied and not m.skipped:
        print("nothing to apply: the schema is up to date")
    changed = [p for p in result.policies if p.action not in ("unchanged", "absent")]
    for p in changed:
        print(f"{p.kind} policy {p.action}: {p.table} {p.interval}".rstrip())


async def _upgrade(pool: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> int:
    _print_bootstrap(await bootstrap(pool, settings, target=args.to))
    return 0


async def _downgrade(pool: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> int:
    reverted = await migrate.downgrade(pool, args.version)
    print("reverted: " + ", ".join(reverted) if reverted else "nothing to revert")
    return 0


_MARKS = {"applied": "[X]", "skipped": "[-]", "pending": "[ ]", "unknown": "[?]"}


async def _status(pool: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> int:
    rows = await migrate.status(pool)
    print(f"migrations in {migrate.schema_dir()} for {redact_dsn(settings.database.url)}")
    width = max((len(f"{r.version:04d}_{r.name}") for r in rows), default=10)
    for r in rows:
        label = f"{r.version:04d}_{r.name}"
        note = {
            "applied": f"applied {r.applied_at:%Y-%m-%d %H:%M:%S%z}" if r.applied_at else "applied",
            "skipped": "skipped: needs TimescaleDB (applied by an upgrade once it is available)",
            "pending": "pending" + (" (needs TimescaleDB)" if r.requires_timescaledb else ""),
            "unknown": "applied, but no such file here (from a newer ingest?)",
        }[r.state]
        mark = "[!]" if r.checksum_changed else _MARKS[r.state]
        if r.checksum_changed:
            note += "; FILE CHANGED since it was applied (checksum mismatch)"
        print(f"{mark} {label:<{width}}  {note}")
    counts = {s: sum(1 for r in rows if r.state == s) for s in ("applied", "skipped", "pending")}
    print(f"{counts['applied']} applied, {counts['skipped']} skipped, {counts['pending']} pending")
    return 0


async def _stats(pool: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> int:
    stats = await collect_stats(pool, exact=args.exact,
                                timeout_s=max(settings.database.command_timeout_s, 300.0))
    if args.json:
        print(json.dumps(stats.to_json(), indent=2, default=str))
    else:
        print(render_text(stats))
    return 0


async def _init(pool: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> int:
    _print_bootstrap(await bootstrap(pool, settings))
    if args.with_sample_data:
        counts = await load_sample_data(pool)
        print("sample data: " + ", ".join(f"{n} {t}" for t, n in counts.items()))
    return 0


async def _reset(pool: asyncpg.Pool, settings: Settings, args: argparse.Namespace) -> int:
    reverted = await migrate.downgrade(pool, 0)
    print("dropped: " + (", ".join(reverted) if reverted else "nothing (no migrations applied)"))
    _print_bootstrap(await bootstrap(pool, settings))
    return 0


Action = Callable[[asyncpg.Pool, Settings, argparse.Namespace], Awaitable[int]]
ACTIONS: dict[str, Action] = {
    "upgrade": _upgrade, "downgrade": _downgrade, "status": _status, "stats": _stats,
    "init": _init, "reset": _reset,
}


async def _close(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout=10)
    except TimeoutError:
        pool.terminate()


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.db_command == "sql":  # needs no database
        text = migrate.sql(args.version, down=args.down)
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    if args.db_command == "reset" and not args.yes:
        print("ingest db reset: this drops every table the migrations created, with all its "
              "data; run again with --yes to do it", file=sys.stderr)
        return 2
    async with database_settings(settings) as resolved:
        pool = await connect_with_retry(resolved.database, min_size=1, max_size=2)
        try:
            return await ACTIONS[args.db_command](pool, resolved, args)
        finally:
            await _close(pool)

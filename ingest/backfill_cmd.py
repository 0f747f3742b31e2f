"""``ingest backfill``: historical candles and trades through ccxt into the database.

    ingest backfill --exchange binance --symbol BTC/USDT --start 2024-01-01 [--end 2024-02-01]
                    [--interval 1m --interval 1h] [--trades] [--no-candles]
    ingest backfill --all-configured --start 2024-01-01 [--trades]

Times are ISO-8601 or dates, UTC; ``--end`` defaults to now. ``--all-configured`` takes every
enabled exchange (or just ``--exchange``) with its configured symbols and candle intervals
unless ``--symbol``/``--interval`` say otherwise. Bad input (unknown exchange, symbol or
interval, an empty or future range) is one line on stderr and exit code 2, before anything
is fetched. A run can be interrupted (Ctrl-C) and started again: it continues from what is
stored. Exit code 1 when a job failed for good (the line names exchange, symbol and range).

The database is the configured one, or the embedded cluster when none is configured (as for
``ingest db``); pending migrations are applied first. Writes go through the same ``Sink``
as the service, with a spool directory of its own (``<writer.spool_dir>/backfill``) so a
backfill can run beside the daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from ingest.backfill_plan import BackfillRequest, check_interval, check_range, exchange_name, parse_time
from ingest.errors import ConfigError
from ingest.exchanges.naming import to_native_symbol
from ingest.logs import get_logger
from ingest.settings import Settings

log = get_logger("ingest.backfill")


def positive_float(text: str) -> float:
    """argparse type: a finite number above zero (one-line usage error otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above zero, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exchange", help="binance, gateio (gate) or huobi (htx)")
    parser.add_argument("--symbol", action="append", default=[],
                        help="unified symbol such as BTC/USDT (repeatable)")
    parser.add_argument("--start", required=True, help="ISO-8601 time or date (UTC)")
    parser.add_argument("--end", help="ISO-8601 time or date (UTC); default: now")
    parser.add_argument("--interval", action="append", default=[],
                        help="candle interval: 1m 5m 15m 30m 1h 4h 1d 7d (repeatable; default 1m)")
    parser.add_argument("--trades", action="store_true", help="also load trades")
    parser.add_argument("--no-candles", action="store_true", help="load no candles")
    parser.add_argument("--all-configured", action="store_true",
                        help="every enabled exchange's configured symbols and intervals")
    parser.add_argument("--concurrency", type=int, default=4, metavar="N",
                        help="jobs running at once (default 4; ccxt's rate limiter still applies)")
    parser.add_argument("--rate-limit-ms", type=positive_float, metavar="MS",
                        help="override ccxt's rateLimit (ms per request-cost unit)")
    parser.add_argument("--progress", choices=["auto", "bar", "log", "none"], default="auto",
                        help="a bar on a terminal, JSON log lines otherwise (default auto)")
    parser.add_argument("--progress-interval-s", type=positive_float, default=10.0, metavar="S",
                        help="seconds between JSON progress lines (default 10)")
    parser.add_argument("--format", choices=["text", "json"], default="text",
                        help="summary format on stdout")


def build_request(args: argparse.Namespace, settings: Settings, now_ms: int) -> BackfillRequest:
    """Check the arguments (ConfigError, exit 2) and say what to fetch."""
    start = parse_time(args.start, "--start")
    end = parse_time(args.end, "--end") if args.end else now_ms
    end = check_range(start, end, now_ms)
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if args.all_configured:
        chosen = [exchange_name(args.exchange)] if args.exchange else \
            list(settings.enabled_exchanges())
        exchanges = {ex: settings.exchanges[ex] for ex in chosen if ex in settings.exchanges}
        targets = {ex: tuple(args.symbol) or es.symbols for ex, es in exchanges.items()}
        intervals = {ex: tuple(args.interval) or es.candle_intervals
                     for ex, es in exchanges.items()}
    else:
        if not args.exchange:
            raise ConfigError("--exchange is required (or use --all-configured)")
        if not args.symbol:
            raise ConfigError("--symbol is required (or use --all-configured)")
        ex = exchange_name(args.exchange)
        targets = {ex: tuple(dict.fromkeys(args.symbol))}
        intervals = {ex: tuple(dict.fromkeys(args.interval)) or ("1m",)}
    if args.no_candles:
        intervals = {ex: () for ex in intervals}
    for ex, symbols in targets.items():
        for symbol in symbols:
            to_native_symbol(ex, symbol)  # ConfigError unless unified form
        for interval in intervals[ex]:
            check_interval(ex, interval)
    if not targets or not (args.trades or any(intervals.values())):
        raise ConfigError("nothing to backfill: no candle intervals and no --trades")
    return BackfillRequest(targets, intervals, args.trades, start, end)


@contextlib.asynccontextmanager
async def wired(settings: Settings) -> AsyncIterator[tuple[Settings, Any, Any]]:
    """(resolved settings, pool, sink): the database resolved and migrated, a started sink;
    on exit the sink drains (or spools) and the pool closes."""
    # Imported here: `ingest backfill --help` must not need the database layer to load.
    from ingest.db.bootstrap import bootstrap
    from ingest.db.local import database_settings
    from ingest.db.pool import connect_with_retry
    from ingest.sink import open_side_sink

    async with database_settings(settings) as resolved:
        pool = await connect_with_retry(resolved.database)
        try:
            await bootstrap(pool, resolved)
            sink = await open_side_sink(pool, resolved.writer, "backfill")
            try:
                yield resolved, pool, sink
            finally:
                await sink.close()
        finally:
            await pool.close()


def print_summary(summary: Any, fmt: str) -> int:
    """Print the summary on stdout and failures on stderr; the exit code."""
    if fmt == "json":
        print(orjson.dumps(summary.as_dict()).decode())
    else:
        print("\n".join(summary.lines()))
    for error in summary.errors:
        print(f"ingest backfill: error: {error}", file=sys.stderr)
    return 1 if summary.errors else 0


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.backfill import Backfiller, open_client
    from ingest.backfill_progress import make_progress

    request = build_request(args, settings, int(time.time() * 1000))
    # The exchanges are asked first: an unknown symbol is bad input (exit 2), and finding
    # out must not need the database.
    clients: dict[str, Any] = {}
    try:
        for exchange, symbols in request.targets.items():
            clients[exchange] = await open_client(settings, exchange,
                                                  rate_limit_ms=args.rate_limit_ms)
            for symbol in symbols:
                clients[exchange].check_symbol(symbol)
    except BaseException:
        for client in clients.values():
            await client.close()
        raise
    progress = make_progress(args.progress, args.progress_interval_s)
    try:
        async with wired(settings) as (resolved, pool, sink), \
                Backfiller(resolved, sink, pool, rate_limit_ms=args.rate_limit_ms,
                           progress=progress, clients=clients) as bf:
            clients = {}  # the backfiller closes them now
            summary = await bf.run(request.jobs(), args.concurrency)
    finally:
        for client in clients.values():
            await client.close()
    log.info("backfill finished", **summary.as_dict())
    return print_summary(summary, args.format)

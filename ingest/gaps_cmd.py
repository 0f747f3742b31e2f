"""``ingest gaps``: list (and with ``--repair`` fill) missing candle windows and trade ids.

    ingest gaps --exchange binance --symbol BTC/USDT --interval 1m --start 2024-01-01
                [--end 2024-01-02] [--repair] [--no-trades] [--format text|json]

Candle windows are checked on the interval's grid (SQL ``generate_series``); trade ids only
where they are contiguous per market (Binance; see ``ingest.gaps`` for why not Gate or
HTX). ``--repair`` fetches exactly the missing windows and ids through the backfill code and
the same writer, then lists what is still missing (an exchange may have no candle for a
window at all). Exit code 0, or 1 when a repair job failed; bad input is exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from ingest.backfill_cmd import positive_float, wired
from ingest.backfill_plan import check_interval, check_range, exchange_name, parse_time
from ingest.errors import ConfigError
from ingest.exchanges.naming import to_compact, to_native_symbol
from ingest.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exchange", required=True, help="binance, gateio (gate) or huobi (htx)")
    parser.add_argument("--symbol", action="append", required=True,
                        help="unified symbol such as BTC/USDT (repeatable)")
    parser.add_argument("--interval", action="append", required=True,
                        help="candle interval: 1m 5m 15m 30m 1h 4h 1d 7d (repeatable)")
    parser.add_argument("--start", required=True, help="ISO-8601 time or date (UTC)")
    parser.add_argument("--end", help="ISO-8601 time or date (UTC); default: now")
    parser.add_argument("--repair", action="store_true", help="fetch what is missing")
    parser.add_argument("--no-trades", action="store_true", help="check candles only")
    parser.add_argument("--rate-limit-ms", type=positive_float, metavar="MS",
                        help="override ccxt's rateLimit (ms per request-cost unit)")
    parser.add_argument("--format", choices=["text", "json"], default="text")


def _check(args: argparse.Namespace, now_ms: int) -> tuple[str, list[str], list[str], int, int]:
    exchange = exchange_name(args.exchange)
    symbols = list(dict.fromkeys(args.symbol))
    for symbol in symbols:
        to_native_symbol(exchange, symbol)
    intervals = [check_interval(exchange, i) for i in dict.fromkeys(args.interval)]
    start = parse_time(args.start, "--start")
    end = parse_time(args.end, "--end") if args.end else now_ms
    return exchange, symbols, intervals, start, check_range(start, end, now_ms)


async def _check_known(pool: Any, settings: Settings, exchange: str, symbol: str) -> None:
    """Without --repair nothing asks the exchange: a symbol that is neither configured nor
    stored is most likely a typo, and "everything is missing" would mislead."""
    es = settings.exchanges.get(exchange)
    if es is not None and symbol in es.symbols:
        return
    compact = to_compact(symbol)
    stored = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM candlesticks WHERE exchange = $1 AND symbol = $2) "
        "OR EXISTS (SELECT 1 FROM trades WHERE exchange = $1 AND symbol = $2)", exchange, compact)
    if not stored:
        raise ConfigError(f"{exchange}: {symbol} is not a configured symbol and nothing of it is "
                          "stored; check the symbol (--repair checks it against the exchange)")


def _emit(reports: list[Any], fmt: str, heading: str) -> None:
    if fmt == "json":
        for report in reports:
            print(orjson.dumps({"stage": heading, **report.as_dict()}).decode())
        return
    if heading:
        print(f"-- {heading}")
    for report in reports:
        print("\n".join(report.lines()))


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.backfill import SETTLE_MS, Backfiller, open_client
    from ingest.gaps import find_gaps

    now = int(time.time() * 1000)
    exchange, symbols, intervals, start, end = _check(args, now)
    end = min(end, now - SETTLE_MS)
    client = None
    if args.repair:
        client = await open_client(settings, exchange, rate_limit_ms=args.rate_limit_ms)
        try:
            for symbol in symbols:
                client.check_symbol(symbol)
        except ConfigError:
            await client.close()
            raise
    clients = {exchange: client} if client is not None else {}
    async with wired(settings) as (resolved, pool, sink), \
            Backfiller(resolved, sink, pool, rate_limit_ms=args.rate_limit_ms, resume=False,
                       clients=clients) as bf:

        async def scan() -> list[Any]:
            return [await find_gaps(pool, exchange, s, intervals, start, end,
                                    trades=not args.no_trades) for s in symbols]

        if not args.repair:  # --repair checked the symbols against the exchange already
            for symbol in symbols:
                await _check_known(pool, resolved, exchange, symbol)
        reports = await scan()
        _emit(reports, args.format, "missing" if args.repair else "")
        if not args.repair:
            return 0
        summary = await bf.run([job for r in reports for job in r.jobs()])
        if args.format == "text":
            print("-- repair")
            print("\n".join(summary.lines()))
        _emit(await scan(), args.format, "still missing after repair")
    for error in summary.errors:
        print(f"ingest gaps: error: {error}", file=sys.stderr)
    return 1 if summary.errors else 0

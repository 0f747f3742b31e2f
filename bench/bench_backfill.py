"""Backfill throughput from the local simulator into PostgreSQL: candles/s and trades/s
stored, and where the time goes (ccxt's rate limiter, the exchange round trip and parsing,
the writer).

    python bench/bench_backfill.py [--days 7] [--trade-minutes 30] [--database-url URL]

Two passes per exchange, each into an empty database:

- ``limited``: ccxt's rate limiter at the exchanges' real limits, which the simulator
  mirrors (Binance 6000 weight/min with klines 2 and historicalTrades 25; Gate 200
  requests/10 s; HTX ccxt's 100 ms). This is what a real backfill can reach.
- ``unthrottled``: the limiter at 0.01 ms, to show the pipeline's own ceiling (ccxt, the
  parsers and the writer) when the exchange is not the bottleneck.

The simulator runs in a process of its own (``ingest simulate``), so its work is the
"exchange" side of the wire and not charged to the client. The database is
``--database-url`` / ``BENCH_DATABASE_URL`` or a throwaway local cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import logs
from ingest.backfill import Backfiller
from ingest.backfill_plan import CandleJob, Job, TradeJob
from ingest.db.bootstrap import bootstrap
from ingest.db.embedded import EmbeddedPostgres
from ingest.db.pool import connect_pool
from ingest.settings import parse_settings
from ingest.sink import Sink

DAY_MS = 86_400_000
START_MS = 1_704_067_200_000  # 2024-01-01
TRADES_PER_MINUTE = 600  # per market: full 1000-trade pages every ~100 s


@asynccontextmanager
async def simulator() -> AsyncIterator[str]:
    """``ingest simulate`` in a child process; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-m", "ingest.cli", "simulate", "--port", str(port), "--seed", "3",
         "--symbols", "BTC/USDT", "--trades-per-minute", str(TRADES_PER_MINUTE),
         "--log-level", "WARNING"], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield url
    finally:
        child.terminate()
        child.wait(10)


@asynccontextmanager
async def admin_dsn(url: str | None) -> AsyncIterator[str]:
    if url:
        yield url
        return
    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-pg-"))
    server = EmbeddedPostgres(data_dir=tmp)
    await asyncio.to_thread(server.start)
    try:
        yield server.dsn("postgres")
    finally:
        await asyncio.to_thread(server.stop, "immediate")
        shutil.rmtree(tmp, ignore_errors=True)


@asynccontextmanager
async def fresh_database(admin: str) -> AsyncIterator[str]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')  # generated name, not input
    await conn.close()
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def one_pass(sim_url: str, admin: str, exchange: str, jobs: list[Job],
                   rate_limit_ms: float | None, tmp: Path) -> dict[str, Any]:
    async with fresh_database(admin) as url:
        settings = parse_settings({
            "database": {"url": url, "sslmode": "disable", "pool_max_size": 4},
            "writer": {"spool_dir": str(tmp / uuid.uuid4().hex)},
            "backfill": {"request_timeout_s": 30.0},
            "exchanges": {"binance": {"rest_url": f"{sim_url}/binance"},
                          "gateio": {"rest_url": f"{sim_url}/gateio/api/v4"},
                          "huobi": {"rest_url": f"{sim_url}/huobi"}},
        }, "bench")
        pool = await connect_pool(settings.database)
        try:
            await bootstrap(pool, settings)
            async with Sink(pool, settings.writer) as sink, Backfiller(
                    settings, sink, pool, rate_limit_ms=rate_limit_ms) as bf:
                await bf.client(exchange)  # market loading is not part of the throughput
                started = time.monotonic()
                summary = await bf.run(jobs, concurrency=4)
                wall_s = time.monotonic() - started
        finally:
            await pool.close()
    assert not summary.errors, summary.errors
    return {"summary": summary, "wall_s": wall_s}


def report(exchange: str, mode: str, what: str, result: dict[str, Any]) -> str:
    summary = result["summary"]
    table = "candlesticks" if what == "candles" else "trades"
    rows = summary.table_stats[table]["rows_written"]
    shares = summary.time_shares()
    return (f"{exchange:<8} {mode:<11} {what:<7} {rows:>8} rows {result['wall_s']:>7.2f} s "
            f"{rows / result['wall_s']:>10,.0f} rows/s  {summary.requests:>4} requests  "
            f"network {shares['network']:>4.0%} (limiter {shares['rate_limiter']:>4.0%}, "
            f"wire+parse {shares['network'] - shares['rate_limiter']:>4.0%})  "
            f"writing {shares['writing']:>4.0%}")


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-spool-"))
    dsn = args.database_url or os.environ.get("BENCH_DATABASE_URL")
    try:
        async with simulator() as sim, admin_dsn(dsn) as admin:
            print(f"candles: 1m over {args.days} days; trades: {args.trade_minutes} min at "
                  f"{TRADES_PER_MINUTE}/min (HTX: its latest 2000 only); concurrency 4")
            for exchange in ("binance", "gateio", "huobi"):
                candle_jobs: list[Job] = [CandleJob(exchange, "BTC/USDT", "1m", START_MS,
                                                    START_MS + args.days * DAY_MS)]
                now = int(time.time() * 1000)
                t0 = now - args.trade_minutes * 60_000 if exchange != "huobi" else now - 3_600_000
                trade_jobs: list[Job] = [TradeJob(exchange, "BTC/USDT", t0, now)]
                for mode, rate in (("limited", None), ("unthrottled", 0.01)):
                    for what, jobs in (("candles", candle_jobs), ("trades", trade_jobs)):
                        result = await one_pass(sim, admin, exchange, jobs, rate, tmp)
                        print(report(exchange, mode, what, result), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7, help="days of 1m candles (default 7)")
    parser.add_argument("--trade-minutes", type=int, default=30,
                        help="minutes of trades up to now (default 30)")
    parser.add_argument("--database-url", help="admin DSN (default: a throwaway cluster)")
    logs.configure(level="ERROR", fmt="console", stream=sys.stderr)  # HTX's unserved warning
    asyncio.run(main(parser.parse_args()))

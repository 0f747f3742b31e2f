"""End to end: simulator → connectors → the real Sink → a real PostgreSQL.

The simulator's clock starts a few seconds before a minute boundary, so each market closes
one 1m candle during the run. Publishing stops by freezing that clock (after one last tick
that publishes every book view, so the views equal the books); the test then waits for the
connectors to have received everything (events, not sleeps), drains the sink, and compares
the database with what the simulator published (/sim/stats) and serves over REST.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingest.exchanges.binance import parse as binance_parse
from ingest.exchanges.connector import Connector
from ingest.exchanges.gateio import parse as gate_parse
from ingest.exchanges.huobi import parse as huobi_parse
from ingest.feeds import build_feeds
from ingest.records import Candle
from ingest.settings import Settings, WriterSettings, parse_settings
from ingest.sim import Simulator, start_simulator
from ingest.sink import Sink
from ingest.transport.http import HttpClient, HttpConfig
from tests.connectors.conftest import fast_options, until

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTC/USDT", "ETH/USDT")
DEPTH = 5


class SimClock:
    """Wall time shifted so the run starts ``lead_s`` before a minute boundary; can freeze."""

    def __init__(self, lead_s: float) -> None:
        now = time.time()
        boundary = math.floor(now / 60) * 60 + 60
        self.offset = boundary - lead_s - now
        if self.offset < 0:
            self.offset += 60
        self.frozen: float | None = None

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.time() + self.offset

    def freeze(self, extra_s: float = 0.0) -> None:
        self.frozen = self() + extra_s


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(database_url)
    try:
        for name in ("0001_market_data.up.sql", "0002_platform.up.sql"):
            await conn.execute((REPO / "schema" / name).read_text())
    finally:
        await conn.close()
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def settings_for(sim: Simulator) -> Settings:
    exchanges = {
        name: {**urls, "symbols": list(SYMBOLS), "candle_intervals": ["1m"],
               "book_depth": DEPTH, "snapshot_interval_s": 0.5, "stale_after_s": 30.0}
        for name, urls in sim.endpoints().items() if name != "metrics"
    }
    return parse_settings({"exchanges": exchanges}, "e2e")


def writer(tmp_path: Path) -> WriterSettings:
    return WriterSettings(max_batch_rows=500, flush_interval_ms=50, memory_limit_mb=16,
                          spool_dir=str(tmp_path / "spool"), spool_max_mb=64,
                          shutdown_budget_s=5.0, db_timeout_s=10.0, retry_max_s=0.2,
                          stats_interval_s=3600)


def published(sim: Simulator, exchange: str) -> dict[str, dict[str, Any]]:
    return {sym: s for sym, s in sim.stats()[exchange].items()}


async def run_feeds(connectors: list[Connector]) -> list[asyncio.Task[None]]:
    return [asyncio.create_task(c.run(), name=c.exchange) for c in connectors]


async def stop_feeds(connectors: list[Connector], tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*(c.close() for c in connectors))
    await asyncio.wait_for(asyncio.gather(*tasks), 15)


def received_everything(sim: Simulator, c: Connector) -> bool:
    stats = published(sim, c.exchange)
    if c.counters["trades"] != sum(s["trades"] for s in stats.values()):
        return False
    assert c.keeper is not None
    return all(
        c.keeper.books[sym].last_id == int(s["book_update_id"])
        for sym, s in stats.items() if s["book_update_id"] is not None
    )


async def rest_candle(http: HttpClient, sim: Simulator, exchange: str, symbol: str,
                      open_ms: int) -> Candle:
    now_ms = int(sim.options.clock() * 1000)
    base = sim.endpoints()[exchange]["rest_url"]
    if exchange == "binance":
        body = await http.get(f"{base}/api/v3/klines", params={
            "symbol": symbol, "interval": "1m", "startTime": open_ms, "endTime": open_ms,
            "limit": 1})
        rows = binance_parse.parse_klines(body, symbol, "1m", now_ms)
    elif exchange == "gateio":
        pair = symbol.replace("USDT", "_USDT")
        body = await http.get(f"{base}/spot/candlesticks", params={
            "currency_pair": pair, "interval": "1m", "from": open_ms // 1000,
            "to": open_ms // 1000})
        rows = gate_parse.parse_candlesticks(body, pair, "1m", now_ms)
    else:
        body = await http.get(f"{base}/market/history/candles", params={
            "symbol": symbol.lower(), "period": "1min", "from": open_ms // 1000,
            "to": open_ms // 1000, "size": 1})
        rows = huobi_parse.parse_history_candles(body, symbol.lower(), "1m", now_ms)
    (row,) = [r for r in rows if int(r.timestamp.timestamp() * 1000) == open_ms]
    return row


def dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def levels(raw: Any) -> list[tuple[Decimal, Decimal]]:
    data = json.loads(raw) if isinstance(raw, str) else raw
    return [(Decimal(p), Decimal(q)) for p, q in data]


async def check_trades(db: asyncpg.Connection, sim: Simulator) -> None:
    for exchange in ("binance", "gateio", "huobi"):
        for sym, s in published(sim, exchange).items():
            row = await db.fetchrow(
                "SELECT count(*) AS n, count(DISTINCT trade_id) AS d, min(trade_id) AS lo, "
                "max(trade_id) AS hi FROM trades WHERE exchange = $1 AND symbol = $2",
                exchange, sym)
            assert s["trades"] > 0, (exchange, sym)
            assert (row["n"], row["d"]) == (s["trades"], s["trades"]), (exchange, sym)
            assert (row["lo"], row["hi"]) == (int(s["first_trade_id"]),
                                              int(s["last_trade_id"])), (exchange, sym)


async def check_candles(db: asyncpg.Connection, sim: Simulator, http: HttpClient) -> None:
    rows = await db.fetch("SELECT * FROM candlesticks ORDER BY exchange, symbol, timestamp")
    markets = {(r["exchange"], r["symbol"]) for r in rows}
    assert len(markets) == 6, markets  # every exchange closed a candle for every symbol
    for r in rows:
        open_ms = int(r["timestamp"].timestamp() * 1000)
        ref = await rest_candle(http, sim, r["exchange"], r["symbol"], open_ms)
        assert ref.closed
        for col in ("open", "high", "low", "close", "volume", "quote_volume"):
            assert dec(r[col]) == dec(getattr(ref, col)), (r["exchange"], r["symbol"], col)
        assert r["trades_count"] == ref.trades_count


async def check_books(db: asyncpg.Connection, sim: Simulator) -> None:
    for exchange in ("binance", "gateio", "huobi"):
        for sym, s in published(sim, exchange).items():
            row = await db.fetchrow(
                "SELECT * FROM order_books WHERE exchange = $1 AND symbol = $2 "
                "ORDER BY timestamp DESC LIMIT 1", exchange, sym)
            assert row is not None, (exchange, sym)
            assert row["last_update_id"] == int(s["book_update_id"]), (exchange, sym)
            ref = sim.book(exchange, sym, DEPTH)
            assert levels(row["bids"]) == levels(ref["bids"]), (exchange, sym)
            assert levels(row["asks"]) == levels(ref["asks"]), (exchange, sym)
            ts = row["timestamp"].timestamp()
            assert ts * 2 == int(ts * 2)  # on the 0.5 s snapshot grid


async def test_sim_to_database_exactly_once(pool: asyncpg.Pool, tmp_path: Path) -> None:
    clock = SimClock(lead_s=6.0)
    sim = await start_simulator("127.0.0.1", 0, seed=11, symbols=SYMBOLS,
                                trades_per_minute=300, clock=clock, tick_s=0.01,
                                kline_interval_s=0.5, book_interval_s=0.1)
    sink = Sink(pool, writer(tmp_path))
    await sink.start()
    http = HttpClient(HttpConfig(timeout_s=5, backoff_base_s=0.05, backoff_cap_s=0.2))
    await http.start()
    connectors = build_feeds(settings_for(sim), sink, http, options=fast_options())
    tasks = await run_feeds(connectors)
    try:
        async with asyncio.timeout(60):
            # One 1m window closes on every exchange for every symbol.
            await until(lambda: all(c.finalizer.stats.finalized + c.finalizer.stats.inferred
                                    >= len(SYMBOLS) for c in connectors), timeout_s=30,
                        what="a closed candle per market")
            clock.freeze(extra_s=0.15)  # one last tick publishes every view, then nothing
            await sim.wait_tick(2)  # that tick has happened: what is published is final
            await until(lambda: all(received_everything(sim, c) for c in connectors),
                        timeout_s=15, what="everything published")
            marks = [c.keeper.stats.snapshots for c in connectors if c.keeper]
            await until(lambda: all(c.keeper.stats.snapshots >= m + len(SYMBOLS)
                                    for c, m in zip(connectors, marks, strict=True)
                                    if c.keeper), what="a snapshot of the final books")
            await stop_feeds(connectors, tasks)
            await sink.flush()
            async with pool.acquire() as db:
                await check_trades(db, sim)
                await check_candles(db, sim, http)
                await check_books(db, sim)
            for c in connectors:
                assert c.stats()["book"]["gaps"] == 0
                assert c.stats()["frames"]["rejected"] == 0
    finally:
        for c in connectors:
            await c.close()
        await sink.close()
        await http.close()
        await sim.stop()


async def test_faults_store_nothing_twice_and_gaps_resync_only_their_symbol(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    sim = await start_simulator("127.0.0.1", 0, seed=5, symbols=SYMBOLS, trades_per_minute=600,
                                tick_s=0.01, kline_interval_s=0.5, book_interval_s=0.1,
                                faults="skip_seq=0.05,dup=0.05,drop=2.5,malformed=0.03")
    sink = Sink(pool, writer(tmp_path))
    await sink.start()
    http = HttpClient(HttpConfig(timeout_s=5, backoff_base_s=0.05, backoff_cap_s=0.2))
    await http.start()
    connectors = build_feeds(settings_for(sim), sink, http, options=fast_options())
    tasks = await run_feeds(connectors)
    try:
        async with asyncio.timeout(60):
            await until(lambda: all(c.counters["reconnects"] >= 1 and c.keeper is not None
                                    and c.keeper.stats.gaps >= 1 for c in connectors),
                        timeout_s=30, what="drops and gaps on every exchange")
            await until(lambda: all(c.keeper is not None and
                                    all(b.synced for b in c.keeper.books.values())
                                    for c in connectors), timeout_s=15, what="books resynced")
            await stop_feeds(connectors, tasks)
            await sink.flush()
            async with pool.acquire() as db:
                dups = await db.fetchval(
                    "SELECT count(*) FROM (SELECT 1 FROM trades GROUP BY exchange, symbol, "
                    "trade_id HAVING count(*) > 1) d")
                assert dups == 0
                for exchange in ("binance", "gateio", "huobi"):
                    for sym, s in published(sim, exchange).items():
                        n, lo, hi = await db.fetchrow(
                            "SELECT count(*), min(trade_id), max(trade_id) FROM trades "
                            "WHERE exchange = $1 AND symbol = $2", exchange, sym)
                        assert 0 < n <= s["trades"]
                        assert lo >= int(s["first_trade_id"]) and hi <= int(s["last_trade_id"])
            for c in connectors:
                book = c.stats()["book"]
                assert sum(c.stats()["trades"].values()) > 0
                for sym, b in book["books"].items():
                    # A resync follows a gap of that symbol or the loss of its socket
                    # (the book is dropped then), plus its first sync.
                    assert b["resyncs"] <= b["gaps"] + b["dropped"] + 1, (c.exchange, sym, b)
            assert sum(c.stats()["trades"]["duplicates"] for c in connectors) > 0
            assert sum(c.stats()["frames"]["rejected"] + c.stats()["frames"]["transport_rejected"]
                       for c in connectors) > 0
    finally:
        for c in connectors:
            await c.close()
        await sink.close()
        await http.close()
        await sim.stop()

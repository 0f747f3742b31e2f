"""The two multi-instance layouts in docs/operations.md: sharding with ``--shard K/N``, and
active/active replicas on the same streams storing each row once."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import asyncpg

from ingest import daemon
from ingest.feeds import build_feeds
from ingest.settings import parse_settings
from ingest.sim import start_simulator
from ingest.sink import Sink
from ingest.transport.http import HttpClient, HttpConfig
from tests.connectors.conftest import FakeSink, fast_options, until
from tests.ops.conftest import writer_settings

SYMBOLS = [f"{b}/USDT" for b in ("BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "TRX",
                                 "DOT", "LTC", "LINK", "AVAX", "ATOM", "NEAR", "UNI", "ETC")]


async def test_shard_option_partitions_the_configured_pairs_exactly() -> None:
    # tests/connectors/test_feeds.py checks shard_of and build_feeds(shard=(k, 3)); this is
    # the operator's path: the --shard text, parsed as `ingest run` parses it, for several N.
    settings = parse_settings({"exchanges": {name: {"symbols": SYMBOLS} for name in
                                             ("binance", "gateio", "huobi")}}, "<t>")
    configured = {(ex, s) for ex in ("binance", "gateio", "huobi") for s in SYMBOLS}
    async with HttpClient() as http:
        for n in (1, 2, 4, 7):
            owned: list[tuple[str, str]] = []
            for k in range(n):
                options = daemon.options_from(argparse.Namespace(shard=f"{k}/{n}"), settings)
                for c in build_feeds(settings, FakeSink(), http, shard=options.shard):
                    owned.extend((c.exchange, s) for s in c.symbols)
            assert len(owned) == len(set(owned)), f"N={n}: a pair owned twice"
            assert set(owned) == configured, f"N={n}: pairs missing"


class Clock:
    """Wall time that can be frozen: the simulator then publishes nothing new."""

    def __init__(self) -> None:
        self.frozen: float | None = None

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.time()


async def test_active_active_replicas_store_each_row_once(pool: asyncpg.Pool,
                                                          tmp_path: Path) -> None:
    clock = Clock()
    sim = await start_simulator("127.0.0.1", 0, seed=9, symbols=("BTC/USDT",),
                                trades_per_minute=1200, clock=clock, tick_s=0.01,
                                kline_interval_s=0.5, book_interval_s=0.1, exchanges=("binance",))
    settings = parse_settings({"exchanges": {
        "binance": {**sim.endpoints()["binance"], "symbols": ["BTC/USDT"],
                    "channels": ["trades", "book"], "book_depth": 5, "snapshot_interval_s": 0.5},
        "gateio": {"enabled": False}, "huobi": {"enabled": False}}}, "<replicas>")
    http = HttpClient(HttpConfig(timeout_s=5, backoff_base_s=0.05, backoff_cap_s=0.2))
    await http.start()
    sinks = [Sink(pool, writer_settings(tmp_path / f"replica{i}")) for i in (0, 1)]
    replicas = []
    for sink in sinks:
        await sink.start()
        replicas.append(build_feeds(settings, sink, http, options=fast_options())[0])
    tasks = [asyncio.create_task(c.run()) for c in replicas]
    try:
        await until(lambda: all(c.counters["book_snapshots"] >= 4 for c in replicas), 20,
                    "both replicas snapshotting")
        clock.frozen = time.time() + 0.1
        await sim.wait_tick(2)  # the engine has published up to the frozen time: final now

        def published() -> int:
            return int(sim.stats()["binance"]["BTCUSDT"]["trades"])

        await until(lambda: all(c.counters["trades"] == published() for c in replicas), 15,
                    "both replicas received every trade")
        for c in replicas:
            await c.close()
        for sink in sinks:
            await sink.flush()
        stats = [s.stats() for s in sinks]
        async with pool.acquire() as db:
            n, distinct = await db.fetchrow(
                "SELECT count(*), count(DISTINCT trade_id) FROM trades")
            books, grid = await db.fetchrow(
                "SELECT count(*), bool_and((extract(epoch FROM timestamp) * 2) % 1 = 0) "
                "FROM order_books")
        assert n == distinct == published()  # every trade once, though both replicas wrote it
        assert sum(s["trades"]["rows_written"] for s in stats) == n
        assert sum(s["trades"]["duplicates_skipped"] for s in stats) == n
        # Both replicas snapshot on the same 0.5-s grid: their rows share keys, one is kept.
        assert grid is True
        assert sum(s["order_books"]["rows_written"] for s in stats) == books
        assert sum(s["order_books"]["duplicates_skipped"] for s in stats) > 0
    finally:
        for c in replicas:
            await c.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sink in sinks:
            await sink.close()
        await http.close()
        await sim.stop()

"""Fixtures for the writer tests: a fresh database with the market-data schema, a pool,
writer settings with a private spool directory, record factories, and a private
PostgreSQL cluster for the tests that crash and restart the server."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from ingest.db.embedded import EmbeddedPostgres
from ingest.records import BookSnapshot, Candle, MarketMetric, Trade
from ingest.settings import WriterSettings

REPO = Path(__file__).resolve().parents[2]
SCHEMA_SQL = (REPO / "schema" / "0001_market_data.up.sql").read_text()
BASE_TS = datetime(2024, 3, 1, tzinfo=UTC)


async def apply_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA_SQL)
    finally:
        await conn.close()


@pytest.fixture
async def schema_db(database_url: str) -> str:
    """A fresh database holding schema/0001 (applied directly; the migrator is separate)."""
    await apply_schema(database_url)
    return database_url


@pytest.fixture
async def pool(schema_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(schema_db, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def writer_settings(tmp_path: Path) -> WriterSettings:
    return WriterSettings(max_batch_rows=500, flush_interval_ms=50, memory_limit_mb=16,
                          spool_dir=str(tmp_path / "spool"), spool_max_mb=64,
                          shutdown_budget_s=5.0, db_timeout_s=5.0, retry_max_s=0.2,
                          stats_interval_s=3600)


def settings_with(base: WriterSettings, **changes: object) -> WriterSettings:
    return replace(base, **changes)  # type: ignore[arg-type]


def trade(i: int, *, price: str = "42000.5", symbol: str = "BTCUSDT") -> Trade:
    return Trade("binance", symbol, i, BASE_TS + timedelta(milliseconds=i), price, "0.00125000",
                 None, bool(i % 2))


def trades(start: int, stop: int) -> list[Trade]:
    return [trade(i) for i in range(start, stop)]


def candle(minute: int, close: str = "101.5", volume: str = "12.5") -> Candle:
    return Candle("binance", "BTCUSDT", "1m", BASE_TS + timedelta(minutes=minute), "100", "102",
                  "99.5", close, volume, "1268.75", 42, True)


def book(second: int) -> BookSnapshot:
    bids = tuple((f"{100 - i}.5", "1.25") for i in range(5))
    asks = tuple((f"{101 + i}.5", "2.5") for i in range(5))
    return BookSnapshot("binance", "BTCUSDT", BASE_TS + timedelta(seconds=second), bids, asks,
                        1000 + second)


def metric(day: int, value: str = "52.5", name: str | None = None) -> MarketMetric:
    meta = {"name": name} if name else {}
    kind = "other" if name else "btc_dominance"
    return MarketMetric(kind, BASE_TS + timedelta(days=day), value, meta)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll a condition the code under test exposes only as numbers (stats)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.005)


async def count(dsn: str, table: str = "trades") -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # table: test constant
    finally:
        await conn.close()


class PrivateCluster:
    """A throwaway PostgreSQL the test may crash and restart (the session one is shared)."""

    def __init__(self, server: EmbeddedPostgres) -> None:
        self.server = server
        self.running = True

    def dsn(self, database: str = "postgres") -> str:
        return self.server.dsn(database)

    async def stop(self, mode: str = "immediate") -> None:
        await asyncio.to_thread(self.server.stop, mode)
        self.running = False

    async def start(self) -> None:
        if not self.running:
            await asyncio.to_thread(self.server.start)
            self.running = True

    async def fresh_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')  # name: test constant
            # EmbeddedPostgres runs with synchronous_commit=off, which may lose commits
            # acknowledged just before a crash; these tests crash it and count rows.
            await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
        finally:
            await conn.close()
        dsn = self.dsn(name)
        await apply_schema(dsn)
        return dsn


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[PrivateCluster]:
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs a local PostgreSQL it can stop and restart")
    tmp = Path(tempfile.mkdtemp(prefix="ingest-sink-pg-"))
    os.chmod(tmp, 0o755)
    server = EmbeddedPostgres(data_dir=tmp)
    server.start()
    try:
        yield PrivateCluster(server)
    finally:
        server.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)



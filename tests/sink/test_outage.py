"""Database outages: a crash mid-stream, an outage longer than memory, a blackholed link.

Each test gets its own database on a private cluster that it may crash (``pg_ctl stop -m
immediate``) and restart; the session cluster is shared and must stay up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ingest.settings import WriterSettings
from ingest.sink import Sink

from .conftest import PrivateCluster, count, settings_with, trades, wait_until
from .proxy import BlackholeProxy


@pytest.fixture
async def crash_db(private_cluster: PrivateCluster, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    dsn = await private_cluster.fresh_database(request.node.name[:40].lower())
    yield dsn
    await private_cluster.start()  # whatever the test did, leave the cluster up


async def distinct_trades(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT count(*), count(DISTINCT trade_id) FROM trades")
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_crash_mid_stream_stores_every_accepted_row_once(
        private_cluster: PrivateCluster, crash_db: str, writer_settings: WriterSettings) -> None:
    settings = settings_with(writer_settings, max_batch_rows=200, flush_interval_ms=20)
    n = 12_000
    pool = await asyncpg.create_pool(crash_db, min_size=1, max_size=4)
    async with Sink(pool, settings) as sink:

        async def stream() -> None:
            rows = trades(0, n)
            for i in range(0, n, 100):
                await sink.put_many(rows[i:i + 100])
                await asyncio.sleep(0.002)  # a steady feed, not a burst

        producer = asyncio.create_task(stream())
        await wait_until(lambda: sink.stats()["trades"]["rows_written"] >= 2000)
        await private_cluster.stop("immediate")  # crash: in-flight COPYs die uncommitted
        await wait_until(lambda: sink.stats()["trades"]["retries"] >= 1)
        await private_cluster.start()
        await producer
        await sink.flush()
        stats = sink.stats()["trades"]
    await pool.close()
    assert await distinct_trades(crash_db) == (n, n)
    assert stats["rows_accepted"] == n
    # A COPY whose commit raced the crash is retried and its rows come back as duplicates.
    assert stats["rows_written"] + stats["duplicates_skipped"] == n
    assert stats["rows_rejected"] == stats["rows_dropped"] == 0


async def test_outage_longer_than_memory_spools_then_drains(
        private_cluster: PrivateCluster, crash_db: str, writer_settings: WriterSettings) -> None:
    settings = settings_with(writer_settings, memory_limit_mb=1, max_batch_rows=300)
    pool = await asyncpg.create_pool(crash_db, min_size=1, max_size=4)
    async with Sink(pool, settings) as sink:
        await sink.put_many(trades(0, 1000))
        await sink.flush()
        await private_cluster.stop("immediate")
        await sink.put_many(trades(1000, 21_000))  # returns: full batches go to disk
        down = sink.stats()["trades"]
        assert down["rows_spooled"] > 0 and down["spool_bytes"] > 0
        assert down["queue_bytes_peak"] <= down["queue_limit_bytes"]
        await private_cluster.start()
        await sink.flush()
        after = sink.stats()["trades"]
    await pool.close()
    assert await distinct_trades(crash_db) == (21_000, 21_000)
    assert after["spool_bytes"] == 0 and after["rows_replayed"] == down["rows_spooled"]
    assert after["rows_dropped"] == 0
    assert not list(Path(settings.spool_dir).glob("*.seg"))


def _via(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


async def test_blackholed_database_is_noticed_by_the_timeout(
        schema_db: str, writer_settings: WriterSettings) -> None:
    target = urlsplit(schema_db)
    proxy = BlackholeProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    settings = settings_with(writer_settings, db_timeout_s=0.5, max_batch_rows=100)
    pool = await asyncpg.create_pool(_via(schema_db, proxy.port), min_size=0, max_size=2)
    try:
        async with Sink(pool, settings) as sink:
            await sink.put_many(trades(0, 500))
            await sink.flush()
            proxy.blackhole()  # COPYs now hang: only the outer timeout can end them
            await sink.put_many(trades(500, 1000))
            await wait_until(lambda: sink.stats()["trades"]["retries"] >= 2)
            proxy.restore()
            await sink.flush()
            stats = sink.stats()["trades"]
    finally:
        await pool.close()
        await proxy.close()
    assert await count(schema_db) == 1000
    assert stats["retries"] >= 2 and stats["healthy"]


async def test_close_while_blackholed_returns_within_budget_and_spools(
        schema_db: str, writer_settings: WriterSettings) -> None:
    target = urlsplit(schema_db)
    proxy = BlackholeProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    settings = settings_with(writer_settings, db_timeout_s=60, shutdown_budget_s=1.5)
    pool = await asyncpg.create_pool(_via(schema_db, proxy.port), min_size=0, max_size=2)
    try:
        sink = Sink(pool, settings)
        await sink.start()
        proxy.blackhole()  # every COPY now hangs; only close()'s deadline can end it
        await sink.put_many(trades(0, 2000))
        async with asyncio.timeout(settings.shutdown_budget_s + 5):  # a hang fails the test
            await sink.close()
        stats = sink.stats()["trades"]
    finally:
        await pool.close()
        await proxy.close()
    assert stats["rows_spooled"] == 2000 and stats["rows_written"] == 0
    direct = await asyncpg.create_pool(schema_db, min_size=1, max_size=4)
    try:
        async with Sink(direct, settings) as again:  # the next start replays the spool
            await again.flush()
    finally:
        await direct.close()
    assert await count(schema_db) == 2000

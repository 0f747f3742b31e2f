"""Memory bounds, backpressure, drop-oldest for books, and close() within its budget.

A table held under an explicit lock by another transaction is a database that accepts
connections but stores nothing: the producer then runs far faster than the database,
deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import msgspec
import pytest
from structlog.testing import capture_logs

from ingest.errors import WriteError
from ingest.records import BookDelta
from ingest.settings import WriterSettings
from ingest.sink import Sink

from .conftest import BASE_TS, book, count, settings_with, trade, trades, wait_until


@asynccontextmanager
async def table_locked(dsn: str, table: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN SHARE MODE")  # table: test constant
            yield
    finally:
        await conn.close()


async def test_memory_stays_within_bound_while_producer_outruns_database(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    settings = settings_with(writer_settings, memory_limit_mb=1, max_batch_rows=500)
    n = 20_000
    async with Sink(pool, settings) as sink:
        async with table_locked(schema_db, "trades"):
            producer = asyncio.create_task(sink.put_many(trades(0, n)))
            await wait_until(lambda: sink.stats()["trades"]["producer_waits"] > 0)
            stats = sink.stats()["trades"]
            assert not producer.done()  # blocked, not dropping
            assert 0 < stats["queue_bytes"] <= stats["queue_limit_bytes"]
        await producer
        await sink.flush()
        stats = sink.stats()["trades"]
    assert await count(schema_db) == n
    assert stats["queue_bytes_peak"] <= stats["queue_limit_bytes"]
    assert stats["rows_dropped"] == stats["rows_spooled"] == 0


async def test_offer_takes_what_fits_without_waiting_and_leaves_the_rest(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    settings = settings_with(writer_settings, memory_limit_mb=1, max_batch_rows=500)
    n = 20_000
    records = trades(0, n)
    async with Sink(pool, settings) as sink:
        async with table_locked(schema_db, "trades"):
            taken = sink.offer(records)  # synchronous: never waits for the database
            stats = sink.stats()["trades"]
            assert 0 < taken < n
            assert stats["queue_bytes"] <= stats["queue_limit_bytes"]
            assert stats["producer_waits"] == 0
            assert sink.offer(records[taken:]) == 0  # still full
            rest = asyncio.create_task(sink.put_many(records[taken:]))
        await rest
        await sink.flush()
    assert await count(schema_db) == n


async def test_a_snapshot_too_big_for_the_room_beside_a_batch_in_flight_is_dropped_and_counted(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    # The only queued bytes belong to the batch being written; the next snapshot does not
    # fit beside it and there is nothing older to drop: it is dropped, logged, counted.
    settings = settings_with(writer_settings, memory_limit_mb=1, max_batch_rows=1)
    levels = tuple((f"{100 + i}.5", "1.0") for i in range(300))
    big = [msgspec.structs.replace(book(i), bids=levels, asks=levels) for i in range(2)]
    async with Sink(pool, settings) as sink:
        async with table_locked(schema_db, "order_books"):
            await sink.put(big[0])
            await wait_until(lambda: sink.stats()["order_books"]["batches_in_flight"] == 1)
            with capture_logs() as logs:
                await sink.put(big[1])  # must neither wait nor raise
            assert sink.stats()["order_books"]["rows_dropped"] == 1
            assert any(e["event"] == "rows dropped" and e["rows"] == 1 for e in logs)
        await sink.flush()
    assert await count(schema_db, "order_books") == 1


async def test_book_snapshots_drop_oldest_and_never_block(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    settings = settings_with(writer_settings, memory_limit_mb=1, max_batch_rows=50)
    n = 3000
    async with Sink(pool, settings) as sink:
        async with table_locked(schema_db, "order_books"):
            await sink.put_many([book(i) for i in range(n)])  # returns: books never wait
            stats = sink.stats()["order_books"]
            assert stats["rows_dropped"] > 0
            assert stats["producer_waits"] == 0
        await sink.flush()
        stats = sink.stats()["order_books"]
    stored = await count(schema_db, "order_books")
    assert stored + stats["rows_dropped"] == n
    assert stats["queue_bytes_peak"] <= stats["queue_limit_bytes"]
    conn = await asyncpg.connect(schema_db)
    try:
        newest = await conn.fetchval("SELECT max(last_update_id) FROM order_books")
    finally:
        await conn.close()
    assert newest == book(n - 1).last_update_id  # the oldest went, the newest stayed


async def test_close_within_budget_spools_what_is_stuck_then_replays(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    settings = settings_with(writer_settings, shutdown_budget_s=1.5, db_timeout_s=30)
    n = 3000
    async with table_locked(schema_db, "trades"):
        sink = Sink(pool, settings)
        await sink.start()
        await sink.put_many(trades(0, n))
        async with asyncio.timeout(settings.shutdown_budget_s + 5):  # a hang fails, not a time
            await sink.close()
        stats = sink.stats()["trades"]
    assert stats["rows_spooled"] == n
    async with Sink(pool, settings) as again:
        await again.flush()
        replay = again.stats()["trades"]
    assert await count(schema_db) == n
    assert replay["rows_replayed"] == n
    # COPYs cut off at the deadline may still commit server-side once the lock goes: their
    # rows come back from the spool as duplicates, never twice.
    assert replay["rows_written"] + replay["duplicates_skipped"] == n


async def test_api_contract(pool: asyncpg.Pool, writer_settings: WriterSettings) -> None:
    sink = Sink(pool, writer_settings)
    with pytest.raises(WriteError):
        await sink.put(trade(1))  # not started
    await sink.start()
    with pytest.raises(TypeError, match="BookDelta"):
        await sink.put(BookDelta("binance", "BTCUSDT", BASE_TS, (), (), 1, 2))  # type: ignore[arg-type]
    await sink.close()
    await sink.close()  # idempotent
    with pytest.raises(WriteError, match="closed"):
        await sink.put(trade(2))


async def test_a_small_batch_is_written_once_its_oldest_row_is_old_enough(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    settings = settings_with(writer_settings, max_batch_rows=1000, flush_interval_ms=30)
    async with Sink(pool, settings) as sink:
        await sink.put_many(trades(0, 3))  # far below max_batch_rows; no flush() call
        await wait_until(lambda: sink.stats()["trades"]["rows_written"] == 3)
        assert sink.stats()["trades"]["batches"] == 1
    assert await count(schema_db) == 3

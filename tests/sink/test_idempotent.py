"""Idempotent writes, candle corrections, validation and poison rows, on a real PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from ingest.records import Candle, MarketMetric, Trade
from ingest.settings import WriterSettings
from ingest.sink import Sink

from .conftest import BASE_TS, book, candle, count, metric, settings_with, trade, trades


async def test_duplicates_across_batches_store_each_row_once(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    n = 5000
    stream = trades(0, n)
    rng = random.Random(7)
    stream += [trade(rng.randrange(n)) for _ in range(1500)]  # replays, spread over batches
    rng.shuffle(stream)
    async with Sink(pool, writer_settings) as sink:
        for i in range(0, len(stream), 700):  # flush in between: duplicates hit stored rows
            await sink.put_many(stream[i:i + 700])
            await sink.flush()
        stats = sink.stats()["trades"]
    assert await count(schema_db) == n
    assert stats["rows_written"] == n
    assert stats["rows_written"] + stats["duplicates_skipped"] == len(stream)
    assert stats["merged_batches"] > 0


async def test_one_stored_row_costs_no_other_row(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    async with Sink(pool, writer_settings) as sink:
        await sink.put(trade(50))
        await sink.flush()
        await sink.put_many(trades(0, 100))  # one batch of 100 holding the stored row
        await sink.flush()
        stats = sink.stats()["trades"]
    assert await count(schema_db) == 100
    assert stats["duplicates_skipped"] == 1
    assert stats["rows_written"] == 100


async def test_candle_correction_replaces_identical_is_skipped(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    async with Sink(pool, writer_settings) as sink:
        await sink.put_many([candle(0), candle(1)])
        await sink.flush()
        await sink.put_many([candle(0, close="103.25", volume="13"), candle(1)])
        await sink.flush()
        open_candle = Candle("binance", "BTCUSDT", "1m", BASE_TS + timedelta(minutes=2),
                             "1", "1", "1", "1", "1", None, None, False)
        await sink.put(open_candle)
        await sink.flush()
        stats = sink.stats()["candlesticks"]
    conn = await asyncpg.connect(schema_db)
    try:
        rows = await conn.fetch("SELECT close::text, volume::text FROM candlesticks ORDER BY timestamp")
    finally:
        await conn.close()
    assert [(r[0], r[1]) for r in rows] == [
        ("103.250000000000000000", "13.000000000000000000"),
        ("101.500000000000000000", "12.500000000000000000"),
    ]
    assert stats["rows_updated"] == 1
    assert stats["duplicates_skipped"] == 1
    assert stats["rows_ignored"] == 1


async def test_validation_rejects_and_counts(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    bad = [
        Trade("binance", "BTCUSDT", 1, BASE_TS, "NaN", "1", None, True),
        Trade("binance", "BTCUSDT", 2, BASE_TS, "1", "-0.5", None, True),
        Trade("binance", "BTCUSDT", 3, BASE_TS, "1e20", "1", None, True),
        Trade("binance", "BTCUSDT", 4, BASE_TS, "1", "1e-19", None, True),
        Trade("binance", "", 5, BASE_TS, "1", "1", None, True),
        Trade("binance", "BTCUSDT", 6, now + timedelta(days=2), "1", "1", None, True),
        Trade("binance", "BTCUSDT", 7, datetime(2024, 1, 1), "1", "1", None, True),
    ]
    async with Sink(pool, writer_settings, clock=lambda: now) as sink:
        await sink.put_many([*bad, trade(100), MarketMetric("unknown", BASE_TS, "1")])
        await sink.flush()
        stats = sink.stats()
    assert await count(schema_db) == 1
    assert stats["trades"]["rows_rejected"] == len(bad)
    assert stats["market_metrics"]["rows_rejected"] == 1


async def test_books_and_metrics_round_trip(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    async with Sink(pool, writer_settings) as sink:
        await sink.put_many([book(0), book(1), book(0)])
        await sink.put_many([metric(0), metric(0, name="eth_dominance", value="17.25"),
                             metric(0, name="usdt_dominance", value="4.5"), metric(0)])
        await sink.flush()
        stats = sink.stats()
    conn = await asyncpg.connect(schema_db)
    try:
        bids = json.loads(await conn.fetchval("SELECT bids FROM order_books ORDER BY timestamp LIMIT 1"))
        names = await conn.fetch("SELECT metric_name FROM market_metrics ORDER BY metric_name")
    finally:
        await conn.close()
    assert bids[0] == ["100.5", "1.25"]
    assert [r[0] for r in names] == ["", "eth_dominance", "usdt_dominance"]
    assert stats["order_books"]["rows_written"] == 2
    assert stats["market_metrics"]["duplicates_skipped"] == 1


async def test_poison_row_from_a_check_costs_only_that_row(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    conn = await asyncpg.connect(schema_db)
    try:
        await conn.execute("ALTER TABLE trades ADD CONSTRAINT test_price_cap CHECK (price < 1000000)")
    finally:
        await conn.close()
    batch = trades(0, 400)
    batch[123] = trade(123, price="2000000")  # valid for Python, refused by the database
    batch[321] = trade(321, price="3000000")
    async with Sink(pool, writer_settings) as sink:
        await sink.put(trade(5))  # stored first: the poison batch also meets a duplicate
        await sink.flush()
        await sink.put_many(batch)
        await sink.flush()
        stats = sink.stats()["trades"]
    assert await count(schema_db) == 398
    assert stats["rows_quarantined"] == 2
    lines = (Path(writer_settings.spool_dir) / "quarantine.jsonl").read_text().splitlines()
    quarantined = [json.loads(line) for line in lines]
    assert sorted(q["record"]["trade_id"] for q in quarantined) == [123, 321]
    assert all("CheckViolation" in q["reason"] for q in quarantined)


async def test_numeric_overflow_poison_row(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    conn = await asyncpg.connect(schema_db)
    try:  # a narrower column than the writer validates for: the overflow happens in COPY
        await conn.execute("ALTER TABLE trades ALTER COLUMN quantity TYPE NUMERIC(12,8)")
    finally:
        await conn.close()
    batch = [Trade("binance", "ETHUSDT", i, BASE_TS + timedelta(seconds=i), "3000",
                   "123456.5" if i == 77 else "1.5", None, False) for i in range(200)]
    async with Sink(pool, settings_with(writer_settings, max_batch_rows=200)) as sink:
        await sink.put_many(batch)
        await sink.flush()
        stats = sink.stats()["trades"]
    assert await count(schema_db) == 199
    assert stats["rows_quarantined"] == 1
    assert stats["rows_written"] == 199


async def test_awkward_text_survives_copy_exactly(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    symbol = 'A\tB\\C\n"D",E\\.'
    meta = {"name": 'x\\y\t"z"\n', "note": "\\.", "nested": {"q": "a,b"}}
    async with Sink(pool, writer_settings) as sink:
        await sink.put(Trade("binance", symbol, 1, BASE_TS, "1.5", "2", "3", True))
        await sink.put(MarketMetric("other", BASE_TS, "-0.25", meta))
        await sink.flush()
    conn = await asyncpg.connect(schema_db)
    try:
        stored_symbol = await conn.fetchval("SELECT symbol FROM trades")
        row = await conn.fetchrow("SELECT metadata, metric_name, value::text FROM market_metrics")
    finally:
        await conn.close()
    assert stored_symbol == symbol
    assert row is not None
    assert json.loads(row[0]) == meta and row[1] == meta["name"]
    assert row[2] == "-0.250000000000000000"

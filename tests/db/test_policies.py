"""Retention on plain PostgreSQL (the daemon job); the allow-lists against settings."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from ingest.db import policies
from ingest.db.pool import connect_pool
from ingest.settings import CompressionSettings, RetentionSettings

from .conftest import settings_for


def test_allow_lists_match_the_settings() -> None:
    assert tuple(f.name for f in dataclasses.fields(RetentionSettings)) == policies.RETENTION_TABLES
    assert tuple(
        f.name for f in dataclasses.fields(CompressionSettings)) == policies.COMPRESSION_TABLES
    assert set(policies._DELETE_EXPIRED) == set(policies.RETENTION_TABLES)
    for table, statement in policies._DELETE_EXPIRED.items():
        assert statement.count(f" {table} ") == 2  # each statement touches its own table only


async def _candle(conn: asyncpg.Connection, ts: datetime) -> None:
    await conn.execute(
        "INSERT INTO candlesticks (exchange, symbol, interval, timestamp, open, high, low, close,"
        " volume) VALUES ('binance', 'BTCUSDT', '1m', $1, 1, 1, 1, 1, 0)", ts)


async def test_run_retention_once_deletes_only_expired_rows(migrated: str,
                                                            conn: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    for days in (0, 1, 400, 401, 402):
        await _candle(conn, now - timedelta(days=days))
    await conn.execute("INSERT INTO audit_log (action, resource_type, timestamp) "
                       "VALUES ('x', 'y', $1)", now - timedelta(days=5000))
    await conn.execute("INSERT INTO trade_executions (portfolio_id, symbol, side, quantity, "
                       "price, timestamp) VALUES (gen_random_uuid(), 'BTC', 'buy', 1, 1, $1)",
                       now - timedelta(days=5000))
    settings = settings_for(migrated)
    settings = dataclasses.replace(
        settings, retention=dataclasses.replace(settings.retention, candlesticks="1 year"))
    pool = await connect_pool(settings.database)
    try:
        deleted = await policies.run_retention_once(pool, settings, batch_rows=2)
    finally:
        await pool.close()
    assert deleted["candlesticks"] == 3  # in batches of 2
    assert deleted["audit_log"] == 1  # 3 years by default
    assert "trade_executions" not in deleted  # kept forever (empty setting)
    assert await conn.fetchval("SELECT count(*) FROM candlesticks") == 2
    assert await conn.fetchval("SELECT count(*) FROM trade_executions") == 1


async def test_retention_loop_runs_and_stops(migrated: str, conn: asyncpg.Connection) -> None:
    await _candle(conn, datetime.now(UTC) - timedelta(days=365 * 8))
    await conn.execute("INSERT INTO candlesticks VALUES ('binance', 'ETHUSDT', '1m', now(), "
                       "$1, $1, $1, $1, $1, NULL, NULL)", Decimal("2"))
    settings = settings_for(migrated)
    pool = await connect_pool(settings.database)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(policies.retention_loop(pool, settings, stop, interval_s=0.05,
                                                           first_run_s=0.0))
        for _ in range(100):
            if await conn.fetchval("SELECT count(*) FROM candlesticks") == 1:
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT count(*) FROM candlesticks") == 1
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    finally:
        await pool.close()


async def test_retention_loop_survives_a_failed_run(database_url: str) -> None:
    settings = settings_for(database_url)  # no schema: every run fails
    pool = await connect_pool(settings.database)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(policies.retention_loop(pool, settings, stop, interval_s=0.02,
                                                           first_run_s=0.0))
        await asyncio.sleep(0.2)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    finally:
        await pool.close()


@pytest.mark.usefixtures("migrated")
async def test_policy_reconcile_is_not_for_plain_postgres(conn: asyncpg.Connection) -> None:
    from ingest.db.migrate import timescaledb_in_use

    assert await timescaledb_in_use(conn) is False

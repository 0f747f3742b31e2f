"""What the schema itself guarantees: CHECKs, unique keys, the derived market_data view."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

T0 = datetime(2024, 1, 2, tzinfo=UTC)

_CANDLE = """
INSERT INTO candlesticks (exchange, symbol, interval, timestamp, open, high, low, close,
                          volume, quote_volume, trades_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"""
_TRADE = """
INSERT INTO trades (exchange, symbol, trade_id, timestamp, price, quantity, quote_quantity,
                    is_buyer_maker)
VALUES ('binance', 'BTCUSDT', $1, $2, $3, $4, NULL, true)"""
_METRIC = """
INSERT INTO market_metrics (metric_type, timestamp, value, metadata)
VALUES ($1, $2, $3, $4::jsonb)"""


def _candle(**overrides: object) -> tuple[object, ...]:
    row: dict[str, object] = {
        "exchange": "binance", "symbol": "BTCUSDT", "interval": "1m", "timestamp": T0,
        "open": Decimal("100"), "high": Decimal("110"), "low": Decimal("90"),
        "close": Decimal("105"), "volume": Decimal("2"), "quote_volume": Decimal("210"),
        "trades_count": 7,
    }
    row.update(overrides)
    return tuple(row.values())


@pytest.mark.usefixtures("migrated")
async def test_market_data_view_is_derived_from_candles(conn: asyncpg.Connection) -> None:
    await conn.execute(_CANDLE, *_candle())
    await conn.execute(_CANDLE, *_candle(exchange="gateio", volume=Decimal("0"),
                                         quote_volume=None, trades_count=None))
    rows = await conn.fetch("SELECT * FROM market_data ORDER BY exchange")
    assert [dict(r) for r in rows] == [
        {"symbol": "BTCUSDT", "timestamp": T0, "open_price": Decimal("100"),
         "high_price": Decimal("110"), "low_price": Decimal("90"), "close_price": Decimal("105"),
         "volume": Decimal("2"), "vwap": Decimal("105"), "exchange": "binance", "interval": "1m"},
        {"symbol": "BTCUSDT", "timestamp": T0, "open_price": Decimal("100"),
         "high_price": Decimal("110"), "low_price": Decimal("90"), "close_price": Decimal("105"),
         "volume": Decimal("0"), "vwap": None, "exchange": "gateio", "interval": "1m"},
    ]
    # a view: a new candle shows up without anything feeding market_data
    await conn.execute(_CANDLE, *_candle(interval="5m"))
    assert await conn.fetchval("SELECT count(*) FROM market_data") == 3


@pytest.mark.usefixtures("migrated")
@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("value", ["0", "-1"])
async def test_candle_prices_must_be_positive(conn: asyncpg.Connection, column: str,
                                              value: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(_CANDLE, *_candle(**{column: Decimal(value)}))


@pytest.mark.usefixtures("migrated")
async def test_trade_checks(conn: asyncpg.Connection) -> None:
    await conn.execute(_TRADE, 1, T0, Decimal("42000.5"), Decimal("0"))  # zero size is legal
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(_TRADE, 2, T0, Decimal("0"), Decimal("1"))
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(_TRADE, 3, T0, Decimal("-5"), Decimal("1"))
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(_TRADE, 4, T0, Decimal("1"), Decimal("-0.1"))
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(_CANDLE, *_candle(volume=Decimal("-1")))
    # the same trade again is a duplicate (the writer's ON CONFLICT absorbs it)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(_TRADE, 1, T0, Decimal("42000.5"), Decimal("0"))


@pytest.mark.usefixtures("migrated")
async def test_order_book_sides_must_be_arrays(conn: asyncpg.Connection) -> None:
    insert = ("INSERT INTO order_books (exchange, symbol, timestamp, bids, asks, last_update_id) "
              "VALUES ('binance', 'BTCUSDT', $1, $2::jsonb, $3::jsonb, 1)")
    await conn.execute(insert, T0, json.dumps([["1.5", "2"]]), "[]")
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(insert, T0.replace(minute=1), "{}", "[]")


@pytest.mark.usefixtures("migrated")
async def test_other_metrics_are_keyed_by_their_name(conn: asyncpg.Connection) -> None:
    await conn.execute(_METRIC, "other", T0, Decimal("4.2"), json.dumps({"name": "eth_dominance"}))
    await conn.execute(_METRIC, "other", T0, Decimal("1.1"), json.dumps({"name": "usdt_dominance"}))
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(_METRIC, "other", T0, Decimal("4.3"),
                           json.dumps({"name": "eth_dominance", "source": "again"}))
    await conn.execute(_METRIC, "btc_dominance", T0, Decimal("52"), "{}")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(_METRIC, "btc_dominance", T0, Decimal("53"), "{}")
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(_METRIC, "made_up", T0, Decimal("1"), "{}")
    names = await conn.fetch("SELECT metric_name FROM market_metrics ORDER BY metric_name")
    assert [r["metric_name"] for r in names] == ["", "eth_dominance", "usdt_dominance"]


@pytest.mark.usefixtures("migrated")
async def test_platform_defaults_work(conn: asyncpg.Connection) -> None:
    user_id = await conn.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x') RETURNING id")
    row = await conn.fetchrow("SELECT roles, permissions FROM users WHERE id = $1", user_id)
    assert row["roles"] == ["user"] and row["permissions"] == []
    await conn.execute("INSERT INTO audit_log (user_id, action, resource_type) "
                       "VALUES ($1, 'login', 'session')", user_id)
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == 1

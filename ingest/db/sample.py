"""The small sample fixture shipped for ``ingest db init --with-sample-data``."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from ingest.db.migrate import single_connection
from ingest.db.pool import deadline

SAMPLE_FILE = Path(__file__).with_name("sample_data.json")

_INSERT_CANDLE = """
INSERT INTO candlesticks (exchange, symbol, interval, timestamp, open, high, low, close,
                          volume, quote_volume, trades_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT DO NOTHING"""
_INSERT_METRIC = """
INSERT INTO market_metrics (metric_type, timestamp, value, metadata)
VALUES ($1, $2, $3, $4::jsonb)
ON CONFLICT DO NOTHING"""


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _dec(text: str | None) -> Decimal | None:
    # Decimal from the fixture's own text: no float on the way to NUMERIC.
    return None if text is None else Decimal(text)


def _candle_row(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["exchange"], c["symbol"], c["interval"], _ts(c["timestamp"]),
            _dec(c["open"]), _dec(c["high"]), _dec(c["low"]), _dec(c["close"]),
            _dec(c["volume"]), _dec(c["quote_volume"]), c["trades_count"])


def _metric_row(m: dict[str, Any]) -> tuple[Any, ...]:
    return (m["metric_type"], _ts(m["timestamp"]), _dec(m["value"]), json.dumps(m["metadata"]))


async def load_sample_data(conn_or_pool: asyncpg.Connection | asyncpg.Pool,
                           path: Path = SAMPLE_FILE, timeout_s: float = 60.0) -> dict[str, int]:
    """Insert the fixture (idempotent). Returns the number of rows offered per table."""
    data = json.loads(path.read_text(encoding="utf-8"))
    candles = [_candle_row(c) for c in data["candlesticks"]]
    metrics = [_metric_row(m) for m in data["market_metrics"]]
    async with (single_connection(conn_or_pool) as conn,
                deadline(timeout_s, "loading sample data"), conn.transaction()):
        await conn.executemany(_INSERT_CANDLE, candles)
        await conn.executemany(_INSERT_METRIC, metrics)
    return {"candlesticks": len(candles), "market_metrics": len(metrics)}

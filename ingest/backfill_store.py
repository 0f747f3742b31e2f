"""What is already stored: resume points and gaps. Read-only SQL with bound parameters.

Every query is bounded by an outer deadline (asyncpg's own timeout does not stop a call to
a server that stopped answering; reliability.md). The ones that run per job use the unique
keys' indexes: (exchange, symbol, interval, timestamp) for candles and
(exchange, symbol, timestamp DESC) for trades.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from ingest.backfill_plan import span_ms, to_dt, to_ms
from ingest.db.pool import deadline
from ingest.errors import DatabaseError

QUERY_TIMEOUT_S = 60.0


@contextlib.asynccontextmanager
async def _query(what: str, timeout_s: float = QUERY_TIMEOUT_S) -> AsyncIterator[None]:
    """A deadline, and the driver's errors as one-line ``DatabaseError``s naming the query."""
    try:
        async with deadline(timeout_s, what):
            yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise DatabaseError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())}") from exc

_NEWEST_CANDLE = """
SELECT max(timestamp) FROM candlesticks
WHERE exchange = $1 AND symbol = $2 AND interval = $3 AND timestamp >= $4 AND timestamp < $5
"""

_OLDEST_CANDLE = """
SELECT min(timestamp) FROM candlesticks
WHERE exchange = $1 AND symbol = $2 AND interval = $3 AND timestamp >= $4 AND timestamp < $5
"""

_NEWEST_TRADE = """
SELECT trade_id, timestamp FROM trades
WHERE exchange = $1 AND symbol = $2 AND timestamp >= $3 AND timestamp < $4
ORDER BY timestamp DESC, trade_id DESC LIMIT 1
"""

# The last candle of the stored run that starts at the range's first window ($4): a resume
# point that never skips a hole (NULL when the first window itself is missing).
_CANDLE_RUN_END = """
WITH s AS (
    SELECT timestamp AS ts, lead(timestamp) OVER (ORDER BY timestamp) AS nxt
    FROM candlesticks
    WHERE exchange = $1 AND symbol = $2 AND interval = $3 AND timestamp >= $4 AND timestamp < $5)
SELECT CASE WHEN min(ts) = $4 THEN min(ts) FILTER (WHERE nxt IS NULL OR nxt <> ts + $6) END
FROM s
"""

# The last trade of the stored run that starts within $5 of the range's start, the run
# ending at the first silence longer than $5, or ($6: ids contiguous, Binance) at the first
# id hole: taken as a hole, fetched again, never skipped. No row when the range does not
# start with stored trades.
_TRADE_RUN_END = """
WITH s AS (
    SELECT trade_id, timestamp AS ts,
           lead(timestamp) OVER w AS nxt, lead(trade_id) OVER w AS nxt_id
    FROM trades
    WHERE exchange = $1 AND symbol = $2 AND timestamp >= $3 AND timestamp < $4
    WINDOW w AS (ORDER BY timestamp, trade_id))
SELECT trade_id, ts AS timestamp FROM s
WHERE (nxt IS NULL OR nxt > ts + $5 OR ($6 AND nxt_id <> trade_id + 1))
  AND (SELECT min(timestamp) FROM trades WHERE exchange = $1 AND symbol = $2
       AND timestamp >= $3 AND timestamp < $4) < $3 + $5
ORDER BY ts, trade_id LIMIT 1
"""
# (Written so that PostgreSQL streams it in index order and stops at the first hole: an
# incremental sort under the window, no aggregate over the whole range.)

# Windows of the interval grid with no stored candle, merged into runs (gaps and islands:
# consecutive missing windows share ts - n * step). $4/$5 are the first and last window.
_MISSING_WINDOWS = """
WITH grid AS (
    SELECT g AS ts FROM generate_series($4::timestamptz, $5::timestamptz, $6::interval) AS g
), missing AS (
    SELECT ts, ts - (row_number() OVER (ORDER BY ts)) * $6::interval AS run
    FROM grid
    WHERE NOT EXISTS (
        SELECT 1 FROM candlesticks c
        WHERE c.exchange = $1 AND c.symbol = $2 AND c.interval = $3 AND c.timestamp = grid.ts)
)
SELECT min(ts) AS first_open, max(ts) AS last_open, count(*) AS windows
FROM missing GROUP BY run ORDER BY first_open
"""

# Holes in a contiguous id sequence (Binance raw trade ids), between stored neighbours.
_TRADE_ID_GAPS = """
SELECT prev_id + 1 AS first_id, trade_id - 1 AS last_id, prev_ts, timestamp AS next_ts
FROM (
    SELECT trade_id, timestamp,
           lag(trade_id) OVER (ORDER BY trade_id) AS prev_id,
           lag(timestamp) OVER (ORDER BY trade_id) AS prev_ts
    FROM trades
    WHERE exchange = $1 AND symbol = $2 AND timestamp >= $3 AND timestamp < $4
) t
WHERE trade_id > prev_id + 1
ORDER BY first_id
"""


TRADE_SILENCE_MS = 15 * 60_000  # longer without a stored trade: treated as a hole


@dataclass(frozen=True)
class StoredTrade:
    trade_id: int
    ts_ms: int


@dataclass(frozen=True)
class CandleGap:
    first_open_ms: int
    last_open_ms: int
    windows: int


@dataclass(frozen=True)
class TradeIdGap:
    first_id: int
    last_id: int
    after_ms: int  # time of the stored trade before the hole
    before_ms: int  # time of the stored trade after it

    @property
    def count(self) -> int:
        return self.last_id - self.first_id + 1


async def newest_candle(pool: asyncpg.Pool, exchange: str, symbol: str, interval: str,
                        lo: int, hi: int) -> int | None:
    """Open time of the newest stored candle opening in ``[lo, hi)``."""
    async with _query("newest stored candle"):
        value = await pool.fetchval(_NEWEST_CANDLE, exchange, symbol, interval, to_dt(lo),
                                    to_dt(hi))
    return None if value is None else to_ms(value)


async def candle_resume(pool: asyncpg.Pool, exchange: str, symbol: str, interval: str,
                        lo: int, hi: int) -> int:
    """Where a candle backfill of ``[lo, hi)`` continues: after the stored run that starts
    at ``lo`` (a rerun or an interrupted run), else at ``lo``. Rows stored further on (the
    live stream's) do not move it: the hole before them is fetched."""
    step = span_ms(interval)
    async with _query("stored candle run", QUERY_TIMEOUT_S * 5):
        value = await pool.fetchval(_CANDLE_RUN_END, exchange, symbol, interval, to_dt(lo),
                                    to_dt(hi), timedelta(milliseconds=step))
    return lo if value is None else to_ms(value) + step


async def trade_resume(pool: asyncpg.Pool, exchange: str, symbol: str, lo: int, hi: int, *,
                       ids_contiguous: bool, silence_ms: int = TRADE_SILENCE_MS
                       ) -> StoredTrade | None:
    """The stored trade a trade backfill of ``[lo, hi)`` continues after: the end of the
    stored run that starts at ``lo``; None to start at ``lo``. A silence longer than
    ``silence_ms`` inside the run counts as a hole (fetched again: at worst duplicates)."""
    async with _query("stored trade run", QUERY_TIMEOUT_S * 5):
        row = await pool.fetchrow(_TRADE_RUN_END, exchange, symbol, to_dt(lo), to_dt(hi),
                                  timedelta(milliseconds=silence_ms), ids_contiguous)
    return None if row is None else StoredTrade(row["trade_id"], to_ms(row["timestamp"]))


async def oldest_candle(pool: asyncpg.Pool, exchange: str, symbol: str, interval: str,
                        lo: int, hi: int) -> int | None:
    async with _query("oldest stored candle"):
        value = await pool.fetchval(_OLDEST_CANDLE, exchange, symbol, interval, to_dt(lo),
                                    to_dt(hi))
    return None if value is None else to_ms(value)


async def newest_trade(pool: asyncpg.Pool, exchange: str, symbol: str, lo: int,
                       hi: int) -> StoredTrade | None:
    """The newest stored trade with ``lo <= time < hi``."""
    async with _query("newest stored trade"):
        row = await pool.fetchrow(_NEWEST_TRADE, exchange, symbol, to_dt(lo), to_dt(hi))
    return None if row is None else StoredTrade(row["trade_id"], to_ms(row["timestamp"]))


async def missing_windows(pool: asyncpg.Pool, exchange: str, symbol: str, interval: str,
                          first_open: int, stop: int) -> list[CandleGap]:
    """Runs of windows opening in ``[first_open, stop)`` (on the grid) with no candle."""
    if stop <= first_open:
        return []
    step = span_ms(interval)
    last_open = stop - step - (stop - first_open - step) % step
    async with _query("missing candle windows", QUERY_TIMEOUT_S * 5):
        rows = await pool.fetch(_MISSING_WINDOWS, exchange, symbol, interval,
                                to_dt(first_open), to_dt(last_open), timedelta(milliseconds=step))
    return [CandleGap(to_ms(r["first_open"]), to_ms(r["last_open"]), r["windows"]) for r in rows]


async def trade_id_gaps(pool: asyncpg.Pool, exchange: str, symbol: str, lo: int,
                        hi: int) -> list[TradeIdGap]:
    async with _query("trade id gaps", QUERY_TIMEOUT_S * 5):
        rows = await pool.fetch(_TRADE_ID_GAPS, exchange, symbol, to_dt(lo), to_dt(hi))
    return [TradeIdGap(r["first_id"], r["last_id"], to_ms(r["prev_ts"]), to_ms(r["next_ts"]))
            for r in rows]

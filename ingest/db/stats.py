"""``ingest db stats``: row counts, sizes, freshness, and TimescaleDB chunk/compression figures.

Written for a large production database: row counts come from the planner's estimate (or
TimescaleDB's ``approximate_row_count``) unless the table is small or ``exact`` is asked
for, and the newest timestamp per feed is found with an index skip scan (a recursive CTE
walking the unique key's index), not a full scan.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ingest.db.migrate import single_connection
from ingest.db.pool import deadline

# Every table the migrations create (the market_data view is derived and not counted).
TABLES: tuple[str, ...] = (
    "candlesticks", "trades", "order_books", "market_metrics",
    "users", "api_keys", "portfolios", "positions", "orders", "portfolio_snapshots",
    "trade_executions", "audit_log", "security_events", "predictions", "model_performance",
)
assert all(re.fullmatch(r"[a-z_]+", t) for t in TABLES)
# Built once from the constant names above, never from input.
_COUNT: dict[str, str] = {t: f"SELECT count(*) FROM {t}" for t in TABLES}
EXACT_BELOW_ROWS = 100_000  # below this estimate, count exactly (cheap, and exact is nicer)

_EXISTS = "SELECT to_regclass($1) IS NOT NULL"
_ESTIMATE = "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::text::regclass"
_TS_ESTIMATE = "SELECT approximate_row_count($1::text::regclass)"
_SIZES = """
SELECT pg_table_size(r) AS table_bytes, pg_indexes_size(r) AS index_bytes,
       pg_total_relation_size(r) AS total_bytes
FROM (SELECT $1::text::regclass AS r) s"""
_TS_SIZES = """
SELECT table_bytes + toast_bytes AS table_bytes, index_bytes, total_bytes
FROM hypertable_detailed_size($1::text::regclass)"""
_TS_VERSION = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
_HYPERTABLES = """
SELECT hypertable_name, num_chunks, compression_enabled
FROM timescaledb_information.hypertables WHERE hypertable_schema = current_schema()"""
_COMPRESSION = """
SELECT total_chunks, number_compressed_chunks,
       before_compression_total_bytes, after_compression_total_bytes
FROM hypertable_compression_stats($1::text::regclass)"""

# Newest row per feed. The skip scan finds each distinct key with one index probe.
_NEWEST: dict[str, str] = {
    "candlesticks": """
WITH RECURSIVE k AS (
    (SELECT exchange, symbol, interval FROM candlesticks
     ORDER BY exchange, symbol, interval LIMIT 1)
    UNION ALL
    SELECT n.exchange, n.symbol, n.interval FROM k, LATERAL (
        SELECT c.exchange, c.symbol, c.interval FROM candlesticks c
        WHERE (c.exchange, c.symbol, c.interval) > (k.exchange, k.symbol, k.interval)
        ORDER BY c.exchange, c.symbol, c.interval LIMIT 1) n
)
SELECT k.exchange, k.symbol, k.interval,
       (SELECT max(c.timestamp) FROM candlesticks c WHERE c.exchange = k.exchange
          AND c.symbol = k.symbol AND c.interval = k.interval) AS newest
FROM k""",
    "trades": """
WITH RECURSIVE k AS (
    (SELECT exchange, symbol FROM trades ORDER BY exchange, symbol LIMIT 1)
    UNION ALL
    SELECT n.exchange, n.symbol FROM k, LATERAL (
        SELECT t.exchange, t.symbol FROM trades t
        WHERE (t.exchange, t.symbol) > (k.exchange, k.symbol)
        ORDER BY t.exchange, t.symbol LIMIT 1) n
)
SELECT k.exchange, k.symbol, NULL::text AS interval,
       (SELECT max(t.timestamp) FROM trades t
        WHERE t.exchange = k.exchange AND t.symbol = k.symbol) AS newest
FROM k""",
    "order_books": """
WITH RECURSIVE k AS (
    (SELECT exchange, symbol FROM order_books ORDER BY exchange, symbol LIMIT 1)
    UNION ALL
    SELECT n.exchange, n.symbol FROM k, LATERAL (
        SELECT b.exchange, b.symbol FROM order_books b
        WHERE (b.exchange, b.symbol) > (k.exchange, k.symbol)
        ORDER BY b.exchange, b.symbol LIMIT 1) n
)
SELECT k.exchange, k.symbol, NULL::text AS interval,
       (SELECT max(b.timestamp) FROM order_books b
        WHERE b.exchange = k.exchange AND b.symbol = k.symbol) AS newest
FROM k""",
}


@dataclass
class TableStats:
    table: str
    rows: int
    rows_exact: bool
    table_bytes: int
    index_bytes: int
    total_bytes: int
    hypertable: bool = False
    chunks: int | None = None
    compressed_chunks: int | None = None
    before_compression_bytes: int | None = None
    after_compression_bytes: int | None = None

    @property
    def compression_ratio(self) -> float | None:
        if self.before_compression_bytes and self.after_compression_bytes:
            return self.before_compression_bytes / self.after_compression_bytes
        return None


@dataclass
class Freshness:
    table: str
    exchange: str
    symbol: str
    interval: str | None
    newest: datetime | None


@dataclass
class DatabaseStats:
    timescaledb_version: str | None
    tables: list[TableStats] = field(default_factory=list)
    freshness: list[Freshness] = field(default_factory=list)
    collected_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        def table(t: TableStats) -> dict[str, Any]:
            return {**asdict(t), "compression_ratio": t.compression_ratio}

        def fresh(f: Freshness) -> dict[str, Any]:
            age = (self.collected_at - f.newest).total_seconds() if f.newest else None
            return {**asdict(f), "newest": f.newest.isoformat() if f.newest else None,
                    "age_s": age}

        return {"timescaledb_version": self.timescaledb_version,
                "collected_at": self.collected_at.isoformat(),
                "tables": [table(t) for t in self.tables],
                "freshness": [fresh(f) for f in self.freshness]}


async def _table_stats(conn: asyncpg.Connection, name: str, hyper: asyncpg.Record | None,
                       exact: bool) -> TableStats:
    if hyper is not None:
        estimate = int(await conn.fetchval(_TS_ESTIMATE, name) or 0)
        sizes = await conn.fetchrow(_TS_SIZES, name)
    else:
        estimate = int(await conn.fetchval(_ESTIMATE, name))
        sizes = await conn.fetchrow(_SIZES, name)
    # -1: never analysed; small: an exact count is cheap
    count_exactly = exact or estimate < EXACT_BELOW_ROWS
    rows = int(await conn.fetchval(_COUNT[name])) if count_exactly else estimate
    stats = TableStats(name, rows, count_exactly, int(sizes["table_bytes"] or 0),
                       int(sizes["index_bytes"] or 0), int(sizes["total_bytes"] or 0),
                       hypertable=hyper is not None)
    if hyper is not None:
        stats.chunks = int(hyper["num_chunks"])
        if hyper["compression_enabled"]:
            comp = await conn.fetchrow(_COMPRESSION, name)
            if comp is not None:
                stats.compressed_chunks = comp["number_compressed_chunks"]
                stats.before_compression_bytes = comp["before_compression_total_bytes"]
                stats.after_compression_bytes = comp["after_compression_total_bytes"]
    return stats


async def collect_stats(conn_or_pool: asyncpg.Connection | asyncpg.Pool, *, exact: bool = False,
                        timeout_s: float = 300.0) -> DatabaseStats:
    """Statistics for every table the migrations created (tables not there are left out)."""
    async with single_connection(conn_or_pool) as conn, deadline(timeout_s, "db stats"):
        version = await conn.fetchval(_TS_VERSION)
        hypers = ({r["hypertable_name"]: r for r in await conn.fetch(_HYPERTABLES)}
                  if version else {})
        result = DatabaseStats(timescaledb_version=version)
        for name in TABLES:
            if await conn.fetchval(_EXISTS, name):
                result.tables.append(await _table_stats(conn, name, hypers.get(name), exact))
        present = {t.table for t in result.tables}
        for name, query in _NEWEST.items():
            if name in present:
                result.freshness += [Freshness(name, r["exchange"], r["symbol"], r["interval"],
                                               r["newest"]) for r in await conn.fetch(query)]
    return result


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def render_text(stats: DatabaseStats) -> str:
    """A plain table for a terminal."""
    engine = (f"TimescaleDB {stats.timescaledb_version}" if stats.timescaledb_version
              else "plain PostgreSQL")
    lines = [f"engine: {engine}", "",
             f"{'table':<20} {'rows':>14} {'table':>10} {'indexes':>10} {'total':>10} "
             f"{'chunks':>7} {'compr.':>7} {'ratio':>6}"]
    for t in stats.tables:
        rows = f"{t.rows:,}" + ("" if t.rows_exact else "~")
        ratio = f"{t.compression_ratio:.1f}x" if t.compression_ratio else "-"
        lines.append(f"{t.table:<20} {rows:>14} {_size(t.table_bytes):>10} "
                     f"{_size(t.index_bytes):>10} {_size(t.total_bytes):>10} "
                     f"{t.chunks if t.chunks is not None else '-':>7} "
                     f"{t.compressed_chunks if t.compressed_chunks is not None else '-':>7} "
                     f"{ratio:>6}")
    lines += ["", "newest rows (~ marks an estimated row count above)" if any(
        not t.rows_exact for t in stats.tables) else "newest rows"]
    if not stats.freshness:
        lines.append("  (no market data yet)")
    for f in stats.freshness:
        when = f.newest.isoformat() if f.newest else "-"
        age = _age((stats.collected_at - f.newest).total_seconds()) + " ago" if f.newest else ""
        lines.append(f"  {f.table:<13} {f.exchange:<8} {f.symbol:<12} {f.interval or '':<4} "
                     f"{when}  {age}")
    return "\n".join(lines)

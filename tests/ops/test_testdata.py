"""``ingest generate-test-data``: candles consistent across intervals and with the trades,
reproducible from the seed, written through the Sink."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingest import testdata
from tests.ops.conftest import fresh_database, settings_for

END = date(2024, 6, 10)  # a Monday: 8 days hold exactly one 7d window (Mon 3 .. Mon 10)
SPANS = {"5m": "5 minutes", "15m": "15 minutes", "30m": "30 minutes", "1h": "1 hour",
         "4h": "4 hours", "1d": "1 day", "7d": "7 days"}
MINUTES = {"5m": 5, "15m": 15, "30m": 30, "1h": 60, "4h": 240, "1d": 1440, "7d": 10080}


def args(**changes: Any) -> argparse.Namespace:
    base: dict[str, Any] = {"days": 1, "symbols": ["BTC/USDT"], "exchange": "binance", "seed": 7,
                            "end": END, "book_interval_s": 300, "max_trades_per_minute": 4,
                            "quiet": True}
    base.update(changes)
    return argparse.Namespace(**base)


async def generate(url: str, tmp_path: Path, **changes: Any) -> None:
    assert await testdata.run(args(**changes), settings_for(url, tmp_path)) == 0


# For each stored aggregate: the same window folded from the stored 1m candles. date_bin's
# origin 2000-01-03 is a Monday, so 7d windows open on Mondays as the exchanges' do.
CHECK_SQL = """
WITH m AS (
    SELECT exchange, symbol, date_bin($3::text::interval, timestamp, '2000-01-03') AS ts,
           (array_agg(open ORDER BY timestamp))[1] AS open, max(high) AS high, min(low) AS low,
           (array_agg(close ORDER BY timestamp DESC))[1] AS close, sum(volume) AS volume,
           sum(quote_volume) AS qv, sum(trades_count) AS n, count(*) AS minutes
    FROM candlesticks WHERE interval = '1m' GROUP BY 1, 2, 3)
SELECT count(*) AS windows,
       count(*) FILTER (WHERE m.minutes IS DISTINCT FROM $2::bigint) AS incomplete,
       count(*) FILTER (WHERE (h.open, h.high, h.low, h.close, h.volume, h.quote_volume,
                               h.trades_count)
                        IS DISTINCT FROM (m.open, m.high, m.low, m.close, m.volume, m.qv, m.n))
           AS mismatched
FROM candlesticks h LEFT JOIN m ON (m.exchange, m.symbol, m.ts) = (h.exchange, h.symbol, h.timestamp)
WHERE h.interval = $1"""

TRADES_SQL = """
WITH t AS (
    SELECT exchange, symbol, date_trunc('minute', timestamp) AS ts, sum(quantity) AS q,
           sum(quote_quantity) AS qq, count(*) AS n, min(price) AS lo, max(price) AS hi,
           (array_agg(price ORDER BY timestamp))[1] AS first_price,
           (array_agg(price ORDER BY timestamp DESC))[1] AS last_price
    FROM trades GROUP BY 1, 2, 3)
SELECT count(*) FILTER (WHERE t.n IS NULL) AS minutes_without_trades,
       count(*) FILTER (WHERE t.q <> c.volume OR t.n <> c.trades_count
                        OR t.qq <> c.quote_volume) AS volume_mismatch,
       count(*) FILTER (WHERE t.lo < c.low OR t.hi > c.high) AS outside_range,
       count(*) FILTER (WHERE t.first_price <> c.open OR t.last_price <> c.close) AS ends_mismatch,
       (SELECT count(*) FROM t) - count(t.n) AS trades_outside_candles
FROM candlesticks c LEFT JOIN t ON (t.exchange, t.symbol, t.ts) = (c.exchange, c.symbol, c.timestamp)
WHERE c.interval = '1m'"""


async def test_candles_agree_across_intervals_and_with_trades(database_url: str,
                                                              tmp_path: Path) -> None:
    await generate(database_url, tmp_path, days=8)
    conn = await asyncpg.connect(database_url)
    try:
        counts = dict(await conn.fetch(
            "SELECT interval, count(*) FROM candlesticks GROUP BY interval"))
        assert counts["1m"] == 8 * 1440
        assert counts["1h"] == 8 * 24 and counts["1d"] == 8 and counts["7d"] == 1
        for interval, span in SPANS.items():
            row = await conn.fetchrow(CHECK_SQL, interval, MINUTES[interval], span)
            assert row["windows"] == counts[interval]
            assert (row["incomplete"], row["mismatched"]) == (0, 0), interval
        row = await conn.fetchrow(TRADES_SQL)
        assert dict(row) == {"minutes_without_trades": 0, "volume_mismatch": 0,
                             "outside_range": 0, "ends_mismatch": 0, "trades_outside_candles": 0}
        books = await conn.fetchrow(
            "SELECT count(*) AS n, bool_and(jsonb_array_length(bids) = 20 AND "
            "jsonb_array_length(asks) = 20) AS full_depth, bool_and((bids->0->>0)::numeric < "
            "(asks->0->>0)::numeric) AS not_crossed, "
            "bool_and(extract(epoch FROM timestamp)::bigint % 300 = 0) AS on_grid FROM order_books")
        assert dict(books) == {"n": 8 * 288, "full_depth": True, "not_crossed": True,
                               "on_grid": True}
        metrics = dict(await conn.fetch(
            "SELECT metric_type, count(*) FROM market_metrics GROUP BY 1"))
        assert metrics == {"btc_dominance": 8, "fear_greed_index": 8}
    finally:
        await conn.close()


DIGEST_SQL = {
    "candlesticks": "SELECT md5(string_agg(c::text, '|' ORDER BY exchange, symbol, interval, "
                    "timestamp)) FROM candlesticks c",
    "trades": "SELECT md5(string_agg(t::text, '|' ORDER BY exchange, symbol, trade_id)) "
              "FROM trades t",
    "order_books": "SELECT md5(string_agg(b::text, '|' ORDER BY exchange, symbol, timestamp)) "
                   "FROM order_books b",
    "market_metrics": "SELECT md5(string_agg(m::text, '|' ORDER BY metric_type, timestamp)) "
                      "FROM market_metrics m",
}


async def digests(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        return {table: await conn.fetchval(sql) for table, sql in DIGEST_SQL.items()}
    finally:
        await conn.close()


async def test_same_seed_same_rows(database_url: str, pg_admin_dsn: str,
                                   tmp_path: Path) -> None:
    other = await fresh_database(pg_admin_dsn)
    third = await fresh_database(pg_admin_dsn)
    kw: dict[str, Any] = {"days": 2, "exchange": None, "symbols": ["BTC/USDT", "SOL/USDT"]}
    await generate(database_url, tmp_path / "a", seed=42, **kw)
    await generate(other, tmp_path / "b", seed=42, **kw)
    await generate(third, tmp_path / "c", seed=43, **kw)
    a, b, c = await digests(database_url), await digests(other), await digests(third)
    assert None not in a.values()
    assert a == b
    assert all(a[t] != c[t] for t in ("candlesticks", "trades", "order_books"))


def test_decimal_text_is_exact() -> None:
    assert testdata.dec(5, 8) == "0.00000005"
    assert testdata.dec(6_000_012, 2) == "60000.12"
    assert testdata.dec(0, 3) == "0.000"
    assert testdata.window_start(testdata.day_range(END, 1)[1] + 5, "7d") == \
        testdata.day_range(END, 1)[1]  # END is a Monday


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DB_") and k not in ("DATABASE_URL", "INGEST_CONFIG")}
    return subprocess.run([sys.executable, "-m", "ingest.cli", "generate-test-data", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("quiet", [True, False])
def test_command_line(database_url: str, tmp_path: Path, quiet: bool) -> None:
    config = tmp_path / "ingest.toml"
    config.write_text(f'[writer]\nspool_dir = "{tmp_path / "spool"}"\n')
    common = ["--config", str(config), "--database-url", database_url, "--days", "1",
              "--exchange", "gate", "--symbols", "ETH/USDT", "--seed", "5",
              "--end", "2024-01-02", "--log-level", "WARNING"]
    first = _cli(*common, *(["--quiet"] if quiet else []), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    if quiet:
        assert first.stdout == ""
        return
    lines = first.stdout.splitlines()
    assert lines[0] == "seed 5, 2024-01-01 .. 2024-01-02 (exclusive), 1 markets"
    assert lines[2].split() == ["candlesticks", "1,903", "1,903", "0"]
    # Generated rows never mix with (or replace) stored ones: a second run over the same
    # range is refused with one line, exit 2, and writes nothing.
    again = _cli(*common, cwd=tmp_path)
    assert again.returncode == 2, again.stderr
    line = again.stderr.strip().splitlines()[-1]  # (log lines at WARNING come before it)
    assert line.startswith("ingest generate-test-data: error: ")
    assert "already holds rows between 2024-01-01 and 2024-01-02" in line
    assert "candlesticks gateio:ETHUSDT" in line and "never writes over stored data" in line
    assert again.stdout == ""


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    proc = _cli("--days", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--days: must be a positive integer" in proc.stderr
    proc = _cli("--book-interval-s", "90", cwd=tmp_path)
    assert proc.returncode == 2 and "multiple of 60" in proc.stderr

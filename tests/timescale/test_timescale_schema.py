"""The schema and bootstrap on real TimescaleDB (2.23, WASM build).

The tests share one server and run in file order: bootstrap, inspect, change policies,
the skipped-then-applied path, and finally ``downgrade 0``.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ingest.db import migrate
from ingest.db.bootstrap import bootstrap
from ingest.db.policies import reconcile_policies
from ingest.db.stats import collect_stats
from ingest.settings import Settings, parse_settings

from .conftest import connect, disconnect

pytestmark = pytest.mark.timescale

HYPERTABLES = {"candlesticks", "trades", "order_books", "market_metrics",
               "portfolio_snapshots", "trade_executions", "audit_log", "security_events"}
SEED_RETENTION = {"candlesticks": "7 years", "trades": "7 years", "order_books": "7 years",
                  "market_metrics": "7 years", "portfolio_snapshots": "5 years",
                  "audit_log": "3 years", "security_events": "2 years"}
T0 = datetime(2024, 1, 2, tzinfo=UTC)


def _settings(dsn: str, **sections: dict[str, str]) -> Settings:
    return parse_settings({"database": {"url": dsn, "sslmode": "disable"}, **sections}, "<test>")


async def _jobs(conn: asyncpg.Connection, proc: str) -> dict[str, str]:
    """hypertable → interval of its ``proc`` job, normalised by PostgreSQL."""
    rows = await conn.fetch(
        "SELECT hypertable_name, (config ->> $2)::interval::text AS every "
        "FROM timescaledb_information.jobs WHERE proc_name = $1",
        proc, "drop_after" if proc == "policy_retention" else "compress_after")
    return {r["hypertable_name"]: r["every"] for r in rows}


async def test_bootstrap_on_one_connection(timescale_dsn: str) -> None:
    conn = await connect(timescale_dsn)
    try:
        result = await bootstrap(conn, _settings(timescale_dsn))
    finally:
        disconnect(conn)
    assert result.migrations.applied == ["0001_market_data", "0002_platform", "0003_timescale"]
    assert result.migrations.skipped == [] and result.timescaledb is True
    added = {(p.kind, p.table) for p in result.policies if p.action == "added"}
    assert ("retention", "candlesticks") in added and ("compression", "trades") in added
    assert ("retention", "trade_executions") not in added


async def test_hypertables(ts_conn: asyncpg.Connection) -> None:
    rows = await ts_conn.fetch("SELECT hypertable_name FROM timescaledb_information.hypertables "
                               "WHERE hypertable_schema = 'public'")
    assert {r["hypertable_name"] for r in rows} == HYPERTABLES


async def test_compression_settings(ts_conn: asyncpg.Connection) -> None:
    rows = await ts_conn.fetch(
        "SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index "
        "FROM timescaledb_information.compression_settings WHERE hypertable_schema = 'public'")
    segmentby: dict[str, list[str]] = {}
    orderby: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: (r["segmentby_column_index"] or 0,
                                         r["orderby_column_index"] or 0)):
        if r["segmentby_column_index"] is not None:
            segmentby.setdefault(r["hypertable_name"], []).append(r["attname"])
        if r["orderby_column_index"] is not None:
            orderby.setdefault(r["hypertable_name"], []).append(r["attname"])
    for table in ("candlesticks", "trades", "order_books"):
        assert segmentby[table] == ["exchange", "symbol"]
    assert segmentby["market_metrics"] == ["metric_type"]
    assert orderby["candlesticks"] == ["interval", "timestamp"]
    assert orderby["trades"] == ["timestamp", "trade_id"]
    assert orderby["market_metrics"] == ["metric_name", "timestamp"]


async def test_retention_and_compression_jobs(ts_conn: asyncpg.Connection) -> None:
    expected = {t: await ts_conn.fetchval("SELECT $1::text::interval::text", v)
                for t, v in SEED_RETENTION.items()}
    assert await _jobs(ts_conn, "policy_retention") == expected  # none for trade_executions
    compression = {"candlesticks": "30 days", "trades": "7 days", "order_books": "7 days",
                   "market_metrics": "90 days"}
    assert await _jobs(ts_conn, "policy_compression") == compression


async def test_continuous_aggregate(ts_conn: asyncpg.Connection) -> None:
    view = await ts_conn.fetchrow(
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates")
    assert view["view_name"] == "trades_ohlcv_1m" and view["materialized_only"] is False
    refresh = await ts_conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.jobs "
        "WHERE proc_name = 'policy_refresh_continuous_aggregate'")
    assert refresh == 1
    await ts_conn.execute(
        "INSERT INTO trades VALUES ('binance', 'BTCUSDT', 1, $1, 100, 2, 200, false), "
        "('binance', 'BTCUSDT', 2, $2, 110, 1, 110, true)", T0, T0 + timedelta(seconds=30))
    row = await ts_conn.fetchrow("SELECT * FROM trades_ohlcv_1m WHERE symbol = 'BTCUSDT'")
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"],
            row["trades_count"]) == (100, 110, 100, 110, 3, 2)


async def test_status_nothing_pending(ts_conn: asyncpg.Connection) -> None:
    states = [(s.version, s.state, s.checksum_changed) for s in await migrate.status(ts_conn)]
    assert states == [(1, "applied", False), (2, "applied", False), (3, "applied", False)]


async def test_compressed_chunks_keep_working(ts_conn: asyncpg.Connection,
                                             timescale_dsn: str) -> None:
    await ts_conn.execute(
        "INSERT INTO candlesticks VALUES ('binance', 'BTCUSDT', '1m', $1, 1, 2, 1, 2, 5, 10, 3), "
        "('gateio', 'ETHUSDT', '1m', $1, 3, 4, 3, 4, 1, 4, NULL)", T0)
    await ts_conn.execute(
        "INSERT INTO market_metrics (metric_type, timestamp, value, metadata) VALUES "
        "('other', $1, 1.5, '{\"name\": \"eth_dominance\"}'), "
        "('other', $1, 2.5, '{\"name\": \"usdt_dominance\"}')", T0)
    for table in ("candlesticks", "market_metrics"):  # the generated column compresses too
        await ts_conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('{table}') c")
    # a replayed row into a compressed chunk is absorbed, a new one stored
    await ts_conn.execute(
        "INSERT INTO candlesticks VALUES ('binance', 'BTCUSDT', '1m', $1, 1, 2, 1, 2, 5, 10, 3), "
        "('binance', 'BTCUSDT', '1m', $2, 2, 2, 2, 2, 1, 2, 1) ON CONFLICT DO NOTHING",
        T0, T0 + timedelta(minutes=1))
    assert await ts_conn.fetchval("SELECT count(*) FROM candlesticks") == 3
    assert await ts_conn.fetchval("SELECT count(*) FROM market_data") == 3
    names = await ts_conn.fetch("SELECT metric_name FROM market_metrics ORDER BY 1")
    assert [r["metric_name"] for r in names] == ["eth_dominance", "usdt_dominance"]

    stats = await collect_stats(ts_conn)
    assert stats.timescaledb_version and stats.timescaledb_version.startswith("2.")
    by_name = {t.table: t for t in stats.tables}
    candles = by_name["candlesticks"]
    assert candles.hypertable and candles.rows == 3 and candles.chunks == 1
    assert candles.compressed_chunks == 1 and candles.before_compression_bytes
    assert by_name["users"].hypertable is False
    assert {(f.exchange, f.symbol) for f in stats.freshness if f.table == "candlesticks"} == {
        ("binance", "BTCUSDT"), ("gateio", "ETHUSDT")}


async def test_policies_follow_the_settings(ts_conn: asyncpg.Connection, timescale_dsn: str) -> None:
    changed = _settings(timescale_dsn, retention={"candlesticks": "10 years",
                                                  "trade_executions": "20 years"},
                        compression={"market_metrics": ""})
    actions = {(p.kind, p.table): p.action for p in await reconcile_policies(ts_conn, changed)}
    assert actions[("retention", "candlesticks")] == "replaced"
    assert actions[("retention", "trade_executions")] == "added"
    assert actions[("compression", "market_metrics")] == "removed"
    assert actions[("retention", "trades")] == "unchanged"
    retention = await _jobs(ts_conn, "policy_retention")
    assert retention["candlesticks"] == "10 years" and retention["trade_executions"] == "20 years"
    assert "market_metrics" not in await _jobs(ts_conn, "policy_compression")

    back = await reconcile_policies(ts_conn, _settings(timescale_dsn))
    assert {(p.kind, p.table): p.action for p in back if p.action != "unchanged"} == {
        ("retention", "candlesticks"): "replaced", ("retention", "trade_executions"): "removed",
        ("compression", "market_metrics"): "added"}
    again = await bootstrap(ts_conn, _settings(timescale_dsn))
    assert again.migrations.applied == [] and all(
        p.action in ("unchanged", "absent") for p in again.policies)


async def test_skipped_migration_is_applied_once_timescaledb_is_on(
        ts_conn: asyncpg.Connection, timescale_dsn: str) -> None:
    await migrate.downgrade(ts_conn, 0)
    off = _settings(timescale_dsn)
    off = dataclasses.replace(off, database=dataclasses.replace(off.database, timescaledb="off"))
    plain = await bootstrap(ts_conn, off)
    assert plain.migrations.skipped == ["0003_timescale"] and plain.timescaledb is False
    assert [s.state for s in await migrate.status(ts_conn)] == ["applied", "applied", "skipped"]
    await ts_conn.execute(  # data written while the tables were plain
        "INSERT INTO candlesticks VALUES ('huobi', 'BTCUSDT', '1m', $1, 1, 1, 1, 1, 0, 0, 0)", T0)

    later = await bootstrap(ts_conn, _settings(timescale_dsn))
    assert later.migrations.applied == ["0003_timescale"] and later.timescaledb is True
    assert [s.state for s in await migrate.status(ts_conn)] == ["applied"] * 3
    assert await ts_conn.fetchval("SELECT count(*) FROM candlesticks") == 1  # migrate_data
    hyper = await ts_conn.fetchval("SELECT count(*) FROM timescaledb_information.hypertables "
                                   "WHERE hypertable_schema = 'public'")
    assert hyper == len(HYPERTABLES)


async def test_downgrade_zero_removes_everything(ts_conn: asyncpg.Connection) -> None:
    reverted = await migrate.downgrade(ts_conn, 0)
    assert reverted == ["0003_timescale", "0002_platform", "0001_market_data"]
    left = await ts_conn.fetch("SELECT table_name FROM information_schema.tables "
                               "WHERE table_schema = 'public'")
    assert [r["table_name"] for r in left] == []
    assert await ts_conn.fetchval("SELECT count(*) FROM timescaledb_information.hypertables") == 0
    jobs = await ts_conn.fetchval("SELECT count(*) FROM timescaledb_information.jobs "
                                  "WHERE hypertable_name IS NOT NULL")
    assert jobs == 0

"""Migrations against a real PostgreSQL (no TimescaleDB: 0003 is recorded as skipped)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import asyncpg
import pytest

from ingest.db import migrate
from ingest.errors import MigrationError

from .conftest import cli_env, error_lines, log_events, run_cli, spawn_cli

TABLES = {
    "candlesticks", "trades", "order_books", "market_metrics",
    "users", "api_keys", "portfolios", "positions", "orders", "portfolio_snapshots",
    "trade_executions", "audit_log", "security_events", "predictions", "model_performance",
}
SEED_RELATIONS = TABLES | {"market_data"}

UNIQUE_KEYS = {
    ("candlesticks", "u", ("exchange", "symbol", "interval", "timestamp")),
    ("trades", "u", ("exchange", "symbol", "trade_id", "timestamp")),
    ("order_books", "u", ("exchange", "symbol", "timestamp")),
    ("market_metrics", "u", ("metric_type", "metric_name", "timestamp")),
    ("users", "u", ("email",)),
    ("api_keys", "u", ("key_hash",)),
    ("positions", "u", ("portfolio_id", "symbol")),
    ("trade_executions", "p", ("id", "timestamp")),
    ("audit_log", "p", ("id", "timestamp")),
    ("security_events", "p", ("id", "timestamp")),
    ("users", "p", ("id",)),
    ("orders", "p", ("id",)),
}
INDEXES = {
    "idx_candlesticks_timestamp", "idx_trades_exchange_symbol_timestamp", "idx_trades_timestamp",
    "idx_order_books_timestamp", "idx_market_metrics_timestamp", "idx_users_email",
    "idx_users_active", "idx_portfolios_user_id", "idx_portfolios_active",
    "idx_positions_portfolio_id", "idx_positions_symbol", "idx_orders_portfolio_id",
    "idx_orders_symbol", "idx_orders_status", "idx_orders_created_at",
    "idx_portfolio_snapshots_portfolio_time", "idx_portfolio_snapshots_timestamp",
    "idx_trade_executions_portfolio_time", "idx_trade_executions_symbol_time",
    "idx_trade_executions_timestamp", "idx_audit_log_timestamp", "idx_security_events_timestamp",
}
# column → has a CHECK constraint (the writer's validation backed by the database)
CHECKED_COLUMNS = {
    ("candlesticks", c) for c in ("open", "high", "low", "close", "volume", "quote_volume",
                                  "trades_count")
} | {("trades", c) for c in ("price", "quantity", "quote_quantity")} | {
    ("market_metrics", "metric_type"), ("orders", "side"), ("orders", "quantity")}

_RELATIONS = """
SELECT table_name, table_type FROM information_schema.tables
WHERE table_schema = 'public'"""
_KEYS = """
SELECT c.conrelid::regclass::text AS tbl, c.contype::text AS kind,
       array_agg(a.attname::text ORDER BY k.ord) AS cols
FROM pg_constraint c
CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.contype IN ('u', 'p', 'c') AND c.connamespace = 'public'::regnamespace
GROUP BY c.oid, c.conrelid, c.contype"""


async def _relations(conn: asyncpg.Connection) -> dict[str, str]:
    return {r["table_name"]: r["table_type"] for r in await conn.fetch(_RELATIONS)}


async def test_upgrade_creates_the_schema(conn: asyncpg.Connection) -> None:
    report = await migrate.upgrade(conn)
    assert report.applied == ["0001_market_data", "0002_platform"]
    assert report.skipped == ["0003_timescale"]
    assert report.timescaledb is False

    relations = await _relations(conn)
    assert set(relations) == SEED_RELATIONS | {migrate.LEDGER}
    assert relations["market_data"] == "VIEW"
    assert sum(1 for name in SEED_RELATIONS if relations[name] == "BASE TABLE") == 15

    keys = {(r["tbl"], r["kind"], tuple(r["cols"])) for r in await conn.fetch(_KEYS)}
    assert keys >= UNIQUE_KEYS
    checked = {(tbl, col) for tbl, kind, cols in keys if kind == "c" for col in cols}
    assert checked >= CHECKED_COLUMNS
    indexes = {r["indexname"] for r in await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert indexes >= INDEXES
    # the market_metrics name is derived from metadata, never fed by hand
    generated = await conn.fetchval(
        "SELECT is_generated FROM information_schema.columns "
        "WHERE table_name = 'market_metrics' AND column_name = 'metric_name'")
    assert generated == "ALWAYS"


async def test_ledger_records_checksums_and_skips(conn: asyncpg.Connection) -> None:
    await migrate.upgrade(conn)
    rows = await conn.fetch("SELECT version, name, checksum, skipped, applied_at "
                            "FROM ingest_schema_migrations ORDER BY version")
    files = {m.version: m for m in migrate.discover()}
    assert [(r["version"], r["name"], r["skipped"]) for r in rows] == [
        (1, "market_data", False), (2, "platform", False), (3, "timescale", True)]
    for r in rows:
        assert r["checksum"] == files[r["version"]].checksum
        assert r["applied_at"] is not None


async def test_status_nothing_pending_after_upgrade(conn: asyncpg.Connection) -> None:
    before = await migrate.status(conn)
    assert [s.state for s in before] == ["pending", "pending", "pending"]
    assert before[2].requires_timescaledb
    await migrate.upgrade(conn)
    after = await migrate.status(conn)
    assert [(s.version, s.state) for s in after] == [(1, "applied"), (2, "applied"),
                                                     (3, "skipped")]
    assert not any(s.checksum_changed for s in after)
    again = await migrate.upgrade(conn)
    assert again.applied == [] and again.skipped == []


async def test_downgrade_zero_removes_everything(conn: asyncpg.Connection) -> None:
    await migrate.upgrade(conn)
    reverted = await migrate.downgrade(conn, 0)
    assert reverted == ["0003_timescale", "0002_platform", "0001_market_data"]
    assert await _relations(conn) == {}
    # and again on an empty database: nothing to do, no error
    assert await migrate.downgrade(conn, 0) == []


async def test_upgrade_downgrade_status_round_trip(conn: asyncpg.Connection) -> None:
    await migrate.upgrade(conn, target=1)
    assert set(await _relations(conn)) == {"candlesticks", "trades", "order_books",
                                           "market_metrics", migrate.LEDGER}
    assert [s.state for s in await migrate.status(conn)] == ["applied", "pending", "pending"]
    await migrate.upgrade(conn)
    assert await migrate.downgrade(conn, 1) == ["0003_timescale", "0002_platform"]
    assert [s.state for s in await migrate.status(conn)] == ["applied", "pending", "pending"]
    assert "users" not in await _relations(conn)
    report = await migrate.upgrade(conn)
    assert report.applied == ["0002_platform"] and report.skipped == ["0003_timescale"]
    assert set(await _relations(conn)) == SEED_RELATIONS | {migrate.LEDGER}


async def test_unknown_target_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(MigrationError, match="no migration with version 42"):
        await migrate.upgrade(conn, target=42)


def _copy_schema(tmp_path: Path) -> Path:
    schema = tmp_path / "schema"
    shutil.copytree(migrate.schema_dir(), schema)
    return schema


async def test_changed_applied_file_is_refused_before_anything(
        conn: asyncpg.Connection, tmp_path: Path) -> None:
    schema = _copy_schema(tmp_path)
    await migrate.upgrade(conn, directory=schema)
    (schema / "0004_extra.up.sql").write_text("CREATE TABLE extra (id int);\n")
    changed = schema / "0001_market_data.up.sql"
    changed.write_text(changed.read_text() + "\n-- an edit after the fact\n")

    with pytest.raises(MigrationError) as info:
        await migrate.upgrade(conn, directory=schema)
    assert str(changed) in str(info.value)
    assert "extra" not in await _relations(conn)  # nothing applied
    flagged = {s.version: s.checksum_changed for s in await migrate.status(conn, directory=schema)}
    assert flagged == {1: True, 2: False, 3: False, 4: False}


def test_changed_file_refused_by_the_cli(migrated: str, tmp_path: Path) -> None:
    schema = _copy_schema(tmp_path)
    changed = schema / "0002_platform.up.sql"
    changed.write_text(changed.read_text().replace("-- The seed's indexes.", "-- indexes"))
    env = cli_env(INGEST_SCHEMA_DIR=str(schema))
    proc = run_cli("db", "upgrade", "--database-url", migrated, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "0002_platform.up.sql" in lines[0], proc.stderr
    status = run_cli("db", "status", "--database-url", migrated, cwd=tmp_path, env=env)
    assert status.returncode == 0
    assert "[!] 0002_platform" in status.stdout and "checksum mismatch" in status.stdout


def test_plain_postgres_skips_timescale_and_warns_once(database_url: str, tmp_path: Path) -> None:
    proc = run_cli("db", "upgrade", "--database-url", database_url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped (needs TimescaleDB): 0003_timescale" in proc.stdout
    warnings = [e for e in log_events(proc) if "TimescaleDB not in use" in str(e["event"])]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert warnings[0]["skipped_migrations"] == ["0003_timescale"]


def test_require_timescaledb_without_it_fails_clearly(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "ingest.toml"
    config.write_text('[database]\ntimescaledb = "require"\n')
    proc = run_cli("db", "upgrade", "--config", str(config), "--database-url", database_url,
                   cwd=tmp_path)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "timescaledb" in lines[0] and "'require'" in lines[0]


async def test_concurrent_upgrades_apply_each_migration_once(
        database_url: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    procs = [spawn_cli("db", "upgrade", "--database-url", database_url, cwd=tmp_path)
             for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    events = [json.loads(line)["event"] for out, err in outputs
              for line in (out + err).splitlines() if line.startswith("{")]
    assert events.count("migration applied") == 2  # 0001 and 0002, by one of the two
    assert events.count("migration skipped (needs TimescaleDB)") == 1
    assert sum("nothing to apply" in out for out, _ in outputs) == 1
    rows = await conn.fetch("SELECT version FROM ingest_schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == [1, 2, 3]


def test_sql_prints_a_migration(tmp_path: Path) -> None:
    up = run_cli("db", "sql", "1", cwd=tmp_path)
    assert up.returncode == 0 and "CREATE TABLE candlesticks" in up.stdout
    down = run_cli("db", "sql", "3", "--down", cwd=tmp_path)
    assert down.returncode == 0 and "DROP MATERIALIZED VIEW" in down.stdout
    missing = run_cli("db", "sql", "99", cwd=tmp_path)
    assert missing.returncode == 2  # a bad argument
    assert error_lines(missing) == [
        f"ingest db: error: no migration with version 99 in {migrate.schema_dir()}"]
    assert migrate.sql(2).startswith("-- The trading platform schema")


def test_discover_orders_by_number_and_reads_the_marker(tmp_path: Path) -> None:
    (tmp_path / "0010_later.up.sql").write_text("SELECT 1;\n")
    (tmp_path / "0002_second.up.sql").write_text("-- ingest:requires timescaledb\nSELECT 1;\n")
    (tmp_path / "0002_second.down.sql").write_text("SELECT 1;\n")
    found = migrate.discover(tmp_path)
    assert [(m.version, m.requires_timescaledb, m.down_path is not None) for m in found] == [
        (2, True, True), (10, False, False)]
    with pytest.raises(MigrationError, match="no down step"):
        found[1].down_sql()
    (tmp_path / "0010_clash.up.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="version 10"):
        migrate.discover(tmp_path)


async def test_a_failing_migration_rolls_back_alone(conn: asyncpg.Connection,
                                                    tmp_path: Path) -> None:
    schema = _copy_schema(tmp_path)
    (schema / "0004_broken.up.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT no_such_function();\n")
    with pytest.raises(MigrationError, match=r"0004_broken\.up\.sql failed: UndefinedFunctionError"):
        await migrate.upgrade(conn, directory=schema)
    relations = await _relations(conn)
    assert "half_done" not in relations and "candlesticks" in relations  # 0001-0003 stay
    states = {s.version: s.state for s in await migrate.status(conn, directory=schema)}
    assert states == {1: "applied", 2: "applied", 3: "skipped", 4: "pending"}

"""``ingest db …`` as an operator runs it."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from ingest.db import stats as db_stats
from ingest.db.migrate import LEDGER

from .conftest import log_events, run_cli

T0 = datetime(2024, 3, 1, tzinfo=UTC)


async def _populate(conn: asyncpg.Connection) -> None:
    candles = [(ex, sym, iv, T0 + timedelta(minutes=i), Decimal("10.5"), Decimal("11"),
                Decimal("10"), Decimal("10.7"), Decimal("3"), None, None)
               for ex, sym, iv, n in (("binance", "BTCUSDT", "1m", 3), ("binance", "BTCUSDT", "5m", 1),
                                      ("huobi", "ETHUSDT", "1m", 2))
               for i in range(n)]
    await conn.executemany(
        "INSERT INTO candlesticks VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", candles)
    trades = [("gateio", "BTCUSDT", i, T0 + timedelta(seconds=i), Decimal("1"), Decimal("2"),
               None, False) for i in range(4)]
    await conn.executemany("INSERT INTO trades VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", trades)
    await conn.execute("INSERT INTO order_books VALUES ('binance', 'ETHUSDT', $1, '[]', '[]', 9)",
                       T0)


async def test_stats_json_on_a_populated_database(migrated: str, conn: asyncpg.Connection,
                                                  tmp_path: Path) -> None:
    await _populate(conn)
    proc = run_cli("db", "stats", "--json", "--database-url", migrated, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert out["timescaledb_version"] is None
    tables = {t["table"]: t for t in out["tables"]}
    assert set(tables) == set(db_stats.TABLES)
    assert (tables["candlesticks"]["rows"], tables["trades"]["rows"],
            tables["order_books"]["rows"], tables["users"]["rows"]) == (6, 4, 1, 0)
    assert all(t["rows_exact"] for t in tables.values())
    assert tables["candlesticks"]["total_bytes"] > 0 and tables["trades"]["index_bytes"] > 0
    fresh = {(f["table"], f["exchange"], f["symbol"], f["interval"]): f["newest"]
             for f in out["freshness"]}
    assert fresh == {
        ("candlesticks", "binance", "BTCUSDT", "1m"): (T0 + timedelta(minutes=2)).isoformat(),
        ("candlesticks", "binance", "BTCUSDT", "5m"): T0.isoformat(),
        ("candlesticks", "huobi", "ETHUSDT", "1m"): (T0 + timedelta(minutes=1)).isoformat(),
        ("trades", "gateio", "BTCUSDT", None): (T0 + timedelta(seconds=3)).isoformat(),
        ("order_books", "binance", "ETHUSDT", None): T0.isoformat(),
    }
    text = run_cli("db", "stats", "--database-url", migrated, cwd=tmp_path)
    assert text.returncode == 0 and "plain PostgreSQL" in text.stdout
    assert "huobi" in text.stdout and "candlesticks" in text.stdout


async def test_stats_estimates_big_tables_unless_exact(migrated: str,
                                                       conn: asyncpg.Connection) -> None:
    await _populate(conn)
    await conn.execute("ANALYZE")
    old = db_stats.EXACT_BELOW_ROWS
    db_stats.EXACT_BELOW_ROWS = 0  # pretend every table is big
    try:
        estimated = await db_stats.collect_stats(conn)
        exact = await db_stats.collect_stats(conn, exact=True)
    finally:
        db_stats.EXACT_BELOW_ROWS = old
    by_name = {t.table: t for t in estimated.tables}
    assert by_name["candlesticks"].rows_exact is False and by_name["candlesticks"].rows == 6
    assert all(t.rows_exact for t in exact.tables)


def test_status_lists_applied_and_pending(database_url: str, tmp_path: Path) -> None:
    before = run_cli("db", "status", "--database-url", database_url, cwd=tmp_path)
    assert before.returncode == 0
    assert "[ ] 0001_market_data" in before.stdout and "0 applied, 0 skipped, 3 pending" in before.stdout
    up = run_cli("db", "upgrade", "--to", "1", "--database-url", database_url, cwd=tmp_path)
    assert up.returncode == 0 and "applied: 0001_market_data" in up.stdout
    mid = run_cli("db", "status", "--database-url", database_url, cwd=tmp_path)
    assert "[X] 0001_market_data" in mid.stdout and "[ ] 0002_platform" in mid.stdout
    assert "[ ] 0003_timescale" in mid.stdout and "needs TimescaleDB" in mid.stdout
    run_cli("db", "upgrade", "--database-url", database_url, cwd=tmp_path)
    after = run_cli("db", "status", "--database-url", database_url, cwd=tmp_path)
    assert after.returncode == 0
    assert "[-] 0003_timescale" in after.stdout and "2 applied, 1 skipped, 0 pending" in after.stdout


async def test_downgrade_via_cli(migrated: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    missing = run_cli("db", "downgrade", "--database-url", migrated, cwd=tmp_path)
    assert missing.returncode == 2 and "VERSION" in missing.stderr
    proc = run_cli("db", "downgrade", "0", "--database-url", migrated, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "reverted: 0003_timescale, 0002_platform, 0001_market_data" in proc.stdout
    left = await conn.fetchval("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_schema = 'public'")
    assert left == 0


async def test_reset_needs_yes(migrated: str, conn: asyncpg.Connection, tmp_path: Path) -> None:
    await _populate(conn)
    refused = run_cli("db", "reset", "--database-url", migrated, cwd=tmp_path)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert await conn.fetchval("SELECT count(*) FROM candlesticks") == 6
    done = run_cli("db", "reset", "--yes", "--database-url", migrated, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert await conn.fetchval("SELECT count(*) FROM candlesticks") == 0
    assert await conn.fetchval(f"SELECT count(*) FROM {LEDGER}") == 3


async def test_init_with_sample_data(database_url: str, conn: asyncpg.Connection,
                                     tmp_path: Path) -> None:
    for _ in range(2):  # idempotent
        proc = run_cli("db", "init", "--with-sample-data", "--database-url", database_url,
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert "sample data: 5 candlesticks, 4 market_metrics" in proc.stdout
    assert await conn.fetchval("SELECT count(*) FROM candlesticks") == 5
    assert await conn.fetchval("SELECT count(*) FROM market_metrics") == 4
    view = await conn.fetchrow("SELECT * FROM market_data WHERE exchange = 'binance' "
                               "AND symbol = 'ETHUSDT'")
    assert view["close_price"] == Decimal("2354.31") and view["vwap"] > 0


# ---- the embedded cluster (no database configured) ---------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    # world-readable: the embedded server runs as the postgres user when tests run as root
    tmp = Path(tempfile.mkdtemp(prefix="ingest-test-embedded-"))
    tmp.chmod(0o755)
    try:
        yield tmp
    finally:
        pgdata = tmp / ".ingest" / "pgdata" / "pgdata"
        if (pgdata / "postmaster.pid").exists():  # a failed test must not leave a server
            from ingest.db.embedded import EmbeddedPostgres

            EmbeddedPostgres(data_dir=pgdata.parent).stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)


def test_embedded_cluster_when_no_database_is_configured(workdir: Path) -> None:
    first = run_cli("db", "upgrade", cwd=workdir)
    assert first.returncode == 0, first.stderr
    events = {str(e["event"]): e for e in log_events(first)}
    using = events["using the embedded PostgreSQL (no database URL configured)"]
    assert str(using["data_dir"]).startswith(str(workdir / ".ingest" / "pgdata"))
    password = (workdir / ".ingest" / "pgdata" / "password").read_text().strip()
    port = int((workdir / ".ingest" / "pgdata" / "port").read_text())
    assert using["port"] == port
    assert password not in first.stdout + first.stderr
    assert "embedded PostgreSQL stopped" in events
    assert not (workdir / ".ingest" / "pgdata" / "pgdata" / "postmaster.pid").exists()

    # someone else took the remembered port meanwhile: pick another, keep working
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        again = run_cli("db", "status", cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert "2 applied, 1 skipped, 0 pending" in again.stdout  # same cluster, same data
    new_port = int((workdir / ".ingest" / "pgdata" / "port").read_text())
    assert new_port != port
    assert [e["port"] for e in log_events(again) if "port" in e] == [new_port]


async def test_embedded_cluster_is_left_running_while_another_process_uses_it(
        workdir: Path) -> None:
    from structlog.testing import capture_logs

    from ingest.db.embedded import EmbeddedPostgres
    from ingest.db.local import database_settings
    from ingest.settings import parse_settings

    settings = parse_settings({"database": {"embedded_dir": str(workdir / "pg")}}, "test")
    with capture_logs() as logs:
        async with database_settings(settings) as resolved:
            other = await asyncpg.connect(resolved.database.url)  # "another ingest process"
    try:
        assert any(e["event"] == "embedded PostgreSQL left running: other processes use it"
                   and e["sessions"] == 1 for e in logs)
        assert await other.fetchval("SELECT 1") == 1  # its database is still there
    finally:
        await other.close()
        EmbeddedPostgres(data_dir=workdir / "pg").stop("fast")


def test_unusable_embedded_dir_is_one_line(workdir: Path) -> None:
    config = workdir / "ingest.toml"
    config.write_text('[database]\nembedded_dir = "/proc/no/such/dir"\n')
    result = run_cli("db", "status", "--config", str(config), cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "database.embedded_dir: cannot use '/proc/no/such/dir'" in line

"""Fixtures for the backfill tests: the simulator's REST on a free port (ccxt pointed at it
through the settings' rest_url), settings for it, and a real database with the schema."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog

from ingest.backfill import Backfiller
from ingest.backfill_plan import Job
from ingest.backfill_progress import Progress, Summary
from ingest.db.bootstrap import bootstrap
from ingest.db.pool import connect_pool
from ingest.settings import Settings, parse_settings
from ingest.sim import Simulator, start_simulator
from ingest.sink import Sink

SYMBOLS = ("BTC/USDT", "ETH/USDT")
EXCHANGES = ("binance", "gateio", "huobi")
# A fixed day in the past: the simulator's history is deterministic for any range.
DAY_MS = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
FAST_RATE_MS = 1.0  # ccxt's rateLimit in tests: the simulator does not enforce limits

SIM_OPTS: dict[str, Any] = {
    "seed": 11, "symbols": SYMBOLS, "trades_per_minute": 120, "tick_s": 0.02,
    "kline_interval_s": 0.2, "book_interval_s": 0.05, "binance_max_msgs_per_s": 50,
}


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Tests that run the CLI let it configure logging onto a captured stream, which pytest
    closes afterwards: put the defaults back so later log lines have somewhere to go."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = await start_simulator("127.0.0.1", 0, **SIM_OPTS)
    try:
        yield simulator
    finally:
        await simulator.stop()


def settings_data(sim: Simulator, database_url: str, tmp_path: Path,
                  **exchange: Any) -> dict[str, Any]:
    endpoints = sim.endpoints()
    return {
        "database": {"url": database_url, "sslmode": "disable"},
        "writer": {"spool_dir": str(tmp_path / "spool"), "flush_interval_ms": 20,
                   "shutdown_budget_s": 5.0},
        "backfill": {"request_timeout_s": 5.0, "gap_repair_lookback_h": 1.0},
        "exchanges": {
            name: {"rest_url": endpoints[name]["rest_url"], "symbols": list(SYMBOLS),
                   "candle_intervals": ["1m"], "channels": ["candles", "trades"], **exchange}
            for name in EXCHANGES
        },
    }


@pytest.fixture
def settings(sim: Simulator, database_url: str, tmp_path: Path) -> Settings:
    return parse_settings(settings_data(sim, database_url, tmp_path), "tests/backfill")


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """The same settings as TOML, for tests that run the CLI."""
    lines = []
    for section in ("writer", "backfill"):
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in data[section].items())
    for name, ex in data["exchanges"].items():
        lines.append(f"[exchanges.{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in ex.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await connect_pool(settings.database, min_size=1, max_size=4)
    await bootstrap(p, settings)
    try:
        yield p
    finally:
        await p.close()


RunBackfill = Callable[..., Awaitable[Summary]]


@pytest.fixture
def run_backfill(settings: Settings, pool: asyncpg.Pool) -> RunBackfill:
    """Run jobs with a fresh sink (as a command would) and return the summary."""

    async def run(jobs: Sequence[Job], *, progress: Progress | None = None,
                  settings_: Settings | None = None, **kwargs: Any) -> Summary:
        s = settings_ or settings
        async with Sink(pool, s.writer) as sink, Backfiller(
                s, sink, pool, rate_limit_ms=FAST_RATE_MS, progress=progress, **kwargs) as bf:
            return await bf.run(jobs)

    return run


async def candle_rows(pool: asyncpg.Pool, exchange: str, symbol: str,
                      interval: str = "1m") -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM candlesticks WHERE exchange = $1 AND symbol = $2 AND interval = $3 "
        "ORDER BY timestamp", exchange, symbol, interval)


async def trade_rows(pool: asyncpg.Pool, exchange: str, symbol: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM trades WHERE exchange = $1 AND symbol = $2 ORDER BY timestamp, trade_id",
        exchange, symbol)


def with_writer(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, writer=dataclasses.replace(settings.writer, **changes))


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)

"""Backfill against the simulator's REST (ccxt pointed at it) into a real PostgreSQL: ranges
stored completely and exactly once, equal to the simulator's deterministic history; reruns
add nothing; an interrupted run resumes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from ingest import backfill_sources
from ingest.backfill import Backfiller
from ingest.backfill_plan import CandleJob, TradeJob, align_up
from ingest.backfill_progress import Progress
from ingest.settings import Settings
from ingest.sim import Simulator
from ingest.sim.gateio import global_id
from ingest.sink import Sink

from .conftest import DAY_MS, FAST_RATE_MS, HOUR_MS, MINUTE_MS, RunBackfill, candle_rows, ms, trade_rows

WINDOWS = 1200  # 20 hours of 1m candles: two pages on every exchange


def expected_candle(sim: Simulator, exchange: str, start: int) -> tuple[Decimal, ...]:
    model = sim.model(exchange, "BTC/USDT")
    spec = model.spec
    s = model.summary(start, start + MINUTE_MS)
    return tuple(Decimal(x) for x in (spec.price_text(s.open), spec.price_text(s.high),
                                      spec.price_text(s.low), spec.price_text(s.close),
                                      spec.qty_text(s.volume), spec.quote_text(s.quote_volume)))


@pytest.mark.parametrize("exchange", ["binance", "gateio", "huobi"])
async def test_candle_range_stored_completely_and_once(
    sim: Simulator, pool: asyncpg.Pool, run_backfill: RunBackfill, exchange: str
) -> None:
    start, end = DAY_MS + 7 * MINUTE_MS, DAY_MS + (7 + WINDOWS) * MINUTE_MS
    job = CandleJob(exchange, "BTC/USDT", "1m", start, end)
    summary = await run_backfill([job])
    assert not summary.errors
    assert summary.table_stats["candlesticks"]["rows_written"] == WINDOWS
    rows = await candle_rows(pool, exchange, "BTCUSDT")
    assert [ms(r["timestamp"]) for r in rows] == list(range(start, end, MINUTE_MS))
    for r in rows:
        got = (r["open"], r["high"], r["low"], r["close"], r["volume"], r["quote_volume"])
        assert got == expected_candle(sim, exchange, ms(r["timestamp"]))
    counts = [r["trades_count"] for r in rows]
    if exchange == "gateio":
        assert set(counts) == {None}  # Gate sends no trade count
    else:
        model = sim.model(exchange, "BTC/USDT")
        assert counts == [model.summary(t, t + MINUTE_MS).count for t in range(start, end, MINUTE_MS)]

    # A rerun asks for nothing and stores nothing: it resumes after the newest stored row.
    again = await run_backfill([job])
    assert again.results[0].pages == 0 and again.table_stats["candlesticks"]["rows_written"] == 0
    # Without the resume shortcut every row comes again and is absorbed as a duplicate.
    forced = await run_backfill([job], resume=False)
    stats = forced.table_stats["candlesticks"]
    assert (stats["rows_written"], stats["rows_updated"], stats["duplicates_skipped"]) == \
        (0, 0, WINDOWS)
    assert len(await candle_rows(pool, exchange, "BTCUSDT")) == WINDOWS


async def test_open_candle_at_end_is_not_stored(pool: asyncpg.Pool,
                                                run_backfill: RunBackfill) -> None:
    now_ms = int(time.time() * 1000)
    job = CandleJob("binance", "ETH/USDT", "1m", now_ms - 10 * MINUTE_MS, now_ms)
    # An --end inside a window: that window is not complete at --end, so it is left out.
    partial = CandleJob("binance", "ETH/USDT", "1h", DAY_MS, DAY_MS + 5 * HOUR_MS + 30 * MINUTE_MS)
    summary = await run_backfill([job, partial])
    assert not summary.errors
    rows = await candle_rows(pool, "binance", "ETHUSDT")
    opens = [ms(r["timestamp"]) for r in rows]
    first = align_up(now_ms - 10 * MINUTE_MS, "1m")
    assert opens == list(range(first, first + len(opens) * MINUTE_MS, MINUTE_MS))
    # Only windows closed (2 s settle margin) when the job ran: the current one is open.
    assert len(opens) in (8, 9) and opens[-1] + MINUTE_MS <= time.time() * 1000 - 2_000
    hours = await candle_rows(pool, "binance", "ETHUSDT", "1h")
    assert [ms(r["timestamp"]) for r in hours] == [DAY_MS + i * HOUR_MS for i in range(5)]


async def test_binance_trades_by_from_id_equal_the_model(
    sim: Simulator, pool: asyncpg.Pool, run_backfill: RunBackfill
) -> None:
    start, end = DAY_MS + 5_500, DAY_MS + 40 * MINUTE_MS + 123
    summary = await run_backfill([TradeJob("binance", "BTC/USDT", start, end)])
    assert not summary.errors
    model = sim.model("binance", "BTC/USDT")
    want = model.trades_between(start, end)
    rows = await trade_rows(pool, "binance", "BTCUSDT")
    assert [r["trade_id"] for r in rows] == [t.id for t in want]  # raw ids, contiguous
    assert [ms(r["timestamp"]) for r in rows] == [t.ts_ms for t in want]
    assert [r["is_buyer_maker"] for r in rows] == [t.buyer_maker for t in want]
    assert all(r["quote_quantity"] == r["price"] * r["quantity"] for r in rows)


async def test_binance_first_trade_found_by_binary_search_after_a_quiet_hour(
    sim: Simulator, pool: asyncpg.Pool, settings: Settings
) -> None:
    model = sim.model("binance", "BTC/USDT")
    async with Sink(pool, settings.writer) as sink, Backfiller(
            settings, sink, pool, rate_limit_ms=FAST_RATE_MS) as bf:
        source = await bf.source("binance")
        native = "BTCUSDT"
        found = await source._search_first_id(native, DAY_MS + 1234, DAY_MS + HOUR_MS)  # type: ignore[attr-defined]
    assert found == model.trades_between(DAY_MS + 1234, DAY_MS + HOUR_MS, 1)[0].id


async def test_gate_trades_split_windows_beyond_the_page_cap(
    sim: Simulator, pool: asyncpg.Pool, run_backfill: RunBackfill,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Make Gate's page cap bite at 3 pages (the real cap, 101 pages, is too slow to reach).
    monkeypatch.setattr(backfill_sources, "GATE_MAX_OFFSET", 2000)
    start, end = DAY_MS + 30_000, DAY_MS + HOUR_MS
    summary = await run_backfill([TradeJob("gateio", "BTC/USDT", start, end)])
    assert not summary.errors and not summary.unserved
    lm = sim.feeds["gateio"].markets["BTCUSDT"]
    want = lm.model.trades_between(start, end)
    rows = await trade_rows(pool, "gateio", "BTCUSDT")
    assert len(rows) == len(want) > 3000
    assert sorted(r["trade_id"] for r in rows) == sorted(global_id(lm, t.id) for t in want)


async def test_htx_trades_older_than_its_latest_2000_are_reported_unserved(
    sim: Simulator, pool: asyncpg.Pool, run_backfill: RunBackfill
) -> None:
    now_ms = int(time.time() * 1000)
    summary = await run_backfill([TradeJob("huobi", "BTC/USDT", now_ms - HOUR_MS, now_ms)])
    assert not summary.errors
    [(job, gap)] = summary.unserved
    assert job.exchange == "huobi" and gap.start_ms == now_ms - HOUR_MS
    rows = await trade_rows(pool, "huobi", "BTCUSDT")
    assert 1900 <= len(rows) <= 2000  # what HTX could serve: its latest 2000, in range
    assert ms(rows[0]["timestamp"]) + 1 == gap.end_ms
    assert any("UNSERVED huobi BTC/USDT trades" in line for line in summary.lines())


class CancelAfterRows(Progress):
    """Cancels the running backfill once a job has handed ``rows`` rows to the writer."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows
        self.task: asyncio.Task[object] | None = None

    def update(self, key: str, done: float, rows: int) -> None:
        super().update(key, done, rows)
        if rows >= self.rows and self.task is not None:
            self.task.cancel()


async def test_interrupted_run_resumes(
    sim: Simulator, pool: asyncpg.Pool, settings: Settings, run_backfill: RunBackfill
) -> None:
    candles = CandleJob("binance", "BTC/USDT", "1m", DAY_MS, DAY_MS + 3000 * MINUTE_MS)
    trades = TradeJob("binance", "BTC/USDT", DAY_MS, DAY_MS + HOUR_MS)
    stopper = CancelAfterRows(2000)
    task = asyncio.create_task(run_backfill([candles, trades], progress=stopper))
    stopper.task = task
    with pytest.raises(asyncio.CancelledError):
        await task
    # Whatever the writer had accepted is stored (or spooled and replayed by the next sink).
    partial_candles = len(await candle_rows(pool, "binance", "BTCUSDT"))
    assert 0 < partial_candles < 3000

    summary = await run_backfill([candles, trades])
    assert not summary.errors
    resumed = {type(r.job).__name__: r for r in summary.results}
    assert resumed["CandleJob"].resumed_from_ms is not None
    assert resumed["CandleJob"].pages < 3  # not from the start again
    rows = await candle_rows(pool, "binance", "BTCUSDT")
    assert [ms(r["timestamp"]) for r in rows] == list(range(DAY_MS, DAY_MS + 3000 * MINUTE_MS,
                                                            MINUTE_MS))
    want = sim.model("binance", "BTC/USDT").trades_between(DAY_MS, DAY_MS + HOUR_MS)
    assert [r["trade_id"] for r in await trade_rows(pool, "binance", "BTCUSDT")] == \
        [t.id for t in want]


@pytest.mark.parametrize("exchange", ["binance", "gateio"])
async def test_rows_stored_further_on_do_not_hide_the_hole_before_them(
    sim: Simulator, pool: asyncpg.Pool, run_backfill: RunBackfill, exchange: str
) -> None:
    # The live stream (here: a first backfill of the last minutes) stored the end of the
    # range; a backfill of the whole range must fetch everything before it.
    start, end = DAY_MS, DAY_MS + 120 * MINUTE_MS
    late = DAY_MS + 100 * MINUTE_MS
    assert not (await run_backfill([CandleJob(exchange, "BTC/USDT", "1m", late, end),
                                    TradeJob(exchange, "BTC/USDT", late, end)])).errors
    summary = await run_backfill([CandleJob(exchange, "BTC/USDT", "1m", start, end),
                                  TradeJob(exchange, "BTC/USDT", start, end)])
    assert not summary.errors
    assert all(r.resumed_from_ms is None for r in summary.results)
    rows = await candle_rows(pool, exchange, "BTCUSDT")
    assert [ms(r["timestamp"]) for r in rows] == list(range(start, end, MINUTE_MS))
    want = sim.model(exchange, "BTC/USDT").trades_between(start, end)
    got = await trade_rows(pool, exchange, "BTCUSDT")
    assert len(got) == len(want) and [ms(r["timestamp"]) for r in got] == [t.ts_ms for t in want]


async def test_resume_stops_at_a_hole_inside_the_stored_run(
    sim: Simulator, pool: asyncpg.Pool, run_backfill: RunBackfill
) -> None:
    start, end = DAY_MS, DAY_MS + 60 * MINUTE_MS
    job = CandleJob("binance", "BTC/USDT", "1m", start, end)
    trades = TradeJob("binance", "BTC/USDT", start, end)
    assert not (await run_backfill([job, trades])).errors
    hole = (DAY_MS + 20 * MINUTE_MS, DAY_MS + 25 * MINUTE_MS)
    async with pool.acquire() as conn:
        for table in ("candlesticks", "trades"):
            await conn.execute(f"DELETE FROM {table} WHERE timestamp >= $1 AND timestamp < $2",
                               *(datetime.fromtimestamp(t / 1000, UTC) for t in hole))
    summary = await run_backfill([job, trades])
    assert not summary.errors
    resumed = {type(r.job).__name__: r.resumed_from_ms for r in summary.results}
    assert resumed["CandleJob"] == hole[0]
    assert resumed["TradeJob"] is not None and resumed["TradeJob"] < hole[0]
    rows = await candle_rows(pool, "binance", "BTCUSDT")
    assert [ms(r["timestamp"]) for r in rows] == list(range(start, end, MINUTE_MS))
    want = sim.model("binance", "BTC/USDT").trades_between(start, end)
    assert [r["trade_id"] for r in await trade_rows(pool, "binance", "BTCUSDT")] == \
        [t.id for t in want]

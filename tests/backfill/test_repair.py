"""Gap repair: the service's GapRepairer after a simulated downtime, and ``ingest gaps``
finding a window cut out of stored data and filling it with ``--repair``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import pytest

from ingest import backfill_store as store
from ingest import cli
from ingest.backfill import GapRepairer
from ingest.backfill_plan import CandleJob, TradeJob
from ingest.settings import Settings
from ingest.sim import Simulator
from ingest.sink import Sink

from .conftest import (
    DAY_MS,
    FAST_RATE_MS,
    MINUTE_MS,
    RunBackfill,
    candle_rows,
    ms,
    settings_data,
    trade_rows,
    write_config,
)


async def test_gap_repairer_fills_what_a_downtime_missed(
    sim: Simulator, pool: asyncpg.Pool, settings: Settings, run_backfill: RunBackfill
) -> None:
    now = int(time.time() * 1000)
    down_from, up_at = now - 40 * MINUTE_MS, now - 20 * MINUTE_MS  # the stream ran, then died
    stored = [CandleJob("binance", "BTC/USDT", "1m", down_from, up_at),
              TradeJob("binance", "BTC/USDT", down_from, up_at),
              TradeJob("gateio", "BTC/USDT", down_from, up_at)]
    assert not (await run_backfill(stored)).errors
    before = len(await trade_rows(pool, "binance", "BTCUSDT"))

    async with Sink(pool, settings.writer) as sink:
        repairer = GapRepairer(settings, sink, pool, rate_limit_ms=FAST_RATE_MS)
        try:
            assert await repairer.plan("binance", "ETH/USDT", time.time()) == []  # never streamed
            results = await repairer.repair_since_last("binance", ["BTC/USDT"])
            assert results and not any(r.error for r in results)
            # The connector's hook returns at once; the repair runs in the background.
            assert repairer.on_reconnect("gate", ["BTC/USDT"]) is None
            await repairer.wait_idle()
            await sink.flush()
            assert repairer.stats()["failed_jobs"] == 0
        finally:
            await repairer.close()

    end = int(time.time() * 1000)
    rows = await candle_rows(pool, "binance", "BTCUSDT")
    opens = [ms(r["timestamp"]) for r in rows]
    first = (down_from + MINUTE_MS - 1) // MINUTE_MS * MINUTE_MS
    assert opens[0] == first  # nothing before the first stored candle was invented
    assert opens == list(range(first, opens[-1] + MINUTE_MS, MINUTE_MS))  # no holes
    assert opens[-1] >= (end - 2_000) // MINUTE_MS * MINUTE_MS - 2 * MINUTE_MS
    trades = await trade_rows(pool, "binance", "BTCUSDT")
    assert len(trades) > before + 2000
    assert await store.trade_id_gaps(pool, "binance", "BTCUSDT", 0, end + 1) == []
    assert ms(trades[-1]["timestamp"]) > end - 10_000
    gate = await trade_rows(pool, "gateio", "BTCUSDT")
    lm = sim.feeds["gateio"].markets["BTCUSDT"]
    first_gate = ms(gate[0]["timestamp"])
    want = lm.model.trades_between(first_gate, ms(gate[-1]["timestamp"]) + 1)
    assert len(gate) == len(want) and ms(gate[-1]["timestamp"]) > end - 10_000


async def cli_main(argv: list[str]) -> int:
    # The CLI runs its own event loop (asyncio.run): give it a thread.
    return await asyncio.to_thread(cli.main, argv)


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    return [obj for obj in lines if "event" not in obj]  # not a log line


async def test_gaps_command_finds_a_deleted_window_and_repairs_it(
    sim: Simulator, pool: asyncpg.Pool, settings: Settings, database_url: str, tmp_path: Path,
    run_backfill: RunBackfill, capsys: pytest.CaptureFixture[str],
) -> None:
    start, end = DAY_MS, DAY_MS + 120 * MINUTE_MS
    jobs = [CandleJob("binance", "BTC/USDT", "1m", start, end),
            TradeJob("binance", "BTC/USDT", start, DAY_MS + 30 * MINUTE_MS)]
    assert not (await run_backfill(jobs)).errors
    complete_candles = await candle_rows(pool, "binance", "BTCUSDT")
    complete_trades = await trade_rows(pool, "binance", "BTCUSDT")
    cut_from = DAY_MS + 10 * MINUTE_MS
    await pool.execute("DELETE FROM candlesticks WHERE timestamp >= $1 AND timestamp < $2",
                       complete_candles[10]["timestamp"], complete_candles[20]["timestamp"])
    ids = [t["trade_id"] for t in complete_trades]
    await pool.execute("DELETE FROM trades WHERE trade_id BETWEEN $1 AND $2", ids[500], ids[899])
    assert ms(complete_candles[10]["timestamp"]) == cut_from

    config = write_config(tmp_path / "ingest.toml", settings_data(sim, database_url, tmp_path))
    base = ["gaps", "--config", str(config), "--database-url", database_url, "--exchange",
            "binance", "--symbol", "BTC/USDT", "--interval", "1m", "--start", "2024-01-01",
            "--end", "2024-01-01T02:00:00Z", "--format", "json", "--rate-limit-ms", "1"]
    capsys.readouterr()
    assert await cli_main(base) == 0
    (report,) = json_lines(capsys)
    assert report["candles"]["1m"] == [{"first_open": "2024-01-01T00:10:00Z",
                                        "last_open": "2024-01-01T00:19:00Z", "windows": 10}]
    assert report["trade_ids"] == [{"first_id": ids[500], "last_id": ids[899], "count": 400,
                                    "after": report["trade_ids"][0]["after"],
                                    "before": report["trade_ids"][0]["before"]}]

    assert await cli_main([*base, "--repair"]) == 0
    stages = json_lines(capsys)
    after = stages[-1]
    assert after["stage"] == "still missing after repair"
    assert after["candles"]["1m"] == [] and after["trade_ids"] == []
    repaired = await candle_rows(pool, "binance", "BTCUSDT")
    assert [tuple(r) for r in repaired] == [tuple(r) for r in complete_candles]
    assert [tuple(r) for r in await trade_rows(pool, "binance", "BTCUSDT")] == \
        [tuple(r) for r in complete_trades]


async def test_startup_repair_covers_only_this_instances_shard() -> None:
    from ingest.feeds import shard_of
    from ingest.settings import parse_settings

    many = parse_settings({"exchanges": {
        name: {"symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT"]}
        for name in ("binance", "gateio", "huobi")}}, "t")
    scheduled: dict[int, list[tuple[str, str]]] = {}
    for k in range(2):
        repairer = GapRepairer(many, None, None)  # type: ignore[arg-type]  # never runs a job
        keys: list[tuple[str, str]] = []
        repairer._schedule = lambda key, at, keys=keys: keys.append(key)  # type: ignore[method-assign]
        repairer.start((k, 2))
        scheduled[k] = keys
    both = scheduled[0] + scheduled[1]
    assert sorted(both) == sorted({(ex, s) for ex in ("binance", "gateio", "huobi")
                                   for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT",
                                             "DOGE/USDT")})  # every pair exactly once
    assert all(shard_of(ex, s, 2) == k for k, keys in scheduled.items() for ex, s in keys)


async def test_a_reconnect_repair_waits_for_the_last_window_to_settle() -> None:
    from ingest.backfill import SETTLE_MS
    from ingest.settings import parse_settings

    repairer = GapRepairer(parse_settings({}, "t"), None, None)  # type: ignore[arg-type]
    calls: list[tuple[float, float | None]] = []

    async def record(exchange: str, symbols: list[str], *, reconnected_at: float | None = None
                     ) -> list[object]:
        calls.append((time.time(), reconnected_at))
        return []

    repairer.repair_since_last = record  # type: ignore[assignment,method-assign]
    at = time.time()
    repairer.on_reconnect("binance", ["BTC/USDT"])
    await repairer.wait_idle()
    # Planned only once a window that closed just before the reconnect is final at the
    # exchange (the plan stops SETTLE_MS before "now").
    ((called, reconnected_at),) = calls
    assert reconnected_at is not None and at <= reconnected_at < at + 1
    assert called >= reconnected_at + SETTLE_MS / 1000


async def test_the_service_restarted_after_a_downtime_fills_what_it_missed(
    sim: Simulator, pool: asyncpg.Pool, database_url: str, tmp_path: Path,
    run_backfill: RunBackfill,
) -> None:
    import argparse

    from ingest import daemon
    from ingest.backfill_plan import align_up
    from ingest.settings import parse_settings

    # What the previous run had stored before it went down 30 minutes ago.
    now = int(time.time() * 1000)
    ran_from, down_at = now - 50 * MINUTE_MS, now - 30 * MINUTE_MS
    assert not (await run_backfill([CandleJob("binance", "BTC/USDT", "1m", ran_from, down_at),
                                    TradeJob("binance", "BTC/USDT", ran_from, down_at)])).errors
    first_window = align_up(ran_from, "1m")
    stored_before = len(await candle_rows(pool, "binance", "BTCUSDT"))

    data = settings_data(sim, database_url, tmp_path)
    data["exchanges"] = {
        "binance": {**sim.endpoints()["binance"], "symbols": ["BTC/USDT"],
                    "candle_intervals": ["1m"], "channels": ["candles", "trades"]},
        "gateio": {"enabled": False}, "huobi": {"enabled": False}}
    data["metrics"] = {"enabled": False}
    settings = parse_settings(data, "tests/backfill")
    restarted = time.time()
    stop = asyncio.Event()
    service = asyncio.create_task(
        daemon.run_service(settings, argparse.Namespace(health_port=0), stop))
    # Every window that closed before the restart is stored again, the downtime included.
    last_closed = (int(restarted * 1000) // MINUTE_MS - 1) * MINUTE_MS
    want_windows = list(range(first_window, last_closed + MINUTE_MS, MINUTE_MS))

    model = sim.model("binance", "BTC/USDT")
    want = [t.id for t in model.trades_between(ran_from, int(restarted * 1000))]

    async def complete() -> bool:
        opens = {ms(r["timestamp"]) for r in await candle_rows(pool, "binance", "BTCUSDT")}
        ids = {r["trade_id"] for r in await trade_rows(pool, "binance", "BTCUSDT")}
        return opens >= set(want_windows) and ids >= set(want)

    deadline = time.monotonic() + 60
    while not await complete():
        assert not service.done(), service.result()
        assert time.monotonic() < deadline, "the downtime was not refilled"
        await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(service, 30) == 0
    assert len(want_windows) > stored_before + 25  # the downtime's windows were added

    # Trades: every trade of the model from the first stored one to the restart, once.
    got = [r["trade_id"] for r in await trade_rows(pool, "binance", "BTCUSDT")]
    assert got[: len(want)] == want
    assert len(got) == len(set(got))

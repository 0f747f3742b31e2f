"""Connectors against the simulator, watched through /metrics and /readyz; the metrics
scheduler's job results; the backfill progress hook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ingest.exchanges.connector import Connector
from ingest.feeds import build_feeds
from ingest.health import HealthServer
from ingest.metrics.service import MetricsService
from ingest.observe import Observer
from ingest.settings import parse_settings
from ingest.sim import Simulator, start_simulator
from ingest.sink import Sink
from ingest.transport.http import HttpClient, HttpConfig
from tests.connectors.conftest import fast_options
from tests.ops.conftest import get, wait_for, writer_settings
from tests.ops.test_health import samples


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = await start_simulator("127.0.0.1", 0, seed=3, symbols=("BTC/USDT",),
                              trades_per_minute=1200, tick_s=0.01, kline_interval_s=0.5,
                              book_interval_s=0.1)
    try:
        yield s
    finally:
        await s.stop()


def sim_settings(sim: Simulator, migrated_url: str, tmp_path: Path) -> Any:
    ends = sim.endpoints()
    return parse_settings({
        "database": {"url": migrated_url, "sslmode": "disable"},
        "writer": {"spool_dir": str(tmp_path / "spool")},
        "health": {"host": "127.0.0.1"},
        "metrics": {**ends["metrics"], "jitter_s": 0},
        "exchanges": {
            "binance": {**ends["binance"], "symbols": ["BTC/USDT"], "candle_intervals": ["1m"],
                        "book_depth": 5, "snapshot_interval_s": 0.5, "stale_after_s": 1.0},
            "gateio": {"enabled": False}, "huobi": {"enabled": False}},
    }, "<ops sim>")


async def test_stream_counters_and_readiness_follow_the_exchange(
        sim: Simulator, pool: asyncpg.Pool, migrated_url: str, tmp_path: Path) -> None:
    settings = sim_settings(sim, migrated_url, tmp_path)
    sink = Sink(pool, writer_settings(tmp_path))
    await sink.start()
    http = HttpClient(HttpConfig(timeout_s=5, backoff_base_s=0.05, backoff_cap_s=0.2))
    await http.start()
    connectors: list[Connector] = build_feeds(settings, sink, http, options=fast_options())
    observer = Observer()
    observer.set_sink(sink)
    observer.add_connectors(connectors)
    server = HealthServer(settings, pool=pool, observer=observer, port=0)
    await server.start()
    tasks = [asyncio.create_task(c.run()) for c in connectors]
    base = f"http://127.0.0.1:{server.port}"
    try:
        async def flowing() -> bool:
            s = samples((await get(f"{base}/metrics"))[1])
            return (s.get(("ingest_rows_written_total", (("table", "trades"),)), 0) > 0
                    and s.get(("ingest_rows_written_total", (("table", "order_books"),)), 0) > 0)

        await wait_for(flowing, 20, "trades and book snapshots stored")
        s = samples((await get(f"{base}/metrics"))[1])
        ex = (("exchange", "binance"),)
        frames = sum(v for (n, labels), v in s.items() if n == "ingest_frames_received_total")
        assert frames > 0
        for channel in ("trades", "book"):
            assert s[("ingest_frames_parsed_total", (("channel", channel), *ex))] > 0
        assert s[("ingest_records_emitted_total", (("channel", "trades"), *ex))] > 0
        assert s[("ingest_ws_reconnects_total", ex)] == 0
        assert s[("ingest_book_gaps_total", ex)] == 0
        assert s[("ingest_books_unsynced", ex)] == 0
        ages = [v for (n, _), v in s.items() if n == "ingest_stream_last_message_age_seconds"]
        assert ages and max(ages) < 5
        status, body = await get(f"{base}/readyz")
        assert status == 200, body

        await sim.stop()  # the exchange goes away: reconnecting, then past its 1-s budget

        async def not_ready() -> bool:
            return (await get(f"{base}/readyz"))[0] == 503

        await wait_for(not_ready, 15, "streams past their reconnect budget")
        doc = json.loads((await get(f"{base}/readyz"))[1])
        assert doc["failing"] == ["streams"]
        assert any(e.startswith("binance trade:BTCUSDT") for e in
                   doc["checks"]["streams"]["not_connected"])
        s = samples((await get(f"{base}/metrics"))[1])
        assert s[("ingest_stream_connected", (*ex, ("stream", "trade:BTCUSDT")))] == 0.0
    finally:
        for c in connectors:
            await c.close()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        await server.stop()
        await sink.close()
        await http.close()


async def test_metric_job_results_are_exported(sim: Simulator, pool: asyncpg.Pool,
                                               migrated_url: str, tmp_path: Path) -> None:
    settings = sim_settings(sim, migrated_url, tmp_path)
    sink = Sink(pool, writer_settings(tmp_path))
    await sink.start()
    try:
        async with aiohttp.ClientSession() as session:
            service = MetricsService(settings, session, sink, pool=pool)
            server = HealthServer(settings, pool=pool, sink=sink, metrics_service=service,
                                  port=0)
            await server.start()
            try:
                results = await service.run_once()
                assert all(r.ok for r in results), results
                await sink.flush()
                s = samples((await get(f"http://127.0.0.1:{server.port}/metrics"))[1])
            finally:
                await server.stop()
        for source in ("coingecko", "fear_greed"):
            assert s[("ingest_metric_job_runs_total", (("result", "ok"), ("source", source)))] == 1
            assert s[("ingest_metric_job_consecutive_failures", (("source", source),))] == 0
            assert ("ingest_metric_job_last_success_timestamp_seconds",
                    (("source", source),)) in s
        assert s[("ingest_rows_written_total", (("table", "market_metrics"),))] > 0
    finally:
        await sink.close()


async def test_backfill_progress_hook(tmp_path: Path) -> None:
    observer = Observer()
    settings = parse_settings({"health": {"host": "127.0.0.1"}}, "<t>")
    server = HealthServer(settings, pool=None, observer=observer, port=0)
    await server.start()
    try:
        progress = observer.backfill
        async with progress:
            progress.add("a", "binance BTC/USDT 1m", 100)
            progress.update("a", 25, 250)
            progress.add("b", "gateio ETH/USDT trades", 10)
            s = samples((await get(f"http://127.0.0.1:{server.port}/metrics"))[1])
            assert s[("ingest_backfill_jobs_running", ())] == 2
            assert s[("ingest_backfill_job_progress_ratio",
                      (("job", "binance BTC/USDT 1m"),))] == 0.25
            progress.finish("a")
            progress.finish("b", ok=False)
        s = samples((await get(f"http://127.0.0.1:{server.port}/metrics"))[1])
        assert s[("ingest_backfill_jobs_running", ())] == 0
        assert s[("ingest_backfill_jobs_finished_total", (("result", "ok"),))] == 1
        assert s[("ingest_backfill_jobs_finished_total", (("result", "failed"),))] == 1
        assert s[("ingest_backfill_rows_total", ())] == 250
    finally:
        await server.stop()

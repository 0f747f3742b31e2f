"""The periodic summary line: its shape, its rates, and what it calls unhealthy."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import structlog

from ingest import logs
from ingest.observe import Observer, Snapshot, summarise, summary_loop
from ingest.records import Trade
from ingest.sink import Sink
from tests.ops.conftest import writer_settings


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buf = io.StringIO()
    logs.configure(level="INFO", fmt="json", stream=buf)
    try:
        yield buf
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def _trades(n: int) -> list[Trade]:
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    return [Trade("gateio", "ETHUSDT", i, t0 + timedelta(microseconds=i), "3000.1", "0.5", None,
                  False) for i in range(1, n + 1)]


async def test_summary_line_shape(pool: asyncpg.Pool, tmp_path: Path,
                                  log_lines: io.StringIO) -> None:
    sink = Sink(pool, writer_settings(tmp_path))
    await sink.start()
    observer = Observer()
    observer.set_sink(sink)
    stop = asyncio.Event()
    task = asyncio.create_task(summary_loop(observer, 1.0, stop))
    try:
        await sink.put_many(_trades(300))
        await sink.flush()
        await asyncio.sleep(1.2)  # the first line
        await sink.put_many(_trades(400)[300:])
        await sink.flush()
        await asyncio.sleep(1.1)  # the second; a last stretch under 1 s is not logged
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        await sink.close()
    lines = [json.loads(x) for x in log_lines.getvalue().splitlines() if '"summary"' in x]
    assert len(lines) >= 2, log_lines.getvalue()  # one per second; a last stretch < 1 s is not
    first = lines[0]
    assert first["level"] == "info" and first["logger"] == "ingest.observe"
    assert set(first) >= {"interval_s", "rows_per_s", "frames_per_s", "max_message_age_s",
                          "queue_rows", "queue_bytes", "spool_bytes", "unhealthy", "timestamp"}
    assert 0.9 <= first["interval_s"] <= 1.5
    assert first["rows_per_s"]["trades"] == pytest.approx(300 / first["interval_s"], rel=0.01)
    assert first["queue_rows"] == {"candlesticks": 0, "trades": 0, "order_books": 0,
                                   "market_metrics": 0}
    assert first["spool_bytes"] == 0 and first["unhealthy"] == []
    # Rates x intervals add up to what was written: the second batch is in a later line.
    total = sum(line["rows_per_s"]["trades"] * line["interval_s"] for line in lines)
    assert total == pytest.approx(400, rel=0.02)


def _snap(at: float, **parts: object) -> Snapshot:
    return Snapshot(at=at, wall=1000.0 + at, **parts)  # type: ignore[arg-type]


def test_summarise_reports_what_is_unhealthy() -> None:
    prev = _snap(0.0, sink={"order_books": {"rows_dropped": 5, "rows_written": 100}},
                 connectors={"binance": {"connections": {"binance.stream0":
                                                         {"frames_received": 1000}}}})
    health = {"streams": {"trade:BTCUSDT": {"connected": False, "last_message_age_s": 40.0},
                          "book:BTCUSDT": {"connected": True, "last_message_age_s": 90.0},
                          "trade:ETHUSDT": {"connected": True, "last_message_age_s": 0.2}}}
    cur = _snap(
        60.0,
        sink={"order_books": {"rows_dropped": 17, "rows_written": 700, "healthy": False,
                              "spool_bytes": 4096, "queue_rows": 12, "queue_bytes": 9000}},
        connectors={"binance": {
            "connections": {"binance.stream0": {"frames_received": 4000}},
            "last_message_age_s": {"trade:BTCUSDT": 40.0, "book:BTCUSDT": 90.0},
            "book": {"books": {"BTCUSDT": {"synced": False}}}}},
        health={"binance": health}, stale_after_s={"binance": 60.0},
        metric_jobs={"coingecko": {"consecutive_failures": 3, "last_failure_reason": "timeout"}},
    )
    out = summarise(prev, cur)
    assert out["rows_per_s"] == {"order_books": 10.0}
    assert out["frames_per_s"] == {"binance": 50.0}
    assert out["max_message_age_s"] == {"binance": 90.0}
    assert out["spool_bytes"] == 4096 and out["queue_bytes"] == 9000
    problems = "\n".join(out["unhealthy"])
    for expected in ("order_books: database writes failing", "order_books: 12 dropped",
                     "order_books: 4096 bytes in the spool",
                     "binance: 1/3 streams disconnected (reconnecting), e.g. trade:BTCUSDT",
                     "binance: 1 streams silent > 60 s, e.g. book:BTCUSDT",
                     "binance: books resyncing: BTCUSDT",
                     "coingecko: 3 failed polls in a row (timeout)"):
        assert expected in problems, (expected, problems)

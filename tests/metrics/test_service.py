"""MetricsService against the scripted API and a real PostgreSQL with the schema applied."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from ingest import logs
from ingest.metrics.service import MetricsService, RunResult
from ingest.settings import MetricsSettings
from tests.metrics.conftest import Sleeps
from tests.metrics.fakeapi import (
    CG_PATH,
    COINGECKO_TS,
    FNG_LATEST_TS,
    FNG_PATH,
    HISTORY_DAYS,
    FakeApi,
    Reply,
)

CG = "coingecko"
FNG = "fear_greed"
KEY = "CG-demo-SECRET-6f1e2d3c4b5a"


async def stored(pool: asyncpg.Pool, sink: Any) -> list[asyncpg.Record]:
    await sink.flush()
    return await pool.fetch(
        "SELECT metric_type, metric_name, timestamp, value, metadata FROM market_metrics"
        " ORDER BY metric_type, metric_name, timestamp")


def service(msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
            sleeps: Sleeps, **kw: Any) -> MetricsService:
    return MetricsService(msettings, session, sink, sleep=sleeps, **kw)



async def test_values_and_timestamps_stored_exactly(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    pool: asyncpg.Pool, sleeps: Sleeps,
) -> None:
    svc = service(msettings, session, sink, sleeps, pool=pool)
    results = await svc.run_once()
    assert all(r.ok for r in results), results
    rows = await stored(pool, sink)
    cg_ts = datetime.fromtimestamp(COINGECKO_TS, UTC)
    cg = {(r["metric_type"], r["metric_name"]): r for r in rows if r["timestamp"] == cg_ts}
    expected = {
        ("btc_dominance", ""): "47.82057011844006",
        ("total_market_cap", ""): "2721226850772.63",
        ("other", "eth_dominance"): "16.943340351591583",
        ("other", "total_volume_usd"): "69327091133.54",
        ("other", "market_cap_change_percentage_24h_usd"): "-5.032104325648996",
        ("other", "active_cryptocurrencies"): "13690",
        ("other", "markets"): "1046",
    }
    assert {k: r["value"] for k, r in cg.items()} == {k: Decimal(v) for k, v in expected.items()}
    assert orjson.loads(cg[("btc_dominance", "")]["metadata"]) == {"source": "coingecko",
                                                                 "unit": "percent"}
    assert orjson.loads(cg[("other", "eth_dominance")]["metadata"])["name"] == "eth_dominance"

    fng = [r for r in rows if r["metric_type"] == "fear_greed_index"]
    assert len(fng) == HISTORY_DAYS  # first start: the history was loaded
    newest = max(fng, key=lambda r: r["timestamp"])
    assert newest["timestamp"] == datetime.fromtimestamp(FNG_LATEST_TS, UTC)
    assert newest["value"] == Decimal(47)
    assert orjson.loads(newest["metadata"]) == {"source": "alternative.me",
                                                "classification": "Neutral"}


async def test_polling_twice_stores_once_and_history_loads_once(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    pool: asyncpg.Pool, sleeps: Sleeps,
) -> None:
    svc = service(msettings, session, sink, sleeps, pool=pool)
    await svc.run_once()
    first = await stored(pool, sink)
    await svc.run_once()
    await svc.run_once()
    assert await stored(pool, sink) == first
    assert len(first) == 7 + HISTORY_DAYS
    assert [s.query["limit"] for s in api.requests(FNG_PATH)] == ["0", "1", "1"]
    assert len(api.requests(CG_PATH)) == 3
    stats = svc.stats()
    assert stats[CG]["runs"] == 3 and stats[CG]["successes"] == 3 and stats[CG]["rows"] == 21
    assert stats[FNG]["rows"] == HISTORY_DAYS + 2
    assert stats[FNG]["history_pending"] is False

    # A restart: the database has the index already, so no second history load.
    again = service(msettings, session, sink, sleeps, pool=pool)
    await again.run_once()
    assert [s.query["limit"] for s in api.requests(FNG_PATH)][-1] == "1"
    assert await stored(pool, sink) == first


async def test_history_retried_when_its_load_failed(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    pool: asyncpg.Pool, sleeps: Sleeps,
) -> None:
    api.queue(FNG_PATH, *[Reply(500, b"down", "text/plain")] * 3)
    svc = service(msettings, session, sink, sleeps, pool=pool)
    failed = await svc.run_job(FNG)
    assert not failed.ok and failed.reason == "http_5xx"
    ok = await svc.run_job(FNG)
    assert ok.ok and ok.history
    assert [s.query["limit"] for s in api.requests(FNG_PATH)] == ["0", "0", "0", "0"]
    assert len(await stored(pool, sink)) == HISTORY_DAYS


async def test_history_off_by_setting(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    pool: asyncpg.Pool, sleeps: Sleeps,
) -> None:
    m = dataclasses.replace(msettings, load_fear_greed_history=False)
    await service(m, session, sink, sleeps, pool=pool).run_job(FNG)
    assert [s.query["limit"] for s in api.requests(FNG_PATH)] == ["1"]


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ([Reply(500, b"oops", "text/plain")] * 3, "http_5xx"),
        ([Reply(200, b'{"data": {"market_cap_percentage": {"btc": NaN}}}')], "invalid_json"),
        ([Reply(200, b'{"data": {"total_market_cap": {"usd": 1}, "updated_at": 1706002730}}')],
         "missing_field"),
        ([Reply(200, b'{"data": {"market_cap_percentage": {"btc": "high"}, "total_market_cap":'
                     b' {"usd": 1}, "updated_at": 1706002730}}')], "bad_value"),
        ([Reply(200, b'{"data": {"market_cap_perc')], "invalid_json"),
        ([Reply(200, b"<!DOCTYPE html><title>Just a moment...</title>", "text/html")], "html_page"),
        ([Reply(502, b"<html>502 Bad Gateway</html>", "text/html")] * 3, "http_5xx"),
        ([Reply(200, b"{}" + b" " * 3_000_000)], "too_large"),
        ([Reply(200, b'{"data": {}}', "text/plain")], "content_type"),
        ([Reply(401, b'{"status": {"error_code": 10002}}')], "http_4xx"),
    ],
)
async def test_bad_response_is_logged_counted_and_skipped(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    pool: asyncpg.Pool, sleeps: Sleeps, log_output: Callable[[], str],
    replies: list[Reply], reason: str,
) -> None:
    api.queue(CG_PATH, *replies)
    svc = service(msettings, session, sink, sleeps)
    result = await svc.run_job(CG)
    assert (result.ok, result.reason) == (False, reason)
    assert await stored(pool, sink) == []
    stats = svc.stats()[CG]
    assert stats["failures"] == {reason: 1}
    assert stats["successes"] == 0 and stats["consecutive_failures"] == 1
    assert stats["last_failure_reason"] == reason
    lines = [orjson.loads(line) for line in log_output().splitlines()]
    [failed] = [x for x in lines if x["event"] == "metrics poll failed"]
    assert failed["source"] == CG and failed["reason"] == reason and failed["level"] == "warning"
    assert len(failed["detail"]) <= 300
    # The next run (the API recovered) stores normally.
    again = await svc.run_job(CG)
    assert again.ok
    assert len(await stored(pool, sink)) == 7
    assert svc.stats()[CG]["consecutive_failures"] == 0
    assert svc.stats()[CG]["last_success_ts"] is not None


async def test_timeout_counts_as_failure(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    sleeps: Sleeps,
) -> None:
    m = dataclasses.replace(msettings, http_timeout_s=0.2)
    api.queue(CG_PATH, *[Reply(body=b"{}", delay_s=1.0)] * 3)
    svc = service(m, session, sink, sleeps)
    result = await svc.run_job(CG)
    assert result.reason == "timeout"
    assert len(sleeps.calls) == 2  # retried with back-off, through the injected sleep


async def test_429_retry_after_honoured_and_next_run_pushed(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    pool: asyncpg.Pool, sleeps: Sleeps,
) -> None:
    clock = [1000.0]
    svc = service(msettings, session, sink, sleeps, clock=lambda: clock[0], rand=lambda: 0.0)
    # Short Retry-After: waited out inside the run (injected sleep), then success.
    api.queue(CG_PATH, Reply(429, b"{}", headers={"Retry-After": "12"}))
    ok = await svc.run_job(CG)
    assert ok.ok and sleeps.calls == [12.0]
    assert svc.plan_next(CG, 1000.0, 1012.0, ok) == 1600.0

    # Long Retry-After: the run fails and the next run is pushed past it.
    api.queue(CG_PATH, Reply(429, b"{}", headers={"Retry-After": "7200"}))
    limited = await svc.run_job(CG)
    assert (limited.ok, limited.reason, limited.retry_after_s) == (False, "rate_limited", 7200.0)
    assert svc.plan_next(CG, 1600.0, 1601.0, limited) == 1601.0 + 7200.0
    assert svc.stats()[CG]["failures"] == {"rate_limited": 1}
    assert svc.stats()[CG]["next_run_in_s"] == pytest.approx(1601.0 + 7200.0 - 1000.0)


async def test_backoff_after_failure_in_plan(
    msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any, sleeps: Sleeps,
) -> None:
    svc = service(msettings, session, sink, sleeps, rand=lambda: 0.0, retry_base_s=60.0)
    svc._stats[CG].consecutive_failures = 2
    assert svc.plan_next(CG, 0.0, 10.0, RunResult(CG, False, reason="timeout")) == 130.0


async def test_sink_failure_is_counted(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sleeps: Sleeps,
) -> None:
    class Broken:
        async def put_many(self, records: Any) -> None:
            raise RuntimeError("writer closed")

    svc = MetricsService(msettings, session, Broken(), sleep=sleeps, history_probe=_no_rows)
    result = await svc.run_job(CG)
    assert (result.ok, result.reason) == (False, "sink")


async def _no_rows() -> bool:
    return False


async def test_api_key_sent_but_never_logged(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    sleeps: Sleeps, log_output: Callable[[], str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Switch the global log scrubber off: the metrics code must not leak the key by itself.
    monkeypatch.setattr(logs, "_known_secrets", set())
    monkeypatch.setattr(logs, "register_secret", lambda value: None)
    m = dataclasses.replace(msettings, coingecko_api_key=KEY)
    api.queue(CG_PATH,
              Reply(500, b"error ", "text/plain", echo_headers=True),
              Reply(500, b"error ", "text/plain", echo_headers=True),
              Reply(500, b"error ", "text/plain", echo_headers=True),
              Reply(200, b"<html>", "text/html", echo_headers=True),
              Reply(401, b"invalid key ", "application/json", echo_headers=True),
              Reply(429, b"slow ", "text/plain", headers={"Retry-After": "1"}, echo_headers=True),
              Reply(200, b'{"data": {"updated_at": 1706002730, "x": "', echo_headers=True))
    svc = service(m, session, sink, sleeps)
    results = [await svc.run_job(CG) for _ in range(6)]
    # 5xx x3; HTML; 401; 429 waited out, then a broken body that quotes our headers; fine x2
    assert [r.reason for r in results] == ["http_5xx", "html_page", "http_4xx", "invalid_json",
                                          None, None]
    assert 1.0 in sleeps.calls
    text = log_output()
    assert "metrics poll failed" in text and "metrics request retry" in text
    assert KEY not in text
    assert all(KEY not in (r.detail or "") for r in results)
    assert KEY not in repr(svc.stats())
    assert all(s.headers.get("x-cg-demo-api-key") == KEY for s in api.requests(CG_PATH))


# ---- the runner (real time, short intervals) --------------------------------------------


def fast(msettings: MetricsSettings, interval_s: float) -> MetricsSettings:
    return dataclasses.replace(msettings, coingecko_interval_s=interval_s,
                               fear_greed_interval_s=interval_s, jitter_s=0.0,
                               load_fear_greed_history=False)


async def test_runner_no_overlap_when_a_run_overruns(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    sleeps: Sleeps,
) -> None:
    api.default_delay_s = 0.35  # every request takes longer than the 0.1 s interval
    svc = service(fast(msettings, 0.1), session, sink, sleeps)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.sleep(1.3)
    stop.set()
    await asyncio.wait_for(task, 2.0)
    assert api.max_in_flight == {CG_PATH: 1, FNG_PATH: 1}
    runs = svc.stats()[CG]["runs"]
    # Runs start on the grid after the previous one ended (0, 0.4, 0.8, 1.2 s): about 4,
    # never the 13 a 0.1 s interval would queue up. Loose bounds for a loaded machine.
    assert 2 <= runs <= 5


async def test_runner_keeps_cadence_and_stops_mid_request(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    sleeps: Sleeps,
) -> None:
    svc = service(fast(msettings, 0.2), session, sink, sleeps)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.sleep(0.9)
    assert 3 <= svc.stats()[CG]["runs"] <= 6  # 0, 0.2, 0.4, 0.6, 0.8 s
    api.default_delay_s = 30.0  # the next request hangs
    await asyncio.sleep(0.4)
    t0 = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 2.0)
    assert time.monotonic() - t0 < 1.0  # cancelled, not waited out


async def test_runner_survives_failures(
    api: FakeApi, msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any,
    sleeps: Sleeps,
) -> None:
    api.queue(CG_PATH, *[Reply(200, b"<html>", "text/html")] * 3)
    svc = service(fast(msettings, 0.1), session, sink, sleeps, retry_base_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.sleep(0.8)
    stop.set()
    await asyncio.wait_for(task, 2.0)
    stats = svc.stats()[CG]
    assert stats["failures"] == {"html_page": 3}
    assert stats["successes"] >= 1


async def test_disabled_service_returns(
    msettings: MetricsSettings, session: aiohttp.ClientSession, sink: Any, sleeps: Sleeps,
) -> None:
    svc = service(dataclasses.replace(msettings, enabled=False), session, sink, sleeps)
    await asyncio.wait_for(svc.run(asyncio.Event()), 1.0)
    assert svc.jobs == ()

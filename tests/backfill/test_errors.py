"""Rate limits, outages and bad input: 429 with Retry-After honoured, maintenance retried,
a permanent error named, and user mistakes ending as one line with exit code 2."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from ingest import cli
from ingest.backfill_plan import CandleJob
from ingest.observe import BackfillProgress
from ingest.settings import Settings
from ingest.sim import Simulator

from .conftest import DAY_MS, MINUTE_MS, RunBackfill, candle_rows, ms, settings_data, write_config


class FaultyProxy:
    """Forwards to the simulator; answers the first ``faults`` matching requests itself."""

    def __init__(self, upstream: str, faults: list[tuple[int, dict[str, str], str]],
                 path_part: str) -> None:
        self.upstream = upstream
        self.faults = list(faults)
        self.path_part = path_part
        self.times: list[tuple[float, int]] = []  # (time, status) of matching requests
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        matching = self.path_part in request.path
        if matching and self.faults:
            status, headers, body = self.faults.pop(0)
            self.times.append((time.monotonic(), status))
            return web.Response(status=status, headers=headers, text=body,
                                content_type="application/json")
        if matching:
            self.times.append((time.monotonic(), 200))
        async with aiohttp.ClientSession() as http, \
                http.get(self.upstream + request.path_qs) as resp:
            return web.Response(status=resp.status, body=await resp.read(),
                                content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def proxy_factory(sim: Simulator) -> AsyncIterator[Any]:
    proxies: list[FaultyProxy] = []

    async def make(faults: list[tuple[int, dict[str, str], str]], path_part: str) -> FaultyProxy:
        p = FaultyProxy(sim.url, faults, path_part)
        await p.start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        await p.stop()


def via(settings: Settings, exchange: str, rest_url: str) -> Settings:
    ex = dict(settings.exchanges)
    ex[exchange] = dataclasses.replace(ex[exchange], rest_url=rest_url)
    return dataclasses.replace(settings, exchanges=ex)


async def test_429_retry_after_is_honoured(
    settings: Settings, pool: asyncpg.Pool, run_backfill: RunBackfill, proxy_factory: Any
) -> None:
    body = '{"code":-1003,"msg":"Too many requests"}'
    proxy = await proxy_factory([(429, {"Retry-After": "1"}, body)], "/klines")
    s = via(settings, "binance", f"{proxy.url}/binance")
    job = CandleJob("binance", "BTC/USDT", "1m", DAY_MS, DAY_MS + 30 * MINUTE_MS)
    summary = await run_backfill([job], settings_=s)
    assert not summary.errors and summary.retries == 1
    (t429, s429), (t200, s200) = proxy.times[:2]
    assert (s429, s200) == (429, 200)
    assert t200 - t429 >= 1.0  # waited out Retry-After before asking again
    assert len(await candle_rows(pool, "binance", "BTCUSDT")) == 30


@pytest.mark.parametrize("exchange,path,fault", [
    ("gateio", "/candlesticks", (503, {}, '{"label":"SERVER_ERROR","message":"maintenance"}')),
    ("huobi", "/market/history/candles", (502, {}, "bad gateway")),
])
async def test_maintenance_and_gateway_errors_are_retried(
    settings: Settings, pool: asyncpg.Pool, run_backfill: RunBackfill, proxy_factory: Any,
    exchange: str, path: str, fault: tuple[int, dict[str, str], str],
) -> None:
    proxy = await proxy_factory([fault, fault], path)
    prefix = "/gateio/api/v4" if exchange == "gateio" else "/huobi"
    s = via(settings, exchange, proxy.url + prefix)
    summary = await run_backfill([CandleJob(exchange, "BTC/USDT", "1m", DAY_MS,
                                            DAY_MS + 10 * MINUTE_MS)], settings_=s)
    assert not summary.errors and summary.retries == 2
    assert len(await candle_rows(pool, exchange, "BTCUSDT")) == 10


@pytest.mark.parametrize("exchange,path,fault", [
    # HTX's own answer to a burst: an error envelope on a 429, which ccxt maps by the body
    # to a plain ExchangeError; the status decides: retried.
    ("huobi", "/v1/common/symbols", (429, {}, '{"status":"error","err-code":'
     '"too-many-requests","err-msg":"429 too many request","data":null}')),
    ("huobi", "/market/history/candles", (429, {}, '{"status":"error","err-code":'
     '"too-many-requests","err-msg":"429 too many request","data":null}')),
    ("gateio", "/candlesticks", (500, {}, '{"label":"SERVER_ERROR","message":"internal"}')),
])
async def test_an_error_body_on_a_429_or_5xx_is_retried(
    settings: Settings, pool: asyncpg.Pool, run_backfill: RunBackfill, proxy_factory: Any,
    exchange: str, path: str, fault: tuple[int, dict[str, str], str],
) -> None:
    proxy = await proxy_factory([fault], path)
    prefix = "/gateio/api/v4" if exchange == "gateio" else "/huobi"
    s = via(settings, exchange, proxy.url + prefix)
    summary = await run_backfill([CandleJob(exchange, "BTC/USDT", "1m", DAY_MS,
                                            DAY_MS + 10 * MINUTE_MS)], settings_=s)
    assert [status for _, status in proxy.times[:2]] == [fault[0], 200]
    assert not summary.errors and summary.retries == 1
    assert len(await candle_rows(pool, exchange, "BTCUSDT")) == 10


async def test_a_permanent_error_names_exchange_symbol_and_range(
    settings: Settings, run_backfill: RunBackfill, proxy_factory: Any
) -> None:
    body = '{"code":-1121,"msg":"Invalid symbol."}'
    proxy = await proxy_factory([(400, {}, body)], "/klines")
    s = via(settings, "binance", f"{proxy.url}/binance")
    progress = BackfillProgress()  # what /metrics reads in the service
    summary = await run_backfill([CandleJob("binance", "BTC/USDT", "1m", DAY_MS,
                                            DAY_MS + 10 * MINUTE_MS)], settings_=s,
                                 progress=progress)
    assert progress.jobs_finished == {"ok": 0, "failed": 1} and not progress.jobs
    (error,) = summary.errors
    assert error.startswith("binance BTC/USDT 1m candles 2024-01-01T00:00:00Z .. "
                            "2024-01-01T00:10:00Z: binance: publicGetKlines: BadSymbol")
    assert summary.retries == 0


@pytest.fixture
def config(sim: Simulator, database_url: str, tmp_path: Path) -> Path:
    return write_config(tmp_path / "ingest.toml", settings_data(sim, database_url, tmp_path))


@pytest.mark.parametrize("args,message", [
    (["--exchange", "kraken", "--symbol", "BTC/USDT"], "unknown exchange 'kraken'"),
    (["--exchange", "htx", "--symbol", "FOO/USDT"], "huobi: unknown symbol 'FOO/USDT'"),
    (["--exchange", "gate", "--symbol", "BTC-USDT"], "unsupported symbol 'BTC-USDT'"),
    (["--exchange", "binance", "--symbol", "BTC/USDT", "--interval", "2m"],
     "unsupported interval '2m'"),
    (["--exchange", "binance", "--symbol", "BTC/USDT", "--end", "2023-12-01"],
     "is not before --end"),
    (["--exchange", "binance", "--symbol", "BTC/USDT", "--start", "2999-01-01"],
     "is in the future"),
    (["--exchange", "binance", "--symbol", "BTC/USDT", "--start", "yesterday"],
     "not an ISO-8601 time or a date"),
    (["--exchange", "binance", "--symbol", "BTC/USDT", "--rate-limit-ms", "-1"],
     "--rate-limit-ms: must be above zero"),
    (["--exchange", "binance", "--symbol", "BTC/USDT", "--progress-interval-s", "0"],
     "--progress-interval-s: must be above zero"),
])
async def test_bad_input_is_one_line_and_exit_2(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str], args: list[str],
    message: str,
) -> None:
    argv = ["backfill", "--config", str(config), "--database-url", database_url,
            "--start", "2024-01-01", "--rate-limit-ms", "1", *args]
    await assert_one_line_exit_2(argv, message, capsys)


async def test_cli_backfill_prints_a_summary(
    config: Path, database_url: str, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["backfill", "--config", str(config), "--database-url", database_url,
            "--exchange", "gate", "--symbol", "BTC/USDT", "--symbol", "ETH/USDT",
            "--interval", "1m", "--interval", "1h", "--start", "2024-01-01",
            "--end", "2024-01-01T03:00:00Z", "--rate-limit-ms", "1", "--progress", "log"]
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, argv) == 0
    out = capsys.readouterr().out
    assert "candlesticks: 366 rows stored, 0 updated, 0 duplicates skipped" in out
    assert len(await candle_rows(pool, "gateio", "ETHUSDT", "1h")) == 3


async def test_gate_candles_older_than_it_keeps_are_reported_unserved(
    settings: Settings, pool: asyncpg.Pool, run_backfill: RunBackfill, proxy_factory: Any
) -> None:
    body = ('{"label":"INVALID_PARAM_VALUE","message":"Candlestick too long ago. '
            'Maximum 10000 points ago are allowed"}')
    proxy = await proxy_factory([(400, {}, body)], "/candlesticks")
    s = via(settings, "gateio", f"{proxy.url}/gateio/api/v4")
    now = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    start, end = now - 10_500 * MINUTE_MS, now - 9_000 * MINUTE_MS
    summary = await run_backfill([CandleJob("gateio", "BTC/USDT", "1m", start, end)], settings_=s)
    assert not summary.errors
    ((_job, gap),) = summary.unserved
    assert gap.start_ms == start and "Maximum 10000 points" in gap.reason
    assert now - 10_000 * MINUTE_MS < gap.end_ms <= now - 9_998 * MINUTE_MS
    rows = await candle_rows(pool, "gateio", "BTCUSDT")
    assert [ms(r["timestamp"]) for r in rows] == list(range(gap.end_ms, end, MINUTE_MS))


@pytest.mark.parametrize("args,message", [
    (["--symbol", "FOO/USDT"], "binance: FOO/USDT is not a configured symbol and nothing of it"),
    (["--symbol", "BTC/USDT", "--rate-limit-ms", "-1"], "--rate-limit-ms: must be above zero"),
])
async def test_gaps_bad_input_is_one_line_and_exit_2(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str], args: list[str],
    message: str,
) -> None:
    argv = ["gaps", "--config", str(config), "--database-url", database_url, "--exchange",
            "binance", "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-01T01:00Z",
            *args]
    await assert_one_line_exit_2(argv, message, capsys)


async def test_gaps_without_trades_says_so(
    config: Path, database_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["gaps", "--config", str(config), "--database-url", database_url, "--exchange",
            "binance", "--symbol", "BTC/USDT", "--interval", "1m", "--start", "2024-01-01",
            "--end", "2024-01-01T01:00Z", "--no-trades"]
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, argv) == 0
    out = capsys.readouterr().out
    assert "trades: not checked (--no-trades)" in out and "not contiguous" not in out


async def assert_one_line_exit_2(argv: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``ingest ARGV`` exits 2 with exactly one error line, which contains ``message``."""
    capsys.readouterr()
    code = await asyncio.to_thread(_main, argv)
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith(f"ingest {argv[0]}: error:")]
    assert code == 2
    assert len(err) == 1 and message in err[0], err


def _main(argv: list[str]) -> int:
    """``cli.main`` as the console script ends: a usage error from argparse is SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)

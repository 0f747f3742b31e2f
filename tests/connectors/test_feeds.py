"""build_feeds: sharding, names checked at startup, REST limiters."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from aiohttp import web

from ingest.errors import ConfigError
from ingest.exchanges.plan import chunk, plan_streams
from ingest.feeds import build_feeds, check_feeds, rest_limiter, run_feeds, shard_of
from ingest.settings import ExchangeSettings, default_exchanges, parse_settings
from ingest.transport.http import HttpClient
from tests.connectors.conftest import FakeSink, fast_options

BASES = ["BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "TRX", "DOT", "LTC", "LINK", "AVAX"]
SYMBOLS = [f"{b}/USDT" for b in BASES]


def test_shard_of_is_stable_and_partitions_exactly() -> None:
    # Pinned: a different value means every deployed shard would reshuffle its symbols.
    # (sha1("binance:BTCUSDT")[:8] as a big-endian integer, mod N)
    assert shard_of("binance", "BTC/USDT", 4) == shard_of("binance", "BTCUSDT", 4) == 2
    assert shard_of("gate", "ETH/USDT", 7) == 4
    assert shard_of("htx", "ETH/USDT", 7) == shard_of("huobi", "ETH/USDT", 7)
    for n in (1, 2, 3, 5):
        for exchange in ("binance", "gateio", "huobi"):
            owners = {s: [k for k in range(n) if shard_of(exchange, s, n) == k] for s in SYMBOLS}
            assert all(len(ks) == 1 for ks in owners.values())
    with pytest.raises(ValueError):
        shard_of("binance", "BTC/USDT", 0)


def sim_settings(**exchange: Any) -> Any:
    data = {"exchanges": {name: {"symbols": SYMBOLS, **exchange}
                          for name in ("binance", "gateio", "huobi")}}
    return parse_settings(data, "test.toml")


async def test_build_feeds_covers_every_pair_once_across_shards() -> None:
    settings = sim_settings()
    async with HttpClient() as http:
        seen: list[tuple[str, str]] = []
        for k in range(3):
            for c in build_feeds(settings, FakeSink(), http, shard=(k, 3)):
                seen.extend((c.exchange, s) for s in c.symbols)
        assert sorted(seen) == sorted((ex, s) for ex in ("binance", "gateio", "huobi")
                                      for s in SYMBOLS)
        assert http.limiter_for("", "binance") is not None


async def test_connection_split_and_stream_names() -> None:
    settings = sim_settings(max_streams_per_connection=25)
    async with HttpClient() as http:
        (binance,) = [c for c in build_feeds(settings, FakeSink(), http) if c.exchange == "binance"]
        # 10 streams per symbol (trade, 8 klines, depth): 2 symbols per socket.
        assert len(binance.clients) == 6
        assert all(len(h.streams) <= 25 for h in binance.handlers)
        huobi = next(c for c in build_feeds(settings, FakeSink(), http) if c.exchange == "huobi")
        urls = {h.url() for h in huobi.handlers}
        assert urls == {"wss://api.huobi.pro/ws", "wss://api.huobi.pro/feed"}


def test_unsupported_names_fail_at_startup_naming_the_exchange() -> None:
    ex = dataclasses.replace(default_exchanges()["gateio"], book_depth=500)
    with pytest.raises(ConfigError, match="gateio: book_depth 500"):
        plan_streams("gateio", ex, ["BTC/USDT"])
    ex = ExchangeSettings(candle_intervals=("2h",))
    with pytest.raises(ConfigError, match=r"huobi: unsupported interval '2h'"):
        plan_streams("huobi", ex, ["BTC/USDT"])
    with pytest.raises(ConfigError, match=r"binance: unsupported symbol 'BTCUSDT'"):
        plan_streams("binance", ExchangeSettings(), ["BTCUSDT"])
    with pytest.raises(ConfigError, match="listed twice"):
        plan_streams("binance", ExchangeSettings(), ["BTC/USDT", "BTC/USDT"])


def test_chunk_keeps_symbols_together_when_they_fit() -> None:
    streams = plan_streams("binance", ExchangeSettings(candle_intervals=("1m",)), SYMBOLS[:3])
    groups = chunk(streams, 7)
    assert [[s.symbol for s in g] for g in groups] == [
        ["BTCUSDT"] * 3 + ["ETHUSDT"] * 3, ["BNBUSDT"] * 3]
    assert [len(g) for g in chunk(streams, 2)] == [2, 1, 2, 1, 2, 1]


def test_live_and_repair_rest_budgets_together_stay_under_the_published_limit() -> None:
    from ingest.backfill_repair import GapRepairer
    from ingest.settings import parse_settings

    ex = ExchangeSettings(rest_requests_per_min=100_000)
    rates = GapRepairer(parse_settings({}, "t"), None, None).backfiller.rate_limit_ms  # type: ignore[arg-type]
    # ccxt's units: Binance 1 unit = weight 5, Gate and HTX 1 unit = 1 request.
    repair_per_min = {ex: 60_000 / ms for ex, ms in rates.items()}
    binance = rest_limiter("binance", ex)
    live = binance.burst + binance.rate_per_s * 60
    assert live + repair_per_min["binance"] * 5 <= 6000 * 0.8 + 1e-6
    gate = rest_limiter("gateio", ex)
    live = gate.burst + gate.rate_per_s * 10
    assert live + repair_per_min["gateio"] / 6 <= 200 * 0.8 + 1e-6
    huobi = rest_limiter("huobi", ex)
    live = huobi.burst + huobi.rate_per_s * 60
    assert live + repair_per_min["huobi"] <= 800 * 0.8 + 1e-6
    tiny = rest_limiter("binance", ExchangeSettings(rest_requests_per_min=1))
    assert tiny.burst >= 50  # still holds one depth request


async def test_check_feeds_names_symbols_the_exchange_does_not_list(rest_app: Any) -> None:
    async def info(request: web.Request) -> web.Response:
        return web.json_response({"symbols": [{"symbol": "BTCUSDT", "status": "TRADING"}]})

    async def pairs(request: web.Request) -> web.Response:
        return web.json_response([{"id": "BTC_USDT"}])

    rest = await rest_app([web.get("/api/v3/exchangeInfo", info),
                           web.get("/spot/currency_pairs", pairs)])
    data = {"exchanges": {"binance": {"symbols": ["BTC/USDT", "FOO/USDT"], "rest_url": rest},
                          "gateio": {"symbols": ["BTC/USDT", "BAR/USDT"], "rest_url": rest},
                          "huobi": {"enabled": False}}}
    async with HttpClient() as http:
        connectors = build_feeds(parse_settings(data, "t.toml"), FakeSink(), http)
        with pytest.raises(ConfigError) as err:  # both exchanges' unknown symbols, one line
            await check_feeds(connectors)
    assert str(err.value) == ("binance: unknown symbol(s) FOO/USDT (the exchange does not "
                              "list them); gateio: unknown symbol(s) BAR/USDT (the exchange "
                              "does not list them)")


async def test_run_feeds_stops_on_the_event() -> None:
    data = {"exchanges": {"binance": {"ws_url": "ws://127.0.0.1:9", "channels": ["trades"]},
                          "gateio": {"enabled": False}, "huobi": {"enabled": False}}}
    stop = asyncio.Event()
    async with HttpClient() as http:
        connectors = build_feeds(parse_settings(data, "t.toml"), FakeSink(), http,
                                 options=fast_options())
        task = asyncio.create_task(run_feeds(connectors, stop))
        await asyncio.sleep(0.2)  # connection refused, retrying with backoff
        assert connectors[0].health()["healthy"] is False
        stop.set()
        await asyncio.wait_for(task, 5)

"""A real ccxt (REST) loads markets and fetches OHLCV, trades and books from the simulator
for all three exchanges, pointed at it as protocols.md §4.2 describes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt
import pytest

from ingest.sim import Simulator

from .conftest import SimFactory

DAY_MS = 1_704_067_200_000  # 2024-01-01


def pointed_at(sim: Simulator) -> list[Any]:
    host = f"127.0.0.1:{sim.port}"
    binance = ccxt.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    binance.urls["api"]["public"] = f"http://{host}/binance/api/v3"
    gate = ccxt.gate({"options": {"fetchMarkets": {"types": ["spot"]}}})
    for key in gate.urls["api"]["public"]:
        gate.urls["api"]["public"][key] = f"http://{host}/gateio/api/v4"
    htx = ccxt.htx({"options": {"fetchMarkets": {"types": {"spot": True, "linear": False,
                                                            "inverse": False}}}})
    htx.urls["hostnames"]["spot"] = f"{host}/huobi"
    for key in list(htx.urls["api"]):
        htx.urls["api"][key] = "http://{hostname}"
    return [binance, gate, htx]


@pytest.fixture
async def exchanges(make_sim: SimFactory) -> AsyncIterator[tuple[Simulator, list[Any]]]:
    sim = await make_sim(binance_max_msgs_per_s=5)
    clients = pointed_at(sim)
    yield sim, clients
    for client in clients:
        await client.close()


async def test_load_markets_ohlcv_trades_books(exchanges: tuple[Simulator, list[Any]]) -> None:
    _, clients = exchanges
    for client in clients:
        markets = await client.load_markets()
        assert {"BTC/USDT", "ETH/USDT"} <= set(markets), client.id
        assert markets["BTC/USDT"]["spot"] and markets["BTC/USDT"]["precision"]["price"] == 0.01

        recent = await client.fetch_ohlcv("BTC/USDT", "1m", limit=5)
        assert len(recent) == 5 and recent[1][0] - recent[0][0] == 60_000, client.id
        trades = await client.fetch_trades("BTC/USDT", limit=20)
        assert len(trades) == 20 and all(t["price"] > 0 for t in trades), client.id
        book = await client.fetch_order_book("BTC/USDT", limit=5)
        assert book["bids"][0][0] < book["asks"][0][0] and book["nonce"], client.id


async def test_fixed_date_ohlcv_equals_the_model(exchanges: tuple[Simulator, list[Any]]) -> None:
    sim, clients = exchanges
    for client, name in zip(clients, ("binance", "gateio", "huobi"), strict=True):
        await client.load_markets()
        candles = await client.fetch_ohlcv("BTC/USDT", "1h", since=DAY_MS, limit=24)
        assert [c[0] for c in candles] == [DAY_MS + 3_600_000 * i for i in range(24)], name
        model = sim.model(name, "BTC/USDT")
        spec = model.spec
        for ts, o, h, low, c, v in candles:
            s = model.summary(ts, ts + 3_600_000)
            assert [o, h, low, c] == [float(spec.price_text(x)) for x in
                                      (s.open, s.high, s.low, s.close)], name
            assert v == pytest.approx(float(spec.qty_text(s.volume))), name


async def test_binance_raw_trades_with_from_id(exchanges: tuple[Simulator, list[Any]]) -> None:
    sim, clients = exchanges
    binance = clients[0]
    binance.apiKey = "dummy"  # ccxt still demands a key for historicalTrades (§4.2)
    first = sim.model("binance", "BTC/USDT").first_id(DAY_MS // 60_000)
    trades = await binance.fetch_trades("BTC/USDT", limit=50, params={
        "fetchTradesMethod": "publicGetHistoricalTrades", "fromId": first})
    assert [int(t["id"]) for t in trades] == list(range(first, first + 50))
    assert trades[0]["timestamp"] >= DAY_MS

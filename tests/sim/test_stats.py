"""/sim/stats reports what clients were sent; /sim/book the live book."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from .conftest import SimFactory
from .helpers import ManualClock, recv_until, ws_connect


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_stats_count_what_was_sent(make_sim: SimFactory) -> None:
    minute_s = (int(time.time()) // 60 + 1) * 60
    clock = ManualClock(minute_s - 2)
    sim = await make_sim(clock=clock, trades_per_minute=300)
    before = await get_json(f"{sim.url}/sim/stats")
    assert set(before) == {"binance", "gateio", "huobi"}
    assert set(before["binance"]) == {"BTCUSDT", "ETHUSDT"}
    assert before["binance"]["BTCUSDT"] == {
        "trades": 0, "first_trade_id": None, "last_trade_id": None, "closed_candles": {},
        "book_update_id": None, "book_gaps": 0,
    }
    streams = "btcusdt@trade/btcusdt@kline_1m/btcusdt@depth@100ms"
    async with ws_connect(f"{sim.ws_url}/binance/stream?streams={streams}") as ws:
        for _ in range(5):  # through the minute boundary
            clock.advance(1.0)
            await sim.wait_tick()
        received: list[dict[str, Any]] = []
        depth_u = sim.feeds["binance"].topics["btcusdt@depth@100ms"].last_id
        await recv_until(ws, lambda m: m["data"].get("u") == depth_u, on_each=received.append)
        trades = [m["data"] for m in received if m["data"].get("e") == "trade"]
    stats = (await get_json(f"{sim.url}/sim/stats"))["binance"]["BTCUSDT"]
    assert stats["trades"] == len(trades) > 0
    assert (stats["first_trade_id"], stats["last_trade_id"]) == (str(trades[0]["t"]),
                                                                str(trades[-1]["t"]))
    closes = [m for m in received if m["data"].get("e") == "kline" and m["data"]["k"]["x"]]
    assert stats["closed_candles"] == {"1m": len(closes)} == {"1m": 1}
    assert stats["book_update_id"] == str(depth_u)
    assert (await get_json(f"{sim.url}/sim/stats"))["binance"]["ETHUSDT"]["trades"] == 0


async def test_gate_stats_use_the_global_trade_id(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, trades_per_minute=600)
    async with ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as ws:
        await ws.send(json.dumps({"time": int(time.time()), "channel": "spot.trades",
                                  "event": "subscribe", "payload": ["ETH_USDT"]}))
        await recv_until(ws, lambda m: m.get("event") == "subscribe")
        clock.advance(2)
        await sim.wait_tick()
        trade = (await recv_until(ws, lambda m: m.get("event") == "update"))["result"]
    stats = sim.stats()["gateio"]["ETHUSDT"]
    assert stats["first_trade_id"] == str(trade["id"])


async def test_sim_book_endpoint(make_sim: SimFactory) -> None:
    sim = await make_sim()
    book = await get_json(f"{sim.url}/sim/book?exchange=huobi&symbol=BTCUSDT&limit=3")
    assert list(book) == ["exchange", "symbol", "update_id", "timestamp", "bids", "asks"]
    assert book["exchange"] == "huobi" and len(book["bids"]) == len(book["asks"]) == 3
    assert all(isinstance(p, str) and isinstance(q, str) for p, q in book["bids"])
    async with aiohttp.ClientSession() as http, \
            http.get(f"{sim.url}/sim/book?exchange=kraken&symbol=BTCUSDT") as resp:
        assert resp.status == 404

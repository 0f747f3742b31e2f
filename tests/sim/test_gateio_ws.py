"""Gate.io websocket v4: request/reply shapes, spot.ping, trades and candlesticks payloads,
order_book_update (full image first, then contiguous U/u increments that rebuild the REST
book) and spot.obu."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection

from .conftest import SimFactory
from .helpers import ManualClock, apply_levels, recv_until, ws_connect


async def request(ws: ClientConnection, channel: str, payload: list[Any] | None = None,
                  event: str = "subscribe", req_id: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"time": int(time.time()), "channel": channel, "event": event}
    if req_id is not None:
        body["id"] = req_id
    if payload is not None:
        body["payload"] = payload
    await ws.send(json.dumps(body))
    reply: dict[str, Any] = await recv_until(
        ws, lambda m: m.get("event") in (event, "") and m.get("channel") in (channel, "spot.pong")
    )
    return reply


async def test_subscribe_reply_and_ping(make_sim: SimFactory) -> None:
    sim = await make_sim()
    async with ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as ws:
        reply = await request(ws, "spot.trades", ["BTC_USDT", "ETH_USDT"], req_id=42)
        assert list(reply) == ["time", "time_ms", "id", "channel", "event", "error", "result"]
        assert reply["id"] == 42 and reply["error"] is None
        assert reply["result"] == {"status": "success"}
        assert abs(reply["time"] - reply["time_ms"] // 1000) <= 1
        pong = await request(ws, "spot.ping")
        assert pong["channel"] == "spot.pong" and pong["event"] == ""
        assert pong["error"] is None and pong["result"] is None
        bad = await request(ws, "spot.trades", ["NOPE_USDT"])
        assert bad["error"]["code"] == 2 and bad["result"] == {"status": "fail"}
        bad = await request(ws, "spot.candlesticks", ["2m", "BTC_USDT"])
        assert bad["error"]["code"] == 2


async def test_trade_and_candle_payloads(make_sim: SimFactory) -> None:
    sim = await make_sim(trades_per_minute=600)
    async with ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as ws:
        await request(ws, "spot.trades", ["BTC_USDT"])
        await request(ws, "spot.candlesticks", ["1m", "BTC_USDT"])
        trade = (await recv_until(ws, lambda m: m.get("channel") == "spot.trades"
                                  and m["event"] == "update"))["result"]
        candle = (await recv_until(ws, lambda m: m.get("channel") == "spot.candlesticks"
                                   and m["event"] == "update"))["result"]
    assert list(trade) == ["id", "id_market", "create_time", "create_time_ms", "side",
                           "currency_pair", "amount", "price", "range"]
    assert trade["currency_pair"] == "BTC_USDT" and trade["side"] in ("buy", "sell")
    assert trade["range"] == f"{trade['id_market']}-{trade['id_market']}"
    assert trade["create_time"] == int(Decimal(trade["create_time_ms"])) // 1000
    assert isinstance(trade["price"], str) and Decimal(trade["price"]) > 0
    assert list(candle) == ["t", "v", "c", "h", "l", "o", "n", "a", "w"]
    assert candle["n"] == "1m_BTC_USDT" and candle["w"] is False
    assert int(candle["t"]) % 60 == 0
    assert Decimal(candle["l"]) <= Decimal(candle["c"]) <= Decimal(candle["h"])


async def test_order_book_update_rebuilds_the_rest_book(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, symbols=("BTC/USDT",))
    async with ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as ws:
        await request(ws, "spot.order_book_update", ["BTC_USDT", "100ms"])
        full = (await recv_until(ws, lambda m: m.get("event") == "update"))["result"]
        assert full["full"] is True and full["l"] == "100" and full["s"] == "BTC_USDT"
        assert list(full) == ["t", "full", "l", "e", "E", "s", "U", "u", "b", "a"]
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        apply_levels(bids, full["b"])
        apply_levels(asks, full["a"])
        last = full["u"]
        for _ in range(5):
            clock.advance(0.1)
            update = (await recv_until(ws, lambda m: m.get("event") == "update"))["result"]
            assert "full" not in update and update["U"] == last + 1
            apply_levels(bids, update["b"])
            apply_levels(asks, update["a"])
            last = update["u"]
    async with aiohttp.ClientSession() as http:
        url = f"{sim.url}/gateio/api/v4/spot/order_book?currency_pair=BTC_USDT&limit=100&with_id=true"
        async with http.get(url) as resp:
            rest = await resp.json()
    assert list(rest) == ["id", "current", "update", "asks", "bids"]
    assert rest["id"] == last
    assert [[Decimal(p), Decimal(q)] for p, q in rest["bids"]] == [
        [p, bids[p]] for p in sorted(bids, reverse=True)]
    assert [[Decimal(p), Decimal(q)] for p, q in rest["asks"]] == [[p, asks[p]] for p in sorted(asks)]


async def test_obu_full_then_increments_and_duplicate_alert(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock)
    async with ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as ws:
        await request(ws, "spot.obu", ["ob.BTC_USDT.50"])
        full = await recv_until(ws, lambda m: m.get("channel") == "spot.obu" and "result" in m
                                and "s" in m["result"])
        assert list(full) == ["channel", "result", "time_ms"]
        assert list(full["result"]) == ["t", "full", "s", "u", "b", "a"]
        assert full["result"]["s"] == "ob.BTC_USDT.50" and len(full["result"]["b"]) == 50
        clock.advance(0.1)
        inc = await recv_until(ws, lambda m: m.get("channel") == "spot.obu" and "U" in
                               m.get("result", {}))
        assert list(inc["result"]) == ["t", "s", "U", "u", "b", "a"]
        assert inc["result"]["U"] == full["result"]["u"] + 1
        dup = await request(ws, "spot.obu", ["ob.BTC_USDT.50"])
        assert dup["error"] == {"code": 2, "message": "Alert sub ob.BTC_USDT.50"}


async def test_unsubscribe_stops_the_stream(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, trades_per_minute=6000)
    async with ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as ws:
        await request(ws, "spot.trades", ["BTC_USDT"])
        clock.advance(1)
        await recv_until(ws, lambda m: m.get("event") == "update")
        reply = await request(ws, "spot.trades", ["BTC_USDT"], event="unsubscribe")
        assert reply["result"] == {"status": "success"}
        assert sim.feeds["gateio"].topics == {}

"""Binance websocket protocol: combined/raw framing, live control messages, ping frames and
the pong deadline, the inbound message limit, depth diffs that rebuild the REST book, and
serverShutdown."""

from __future__ import annotations

import asyncio
import json
import re
import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import websockets

from .conftest import SimFactory
from .helpers import ManualClock, apply_levels, collect, recv_until, ws_connect

EIGHT = re.compile(r"^\d+\.\d{8}$")


def stream_of(msg: dict[str, Any]) -> str:
    return str(msg.get("stream", ""))


async def test_combined_stream_payload_shapes(make_sim: SimFactory) -> None:
    sim = await make_sim(trades_per_minute=600)
    streams = "btcusdt@trade/btcusdt@aggTrade/btcusdt@kline_1m/btcusdt@depth@100ms/btcusdt@depth5@100ms"
    async with ws_connect(f"{sim.ws_url}/binance/stream?streams={streams}") as ws:
        seen: dict[str, dict[str, Any]] = {}
        await recv_until(ws, lambda m: seen.setdefault(stream_of(m), m["data"]) is None
                         or len(seen) == 5)
    trade = seen["btcusdt@trade"]
    assert list(trade) == ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
    assert trade["e"] == "trade" and trade["s"] == "BTCUSDT" and trade["M"] is True
    assert EIGHT.match(trade["p"]) and EIGHT.match(trade["q"])
    assert isinstance(trade["t"], int) and trade["E"] >= trade["T"]
    agg = seen["btcusdt@aggTrade"]
    assert list(agg) == ["e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"]
    assert agg["f"] == agg["l"]
    kline = seen["btcusdt@kline_1m"]
    assert kline["e"] == "kline" and kline["s"] == "BTCUSDT"
    k = kline["k"]
    assert list(k) == ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q",
                       "V", "Q", "B"]
    assert k["i"] == "1m" and k["T"] == k["t"] + 59_999 and k["x"] is False
    assert k["n"] == k["L"] - k["f"] + 1
    assert Decimal(k["l"]) <= Decimal(k["o"]) <= Decimal(k["h"])
    depth = seen["btcusdt@depth@100ms"]
    assert list(depth) == ["e", "E", "s", "U", "u", "b", "a"]
    assert depth["e"] == "depthUpdate" and depth["U"] <= depth["u"]
    assert all(EIGHT.match(p) and EIGHT.match(q) for p, q in depth["b"] + depth["a"])
    partial = seen["btcusdt@depth5@100ms"]
    assert list(partial) == ["lastUpdateId", "bids", "asks"]
    assert len(partial["bids"]) == len(partial["asks"]) == 5
    assert Decimal(partial["bids"][0][0]) < Decimal(partial["asks"][0][0])


async def test_raw_stream_and_live_control_messages(make_sim: SimFactory) -> None:
    sim = await make_sim(trades_per_minute=600)
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade") as ws:
        first = await recv_until(ws, lambda m: m.get("e") == "trade")
        assert first["s"] == "BTCUSDT" and "stream" not in first
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1}))
        assert await recv_until(ws, lambda m: "id" in m) == {"result": None, "id": 1}
        await recv_until(ws, lambda m: m.get("s") == "ETHUSDT")
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        reply = await recv_until(ws, lambda m: m.get("id") == 2)
        assert reply["result"] == ["btcusdt@trade", "ethusdt@trade"]
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 3}))
        assert await recv_until(ws, lambda m: m.get("id") == 3) == {"result": None, "id": 3}
        await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True],
                                  "id": 4}))
        await recv_until(ws, lambda m: m.get("id") == 4)
        wrapped = await recv_until(ws, lambda m: "stream" in m)
        assert wrapped["stream"] == "ethusdt@trade" and wrapped["data"]["s"] == "ETHUSDT"
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": 5}))
        assert (await recv_until(ws, lambda m: m.get("id") == 5))["result"] is True
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@nope"], "id": 6}))
        error = await recv_until(ws, lambda m: m.get("id") == 6)
        assert error["error"]["code"] == 2
        await ws.send(json.dumps({"method": "PUBLISH", "id": 7}))
        assert (await recv_until(ws, lambda m: m.get("id") == 7))["error"]["code"] == 2


async def test_bad_stream_in_url_is_refused(make_sim: SimFactory) -> None:
    sim = await make_sim()
    with pytest.raises(websockets.InvalidStatus):
        async with ws_connect(f"{sim.ws_url}/binance/stream?streams=BTCUSDT@trade"):
            pass


async def test_server_pings_and_pong_keeps_alive(make_sim: SimFactory) -> None:
    sim = await make_sim(binance_ping_interval_s=0.1, binance_pong_timeout_s=0.3)
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{sim.ws_url}/binance/ws/btcusdt@trade", autoping=False
    ) as ws:
        payloads = []
        for _ in range(6):  # 6 ping cycles = twice the pong deadline
            msg = await ws.receive(timeout=2)
            while msg.type != aiohttp.WSMsgType.PING:
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                msg = await ws.receive(timeout=2)
            payloads.append(msg.data)
            await ws.pong(msg.data)  # echo the payload, as the deadline requires
        assert not ws.closed and len(set(payloads)) == 6


async def test_no_pong_closes_after_the_deadline(make_sim: SimFactory) -> None:
    sim = await make_sim(binance_ping_interval_s=0.1, binance_pong_timeout_s=0.3)
    async with aiohttp.ClientSession() as session, session.ws_connect(
        f"{sim.ws_url}/binance/ws/btcusdt@trade", autoping=False
    ) as ws:
        started = time.monotonic()
        while (msg := await ws.receive(timeout=3)).type not in (
            aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING
        ):
            if msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(b"wrong payload")  # a pong that answers no ping does not count
        assert time.monotonic() - started >= 0.3
        assert msg.data == 1008


async def test_websockets_client_survives_many_ping_rounds(make_sim: SimFactory) -> None:
    """The websockets library answers ping frames itself: such a client is never dropped."""
    sim = await make_sim(binance_ping_interval_s=0.05, binance_pong_timeout_s=0.15,
                         trades_per_minute=12000)
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade", ping_interval=None) as ws:
        trades = await collect(ws, 200, lambda m: m.get("e") == "trade", timeout=10)
        assert trades[-1]["t"] - trades[0]["t"] == 199  # ~1 s: many ping rounds, no drop
        (conn,) = sim.feeds["binance"].conns
        assert not conn.closed


async def test_too_many_messages_disconnect(make_sim: SimFactory) -> None:
    sim = await make_sim(binance_max_msgs_per_s=5)
    async with ws_connect(f"{sim.ws_url}/binance/ws") as ws:
        for i in range(10):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_depth_diffs_rebuild_the_rest_book(make_sim: SimFactory) -> None:
    """The documented local-book procedure, run against the simulator, ends with exactly
    the simulator's book: U/u chain without gaps and REST lastUpdateId inside the range."""
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, symbols=("BTC/USDT",))
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@depth@100ms") as ws, \
            aiohttp.ClientSession() as http:
        buffered = []
        for _ in range(3):
            clock.advance(0.1)
            buffered.append(await recv_until(ws, lambda m: m.get("e") == "depthUpdate"))
        url = f"{sim.url}/binance/api/v3/depth?symbol=BTCUSDT&limit=5000"
        async with http.get(url) as resp:
            snapshot = await resp.json()
        for _ in range(5):
            clock.advance(0.1)
            buffered.append(await recv_until(ws, lambda m: m.get("e") == "depthUpdate"))
    book_id = snapshot["lastUpdateId"]
    assert buffered[0]["U"] <= book_id
    bids = {Decimal(p): Decimal(q) for p, q in snapshot["bids"]}
    asks = {Decimal(p): Decimal(q) for p, q in snapshot["asks"]}
    events = [e for e in buffered if e["u"] > book_id]
    assert events[0]["U"] <= book_id + 1 <= events[0]["u"]
    for event in events:
        assert event["U"] <= book_id + 1  # no gap
        apply_levels(bids, event["b"])
        apply_levels(asks, event["a"])
        book_id = event["u"]
    live = sim.book("binance", "BTCUSDT")
    assert str(book_id) == live["update_id"]
    assert [[Decimal(p), Decimal(q)] for p, q in live["bids"]] == [
        [p, bids[p]] for p in sorted(bids, reverse=True)]
    assert [[Decimal(p), Decimal(q)] for p, q in live["asks"]] == [[p, asks[p]] for p in sorted(asks)]


async def test_server_shutdown_event_then_close(make_sim: SimFactory) -> None:
    sim = await make_sim()
    async with ws_connect(f"{sim.ws_url}/binance/stream?streams=btcusdt@trade") as combined, \
            ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade") as raw:
        await recv_until(combined, lambda m: True)
        task = asyncio.create_task(sim.binance_shutdown(grace_s=0.05))
        event = await recv_until(combined, lambda m: m.get("stream") == "!serverShutdown")
        assert event["data"]["e"] == "serverShutdown" and isinstance(event["data"]["E"], int)
        raw_event = await recv_until(raw, lambda m: m.get("e") == "serverShutdown")
        assert list(raw_event) == ["e", "E"]
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await combined.recv()
        await task


async def test_at_most_1024_streams_per_connection(make_sim: SimFactory) -> None:
    sim = await make_sim()
    names = [f"sym{i}usdt@trade" for i in range(1024)]  # unknown symbols are accepted
    async with ws_connect(f"{sim.ws_url}/binance/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
        assert (await recv_until(ws, lambda m: m.get("id") == 1))["result"] is None
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 2}))
        assert "1024" in (await recv_until(ws, lambda m: m.get("id") == 2))["error"]["msg"]

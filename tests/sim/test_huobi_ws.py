"""HTX websocket: gzip binary frames, JSON ping/pong with disconnect after two missed pongs,
single and array sub with acks, payload shapes, and mbp increments that continue from a
``req`` image (seqNum/prevSeqNum)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from .conftest import SimFactory
from .helpers import ManualClock, apply_levels, decode_gzip, recv_until, ws_connect


async def recv(ws: ClientConnection, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
    msg: dict[str, Any] = await recv_until(ws, predicate, decode=decode_gzip, timeout=timeout)
    return msg


async def test_every_frame_is_gzip_and_pings_come_on_time(make_sim: SimFactory) -> None:
    sim = await make_sim(huobi_ping_interval_s=0.1, trades_per_minute=600)
    async with ws_connect(f"{sim.ws_url}/huobi/ws") as ws:
        await ws.send(json.dumps({"sub": "market.btcusdt.trade.detail", "id": "t1"}))
        pings = []
        for _ in range(5):  # answering every ping keeps the connection for 5 intervals
            ping = await recv(ws, lambda m: "ping" in m)
            pings.append(ping["ping"])
            await ws.send(json.dumps({"pong": ping["ping"]}))
        assert pings == sorted(pings) and len(set(pings)) == 5
        raw = await ws.recv()
        assert isinstance(raw, bytes) and raw[:2] == b"\x1f\x8b"  # gzip magic


async def test_two_missed_pongs_disconnect(make_sim: SimFactory) -> None:
    sim = await make_sim(huobi_ping_interval_s=0.1)
    async with ws_connect(f"{sim.ws_url}/huobi/ws") as ws:
        pings = []
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                msg = decode_gzip(await ws.recv())
                if "ping" in msg:
                    pings.append(msg["ping"])
        assert len(pings) == 2  # closed when the third ping would have been due
        assert time.monotonic() - started >= 0.3


async def test_one_answered_pong_resets_the_count(make_sim: SimFactory) -> None:
    sim = await make_sim(huobi_ping_interval_s=0.1)
    async with ws_connect(f"{sim.ws_url}/huobi/feed") as ws:
        for _ in range(3):  # miss one, answer the next: never two in a row
            await recv(ws, lambda m: "ping" in m)
            second = await recv(ws, lambda m: "ping" in m)
            await ws.send(json.dumps({"pong": second["ping"]}))
        await ws.send(json.dumps({"ping": 123}))
        assert await recv(ws, lambda m: "pong" in m) == {"pong": 123}


async def test_sub_acks_unsub_and_errors(make_sim: SimFactory) -> None:
    sim = await make_sim()
    async with ws_connect(f"{sim.ws_url}/huobi/ws") as ws:
        await ws.send(json.dumps({"sub": "market.btcusdt.kline.1min", "id": "id1"}))
        ack = await recv(ws, lambda m: m.get("id") == "id1")
        assert list(ack) == ["id", "status", "subbed", "ts"]
        assert ack["status"] == "ok" and ack["subbed"] == "market.btcusdt.kline.1min"
        topics = ["market.ethusdt.trade.detail", "market.ethusdt.kline.5min"]
        await ws.send(json.dumps({"sub": topics, "id": "id2"}))
        assert (await recv(ws, lambda m: m.get("id") == "id2"))["subbed"] == topics
        await ws.send(json.dumps({"unsub": topics, "id": "id3"}))
        assert (await recv(ws, lambda m: m.get("id") == "id3"))["unsubbed"] == topics
        await ws.send(json.dumps({"sub": "market.nopeusdt.trade.detail", "id": "id4"}))
        error = await recv(ws, lambda m: m.get("id") == "id4")
        assert error["status"] == "error" and error["err-code"] == "bad-request"
        assert "invalid topic" in error["err-msg"]


async def test_trade_kline_and_depth_payloads(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, trades_per_minute=600)
    async with ws_connect(f"{sim.ws_url}/huobi/ws") as ws:
        await ws.send(json.dumps({"sub": ["market.btcusdt.trade.detail",
                                          "market.btcusdt.kline.1min",
                                          "market.btcusdt.depth.step0"], "id": 1}))
        await recv(ws, lambda m: m.get("id") == 1)
        clock.advance(1.0)  # depth.step0 is a snapshot a second
        found: dict[str, dict[str, Any]] = {}
        await recv(ws, lambda m: ("ch" in m and found.setdefault(m["ch"], m) is None)
                   or len(found) == 3)
    trade = found["market.btcusdt.trade.detail"]
    assert list(trade) == ["ch", "ts", "tick"] and list(trade["tick"]) == ["id", "ts", "data"]
    item = trade["tick"]["data"][0]
    assert list(item) == ["id", "ts", "tradeId", "amount", "price", "direction"]
    assert isinstance(item["tradeId"], int) and isinstance(item["price"], Decimal)
    assert float(item["id"]) > 1e20  # the deprecated float id, not usable as a key
    assert item["direction"] in ("buy", "sell")
    tick = found["market.btcusdt.kline.1min"]["tick"]
    assert list(tick) == ["id", "open", "close", "low", "high", "amount", "vol", "count"]
    assert tick["id"] % 60 == 0 and tick["low"] <= tick["close"] <= tick["high"]
    depth = found["market.btcusdt.depth.step0"]["tick"]
    assert list(depth) == ["bids", "asks", "version", "ts"] and len(depth["bids"]) == 150
    assert depth["bids"][0][0] < depth["asks"][0][0]


async def test_mbp_increments_continue_from_the_req_image(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, symbols=("BTC/USDT",))
    async with ws_connect(f"{sim.ws_url}/huobi/feed") as ws:
        await ws.send(json.dumps({"sub": "market.btcusdt.mbp.150", "id": "s"}))
        await recv(ws, lambda m: m.get("id") == "s")
        cached = []
        clock.advance(0.1)
        cached.append(await recv(ws, lambda m: "ch" in m))
        await ws.send(json.dumps({"req": "market.btcusdt.mbp.150", "id": "r"}))
        image = await recv(ws, lambda m: m.get("id") == "r")
        assert image["rep"] == "market.btcusdt.mbp.150" and image["status"] == "ok"
        for _ in range(4):
            clock.advance(0.1)
            cached.append(await recv(ws, lambda m: "ch" in m))
    seq = image["data"]["seqNum"]
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    apply_levels(bids, image["data"]["bids"])
    apply_levels(asks, image["data"]["asks"])
    pending = [m["tick"] for m in cached if m["tick"]["seqNum"] > seq]
    for tick in pending:
        assert tick["prevSeqNum"] == seq  # aligned, no gap
        apply_levels(bids, tick.get("bids", []))
        apply_levels(asks, tick.get("asks", []))
        seq = tick["seqNum"]
    live = sim.book("huobi", "BTCUSDT", 150)
    assert str(seq) == live["update_id"]
    assert [[Decimal(p), Decimal(q)] for p, q in live["bids"]] == [
        [p, bids[p]] for p in sorted(bids, reverse=True)]
    assert [[Decimal(p), Decimal(q)] for p, q in live["asks"]] == [[p, asks[p]] for p in sorted(asks)]


async def test_req_for_mbp_400_is_refused(make_sim: SimFactory) -> None:
    sim = await make_sim()
    async with ws_connect(f"{sim.ws_url}/huobi/feed") as ws:
        await ws.send(json.dumps({"req": "market.btcusdt.mbp.400", "id": "x"}))
        assert (await recv(ws, lambda m: m.get("id") == "x"))["status"] == "error"

"""Live streams publish exactly the model's history: the trades of a minute received live are
the trades REST returns for that minute, and each closed live candle equals the REST candle of
its window. The injected clock is driven through a whole minute, so the test takes about a
second of real time."""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal
from typing import Any

import aiohttp

from ingest.sim import Simulator

from .conftest import SimFactory
from .helpers import ManualClock, decode_gzip, recv_until, ws_connect

Msgs = list[dict[str, Any]]


async def rest(sim: Simulator, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(sim.url + path) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads(await resp.text(), parse_float=Decimal)


async def drive_through_minute(sim: Simulator, clock: ManualClock, seconds: int) -> None:
    for _ in range(seconds):
        clock.advance(1.0)
        await sim.wait_tick()  # the engine has published everything up to the clock


async def test_live_trades_and_closed_candles_match_rest(make_sim: SimFactory) -> None:
    minute_s = (math.floor(time.time() / 60) + 1) * 60
    clock = ManualClock(minute_s - 0.5)
    sim = await make_sim(clock=clock, symbols=("BTC/USDT",), trades_per_minute=90,
                         kline_interval_s=0.5, huobi_ping_interval_s=60)
    start, end = minute_s * 1000, minute_s * 1000 + 60_000
    streams = "btcusdt@trade/btcusdt@kline_1m"
    async with ws_connect(f"{sim.ws_url}/binance/stream?streams={streams}") as bws, \
            ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as gws, \
            ws_connect(f"{sim.ws_url}/huobi/ws") as hws:
        for channel, payload in (("spot.trades", ["BTC_USDT"]),
                                 ("spot.candlesticks", ["1m", "BTC_USDT"])):
            await gws.send(json.dumps({"time": int(time.time()), "channel": channel,
                                       "event": "subscribe", "payload": payload}))
            await recv_until(gws, lambda m: m.get("event") == "subscribe")
        await hws.send(json.dumps({"sub": ["market.btcusdt.trade.detail",
                                           "market.btcusdt.kline.1min"], "id": 1}))
        await recv_until(hws, lambda m: m.get("id") == 1, decode=decode_gzip)
        await drive_through_minute(sim, clock, 62)

        b_msgs: Msgs = []
        await recv_until(bws, lambda m: m["data"].get("e") == "kline" and m["data"]["k"]["x"]
                         and m["data"]["k"]["t"] == start, on_each=b_msgs.append)
        g_msgs: Msgs = []
        await recv_until(gws, lambda m: m.get("channel") == "spot.candlesticks"
                         and m["result"]["w"] and m["result"]["t"] == str(minute_s),
                         on_each=g_msgs.append)
        h_msgs: Msgs = []
        await recv_until(hws, lambda m: m.get("tick", {}).get("id") == minute_s + 60
                         and m["ch"].endswith("kline.1min"), decode=decode_gzip,
                         on_each=h_msgs.append)

    await check_binance(sim, b_msgs, start, end)
    await check_gate(sim, g_msgs, minute_s)
    await check_huobi(sim, h_msgs, minute_s, start, end)
    stats = sim.stats()
    for exchange in ("binance", "gateio"):
        assert stats[exchange]["BTCUSDT"]["closed_candles"]["1m"] >= 1


async def check_binance(sim: Simulator, msgs: Msgs, start: int, end: int) -> None:
    trades = [m["data"] for m in msgs if m["data"]["e"] == "trade"
              and start <= m["data"]["T"] < end]
    closed = next(m["data"]["k"] for m in msgs if m["data"]["e"] == "kline"
                  and m["data"]["k"]["x"] and m["data"]["k"]["t"] == start)
    assert [t["t"] for t in trades] == list(range(closed["f"], closed["L"] + 1))
    history = await rest(sim, f"/binance/api/v3/historicalTrades?symbol=BTCUSDT"
                              f"&fromId={closed['f']}&limit={closed['n']}")
    assert [(h["id"], h["price"], h["qty"], h["time"], h["isBuyerMaker"]) for h in history] == [
        (t["t"], t["p"], t["q"], t["T"], t["m"]) for t in trades]
    (row,) = await rest(sim, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1m"
                             f"&startTime={start}&limit=1")
    assert row == [closed["t"], closed["o"], closed["h"], closed["l"], closed["c"], closed["v"],
                   closed["T"], closed["q"], closed["n"], closed["V"], closed["Q"], "0"]


async def check_gate(sim: Simulator, msgs: Msgs, minute_s: int) -> None:
    trades = [m["result"] for m in msgs if m["channel"] == "spot.trades"
              and m["result"]["create_time"] // 60 * 60 == minute_s]
    history = await rest(sim, f"/gateio/api/v4/spot/trades?currency_pair=BTC_USDT&limit=1000"
                              f"&from={minute_s}&to={minute_s + 59}")
    assert [(int(h["id"]), int(h["sequence_id"]), h["price"], h["amount"], h["side"],
             Decimal(h["create_time_ms"])) for h in reversed(history)] == [
        (t["id"], t["id_market"], t["price"], t["amount"], t["side"],
         Decimal(t["create_time_ms"])) for t in trades]
    closed = next(m["result"] for m in msgs if m["channel"] == "spot.candlesticks"
                  and m["result"]["w"] and m["result"]["t"] == str(minute_s))
    (row,) = await rest(sim, f"/gateio/api/v4/spot/candlesticks?currency_pair=BTC_USDT"
                             f"&interval=1m&from={minute_s}&to={minute_s}")
    assert row == [closed["t"], closed["v"], closed["c"], closed["h"], closed["l"],
                   closed["o"], closed["a"], "true"]


async def check_huobi(sim: Simulator, msgs: Msgs, minute_s: int, start: int, end: int) -> None:
    trades = [m["tick"]["data"][0] for m in msgs if m["ch"].endswith("trade.detail")
              and start <= m["tick"]["ts"] < end]
    history = await rest(sim, "/huobi/market/history/trade?symbol=btcusdt&size=2000")
    rest_trades = [g["data"][0] for g in reversed(history["data"]) if start <= g["ts"] < end]
    assert [(h["trade-id"], h["price"], h["amount"], h["direction"]) for h in rest_trades] == [
        (t["tradeId"], t["price"], t["amount"], t["direction"]) for t in trades]
    # HTX has no closed flag: the final state is the last push before the next window's id.
    final = [m["tick"] for m in msgs if m["ch"].endswith("kline.1min")
             and m["tick"]["id"] == minute_s][-1]
    candles = await rest(sim, f"/huobi/market/history/candles?symbol=btcusdt&period=1min"
                              f"&from={minute_s}&to={minute_s}&size=1")
    assert candles["data"] == [final]
    assert final["count"] == len(trades)

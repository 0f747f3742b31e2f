"""REST endpoints of the three exchanges: shapes, paging semantics, errors, and history that
is the same for the same seed on any fixed date."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from ingest.sim import Simulator

from .conftest import SimFactory

DAY_MS = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
EIGHT = re.compile(r"^\d+\.\d{8}$")


async def get(sim: Simulator, path: str, status: int = 200) -> Any:
    async with aiohttp.ClientSession() as http, http.get(sim.url + path) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json(loads=_loads)


def _loads(text: str) -> Any:
    import json

    return json.loads(text, parse_float=Decimal)


# -- Binance -------------------------------------------------------------------------------


async def test_binance_exchange_info_time_ping(make_sim: SimFactory) -> None:
    sim = await make_sim()
    info = await get(sim, "/binance/api/v3/exchangeInfo")
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    btc = info["symbols"][0]
    assert (btc["baseAsset"], btc["quoteAsset"], btc["status"]) == ("BTC", "USDT", "TRADING")
    price_filter = next(f for f in btc["filters"] if f["filterType"] == "PRICE_FILTER")
    assert price_filter["tickSize"] == "0.01000000"
    one = await get(sim, "/binance/api/v3/exchangeInfo?symbol=ETHUSDT")
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    assert abs((await get(sim, "/binance/api/v3/time"))["serverTime"] - info["serverTime"]) < 5000
    assert await get(sim, "/binance/api/v3/ping") == {}
    error = await get(sim, "/binance/api/v3/depth?symbol=NOPEUSDT", status=400)
    assert error == {"code": -1121, "msg": "Invalid symbol."}


async def test_binance_klines_fixed_date(make_sim: SimFactory) -> None:
    sim = await make_sim()
    rows = await get(sim, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1h"
                          f"&startTime={DAY_MS + 1}&limit=3")
    assert [r[0] for r in rows] == [DAY_MS + 3_600_000 * i for i in (1, 2, 3)]  # open ≥ start
    row = rows[0]
    assert len(row) == 12 and row[6] == row[0] + 3_599_999 and row[11] == "0"
    assert all(EIGHT.match(row[i]) for i in (1, 2, 3, 4, 5, 7, 9, 10))
    model = sim.model("binance", "BTC/USDT")
    s = model.summary(row[0], row[0] + 3_600_000)
    assert (row[8], Decimal(row[1]), Decimal(row[5])) == (
        s.count, Decimal(model.spec.price_text(s.open)), Decimal(model.spec.qty_text(s.volume)))
    end_only = await get(sim, f"/binance/api/v3/klines?symbol=BTCUSDT&interval=1d"
                              f"&endTime={DAY_MS}&limit=2")
    assert [r[0] for r in end_only] == [DAY_MS - 86_400_000, DAY_MS]
    latest = await get(sim, "/binance/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=2")
    assert latest[-1][6] >= sim.options.clock() * 1000  # the open kline is included
    await get(sim, "/binance/api/v3/klines?symbol=BTCUSDT&interval=2m", status=400)


async def test_binance_trades_paging(make_sim: SimFactory) -> None:
    sim = await make_sim()
    recent = await get(sim, "/binance/api/v3/trades?symbol=BTCUSDT&limit=5")
    assert list(recent[0]) == ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker",
                               "isBestMatch"]
    assert [t["id"] for t in recent] == list(range(recent[0]["id"], recent[0]["id"] + 5))
    first = recent[0]["id"] - 1000
    page = await get(sim, f"/binance/api/v3/historicalTrades?symbol=BTCUSDT&fromId={first}"
                          "&limit=1000")
    assert [t["id"] for t in page] == list(range(first, first + 1000))
    assert Decimal(page[0]["price"]) * Decimal(page[0]["qty"]) == Decimal(page[0]["quoteQty"])
    agg = await get(sim, f"/binance/api/v3/aggTrades?symbol=BTCUSDT&startTime={DAY_MS}"
                         f"&endTime={DAY_MS + 3_600_000}&limit=10")
    assert list(agg[0]) == ["a", "p", "q", "f", "l", "T", "m", "M"]
    assert agg[0]["T"] >= DAY_MS and [a["a"] for a in agg] == list(range(agg[0]["a"],
                                                                            agg[0]["a"] + 10))
    again = await get(sim, f"/binance/api/v3/aggTrades?symbol=BTCUSDT&fromId={agg[3]['a']}"
                           "&limit=2")
    assert again == agg[3:5]
    error = await get(sim, f"/binance/api/v3/aggTrades?symbol=BTCUSDT&startTime={DAY_MS}"
                           f"&endTime={DAY_MS + 7_200_000}", status=400)
    assert error["code"] == -1127


async def test_binance_depth_limits(make_sim: SimFactory) -> None:
    sim = await make_sim()
    depth = await get(sim, "/binance/api/v3/depth?symbol=BTCUSDT&limit=5")
    assert list(depth) == ["lastUpdateId", "bids", "asks"]
    assert len(depth["bids"]) == len(depth["asks"]) == 5
    prices = [Decimal(p) for p, _ in depth["bids"]]
    assert prices == sorted(prices, reverse=True) and prices[0] < Decimal(depth["asks"][0][0])
    await get(sim, "/binance/api/v3/depth?symbol=BTCUSDT&limit=6000", status=400)


# -- Gate ----------------------------------------------------------------------------------


async def test_gate_markets_and_time(make_sim: SimFactory) -> None:
    sim = await make_sim()
    pairs = await get(sim, "/gateio/api/v4/spot/currency_pairs")
    assert [p["id"] for p in pairs] == ["BTC_USDT", "ETH_USDT"]
    assert pairs[0]["trade_status"] == "tradable" and pairs[0]["precision"] == 2
    assert {c["currency"] for c in await get(sim, "/gateio/api/v4/spot/currencies")} == {
        "BTC", "ETH", "USDT"}
    assert len(await get(sim, "/gateio/api/v4/margin/currency_pairs")) == 2
    assert isinstance((await get(sim, "/gateio/api/v4/spot/time"))["server_time"], int)
    error = await get(sim, "/gateio/api/v4/spot/trades?currency_pair=BTC_XXX", status=400)
    assert error["label"] == "INVALID_CURRENCY_PAIR"


async def test_gate_candlesticks(make_sim: SimFactory) -> None:
    sim = await make_sim()
    start = DAY_MS // 1000
    rows = await get(sim, f"/gateio/api/v4/spot/candlesticks?currency_pair=BTC_USDT"
                          f"&interval=1m&from={start}&to={start + 120}")
    assert [r[0] for r in rows] == [str(start), str(start + 60), str(start + 120)]
    assert len(rows[0]) == 8 and rows[0][7] == "true"
    model = sim.model("gateio", "BTC/USDT")
    s = model.summary(DAY_MS, DAY_MS + 60_000)
    spec = model.spec
    assert rows[0][1:7] == [spec.quote_text(s.quote_volume), spec.price_text(s.close),
                            spec.price_text(s.high), spec.price_text(s.low),
                            spec.price_text(s.open), spec.qty_text(s.volume)]
    latest = await get(sim, "/gateio/api/v4/spot/candlesticks?currency_pair=BTC_USDT"
                            "&interval=1m&limit=3")
    assert len(latest) == 3 and latest[-1][7] == "false"
    await get(sim, f"/gateio/api/v4/spot/candlesticks?currency_pair=BTC_USDT&interval=1m"
                   f"&from={start}&to={start + 600}&limit=5", status=400)
    await get(sim, f"/gateio/api/v4/spot/candlesticks?currency_pair=BTC_USDT&interval=1m"
                   f"&from={start}&to={start + 60_000 * 60}", status=400)


async def test_gate_trades_paging(make_sim: SimFactory) -> None:
    sim = await make_sim()
    newest = await get(sim, "/gateio/api/v4/spot/trades?currency_pair=BTC_USDT&limit=5")
    assert list(newest[0]) == ["id", "create_time", "create_time_ms", "currency_pair", "side",
                               "amount", "price", "sequence_id"]
    seqs = [int(t["sequence_id"]) for t in newest]
    assert seqs == sorted(seqs, reverse=True) and seqs[0] - seqs[-1] == 4  # newest first
    page2 = await get(sim, "/gateio/api/v4/spot/trades?currency_pair=BTC_USDT&limit=5&page=2")
    assert int(page2[0]["sequence_id"]) == seqs[-1] - 1
    back = await get(sim, f"/gateio/api/v4/spot/trades?currency_pair=BTC_USDT&limit=3"
                          f"&last_id={newest[-1]['id']}&reverse=true")
    assert [int(t["sequence_id"]) for t in back] == [seqs[-1] - 1, seqs[-1] - 2, seqs[-1] - 3]
    window = await get(sim, f"/gateio/api/v4/spot/trades?currency_pair=BTC_USDT&limit=1000"
                            f"&from={DAY_MS // 1000}&to={DAY_MS // 1000 + 59}")
    model = sim.model("gateio", "BTC/USDT")
    assert [int(t["sequence_id"]) for t in reversed(window)] == [
        t.id for t in model.trades(DAY_MS // 60_000)]


# -- HTX -----------------------------------------------------------------------------------


async def test_huobi_markets_and_history(make_sim: SimFactory) -> None:
    sim = await make_sim()
    symbols = await get(sim, "/huobi/v1/common/symbols")
    assert symbols["status"] == "ok"
    assert [s["symbol"] for s in symbols["data"]] == ["btcusdt", "ethusdt"]
    currencies = await get(sim, "/huobi/v2/reference/currencies")
    assert currencies["code"] == 200 and currencies["data"][0]["instStatus"] == "normal"
    kline = await get(sim, "/huobi/market/history/kline?symbol=btcusdt&period=60min&size=3")
    assert kline["ch"] == "market.btcusdt.kline.60min" and kline["status"] == "ok"
    ids = [c["id"] for c in kline["data"]]
    assert ids == sorted(ids, reverse=True) and ids[0] - ids[1] == 3600  # newest first
    start = DAY_MS // 1000
    candles = await get(sim, f"/huobi/market/history/candles?symbol=btcusdt&period=1min"
                             f"&from={start}&to={start + 240}&size=1000")
    assert [c["id"] for c in candles["data"]] == [start + 60 * i for i in (4, 3, 2, 1, 0)]
    first = candles["data"][-1]
    model = sim.model("huobi", "BTC/USDT")
    s = model.summary(DAY_MS, DAY_MS + 60_000)
    assert first["count"] == s.count
    assert first["open"] == Decimal(model.spec.price_text(s.open))


async def test_huobi_trades_and_depth(make_sim: SimFactory) -> None:
    sim = await make_sim()
    trades = await get(sim, "/huobi/market/history/trade?symbol=btcusdt&size=2000")
    assert len(trades["data"]) == 2000  # the latest 2000 only
    item = trades["data"][0]["data"][0]
    assert list(item) == ["id", "ts", "trade-id", "amount", "price", "direction"]
    ids = [g["data"][0]["trade-id"] for g in trades["data"]]
    assert ids == list(range(ids[0], ids[0] - 2000, -1))
    await get(sim, "/huobi/market/history/trade?symbol=btcusdt&size=2001")  # error in body
    depth = await get(sim, "/huobi/market/depth?symbol=btcusdt&type=step0&depth=5")
    assert list(depth["tick"]) == ["ts", "version", "bids", "asks"]
    assert len(depth["tick"]["bids"]) == 5
    error = await get(sim, "/huobi/market/depth?symbol=nopeusdt&type=step0")
    assert error["status"] == "error" and error["err-msg"] == "invalid symbol"


# -- determinism across runs ---------------------------------------------------------------


@pytest.mark.parametrize("path", [
    f"/binance/api/v3/klines?symbol=ETHUSDT&interval=1d&startTime={DAY_MS}&limit=5",
    f"/binance/api/v3/aggTrades?symbol=ETHUSDT&startTime={DAY_MS}&endTime={DAY_MS + 60_000}",
    f"/gateio/api/v4/spot/candlesticks?currency_pair=ETH_USDT&interval=7d&from={DAY_MS // 1000}"
    f"&to={DAY_MS // 1000 + 86400 * 30}",
    f"/huobi/market/history/candles?symbol=ethusdt&period=4hour&from={DAY_MS // 1000}&size=6",
])
async def test_same_seed_same_history_in_another_run(make_sim: SimFactory, path: str) -> None:
    def history(body: Any) -> Any:  # HTX stamps the response time; the data must match
        return body["data"] if isinstance(body, dict) else body

    first = history(await get(await make_sim(seed=11), path))
    second = history(await get(await make_sim(seed=11), path))
    other = history(await get(await make_sim(seed=12), path))
    assert first == second and first != other

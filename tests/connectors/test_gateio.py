"""Gate.io connector against a local websocket server and a local REST app."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ingest.exchanges.gateio.stream import build_connector
from ingest.settings import ExchangeSettings
from ingest.transport.http import HttpClient
from tests.connectors.conftest import Conn, FakeSink, FakeWs, fast_options, running, until

T_S = 1_700_000_040  # a minute boundary


def envelope(channel: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"time": T_S, "time_ms": T_S * 1000, "channel": channel, "event": "update",
            "result": result}


def trade(pair: str, tid: int) -> dict[str, Any]:
    return envelope("spot.trades", {
        "id": tid, "id_market": tid, "create_time": T_S, "create_time_ms": f"{T_S}000.1234",
        "side": "sell", "currency_pair": pair, "amount": "0.5", "price": "100.25",
        "range": f"{tid}-{tid}"})


def candle(pair: str, minute: int, close: str, w: bool | None) -> dict[str, Any]:
    result: dict[str, Any] = {"t": str(T_S + 60 * minute), "v": "500.5", "c": close,
                              "h": "105", "l": "99", "o": "100", "n": f"1m_{pair}", "a": "5"}
    if w is not None:
        result["w"] = w
    return envelope("spot.candlesticks", result)


def book(pair: str, first: int, last: int, bids: list[list[str]], asks: list[list[str]],
         full: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"t": T_S * 1000, "l": "100", "e": "depthUpdate", "E": T_S,
                              "s": pair, "U": first, "u": last, "b": bids, "a": asks}
    if full:
        result["full"] = True
    return envelope("spot.order_book_update", result)


class GateServer:
    """Acks subscriptions, answers spot.ping, and pushes a full image on a book subscribe."""

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}

    async def on_message(self, ws: FakeWs, conn: Conn, msg: dict[str, Any]) -> None:
        channel = msg["channel"]
        if channel == "spot.ping":
            await ws.send(conn, {"time": T_S, "time_ms": T_S * 1000, "channel": "spot.pong",
                                 "event": "", "error": None, "result": None})
            return
        await ws.send(conn, {"time": T_S, "time_ms": T_S * 1000, "id": msg.get("id"),
                             "channel": channel, "event": msg["event"], "error": None,
                             "result": {"status": "success"}})
        if channel == "spot.order_book_update" and msg["event"] == "subscribe":
            pair = msg["payload"][0]
            if pair in self.images:
                await ws.send(conn, self.images[pair])


def settings(ws: FakeWs, rest: str = "http://127.0.0.1:9", **kw: Any) -> ExchangeSettings:
    base: dict[str, Any] = {
        "symbols": ("BTC/USDT", "ETH/USDT"), "channels": ("trades", "candles"),
        "candle_intervals": ("1m", "7d"), "book_depth": 2, "snapshot_interval_s": 0.2,
        "ws_url": ws.url("/gateio/ws/v4/"), "rest_url": rest, "stale_after_s": 30.0,
    }
    base.update(kw)
    return ExchangeSettings(**base)


async def test_subscribes_pings_trades_and_candle_finalisation(
    fake_ws: Any, http: HttpClient
) -> None:
    server = GateServer()
    ws = await fake_ws(on_message=server.on_message)
    sink = FakeSink()
    c = build_connector(settings(ws), ["BTC/USDT", "ETH/USDT"], sink, http,
                        options=fast_options())
    c.handlers[0].app_ping_interval_s = 0.1  # 10 s in production
    async with running(c):
        await until(lambda: ws.live() and len(ws.conns[0].received) >= 7)
        conn = ws.conns[0]
        subs = [(m["channel"], m["payload"]) for m in conn.received if m.get("event") == "subscribe"]
        assert subs == [
            ("spot.trades", ["BTC_USDT"]), ("spot.candlesticks", ["1m", "BTC_USDT"]),
            ("spot.candlesticks", ["7d", "BTC_USDT"]), ("spot.trades", ["ETH_USDT"]),
            ("spot.candlesticks", ["1m", "ETH_USDT"]), ("spot.candlesticks", ["7d", "ETH_USDT"]),
        ]
        await until(lambda: any(m["channel"] == "spot.ping" for m in conn.received))
        for frame in (trade("BTC_USDT", 11), trade("ETH_USDT", 12),
                      candle("BTC_USDT", 0, "101", None), candle("BTC_USDT", 0, "102", True),
                      candle("ETH_USDT", 0, "50", None), candle("ETH_USDT", 1, "51", None)):
            await ws.send(conn, frame)
        await until(lambda: len(sink.candles()) == 2 and len(sink.trades()) == 2)
        by_symbol = {k.symbol: k for k in sink.candles()}
        assert by_symbol["BTCUSDT"].close == "102"  # w: true
        assert by_symbol["ETHUSDT"].close == "50" and by_symbol["ETHUSDT"].closed  # later window
        assert by_symbol["ETHUSDT"].quote_volume == "500.5" and by_symbol["ETHUSDT"].volume == "5"
        t = sink.trades()[0]
        assert (t.trade_id, t.is_buyer_maker, t.quote_quantity) == (11, True, "50.125")
        stats = c.stats()
        assert stats["candles"]["inferred"] == 1 and stats["controls"]["subscribed"] >= 6
        assert stats["controls"]["pong"] >= 1


async def test_book_full_image_then_gap_fetches_rest_for_that_pair_only(
    fake_ws: Any, rest_app: Any, http: HttpClient
) -> None:
    server = GateServer()
    server.images["BTC_USDT"] = book("BTC_USDT", 1000, 1000, [["100", "1"], ["99", "2"]],
                                     [["101", "1"]], full=True)
    server.images["ETH_USDT"] = book("ETH_USDT", 70, 70, [["10", "1"]], [["11", "1"]], full=True)
    ws = await fake_ws(on_message=server.on_message)
    calls: list[dict[str, str]] = []

    async def order_book(request: web.Request) -> web.Response:
        calls.append(dict(request.query))
        return web.json_response({"id": 1010, "current": T_S * 1000, "update": T_S * 1000,
                                  "asks": [["101.5", "2"]], "bids": [["100", "3"]]})

    rest = await rest_app([web.get("/gateio/api/v4/spot/order_book", order_book)])
    sink = FakeSink()
    st = settings(ws, rest + "/gateio/api/v4", channels=("book",))
    c = build_connector(st, ["BTC/USDT", "ETH/USDT"], sink, http, options=fast_options())
    assert c.keeper is not None
    books = c.keeper.books
    async with running(c):
        await until(lambda: books["BTCUSDT"].synced and books["ETHUSDT"].synced)
        assert calls == []  # the full: true images were enough
        conn = ws.conns[0]
        subs = [m["payload"] for m in conn.received if m.get("event") == "subscribe"]
        assert subs == [["BTC_USDT", "100ms"], ["ETH_USDT", "100ms"]]
        await ws.send(conn, book("BTC_USDT", 1001, 1002, [["99", "0"]], []))
        await ws.send(conn, book("BTC_USDT", 1005, 1006, [], []))  # 1003..1004 lost
        await until(lambda: calls, what="REST snapshot")
        assert calls == [{"currency_pair": "BTC_USDT", "limit": "100", "with_id": "true"}]
        await ws.send(conn, book("BTC_USDT", 1007, 1011, [["98", "4"]], []))
        await until(lambda: books["BTCUSDT"].synced and books["BTCUSDT"].last_id == 1011)
        assert books["BTCUSDT"].top(2) == ((("100", "3"), ("98", "4")), (("101.5", "2"),))
        assert books["ETHUSDT"].last_id == 70 and len(calls) == 1
        await until(lambda: any(s.last_update_id == 1011 for s in sink.snapshots("BTCUSDT")))


def test_at_most_500_streams_per_socket_so_every_subscribe_is_sent_within_60_s(
    http: HttpClient,
) -> None:
    symbols = [f"C{i:02d}/USDT" for i in range(80)]  # 80 x 8 intervals = 640 streams
    st = ExchangeSettings(symbols=tuple(symbols), channels=("candles",),
                          candle_intervals=("1m", "5m", "15m", "30m", "1h", "4h", "1d", "7d"),
                          max_streams_per_connection=1024, ws_url="ws://127.0.0.1:9/")
    c = build_connector(st, symbols, FakeSink(), http, options=fast_options())
    sizes = [len(h.streams) for h in c.handlers]
    assert sum(sizes) == 640 and len(sizes) == 2 and max(sizes) <= 500  # a pair stays whole

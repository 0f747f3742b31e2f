"""Binance connector against a local websocket server and a local REST app."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from structlog.testing import capture_logs

from ingest.exchanges.binance.stream import build_connector
from ingest.exchanges.connector import Connector, ConnectorOptions
from ingest.feeds import rest_limiter
from ingest.settings import ExchangeSettings
from ingest.transport.backoff import BackoffPolicy
from ingest.transport.http import HttpClient
from ingest.transport.recorder import Recorder, read_capture
from ingest.transport.ws import WsState
from tests.connectors.conftest import FAST_WS, FakeSink, FakeWs, fast_options, running, until

TS = 1_700_000_000_000


def trade(sym: str, tid: int, price: str = "100.50000000") -> dict[str, Any]:
    return {"stream": f"{sym.lower()}@trade", "data": {
        "e": "trade", "E": TS + tid, "s": sym, "t": tid, "p": price, "q": "0.10000000",
        "T": TS + tid, "m": tid % 2 == 0, "M": True}}


def kline(sym: str, minute: int, close: str, closed: bool) -> dict[str, Any]:
    t = TS - TS % 60_000 + minute * 60_000
    return {"stream": f"{sym.lower()}@kline_1m", "data": {
        "e": "kline", "E": t + 1000, "s": sym, "k": {
            "t": t, "T": t + 59_999, "s": sym, "i": "1m", "f": 1, "L": 9, "o": "100.0",
            "c": close, "h": "105.0", "l": "99.0", "v": "3.5", "n": 9, "x": closed,
            "q": "350.25", "V": "1.0", "Q": "100.0", "B": "0"}}}


def depth(sym: str, first: int, last: int, bids: list[list[str]] | None = None,
          asks: list[list[str]] | None = None) -> dict[str, Any]:
    return {"stream": f"{sym.lower()}@depth@100ms", "data": {
        "e": "depthUpdate", "E": TS, "s": sym, "U": first, "u": last, "b": bids or [],
        "a": asks or []}}


def settings(ws: FakeWs, rest: str = "http://127.0.0.1:9", **kw: Any) -> ExchangeSettings:
    base: dict[str, Any] = {
        "symbols": ("BTC/USDT", "ETH/USDT"), "channels": ("trades", "candles"),
        "candle_intervals": ("1m",), "book_depth": 3, "snapshot_interval_s": 0.2,
        "ws_url": ws.url("/binance"), "rest_url": rest, "stale_after_s": 30.0,
    }
    base.update(kw)
    return ExchangeSettings(**base)


class DepthApi:
    """``GET /api/v3/depth``: the image per symbol the test sets; counts requests."""

    def __init__(self, limited_for_s: float = 0.0) -> None:
        self.books: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, int]] = []
        self.limited_for_s = limited_for_s  # 429 for this long after the first request
        self.limited_until: float | None = None

    async def handle(self, request: web.Request) -> web.Response:
        sym = request.query["symbol"]
        if self.limited_until is None:
            self.limited_until = time.monotonic() + self.limited_for_s
        if time.monotonic() < self.limited_until:
            self.calls.append((sym, 429))
            return web.json_response({"code": -1003, "msg": "Too many requests"}, status=429,
                                     headers={"Retry-After": "1"})
        self.calls.append((sym, 200))
        assert request.query["limit"] == "1000"
        return web.json_response(self.books[sym])

    def count(self, sym: str, status: int = 200) -> int:
        return self.calls.count((sym, status))


async def test_trades_and_final_candles_flow_to_the_sink(fake_ws: Any, http: HttpClient) -> None:
    ws = await fake_ws()
    sink = FakeSink()
    reconnects: list[tuple[str, list[str]]] = []
    c = build_connector(settings(ws), ["BTC/USDT", "ETH/USDT"], sink, http,
                        options=fast_options(),
                        on_reconnect=lambda ex, syms: reconnects.append((ex, syms)))
    async with running(c):
        await until(lambda: ws.live(), what="a connection")
        conn = ws.live()[0]
        assert conn.path.startswith("/binance/stream?streams=")
        names = conn.path.split("=", 1)[1].split("/")
        assert names == ["btcusdt@trade", "btcusdt@kline_1m", "ethusdt@trade", "ethusdt@kline_1m"]
        for frame in (trade("BTCUSDT", 1), trade("BTCUSDT", 2), trade("BTCUSDT", 2),
                      trade("ETHUSDT", 7), kline("BTCUSDT", 0, "101.0", False),
                      kline("BTCUSDT", 0, "102.0", True), kline("BTCUSDT", 1, "103.0", False),
                      "{not json"):
            await ws.send(conn, frame)
        await until(lambda: len(sink.candles()) == 1 and len(sink.trades()) == 3)
        assert [(t.symbol, t.trade_id) for t in sink.trades()] == [
            ("BTCUSDT", 1), ("BTCUSDT", 2), ("ETHUSDT", 7)]
        (k,) = sink.candles()
        assert (k.close, k.closed, k.quote_volume, k.trades_count) == ("102.0", True, "350.25", 9)
        stats = c.stats()
        assert stats["trades"] == {"emitted": 3, "duplicates": 1}
        assert stats["frames"]["rejected"] == 1 and stats["candles"]["finalized"] == 1
        await conn.ws.close()  # the exchange drops us: reconnect, and tell gap repair
        await until(lambda: reconnects, what="on_reconnect")
        assert reconnects == [("binance", ["BTC/USDT", "ETH/USDT"])]
        health = c.health()
        assert health["streams"]["trade:BTCUSDT"]["last_message_age_s"] is not None
        # A stream that never sent a message still has an age (since it was set up), so
        # the age gauge and the "silent" summary see it.
        ages = c.stats()["last_message_age_s"]
        never = [k for k in health["streams"] if k.startswith("book:")] or list(ages)
        assert all(isinstance(ages[k], float) and ages[k] >= 0 for k in never)


async def test_book_snapshot_buffer_gap_resyncs_only_that_symbol(
    fake_ws: Any, rest_app: Any, http: HttpClient
) -> None:
    ws = await fake_ws()
    api = DepthApi()
    api.books["BTCUSDT"] = {"lastUpdateId": 100, "bids": [["100.0", "1"], ["99.0", "2"]],
                            "asks": [["101.0", "1"], ["102.0", "2"]]}
    api.books["ETHUSDT"] = {"lastUpdateId": 500, "bids": [["10.0", "1"]], "asks": [["11.0", "1"]]}
    rest = await rest_app([web.get("/binance/api/v3/depth", api.handle)])
    sink = FakeSink()
    st = settings(ws, rest + "/binance", channels=("book",), book_depth=2)
    c = build_connector(st, ["BTC/USDT", "ETH/USDT"], sink, http, options=fast_options())
    assert c.keeper is not None
    books = c.keeper.books
    async with running(c):
        await until(lambda: ws.live())
        conn = ws.live()[0]
        # Buffered until the snapshot: the first event straddles lastUpdateId + 1.
        await ws.send(conn, depth("BTCUSDT", 99, 101, bids=[["100.5", "3"]]))
        await ws.send(conn, depth("ETHUSDT", 499, 501))
        await until(lambda: books["BTCUSDT"].synced and books["ETHUSDT"].synced)
        await ws.send(conn, depth("BTCUSDT", 102, 103, asks=[["101.0", "0"]]))
        api.books["ETHUSDT"]["lastUpdateId"] = 505
        with capture_logs() as logs:
            await ws.send(conn, depth("ETHUSDT", 503, 504))  # 502 never came
            await until(lambda: api.count("ETHUSDT") == 2, what="ETH refetched")
        assert any(e["event"] == "resyncing book after a sequence gap" and e.get("symbol") == "ETHUSDT" for e in logs)
        await ws.send(conn, depth("ETHUSDT", 505, 506, bids=[["10.5", "4"]]))
        await until(lambda: books["ETHUSDT"].last_id == 506)
        assert api.count("BTCUSDT") == 1 and books["BTCUSDT"].last_id == 103
        await until(lambda: any(s.last_update_id == 103 for s in sink.snapshots("BTCUSDT")))
        snap = next(s for s in sink.snapshots("BTCUSDT") if s.last_update_id == 103)
        assert snap.bids == (("100.5", "3"), ("100.0", "1"))
        assert snap.asks == (("102.0", "2"),)
        assert snap.timestamp.timestamp() * 10 % 2 == 0  # on the 0.2 s grid
        stats = c.stats()["book"]
        assert stats["books"]["ETHUSDT"]["gaps"] == 1 and stats["books"]["BTCUSDT"]["gaps"] == 0
        assert stats["gaps"] == 1


async def one_book(fake_ws: Any, rest_app: Any, http: HttpClient, options: ConnectorOptions
                   ) -> tuple[FakeWs, DepthApi, Connector, FakeSink]:
    """A book-only connector for BTC/USDT, its REST snapshot at id 100."""
    ws = await fake_ws()
    api = DepthApi()
    api.books["BTCUSDT"] = {"lastUpdateId": 100, "bids": [["100.0", "1"]], "asks": [["101.0", "1"]]}
    rest = await rest_app([web.get("/binance/api/v3/depth", api.handle)])
    sink = FakeSink()
    st = settings(ws, rest + "/binance", channels=("book",), symbols=("BTC/USDT",), book_depth=2)
    return ws, api, build_connector(st, ["BTC/USDT"], sink, http, options=options), sink


async def test_no_snapshot_from_a_book_whose_socket_is_down_and_it_resyncs_after(
    fake_ws: Any, rest_app: Any, http: HttpClient
) -> None:
    slow_reconnect = {**FAST_WS, "backoff": BackoffPolicy(base_s=3600, cap_s=3600, min_s=3600,
                                                           stable_after_s=3600)}
    ws, _, c, sink = await one_book(fake_ws, rest_app, http, fast_options(ws=slow_reconnect))
    assert c.keeper is not None
    keeper = c.keeper
    async with running(c):
        await until(lambda: ws.live())
        await ws.send(ws.live()[0], depth("BTCUSDT", 99, 101, bids=[["100.5", "3"]]))
        await until(lambda: any(s.last_update_id == 101 for s in sink.snapshots("BTCUSDT")))
        await ws.live()[0].ws.close()  # the exchange drops us; the next try is an hour away
        await until(lambda: c.clients[0].state is WsState.RECONNECTING)
        await until(lambda: keeper.stats.books_dropped == 1, what="book dropped")
        written = len(sink.snapshots("BTCUSDT"))
        unsynced = keeper.stats.snapshots_unsynced
        await until(lambda: keeper.stats.snapshots_unsynced >= unsynced + 3, what="3 grid points")
        assert len(sink.snapshots("BTCUSDT")) == written  # nothing from the frozen book
        assert not keeper.books["BTCUSDT"].synced


async def test_after_a_reconnect_a_quiet_book_is_fetched_again_at_once(
    fake_ws: Any, rest_app: Any, http: HttpClient
) -> None:
    ws, api, c, _ = await one_book(fake_ws, rest_app, http, fast_options())
    assert c.keeper is not None
    book = c.keeper.books["BTCUSDT"]
    async with running(c):
        await until(lambda: ws.live())
        await ws.send(ws.live()[0], depth("BTCUSDT", 99, 101))
        await until(lambda: book.synced and book.last_id == 101)
        api.books["BTCUSDT"]["lastUpdateId"] = 250  # what the exchange's book is now
        await ws.live()[0].ws.close()
        # Reconnected; the symbol sends nothing, and its book is fetched again anyway.
        await until(lambda: c.counters["reconnects"] == 1, what="reconnected")
        await until(lambda: book.synced and book.last_id == 250, what="quiet book resynced")
    assert api.count("BTCUSDT") == 2
    assert c.stats()["book"]["books"]["BTCUSDT"]["dropped"] == 1


async def test_server_shutdown_rotates_make_before_break(fake_ws: Any, http: HttpClient) -> None:
    ws = await fake_ws()
    sink = FakeSink()
    c = build_connector(settings(ws, channels=("trades",)), ["BTC/USDT"], sink, http,
                        options=fast_options())
    async with running(c):
        await until(lambda: ws.live())
        first = ws.live()[0]
        await ws.send(first, {"stream": "!serverShutdown",
                              "data": {"e": "serverShutdown", "E": TS}})
        await until(lambda: len(ws.conns) == 2, what="a second connection")
        second = ws.conns[1]
        await ws.send(second, trade("BTCUSDT", 5))
        await ws.send(first, trade("BTCUSDT", 5))  # the overlap delivers it twice
        await until(lambda: c.clients[0].stats.rotations == 1, what="rotation")
        await until(lambda: first.closed, what="old socket closed")
        assert [t.trade_id for t in sink.trades()] == [5]
        assert c.stats()["controls"]["server_shutdown"] == 1


async def test_stale_stream_is_resubscribed_alone(fake_ws: Any, http: HttpClient) -> None:
    ws = await fake_ws()
    sink = FakeSink()
    c = build_connector(settings(ws, channels=("trades",), stale_after_s=0.4),
                        ["BTC/USDT", "ETH/USDT"], sink, http, options=fast_options())

    async def btc_only() -> None:
        for i in range(1, 1000):
            await ws.broadcast(trade("BTCUSDT", i))
            await asyncio.sleep(0.05)

    async with running(c):
        await until(lambda: ws.live())
        feeder = asyncio.create_task(btc_only())
        try:
            await until(lambda: any(m.get("method") == "SUBSCRIBE" for m in ws.conns[0].received),
                        what="a resubscribe")
        finally:
            feeder.cancel()
        methods = [(m["method"], m["params"]) for m in ws.conns[0].received]
        # SUBSCRIBE alone: no unsubscribed moment in which updates would be missed.
        assert methods[:1] == [("SUBSCRIBE", ["ethusdt@trade"])]
        assert "UNSUBSCRIBE" not in {m for m, _ in methods}
        assert len(ws.conns) == 1  # the connection itself was never dropped
        assert c.stats()["stale_streams"] >= 1


async def test_429_on_snapshots_is_waited_out_not_stormed(
    fake_ws: Any, rest_app: Any, http: HttpClient
) -> None:
    ws = await fake_ws()
    api = DepthApi(limited_for_s=0.5)
    syms = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    for i, sym in enumerate(syms):
        api.books[sym] = {"lastUpdateId": 100 * (i + 1), "bids": [["1.0", "1"]],
                          "asks": [["2.0", "1"]]}
    rest = await rest_app([web.get("/api/v3/depth", api.handle)])
    st = settings(ws, rest, channels=("book",), symbols=("BTC/USDT", "ETH/USDT", "BNB/USDT"))
    http.set_limiter("binance", rest_limiter("binance", st))
    c = build_connector(st, ["BTC/USDT", "ETH/USDT", "BNB/USDT"], FakeSink(), http,
                        options=fast_options())
    assert c.keeper is not None
    books = c.keeper.books
    started = time.monotonic()
    async with running(c):
        await until(lambda: ws.live())
        for i, sym in enumerate(syms):
            await ws.broadcast(depth(sym, 100 * (i + 1), 100 * (i + 1) + 1))
        await until(lambda: all(b.synced for b in books.values()), timeout_s=10)
    limited = sum(1 for _, status in api.calls if status == 429)
    assert 1 <= limited <= 2  # the requests already in flight (2 workers), then everyone waits
    assert len(api.calls) == len(syms) + limited
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured


async def test_a_full_sink_stops_reading_and_frames_are_recorded(
    fake_ws: Any, http: HttpClient, tmp_path: Any
) -> None:
    ws = await fake_ws()
    sink = FakeSink()
    sink.open.clear()  # the writer's memory is full
    recorder = Recorder(tmp_path / "rec", flush_interval_s=0.05)
    c = build_connector(settings(ws, channels=("trades",)), ["BTC/USDT"], sink, http,
                        recorder=recorder, options=fast_options())
    async with running(c):
        await until(lambda: ws.live())
        for i in range(1, 4):
            await ws.send(ws.live()[0], trade("BTCUSDT", i))
        await until(lambda: c.counters["frames_received"] == 1)
        await asyncio.sleep(0.1)
        assert c.counters["frames_received"] == 1 and sink.records == []  # waiting in put
        sink.open.set()
        await until(lambda: len(sink.trades()) == 3)
    recorder.close()
    frames = [r for r in read_capture(tmp_path / "rec") if r.kind == "recv"]
    assert len(frames) == 3 and '"t": 1,' in str(frames[0].payload)

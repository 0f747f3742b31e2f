"""HTX connector against a local websocket server sending gzip frames."""

from __future__ import annotations

import gzip
import time
from typing import Any

from ingest.exchanges.huobi.stream import build_connector
from ingest.settings import ExchangeSettings
from ingest.transport.http import HttpClient
from tests.connectors.conftest import Conn, FakeSink, FakeWs, fast_options, running, until

TS = 1_700_000_040_000


class HtxServer:
    """Acks sub/unsub; answers a mbp ``req`` with the image the test set; records reqs."""

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}
        self.reqs: list[tuple[str, str]] = []  # (path, topic)
        self.req_times: list[float] = []

    async def on_message(self, ws: FakeWs, conn: Conn, msg: dict[str, Any]) -> None:
        if "sub" in msg:
            await ws.send(conn, {"id": msg["id"], "status": "ok", "subbed": msg["sub"], "ts": TS})
        elif "unsub" in msg:
            await ws.send(conn, {"id": msg["id"], "status": "ok", "unsubbed": msg["unsub"],
                                 "ts": TS})
        elif "req" in msg:
            self.reqs.append((conn.path, msg["req"]))
            self.req_times.append(time.monotonic())
            if msg["req"] in self.images:
                await ws.send(conn, {"id": msg["id"], "rep": msg["req"], "status": "ok",
                                     "ts": TS, "data": self.images[msg["req"]]})


def mbp(sym: str, prev: int, seq: int, bids: list[list[float]] | None = None,
        asks: list[list[float]] | None = None) -> dict[str, Any]:
    tick: dict[str, Any] = {"seqNum": seq, "prevSeqNum": prev}
    if bids:
        tick["bids"] = bids
    if asks:
        tick["asks"] = asks
    return {"ch": f"market.{sym}.mbp.150", "ts": TS, "tick": tick}


def trade(sym: str, tid: int) -> dict[str, Any]:
    return {"ch": f"market.{sym}.trade.detail", "ts": TS, "tick": {"id": 1, "ts": TS, "data": [
        {"id": 1.3700544510935929e+26, "ts": TS, "tradeId": tid, "amount": 0.006754,
         "price": 52648.62, "direction": "buy"}]}}


def kline(sym: str, minute: int, close: float) -> dict[str, Any]:
    return {"ch": f"market.{sym}.kline.1min", "ts": TS, "tick": {
        "id": TS // 1000 + 60 * minute, "open": 1.5, "close": close, "low": 1.0, "high": 2.0,
        "amount": 2.4448, "vol": 9.2e-7, "count": 3}}


def settings(ws: FakeWs, **kw: Any) -> ExchangeSettings:
    base: dict[str, Any] = {
        "symbols": ("BTC/USDT", "ETH/USDT"), "channels": ("trades", "candles", "book"),
        "candle_intervals": ("1m",), "book_depth": 2, "snapshot_interval_s": 0.2,
        "ws_url": ws.url("/huobi/ws"), "ws_feed_url": ws.url("/huobi/feed"),
        "rest_url": "http://127.0.0.1:9/huobi", "stale_after_s": 30.0,
    }
    base.update(kw)
    return ExchangeSettings(**base)


async def test_ping_pong_subs_trades_and_candles(fake_ws: Any, http: HttpClient) -> None:
    server = HtxServer()
    ws = await fake_ws(gzip_frames=True, on_message=server.on_message)
    sink = FakeSink()
    c = build_connector(settings(ws, channels=("trades", "candles")), ["BTC/USDT"], sink, http,
                        options=fast_options())
    async with running(c):
        await until(lambda: ws.live("/huobi/ws") and len(ws.conns[0].received) == 2)
        conn = ws.conns[0]
        assert [m["sub"] for m in conn.received] == ["market.btcusdt.trade.detail",
                                                     "market.btcusdt.kline.1min"]
        await ws.send(conn, {"ping": 1492420473027})
        await until(lambda: {"pong": 1492420473027} in conn.received, what="the pong")
        for frame in (trade("btcusdt", 102523573486), kline("btcusdt", 0, 1.75),
                      kline("btcusdt", 0, 1.8), kline("btcusdt", 1, 1.9)):
            await ws.send(conn, frame)
        await conn.ws.send(b"\x1f\x8b not really gzip")
        await conn.ws.send(gzip.compress(b"{" + b" " * 5_000_000 + b"}"))  # inflates too far
        await until(lambda: sink.candles() and sink.trades())
        (t,) = sink.trades()
        assert (t.trade_id, t.price, t.quantity, t.is_buyer_maker) == (
            102523573486, "52648.62", "0.006754", False)
        (k,) = sink.candles()
        assert (k.close, k.quote_volume, k.trades_count, k.closed) == ("1.8", "0.00000092", 3,
                                                                       True)
        await until(lambda: c.stats()["frames"]["transport_rejected"] == 2)
        assert c.stats()["controls"]["subscribed"] == 2


async def test_mbp_req_aligns_with_buffered_increments_on_the_feed_socket(
    fake_ws: Any, http: HttpClient
) -> None:
    server = HtxServer()
    ws = await fake_ws(gzip_frames=True, on_message=server.on_message)
    sink = FakeSink()
    c = build_connector(settings(ws, channels=("book",)), ["BTC/USDT", "ETH/USDT"], sink, http,
                        options=fast_options())
    assert c.keeper is not None
    books = c.keeper.books
    async with running(c):
        await until(lambda: ws.live("/huobi/feed") and len(ws.conns[0].received) == 2)
        feed = ws.conns[0]
        assert [m["sub"] for m in feed.received] == ["market.btcusdt.mbp.150",
                                                     "market.ethusdt.mbp.150"]
        # Increments cached before the image; the REQ's seqNum lines up with prevSeqNum 201.
        server.images["market.btcusdt.mbp.150"] = {
            "seqNum": 201, "bids": [[100.5, 1], [100, 2]], "asks": [[101, 1], [102, 2]]}
        server.images["market.ethusdt.mbp.150"] = {"seqNum": 5, "bids": [[10, 1]],
                                                   "asks": [[11, 1]]}
        await ws.send(feed, mbp("ethusdt", 5, 6))
        await ws.send(feed, mbp("btcusdt", 200, 201, bids=[[100.5, 1]]))
        await ws.send(feed, mbp("btcusdt", 201, 202, asks=[[101, 0]]))
        await ws.send(feed, mbp("btcusdt", 202, 203, bids=[[100.7, 3]]))
        await until(lambda: books["BTCUSDT"].synced and books["ETHUSDT"].synced)
        assert sorted(server.reqs) == [("/huobi/feed", "market.btcusdt.mbp.150"),
                                       ("/huobi/feed", "market.ethusdt.mbp.150")]
        # At most one req per 100 ms on a connection.
        assert server.req_times[1] - server.req_times[0] >= 0.1
        assert books["BTCUSDT"].last_id == 203
        assert books["BTCUSDT"].top(2) == ((("100.7", "3"), ("100.5", "1")),
                                            (("102", "2"),))
        # A lost increment: only BTC is re-requested.
        server.images["market.btcusdt.mbp.150"] = {"seqNum": 210, "bids": [[99, 1]],
                                                   "asks": [[103, 1]]}
        await ws.send(feed, mbp("btcusdt", 205, 206))
        await until(lambda: len(server.reqs) == 3)
        await ws.send(feed, mbp("btcusdt", 210, 211, asks=[[103, 5]]))
        await until(lambda: books["BTCUSDT"].last_id == 211)
        assert books["BTCUSDT"].top(1) == ((("99", "1"),), (("103", "5"),))
        assert [t for _, t in server.reqs].count("market.btcusdt.mbp.150") == 2
        assert books["ETHUSDT"].last_id == 6
        assert c.stats()["book"]["books"]["ETHUSDT"]["gaps"] == 0
        await until(lambda: any(s.last_update_id == 211 for s in sink.snapshots("BTCUSDT")))

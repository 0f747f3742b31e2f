"""Simulated HTX (Huobi) spot websocket (protocols.md §3.1-3.2) at ``/huobi/ws`` and
``/huobi/feed``.

Every server frame is gzip-compressed binary. The server sends ``{"ping": n}`` every
``huobi_ping_interval_s`` and disconnects a client that has left two consecutive pings
unanswered when the next one is due; ``{"pong": n}`` must echo a ping's number. ``sub`` takes
a topic or an array of topics (acknowledged with ``subbed``), ``unsub`` likewise, and ``req``
answers ``market.X.mbp.N`` (N ≤ 150) with a full image whose ``seqNum`` lines up with the
increments' ``prevSeqNum``, and ``market.X.kline.P`` with ``from``/``to`` history.
Prices and amounts are JSON numbers written from the decimal text (never through a float).
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from typing import Any

import msgspec
import structlog

from ingest.sim import book as books
from ingest.sim import conn as conns
from ingest.sim.feed import Feed, FeedConfig, LiveMarket, Topic
from ingest.sim.intervals import native_interval
from ingest.sim.market import MarketModel, Summary, Trade, TradeBatch
from ingest.sim.rest import select_windows, strip_zeros

log = structlog.get_logger("ingest.sim")
_encode = msgspec.json.Encoder().encode
_MBP_LEVELS = (5, 20, 150, 400)


def num(text: str) -> msgspec.Raw:
    """A JSON number from decimal text: '0.00000092' stays exact, unlike a float."""
    return msgspec.Raw(strip_zeros(text).encode())


class GzipWriter:
    """Each frame as a gzip member, as HTX sends it (RFC 1952): header (no name, mtime 0,
    Unix), deflate blocks, a final empty block, CRC-32 and size.

    One deflate state serves every frame: a full flush ends a frame's blocks on a byte
    boundary and forgets its data, so every member stands alone. (Setting up a deflate state
    for each frame costs more than compressing it.) Level 0 writes stored blocks: valid gzip
    at a fraction of the cost, but larger and cheaper to inflate than what HTX sends.
    """

    _FINAL_EMPTY_BLOCK = b"\x03\x00"  # BFINAL, fixed Huffman, end of block
    _TRAILER = struct.Struct("<II").pack

    def __init__(self, level: int) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 2)
        xfl = 4 if level == 1 else 2 if level == 9 else 0  # as zlib marks its own members
        self._header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes((xfl, 3))

    def __call__(self, data: bytes) -> bytes:
        deflate = self._deflate
        return b"".join((
            self._header, deflate.compress(data), deflate.flush(zlib.Z_FULL_FLUSH),
            self._FINAL_EMPTY_BLOCK, self._TRAILER(zlib.crc32(data), len(data) & 0xFFFFFFFF),
        ))


def tick_id(lm: LiveMarket, trade: Trade) -> int:
    return _tick_id(trade.id, lm.model.id_base)


def _tick_id(trade_id: int, id_base: int) -> int:
    return trade_id + id_base


def legacy_id(lm: LiveMarket, trade: Trade) -> float:
    """The deprecated float trade ``id`` (e.g. 1.3700544510935929e+26): tick id digits
    followed by 15 more, which no float can hold exactly - hence ``tradeId``."""
    return _legacy_id(trade.id, lm.model.id_base)


def _legacy_id(trade_id: int, id_base: int) -> float:
    # float(int) rounds like float(text): to the nearest double
    return float(_tick_id(trade_id, id_base) * 10**15 + trade_id * 7919 % 10**15)


def trade_item(lm: LiveMarket, trade: Trade, id_key: str) -> dict[str, Any]:
    spec = lm.spec
    return {
        "id": legacy_id(lm, trade), "ts": trade.ts_ms, id_key: trade.id,
        "amount": num(spec.qty_text(trade.qty)), "price": num(spec.price_text(trade.price)),
        "direction": "sell" if trade.buyer_maker else "buy",
    }


def kline_tick(lm: LiveMarket, s: Summary) -> dict[str, Any]:
    spec = lm.spec
    return {
        "id": s.start_ms // 1000, "open": num(spec.price_text(s.open)),
        "close": num(spec.price_text(s.close)), "low": num(spec.price_text(s.low)),
        "high": num(spec.price_text(s.high)), "amount": num(spec.qty_text(s.volume)),
        "vol": num(spec.quote_text(s.quote_volume)), "count": s.count,
    }


def levels_num(levels: books.Diff, lm: LiveMarket) -> list[list[msgspec.Raw]]:
    spec = lm.spec
    return [[num(spec.price_text(p)), num(spec.qty_text(q))] for p, q in levels]


class TopicError(ValueError):
    pass


class HuobiFeed(Feed):
    exchange = "huobi"

    def __init__(self, config: FeedConfig, models: dict[str, MarketModel]) -> None:
        super().__init__(config, models)
        self._gzip = GzipWriter(config.huobi_gzip_level)

    def gz(self, obj: Any) -> bytes:
        return self._gzip(_encode(obj))

    def trade_frame(self, topic: Topic, lm: LiveMarket, trade: Trade, now_ms: int) -> bytes:
        return self.gz({
            "ch": topic.key, "ts": now_ms,
            "tick": {"id": tick_id(lm, trade), "ts": trade.ts_ms,
                     "data": [trade_item(lm, trade, "tradeId")]},
        })

    def trade_frames(
        self, topic: Topic, lm: LiveMarket, batch: TradeBatch, now_ms: int
    ) -> list[conns.Frame]:
        """``trade_frame`` of each trade, the JSON written directly (as msgspec writes it)."""
        spec, base = lm.spec, lm.model.id_base
        prices = lm.texts("number price", lambda v: strip_zeros(spec.price_text(v)))
        qtys = lm.texts("number qty", lambda v: strip_zeros(spec.qty_text(v)))
        # msgspec writes the floats (in one call: "[a,b,…]")
        legacy = _encode([_legacy_id(g, base) for g in batch.ids])[1:-1].decode().split(",")
        head = f'{{"ch":{_encode(topic.key).decode()},"ts":{now_ms},"tick":{{"id":'
        texts = [
            f'{head}{_tick_id(g, base)},"ts":{ts},"data":[{{"id":{legacy_g},"ts":{ts},"tradeId":{g},'
            f'"amount":{qtys[q]},"price":{prices[p]},'
            f'"direction":"{"sell" if sell else "buy"}"}}]}}}}'
            for g, ts, p, q, sell, legacy_g in zip(
                batch.ids, batch.ts_ms, batch.prices, batch.qtys, batch.buyer_maker, legacy,
                strict=True,
            )
        ]
        return [self._gzip(text.encode()) for text in texts]

    def kline_frame(
        self, topic: Topic, lm: LiveMarket, s: Summary, closed: bool, now_ms: int
    ) -> bytes:
        # No closed flag on HTX: the final state of a window is its last push before the
        # first push of the next window.
        return self.gz({"ch": topic.key, "ts": now_ms, "tick": kline_tick(lm, s)})

    def book_frame(
        self,
        topic: Topic,
        lm: LiveMarket,
        bids: books.Diff,
        asks: books.Diff,
        now_ms: int,
        *,
        first_id: int = 0,
        full: bool = False,
    ) -> bytes:
        if full:  # depth.step0: a full image with its version
            return self.gz({"ch": topic.key, "ts": now_ms, "tick": {
                "bids": levels_num(books.sorted_levels(topic.bids, True), lm),
                "asks": levels_num(books.sorted_levels(topic.asks, False), lm),
                "version": topic.last_id, "ts": now_ms,
            }})
        tick: dict[str, Any] = {"seqNum": topic.last_id, "prevSeqNum": first_id - 1}
        if bids:
            tick["bids"] = levels_num(bids, lm)
        if asks:
            tick["asks"] = levels_num(asks, lm)
        return self.gz({"ch": topic.key, "ts": now_ms, "tick": tick})

    # -- topics and requests -------------------------------------------------------------

    def parse_topic(self, name: Any) -> Topic:
        parts = str(name).split(".")
        lm = self.markets.get(parts[1].upper()) if len(parts) >= 4 else None
        if lm is None or parts[0] != "market" or parts[1] != parts[1].lower():
            raise TopicError(f"invalid topic {name}")
        symbol, kind, arg = lm.spec.symbol, parts[2], ".".join(parts[3:])
        if kind == "trade" and arg == "detail":
            return Topic(name, "trade", symbol)
        if kind == "kline" and (iv := native_interval("huobi", arg)) is not None:
            return Topic(name, "kline", symbol, interval=iv, native=arg)
        if kind == "depth" and arg == "step0":
            return Topic(name, "snap", symbol, depth=150, period_ms=1000)
        if kind == "mbp" and arg.isdigit() and int(arg) in _MBP_LEVELS:
            return Topic(name, "diff", symbol, depth=int(arg), period_ms=100)
        raise TopicError(f"invalid topic {name}")

    def _send(self, conn: conns.ClientConn, body: dict[str, Any]) -> None:
        conn.send(self.gz(body), data=False)

    def _error(self, conn: conns.ClientConn, req_id: Any, message: str) -> None:
        self._send(conn, {"status": "error", "ts": self.now_ms(), "id": req_id,
                          "err-code": "bad-request", "err-msg": message})

    async def on_text(self, conn: conns.ClientConn, text: str) -> None:
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except ValueError:
            self._error(conn, None, "invalid json")
            return
        req_id = msg.get("id")
        try:
            if "pong" in msg:
                self._on_pong(conn, msg["pong"])
            elif "ping" in msg:
                self._send(conn, {"pong": msg["ping"]})
            elif "sub" in msg:
                self._sub(conn, msg["sub"], req_id)
            elif "unsub" in msg:
                self._unsub(conn, msg["unsub"], req_id)
            elif "req" in msg:
                self._req(conn, msg, req_id)
            else:
                raise TopicError("invalid request")
        except TopicError as exc:
            self._error(conn, req_id, str(exc))

    def _sub(self, conn: conns.ClientConn, names: Any, req_id: Any) -> None:
        topics = [self.parse_topic(n) for n in (names if isinstance(names, list) else [names])]
        for topic in topics:
            self.subscribe(conn, topic)
        self._send(conn, {"id": req_id, "status": "ok", "subbed": names, "ts": self.now_ms()})

    def _unsub(self, conn: conns.ClientConn, names: Any, req_id: Any) -> None:
        for name in names if isinstance(names, list) else [names]:
            self.unsubscribe(conn, str(name))
        self._send(conn, {"id": req_id, "status": "ok", "unsubbed": names, "ts": self.now_ms()})

    def _req(self, conn: conns.ClientConn, msg: dict[str, Any], req_id: Any) -> None:
        topic = self.parse_topic(msg["req"])
        lm = self.markets[topic.symbol]
        now = self.now_ms()
        if topic.kind == "diff" and topic.depth <= 150:
            live = self.topics.get(topic.key)
            if live is not None:  # the image the increments continue from
                bids, asks, seq = live.bids, live.asks, live.last_id
            else:
                (bids, asks), seq = lm.book.top(topic.depth), lm.book.update_id
            data: Any = {
                "seqNum": seq,
                "bids": levels_num(books.sorted_levels(bids, True), lm),
                "asks": levels_num(books.sorted_levels(asks, False), lm),
            }
        elif topic.kind == "kline" and topic.interval is not None:
            iv = topic.interval
            start = msg.get("from")
            end = msg.get("to")
            starts = select_windows(iv, None if start is None else int(start) * 1000,
                                    None if end is None else int(end) * 1000, 300, now)
            data = [kline_tick(lm, lm.model.summary(s, min(iv.end(s), now + 1))) for s in starts]
        else:
            raise TopicError(f"invalid topic {msg['req']}")
        self._send(conn, {"id": req_id, "rep": topic.key, "status": "ok", "ts": now,
                          "data": data})

    # -- heartbeat ------------------------------------------------------------------------

    def _on_pong(self, conn: conns.ClientConn, value: Any) -> None:
        if value in conn.state["pings"]:
            conn.state["pings"].clear()

    async def pinger(self, conn: conns.ClientConn) -> None:
        pings: list[int] = conn.state["pings"]
        while not conn.closed:
            await asyncio.sleep(self.config.huobi_ping_interval_s)
            if len(pings) >= 2:  # two consecutive pings unanswered
                log.info("sim.huobi_missed_pongs", conn=conn.id, missed=len(pings))
                await conn.close(1001, "ping timeout")
                return
            value = self.now_ms()
            pings.append(value)
            conn.send(self.gz({"ping": value}), data=False)

    async def handle_ws(self, request: Any) -> Any:
        def setup(conn: conns.ClientConn) -> None:
            conn.state["pings"] = []

        return await conns.serve(
            request, exchange=self.exchange, register=self.register,
            unregister=self.unregister, on_text=self.on_text, tasks=(self.pinger,),
            setup=setup, queue_max=self.config.queue_max, faults=self.config.faults,
            seed=self.config.seed,
        )

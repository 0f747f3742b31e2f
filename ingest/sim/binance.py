"""Simulated Binance spot websocket streams (protocols.md §1.1-1.2).

``/binance/stream?streams=a/b`` (combined: events wrapped ``{"stream":..,"data":..}``),
``/binance/ws`` and ``/binance/ws/<stream>`` (raw). Live ``SUBSCRIBE``/``UNSUBSCRIBE``/
``LIST_SUBSCRIPTIONS``/``SET_PROPERTY``/``GET_PROPERTY``. The server sends a ping frame every
``binance_ping_interval_s`` and disconnects a client whose pong (copying the ping payload) has
not arrived within ``binance_pong_timeout_s``; more than ``binance_max_msgs_per_s`` incoming
messages (text, ping or pong) in a second also disconnect, as on Binance.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from ingest.sim import book as books
from ingest.sim import conn as conns
from ingest.sim.feed import Feed, LiveMarket, Topic
from ingest.sim.intervals import native_interval
from ingest.sim.market import MarketModel, Summary, Trade, TradeBatch
from ingest.sim.rest import dumps
from ingest.sim.spec import fixed

log = structlog.get_logger("ingest.sim")
MAX_STREAMS = 1024  # per connection, as on Binance
_DEPTH = re.compile(r"depth(5|10|20)?(@100ms|@1000ms)?")


def b8(value: int, decimals: int) -> str:
    """Binance prints every price and quantity with 8 decimals: '0.35280000'."""
    return fixed(value * 10 ** (8 - decimals), 8)


def agg_id(model: MarketModel, trade_id: int) -> int:
    """Aggregate trade id: one aggregate per trade, in its own (smaller) number space."""
    return trade_id - model.id_base // 2


def levels8(levels: books.Diff, lm: LiveMarket) -> list[list[str]]:
    pd, qd = lm.spec.price_decimals, lm.spec.qty_decimals
    return [[b8(p, pd), b8(q, qd)] for p, q in levels]


class StreamError(ValueError):
    pass


class BinanceFeed(Feed):
    exchange = "binance"

    # -- frames ---------------------------------------------------------------------------

    def trade_frame(self, topic: Topic, lm: LiveMarket, trade: Trade, now_ms: int) -> str:
        spec = lm.spec
        price, qty = b8(trade.price, spec.price_decimals), b8(trade.qty, spec.qty_decimals)
        if topic.params.get("agg"):
            return dumps({
                "e": "aggTrade", "E": now_ms, "s": spec.symbol,
                "a": agg_id(lm.model, trade.id), "p": price, "q": qty, "f": trade.id,
                "l": trade.id, "T": trade.ts_ms, "m": trade.buyer_maker, "M": True,
            })
        return dumps({
            "e": "trade", "E": now_ms, "s": spec.symbol, "t": trade.id, "p": price, "q": qty,
            "T": trade.ts_ms, "m": trade.buyer_maker, "M": True,
        })

    def trade_frames(
        self, topic: Topic, lm: LiveMarket, batch: TradeBatch, now_ms: int
    ) -> list[conns.Frame]:
        """``trade_frame`` of each trade, the JSON written directly (as dumps writes it)."""
        spec = lm.spec
        pd, qd = spec.price_decimals, spec.qty_decimals
        prices = lm.texts("b8 price", lambda v: b8(v, pd))
        qtys = lm.texts("b8 qty", lambda v: b8(v, qd))
        rows = zip(batch.ids, [prices[p] for p in batch.prices], [qtys[q] for q in batch.qtys],
                   batch.ts_ms, batch.buyer_maker, strict=True)
        symbol = dumps(spec.symbol)
        if topic.params.get("agg"):
            model = lm.model
            head = f'{{"e":"aggTrade","E":{now_ms},"s":{symbol},"a":'
            return [
                f'{head}{agg_id(model, g)},"p":"{p}","q":"{q}","f":{g},"l":{g},"T":{ts},'
                f'"m":{"true" if sell else "false"},"M":true}}'
                for g, p, q, ts, sell in rows
            ]
        head = f'{{"e":"trade","E":{now_ms},"s":{symbol},"t":'
        return [
            f'{head}{g},"p":"{p}","q":"{q}","T":{ts},"m":{"true" if sell else "false"},"M":true}}'
            for g, p, q, ts, sell in rows
        ]

    def kline_frame(
        self, topic: Topic, lm: LiveMarket, s: Summary, closed: bool, now_ms: int
    ) -> str:
        assert topic.interval is not None
        return dumps({
            "e": "kline", "E": now_ms, "s": lm.spec.symbol,
            "k": kline_fields(lm, s, topic.interval.end(s.start_ms), topic.native, closed),
        })

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
    ) -> str:
        if full:  # partial book depth stream: top N, no symbol, no event time
            return dumps({
                "lastUpdateId": topic.last_id,
                "bids": levels8(books.sorted_levels(topic.bids, True), lm),
                "asks": levels8(books.sorted_levels(topic.asks, False), lm),
            })
        return dumps({
            "e": "depthUpdate", "E": now_ms, "s": lm.spec.symbol, "U": first_id,
            "u": topic.last_id, "b": levels8(bids, lm), "a": levels8(asks, lm),
        })

    def deliver(self, topic: Topic, frame: conns.Frame) -> bool:
        wrapped: str | None = None
        sent = False
        for conn in list(topic.conns):
            if conn.state.get("combined"):
                if wrapped is None:
                    wrapped = f'{{"stream":"{topic.key}","data":{frame!s}}}'
                sent = conn.send(wrapped) or sent
            else:
                sent = conn.send(frame) or sent
        return sent

    def deliver_many(self, topic: Topic, frames: list[conns.Frame]) -> int:
        wrapped: list[conns.Frame] | None = None
        taken = 0
        for conn in list(topic.conns):
            if conn.state.get("combined"):
                if wrapped is None:
                    head = f'{{"stream":"{topic.key}","data":'
                    wrapped = [f"{head}{frame!s}}}" for frame in frames]
                taken = max(taken, conn.send_many(wrapped))
            else:
                taken = max(taken, conn.send_many(frames))
        return taken

    # -- streams and control messages -----------------------------------------------------

    def parse_stream(self, name: str) -> Topic | None:
        """The topic for a stream name; None for a well-formed name of an unknown symbol
        (Binance accepts those and never sends anything). Raises StreamError otherwise."""
        sym, sep, rest = name.partition("@")
        if not sep or not sym or sym != sym.lower():
            raise StreamError(f"Invalid request: invalid stream name {name!r}")
        symbol = sym.upper()
        if rest in ("trade", "aggTrade"):
            topic = Topic(name, "trade", symbol, agg=rest == "aggTrade")
        elif rest.startswith("kline_"):
            iv = native_interval("binance", rest[6:])
            if iv is None:
                raise StreamError(f"Invalid request: invalid kline interval in {name!r}")
            topic = Topic(name, "kline", symbol, interval=iv, native=rest[6:])
        elif m := _DEPTH.fullmatch(rest):
            period = 100 if m.group(2) == "@100ms" else 1000
            if m.group(1):
                topic = Topic(name, "snap", symbol, depth=int(m.group(1)), period_ms=period)
            else:
                topic = Topic(name, "diff", symbol, depth=0, period_ms=period)
        else:
            raise StreamError(f"Invalid request: unsupported stream {name!r}")
        return topic if symbol in self.markets else None

    def _add(self, conn: conns.ClientConn, name: str, topic: Topic | None) -> None:
        streams: list[str] = conn.state["streams"]
        if name not in streams:
            if len(streams) >= MAX_STREAMS:
                raise StreamError(f"Invalid request: more than {MAX_STREAMS} streams")
            streams.append(name)
        if topic is not None:
            self.subscribe(conn, topic)

    def _remove(self, conn: conns.ClientConn, name: str) -> None:
        streams: list[str] = conn.state["streams"]
        if name in streams:
            streams.remove(name)
        self.unsubscribe(conn, name)

    async def on_text(self, conn: conns.ClientConn, text: str) -> None:
        if not await self._count_message(conn):
            return
        try:
            msg = json.loads(text)
            method, req_id = msg.get("method"), msg.get("id")
        except (ValueError, AttributeError) as exc:
            _reply(conn, {"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}, "id": None})
            return
        params = msg.get("params") or []
        try:
            if not isinstance(params, list):
                raise StreamError("Invalid request: params must be an array")
            result = self._control(conn, method, params)
        except StreamError as exc:
            _reply(conn, {"error": {"code": 2, "msg": str(exc)}, "id": req_id})
            return
        _reply(conn, {"result": result, "id": req_id})

    def _control(self, conn: conns.ClientConn, method: Any, params: list[Any]) -> Any:
        if method == "SUBSCRIBE":
            topics = [(name, self.parse_stream(str(name))) for name in params]
            for name, topic in topics:
                self._add(conn, name, topic)
            return None
        if method == "UNSUBSCRIBE":
            for name in params:
                self._remove(conn, str(name))
            return None
        if method == "LIST_SUBSCRIPTIONS":
            return list(conn.state["streams"])
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not params or params[0] != "combined":
                raise StreamError("Unknown property")
            if method == "GET_PROPERTY":
                return bool(conn.state["combined"])
            if len(params) != 2 or not isinstance(params[1], bool):
                raise StreamError("Invalid value type: expected Boolean")
            conn.state["combined"] = params[1]
            return None
        raise StreamError(
            f"Invalid request: unknown variant {method!r}, expected one of `SUBSCRIBE`, "
            "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
        )

    async def _count_message(self, conn: conns.ClientConn) -> bool:
        """Binance's inbound limit: pings, pongs and JSON messages all count."""
        now = asyncio.get_running_loop().time()
        times: deque[float] = conn.state["msg_times"]
        times.append(now)
        while times and times[0] <= now - 1.0:
            times.popleft()
        if len(times) > self.config.binance_max_msgs_per_s:
            log.info("sim.binance_rate_limited", conn=conn.id, messages=len(times))
            await conn.close(1008, "Too many requests")
            return False
        return True

    async def on_control(self, conn: conns.ClientConn, kind: WSMsgType, data: bytes) -> None:
        if not await self._count_message(conn):
            return
        data = bytes(data)  # aiohttp hands over a bytearray
        if kind == WSMsgType.PING:
            await conn.ws.pong(data)
            return
        pings: dict[bytes, float] = conn.state["pings"]
        sent_at = pings.get(data)
        if sent_at is not None:  # answers this ping and every earlier one
            for payload in [p for p, t in pings.items() if t <= sent_at]:
                del pings[payload]

    async def pinger(self, conn: conns.ClientConn) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.binance_ping_interval_s
        timeout = self.config.binance_pong_timeout_s
        pings: dict[bytes, float] = conn.state["pings"]
        next_ping = loop.time() + interval
        while not conn.closed:
            await asyncio.sleep(min(interval, timeout) / 4)
            now = loop.time()
            if pings and now - min(pings.values()) > timeout:
                log.info("sim.binance_pong_timeout", conn=conn.id)
                await conn.close(1008, "Pong timeout")
                return
            if now >= next_ping:
                payload = str(self.now_ms()).encode()
                pings[payload] = now
                next_ping = now + interval
                await conn.ws.ping(payload)

    async def server_shutdown(self, grace_s: float = 1.0) -> None:
        """Announce ``serverShutdown`` on every connection, then close them."""
        targets = list(self.conns)
        event = dumps({"e": "serverShutdown", "E": self.now_ms()})
        for conn in targets:
            combined = conn.state.get("combined")
            conn.send(f'{{"stream":"!serverShutdown","data":{event}}}' if combined else event,
                      data=False)
        await asyncio.sleep(grace_s)
        await asyncio.gather(*(c.close(1001, "Server shutdown") for c in targets))

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        combined = request.path.rstrip("/").endswith("/stream")
        raw = request.query.get("streams", "") if combined else request.match_info.get("tail", "")
        names = [n for n in raw.split("/") if n]
        try:
            topics = [self.parse_stream(n) for n in names]
        except StreamError as exc:
            return web.json_response({"code": -1121, "msg": str(exc)}, status=400)

        def setup(conn: conns.ClientConn) -> None:
            conn.state.update(combined=combined, streams=[], pings={}, msg_times=deque())
            for name, topic in zip(names, topics, strict=True):
                self._add(conn, name, topic)

        return await conns.serve(
            request, exchange=self.exchange, register=self.register,
            unregister=self.unregister, on_text=self.on_text, on_control=self.on_control,
            tasks=(self.pinger,), setup=setup, queue_max=self.config.queue_max,
            faults=self.config.faults, seed=self.config.seed,
        )


def _reply(conn: conns.ClientConn, body: dict[str, Any]) -> None:
    conn.send(dumps(body), data=False)


def kline_fields(
    lm: LiveMarket, s: Summary, end_ms: int, native: str, closed: bool
) -> dict[str, Any]:
    spec = lm.spec
    pd, qd, vd = spec.price_decimals, spec.qty_decimals, spec.quote_decimals
    return {
        "t": s.start_ms, "T": end_ms - 1, "s": spec.symbol, "i": native,
        "f": s.first_id, "L": s.last_id,
        "o": b8(s.open, pd), "c": b8(s.close, pd), "h": b8(s.high, pd), "l": b8(s.low, pd),
        "v": b8(s.volume, qd), "n": s.count, "x": closed, "q": b8(s.quote_volume, vd),
        "V": b8(s.buy_volume, qd), "Q": b8(s.buy_quote_volume, vd), "B": "0",
    }

"""Simulated Gate.io spot websocket v4 (protocols.md §2.1-2.2) at ``/gateio/ws/v4/``.

Requests ``{"time", "id"?, "channel", "event": "subscribe"|"unsubscribe", "payload"}`` are
answered ``{"time", "time_ms", "id"?, "channel", "event", "error": null, "result":
{"status": "success"}}``; ``spot.ping`` gets ``spot.pong``. Channels: ``spot.trades``
``[pair, …]``, ``spot.candlesticks`` ``[interval, pair]`` (``a`` base volume, ``w`` window
closed), ``spot.order_book_update`` ``[pair, "100ms"|"20ms"]`` (a ``full: true`` image first,
then ``U``/``u`` increments of the top 100/20 levels), ``spot.obu`` ``["ob.PAIR.50"|".400"]``
and ``spot.order_book`` ``[pair, levels, interval]`` snapshots. Protocol pings are answered.
"""

from __future__ import annotations

import json
from typing import Any

from ingest.sim import book as books
from ingest.sim import conn as conns
from ingest.sim.feed import Feed, LiveMarket, Topic
from ingest.sim.intervals import native_interval
from ingest.sim.market import Summary, Trade, TradeBatch
from ingest.sim.rest import dumps
from ingest.sim.walk import draw, stable_key

_OBU_LEVELS = {"50": 20, "400": 100}  # level → update period (ms)
_OBUPD_LEVELS = {"100ms": 100, "20ms": 20}  # interval → depth (period = interval)


def pair_of(lm: LiveMarket) -> str:
    return f"{lm.spec.base}_{lm.spec.quote}"


TAG_CREATE_FRAC = 13  # the draw behind a trade's create_time_ms fraction


def market_slot(lm: LiveMarket) -> int:
    return stable_key(lm.spec.symbol) % 1000


def global_id(lm: LiveMarket, seq: int) -> int:
    """Gate's ``id`` counts trades across markets; here: the market's sequence * 1000 plus a
    per-symbol slot, so it is unique per exchange and increasing within a market."""
    return seq * 1000 + market_slot(lm)


def create_time_ms(lm: LiveMarket, trade: Trade, digits: int) -> str:
    """Milliseconds with a fraction, as Gate prints them ('1606292218213.4578')."""
    frac = draw(lm.model.key, TAG_CREATE_FRAC, trade.id) % 10_000
    return f"{trade.ts_ms}.{frac:04d}" + "0" * (digits - 4)


def levels_text(levels: books.Diff, lm: LiveMarket) -> list[list[str]]:
    spec = lm.spec
    return [[spec.price_text(p), spec.qty_text(q)] for p, q in levels]


class SubscribeError(ValueError):
    pass


class GateFeed(Feed):
    exchange = "gateio"

    def stats_trade_id(self, lm: LiveMarket, trade_id: int) -> int:
        return global_id(lm, trade_id)

    def _envelope(self, channel: str, result: Any, now_ms: int) -> str:
        return dumps({
            "time": now_ms // 1000, "time_ms": now_ms, "channel": channel, "event": "update",
            "result": result,
        })

    def trade_frame(self, topic: Topic, lm: LiveMarket, trade: Trade, now_ms: int) -> str:
        spec = lm.spec
        return self._envelope("spot.trades", {
            "id": global_id(lm, trade.id), "id_market": trade.id,
            "create_time": trade.ts_ms // 1000, "create_time_ms": create_time_ms(lm, trade, 4),
            "side": "sell" if trade.buyer_maker else "buy", "currency_pair": pair_of(lm),
            "amount": spec.qty_text(trade.qty), "price": spec.price_text(trade.price),
            "range": f"{trade.id}-{trade.id}",
        }, now_ms)

    def trade_frames(
        self, topic: Topic, lm: LiveMarket, batch: TradeBatch, now_ms: int
    ) -> list[conns.Frame]:
        """``trade_frame`` of each trade, the JSON written directly (as dumps writes it)."""
        spec = lm.spec
        slot = market_slot(lm)  # as global_id
        ids = batch.ids
        fracs = [d % 10_000 for d in lm.model.draws(TAG_CREATE_FRAC, ids.start, ids.stop)]
        prices = lm.texts("price", spec.price_text)
        qtys = lm.texts("qty", spec.qty_text)
        head = (f'{{"time":{now_ms // 1000},"time_ms":{now_ms},"channel":"spot.trades",'
                f'"event":"update","result":{{"id":')
        pair = dumps(pair_of(lm))
        return [
            f'{head}{g * 1000 + slot},"id_market":{g},"create_time":{ts // 1000},'
            f'"create_time_ms":"{ts}.{frac:04d}","side":"{"sell" if sell else "buy"}",'
            f'"currency_pair":{pair},"amount":"{qtys[q]}","price":"{prices[p]}",'
            f'"range":"{g}-{g}"}}}}'
            for g, ts, p, q, sell, frac in zip(
                ids, batch.ts_ms, batch.prices, batch.qtys, batch.buyer_maker, fracs, strict=True
            )
        ]

    def kline_frame(
        self, topic: Topic, lm: LiveMarket, s: Summary, closed: bool, now_ms: int
    ) -> str:
        spec = lm.spec
        return self._envelope("spot.candlesticks", {
            "t": str(s.start_ms // 1000), "v": spec.quote_text(s.quote_volume),
            "c": spec.price_text(s.close), "h": spec.price_text(s.high),
            "l": spec.price_text(s.low), "o": spec.price_text(s.open),
            "n": f"{topic.native}_{pair_of(lm)}", "a": spec.qty_text(s.volume), "w": closed,
        }, now_ms)

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
        if full:
            bids = books.sorted_levels(topic.bids, True)
            asks = books.sorted_levels(topic.asks, False)
            first_id = topic.last_id
        channel = topic.key.split("|")[0]
        if channel == "spot.obu":
            result: dict[str, Any] = {"t": now_ms}
            if full:
                result["full"] = True
            result["s"] = topic.params["stream"]
            if not full:
                result["U"] = first_id
            result.update(u=topic.last_id, b=levels_text(bids, lm), a=levels_text(asks, lm))
            return dumps({"channel": channel, "result": result, "time_ms": now_ms})
        if channel == "spot.order_book":
            return self._envelope(channel, {
                "t": now_ms, "lastUpdateId": topic.last_id, "s": pair_of(lm),
                "l": str(topic.depth), "bids": levels_text(bids, lm),
                "asks": levels_text(asks, lm),
            }, now_ms)
        result = {"t": now_ms}
        if full:
            result["full"] = True
        result.update({
            "l": str(topic.depth), "e": "depthUpdate", "E": now_ms // 1000, "s": pair_of(lm),
            "U": first_id, "u": topic.last_id, "b": levels_text(bids, lm),
            "a": levels_text(asks, lm),
        })
        return self._envelope(channel, result, now_ms)

    # -- requests -------------------------------------------------------------------------

    def _lm(self, pair: Any) -> LiveMarket:
        lm = self.markets.get(str(pair).replace("_", "").upper())
        if lm is None or "_" not in str(pair):
            raise SubscribeError(f"unknown currency pair {pair}")
        return lm

    def topics_for(self, channel: str, payload: list[Any]) -> list[Topic]:
        """The topics a subscribe/unsubscribe request names; raises SubscribeError."""
        if channel == "spot.trades":
            return [Topic(f"{channel}|{p}", "trade", self._lm(p).spec.symbol) for p in payload]
        if channel == "spot.candlesticks" and len(payload) == 2:
            native, pair = str(payload[0]), payload[1]
            iv = native_interval("gateio", native)
            if iv is None:
                raise SubscribeError(f"invalid interval {native}")
            symbol = self._lm(pair).spec.symbol
            return [Topic(f"{channel}|{native}|{pair}", "kline", symbol, interval=iv,
                          native=native)]
        if channel == "spot.order_book_update" and len(payload) == 2:
            pair, speed = payload
            if speed not in _OBUPD_LEVELS:
                raise SubscribeError(f"invalid interval {speed}")
            depth, period = _OBUPD_LEVELS[speed], int(speed[:-2])
            return [Topic(f"{channel}|{pair}|{speed}", "diff", self._lm(pair).spec.symbol,
                          depth=depth, period_ms=period)]
        if channel == "spot.obu" and payload:
            return [self._obu_topic(str(stream)) for stream in payload]
        if channel == "spot.order_book" and len(payload) == 3:
            pair, level, speed = payload
            if str(level) not in ("5", "10", "20", "50", "100") or speed not in ("100ms", "1000ms"):
                raise SubscribeError(f"invalid payload {payload}")
            return [Topic(f"{channel}|{pair}|{level}|{speed}", "snap", self._lm(pair).spec.symbol,
                          depth=int(level), period_ms=int(speed[:-2]))]
        raise SubscribeError(f"unknown channel or invalid payload: {channel} {payload}")

    def _obu_topic(self, stream: str) -> Topic:
        parts = stream.split(".")
        if len(parts) != 3 or parts[0] != "ob" or parts[2] not in _OBU_LEVELS:
            raise SubscribeError(f"invalid stream {stream}")
        lm = self._lm(parts[1])
        return Topic(f"spot.obu|{stream}", "diff", lm.spec.symbol, depth=int(parts[2]),
                     period_ms=_OBU_LEVELS[parts[2]], stream=stream)

    async def on_text(self, conn: conns.ClientConn, text: str) -> None:
        now = self.now_ms()
        try:
            msg = json.loads(text)
            channel, event = msg.get("channel", ""), msg.get("event", "")
        except (ValueError, AttributeError):
            conn.send(dumps({"time": now // 1000, "time_ms": now, "channel": "", "event": "",
                             "error": {"code": 1, "message": "invalid request body"},
                             "result": None}), data=False)
            return
        base: dict[str, Any] = {"time": now // 1000, "time_ms": now}
        if "id" in msg:
            base["id"] = msg["id"]
        if channel == "spot.ping":
            conn.send(dumps({**base, "channel": "spot.pong", "event": "", "error": None,
                             "result": None}), data=False)
            return
        base.update(channel=channel, event=event)
        try:
            if event not in ("subscribe", "unsubscribe"):
                raise SubscribeError(f"invalid event {event}")
            payload = msg.get("payload")
            topics = self.topics_for(channel, payload if isinstance(payload, list) else [])
            if event == "subscribe":
                self._subscribe(conn, topics, base)
                return
            for topic in topics:
                self.unsubscribe(conn, topic.key)
        except SubscribeError as exc:
            error = {"code": 2, "message": str(exc)}
            conn.send(dumps({**base, "error": error, "result": {"status": "fail"}}), data=False)
            return
        conn.send(dumps({**base, "error": None, "result": {"status": "success"}}), data=False)

    def _subscribe(self, conn: conns.ClientConn, topics: list[Topic], base: dict[str, Any]) -> None:
        for topic in topics:
            if topic.key.startswith("spot.obu|") and topic.key in conn.topics:
                raise SubscribeError(f"Alert sub {topic.params['stream']}")
        conn.send(dumps({**base, "error": None, "result": {"status": "success"}}), data=False)
        for topic in topics:
            live = self.subscribe(conn, topic)
            if live.kind == "diff":  # the first push is a full image at the view's id
                lm = self.markets[live.symbol]
                conn.send(self.book_frame(live, lm, [], [], self.now_ms(), full=True))

    async def handle_ws(self, request: Any) -> Any:
        return await conns.serve(
            request, exchange=self.exchange, register=self.register,
            unregister=self.unregister, on_text=self.on_text, queue_max=self.config.queue_max,
            faults=self.config.faults, seed=self.config.seed,
        )

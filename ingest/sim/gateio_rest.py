"""Simulated Gate.io spot REST v4 (protocols.md §2.3), under ``/gateio/api/v4``.

Enough for ccxt.gate with every ``urls['api']['public'][k]`` pointed at
``http://HOST:PORT/gateio/api/v4``: currency pairs, currencies, margin pairs, candlesticks
(``from``/``to`` seconds or ``limit``; 8-element rows), trades (``from``/``to``/``page``/
``limit``/``last_id``/``reverse``; newest first, with ``sequence_id``), order book
(``with_id=true`` adds ``id``; ``current``/``update`` always present) and server time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ingest.sim import book as books
from ingest.sim.feed import LiveMarket
from ingest.sim.gateio import GateFeed, create_time_ms, global_id, levels_text, pair_of
from ingest.sim.intervals import native_interval
from ingest.sim.market import Trade
from ingest.sim.rest import BadRequest, json_response, param_int, select_windows

_NAMES = {"BTC": "Bitcoin", "ETH": "Ethereum", "USDT": "Tether", "USDC": "USD Coin"}
_MAX_POINTS = 1000


class GateRest:
    def __init__(self, feed: GateFeed) -> None:
        self.feed = feed

    def _endpoint(self, fn: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return json_response(fn(request))
            except BadRequest as exc:
                body = {"label": exc.code or "INVALID_PARAM_VALUE", "message": exc.message}
                return json_response(body, status=exc.status)

        return handler

    def routes(self) -> list[web.RouteDef]:
        e = self._endpoint
        return [
            web.get("/api/v4/spot/currency_pairs", e(self.currency_pairs)),
            web.get("/api/v4/spot/currency_pairs/{pair}", e(self.currency_pair)),
            web.get("/api/v4/spot/currencies", e(self.currencies)),
            web.get("/api/v4/margin/currency_pairs", e(self.margin_pairs)),
            web.get("/api/v4/spot/candlesticks", e(self.candlesticks)),
            web.get("/api/v4/spot/trades", e(self.trades)),
            web.get("/api/v4/spot/order_book", e(self.order_book)),
            web.get("/api/v4/spot/time", e(lambda r: {"server_time": self.feed.now_ms()})),
        ]

    def _market(self, request: web.Request, name: str | None = None) -> LiveMarket:
        pair = name or request.query.get("currency_pair", "")
        lm = self.feed.markets.get(pair.replace("_", "").upper()) if "_" in pair else None
        if lm is None:
            raise BadRequest(f"Invalid currency pair {pair}", "INVALID_CURRENCY_PAIR")
        return lm

    def currency_pairs(self, request: web.Request) -> list[dict[str, Any]]:
        return [_pair_info(lm) for lm in self.feed.markets.values()]

    def currency_pair(self, request: web.Request) -> dict[str, Any]:
        return _pair_info(self._market(request, request.match_info["pair"]))

    def currencies(self, request: web.Request) -> list[dict[str, Any]]:
        markets = self.feed.markets.values()
        codes = sorted({c for lm in markets for c in (lm.spec.base, lm.spec.quote)})
        chain = {"withdraw_disabled": False, "withdraw_delayed": False, "deposit_disabled": False}
        return [
            {"currency": c, "name": _NAMES.get(c, c), "delisted": False,
             "withdraw_disabled": False, "withdraw_delayed": False, "deposit_disabled": False,
             "trade_disabled": False, "fixed_rate": "", "chain": c,
             "chains": [{"name": c, "addr": "", **chain}]}
            for c in codes
        ]

    def margin_pairs(self, request: web.Request) -> list[dict[str, Any]]:
        return [
            {"id": pair_of(lm), "base": lm.spec.base, "quote": lm.spec.quote, "leverage": 3,
             "min_base_amount": lm.spec.qty_text(1), "min_quote_amount": "1",
             "max_quote_amount": "5000000", "status": 1}
            for lm in self.feed.markets.values()
        ]

    def candlesticks(self, request: web.Request) -> list[list[str]]:
        lm = self._market(request)
        native = request.query.get("interval", "30m")
        iv = native_interval("gateio", native)
        if iv is None:
            raise BadRequest(f"Invalid interval {native}")
        start, end = param_int(request, "from"), param_int(request, "to")
        limit = param_int(request, "limit", None, low=1, high=_MAX_POINTS)
        if limit is not None and start is not None and end is not None:
            raise BadRequest("limit conflicts with from and to; send one or the other")
        now = self.feed.now_ms()
        start_ms = None if start is None else start * 1000
        end_ms = None if end is None else end * 1000
        if start_ms is not None:
            span_end = end_ms if end_ms is not None else now
            count = len(select_windows(iv, start_ms, span_end, _MAX_POINTS + 1, now,
                                       containing_start=True))
            if count > _MAX_POINTS and end_ms is not None:
                raise BadRequest(f"Too many points requested: maximum is {_MAX_POINTS}")
            limit = min(count, limit or _MAX_POINTS)
        starts = select_windows(iv, start_ms, end_ms, limit or 100, now, containing_start=True)
        spec = lm.spec
        rows = []
        for s0 in starts:
            end_w = iv.end(s0)
            s = lm.model.summary(s0, min(end_w, now + 1))
            rows.append([
                str(s0 // 1000), spec.quote_text(s.quote_volume), spec.price_text(s.close),
                spec.price_text(s.high), spec.price_text(s.low), spec.price_text(s.open),
                spec.qty_text(s.volume), "true" if end_w <= now else "false",
            ])
        return rows

    def trades(self, request: web.Request) -> list[dict[str, Any]]:
        lm = self._market(request)
        model = lm.model
        limit = param_int(request, "limit", 100, low=1, high=1000) or 100
        now_end = self.feed.now_ms() + 1
        last_id = param_int(request, "last_id")
        if last_id is not None:  # last_id wins over from/to, as on Gate
            seq = last_id // 1000
            if request.query.get("reverse", "false").lower() == "true":
                trades = model.trades_before_id(seq, limit)
            else:
                trades = model.trades_from_id(seq + 1, limit, now_end)
            return [_trade_row(lm, t) for t in reversed(trades)]
        page = param_int(request, "page", 1, low=1) or 1
        if limit * (page - 1) > 100_000:
            raise BadRequest("page too deep: limit * (page - 1) must not exceed 100000")
        end = param_int(request, "to")
        start = param_int(request, "from")
        end_ms = now_end if end is None else min(now_end, (end + 1) * 1000)
        newest = model.trades_before(end_ms, limit * page)[: -limit * (page - 1) or None]
        if start is not None:
            newest = [t for t in newest if t.ts_ms >= start * 1000]
        return [_trade_row(lm, t) for t in reversed(newest[-limit:])]

    def order_book(self, request: web.Request) -> dict[str, Any]:
        lm = self._market(request)
        limit = param_int(request, "limit", 10, low=1, high=5000) or 10
        book, now = lm.book, self.feed.now_ms()
        body: dict[str, Any] = {}
        if request.query.get("with_id", "false").lower() == "true":
            body["id"] = book.update_id
        body.update(
            current=now,
            update=lm.last_book_ms,
            asks=levels_text(books.sorted_levels(book.asks, False, limit), lm),
            bids=levels_text(books.sorted_levels(book.bids, True, limit), lm),
        )
        return body


def _pair_info(lm: LiveMarket) -> dict[str, Any]:
    spec = lm.spec
    return {
        "id": pair_of(lm), "base": spec.base, "base_name": _NAMES.get(spec.base, spec.base),
        "quote": spec.quote, "quote_name": _NAMES.get(spec.quote, spec.quote), "fee": "0.2",
        "min_base_amount": spec.qty_text(1), "min_quote_amount": "3",
        "max_quote_amount": "5000000", "amount_precision": spec.qty_decimals,
        "precision": spec.price_decimals, "trade_status": "tradable", "sell_start": 0,
        "buy_start": 0, "delisting_time": 0, "type": "normal",
        "trade_url": f"https://www.gate.com/trade/{pair_of(lm)}",
    }


def _trade_row(lm: LiveMarket, t: Trade) -> dict[str, Any]:
    spec = lm.spec
    return {
        "id": str(global_id(lm, t.id)), "create_time": str(t.ts_ms // 1000),
        "create_time_ms": create_time_ms(lm, t, 6), "currency_pair": pair_of(lm),
        "side": "sell" if t.buyer_maker else "buy", "amount": spec.qty_text(t.qty),
        "price": spec.price_text(t.price), "sequence_id": str(t.id),
    }

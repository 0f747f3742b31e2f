"""Simulated Binance spot REST market data (protocols.md §1.3), under ``/binance/api/v3``.

Enough for ccxt.binance with ``options.fetchMarkets.types=['spot']`` and
``urls['api']['public'] = 'http://HOST:PORT/binance/api/v3'``: exchangeInfo, klines (and
uiKlines), depth, trades, historicalTrades (fromId), aggTrades, time, ping. Every answer is
computed from the same model as the streams, so REST and websocket agree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ingest.sim import book as books
from ingest.sim.binance import BinanceFeed, agg_id, b8, kline_fields, levels8
from ingest.sim.feed import LiveMarket
from ingest.sim.intervals import MINUTE_MS, native_interval
from ingest.sim.market import Trade
from ingest.sim.rest import BadRequest, json_response, param_int, select_windows, strip_zeros

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BinanceRest:
    def __init__(self, feed: BinanceFeed) -> None:
        self.feed = feed
        self._weight_minute = 0
        self._weight_used = 0

    def _endpoint(self, weight: int, fn: Callable[[web.Request], Any]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            minute = self.feed.now_ms() // MINUTE_MS
            if minute != self._weight_minute:
                self._weight_minute, self._weight_used = minute, 0
            self._weight_used += weight
            headers = {"X-MBX-USED-WEIGHT-1M": str(self._weight_used)}
            try:
                return json_response(fn(request), headers=headers)
            except BadRequest as exc:
                body = {"code": exc.code or -1100, "msg": exc.message}
                return json_response(body, status=exc.status, headers=headers)

        return handler

    def routes(self) -> list[web.RouteDef]:
        e = self._endpoint
        return [
            web.get("/api/v3/ping", e(1, lambda r: {})),
            web.get("/api/v3/time", e(1, lambda r: {"serverTime": self.feed.now_ms()})),
            web.get("/api/v3/exchangeInfo", e(20, self.exchange_info)),
            web.get("/api/v3/klines", e(2, self.klines)),
            web.get("/api/v3/uiKlines", e(2, self.klines)),
            web.get("/api/v3/depth", e(5, self.depth)),
            web.get("/api/v3/trades", e(25, self.trades)),
            web.get("/api/v3/historicalTrades", e(25, self.historical_trades)),
            web.get("/api/v3/aggTrades", e(4, self.agg_trades)),
        ]

    def _market(self, request: web.Request) -> LiveMarket:
        symbol = request.query.get("symbol")
        if not symbol:
            raise BadRequest(
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                -1102,
            )
        lm = self.feed.markets.get(symbol.upper())
        if lm is None:
            raise BadRequest("Invalid symbol.", -1121)
        return lm

    def exchange_info(self, request: web.Request) -> dict[str, Any]:
        wanted: set[str] | None = None
        if "symbol" in request.query:
            wanted = {request.query["symbol"].upper()}
        elif "symbols" in request.query:
            raw = request.query["symbols"].strip("[]").replace('"', "")
            wanted = {s.strip().upper() for s in raw.split(",") if s.strip()}
        if wanted is not None and not wanted <= set(self.feed.markets):
            raise BadRequest("Invalid symbol.", -1121)
        return {
            "timezone": "UTC",
            "serverTime": self.feed.now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                 "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [
                _symbol_info(lm) for sym, lm in self.feed.markets.items()
                if wanted is None or sym in wanted
            ],
        }

    def klines(self, request: web.Request) -> list[list[Any]]:
        lm = self._market(request)
        native = request.query.get("interval", "")
        iv = native_interval("binance", native)
        if iv is None:
            raise BadRequest("Invalid interval.", -1120)
        limit = param_int(request, "limit", 500, low=1, high=1000) or 500
        now = self.feed.now_ms()
        starts = select_windows(
            iv, param_int(request, "startTime"), param_int(request, "endTime"), limit, now
        )
        rows = []
        for start in starts:
            end = iv.end(start)
            s = lm.model.summary(start, min(end, now + 1))
            k = kline_fields(lm, s, end, native, False)
            rows.append([k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"],
                         k["n"], k["V"], k["Q"], "0"])
        return rows

    def depth(self, request: web.Request) -> dict[str, Any]:
        lm = self._market(request)
        limit = param_int(request, "limit", 100, low=1, high=5000) or 100
        book = lm.book
        return {
            "lastUpdateId": book.update_id,
            "bids": levels8(books.sorted_levels(book.bids, True, limit), lm),
            "asks": levels8(books.sorted_levels(book.asks, False, limit), lm),
        }

    def trades(self, request: web.Request) -> list[dict[str, Any]]:
        lm = self._market(request)
        limit = param_int(request, "limit", 500, low=1, high=1000) or 500
        end = self.feed.now_ms() + 1
        return [_trade_row(lm, t) for t in lm.model.trades_before(end, limit)]

    def historical_trades(self, request: web.Request) -> list[dict[str, Any]]:
        lm = self._market(request)
        limit = param_int(request, "limit", 500, low=1, high=1000) or 500
        from_id = param_int(request, "fromId")
        end = self.feed.now_ms() + 1
        model = lm.model
        if from_id is None:  # without fromId: the most recent trades, as on Binance
            return [_trade_row(lm, t) for t in model.trades_before(end, limit)]
        return [_trade_row(lm, t) for t in model.trades_from_id(from_id, limit, end)]

    def agg_trades(self, request: web.Request) -> list[dict[str, Any]]:
        lm = self._market(request)
        model = lm.model
        limit = param_int(request, "limit", 500, low=1, high=1000) or 500
        from_id = param_int(request, "fromId")
        start, end = param_int(request, "startTime"), param_int(request, "endTime")
        now_end = self.feed.now_ms() + 1
        if start is not None and end is not None and end - start > 3_600_000:
            raise BadRequest("More than 1 hours between startTime and endTime.", -1127)
        if from_id is not None:
            trades = model.trades_from_id(from_id + model.id_base // 2, limit, now_end)
        elif start is not None or end is not None:
            first = start if start is not None else (end or 0) - 3_600_000
            last = min(now_end, (end + 1) if end is not None else first + 3_600_000)
            trades = model.trades_between(first, last, limit)
        else:
            trades = model.trades_before(now_end, limit)
        return [_agg_row(lm, t) for t in trades]


def _symbol_info(lm: LiveMarket) -> dict[str, Any]:
    spec = lm.spec
    tick = b8(1, spec.price_decimals)
    step = b8(1, spec.qty_decimals)
    return {
        "symbol": spec.symbol, "status": "TRADING",
        "baseAsset": spec.base, "baseAssetPrecision": 8,
        "quoteAsset": spec.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000",
             "stepSize": step},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _trade_row(lm: LiveMarket, t: Trade) -> dict[str, Any]:
    spec = lm.spec
    return {
        "id": t.id,
        "price": b8(t.price, spec.price_decimals),
        "qty": b8(t.qty, spec.qty_decimals),
        "quoteQty": strip_zeros(spec.quote_text(t.price * t.qty)),
        "time": t.ts_ms,
        "isBuyerMaker": t.buyer_maker,
        "isBestMatch": True,
    }


def _agg_row(lm: LiveMarket, t: Trade) -> dict[str, Any]:
    spec = lm.spec
    return {
        "a": agg_id(lm.model, t.id), "p": b8(t.price, spec.price_decimals),
        "q": b8(t.qty, spec.qty_decimals), "f": t.id, "l": t.id, "T": t.ts_ms,
        "m": t.buyer_maker, "M": True,
    }

"""Simulated HTX spot REST (protocols.md §3.3), under ``/huobi``.

Enough for ccxt.htx with ``urls['hostnames']['spot'] = 'HOST:PORT/huobi'`` and every
``urls['api'][k] = 'http://{hostname}'``: ``/v1/common/symbols``, ``/v2/reference/currencies``,
``/v1/common/timestamp``, ``/market/history/kline`` (latest ``size``),
``/market/history/candles`` (``from``/``to``/``size``, what ccxt uses), ``/market/history/trade``
(the latest 2000 trades only, as on HTX) and ``/market/depth``. Errors come back with HTTP
200 and ``status: error``, as HTX does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ingest.sim import book as books
from ingest.sim.feed import LiveMarket
from ingest.sim.huobi import HuobiFeed, kline_tick, levels_num, num, tick_id, trade_item
from ingest.sim.intervals import native_interval
from ingest.sim.rest import BadRequest, json_response, param_int, select_windows


class HuobiRest:
    def __init__(self, feed: HuobiFeed) -> None:
        self.feed = feed

    def _endpoint(self, fn: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return json_response(fn(request))
            except BadRequest as exc:
                return json_response({
                    "status": "error", "err-code": exc.code or "invalid-parameter",
                    "err-msg": exc.message, "data": None,
                })

        return handler

    def routes(self) -> list[web.RouteDef]:
        e = self._endpoint
        return [
            web.get("/v1/common/symbols", e(self.symbols)),
            web.get("/v2/reference/currencies", e(self.currencies)),
            web.get("/v1/common/timestamp", e(lambda r: {"status": "ok",
                                                          "data": self.feed.now_ms()})),
            web.get("/market/history/kline", e(self.kline)),
            web.get("/market/history/candles", e(self.candles)),
            web.get("/market/history/trade", e(self.trades)),
            web.get("/market/depth", e(self.depth)),
        ]

    def _market(self, request: web.Request) -> LiveMarket:
        symbol = request.query.get("symbol", "")
        lm = self.feed.markets.get(symbol.upper()) if symbol == symbol.lower() else None
        if lm is None:
            raise BadRequest("invalid symbol", "invalid-parameter")
        return lm

    def _envelope(self, ch: str, key: str, data: Any) -> dict[str, Any]:
        return {"ch": ch, "status": "ok", "ts": self.feed.now_ms(), key: data}

    def symbols(self, request: web.Request) -> dict[str, Any]:
        return {"status": "ok", "data": [_symbol_info(lm) for lm in self.feed.markets.values()]}

    def currencies(self, request: web.Request) -> dict[str, Any]:
        codes = sorted({c.lower() for lm in self.feed.markets.values()
                        for c in (lm.spec.base, lm.spec.quote)})
        return {"code": 200, "data": [
            {"currency": c, "assetType": 1, "instStatus": "normal", "chains": [{
                "chain": c, "displayName": c.upper(), "baseChain": c.upper(),
                "baseChainProtocol": "", "isDynamic": False, "numOfConfirmations": 12,
                "numOfFastConfirmations": 6, "depositStatus": "allowed",
                "minDepositAmt": "0.0001", "withdrawStatus": "allowed",
                "minWithdrawAmt": "0.001", "withdrawPrecision": 8, "maxWithdrawAmt": "1000",
                "withdrawQuotaPerDay": "1000", "withdrawFeeType": "fixed",
                "transactFeeWithdraw": "0.0005", "addrWithTag": False,
                "addrDepositTag": False,
            }]}
            for c in codes
        ]}

    def _candles(self, request: web.Request, ranged: bool) -> dict[str, Any]:
        lm = self._market(request)
        period = request.query.get("period", "")
        iv = native_interval("huobi", period)
        if iv is None:
            raise BadRequest("invalid period", "invalid-parameter")
        size = param_int(request, "size", 150, low=1, high=1000 if ranged else 2000) or 150
        start = param_int(request, "from") if ranged else None
        end = param_int(request, "to") if ranged else None
        now = self.feed.now_ms()
        starts = select_windows(iv, None if start is None else start * 1000,
                                None if end is None else end * 1000, size, now,
                                containing_start=True)
        data = [kline_tick(lm, lm.model.summary(s, min(iv.end(s), now + 1)))
                for s in reversed(starts)]  # newest first, as HTX returns them
        return self._envelope(f"market.{lm.spec.symbol.lower()}.kline.{period}", "data", data)

    def kline(self, request: web.Request) -> dict[str, Any]:
        return self._candles(request, ranged=False)

    def candles(self, request: web.Request) -> dict[str, Any]:
        return self._candles(request, ranged=True)

    def trades(self, request: web.Request) -> dict[str, Any]:
        lm = self._market(request)
        size = param_int(request, "size", 1, low=1, high=2000) or 1
        trades = lm.model.trades_before(self.feed.now_ms() + 1, size)
        data = [
            {"id": tick_id(lm, t), "ts": t.ts_ms, "data": [trade_item(lm, t, "trade-id")]}
            for t in reversed(trades)
        ]
        return self._envelope(f"market.{lm.spec.symbol.lower()}.trade.detail", "data", data)

    def depth(self, request: web.Request) -> dict[str, Any]:
        lm = self._market(request)
        kind = request.query.get("type", "step0")
        if kind != "step0":
            raise BadRequest("invalid type: only step0 is simulated", "invalid-parameter")
        depth = param_int(request, "depth", 150) or 150
        if depth not in (5, 10, 20, 150):
            raise BadRequest("invalid depth", "invalid-parameter")
        book = lm.book
        tick = {
            "ts": lm.last_book_ms, "version": book.update_id,
            "bids": levels_num(books.sorted_levels(book.bids, True, depth), lm),
            "asks": levels_num(books.sorted_levels(book.asks, False, depth), lm),
        }
        return self._envelope(f"market.{lm.spec.symbol.lower()}.depth.step0", "tick", tick)


def _symbol_info(lm: LiveMarket) -> dict[str, Any]:
    spec = lm.spec
    step = num(spec.qty_text(1))
    return {
        "base-currency": spec.base.lower(), "quote-currency": spec.quote.lower(),
        "price-precision": spec.price_decimals, "amount-precision": spec.qty_decimals,
        "symbol-partition": "main", "symbol": spec.symbol.lower(), "state": "online",
        "value-precision": 8, "min-order-amt": step, "max-order-amt": 1000,
        "min-order-value": 5, "limit-order-min-order-amt": step,
        "limit-order-max-order-amt": 1000, "limit-order-max-buy-amt": 1000,
        "limit-order-max-sell-amt": 1000, "sell-market-min-order-amt": step,
        "sell-market-max-order-amt": 100, "buy-market-max-order-value": 1000000,
        "api-trading": "enabled", "tags": "",
    }

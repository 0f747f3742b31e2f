"""Binance REST calls the connector makes: the depth snapshot, and the market list.

Costs are Binance's request weights (protocols.md §1.3): every call waits for its weight
in the ``binance`` limiter of the shared ``HttpClient`` before it goes out.
"""

from __future__ import annotations

import time

import msgspec

from ingest.errors import ExchangeError
from ingest.exchanges.binance import parse
from ingest.records import BookDelta
from ingest.transport.http import HttpClient

EXCHANGE = "binance"
DEPTH_LIMIT = 1000  # weight 50; the 5000 of the docs' recipe costs 250
WEIGHT_PER_MIN = 6000  # REQUEST_WEIGHT per IP
EXCHANGE_INFO_WEIGHT = 20
RESYNC_PRIORITY = 0  # a live book's resync goes ahead of backfill pages


def depth_weight(limit: int) -> int:
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def _base(rest_url: str) -> str:
    return rest_url.rstrip("/")


async def fetch_depth(http: HttpClient, rest_url: str, symbol: str,
                      limit: int = DEPTH_LIMIT) -> BookDelta:
    """``GET /api/v3/depth`` for ``symbol`` (``BTCUSDT``) as a full book image."""
    body = await http.get(
        f"{_base(rest_url)}/api/v3/depth", params={"symbol": symbol, "limit": limit},
        weight=depth_weight(limit), priority=RESYNC_PRIORITY, limiter=EXCHANGE,
    )
    return parse.parse_depth_snapshot(body, symbol, time.time())


class _Symbol(msgspec.Struct):
    symbol: str
    status: str = "TRADING"


class _ExchangeInfo(msgspec.Struct):
    symbols: list[_Symbol]


async def list_symbols(http: HttpClient, rest_url: str) -> set[str]:
    """Symbols Binance lists (any status), from ``GET /api/v3/exchangeInfo``."""
    body = await http.get(f"{_base(rest_url)}/api/v3/exchangeInfo",
                          weight=EXCHANGE_INFO_WEIGHT, limiter=EXCHANGE)
    try:
        info = msgspec.json.decode(body, type=_ExchangeInfo)
    except msgspec.DecodeError as exc:
        raise ExchangeError(f"binance: exchangeInfo: {exc}"[:200]) from exc
    return {s.symbol for s in info.symbols}

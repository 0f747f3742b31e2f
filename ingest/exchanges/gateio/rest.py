"""Gate.io REST calls the connector makes: the order book snapshot, and the pair list.

Gate allows 200 requests per 10 s per endpoint per IP (protocols.md §2.3); every call
waits in the ``gateio`` limiter of the shared ``HttpClient`` (one unit per request).
"""

from __future__ import annotations

import time

import msgspec

from ingest.errors import ExchangeError
from ingest.exchanges.gateio import parse
from ingest.records import BookDelta
from ingest.transport.http import HttpClient

EXCHANGE = "gateio"
BOOK_LIMIT = 100  # the depth spot.order_book_update@100ms maintains
REQUESTS_PER_10S = 200
RESYNC_PRIORITY = 0


def _base(rest_url: str) -> str:
    return rest_url.rstrip("/")


async def fetch_order_book(http: HttpClient, rest_url: str, pair: str,
                           limit: int = BOOK_LIMIT) -> BookDelta:
    """``GET /spot/order_book?with_id=true`` for ``pair`` (``BTC_USDT``) as a full image
    whose id is the update id the websocket's ``U``/``u`` continue."""
    body = await http.get(
        f"{_base(rest_url)}/spot/order_book",
        params={"currency_pair": pair, "limit": limit, "with_id": "true"},
        weight=1, priority=RESYNC_PRIORITY, limiter=EXCHANGE,
    )
    return parse.parse_order_book(body, pair, time.time())


class _Pair(msgspec.Struct):
    id: str


async def list_pairs(http: HttpClient, rest_url: str) -> set[str]:
    """Pairs Gate lists (``BTC_USDT``), from ``GET /spot/currency_pairs``."""
    body = await http.get(f"{_base(rest_url)}/spot/currency_pairs", weight=1, limiter=EXCHANGE)
    try:
        pairs = msgspec.json.decode(body, type=list[_Pair])
    except msgspec.DecodeError as exc:
        raise ExchangeError(f"gateio: currency_pairs: {exc}"[:200]) from exc
    return {p.id for p in pairs}

"""HTX REST the connector makes: the symbol list only (books resync over the /feed
socket with ``req``, not REST)."""

from __future__ import annotations

import msgspec

from ingest.errors import ExchangeError
from ingest.transport.http import HttpClient

EXCHANGE = "huobi"
REQUESTS_PER_MIN = 800  # market data: 4,000 per 5 min per endpoint


class _Symbol(msgspec.Struct):
    symbol: str


class _Symbols(msgspec.Struct):
    status: str
    data: list[_Symbol] | None = None


async def list_symbols(http: HttpClient, rest_url: str) -> set[str]:
    """Symbols HTX lists (``btcusdt``), from ``GET /v1/common/symbols``."""
    body = await http.get(f"{rest_url.rstrip('/')}/v1/common/symbols", weight=1,
                          limiter=EXCHANGE)
    try:
        resp = msgspec.json.decode(body, type=_Symbols)
    except msgspec.DecodeError as exc:
        raise ExchangeError(f"huobi: symbols: {exc}"[:200]) from exc
    if resp.status != "ok" or resp.data is None:
        raise ExchangeError(f"huobi: symbols: status {resp.status[:40]}")
    return {s.symbol for s in resp.data}

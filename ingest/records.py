"""Normalised records: what parsers emit and writers store.

Prices and quantities are the exchange's own decimal text (``"0.35280000"``); they become
NUMERIC in COPY and never pass through a float. Timestamps are timezone-aware UTC datetimes.
Exchange names are the stored ones (``binance``, ``gateio``, ``huobi``); symbols are compact
(``BTCUSDT``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

Level = tuple[str, str]  # (price, quantity) as decimal text

MetricType = Literal["btc_dominance", "total_market_cap", "fear_greed_index", "other"]
METRIC_TYPES: tuple[str, ...] = ("btc_dominance", "total_market_cap", "fear_greed_index", "other")


class Candle(msgspec.Struct, frozen=True, gc=False):
    exchange: str
    symbol: str
    interval: str  # the seed's names: 1m 5m 15m 30m 1h 4h 1d 7d
    timestamp: datetime  # open time
    open: str
    high: str
    low: str
    close: str
    volume: str  # base volume
    quote_volume: str | None
    trades_count: int | None
    closed: bool  # final? only closed candles are stored
    recv_ts: float = 0.0  # local receive time, unix seconds

    kind = "candle"


class Trade(msgspec.Struct, frozen=True, gc=False):
    exchange: str
    symbol: str
    trade_id: int
    timestamp: datetime  # exchange event (trade) time
    price: str
    quantity: str
    quote_quantity: str | None
    is_buyer_maker: bool
    recv_ts: float = 0.0

    kind = "trade"


class BookSnapshot(msgspec.Struct, frozen=True, gc=False):
    exchange: str
    symbol: str
    timestamp: datetime
    bids: tuple[Level, ...]  # best first
    asks: tuple[Level, ...]  # best first
    last_update_id: int
    recv_ts: float = 0.0

    kind = "book_snapshot"


class BookDelta(msgspec.Struct, frozen=True, gc=False):
    """An incremental book update (or a full image when ``full``). Never stored directly:
    it feeds the local book in ``books.py``. ``first_id``/``last_id`` are the exchange's
    sequence numbers (Binance/Gate U/u; HTX prevSeqNum+1/seqNum)."""

    exchange: str
    symbol: str
    timestamp: datetime
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    first_id: int
    last_id: int
    full: bool = False
    prev_id: int | None = None  # HTX prevSeqNum
    recv_ts: float = 0.0

    kind = "book_delta"


class MarketMetric(msgspec.Struct, frozen=True, gc=False):
    metric_type: str  # one of METRIC_TYPES
    timestamp: datetime  # the source's own time
    value: str
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    recv_ts: float = 0.0

    kind = "metric"


Record = Candle | Trade | BookSnapshot | MarketMetric
AnyRecord = Candle | Trade | BookSnapshot | BookDelta | MarketMetric

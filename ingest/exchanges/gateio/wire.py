"""Gate.io API v4 spot wire structs, spelled as on the wire (protocols.md §2).

Prices and amounts are strings and stay strings. Fields added over the years (candle
``a``/``w``, book ``full``/``l``, trade ``id_market``/``range``) are optional, so the 2021
captures and the current documented frames both decode.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

PriceLevel = tuple[str, str]


class Error(Struct, gc=False):
    code: int | None = None
    message: str | None = None


class Envelope(Struct, gc=False):
    channel: str
    event: str = ""
    time: int | UnsetType = UNSET
    time_ms: int | UnsetType = UNSET
    id: int | UnsetType | None = UNSET
    error: Error | None = None
    result: Raw | UnsetType = UNSET


class AckResult(Struct, gc=False):
    status: str | None = None


class Trade(Struct, gc=False):
    """``spot.trades`` result; ``side`` is the taker's."""

    id: int
    create_time_ms: str | int
    side: str
    currency_pair: str
    amount: str
    price: str


class Candlestick(Struct, gc=False):
    """``spot.candlesticks`` result. ``t`` is seconds as a string; ``n`` is
    ``<interval>_<pair>``; ``v`` is quote volume, ``a`` base volume; ``w`` window closed."""

    t: str
    v: str
    c: str
    h: str
    l: str  # noqa: E741 - wire name
    o: str
    n: str
    a: str | UnsetType = UNSET
    w: bool | UnsetType = UNSET


class OrderBookUpdate(Struct, gc=False):
    """``spot.order_book_update`` result; ``full`` marks a full image at the subscribed depth."""

    t: int
    s: str
    U: int
    u: int
    full: bool = False
    b: list[PriceLevel] = []
    a: list[PriceLevel] = []


class Obu(Struct, gc=False):
    """``spot.obu`` result: ``s`` is ``ob.<pair>.<level>``; the full push has no ``U``."""

    t: int
    s: str
    u: int
    U: int | UnsetType = UNSET
    full: bool = False
    b: list[PriceLevel] = []
    a: list[PriceLevel] = []


class OrderBook(Struct, gc=False):
    """``spot.order_book`` result: a limited-depth snapshot."""

    t: int
    lastUpdateId: int
    s: str
    bids: list[PriceLevel] = []
    asks: list[PriceLevel] = []


class RestOrderBook(Struct, kw_only=True, gc=False):
    """``GET /spot/order_book?with_id=true``."""

    id: int | UnsetType = UNSET
    current: int | UnsetType = UNSET
    update: int | UnsetType = UNSET
    bids: list[PriceLevel]
    asks: list[PriceLevel]


class RestCandle(Struct, array_like=True, gc=False):
    """``GET /spot/candlesticks`` row: [t, quote vol, close, high, low, open, base vol, closed]."""

    t: str
    quote_volume: str
    close: str
    high: str
    low: str
    open: str
    base_volume: str | None = None
    closed: str | None = None


class RestTrade(Struct, gc=False):
    """``GET /spot/trades`` item. ``id`` is the same id the websocket sends."""

    id: str | int
    create_time_ms: str | int
    side: str
    amount: str
    price: str
    sequence_id: str | None = None


class RestError(Struct, gc=False):
    label: str
    message: str = ""


ENVELOPE = msgspec.json.Decoder(Envelope)
ACK = msgspec.json.Decoder(AckResult | None)
TRADE = msgspec.json.Decoder(Trade)
CANDLESTICK = msgspec.json.Decoder(Candlestick)
ORDER_BOOK_UPDATE = msgspec.json.Decoder(OrderBookUpdate)
OBU = msgspec.json.Decoder(Obu)
ORDER_BOOK = msgspec.json.Decoder(OrderBook)
REST_ORDER_BOOK = msgspec.json.Decoder(RestOrderBook)
REST_CANDLES = msgspec.json.Decoder(list[RestCandle])
REST_TRADES = msgspec.json.Decoder(list[RestTrade])
REST_ERROR = msgspec.json.Decoder(RestError)

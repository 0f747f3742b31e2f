"""Binance spot wire structs, named and spelled as on the wire (protocols.md §1).

Prices and quantities are strings on the wire and stay strings. Unknown fields are ignored
so that additions (they happen) do not break decoding; missing required ones are errors.
Event structs are tagged by ``e`` so a frame is checked to be the event its stream claims.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType

PriceLevel = tuple[str, str]


class ErrorBody(Struct, gc=False):
    code: int | None = None
    msg: str | None = None


class Envelope(Struct, gc=False):
    """Just enough of any frame to route it: a combined-stream wrapper, a raw event, a
    request reply or an error. ``data`` stays undecoded (Raw) until the stream is known."""

    stream: str | UnsetType = UNSET
    data: Raw | UnsetType = UNSET
    e: str | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    id: int | str | UnsetType | None = UNSET
    code: int | UnsetType = UNSET
    msg: str | UnsetType = UNSET
    error: ErrorBody | UnsetType = UNSET
    lastUpdateId: int | UnsetType = UNSET


class Trade(Struct, tag_field="e", tag="trade", gc=False):
    E: int  # event time
    s: str  # symbol
    t: int  # trade id
    p: str
    q: str
    T: int  # trade time
    m: bool  # buyer is maker


class AggTrade(Struct, tag_field="e", tag="aggTrade", gc=False):
    E: int
    s: str
    a: int  # aggregate trade id
    p: str
    q: str
    T: int
    m: bool


class Kline(Struct, gc=False):
    t: int  # open time
    T: int  # close time
    s: str
    i: str
    o: str
    c: str
    h: str
    l: str  # noqa: E741 - wire name
    v: str  # base volume
    n: int  # trade count
    x: bool  # closed
    q: str  # quote volume


class KlineEvent(Struct, tag_field="e", tag="kline", gc=False):
    E: int
    s: str
    k: Kline


class DepthUpdate(Struct, tag_field="e", tag="depthUpdate", gc=False):
    E: int
    s: str
    U: int  # first update id
    u: int  # last update id
    b: list[PriceLevel]
    a: list[PriceLevel]


class ServerShutdown(Struct, tag_field="e", tag="serverShutdown", gc=False):
    E: int


Event = Trade | AggTrade | KlineEvent | DepthUpdate | ServerShutdown


class Combined(Struct, gc=False):
    """A combined-stream event frame decoded in one pass (the hot path); frames of any other
    shape fail this and are routed through ``Envelope``."""

    stream: str
    data: Event


class PartialDepth(Struct, gc=False):
    """``<symbol>@depth<N>`` stream payload and the REST ``/api/v3/depth`` body."""

    lastUpdateId: int
    bids: list[PriceLevel]
    asks: list[PriceLevel]


class RestKline(Struct, array_like=True, gc=False):
    """``/api/v3/klines`` row; trailing fields we do not use are ignored."""

    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time: int
    quote_volume: str
    count: int


class RestTrade(Struct, gc=False):
    """``/api/v3/trades`` and ``/api/v3/historicalTrades`` item."""

    id: int
    price: str
    qty: str
    quoteQty: str
    time: int
    isBuyerMaker: bool


class RestError(Struct, gc=False):
    code: int
    msg: str


ENVELOPE = msgspec.json.Decoder(Envelope)
EVENT = msgspec.json.Decoder(Event)
COMBINED = msgspec.json.Decoder(Combined)
PARTIAL_DEPTH = msgspec.json.Decoder(PartialDepth)
REST_KLINES = msgspec.json.Decoder(list[RestKline])
REST_TRADES = msgspec.json.Decoder(list[RestTrade])
REST_ERROR = msgspec.json.Decoder(RestError)
ANY = msgspec.json.Decoder(Any)

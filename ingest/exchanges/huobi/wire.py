"""HTX (Huobi) spot wire structs, spelled as on the wire (protocols.md §3).

HTX sends prices and amounts as JSON *numbers* (``9.2E-7``). They are decoded straight
into ``Decimal`` from the number's own text, never through a float. The deprecated float
trade ``id`` is not declared, so it is skipped unread; ``tradeId``/``trade-id`` is the id.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
from msgspec import UNSET, Raw, Struct, UnsetType, field

NumLevel = tuple[Decimal, Decimal]


class Envelope(Struct, gc=False):
    """Enough of any frame to route it: a push (``ch``/``tick``), a heartbeat, a sub/unsub
    ack, an error, or a REQ reply (``rep``/``data``)."""

    ch: str | UnsetType = UNSET
    ts: int | UnsetType = UNSET
    tick: Raw | UnsetType = UNSET
    ping: int | UnsetType = UNSET
    pong: int | UnsetType = UNSET
    status: str | UnsetType = UNSET
    subbed: str | list[str] | UnsetType = UNSET
    unsubbed: str | list[str] | UnsetType = UNSET
    id: str | int | UnsetType | None = UNSET
    rep: str | UnsetType = UNSET
    data: Raw | UnsetType = UNSET
    err_code: str | UnsetType = field(name="err-code", default=UNSET)
    err_msg: str | UnsetType = field(name="err-msg", default=UNSET)


class TradeItem(Struct, gc=False):
    tradeId: int
    ts: int
    amount: Decimal
    price: Decimal
    direction: str  # the taker's side


class TradeTick(Struct, gc=False):
    data: list[TradeItem]


class KlineTick(Struct, gc=False):
    """``market.<s>.kline.<p>`` tick and ``/market/history/kline`` row. ``id`` is the open
    time in seconds; ``amount`` is base volume, ``vol`` quote volume."""

    id: int
    open: Decimal
    close: Decimal
    low: Decimal
    high: Decimal
    amount: Decimal
    vol: Decimal
    count: int | None = None


# Book sides stay undecoded: ``levels_raw`` takes the numbers' own text when it is plain
# (one regex pass, no Decimal per number) and decodes into Decimals only otherwise.
NO_LEVELS = Raw(b"[]")
LEVELS = msgspec.json.Decoder(list[NumLevel])


class DepthTick(Struct, gc=False):
    """``market.<s>.depth.step0`` tick and ``/market/depth`` tick: a full image."""

    version: int
    ts: int | UnsetType = UNSET
    bids: Raw = NO_LEVELS
    asks: Raw = NO_LEVELS


class MbpTick(Struct, gc=False):
    """``market.<s>.mbp.<n>`` increment; either side may be missing or empty."""

    seqNum: int
    prevSeqNum: int
    bids: Raw = NO_LEVELS
    asks: Raw = NO_LEVELS


class MbpImage(Struct, gc=False):
    """A REQ ``market.<s>.mbp.<n>`` reply's ``data``, and ``mbp.refresh`` ticks."""

    seqNum: int
    bids: Raw = NO_LEVELS
    asks: Raw = NO_LEVELS


class RestTradeItem(Struct, gc=False):
    trade_id: int = field(name="trade-id")
    ts: int
    amount: Decimal
    price: Decimal
    direction: str


class RestTradeGroup(Struct, gc=False):
    data: list[RestTradeItem]


class RestKlines(Struct, gc=False):
    status: str
    data: list[KlineTick] = []
    err_code: str | None = field(name="err-code", default=None)
    err_msg: str | None = field(name="err-msg", default=None)


class RestTrades(Struct, gc=False):
    status: str
    data: list[RestTradeGroup] = []
    err_code: str | None = field(name="err-code", default=None)
    err_msg: str | None = field(name="err-msg", default=None)


class RestDepth(Struct, gc=False):
    status: str
    tick: DepthTick | None = None
    err_code: str | None = field(name="err-code", default=None)
    err_msg: str | None = field(name="err-msg", default=None)


ENVELOPE = msgspec.json.Decoder(Envelope)
TRADE_TICK = msgspec.json.Decoder(TradeTick)
KLINE_TICK = msgspec.json.Decoder(KlineTick)
DEPTH_TICK = msgspec.json.Decoder(DepthTick)
MBP_TICK = msgspec.json.Decoder(MbpTick)
MBP_IMAGE = msgspec.json.Decoder(MbpImage)
REST_KLINES = msgspec.json.Decoder(RestKlines)
REST_TRADES = msgspec.json.Decoder(RestTrades)
REST_DEPTH = msgspec.json.Decoder(RestDepth)

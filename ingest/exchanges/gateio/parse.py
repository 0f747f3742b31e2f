"""Gate.io API v4 spot: pure parsers for websocket frames and REST bodies (protocols.md §2, §7).

Candle volume: Gate's ``a`` is the base volume and ``v`` the quote volume. Frames without
``a`` (the 2021 captures; the field was added later) carry no base volume at all: the
candle is still returned, with ``volume="0"`` and the quote volume in ``quote_volume``, and
without ``w`` it is never ``closed``. Such a candle must not be finalised from the
websocket; the REST backfill (base volume in column 6) is the source for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import msgspec
from msgspec import UNSET

from ingest.errors import ExchangeError, ParseError
from ingest.exchanges.base import (
    INTERVAL_SECONDS,
    Control,
    ParseResult,
    check_compact,
    check_id,
    digits,
    guard,
    interval_from_native,
    interval_to_native,
    levels_text,
    ms_text_to_dt,
    ms_to_dt,
    mul_text,
    native_to_compact,
    price_text,
    qty_text,
    recv_dt,
    s_to_dt,
    volume_text,
)
from ingest.exchanges.gateio import wire
from ingest.records import BookDelta, Candle, Trade

EXCHANGE = "gateio"
T = TypeVar("T")
# Pair -> compact symbol, memoised for the streams' hot path; bounded (cleared when full).
_PAIRS: dict[str, str] = {}
_PAIRS_MAX = 4096


def _pair(native: str) -> str:
    compact = _PAIRS.get(native)
    if compact is None:
        compact = native_to_compact(EXCHANGE, native)  # raises on a bad pair: never cached
        if len(_PAIRS) >= _PAIRS_MAX:
            _PAIRS.clear()
        _PAIRS[native] = compact
    return compact


@guard(EXCHANGE)
def parse(frame: bytes, recv_ts: float) -> ParseResult:
    env = wire.ENVELOPE.decode(frame)
    if env.event in ("subscribe", "unsubscribe"):
        if env.error is not None:
            return [_error(env)]
        ack = None if env.result is UNSET else wire.ACK.decode(env.result)
        if ack is not None and ack.status not in (None, "success"):
            return [_error(env, f"status {ack.status}")]
        kind = "subscribed" if env.event == "subscribe" else "unsubscribed"
        return [Control(kind, env.channel)]
    if env.error is not None:
        return [_error(env)]
    if env.channel == "spot.pong":
        return [Control("pong", None if env.time is UNSET else env.time)]
    if env.result is UNSET:
        raise ParseError(f"frame without result: {env.channel[:40]} {env.event[:20]}")
    # Updates say event "update" ("all" in older snapshots); spot.obu pushes omit it.
    return [_update(env.channel, env.result, recv_ts)]


def _error(env: wire.Envelope, fallback: str = "") -> Control:
    code = env.error.code if env.error is not None else None
    message = env.error.message if env.error is not None else fallback
    req_id = None if env.id is UNSET else env.id
    return Control("error", {"channel": env.channel, "code": code, "msg": message, "id": req_id})


def _update(
    channel: str, result: msgspec.Raw, recv_ts: float
) -> BookDelta | Trade | Candle:
    # Ordered by frequency on a busy connection.
    if channel == "spot.obu":
        return _obu(wire.OBU.decode(result), recv_ts)
    if channel == "spot.order_book_update":
        ob = wire.ORDER_BOOK_UPDATE.decode(result)
        return _delta(ob.s, ob.t, ob.b, ob.a, ob.U, ob.u, ob.full, recv_ts)
    if channel == "spot.trades":
        return _trade(wire.TRADE.decode(result), recv_ts)
    if channel == "spot.candlesticks":
        return _candle(wire.CANDLESTICK.decode(result), recv_ts)
    if channel == "spot.order_book":
        book = wire.ORDER_BOOK.decode(result)
        uid = book.lastUpdateId
        return _delta(book.s, book.t, book.bids, book.asks, uid, uid, True, recv_ts)
    raise ParseError(f"unsupported channel {channel[:40]!r}")


def _delta(
    pair: str, t_ms: int, bids: list[wire.PriceLevel], asks: list[wire.PriceLevel],
    first: int, last: int, full: bool, recv_ts: float,
) -> BookDelta:
    if last < first:
        raise ParseError("book update with U > u")
    return BookDelta(
        exchange=EXCHANGE, symbol=_pair(pair), timestamp=ms_to_dt(t_ms),
        bids=levels_text(bids), asks=levels_text(asks), first_id=check_id(first, "U"),
        last_id=check_id(last, "u"), full=full, recv_ts=recv_ts,
    )


def _obu(ob: wire.Obu, recv_ts: float) -> BookDelta:
    prefix, _, rest = ob.s.partition(".")
    pair, _, level = rest.rpartition(".")
    if prefix != "ob" or not pair or not level.isdigit():
        raise ParseError(f"bad obu stream {ob.s[:40]!r}")
    first = ob.u if ob.U is UNSET else ob.U  # a full push has only u
    return _delta(pair, ob.t, ob.b, ob.a, first, ob.u, ob.full, recv_ts)


def _trade(tr: wire.Trade, recv_ts: float) -> Trade:
    if tr.side not in ("buy", "sell"):
        raise ParseError(f"bad side {tr.side[:10]!r}")
    price, qty = price_text(tr.price), qty_text(tr.amount)
    return Trade(
        exchange=EXCHANGE, symbol=_pair(tr.currency_pair),
        trade_id=check_id(tr.id, "trade id"), timestamp=_trade_time(tr.create_time_ms),
        price=price, quantity=qty, quote_quantity=mul_text(price, qty),
        is_buyer_maker=tr.side == "sell",  # side is the taker's: a taker sells to a maker bid
        recv_ts=recv_ts,
    )


def _trade_time(value: str | int) -> datetime:
    return ms_to_dt(value) if isinstance(value, int) else ms_text_to_dt(value)


def _candle(c: wire.Candlestick, recv_ts: float) -> Candle:
    interval, sep, pair = c.n.partition("_")
    if not sep:
        raise ParseError(f"bad candle name {c.n[:40]!r}")
    return Candle(
        exchange=EXCHANGE, symbol=_pair(pair),
        interval=interval_from_native(EXCHANGE, interval), timestamp=s_to_dt(digits(c.t, "t")),
        open=price_text(c.o), high=price_text(c.h), low=price_text(c.l), close=price_text(c.c),
        volume="0" if c.a is UNSET else volume_text(c.a),  # see the module docstring
        quote_volume=volume_text(c.v), trades_count=None,  # Gate does not send a count
        closed=False if c.w is UNSET else c.w, recv_ts=recv_ts,
    )


# ---------------------------------------------------------------------------------------
# REST bodies (the caller does the HTTP; these only read the bytes)


def _decode_rest(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Gate refuses requests with ``{"label":"INVALID_PARAM_VALUE","message":…}``: that is
    an ExchangeError, not a parse problem."""
    try:
        return decoder.decode(body)
    except ValueError:
        try:
            err = wire.REST_ERROR.decode(body)
        except ValueError:
            err = None
        if err is not None:
            raise ExchangeError(f"gateio: {err.label[:40]}: {err.message[:120]}") from None
        raise


@guard(EXCHANGE)
def parse_order_book(body: bytes, symbol: str, recv_ts: float = 0.0) -> BookDelta:
    """``GET /spot/order_book?with_id=true`` → a full image with ``last_id = id``. The
    timestamp is ``current`` (ms) when present, else the receive time."""
    book = _decode_rest(wire.REST_ORDER_BOOK, body)
    if book.id is UNSET:
        raise ParseError("order book without id (request it with with_id=true)")
    uid = check_id(book.id, "id")
    ts = recv_dt(recv_ts) if book.current is UNSET else ms_to_dt(book.current)
    return BookDelta(
        exchange=EXCHANGE, symbol=_compact(symbol), timestamp=ts,
        bids=levels_text(book.bids), asks=levels_text(book.asks), first_id=uid,
        last_id=uid, full=True, recv_ts=recv_ts,
    )


@guard(EXCHANGE)
def parse_candlesticks(
    body: bytes, symbol: str, interval: str, now_ms: int, recv_ts: float = 0.0
) -> list[Candle]:
    """``GET /spot/candlesticks`` rows. Final when column 7 is ``"true"``; rows from older
    API versions without it are final once the bucket has ended before ``now_ms``."""
    interval_to_native(EXCHANGE, interval)  # ConfigError unless a seed interval
    span_ms = INTERVAL_SECONDS[interval] * 1000
    out = []
    for r in _decode_rest(wire.REST_CANDLES, body):
        open_s = digits(r.t, "t")
        closed = r.closed == "true" if r.closed is not None else open_s * 1000 + span_ms <= now_ms
        out.append(Candle(
            exchange=EXCHANGE, symbol=_compact(symbol), interval=interval,
            timestamp=s_to_dt(open_s), open=price_text(r.open), high=price_text(r.high),
            low=price_text(r.low), close=price_text(r.close),
            volume="0" if r.base_volume is None else volume_text(r.base_volume),
            quote_volume=volume_text(r.quote_volume), trades_count=None, closed=closed,
            recv_ts=recv_ts,
        ))
    return out


@guard(EXCHANGE)
def parse_trades(body: bytes, symbol: str, recv_ts: float = 0.0) -> list[Trade]:
    """``GET /spot/trades``. ``trade_id`` is ``id``, the same id ``spot.trades`` sends, so a
    backfilled trade and a streamed one share a key (``sequence_id`` is per-market and
    would not match the websocket's ``id``)."""
    out = []
    for tr in _decode_rest(wire.REST_TRADES, body):
        if tr.side not in ("buy", "sell"):
            raise ParseError(f"bad side {tr.side[:10]!r}")
        trade_id = tr.id if isinstance(tr.id, int) else digits(tr.id, "id")
        price, qty = price_text(tr.price), qty_text(tr.amount)
        out.append(Trade(
            exchange=EXCHANGE, symbol=_compact(symbol), trade_id=check_id(trade_id, "id"),
            timestamp=_trade_time(tr.create_time_ms), price=price, quantity=qty,
            quote_quantity=mul_text(price, qty), is_buyer_maker=tr.side == "sell",
            recv_ts=recv_ts,
        ))
    return out


def _compact(symbol: str) -> str:
    """REST callers may pass the stored form (``BTCUSDT``) or Gate's pair (``BTC_USDT``)."""
    return native_to_compact(EXCHANGE, symbol) if "_" in symbol else check_compact(symbol)

"""Binance spot: pure parsers for websocket frames and REST bodies (protocols.md §1, §7).

``parse`` takes one websocket text frame, raw (``/ws/<stream>``) or combined
(``/stream?streams=``, wrapped as ``{"stream":…,"data":…}``), and returns records and
``Control`` items. Trades, klines and book deltas keep the exchange's decimal text.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from msgspec import UNSET, Raw

from ingest.errors import ExchangeError, ParseError
from ingest.exchanges.base import (
    MAX_ID,
    Control,
    ParseResult,
    check_compact,
    check_id,
    guard,
    interval_from_native,
    interval_to_native,
    levels_text,
    ms_to_dt,
    mul_text,
    price_text,
    qty_text,
    recv_dt,
    volume_text,
)
from ingest.exchanges.binance import wire
from ingest.records import BookDelta, Candle, Trade

EXCHANGE = "binance"
# Diff-depth stream names; any other ``@depth…`` stream is a partial (top-N) snapshot.
_DIFF_DEPTH = ("depth", "depth@100ms", "depth@1000ms")
_EVENT_STREAMS = ("depth", "trade", "aggTrade", "kline_")
T = TypeVar("T")


@guard(EXCHANGE)
def parse(frame: bytes, recv_ts: float) -> ParseResult:
    try:
        combined = wire.COMBINED.decode(frame)
    except msgspec.DecodeError:
        pass  # not a combined event frame: partial depth, a reply, a raw stream, or bad
    else:
        if combined.stream.partition("@")[2].startswith(_EVENT_STREAMS):
            return [_event(combined.data, recv_ts)]
    env = wire.ENVELOPE.decode(frame)
    if env.data is not UNSET:
        if env.stream is UNSET:
            raise ParseError("combined frame without stream name")
        return _combined(env.stream, env.data, recv_ts)
    if env.e is not UNSET:
        return [_event(wire.EVENT.decode(frame), recv_ts)]
    return [_reply(env)]


def _combined(stream: str, data: Raw, recv_ts: float) -> ParseResult:
    native, _, kind = stream.partition("@")
    if kind.startswith("depth") and kind not in _DIFF_DEPTH:
        depth = wire.PARTIAL_DEPTH.decode(data)
        symbol = check_compact(native.upper())
        return [_full_book(depth, symbol, recv_ts)]
    if not kind.startswith(_EVENT_STREAMS) and stream != "!serverShutdown":
        raise ParseError(f"unsupported stream {kind[:40]!r}")
    return [_event(wire.EVENT.decode(data), recv_ts)]


def _event(ev: wire.Event, recv_ts: float) -> BookDelta | Trade | Candle | Control:
    # Ordered by frequency on a busy connection.
    if type(ev) is wire.DepthUpdate:
        first, last = ev.U, ev.u
        if not 0 <= first <= last <= MAX_ID:  # the common case in one comparison
            check_id(first, "U")
            check_id(last, "u")
            raise ParseError("depthUpdate with U > u")
        return BookDelta(
            exchange=EXCHANGE, symbol=check_compact(ev.s), timestamp=ms_to_dt(ev.E),
            bids=levels_text(ev.b), asks=levels_text(ev.a),
            first_id=first, last_id=last, recv_ts=recv_ts,
        )
    if type(ev) is wire.Trade:
        return _trade(ev.s, ev.t, ev.T, ev.p, ev.q, ev.m, recv_ts)
    if type(ev) is wire.AggTrade:
        # aggTrade ids are a separate sequence from raw trade ids: subscribe to one of the two.
        return _trade(ev.s, ev.a, ev.T, ev.p, ev.q, ev.m, recv_ts)
    if type(ev) is wire.KlineEvent:
        return _kline(ev.k, recv_ts)
    assert type(ev) is wire.ServerShutdown
    return Control("server_shutdown", ev.E)


def _trade(
    symbol: str, trade_id: int, ts_ms: int, p: str, q: str, maker: bool, recv_ts: float
) -> Trade:
    price, qty = price_text(p), qty_text(q)
    return Trade(
        exchange=EXCHANGE, symbol=check_compact(symbol), trade_id=check_id(trade_id, "trade id"),
        timestamp=ms_to_dt(ts_ms), price=price, quantity=qty, quote_quantity=mul_text(price, qty),
        is_buyer_maker=maker, recv_ts=recv_ts,
    )


def _kline(k: wire.Kline, recv_ts: float) -> Candle:
    return Candle(
        exchange=EXCHANGE, symbol=check_compact(k.s), interval=interval_from_native(EXCHANGE, k.i),
        timestamp=ms_to_dt(k.t), open=price_text(k.o), high=price_text(k.h),
        low=price_text(k.l), close=price_text(k.c), volume=volume_text(k.v),
        quote_volume=volume_text(k.q), trades_count=_count(k.n), closed=k.x, recv_ts=recv_ts,
    )


def _count(n: int) -> int:
    if not 0 <= n < 1 << 63:
        raise ParseError("trade count out of range")
    return n


def _full_book(depth: wire.PartialDepth, symbol: str, recv_ts: float) -> BookDelta:
    # Partial-depth payloads and REST snapshots carry no time: the receive time stands in.
    last_id = check_id(depth.lastUpdateId, "lastUpdateId")
    return BookDelta(
        exchange=EXCHANGE, symbol=symbol, timestamp=recv_dt(recv_ts),
        bids=levels_text(depth.bids), asks=levels_text(depth.asks),
        first_id=last_id, last_id=last_id, full=True, recv_ts=recv_ts,
    )


def _reply(env: wire.Envelope) -> Control:
    req_id = None if env.id is UNSET else env.id
    if env.error is not UNSET:
        return Control("error", {"code": env.error.code, "msg": env.error.msg, "id": req_id})
    if env.code is not UNSET:
        msg = None if env.msg is UNSET else env.msg
        return Control("error", {"code": env.code, "msg": msg, "id": req_id})
    if env.result is not UNSET:
        if bytes(env.result) == b"null":
            return Control("subscribed", req_id)
        return Control("result", {"id": req_id, "result": wire.ANY.decode(env.result)})
    if env.lastUpdateId is not UNSET:
        raise ParseError("partial depth on a raw stream: no symbol (use combined streams)")
    raise ParseError("unknown frame")


# ---------------------------------------------------------------------------------------
# REST bodies (the caller does the HTTP; these only read the bytes)


def _decode_rest(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a REST body; Binance's error shape ``{"code":-1121,"msg":"Invalid symbol."}``
    becomes ExchangeError (the request was understood and refused: not a parse problem)."""
    try:
        return decoder.decode(body)
    except ValueError:
        try:
            err = wire.REST_ERROR.decode(body)
        except ValueError:
            err = None
        if err is not None:
            raise ExchangeError(f"binance: {err.code}: {err.msg[:120]}") from None
        raise


@guard(EXCHANGE)
def parse_depth_snapshot(body: bytes, symbol: str, recv_ts: float = 0.0) -> BookDelta:
    """``GET /api/v3/depth`` → a full image with ``last_id = lastUpdateId``."""
    return _full_book(_decode_rest(wire.PARTIAL_DEPTH, body), check_compact(symbol), recv_ts)


@guard(EXCHANGE)
def parse_klines(
    body: bytes, symbol: str, interval: str, now_ms: int, recv_ts: float = 0.0
) -> list[Candle]:
    """``GET /api/v3/klines`` rows. REST has no closed flag: a row is final once its close
    time is earlier than ``now_ms`` (use the server's time when known)."""
    interval_to_native(EXCHANGE, interval)  # ConfigError unless a seed interval
    symbol = check_compact(symbol)
    return [
        Candle(
            exchange=EXCHANGE, symbol=symbol, interval=interval, timestamp=ms_to_dt(r.open_time),
            open=price_text(r.open), high=price_text(r.high), low=price_text(r.low),
            close=price_text(r.close), volume=volume_text(r.volume),
            quote_volume=volume_text(r.quote_volume), trades_count=_count(r.count),
            closed=r.close_time < now_ms, recv_ts=recv_ts,
        )
        for r in _decode_rest(wire.REST_KLINES, body)
    ]


@guard(EXCHANGE)
def parse_trades(body: bytes, symbol: str, recv_ts: float = 0.0) -> list[Trade]:
    """``GET /api/v3/trades`` or ``/api/v3/historicalTrades`` (raw trade ids, as ``@trade``)."""
    symbol = check_compact(symbol)
    return [
        Trade(
            exchange=EXCHANGE, symbol=symbol, trade_id=check_id(t.id, "trade id"),
            timestamp=ms_to_dt(t.time), price=price_text(t.price), quantity=qty_text(t.qty),
            quote_quantity=volume_text(t.quoteQty), is_buyer_maker=t.isBuyerMaker,
            recv_ts=recv_ts,
        )
        for t in _decode_rest(wire.REST_TRADES, body)
    ]

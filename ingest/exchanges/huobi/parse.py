"""HTX (Huobi) spot: pure parsers for websocket frames and REST bodies (protocols.md §3, §7).

Every websocket frame is gzip; ``decompress`` it first (bounded: a 200 KB bomb expands to
200 MiB), then ``parse`` the JSON. Prices and amounts arrive as JSON numbers and are
rendered as plain decimal text from their exact Decimal value (``9.2E-7`` → ``0.00000092``).
Klines carry no closed flag: ``closed`` is always False here and the caller finalises a
candle when one with a later open time arrives.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime
from decimal import Decimal

from msgspec import UNSET, Raw

from ingest.errors import ExchangeError, ParseError
from ingest.exchanges.base import (
    INTERVAL_SECONDS,
    PLAIN_NUMBER,
    Control,
    ParseResult,
    check_id,
    dec_price,
    dec_qty,
    dec_volume,
    guard,
    interval_from_native,
    interval_to_native,
    levels_dec,
    ms_to_dt,
    mul_text,
    native_to_compact,
    recv_dt,
    s_to_dt,
)
from ingest.exchanges.huobi import wire
from ingest.records import BookDelta, Candle, Level, Trade

EXCHANGE = "huobi"

# A side whose every number fits NUMERIC(38,18) as plain text or as HTX's scientific
# notation (Java's, ``9.121E-7``: one non-zero digit before the point), prices non-zero,
# in HTX's compact JSON. The check is the shape only; the exact bounds of a scientific
# number are checked on its plain rendering.
_SCIENTIFIC = r"[1-9](?:\.[0-9]{1,17})?E[-+]?[0-9]{1,2}"
_NUM = rf"(?:{PLAIN_NUMBER}|{_SCIENTIFIC})"
_PRICE = rf"(?:(?=[0-9.]*[1-9]){PLAIN_NUMBER}|{_SCIENTIFIC})"  # non-zero
_LEVEL = rf"\[{_PRICE},{_NUM}\]"
_SIDE = re.compile(rf"\[(?:{_LEVEL}(?:,{_LEVEL})*)?\]").fullmatch
_PAIRS = re.compile(r"\[([0-9.E+-]+),([0-9.E+-]+)\]").findall
# Scientific number text → plain text. Book images repeat most of their numbers from one
# frame to the next, so the rendering is memoised; bounded, cleared when full.
_PLAIN = re.compile(PLAIN_NUMBER).fullmatch
_SCI: dict[str, str] = {}
_SCI_MAX = 20_000  # about 3 MB at most


class _NotPlain(Exception):
    """A scientific number outside NUMERIC(38,18): the side takes the Decimal path."""


def _sci(text: str) -> str:
    plain = format(Decimal(text), "f")
    if _PLAIN(plain) is None:
        raise _NotPlain
    if len(_SCI) >= _SCI_MAX:
        _SCI.clear()
    _SCI[text] = plain
    return plain


def levels_raw(raw: Raw) -> tuple[Level, ...]:
    """One side of a book as undecoded JSON (``[[9302.1,0.5],…]``) → validated text levels.

    The common case is one regex check and one findall over the side's text, with no
    Decimal per number: plain numbers are their own text, scientific ones (HTX writes
    prices below 0.001 as ``9.121E-7``) are rendered once per distinct text. Anything else
    (spaces, lower-case exponents, a zero price, a number the column cannot hold) is
    decoded into Decimals and validated number by number, which raises on what is not
    storable."""
    text = str(raw, "ascii", "replace")
    if _SIDE(text) is not None:
        pairs = _PAIRS(text)
        if "E" not in text:
            return tuple(pairs)
        get = _SCI.get
        try:
            return tuple([
                ((get(p) or _sci(p)) if "E" in p else p, (get(q) or _sci(q)) if "E" in q else q)
                for p, q in pairs
            ])
        except _NotPlain:
            pass
    return levels_dec(wire.LEVELS.decode(raw))


def decompress(frame: bytes, max_bytes: int) -> bytes:
    """Gunzip one frame, refusing output beyond ``max_bytes`` and truncated input."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(frame, max_bytes)
    except zlib.error as exc:
        raise ParseError(f"huobi: bad gzip: {str(exc)[:80]}") from None
    if inflater.unconsumed_tail or (not inflater.eof and len(out) >= max_bytes):
        raise ParseError(f"huobi: frame inflates beyond {max_bytes} bytes")
    if not inflater.eof:
        raise ParseError("huobi: truncated gzip frame")
    if inflater.unused_data:
        raise ParseError("huobi: data after the gzip stream")
    return out


@guard(EXCHANGE)
def parse(frame: bytes, recv_ts: float) -> ParseResult:
    """One decompressed websocket frame."""
    env = wire.ENVELOPE.decode(frame)
    if env.ch is not UNSET:
        if env.tick is UNSET:
            raise ParseError("push without tick")
        return _push(env.ch, env.tick, env.ts, recv_ts)
    if env.ping is not UNSET:
        return [Control("ping", env.ping)]
    if env.status == "error":
        return [Control("error", {
            "code": None if env.err_code is UNSET else env.err_code,
            "msg": None if env.err_msg is UNSET else env.err_msg,
            "id": None if env.id is UNSET else env.id,
            "topic": None if env.rep is UNSET else env.rep,
        })]
    if env.rep is not UNSET:
        return [_rep(env.rep, env.data, env.ts, recv_ts)]
    if env.subbed is not UNSET:
        return [Control("subscribed", env.subbed)]
    if env.unsubbed is not UNSET:
        return [Control("unsubscribed", env.unsubbed)]
    if env.pong is not UNSET:
        return [Control("pong", env.pong)]
    raise ParseError("unknown frame")


_TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {}
_MAX_TOPICS = 10_000  # bounded against a flood of distinct topics


def _topic(topic: str) -> tuple[str, tuple[str, ...]]:
    """``market.btcusdt.mbp.150`` → (``BTCUSDT``, (``mbp``, ``150``)); memoised (a
    connection carries a few hundred topics at most)."""
    known = _TOPICS.get(topic)
    if known is not None:
        return known
    parts = topic.split(".")
    if len(parts) < 3 or parts[0] != "market":
        raise ParseError(f"unknown topic {topic[:60]!r}")
    known = (native_to_compact(EXCHANGE, parts[1]), tuple(parts[2:]))
    if len(_TOPICS) >= _MAX_TOPICS:
        _TOPICS.clear()
    _TOPICS[topic] = known
    return known


def _push(ch: str, tick: Raw, env_ts: int | object, recv_ts: float) -> ParseResult:
    symbol, kind = _topic(ch)
    head = kind[0]
    if head == "mbp" and len(kind) == 2:
        mbp = wire.MBP_TICK.decode(tick)
        return [_mbp(symbol, mbp, _when(env_ts, recv_ts), recv_ts)]
    if head == "trade" and kind == ("trade", "detail"):
        return list(_trades(symbol, wire.TRADE_TICK.decode(tick).data, recv_ts))
    if head == "depth" and kind == ("depth", "step0"):
        depth = wire.DEPTH_TICK.decode(tick)
        when = _when(env_ts if depth.ts is UNSET else depth.ts, recv_ts)
        return [_image(symbol, depth.version, depth.bids, depth.asks, when, recv_ts)]
    if head == "kline" and len(kind) == 2:
        interval = interval_from_native(EXCHANGE, kind[1])
        return [_candle(symbol, interval, wire.KLINE_TICK.decode(tick), False, recv_ts)]
    if head == "mbp" and len(kind) == 3 and kind[1] == "refresh":
        image = wire.MBP_IMAGE.decode(tick)
        when = _when(env_ts, recv_ts)
        return [_image(symbol, image.seqNum, image.bids, image.asks, when, recv_ts)]
    raise ParseError(f"unsupported topic {'.'.join(kind)[:40]!r}")


def _when(ts_ms: int | object, recv_ts: float) -> datetime:
    return ms_to_dt(ts_ms) if isinstance(ts_ms, int) else recv_dt(recv_ts)


def _mbp(symbol: str, mbp: wire.MbpTick, when: datetime, recv_ts: float) -> BookDelta:
    if mbp.seqNum <= mbp.prevSeqNum:
        raise ParseError("mbp seqNum <= prevSeqNum")
    prev = check_id(mbp.prevSeqNum, "prevSeqNum")
    return BookDelta(
        exchange=EXCHANGE, symbol=symbol, timestamp=when,
        bids=levels_raw(mbp.bids), asks=levels_raw(mbp.asks), first_id=prev + 1,
        last_id=check_id(mbp.seqNum, "seqNum"), prev_id=prev, recv_ts=recv_ts,
    )


def _image(
    symbol: str, seq: int, bids: Raw, asks: Raw,
    when: datetime, recv_ts: float,
) -> BookDelta:
    seq = check_id(seq, "version")
    return BookDelta(
        exchange=EXCHANGE, symbol=symbol, timestamp=when, bids=levels_raw(bids),
        asks=levels_raw(asks), first_id=seq, last_id=seq, full=True, recv_ts=recv_ts,
    )


def _rep(topic: str, data: Raw | object, env_ts: int | object, recv_ts: float) -> BookDelta:
    """A REQ reply: only the MBP refresh is requested over the websocket."""
    symbol, kind = _topic(topic)
    if kind[0] != "mbp" or not isinstance(data, Raw):
        raise ParseError(f"unsupported reply {topic[:60]!r}")
    image = wire.MBP_IMAGE.decode(data)
    return _image(symbol, image.seqNum, image.bids, image.asks, _when(env_ts, recv_ts), recv_ts)


def _trades(
    symbol: str, items: list[wire.TradeItem] | list[wire.RestTradeItem], recv_ts: float
) -> list[Trade]:
    out = []
    for item in items:
        if item.direction not in ("buy", "sell"):
            raise ParseError(f"bad direction {item.direction[:10]!r}")
        trade_id = item.tradeId if isinstance(item, wire.TradeItem) else item.trade_id
        price, qty = dec_price(item.price), dec_qty(item.amount)
        out.append(Trade(
            exchange=EXCHANGE, symbol=symbol, trade_id=check_id(trade_id, "tradeId"),
            timestamp=ms_to_dt(item.ts), price=price, quantity=qty,
            quote_quantity=mul_text(price, qty),
            is_buyer_maker=item.direction == "sell",  # direction is the taker's side
            recv_ts=recv_ts,
        ))
    return out


def _candle(
    symbol: str, interval: str, k: wire.KlineTick, closed: bool, recv_ts: float
) -> Candle:
    count = k.count
    if count is not None and not 0 <= count < 1 << 63:
        raise ParseError("trade count out of range")
    return Candle(
        exchange=EXCHANGE, symbol=symbol, interval=interval, timestamp=s_to_dt(k.id),
        open=dec_price(k.open), high=dec_price(k.high), low=dec_price(k.low),
        close=dec_price(k.close), volume=dec_volume(k.amount), quote_volume=dec_volume(k.vol),
        trades_count=count, closed=closed, recv_ts=recv_ts,
    )


# ---------------------------------------------------------------------------------------
# REST bodies (the caller does the HTTP; these only read the bytes). Envelope
# ``{"status":"error","err-code":…,"err-msg":…}`` is an ExchangeError.


def _check_status(status: str, code: str | None, msg: str | None) -> None:
    if status != "ok":
        raise ExchangeError(f"huobi: {status[:20]}: {(code or '')[:40]}: {(msg or '')[:120]}")


def _rest_symbol(symbol: str) -> str:
    return native_to_compact(EXCHANGE, symbol)


@guard(EXCHANGE)
def parse_history_kline(
    body: bytes, symbol: str, interval: str, now_ms: int, recv_ts: float = 0.0
) -> list[Candle]:
    """``/market/history/kline`` and ``/market/history/candles`` (same rows, newest first).
    A row is final once its bucket ended before ``now_ms``."""
    interval_to_native(EXCHANGE, interval)  # ConfigError unless a seed interval
    resp = wire.REST_KLINES.decode(body)
    _check_status(resp.status, resp.err_code, resp.err_msg)
    span_s, sym = INTERVAL_SECONDS[interval], _rest_symbol(symbol)
    return [
        _candle(sym, interval, k, (k.id + span_s) * 1000 <= now_ms, recv_ts) for k in resp.data
    ]


parse_history_candles = parse_history_kline


@guard(EXCHANGE)
def parse_history_trade(body: bytes, symbol: str, recv_ts: float = 0.0) -> list[Trade]:
    """``/market/history/trade``: groups of trades; the id is ``trade-id``."""
    resp = wire.REST_TRADES.decode(body)
    _check_status(resp.status, resp.err_code, resp.err_msg)
    sym = _rest_symbol(symbol)
    return [t for group in resp.data for t in _trades(sym, group.data, recv_ts)]


@guard(EXCHANGE)
def parse_depth(body: bytes, symbol: str, recv_ts: float = 0.0) -> BookDelta:
    """``/market/depth?type=step0`` → a full image with ``last_id = version``."""
    resp = wire.REST_DEPTH.decode(body)
    _check_status(resp.status, resp.err_code, resp.err_msg)
    if resp.tick is None:
        raise ParseError("depth reply without tick")
    tick = resp.tick
    when = _when(tick.ts, recv_ts)
    return _image(_rest_symbol(symbol), tick.version, tick.bids, tick.asks, when, recv_ts)

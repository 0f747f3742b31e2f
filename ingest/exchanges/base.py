"""What the three exchange parsers share.

- ``Control`` and ``ParseResult``: a parser returns records *and* the non-data frames
  (acks, pings, errors, shutdown notices) the connection layer must act on.
- ``guard``: turns anything a hostile frame can make Python raise into ``ParseError``.
- Time: exchange milliseconds/seconds to aware UTC datetimes, with a sanity window.
- Decimal text validation: every price and quantity must fit the ``NUMERIC(38,18)`` columns
  (finite, price > 0, quantity >= 0, <= 20 integer and <= 18 fractional digits), because
  one bad value fails a whole COPY batch and NUMERIC silently rounds 1e-19 to 0.
- Names: unified settings symbols (``BTC/USDT``) and seed intervals (``7d``) to and from
  each exchange's own spelling (``ingest/exchanges/naming.py``, re-exported here).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar

import msgspec

from ingest.errors import ParseError
from ingest.exchanges.naming import (
    INTERVAL_SECONDS,
    binance_stream_symbol,
    check_compact,
    interval_from_native,
    interval_to_native,
    native_to_compact,
    to_compact,
    to_native_symbol,
)
from ingest.records import AnyRecord, Level

__all__ = [
    "INTERVAL_SECONDS",
    "Control",
    "ParseResult",
    "binance_stream_symbol",
    "check_compact",
    "check_id",
    "dec_price",
    "dec_qty",
    "dec_volume",
    "digits",
    "guard",
    "interval_from_native",
    "interval_to_native",
    "levels_dec",
    "levels_text",
    "ms_text_to_dt",
    "ms_to_dt",
    "mul_text",
    "native_to_compact",
    "price_text",
    "qty_text",
    "recv_dt",
    "s_to_dt",
    "to_compact",
    "to_native_symbol",
    "volume_text",
]


class Control(msgspec.Struct, frozen=True):
    """A non-data frame. ``kind`` is one of:

    ``ping`` (value: the payload to echo in the pong), ``pong``, ``subscribed`` and
    ``unsubscribed`` (value: what identifies the request: Binance ``id``, Gate channel,
    HTX topic), ``result`` (a Binance reply with a non-null result), ``error`` (value: a
    dict with the exchange's code/message and the request id or topic when given),
    ``server_shutdown`` (Binance; value: event time ms).
    """

    kind: str
    value: Any = None


ParseResult = list[AnyRecord | Control]

P = ParamSpec("P")
R = TypeVar("R")

# Everything a malformed frame can make the decoders or Decimal raise: msgspec errors and
# UnicodeDecodeError are ValueErrors, deep nesting is RecursionError, InvalidOperation and
# OverflowError are ArithmeticErrors.
_FRAME_ERRORS = (ValueError, RecursionError, ArithmeticError)
_MAX_REASON = 160


def guard(exchange: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a parser so one bad frame raises ``ParseError`` and nothing else."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except _FRAME_ERRORS as exc:
                reason = f"{exchange}: {type(exc).__name__}: {exc}"
                raise ParseError(reason[:_MAX_REASON]) from exc

        return inner

    return wrap


# ---------------------------------------------------------------------------------------
# Time

# The window a market-data timestamp must fall in. Anything outside is a unit mix-up
# (seconds for ms, µs for ms) or garbage, and would land in a nonsense chunk.
MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01


def ms_to_dt(ms: int) -> datetime:
    """Exchange milliseconds → aware UTC datetime. Exact: below 2**53, ms/1000 is within
    0.25 µs of the true value and fromtimestamp rounds to the nearest µs (and it is about
    3x faster than adding a timedelta)."""
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise ParseError(f"timestamp {ms} ms out of range")
    return datetime.fromtimestamp(ms / 1000, UTC)


def s_to_dt(s: int) -> datetime:
    return ms_to_dt(s * 1000)


def ms_text_to_dt(text: str) -> datetime:
    """Gate's ``create_time_ms``: ``"1606292218213.4578"`` (ms with a fraction), to µs."""
    whole, _, frac = text.partition(".")
    ms = digits(whole, "timestamp")
    if frac and not (frac.isascii() and frac.isdigit()):
        raise ParseError("timestamp fraction is not digits")
    micros = int((frac + "000")[:3])
    if not MIN_TS_MS <= ms <= MAX_TS_MS:
        raise ParseError(f"timestamp {ms} ms out of range")
    # Exact for the reason ms_to_dt is: µs since the epoch is below 2**53.
    return datetime.fromtimestamp((ms * 1000 + micros) / 1_000_000, UTC)


def recv_dt(recv_ts: float) -> datetime:
    """The local receive time, for frames that carry no exchange time of their own."""
    return datetime.fromtimestamp(recv_ts, UTC)


def digits(text: str, what: str) -> int:
    """A non-negative integer sent as a string. ``int()`` alone would accept ``" 1_0"``."""
    if not (0 < len(text) <= 19 and text.isascii() and text.isdigit()):
        raise ParseError(f"{what} is not an integer string")
    return int(text)


MAX_ID = (1 << 63) - 1  # BIGINT


def check_id(value: int, what: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise ParseError(f"{what} {value} outside BIGINT")
    return value


# ---------------------------------------------------------------------------------------
# Decimals

# Plain decimal text that fits NUMERIC(38,18) as is: the common case, checked without
# building a Decimal (a regex is ~2x faster than Decimal() plus the checks). Also the
# number of the HTX book fast path.
PLAIN_NUMBER = r"[0-9]{1,20}(?:\.[0-9]{1,18})?"
_PLAIN = re.compile(PLAIN_NUMBER).fullmatch
# Precision high enough that products of two NUMERIC(38,18) values are exact.
_CTX = Context(prec=100, rounding=ROUND_HALF_EVEN)
_SCALE = Decimal("1e-18")
_MAX_TEXT = 64


def _check_dec(d: Decimal, what: str, positive: bool, rounds: bool) -> str:
    """Validate ``d`` and render it as plain decimal text (never through float).

    ``rounds``: for aggregates (volumes, derived quote quantities) more than 18 fractional
    digits are rounded half-even, which is what NUMERIC(38,18) would do; for prices and
    quantities they are an error, because the stored value would differ from the exchange's.
    """
    if not d.is_finite():
        raise ParseError(f"{what} is not finite")
    if d.is_zero():
        if positive:
            raise ParseError(f"{what} is zero")
        return "0"
    if d.is_signed():
        raise ParseError(f"{what} is negative")
    adjusted = d.adjusted()  # checked before rendering: format(1e999999, "f") is 1 MB
    if adjusted > 19:
        raise ParseError(f"{what} has more than 20 integer digits")
    if adjusted < -18:
        if rounds and not positive:
            return "0"
        raise ParseError(f"{what} is below 1e-18")
    text = format(d, "f")
    dot = text.find(".")
    if dot >= 0 and len(text) - dot - 1 > 18 and len(text.rstrip("0")) - dot - 1 > 18:
        if not rounds:
            raise ParseError(f"{what} has more than 18 decimals")
        rounded = d.quantize(_SCALE, context=_CTX)
        if rounded.adjusted() > 19:
            raise ParseError(f"{what} has more than 20 integer digits")
        text = format(rounded, "f")
    return text


def _from_text(text: str, what: str, positive: bool, rounds: bool) -> str:
    if len(text) > _MAX_TEXT:
        raise ParseError(f"{what} text too long")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ParseError(f"{what} is not a decimal") from None
    return _check_dec(d, what, positive, rounds)


def price_text(text: str) -> str:
    """A price as the exchange's decimal text; returned unchanged when already plain."""
    if _PLAIN(text) is not None:
        if text.strip("0.") == "":
            raise ParseError("price is zero")
        return text
    return _from_text(text, "price", True, False)


def qty_text(text: str) -> str:
    if _PLAIN(text) is not None:
        return text
    return _from_text(text, "quantity", False, False)


def volume_text(text: str) -> str:
    if _PLAIN(text) is not None:
        return text
    return _from_text(text, "volume", False, True)


def dec_price(d: Decimal) -> str:
    return _check_dec(d, "price", True, False)


def dec_qty(d: Decimal) -> str:
    return _check_dec(d, "quantity", False, False)


def dec_volume(d: Decimal) -> str:
    return _check_dec(d, "volume", False, True)


def mul_text(price: str, qty: str) -> str:
    """price * quantity, exact, trailing zeros dropped, rounded to the column's 18 places.
    Inputs must already be validated (plain text, as ``price_text``/``qty_text`` return).

    Hot path: the product of the two digit strings as integers, the point put back by
    string slicing (3x cheaper than two Decimals, multiply, normalize and render). Products
    with more than 18 decimals or 20 integer digits take the Decimal path, which rounds or
    refuses them."""
    pi, _, pf = price.partition(".")
    qi, _, qf = qty.partition(".")
    pf = pf.rstrip("0")
    qf = qf.rstrip("0")
    scale = len(pf) + len(qf)
    if scale > 18:
        return _mul_dec(price, qty)
    n = int(pi + pf) * int(qi + qf)
    if not n:
        return "0"
    text = str(n)
    if not scale:
        return text if len(text) <= 20 else _mul_dec(price, qty)
    whole = len(text) - scale
    if whole <= 0:
        return "0." + "0" * -whole + text.rstrip("0")
    if whole > 20:
        return _mul_dec(price, qty)
    return (text[:whole] + "." + text[whole:]).rstrip("0").rstrip(".")


def _mul_dec(price: str, qty: str) -> str:
    product = _CTX.multiply(Decimal(price), Decimal(qty))
    if product.is_zero():
        return "0"
    return _check_dec(product.normalize(_CTX), "quote quantity", False, True)


def levels_text(levels: Sequence[tuple[str, str]]) -> tuple[Level, ...]:
    """Validated [price, quantity] string pairs (Binance, Gate); text kept as received.

    Hot path: when every level is already plain text (the normal case) the decoder's own
    tuples are reused; otherwise each level is checked and re-rendered."""
    plain = _PLAIN
    for price, qty in levels:
        if plain(price) is None or plain(qty) is None or not price.strip("0."):
            return tuple((price_text(p), qty_text(q)) for p, q in levels)
    return tuple(levels)


def levels_dec(levels: Sequence[tuple[Decimal, Decimal]]) -> tuple[Level, ...]:
    """Validated [price, quantity] JSON numbers (HTX), rendered as plain decimal text."""
    return tuple((dec_price(p), dec_qty(q)) for p, q in levels)

"""Row checks that run before COPY, and the COPY text-format fields they produce.

A value that PostgreSQL would round, overflow on or store as ``NaN`` is rejected here, so a
batch rarely reaches the database with a row that can fail it. The CHECK constraints in
schema/ back these checks; anything that still fails in the database is isolated by halving
(see ``dbwrite``).

Decimals stay text: the common plain form (``"42000.12"``) is checked with one regex; other
forms the exchanges may send (``"9.2E-7"``) go through ``Decimal`` and are rewritten to plain
text, never through a float.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_INT_DIGITS = 20  # NUMERIC(38,18): 38 - 18
MAX_FRAC_DIGITS = 18
MAX_TEXT_LEN = 128
MAX_DECIMAL_TEXT_LEN = 80  # longer input is not a price; it also bounds the Decimal fallback
EARLIEST = datetime(2009, 1, 1, tzinfo=UTC)  # before any crypto exchange existed
MAX_FUTURE = timedelta(days=1)

_PLAIN = re.compile(r"(-?)(\d+)(?:\.(\d*))?")
# The usual exchange form, already within NUMERIC(38,18) and >= 0: the hot path (callers
# check "> 0" with value.strip("0.")). Several fields are checked by one match over
# "a<TAB>b<TAB>…", the form they take in the COPY line: a tab inside a value changes the
# field count, so it cannot pass.
_NONNEG = r"(?:0|[1-9]\d{0,19})(?:\.\d{1,18})?"
FAST_DECIMAL = re.compile(_NONNEG).fullmatch
PRICE_QTY_QUOTE = re.compile("\t".join([_NONNEG] * 3)).fullmatch
OHLCV = re.compile("\t".join([_NONNEG] * 5) + f"(?:\t{_NONNEG})?").fullmatch
_TEXT_SPECIAL = re.compile(r"[\\\t\n\r]")


class Reject(Exception):
    """One row failed validation. ``reason`` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _digits_from_decimal(text: str, field: str) -> tuple[str, int, int, bool]:
    """Plain text, integer digits, fractional digits and sign for a non-plain decimal."""
    if len(text) > MAX_DECIMAL_TEXT_LEN or "_" in text or text != text.strip():
        raise Reject(f"{field}: not a decimal: {text[:40]!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Reject(f"{field}: not a decimal: {text[:40]!r}") from None
    if not value.is_finite():
        raise Reject(f"{field}: not finite: {text[:40]!r}")
    sign, digits, exponent = value.normalize().as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    if value == 0:
        return "0", 0, 0, False
    frac = max(0, -exponent)
    ints = max(0, len(digits) + exponent)
    if ints > MAX_INT_DIGITS or frac > MAX_FRAC_DIGITS:
        return "", ints, frac, bool(sign)
    return format(value.normalize(), "f"), ints, frac, bool(sign)


def decimal_text(value: Any, *, minimum: str, field: str) -> str:
    """Check one decimal and return its text for COPY.

    ``minimum`` is ``"positive"`` (price > 0), ``"nonneg"`` (quantity >= 0) or ``"any"``.
    """
    if type(value) is not str:
        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            value = str(value)
        else:
            raise Reject(f"{field}: expected decimal text, got {type(value).__name__}")
    m = _PLAIN.fullmatch(value)
    if m is not None:
        negative, int_part, frac_part = m.group(1), m.group(2), m.group(3) or ""
        ints = len(int_part.lstrip("0"))
        frac = len(frac_part.rstrip("0"))
        nonzero = ints > 0 or frac > 0
        text = str(value)
        if len(value) > MAX_DECIMAL_TEXT_LEN:
            raise Reject(f"{field}: decimal text too long")
    else:
        text, ints, frac, neg = _digits_from_decimal(value, field)
        negative = "-" if neg else ""
        nonzero = text not in ("0", "")
    if ints > MAX_INT_DIGITS:
        raise Reject(f"{field}: {value[:40]} exceeds NUMERIC(38,18) "
                     f"(> {MAX_INT_DIGITS} integer digits)")
    if frac > MAX_FRAC_DIGITS:
        raise Reject(f"{field}: {value[:40]} has more than {MAX_FRAC_DIGITS} fractional digits")
    if negative and nonzero and minimum != "any":
        raise Reject(f"{field}: negative value {value[:40]}")
    if minimum == "positive" and not nonzero:
        raise Reject(f"{field}: must be > 0, got {value[:40]}")
    return text


def positive(value: Any, field: str) -> str:
    """``decimal_text(minimum="positive")``, with the common case in two C calls."""
    if type(value) is str and FAST_DECIMAL(value) is not None and value.strip("0."):
        return value
    return decimal_text(value, minimum="positive", field=field)


def nonneg(value: Any, field: str) -> str:
    if type(value) is str and FAST_DECIMAL(value) is not None:
        return value
    return decimal_text(value, minimum="nonneg", field=field)


def int64_text(value: Any, field: str, *, nonneg: bool = False) -> str:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise Reject(f"{field}: expected a 64-bit integer, got {str(value)[:40]}")
    if nonneg and value < 0:
        raise Reject(f"{field}: must be >= 0, got {value}")
    return str(value)


_dumps = orjson.dumps


def iso_text(ts: datetime) -> str:
    """``ts.isoformat()``; for a plain UTC datetime (what the parsers make) orjson writes
    the same text in C, about 3 x faster: this runs once per row."""
    if type(ts) is datetime and ts.tzinfo is UTC:
        return _dumps(ts)[1:-1].decode()
    return str(ts.isoformat())


class Window:
    """Per-batch context: the accepted timestamp range and a cache of escaped TEXT fields."""

    __slots__ = ("high", "low", "texts")

    def __init__(self, now: datetime, texts: dict[str, str]) -> None:
        self.low = EARLIEST
        self.high = now + MAX_FUTURE
        self.texts = texts  # checked, quoted TEXT values; shared across batches (they repeat)

    def timestamp(self, ts: Any, field: str = "timestamp") -> str:
        try:
            if self.low <= ts <= self.high:  # TypeError for naive datetimes and non-datetimes
                return iso_text(ts)
        except TypeError:
            pass
        if not isinstance(ts, datetime):
            raise Reject(f"{field}: expected datetime, got {type(ts).__name__}")
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise Reject(f"{field}: naive datetime (timezone required)")
        raise Reject(f"{field}: {ts.isoformat()} outside {self.low.date()} .. now + 1 day")

    def text(self, value: Any, field: str) -> str:
        """A non-empty TEXT value as a COPY field (escaped when it needs to be)."""
        cached = self.texts.get(value) if type(value) is str else None
        if cached is not None:
            return cached
        if type(value) is not str or not value:
            raise Reject(f"{field}: must be a non-empty string")
        if len(value) > MAX_TEXT_LEN or "\x00" in value:
            raise Reject(f"{field}: {value[:40]!r} is too long or holds NUL")
        quoted = copy_escape(value)
        if len(self.texts) > 10_000:  # bound the cache against a flood of distinct symbols
            self.texts.clear()
        self.texts[value] = quoted
        return quoted


def copy_escape(value: str) -> str:
    """Escape a value for COPY's text format (tab-separated, ``\\N`` for NULL).

    Backslash first: escaped, a value's "\\." can no longer read as the end-of-data line."""
    if _TEXT_SPECIAL.search(value) is None:
        return value
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


def truncate(obj: Any, limit: int = 300) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + "…"

"""Decimal values and source timestamps for ``market_metrics``: pure checks, no I/O.

Values arrive as JSON numbers (CoinGecko) or numeric strings (alternative.me). They are
turned into ``Decimal`` from their own text (``json.loads(parse_float=Decimal)``), never
through a float, and leave here as the decimal text COPY stores into NUMERIC(38,18).

NUMERIC(38,18) keeps 20 integer digits and 18 fractional ones. PostgreSQL would round
extra fractional digits silently and fail the whole batch on a value too large, so both
are settled here: more than 18 fractional digits are rounded half-even (banker's
rounding, the same rule ``Decimal`` uses by default, so a long tail of dominance digits
such as ``47.82057011844006123456`` loses no more than half a unit in the 18th place);
a value with more than 20 integer digits is rejected.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from ingest.errors import ParseError

SCALE = 18
INT_DIGITS = 38 - SCALE
_QUANTUM = Decimal(1).scaleb(-SCALE)
_LIMIT = Decimal(10) ** INT_DIGITS
# Enough precision that quantizing a value that fits can never raise InvalidOperation.
_CTX = Context(prec=80, rounding=ROUND_HALF_EVEN)
_NUMERIC_TEXT = re.compile(r"-?\d{1,400}(\.\d{1,400})?([eE][-+]?\d{1,4})?")
# Bitcoin's genesis block: no market-wide metric predates it, so an earlier stamp is garbage.
EARLIEST_TS_S = 1_231_006_505
# A source's clock may run a little ahead of ours; a stamp further ahead than this is garbage.
FUTURE_SLACK_S = 86_400


class BadValue(ParseError):
    """A field is present but unusable. ``reason`` is a short code safe as a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def to_decimal(raw: Any, field: str) -> Decimal:
    """A JSON number (already a Decimal or int) or a numeric string → Decimal.

    Strings must look like a plain number: ``Decimal("NaN")`` and ``Decimal("Infinity")``
    parse without complaint, so they are refused by the pattern rather than afterwards.
    ``bool`` is an ``int`` subclass in Python, so ``true`` is refused explicitly.
    """
    if isinstance(raw, bool) or raw is None:
        raise BadValue("bad_value", f"{field}: expected a number, got {_short(raw)}")
    if isinstance(raw, Decimal):
        value = raw
    elif isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, str) and _NUMERIC_TEXT.fullmatch(raw.strip()):
        value = Decimal(raw.strip())
    else:
        raise BadValue("bad_value", f"{field}: expected a number, got {_short(raw)}")
    if not value.is_finite():
        raise BadValue("bad_value", f"{field}: not a finite number: {_short(raw)}")
    return value


def numeric_text(
    value: Decimal,
    field: str,
    *,
    allow_negative: bool = False,
    max_value: Decimal | None = None,
) -> str:
    """Validate ``value`` for NUMERIC(38,18) and return it as plain decimal text."""
    if not value.is_finite():
        raise BadValue("bad_value", f"{field}: not a finite number")
    if value < 0 and not allow_negative:
        raise BadValue("bad_value", f"{field}: negative value {value}")
    if max_value is not None and value > max_value:
        raise BadValue("bad_value", f"{field}: {value} exceeds {max_value}")
    # copy_abs, not abs(): abs() rounds to the default 28-digit context and would let
    # 99999999999999999999.9999999999999999999 pass as 1E+20 (or reject what fits).
    if value.copy_abs() >= _LIMIT:
        raise BadValue("out_of_range", f"{field}: {_short(str(value))} does not fit NUMERIC(38,18)")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -SCALE:
        value = value.quantize(_QUANTUM, context=_CTX)
        if value.copy_abs() >= _LIMIT:  # rounding up can carry into a 21st integer digit
            raise BadValue("out_of_range", f"{field}: {value} does not fit NUMERIC(38,18)")
    if value.is_zero():
        value = value.copy_abs()  # rounding -1e-19 gives -0E-18; store an unsigned zero
    # Fixed-point text: "1E+3" would be accepted by PostgreSQL, but people read this too.
    return format(value, "f")


def unix_seconds(raw: Any, field: str, now_s: float) -> datetime:
    """Unix seconds (an int, or a string of digits) → an aware UTC datetime in a sane window."""
    if isinstance(raw, str) and raw.strip().isdigit() and len(raw.strip()) <= 12:
        seconds = int(raw.strip())
    elif isinstance(raw, int) and not isinstance(raw, bool):
        seconds = raw
    elif isinstance(raw, Decimal) and raw.is_finite() and raw == raw.to_integral_value():
        seconds = int(raw)
    else:
        raise BadValue("bad_timestamp", f"{field}: expected unix seconds, got {_short(raw)}")
    if not EARLIEST_TS_S <= seconds <= now_s + FUTURE_SLACK_S:
        raise BadValue("bad_timestamp", f"{field}: {seconds} is outside the plausible range")
    return datetime.fromtimestamp(seconds, tz=UTC)


def _short(raw: Any, limit: int = 40) -> str:
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "EARLIEST_TS_S",
    "SCALE",
    "BadValue",
    "numeric_text",
    "to_decimal",
    "unix_seconds",
]

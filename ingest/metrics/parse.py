"""Pure parsers: a response body in, ``MarketMetric`` records out. No I/O, no clock, no logging.

``now_s`` (wall-clock unix seconds) is passed in: it stamps ``recv_ts`` and bounds the
plausible range of the source's own timestamps.

Strictness: the fields a row cannot exist without (CoinGecko's ``updated_at``, BTC
dominance and total market cap; at least one good Fear & Greed entry) fail the whole
response with a ``BadValue`` whose ``reason`` is a short code. Optional extras (ETH
dominance, volume, …) and single bad history entries are left out and listed in
``Parsed.skipped``, so one odd field does not cost the rows that are fine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from ingest.metrics.values import BadValue, numeric_text, to_decimal, unix_seconds
from ingest.records import MarketMetric

COINGECKO = "coingecko"
FEAR_GREED = "alternative.me"
_HUNDRED = Decimal(100)


@dataclass
class Parsed:
    records: list[MarketMetric]
    skipped: list[str] = field(default_factory=list)  # short, safe-to-log descriptions


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN, Infinity and -Infinity; JSON does not, and neither do we.
    raise ValueError(f"non-standard JSON constant {name}")


def decode_json(body: bytes) -> Any:
    """JSON → Python with every non-integer number as a Decimal built from its own text."""
    head = body[:64].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<")):
        raise BadValue("html_page", f"HTML instead of JSON: {snippet(body)}")
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise BadValue("invalid_json", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        detail = f"invalid JSON ({_first_line(exc)}): {snippet(body)}"
        raise BadValue("invalid_json", detail) from None


def snippet(body: bytes, limit: int = 160) -> str:
    """The start of a body, printable and short, for a log line."""
    text = body[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text + ("…" if len(body) > limit else "")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _get(obj: Any, path: tuple[str, ...], where: str) -> Any:
    cur = obj
    for i, key in enumerate(path):
        if not isinstance(cur, dict) or key not in cur:
            raise BadValue("missing_field", f"missing field {where}.{'.'.join(path[: i + 1])}")
        cur = cur[key]
    return cur


# --------------------------------------------------------------------------------------------
# CoinGecko /api/v3/global


class _Field(NamedTuple):
    metric_type: str
    name: str | None  # metadata name for 'other' (part of the unique key)
    path: tuple[str, ...]
    unit: str
    allow_negative: bool
    max_value: Decimal | None
    required: bool


_PCT = ("percent", False, _HUNDRED)  # unit, allow_negative, max_value
_USD = ("usd", False, None)
_COUNT = ("count", False, None)
COINGECKO_FIELDS: tuple[_Field, ...] = (
    _Field("btc_dominance", None, ("market_cap_percentage", "btc"), *_PCT, required=True),
    _Field("total_market_cap", None, ("total_market_cap", "usd"), *_USD, required=True),
    _Field("other", "eth_dominance", ("market_cap_percentage", "eth"), *_PCT, required=False),
    _Field("other", "total_volume_usd", ("total_volume", "usd"), *_USD, required=False),
    # A 24 h change is negative half the time: the one field where a sign is meaningful.
    _Field("other", "market_cap_change_percentage_24h_usd",
           ("market_cap_change_percentage_24h_usd",), "percent", True, None, required=False),
    _Field("other", "active_cryptocurrencies", ("active_cryptocurrencies",), *_COUNT,
           required=False),
    _Field("other", "markets", ("markets",), *_COUNT, required=False),
)


def _coingecko_value(data: Any, f: _Field) -> str:
    where = f"data.{'.'.join(f.path)}"
    raw = _get(data, f.path, "data")
    return numeric_text(to_decimal(raw, where), where,
                        allow_negative=f.allow_negative, max_value=f.max_value)


def parse_coingecko_global(body: bytes, now_s: float) -> Parsed:
    """``{"data": {...}}`` → BTC dominance, total market cap (USD) and the extras as 'other'."""
    doc = decode_json(body)
    data = _get(doc, ("data",), "$")
    if not isinstance(data, dict):
        raise BadValue("missing_field", "field $.data is not an object")
    ts = unix_seconds(_get(data, ("updated_at",), "data"), "data.updated_at", now_s)
    out = Parsed(records=[])
    for f in COINGECKO_FIELDS:
        try:
            value = _coingecko_value(data, f)
        except BadValue as exc:
            if f.required:
                raise
            out.skipped.append(exc.detail)
            continue
        meta: dict[str, Any] = {"source": COINGECKO, "unit": f.unit}
        if f.name:
            meta["name"] = f.name
        out.records.append(MarketMetric(metric_type=f.metric_type, timestamp=ts, value=value,
                                        metadata=meta, recv_ts=now_s))
    return out


# --------------------------------------------------------------------------------------------
# alternative.me /fng/


def _fear_greed_entry(entry: Any, i: int, now_s: float) -> MarketMetric:
    where = f"data[{i}]"
    if not isinstance(entry, dict):
        raise BadValue("missing_field", f"{where} is not an object")
    value = to_decimal(_get(entry, ("value",), where), f"{where}.value")
    if value != value.to_integral_value() or not 0 <= value <= _HUNDRED:
        raise BadValue("bad_value", f"{where}.value: {value} is not an integer 0-100")
    ts = unix_seconds(_get(entry, ("timestamp",), where), f"{where}.timestamp", now_s)
    meta: dict[str, Any] = {"source": FEAR_GREED}
    classification = entry.get("value_classification")
    if isinstance(classification, str) and classification.strip():
        meta["classification"] = classification.strip()[:64]
    return MarketMetric(metric_type="fear_greed_index", timestamp=ts,
                        value=numeric_text(value.to_integral_value(), f"{where}.value"),
                        metadata=meta, recv_ts=now_s)


def parse_fear_greed(body: bytes, now_s: float) -> Parsed:
    """``{"data": [{"value": "47", "value_classification": ..., "timestamp": "…"}, …]}``.

    One row per day, newest first. Bad entries are skipped (listed in ``skipped``); a
    response with no good entry at all fails.
    """
    doc = decode_json(body)
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if isinstance(meta, dict) and meta.get("error"):
        raise BadValue("api_error", f"source reported an error: {str(meta['error'])[:160]}")
    entries = _get(doc, ("data",), "$")
    if not isinstance(entries, list) or not entries:
        raise BadValue("missing_field", "field $.data is not a non-empty list")
    out = Parsed(records=[])
    seen: set[object] = set()
    first_error: BadValue | None = None
    for i, entry in enumerate(entries):
        try:
            record = _fear_greed_entry(entry, i, now_s)
        except BadValue as exc:
            first_error = first_error or exc
            out.skipped.append(exc.detail)
            continue
        # The unique key would absorb a repeated day anyway; dropping it here keeps one
        # batch from carrying the same key twice.
        if record.timestamp not in seen:
            seen.add(record.timestamp)
            out.records.append(record)
    if not out.records:
        assert first_error is not None  # entries is non-empty and none was kept
        raise BadValue(first_error.reason, f"no usable Fear & Greed entry: {first_error.detail}")
    return out

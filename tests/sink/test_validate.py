"""Validation and CSV encoding before COPY (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.records import Candle, MarketMetric, Trade
from ingest.sink.tables import CANDLES, METRICS, TRADES, prepare
from ingest.sink.validate import Reject, Window, copy_escape, decimal_text, iso_text

from .conftest import BASE_TS, candle, metric, trade

NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("text", "minimum", "expected"), [
    ("42000.12", "positive", "42000.12"),
    ("0.35280000", "positive", "0.35280000"),
    ("9.2E-7", "positive", "0.00000092"),
    ("1e3", "nonneg", "1000"),
    ("0", "nonneg", "0"),
    ("0.000", "nonneg", "0.000"),
    ("-5.5", "any", "-5.5"),
    ("99999999999999999999.999999999999999999", "positive",
     "99999999999999999999.999999999999999999"),
    ("1.1000000000000000000000", "positive", "1.1000000000000000000000"),  # zeros are free
])
def test_decimal_accepted(text: str, minimum: str, expected: str) -> None:
    assert decimal_text(text, minimum=minimum, field="price") == expected


@pytest.mark.parametrize(("text", "minimum", "why"), [
    ("NaN", "nonneg", "not finite"),
    ("Infinity", "any", "not finite"),
    ("-1", "nonneg", "negative"),
    ("0", "positive", "must be > 0"),
    ("0.0000", "positive", "must be > 0"),
    ("100000000000000000000", "any", "exceeds NUMERIC"),  # 1e20: 21 integer digits
    ("1e20", "any", "exceeds NUMERIC"),
    ("0.0000000000000000001", "nonneg", "fractional digits"),  # 1e-19 would round to 0
    ("1e-19", "nonneg", "fractional digits"),
    ("", "any", "not a decimal"),
    (" 1", "any", "not a decimal"),
    ("1_000", "any", "not a decimal"),
    ("0x10", "any", "not a decimal"),
])
def test_decimal_rejected(text: str, minimum: str, why: str) -> None:
    with pytest.raises(Reject, match=why):
        decimal_text(text, minimum=minimum, field="price")


def test_float_is_refused_decimal_and_int_are_text() -> None:
    with pytest.raises(Reject, match="expected decimal text"):
        decimal_text(1.5, minimum="any", field="price")
    from decimal import Decimal
    assert decimal_text(Decimal("1.25"), minimum="any", field="p") == "1.25"
    assert decimal_text(7, minimum="any", field="p") == "7"


def test_timestamp_window() -> None:
    w = Window(NOW, {})
    assert w.timestamp(NOW + timedelta(hours=23)).startswith("2025-01-01T23:00:00")
    for bad in (NOW + timedelta(days=2), datetime(2008, 12, 31, tzinfo=UTC)):
        with pytest.raises(Reject, match="outside"):
            w.timestamp(bad)
    with pytest.raises(Reject, match="naive"):
        w.timestamp(datetime(2024, 1, 1))


def test_copy_text_escaping() -> None:
    assert copy_escape("BTCUSDT") == "BTCUSDT"
    assert copy_escape('a,"b"') == 'a,"b"'
    assert copy_escape("a\tb\nc\rd") == "a\\tb\\nc\\rd"
    assert copy_escape("\\.") == "\\\\."  # would otherwise end the COPY stream


def _rejected_reason(rec: object, spec: object = TRADES) -> str:
    out = prepare(spec, [rec], Window(NOW, {}))  # type: ignore[arg-type]
    assert not out.lines
    return out.rejected[0][1]


def test_prepare_rejects_with_reasons() -> None:
    good = trade(1)
    assert "symbol" in _rejected_reason(Trade("binance", "", 1, BASE_TS, "1", "1", None, True))
    assert "price" in _rejected_reason(Trade("binance", "X", 1, BASE_TS, "-1", "1", None, True))
    assert "trade_id" in _rejected_reason(Trade("binance", "X", 2**63, BASE_TS, "1", "1", None, True))
    assert "metric_type" in _rejected_reason(MarketMetric("nope", BASE_TS, "1"), METRICS)
    assert prepare(TRADES, [good], Window(NOW, {})).lines


def test_prepare_dedupes_last_wins() -> None:
    first, corrected = candle(0, close="101"), candle(0, close="105")
    out = prepare(CANDLES, [first, candle(1), corrected], Window(NOW, {}))
    assert out.in_batch_duplicates == 1
    assert out.records == [corrected, candle(1)]
    assert "\t105\t" in out.lines[0]


def test_metric_key_uses_generated_name() -> None:
    out = prepare(METRICS, [metric(0, name="a"), metric(0, name="b"), metric(0, name="a")],
                  Window(NOW, {}))
    assert len(out.records) == 2 and out.in_batch_duplicates == 1


def test_trade_copy_line() -> None:
    line = prepare(TRADES, [trade(7)], Window(NOW, {})).lines[0]
    assert line.split("\t") == ["binance", "BTCUSDT", "7", "2024-03-01T00:00:00.007000+00:00",
                                "42000.5", "0.00125000", "\\N", "t\n"]


def _candle(**changes: object) -> Candle:
    return msgspec.structs.replace(candle(0), **changes)


def test_candle_line_and_fast_path_edges() -> None:
    w = Window(NOW, {})
    line = prepare(CANDLES, [_candle(quote_volume=None, trades_count=None)], w).lines[0]
    assert line.split("\t") == ["binance", "BTCUSDT", "1m", "2024-03-01T00:00:00+00:00", "100",
                                "102", "99.5", "101.5", "12.5", "\\N", "\\N\n"]
    cases: list[tuple[dict[str, object], str]] = [
        ({"open": "0"}, "open"), ({"close": "0.000"}, "close"),
        ({"high": "1\t5"}, "high"), ({"volume": "-1"}, "volume"),
        ({"low": 1.5}, "low"), ({"quote_volume": "NaN"}, "quote_volume"),
        ({"interval": "2m"}, "interval"), ({"trades_count": -1}, "trades_count")]
    for bad, why in cases:
        out = prepare(CANDLES, [_candle(**bad)], w)
        assert not out.lines, bad
        assert out.rejected[0][1].startswith(why), (bad, out.rejected[0][1])
    for field, value in [("price", "0.0"), ("price", "1\t5"), ("quantity", "1\t5"),
                         ("price", "0.0000000000000000001")]:
        out = prepare(TRADES, [msgspec.structs.replace(trade(1), **{field: value})], w)
        assert not out.lines and out.rejected[0][1].startswith(field), value
    assert prepare(TRADES, [msgspec.structs.replace(trade(1), price="0.5", quantity="0")], w).lines


def test_trade_quote_quantity_on_the_fast_path_and_off_it() -> None:
    w = Window(NOW, {})
    quoted = msgspec.structs.replace(trade(7), quote_quantity="52.500625")
    assert prepare(TRADES, [quoted], w).lines[0].split("\t")[4:] == [
        "42000.5", "0.00125000", "52.500625", "t\n"]
    for value in ("1\t5", "-1", "NaN", "", 1.5, "1" * 21):
        out = prepare(TRADES, [msgspec.structs.replace(trade(1), quote_quantity=value)], w)
        assert not out.lines and out.rejected[0][1].startswith("quote_quantity"), value
    for field, value in [("price", "0.0"), ("price", "1\t5"), ("quantity", "1\t5")]:
        out = prepare(TRADES, [msgspec.structs.replace(quoted, **{field: value})], w)
        assert not out.lines and out.rejected[0][1].startswith(field), value


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_iso_text_is_isoformat(naive: datetime) -> None:
    utc = naive.replace(tzinfo=UTC)
    assert iso_text(utc) == utc.isoformat()  # the orjson path, with and without µs
    other = naive.replace(tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert iso_text(other) == other.isoformat()  # any other zone: isoformat itself


def test_iso_text_of_a_datetime_subclass_is_its_isoformat() -> None:
    class Stamp(datetime):
        def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
            return "subclass"

    assert iso_text(Stamp(2024, 1, 1, tzinfo=UTC)) == "subclass"

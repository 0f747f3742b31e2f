"""Shared helpers: names, time, decimal validation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.errors import ConfigError, ParseError
from ingest.exchanges.base import (
    INTERVAL_SECONDS,
    binance_stream_symbol,
    dec_price,
    dec_qty,
    dec_volume,
    interval_from_native,
    interval_to_native,
    levels_text,
    ms_text_to_dt,
    ms_to_dt,
    mul_text,
    native_to_compact,
    price_text,
    qty_text,
    to_compact,
    to_native_symbol,
    volume_text,
)
from ingest.settings import INTERVALS


@pytest.mark.parametrize(("exchange", "native"), [
    ("binance", "BTCUSDT"), ("gateio", "BTC_USDT"), ("gate", "BTC_USDT"),
    ("huobi", "btcusdt"), ("htx", "btcusdt"),
])
def test_symbols(exchange: str, native: str) -> None:
    assert to_native_symbol(exchange, "BTC/USDT") == native
    assert native_to_compact(exchange, native) == "BTCUSDT"
    assert to_compact("BTC/USDT") == "BTCUSDT"
    assert binance_stream_symbol("BTC/USDT") == "btcusdt"


@pytest.mark.parametrize("bad", ["BTCUSDT", "btc/usdt", "BTC/", "BTC-USDT", "BTC/USDT/X"])
def test_bad_unified_symbol_is_a_config_error_naming_it_and_the_exchange(bad: str) -> None:
    with pytest.raises(ConfigError, match="gateio") as info:
        to_native_symbol("gate", bad)
    assert repr(bad) in str(info.value)


def test_unknown_exchange_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="okx"):
        to_native_symbol("okx", "BTC/USDT")


@pytest.mark.parametrize("bad", ["BTC_", "_USDT", "BTCUSDT", "b\u00e9t_usdt"])
def test_bad_native_gate_pair_is_a_parse_error(bad: str) -> None:
    with pytest.raises(ParseError):
        native_to_compact("gateio", bad)


def test_check_compact_remembers_good_symbols_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.exchanges import naming

    monkeypatch.setattr(naming, "_CHECKED_MAX", 3)
    naming._CHECKED.clear()
    for i in range(10):
        assert naming.check_compact(f"SYM{i}USDT") == f"SYM{i}USDT"
        assert len(naming._CHECKED) <= 3
    assert "SYM9USDT" in naming._CHECKED
    for bad in ("btcusdt", "BTC_USDT", "B", "BTC USDT", "BTC\u00c9USDT"):
        for _ in range(2):  # refused each time: a bad symbol is never remembered
            with pytest.raises(ParseError, match="bad symbol"):
                naming.check_compact(bad)
    assert naming._CHECKED.issubset({f"SYM{i}USDT" for i in range(10)})


INTERVAL_TABLE = {
    "binance": ["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"],
    "gateio": ["1m", "5m", "15m", "30m", "1h", "4h", "1d", "7d"],
    "huobi": ["1min", "5min", "15min", "30min", "60min", "4hour", "1day", "1week"],
}


@pytest.mark.parametrize("exchange", INTERVAL_TABLE)
def test_intervals_both_ways(exchange: str) -> None:
    natives = [interval_to_native(exchange, i) for i in INTERVALS]
    assert natives == INTERVAL_TABLE[exchange]
    assert [interval_from_native(exchange, n) for n in natives] == list(INTERVALS)
    assert list(INTERVAL_SECONDS) == list(INTERVALS)


def test_unsupported_intervals() -> None:
    with pytest.raises(ConfigError, match=r"huobi.*'2h'"):
        interval_to_native("htx", "2h")
    with pytest.raises(ParseError, match=r"binance.*'1M'"):
        interval_from_native("binance", "1M")
    with pytest.raises(ParseError):
        interval_from_native("huobi", "1mon")


def test_times() -> None:
    assert ms_to_dt(1633998523963) == datetime(2021, 10, 12, 0, 28, 43, 963000, tzinfo=UTC)
    assert ms_text_to_dt("1606292218213.4578") == datetime(
        2020, 11, 25, 8, 16, 58, 213457, tzinfo=UTC
    )
    assert ms_text_to_dt("1606292218213") == ms_to_dt(1606292218213)
    for bad in (0, 1633998523, 1633998523963000, -1, 10**30):
        with pytest.raises(ParseError, match="out of range"):
            ms_to_dt(bad)
    for text in ("", "1e12", " 1606292218213", "1606292218213.x", "1_606_292_218_213"):
        with pytest.raises(ParseError):
            ms_text_to_dt(text)


@given(st.integers(946_684_800_000, 4_102_444_800_000))
def test_ms_to_dt_is_exact(ms: int) -> None:
    dt = ms_to_dt(ms)
    assert dt.microsecond % 1000 == 0
    assert (dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000 == pytest.approx(ms)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    assert delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000 == ms


@pytest.mark.parametrize(("text", "expected"), [
    ("0.35280000", "0.35280000"), ("1", "1"), ("99999999999999999999", "99999999999999999999"),
    ("0.000000000000000001", "0.000000000000000001"), ("1e-5", "0.00001"), ("1E+3", "1000"),
    ("2.50000000000000000000000", "2.50000000000000000000000"),  # zeros past scale 18 are fine
])
def test_price_text_accepts(text: str, expected: str) -> None:
    assert price_text(text) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("0", "zero"), ("0.00000000", "zero"), ("-1", "negative"), ("NaN", "not finite"),
    ("Infinity", "not finite"), ("sNaN", "not finite"), ("1e20", "20 integer"),
    ("100000000000000000000", "20 integer"), ("1e-19", "below"),
    ("0.0000000000000000001", "below"), ("1.0000000000000000001", "18 decimals"),
    ("abc", "not a decimal"), ("", "not a decimal"), ("1" * 80, "too long"),
])
def test_price_text_refuses(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        price_text(text)


def test_quantities_and_volumes() -> None:
    assert qty_text("0") == "0" and qty_text("0.00000000") == "0.00000000"
    assert qty_text("-0") == "0"
    with pytest.raises(ParseError, match="negative"):
        qty_text("-0.1")
    with pytest.raises(ParseError, match="18 decimals"):
        qty_text("1.0000000000000000001")
    assert volume_text("1.0000000000000000005") == "1.000000000000000000"  # half-even
    assert volume_text("1.0000000000000000015") == "1.000000000000000002"
    assert volume_text("1e-30") == "0"


def test_decimal_rendering_never_uses_float() -> None:
    assert dec_price(Decimal("9.2E-7")) == "0.00000092"
    assert dec_qty(Decimal("4.0E+7")) == "40000000"
    assert dec_qty(Decimal("0E-1000000")) == "0"  # no million-character rendering
    assert dec_volume(Decimal("0.1829884187")) == "0.1829884187"
    with pytest.raises(ParseError, match="20 integer"):
        dec_qty(Decimal("1E+999999"))
    with pytest.raises(ParseError, match="zero"):
        dec_price(Decimal("0.0"))


def test_mul_text_exact() -> None:
    assert mul_text("0.35280000", "58.00000000") == "20.4624"
    assert mul_text("0.2010000000", "121.5800000000") == "24.43758"
    assert mul_text("100", "0") == "0"
    assert mul_text("99999999999999999999", "0.000000000000000001") == "99.999999999999999999"
    assert mul_text("0.000000001", "0.000000001") == "0.000000000000000001"
    assert mul_text("0.000000001", "0.0000000001") == "0"  # 1e-19 rounds to the scale
    with pytest.raises(ParseError):
        mul_text("99999999999999999999", "10")


_plain_num = st.builds(
    lambda i, f: i + ("." + f if f else ""),
    st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    st.from_regex(r"[0-9]{0,18}", fullmatch=True),
)


def _mul_reference(price: str, qty: str) -> str:
    from ingest.exchanges.base import _CTX, _check_dec

    product = _CTX.multiply(Decimal(price), Decimal(qty))
    if product.is_zero():
        return "0"
    return _check_dec(product.normalize(_CTX), "quote quantity", False, True)


@given(_plain_num, _plain_num)
def test_mul_text_integer_path_matches_decimal(price: str, qty: str) -> None:
    try:
        expected: str | type[ParseError] = _mul_reference(price, qty)
    except ParseError:
        expected = ParseError
    if expected is ParseError:
        with pytest.raises(ParseError):
            mul_text(price, qty)
    else:
        assert mul_text(price, qty) == expected


@given(st.integers(946_684_800_000, 4_102_444_800_000), st.from_regex(r"[0-9]{0,6}", fullmatch=True))
def test_ms_text_to_dt_is_exact(ms: int, frac: str) -> None:
    text = f"{ms}.{frac}" if frac else str(ms)
    micros = int((frac + "000")[:3])
    expected = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000 + micros)
    assert ms_text_to_dt(text) == expected


def test_levels_text_fast_and_slow_paths() -> None:
    levels = [("0.1", "2"), ("0.2", "0")]
    out = levels_text(levels)
    assert out == (("0.1", "2"), ("0.2", "0"))
    assert levels_text([("1e-1", "2E0")]) == (("0.1", "2"),)
    with pytest.raises(ParseError, match="zero"):
        levels_text([("0.1", "1"), ("0.0", "1")])
    with pytest.raises(ParseError, match="negative"):
        levels_text([("0.1", "-1")])

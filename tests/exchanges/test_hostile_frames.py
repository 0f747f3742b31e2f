"""Malformed, huge and hostile frames: every parser raises ParseError and nothing else, and
whatever it does return holds only values the NUMERIC(38,18) columns accept."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.errors import ParseError
from ingest.exchanges.base import Control
from ingest.exchanges.binance.parse import parse as binance_parse
from ingest.exchanges.gateio.parse import parse as gate_parse
from ingest.exchanges.huobi.parse import parse as huobi_parse
from ingest.records import BookDelta, Candle, Trade

from .samples import fixture

Parser = Callable[[bytes, float], list[Any]]
PARSERS: dict[str, Parser] = {"binance": binance_parse, "gateio": gate_parse, "huobi": huobi_parse}

# A real frame per exchange and channel: the material the mutations start from.
SEEDS: dict[str, list[str]] = {
    "binance": [
        "binance_trade.json", "binance_aggtrade_combined.json", "binance_kline_combined.json",
        "binance_depth_update_combined.json",
    ],
    "gateio": [
        "gateio_trades.json", "gateio_candlesticks.json", "gateio_order_book_update_full.json",
        "gateio_obu_update.json", "gateio_order_book.json",
    ],
    "huobi": [
        "huobi_trade_detail.json", "huobi_kline.json", "huobi_depth_step0.json",
        "huobi_mbp_5.json", "huobi_mbp_rep.json",
    ],
}
CASES = [(ex, name) for ex, names in SEEDS.items() for name in names]
_DECIMAL = re.compile(r"[0-9]{1,20}(\.[0-9]+)?")


def _check_output(out: list[Any]) -> None:
    """Anything a parser returns must be storable as is."""
    assert isinstance(out, list)
    for item in out:
        if isinstance(item, Trade):
            _fits(item.price, positive=True)
            _fits(item.quantity)
            assert item.quote_quantity is not None
            _fits(item.quote_quantity)
            assert 0 <= item.trade_id < 1 << 63
        elif isinstance(item, Candle):
            for price in (item.open, item.high, item.low, item.close):
                _fits(price, positive=True)
            _fits(item.volume)
        elif isinstance(item, BookDelta):
            for price, qty in item.bids + item.asks:
                _fits(price, positive=True)
                _fits(qty)
            assert 0 <= item.first_id <= item.last_id < 1 << 63
        else:
            assert isinstance(item, Control)


def _fits(text: str, positive: bool = False) -> None:
    assert _DECIMAL.fullmatch(text), text
    value = Decimal(text)
    assert value.is_finite() and value >= 0 and (value > 0 or not positive)
    normalised = value.normalize()
    exponent = normalised.as_tuple().exponent
    assert isinstance(exponent, int) and -exponent <= 18, text


def _parse_or_reject(exchange: str, frame: bytes) -> None:
    try:
        out = PARSERS[exchange](frame, 0.0)
    except ParseError as exc:
        assert str(exc) and len(str(exc)) <= 200
        return
    _check_output(out)


@pytest.mark.parametrize(("exchange", "name"), CASES)
def test_every_truncation_of_a_real_frame_is_a_parse_error(exchange: str, name: str) -> None:
    frame = fixture(name).strip()
    PARSERS[exchange](frame, 0.0)  # the whole frame is fine
    for cut in range(len(frame)):
        with pytest.raises(ParseError):
            PARSERS[exchange](frame[:cut], 0.0)


HOSTILE_TEXT = [
    b"", b" ", b"null", b"[]", b"[1,2]", b"42", b'"x"', b"\xff\xfe\x00", b"{", b"}",
    b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":1e999}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"x":' + b"9" * 5000 + b"}",
    b'{"ping":' + b"9" * 5000 + b"}",
    b'{"stream":"' + b"a" * 100_000 + b'","data":{}}',
    b'{"channel":"spot.trades","event":"update","result":' + b"[" * 50_000 + b"}",
]


@pytest.mark.parametrize("exchange", PARSERS)
@pytest.mark.parametrize("frame", HOSTILE_TEXT, ids=lambda f: repr(f[:24]))
def test_hostile_text(exchange: str, frame: bytes) -> None:
    _parse_or_reject(exchange, frame)


HOSTILE_VALUES: list[Any] = [
    "NaN", "Infinity", "-Infinity", "-1", "-0.5", "1e999", "1e-19", "0E-1000000",
    "1" * 5000, "1." + "1" * 30, "abc", "", " 1", "1_000", "\u0661", None, True, [], {},
    -1, -(10**30), 1.5, "0", 0, "99999999999999999999999", "__BIG__",
]
BIG_INT = b"9" * 5000  # a bare 5000-digit JSON integer: past Python's int-parsing limit


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(doc))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def _dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("exchange", "name"), CASES)
def test_every_field_replaced_by_every_hostile_value(exchange: str, name: str) -> None:
    doc = json.loads(fixture(name))
    for path in _leaves(doc):
        for value in HOSTILE_VALUES:
            frame = _dump(_replace(doc, path, value)).replace(b'"__BIG__"', BIG_INT)
            _parse_or_reject(exchange, frame)


@pytest.mark.parametrize(("exchange", "name"), CASES)
def test_bare_nan_and_infinity_numbers(exchange: str, name: str) -> None:
    doc = json.loads(fixture(name))
    for path in _leaves(doc):
        for token in (b"NaN", b"Infinity", b"-1", b"1e400", b"-0"):
            frame = _dump(_replace(doc, path, "__X__")).replace(b'"__X__"', token)
            _parse_or_reject(exchange, frame)


def test_negative_quantity_is_refused_everywhere() -> None:
    with pytest.raises(ParseError, match="negative"):
        binance_parse(fixture("binance_trade.json").replace(b'"q":"100"', b'"q":"-100"'), 0.0)
    with pytest.raises(ParseError, match="negative"):
        gate_parse(fixture("gateio_obu_update.json").replace(b'"10343"', b'"-10343"'), 0.0)
    with pytest.raises(ParseError, match="negative"):
        huobi_parse(fixture("huobi_mbp_5.json").replace(b"26.755", b"-26.755"), 0.0)


def test_huobi_price_precision_beyond_numeric_scale_is_refused() -> None:
    frame = fixture("huobi_trade_detail.json").replace(b"52648.62", b"1.0000000000000000001")
    with pytest.raises(ParseError, match="18 decimals"):
        huobi_parse(frame, 0.0)


def test_huobi_volume_precision_is_rounded_like_numeric() -> None:
    frame = fixture("huobi_kline.json").replace(b'"amount":2.4448', b'"amount":2.3456789E-5')
    [candle] = huobi_parse(frame, 0.0)
    assert isinstance(candle, Candle) and candle.volume == "0.000023456789"
    frame = fixture("huobi_kline.json").replace(b"2.4448", b"1.23456789012345E-8")
    [candle] = huobi_parse(frame, 0.0)
    assert isinstance(candle, Candle) and candle.volume == "0.000000012345678901"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exchange=st.sampled_from(sorted(PARSERS)), data=st.binary(max_size=300))
def test_random_bytes(exchange: str, data: bytes) -> None:
    _parse_or_reject(exchange, data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    case=st.sampled_from(CASES), data=st.data(),
)
def test_random_mutations_of_real_frames(case: tuple[str, str], data: st.DataObject) -> None:
    exchange, name = case
    doc = json.loads(fixture(name))
    paths = _leaves(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        doc = _replace(doc, path, data.draw(_json))
        paths = _leaves(doc)
    _parse_or_reject(exchange, _dump(doc))

"""HTX (Huobi) parser, pinned to the 2021 capture and to the documented current formats."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.errors import ConfigError, ExchangeError, ParseError
from ingest.exchanges.base import Control, levels_dec
from ingest.exchanges.huobi import wire
from ingest.exchanges.huobi.parse import (
    decompress,
    levels_raw,
    parse,
    parse_depth,
    parse_history_candles,
    parse_history_kline,
    parse_history_trade,
)
from ingest.records import BookDelta, Candle, Trade

from .samples import capture, fixture, frame_at, gzipped, received

WS = "HUOBI.ws.44.0"
MAX = 1 << 20


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _frame(line_no: int) -> list[object]:
    entry = frame_at(WS, line_no)
    return list(parse(decompress(entry.data, MAX), entry.ts or 0.0))


def test_every_frame_in_the_capture_parses() -> None:
    kinds: Counter[str] = Counter()
    for entry in received(WS):
        for item in parse(decompress(entry.data, MAX), entry.ts or 0.0):
            kinds[item.kind] += 1
    assert kinds == {"book_delta": 292, "trade": 73, "subscribed": 20, "ping": 6}


def test_capture_pings_match_the_pongs_sent() -> None:
    entries = capture(WS)
    pings = [
        p.value for e in entries if e.kind == "recv"
        for p in parse(decompress(e.data, MAX), 0.0) if isinstance(p, Control) and p.kind == "ping"
    ]
    pongs = [json.loads(e.data)["pong"] for e in entries if e.kind == "sent" and b"pong" in e.data]
    assert pings == pongs == [1618678073643 + 5000 * i for i in range(6)]


def test_capture_trade_uses_trade_id_and_exact_exponent_price() -> None:
    [trade] = _frame(43)
    assert trade == Trade(
        exchange="huobi", symbol="TRIOETH", trade_id=100045088885,  # tradeId, not the 27-digit id
        timestamp=_utc(1618678027940), price="0.00000092", quantity="20995.88",
        quote_quantity="0.0193162096", is_buyer_maker=False, recv_ts=frame_at(WS, 43).ts or 0.0,
    )


def test_capture_multi_trade_frame() -> None:
    trades = _frame(77)
    assert [t.trade_id for t in trades if isinstance(t, Trade)] == [5957206, 5957205]
    first = trades[0]
    assert isinstance(first, Trade)
    assert first.quantity == "543526.9513115989" and first.price == "0.00013303"
    assert first.is_buyer_maker is False and first.symbol == "FIL3SUSDT"


def test_capture_sell_taker_is_buyer_maker() -> None:
    [trade] = _frame(45)
    assert isinstance(trade, Trade)
    assert trade.is_buyer_maker is True and trade.price == "716.0" and trade.trade_id == 1311318


def test_capture_depth_step0_image() -> None:
    [book] = _frame(25)
    assert isinstance(book, BookDelta)
    assert book.symbol == "BORUSDT" and book.full
    assert book.first_id == book.last_id == 326374035  # version
    assert book.timestamp == _utc(1618678069722)  # tick.ts
    assert book.bids[:2] == (("710.01", "2.260165"), ("710.0", "0.104328"))
    assert book.asks[-1] == ("1095.0", "6.218937")


def test_capture_exponent_quantities_render_plain() -> None:
    [book] = _frame(23)  # trioeth: prices like 9.121E-7, quantities like 4.0E7
    assert isinstance(book, BookDelta)
    assert book.bids[0] == ("0.0000009121", "92730.24")
    assert ("0.0000000013", "40000000") in book.bids


def test_capture_sub_ack() -> None:
    assert _frame(22) == [Control("subscribed", "market.trioeth.depth.step0")]


# -- documented current formats (protocols.md §3) -------------------------------------------


def test_doc_kline_never_closed() -> None:
    [candle] = parse(fixture("huobi_kline.json"), 3.0)
    assert candle == Candle(
        exchange="huobi", symbol="ETHBTC", interval="1m", timestamp=_utc(1630981680000),
        open="0.074849", high="0.074849", low="0.074848", close="0.074848", volume="2.4448",
        quote_volume="0.1829884187", trades_count=3, closed=False, recv_ts=3.0,
    )


@pytest.mark.parametrize(("period", "seed"), [("60min", "1h"), ("4hour", "4h"), ("1week", "7d")])
def test_kline_periods(period: str, seed: str) -> None:
    frame = fixture("huobi_kline.json").replace(b"kline.1min", f"kline.{period}".encode())
    [candle] = parse(frame, 0.0)
    assert isinstance(candle, Candle) and candle.interval == seed


def test_doc_trade_detail_ignores_float_id() -> None:
    [trade] = parse(fixture("huobi_trade_detail.json"), 0.0)
    assert trade == Trade(
        exchange="huobi", symbol="BTCUSDT", trade_id=102523573486, timestamp=_utc(1630994963173),
        price="52648.62", quantity="0.006754", quote_quantity="355.58877948",
        is_buyer_maker=False,
    )


def test_doc_depth_step0() -> None:
    [book] = parse(fixture("huobi_depth_step0.json"), 0.0)
    assert isinstance(book, BookDelta) and book.full and book.last_id == 136998124622
    assert book.bids == (("52690.69", "0.36281"), ("52690.68", "0.2"))
    assert book.asks == (("52690.7", "0.372591"), ("52691.26", "0.13"))


def test_doc_mbp_increment() -> None:
    [delta] = parse(fixture("huobi_mbp_5.json"), 0.0)
    assert delta == BookDelta(
        exchange="huobi", symbol="BTCUSDT", timestamp=_utc(1573199608679), bids=(),
        asks=(("645.14", "26.75597395914065"),), first_id=100020146795,
        last_id=100020146795, prev_id=100020146794,
    )


def test_doc_mbp_req_reply_is_full_image() -> None:
    [image] = parse(fixture("huobi_mbp_rep.json"), 0.0)
    assert isinstance(image, BookDelta) and image.full
    assert image.first_id == image.last_id == 104999417756 and image.prev_id is None
    assert image.bids == (("9058.27", "0"),) and image.asks == (("9084.27", "0.2"),)


def test_doc_control_frames() -> None:
    assert parse(fixture("huobi_ping.json"), 0.0) == [Control("ping", 1492420473027)]
    assert parse(fixture("huobi_sub_ack.json"), 0.0) == [
        Control("subscribed", "market.btcusdt.kline.1min")
    ]
    err = (b'{"id":"id2","status":"error","err-code":"bad-request",'
           b'"err-msg":"invalid topic market.nope.kline.1min","ts":1}')
    assert parse(err, 0.0) == [Control("error", {
        "code": "bad-request", "msg": "invalid topic market.nope.kline.1min", "id": "id2",
        "topic": None,
    })]
    assert parse(b'{"id":"u1","status":"ok","unsubbed":"market.btcusdt.trade.detail"}', 0.0) == [
        Control("unsubscribed", "market.btcusdt.trade.detail")
    ]


# -- decompression ----------------------------------------------------------------------------


def test_decompress_round_trip() -> None:
    raw = fixture("huobi_ping.json")
    assert decompress(gzipped(raw), MAX) == raw


def test_decompress_refuses_a_bomb() -> None:
    bomb = gzipped(b"[" + b" " * (50 << 20) + b"]")
    assert len(bomb) < 100_000
    with pytest.raises(ParseError, match="beyond"):
        decompress(bomb, MAX)


def test_decompress_exact_limit_is_allowed() -> None:
    raw = b" " * 1000
    assert decompress(gzipped(raw), 1000) == raw
    with pytest.raises(ParseError):
        decompress(gzipped(raw), 999)


@pytest.mark.parametrize("bad", [b"", b"not gzip", b"\x1f\x8b\x08\x00", gzipped(b"{}")[:-6]])
def test_decompress_refuses_garbage_and_truncation(bad: bytes) -> None:
    with pytest.raises(ParseError):
        decompress(bad, MAX)


def test_decompress_refuses_trailing_data() -> None:
    with pytest.raises(ParseError, match="after"):
        decompress(gzipped(b"{}") + b"junk", MAX)


def test_raw_deflate_is_not_gzip() -> None:
    with pytest.raises(ParseError):
        decompress(zlib.compress(b"{}"), MAX)


# -- REST ---------------------------------------------------------------------------------


def test_rest_history_kline_newest_first_and_closed_by_time() -> None:
    body = fixture("huobi_rest_kline.json")
    now_ms = 1629769247172  # the response's ts: the 5-minute bucket at 1629769200 is open
    newest, older = parse_history_kline(body, "btcusdt", "5m", now_ms)
    assert newest == Candle(
        exchange="huobi", symbol="BTCUSDT", interval="5m", timestamp=_utc(1629769200000),
        open="49056.37", high="49056.38", low="49022.86", close="49025.51",
        volume="3.946281917950917", quote_volume="193489.67275732", trades_count=196,
        closed=False,
    )
    assert older.closed and older.trades_count == 1504 and older.volume == "30.72223099519689"
    assert parse_history_candles is parse_history_kline
    with pytest.raises(ConfigError):
        parse_history_kline(body, "btcusdt", "1w", now_ms)


def test_rest_history_trade_uses_trade_dash_id() -> None:
    [trade] = parse_history_trade(fixture("huobi_rest_trade.json"), "BTCUSDT")
    assert trade == Trade(
        exchange="huobi", symbol="BTCUSDT", trade_id=102517381182, timestamp=_utc(1629793656939),
        price="49656.4", quantity="0.000124", quote_quantity="6.1573936", is_buyer_maker=False,
    )


def test_rest_depth() -> None:
    book = parse_depth(fixture("huobi_rest_depth.json"), "btcusdt")
    assert book.full and book.last_id == 136107114472 and book.timestamp == _utc(1629790438215)
    assert book.bids == (("49790.87", "0.779876"),) and book.asks == (("49790.88", "2.980472"),)


def test_rest_error_envelope() -> None:
    body = b'{"status":"error","err-code":"invalid-parameter","err-msg":"invalid symbol"}'
    with pytest.raises(ExchangeError, match="invalid symbol"):
        parse_depth(body, "btcusdt")


_json_number = st.one_of(
    st.from_regex(r"(0|[1-9][0-9]{0,21})(\.[0-9]{1,20})?", fullmatch=True),
    st.from_regex(r"[1-9](\.[0-9]{1,8})?[eE][-+]?[0-9]{1,2}", fullmatch=True),
)


@given(st.lists(st.tuples(_json_number, _json_number), max_size=8))
def test_levels_raw_plain_path_agrees_with_decimal_path(levels: list[tuple[str, str]]) -> None:
    raw = msgspec.Raw(("[" + ",".join(f"[{p},{q}]" for p, q in levels) + "]").encode())
    try:
        expected: object = levels_dec(wire.LEVELS.decode(raw))
    except ParseError:
        expected = ParseError
    if expected is ParseError:
        with pytest.raises(ParseError):
            levels_raw(raw)
    else:
        got = levels_raw(raw)
        assert [(Decimal(p), Decimal(q)) for p, q in got] == [
            (Decimal(p), Decimal(q)) for p, q in expected  # type: ignore[attr-defined]
        ]
        assert all("e" not in p.lower() and "e" not in q.lower() for p, q in got)


def test_levels_raw_renders_scientific_numbers_as_the_decimal_path_does() -> None:
    from ingest.exchanges.huobi import parse as htx

    side = msgspec.Raw(b"[[9.121E-7,92730.24],[6.8E-7,9.99999999999E9],[1.5E+3,1.0E-5]]")
    expected = (("0.0000009121", "92730.24"), ("0.00000068", "9999999999.99"),
                ("1500", "0.000010"))
    htx._SCI.clear()
    assert levels_raw(side) == expected  # rendered: cold
    assert htx._SCI["9.121E-7"] == "0.0000009121"
    assert levels_raw(side) == expected  # memoised: warm
    assert levels_raw(side) == levels_dec(wire.LEVELS.decode(side))


def test_levels_raw_scientific_numbers_the_column_cannot_hold_take_the_checked_path() -> None:
    with pytest.raises(ParseError, match="below 1e-18"):
        levels_raw(msgspec.Raw(b"[[9.121E-7,1],[1E-19,1]]"))
    with pytest.raises(ParseError, match="decimals"):
        levels_raw(msgspec.Raw(b"[[1.2345678901234567E-7,1]]"))
    with pytest.raises(ParseError, match="integer digits"):
        levels_raw(msgspec.Raw(b"[[1,1E+25]]"))
    with pytest.raises(ParseError, match="zero"):
        levels_raw(msgspec.Raw(b"[[0E-7,1]]"))
    assert levels_raw(msgspec.Raw(b"[[1e-7,0E-7]]")) == (("0.0000001", "0"),)  # lower case, zero


def test_levels_raw_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest.exchanges.huobi import parse as htx

    monkeypatch.setattr(htx, "_SCI_MAX", 4)
    htx._SCI.clear()
    for i in range(1, 10):
        assert levels_raw(msgspec.Raw(f"[[{i}.5E-3,1]]".encode())) == ((f"0.00{i}5", "1"),)
        assert len(htx._SCI) <= 4


def test_levels_raw_refuses_what_the_column_cannot_hold() -> None:
    with pytest.raises(ParseError, match="zero"):
        levels_raw(msgspec.Raw(b"[[0.000,1]]"))
    with pytest.raises(ParseError, match="decimals"):
        levels_raw(msgspec.Raw(b"[[0.1234567890123456789,1]]"))
    with pytest.raises(msgspec.DecodeError):
        levels_raw(msgspec.Raw(b"[[1,2],"))
    assert levels_raw(msgspec.Raw(b"[ [1.5, 2] ]")) == (("1.5", "2"),)  # spaces: slow path


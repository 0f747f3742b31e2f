"""Gate.io parser, pinned to the 2021 capture and to the documented current formats."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from ingest.errors import ConfigError, ExchangeError, ParseError
from ingest.exchanges.base import Control
from ingest.exchanges.gateio.parse import (
    parse,
    parse_candlesticks,
    parse_order_book,
    parse_trades,
)
from ingest.records import BookDelta, Candle, Trade

from .samples import fixture, frame_at, received, rest

WS = "GATEIO.ws.1.0"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_every_trade_candle_book_frame_in_the_capture_parses() -> None:
    kinds: Counter[str] = Counter()
    for entry in received(WS):
        if b'"spot.tickers"' in entry.data and b'"update"' in entry.data:
            continue  # not a channel we subscribe to
        for item in parse(entry.data, entry.ts or 0.0):
            kinds[item.kind] += 1
    assert kinds == {"book_delta": 172, "trade": 9, "candle": 14, "subscribed": 22}


def test_capture_trade_sell_taker() -> None:
    entry = frame_at(WS, 117)
    [trade] = parse(entry.data, entry.ts or 0.0)
    assert trade == Trade(
        exchange="gateio", symbol="DISUSDT", trade_id=816995772,
        timestamp=datetime(2021, 4, 22, 12, 12, 23, 708264, tzinfo=UTC),  # ms fraction kept
        price="121.5800000000", quantity="0.2010000000", quote_quantity="24.43758",
        is_buyer_maker=True, recv_ts=1619093543.755753,
    )


def test_capture_trade_buy_taker() -> None:
    [trade] = parse(frame_at(WS, 132).data, 0.0)
    assert isinstance(trade, Trade)
    assert trade.symbol == "NEOBTC" and trade.trade_id == 816995970
    assert trade.is_buyer_maker is False
    assert trade.price == "0.0018735000" and trade.quantity == "0.5000000000"


def test_capture_candle_without_a_and_w() -> None:
    # 2021 frames have no base volume `a` and no `w`: volume "0", quote volume kept, not closed.
    [candle] = parse(frame_at(WS, 148).data, 2.0)
    assert candle == Candle(
        exchange="gateio", symbol="DISUSDT", interval="1m", timestamp=_utc(1619093520000),
        open="121.58", high="121.58", low="121.58", close="121.58", volume="0",
        quote_volume="24.43758", trades_count=None, closed=False, recv_ts=2.0,
    )


def test_capture_book_updates() -> None:
    [delta] = parse(frame_at(WS, 56).data, 0.0)
    assert delta == BookDelta(
        exchange="gateio", symbol="NEOBTC", timestamp=_utc(1619093533953), bids=(),
        asks=(("0.0018734", "0"), ("0.0020486", "0.5")), first_id=31244062, last_id=31244064,
    )


def test_capture_subscribe_ack_without_error_key() -> None:
    assert parse(frame_at(WS, 24).data, 0.0) == [Control("subscribed", "spot.trades")]


def test_capture_rest_order_book() -> None:
    entry = rest("GATEIO.http.0.0")[5]
    assert "NEO_BTC" in (entry.url or "")
    book = parse_order_book(entry.data, "NEO_BTC", entry.ts or 0.0)
    assert book.symbol == "NEOBTC" and book.full and book.last_id == 31244065
    assert book.asks[:2] == (("0.0018734", "5.084"), ("0.0018735", "0.5"))
    assert book.bids[:2] == (("0.0018697", "0.5"), ("0.0018678", "0.5"))
    assert (len(book.bids), len(book.asks)) == (100, 100)


# -- documented current formats (protocols.md §2) -------------------------------------------


def test_doc_candlestick_with_a_and_w() -> None:
    [candle] = parse(fixture("gateio_candlesticks.json"), 0.0)
    assert candle == Candle(
        exchange="gateio", symbol="BTCUSDT", interval="1m", timestamp=_utc(1606292580000),
        open="19128.1", high="19128.1", low="19128.1", close="19128.1", volume="3.8283",
        quote_volume="2362.32035", trades_count=None, closed=True,
    )


def test_doc_candlestick_7d_and_unsupported_10s() -> None:
    doc = json.loads(fixture("gateio_candlesticks.json"))
    doc["result"]["n"] = "7d_BTC_USDT"
    [candle] = parse(json.dumps(doc).encode(), 0.0)
    assert isinstance(candle, Candle) and candle.interval == "7d"
    doc["result"]["n"] = "10s_BTC_USDT"
    with pytest.raises(ParseError, match="unsupported interval"):
        parse(json.dumps(doc).encode(), 0.0)


def test_doc_trade() -> None:
    [trade] = parse(fixture("gateio_trades.json"), 0.0)
    assert trade == Trade(
        exchange="gateio", symbol="GTUSDT", trade_id=309143071,
        timestamp=datetime(2020, 11, 25, 8, 16, 58, 213457, tzinfo=UTC),
        price="0.4705000000", quantity="16.4700000000", quote_quantity="7.749135",
        is_buyer_maker=True,
    )


def test_doc_order_book_update_full() -> None:
    [delta] = parse(fixture("gateio_order_book_update_full.json"), 0.0)
    assert isinstance(delta, BookDelta) and delta.full
    assert (delta.first_id, delta.last_id) == (48776301, 48776306)
    assert delta.bids == (("19137.74", "0.0001"), ("19088.37", "0"))
    assert delta.timestamp == _utc(1606294781123)  # t (ms), not the deprecated E (s)


def test_doc_order_book_snapshot() -> None:
    [book] = parse(fixture("gateio_order_book.json"), 0.0)
    assert isinstance(book, BookDelta) and book.full
    assert book.first_id == book.last_id == 48791820
    assert book.bids[0] == ("19079.55", "0.0195") and book.asks[-1] == ("19083.8", "0.097")


def test_doc_obu_full_and_increment() -> None:
    [full] = parse(fixture("gateio_obu_full.json"), 0.0)
    [inc] = parse(fixture("gateio_obu_update.json"), 0.0)
    assert isinstance(full, BookDelta) and isinstance(inc, BookDelta)
    assert full.full and full.symbol == "BTCUSDT" and full.first_id == full.last_id == 73777715168
    assert not inc.full and (inc.first_id, inc.last_id) == (73777715169, 73777715212)
    assert inc.asks == (("104027.2", "0"), ("104027.4", "0"))


def test_doc_control_frames() -> None:
    assert parse(fixture("gateio_pong.json"), 0.0) == [Control("pong", 1545404023)]
    assert parse(fixture("gateio_subscribe_ack.json"), 0.0) == [
        Control("subscribed", "spot.candlesticks")
    ]
    err = (b'{"time":1,"id":7,"channel":"spot.obu","event":"subscribe",'
           b'"error":{"code":2,"message":"Alert sub ob.BTC_USDT.400"},"result":null}')
    assert parse(err, 0.0) == [Control("error", {
        "channel": "spot.obu", "code": 2, "msg": "Alert sub ob.BTC_USDT.400", "id": 7,
    })]
    unsub = (b'{"time":1,"channel":"spot.trades","event":"unsubscribe","error":null,'
             b'"result":{"status":"success"}}')
    assert parse(unsub, 0.0) == [Control("unsubscribed", "spot.trades")]


# -- REST -----------------------------------------------------------------------------------


def test_rest_candlesticks() -> None:
    [candle] = parse_candlesticks(fixture("gateio_rest_candlesticks.json"), "BTC_USDT", "1h", 0)
    assert candle == Candle(
        exchange="gateio", symbol="BTCUSDT", interval="1h", timestamp=_utc(1710327600000),
        open="73236.9", high="73435.8", low="73236.3", close="73408.9", volume="13.53020576",
        quote_volume="992134.61604178", trades_count=None, closed=False,  # column 7 "false"
    )
    old_row = b'[["1710327600","992134.6","73408.9","73435.8","73236.3","73236.9","13.5"]]'
    [late] = parse_candlesticks(old_row, "BTCUSDT", "1h", now_ms=1710331200000)
    [early] = parse_candlesticks(old_row, "BTCUSDT", "1h", now_ms=1710331199999)
    assert late.closed and not early.closed
    with pytest.raises(ConfigError):
        parse_candlesticks(old_row, "BTCUSDT", "2h", now_ms=0)


def test_rest_trades_use_the_websocket_id() -> None:
    [trade] = parse_trades(fixture("gateio_rest_trades.json"), "BTCUSDT")
    assert trade == Trade(
        exchange="gateio", symbol="BTCUSDT", trade_id=7835390042,
        timestamp=datetime(2024, 3, 13, 11, 0, 48, 162035, tzinfo=UTC), price="73236.4",
        quantity="0.00020", quote_quantity="14.64728", is_buyer_maker=False,
    )


def test_rest_order_book_needs_with_id_and_uses_current() -> None:
    body = b'{"id":5,"current":1710327648162,"update":1710327648100,"asks":[["2","1"]],"bids":[]}'
    book = parse_order_book(body, "BTCUSDT")
    assert book.last_id == 5 and book.timestamp == _utc(1710327648162)
    with pytest.raises(ParseError, match="with_id"):
        parse_order_book(b'{"asks":[],"bids":[]}', "BTCUSDT")
    with pytest.raises(ExchangeError, match="INVALID_CURRENCY"):
        parse_order_book(b'{"label":"INVALID_CURRENCY","message":"no such pair"}', "BTCUSDT")

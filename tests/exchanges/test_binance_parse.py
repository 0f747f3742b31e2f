"""Binance parser, pinned to the 2021 capture and to the documented current formats."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest

from ingest.errors import ConfigError, ExchangeError, ParseError
from ingest.exchanges.base import Control
from ingest.exchanges.binance.parse import (
    parse,
    parse_depth_snapshot,
    parse_klines,
    parse_trades,
)
from ingest.records import BookDelta, Candle, Trade

from .samples import fixture, frame_at, received, rest

WS = "BINANCE.ws.1.0"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_every_trade_kline_depth_frame_in_the_capture_parses() -> None:
    kinds: Counter[str] = Counter()
    for entry in received(WS):
        if b"@bookTicker" in entry.data:
            continue  # not a channel we subscribe to
        for item in parse(entry.data, entry.ts or 0.0):
            kinds[item.kind] += 1
    assert kinds == {"book_delta": 177, "trade": 2, "candle": 2}


def test_capture_book_ticker_is_refused_not_crashed() -> None:
    entry = frame_at(WS, 9)
    assert b"@bookTicker" in entry.data
    with pytest.raises(ParseError, match="unsupported stream"):
        parse(entry.data, 0.0)


def test_capture_first_depth_update() -> None:
    entry = frame_at(WS, 2)
    [delta] = parse(entry.data, entry.ts or 0.0)
    assert delta == BookDelta(
        exchange="binance", symbol="NKNUSDT", timestamp=_utc(1633998512068),
        bids=(("0.35130000", "6195.00000000"), ("0.34750000", "5548.00000000"),
              ("0.34640000", "6222.00000000")),
        asks=(), first_id=499869750, last_id=499869752, recv_ts=1633998512.0633569,
    )


def test_capture_agg_trade() -> None:
    entry = frame_at(WS, 110)
    [trade] = parse(entry.data, entry.ts or 0.0)
    assert isinstance(trade, Trade)
    assert trade.exchange == "binance" and trade.symbol == "NKNUSDT"
    assert trade.trade_id == 15683430  # the aggregate id `a`, not f/l
    assert trade.price == "0.35280000" and trade.quantity == "58.00000000"
    assert trade.quote_quantity == "20.4624"  # exact 0.3528 x 58
    assert trade.is_buyer_maker is False
    assert trade.timestamp == datetime(2021, 10, 12, 0, 28, 43, 963000, tzinfo=UTC)


def test_capture_klines() -> None:
    [candle] = parse(frame_at(WS, 207).data, 1.5)
    assert candle == Candle(
        exchange="binance", symbol="LRCBTC", interval="1m", timestamp=_utc(1633998480000),
        open="0.00000638", high="0.00000638", low="0.00000638", close="0.00000638",
        volume="177.00000000", quote_volume="0.00112926", trades_count=1, closed=False,
        recv_ts=1.5,
    )


def test_capture_rest_depth_snapshot() -> None:
    entry = rest("BINANCE.http.0.0")[0]
    assert "symbol=NKNUSDT" in (entry.url or "")
    book = parse_depth_snapshot(entry.data, "NKNUSDT", entry.ts or 0.0)
    assert book.full and book.first_id == book.last_id == 499869752
    assert book.bids[0] == ("0.35210000", "672.00000000")
    assert book.asks[0] == ("0.35250000", "3959.00000000")
    assert (len(book.bids), len(book.asks)) == (609, 1000)
    assert book.bids[-1] == ("0.00212000", "117924.50000000")
    assert book.timestamp == datetime.fromtimestamp(1633998512.320639, UTC)


# -- documented current formats (protocols.md) ------------------------------------------


def test_doc_raw_trade() -> None:
    [trade] = parse(fixture("binance_trade.json"), 0.0)
    assert trade == Trade(
        exchange="binance", symbol="BNBBTC", trade_id=12345, timestamp=_utc(1672515782136),
        price="0.001", quantity="100", quote_quantity="0.1", is_buyer_maker=True,
    )


def test_doc_trade_in_combined_wrapper() -> None:
    raw = json.loads(fixture("binance_trade.json"))
    frame = json.dumps({"stream": "bnbbtc@trade", "data": raw}).encode()
    [trade] = parse(frame, 0.0)
    assert isinstance(trade, Trade) and trade.trade_id == 12345


def test_doc_kline_closed_flag() -> None:
    doc = json.loads(fixture("binance_kline_combined.json"))
    doc["data"]["k"]["x"] = True
    [candle] = parse(json.dumps(doc).encode(), 0.0)
    assert isinstance(candle, Candle)
    assert candle.closed is True and candle.trades_count == 30
    assert candle.volume == "25877.00000000" and candle.quote_volume == "9116.04600000"


def test_week_kline_maps_to_seed_7d() -> None:
    doc = json.loads(fixture("binance_kline_combined.json"))
    doc["data"]["k"]["i"] = "1w"
    [candle] = parse(json.dumps(doc).encode(), 0.0)
    assert isinstance(candle, Candle) and candle.interval == "7d"
    doc["data"]["k"]["i"] = "3m"
    with pytest.raises(ParseError, match="unsupported interval"):
        parse(json.dumps(doc).encode(), 0.0)


def test_doc_depth_update() -> None:
    [delta] = parse(fixture("binance_depth_update_combined.json"), 0.0)
    assert isinstance(delta, BookDelta) and not delta.full
    assert (delta.first_id, delta.last_id) == (499869753, 499869754)
    assert delta.bids == (("0.35170000", "4265.00000000"),)
    assert delta.asks == (("0.35290000", "10968.00000000"),)


@pytest.mark.parametrize(("first", "last", "reason"), [
    (499869755, 499869754, "U > u"),
    (-1, 499869754, "U -1 outside BIGINT"),
    (1, 1 << 63, f"u {1 << 63} outside BIGINT"),
])
def test_depth_update_ids_are_checked(first: int, last: int, reason: str) -> None:
    doc = json.loads(fixture("binance_depth_update_combined.json"))
    doc["data"]["U"], doc["data"]["u"] = first, last
    with pytest.raises(ParseError, match=reason):
        parse(json.dumps(doc).encode(), 0.0)


def test_doc_partial_depth_takes_symbol_from_stream() -> None:
    raw = json.loads(fixture("binance_partial_depth.json"))
    frame = json.dumps({"stream": "bnbbtc@depth5@100ms", "data": raw}).encode()
    [book] = parse(frame, 1700000000.25)
    assert isinstance(book, BookDelta)
    assert book.symbol == "BNBBTC" and book.full and book.last_id == 160
    assert book.bids == (("0.0024", "10"),) and book.asks == (("0.0026", "100"),)
    assert book.timestamp == datetime.fromtimestamp(1700000000.25, UTC)  # no event time


def test_partial_depth_on_raw_stream_has_no_symbol() -> None:
    with pytest.raises(ParseError, match="no symbol"):
        parse(fixture("binance_partial_depth.json"), 0.0)


def test_control_frames() -> None:
    assert parse(fixture("binance_subscribe_reply.json"), 0.0) == [Control("subscribed", 1)]
    assert parse(b'{"result":["btcusdt@trade"],"id":"x7"}', 0.0) == [
        Control("result", {"id": "x7", "result": ["btcusdt@trade"]})
    ]
    assert parse(b'{"code": 0, "msg": "Unknown property","id": 3}', 0.0) == [
        Control("error", {"code": 0, "msg": "Unknown property", "id": 3})
    ]
    assert parse(b'{"error":{"code":2,"msg":"Invalid request"},"id":4}', 0.0) == [
        Control("error", {"code": 2, "msg": "Invalid request", "id": 4})
    ]


def test_server_shutdown_raw_and_combined() -> None:
    assert parse(b'{"e":"serverShutdown","E":1746700000000}', 0.0) == [
        Control("server_shutdown", 1746700000000)
    ]
    frame = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1746700000001}}'
    assert parse(frame, 0.0) == [Control("server_shutdown", 1746700000001)]


def test_stream_and_payload_must_agree() -> None:
    frame = fixture("binance_depth_update_combined.json").replace(b"depthUpdate", b"trade")
    with pytest.raises(ParseError):
        parse(frame, 0.0)


# -- REST ---------------------------------------------------------------------------------


def test_rest_klines_closed_by_close_time() -> None:
    body = fixture("binance_rest_klines.json")
    [before] = parse_klines(body, "BNBBTC", "7d", now_ms=1499644799999)
    [after] = parse_klines(body, "BNBBTC", "7d", now_ms=1499644800000)
    assert before.closed is False and after.closed is True
    assert after == Candle(
        exchange="binance", symbol="BNBBTC", interval="7d", timestamp=_utc(1499040000000),
        open="0.01634790", high="0.80000000", low="0.01575800", close="0.01577100",
        volume="148976.11427815", quote_volume="2434.19055334", trades_count=308, closed=True,
    )
    with pytest.raises(ConfigError):
        parse_klines(body, "BNBBTC", "1w", now_ms=0)


def test_rest_trades() -> None:
    [trade] = parse_trades(fixture("binance_rest_trades.json"), "BNBBTC")
    assert trade == Trade(
        exchange="binance", symbol="BNBBTC", trade_id=28457, timestamp=_utc(1499865549590),
        price="4.00000100", quantity="12.00000000", quote_quantity="48.000012",
        is_buyer_maker=True,
    )


def test_rest_depth() -> None:
    book = parse_depth_snapshot(fixture("binance_rest_depth.json"), "BNBBTC", 5.0)
    assert book.last_id == 1027024 and book.full
    assert book.bids == (("4.00000000", "431.00000000"),)
    assert book.asks == (("4.00000200", "12.00000000"),)


def test_rest_error_body_is_exchange_error() -> None:
    with pytest.raises(ExchangeError, match="-1121"):
        parse_trades(b'{"code":-1121,"msg":"Invalid symbol."}', "BNBBTC")
    with pytest.raises(ParseError):
        parse_trades(b'{"nonsense":1}', "BNBBTC")

"""`ingest replay --dry-run` on the real 2021 cryptofeed captures, as a real process.

Each feed's files are given together (bootstrap ``.0``, REST ``.http``, frames ``.ws``); the
REST book images must land at their receive time in the frame stream."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ingest.transport.recorder import read_capture

from .util import CAPTURES, feed, ingest, json_lines, of_type

TRADE_KEYS = ["type", "exchange", "symbol", "trade_id", "timestamp", "price", "quantity",
              "quote_quantity", "is_buyer_maker"]
BOOK_KEYS = ["type", "exchange", "symbol", "timestamp", "bids", "asks", "last_update_id"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("replay-dry")
    out = {}
    for name in ("BINANCE", "GATEIO", "HUOBI"):
        result = ingest("replay", "--dry-run", *feed(name), cwd=cwd)
        assert result.returncode == 0, result.stderr
        out[name] = result
    return out


def _rest_times(name: str, param: str) -> dict[str, float]:
    """Receive time of each symbol's first REST book image in a capture's http file."""
    out: dict[str, float] = {}
    for r in read_capture(CAPTURES / name):
        if r.kind == "rest" and r.url and r.ts is not None:
            symbol = parse_qs(urlsplit(r.url).query)[param][0].replace("_", "")
            out.setdefault(symbol, r.ts)
    return out


def _ts(text: object) -> float:
    assert isinstance(text, str) and text.endswith("+00:00")
    return datetime.fromisoformat(text).timestamp()


def _check_books(books: list[dict[str, Any]], rest_times: dict[str, float]) -> None:
    for book in books:
        assert list(book) == BOOK_KEYS
        ts = _ts(book["timestamp"])
        assert ts % 10 == 0  # the default snapshot_interval_s grid
        if rest_times:  # never before the book had its REST image
            assert ts > rest_times[str(book["symbol"])]
        bids, asks = book["bids"], book["asks"]
        assert isinstance(bids, list) and isinstance(asks, list)
        assert 0 < len(bids) <= 20 and 0 < len(asks) <= 20  # book_depth default
        assert float(bids[0][0]) < float(asks[0][0])  # not crossed
        assert all(isinstance(p, str) and isinstance(q, str) for p, q in bids + asks)


def test_binance(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    lines = json_lines(runs["BINANCE"].stdout)
    trades, books = of_type(lines, "trade"), of_type(lines, "book_snapshot")
    assert (len(trades), len(books), len(of_type(lines, "candle")), len(lines)) == (2, 11, 0, 13)
    # ws line 110: {"e":"aggTrade","E":1633998523963,"s":"NKNUSDT","a":15683430,
    # "p":"0.35280000","q":"58.00000000",…,"T":1633998523963,"m":false}
    assert list(trades[0]) == TRADE_KEYS
    assert trades[0] == {
        "type": "trade", "exchange": "binance", "symbol": "NKNUSDT", "trade_id": 15683430,
        "timestamp": "2021-10-12T00:28:43.963000+00:00", "price": "0.35280000",
        "quantity": "58.00000000", "quote_quantity": "20.4624", "is_buyer_maker": False,
    }
    assert trades[1]["trade_id"] == 9213679 and trades[1]["price"] == "0.00000638"

    rest = _rest_times("BINANCE.http.0.0", "symbol")
    assert len(rest) == 4
    _check_books(books, rest)
    assert [(b["symbol"], b["timestamp"][11:19]) for b in books] == [
        ("NKNUSDT", "00:28:40"), ("BLZETH", "00:28:40"), ("LRCBTC", "00:28:40"),
        ("NKNUSDT", "00:28:50"), ("BLZETH", "00:28:50"), ("LRCBTC", "00:28:50"),
        ("RUNEEUR", "00:28:50"),
        ("NKNUSDT", "00:29:00"), ("BLZETH", "00:29:00"), ("LRCBTC", "00:29:00"),
        ("RUNEEUR", "00:29:00"),
    ]  # RUNEEUR's REST image came at 00:28:42.7, after the first grid point
    first = books[0]
    assert all(len(b["bids"]) == len(b["asks"]) == 20 for b in books)
    assert first["last_update_id"] == 499869813
    assert first["bids"][:2] == [["0.35210000", "42.00000000"], ["0.35200000", "1920.00000000"]]
    assert first["asks"][0] == ["0.35240000", "3959.00000000"]
    # Independent evidence: the exchange's own bookTicker for that update id, received
    # before the grid point, shows the same best bid and ask.
    ticker = next(
        json.loads(r.payload)["data"] for r in read_capture(CAPTURES / "BINANCE.ws.1.0")
        if r.kind == "recv" and isinstance(r.payload, str) and "nknusdt@bookTicker" in r.payload
        and json.loads(r.payload)["data"]["u"] == first["last_update_id"]
    )
    assert [[ticker["b"], ticker["B"]], [ticker["a"], ticker["A"]]] == [first["bids"][0], first["asks"][0]]

    err = runs["BINANCE"].stderr
    assert "265 frames: 181 parsed (0 control), 84 unparseable" in err
    assert "84 x binance: unsupported stream 'bookTicker'" in err
    assert "4 book images applied" in err
    assert "records: 0 candle, 2 trade, 11 book_snapshot, 0 metric" in err
    assert "candle pushes 2: 0 final, 2 still open at the end" in err  # no k.x in 30 s


def test_gateio(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    lines = json_lines(runs["GATEIO"].stdout)
    trades, books = of_type(lines, "trade"), of_type(lines, "book_snapshot")
    assert (len(trades), len(books), len(of_type(lines, "candle"))) == (9, 27, 0)
    # ws line 117: {"id":816995772,"create_time_ms":"1619093543708.2642","side":"sell",
    # "currency_pair":"DIS_USDT","amount":"0.2010000000","price":"121.5800000000"}
    assert trades[0] == {
        "type": "trade", "exchange": "gateio", "symbol": "DISUSDT", "trade_id": 816995772,
        "timestamp": "2021-04-22T12:12:23.708264+00:00", "price": "121.5800000000",
        "quantity": "0.2010000000", "quote_quantity": "24.43758", "is_buyer_maker": True,
    }
    rest = _rest_times("GATEIO.http.0.0", "currency_pair")
    assert len(rest) == 10
    _check_books(books, rest)
    assert {b["symbol"] for b in books} == set(rest)
    err = runs["GATEIO"].stderr
    assert "22 x gateio: unsupported channel 'spot.tickers'" in err
    assert "10 book images applied" in err
    # 2021 candle pushes have neither "w" nor a later window within the capture: none final.
    assert "candle pushes 14: 0 final, 10 still open at the end" in err


def test_huobi(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    lines = json_lines(runs["HUOBI"].stdout)
    trades, books = of_type(lines, "trade"), of_type(lines, "book_snapshot")
    assert (len(trades), len(books), len(of_type(lines, "candle"))) == (73, 30, 0)
    # ws line 43 (gzip): "price":9.2E-7 as a JSON number, kept as its exact decimal
    trio = next(t for t in trades if t["symbol"] == "TRIOETH")
    assert trio == {
        "type": "trade", "exchange": "huobi", "symbol": "TRIOETH", "trade_id": 100045088885,
        "timestamp": "2021-04-17T16:47:07.940000+00:00", "price": "0.00000092",
        "quantity": "20995.88", "quote_quantity": "0.0193162096", "is_buyer_maker": False,
    }
    _check_books(books, {})  # depth.step0 pushes are full images: no REST needed
    assert len({b["symbol"] for b in books}) == 10
    assert {b["timestamp"] for b in books} == {
        "2021-04-17T16:48:00+00:00", "2021-04-17T16:48:10+00:00", "2021-04-17T16:48:20+00:00"}
    assert "362 frames: 362 parsed (26 control), 0 unparseable" in runs["HUOBI"].stderr


def test_all_feeds_at_once_equal_each_alone(
    runs: dict[str, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """The whole directory (three feeds from three dates) replays to the same records."""
    result = ingest("replay", "--dry-run", str(CAPTURES), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    alone = sorted(line for r in runs.values() for line in r.stdout.splitlines())
    assert sorted(result.stdout.splitlines()) == alone


def test_timestamps_are_utc(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    for r in runs.values():
        for line in json_lines(r.stdout):
            ts = datetime.fromisoformat(str(line["timestamp"]))
            assert ts.tzinfo is not None and ts.utcoffset() == UTC.utcoffset(ts)

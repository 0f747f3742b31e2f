"""Round trip through the project's own recording format: frames written with
``transport.recorder.Recorder`` (rotated segments, one file per connection, REST in its own
file) are replayed into the records the live service would store: final candles only
(Binance ``x``, Gate ``w`` or a later window, HTX a later id), trades, and book snapshots
on the capture-time grid after the REST image."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from ingest.records import BookSnapshot
from ingest.replay_feed import Replayer, check_inputs, exchange_of
from ingest.settings import ExchangeSettings, Settings
from ingest.transport.recorder import Recorder

from .util import ingest, json_lines, of_type

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
BINANCE_WS = "ws://127.0.0.1:8765/binance/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade"
BINANCE_REST = "http://127.0.0.1:8765/binance/api/v3/depth?symbol=BTCUSDT&limit=1000"
GATE_WS = "wss://api.gateio.ws/ws/v4/"
HTX_WS = "wss://api.htx.com/ws"


def _depth(first: int, last: int, bids: list[list[str]], asks: list[list[str]]) -> str:
    data = {"e": "depthUpdate", "E": int(T0 * 1000), "s": "BTCUSDT", "U": first, "u": last,
            "b": bids, "a": asks}
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": data})


def _kline(close: str, final: bool) -> str:
    k = {"t": 1_699_999_980_000, "T": 1_700_000_039_999, "s": "BTCUSDT", "i": "1m", "f": 1,
         "L": 2, "o": "100.0", "c": close, "h": "101.5", "l": "99.5", "v": "3.5", "n": 7,
         "x": final, "q": "350.25", "V": "1", "Q": "100", "B": "0"}
    return json.dumps({"stream": "btcusdt@kline_1m",
                       "data": {"e": "kline", "E": 1, "s": "BTCUSDT", "k": k}})


def _gate_candle(open_s: int, close: str, closed: bool | None) -> str:
    result = {"t": str(open_s), "v": "200.5", "c": close, "h": "21", "l": "19", "o": "20",
              "n": "1m_ETH_USDT", "a": "10.25"}
    if closed is not None:
        result["w"] = closed  # type: ignore[assignment]
    return json.dumps({"time": open_s, "channel": "spot.candlesticks", "event": "update",
                       "result": result})


def _htx(obj: object) -> bytes:
    return gzip.compress(json.dumps(obj).encode(), mtime=0)


def _htx_kline(open_s: int, close: float) -> bytes:
    return _htx({"ch": "market.btcusdt.kline.1min", "ts": open_s * 1000 + 500, "tick": {
        "id": open_s, "open": 30000.5, "close": close, "low": 29999.5, "high": 30002,
        "amount": 1.5, "vol": 45001.25, "count": 12}})


def record(directory: Path) -> None:
    rec = Recorder(directory, max_file_bytes=600)  # small: the Binance stream rotates
    rec.connected("binance-1", BINANCE_WS, T0)
    rec.received("binance-1", T0 + 1, _depth(101, 102, [["100.0", "5"]], []))  # before REST
    rec.rest("http", BINANCE_REST, T0 + 2, json.dumps({
        "lastUpdateId": 101, "bids": [["100.0", "1"], ["99.0", "2"], ["98.0", "4"]],
        "asks": [["101.0", "1"], ["102.0", "3"], ["103.0", "9"]]}))
    rec.received("binance-1", T0 + 5, _kline("100.5", final=False))
    rec.received("binance-1", T0 + 8, json.dumps({"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 777, "p": "100.10", "q": "0.50",
        "f": 1, "l": 1, "T": int(T0 * 1000) + 8000, "m": True}}))
    rec.received("binance-1", T0 + 9, _kline("101.0", final=True))
    rec.received("binance-1", T0 + 11, _depth(103, 103, [], [["101.0", "0"]]))
    rec.received("binance-1", T0 + 12, '{"stream":"btcusdt@bookTicker","data":{"u":1}}')
    rec.received("binance-1", T0 + 13, "not json at all")
    rec.received("binance-1", T0 + 21, _depth(104, 104, [["99.5", "7"]], []))

    rec.connected("gate-1", GATE_WS, T0)
    rec.received("gate-1", T0 + 3, _gate_candle(1_699_999_980, "20.5", None))
    rec.received("gate-1", T0 + 4, _gate_candle(1_699_999_980, "20.7", True))  # w: final
    rec.received("gate-1", T0 + 6, _gate_candle(1_700_000_040, "20.9", None))
    rec.received("gate-1", T0 + 7, _gate_candle(1_700_000_100, "21.0", None))  # ends 040

    rec.connected("htx-1", HTX_WS, T0)
    rec.received("htx-1", T0 + 1, _htx({"ping": 123}))
    rec.received("htx-1", T0 + 2, _htx_kline(1_699_999_980, 30001.0))
    rec.received("htx-1", T0 + 3, _htx_kline(1_699_999_980, 30001.5))
    rec.received("htx-1", T0 + 4, _htx_kline(1_700_000_040, 30002))  # ends 980
    rec.received("htx-1", T0 + 5, b"\x1f\x8b not really gzip")
    rec.close()


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    directory = tmp_path / "rec"
    record(directory)
    names = sorted(p.name for p in directory.iterdir())
    assert sum(n.startswith("binance-1.") for n in names) > 1, names  # rotated segments
    assert any(n.startswith("http.") for n in names)
    return directory


def test_round_trip_dry_run(recording: Path, tmp_path: Path) -> None:
    # Files in reverse order: the merge, not the argument order, places each line.
    files = sorted((str(p) for p in recording.iterdir()), reverse=True)
    result = ingest("replay", "--dry-run", *files, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)

    assert of_type(lines, "trade") == [{
        "type": "trade", "exchange": "binance", "symbol": "BTCUSDT", "trade_id": 777,
        "timestamp": "2023-11-14T22:13:28+00:00", "price": "100.10", "quantity": "0.50",
        "quote_quantity": "50.05", "is_buyer_maker": True}]

    candles = of_type(lines, "candle")
    assert [(c["exchange"], c["timestamp"], c["close"]) for c in candles] == [
        ("huobi", "2023-11-14T22:13:00+00:00", "30001.5"),  # at T0+4: a later id came
        ("gateio", "2023-11-14T22:13:00+00:00", "20.7"),  # at T0+4: w true
        ("gateio", "2023-11-14T22:14:00+00:00", "20.9"),  # at T0+7: a later window came
        ("binance", "2023-11-14T22:13:00+00:00", "101.0"),  # at T0+9: x true
    ]
    assert list(candles[-1]) == ["type", "exchange", "symbol", "interval", "timestamp", "open",
                                 "high", "low", "close", "volume", "quote_volume", "trades_count"]
    assert candles[-1] == {
        "type": "candle", "exchange": "binance", "symbol": "BTCUSDT", "interval": "1m",
        "timestamp": "2023-11-14T22:13:00+00:00", "open": "100.0", "high": "101.5",
        "low": "99.5", "close": "101.0", "volume": "3.5", "quote_volume": "350.25",
        "trades_count": 7}
    assert candles[0]["volume"] == "1.5" and candles[0]["trades_count"] == 12

    # Binance: the delta received before the REST image is replayed onto it (100.0 → 5);
    # snapshots at the 10 s grid points, in the state before the first frame past each.
    assert of_type(lines, "book_snapshot") == [
        {"type": "book_snapshot", "exchange": "binance", "symbol": "BTCUSDT",
         "timestamp": "2023-11-14T22:13:30+00:00",
         "bids": [["100.0", "5"], ["99.0", "2"], ["98.0", "4"]],
         "asks": [["101.0", "1"], ["102.0", "3"], ["103.0", "9"]], "last_update_id": 102},
        {"type": "book_snapshot", "exchange": "binance", "symbol": "BTCUSDT",
         "timestamp": "2023-11-14T22:13:40+00:00",
         "bids": [["100.0", "5"], ["99.0", "2"], ["98.0", "4"]],
         "asks": [["102.0", "3"], ["103.0", "9"]], "last_update_id": 103},
    ]
    assert "3 unparseable" in result.stderr  # bookTicker, text that is not JSON, bad gzip
    assert "REST: 1 book images applied" in result.stderr
    assert "2 still open at the end" in result.stderr  # Gate 22:15, HTX 22:14


def test_book_depth_and_interval_come_from_settings(recording: Path) -> None:
    settings = Settings(exchanges={"binance": ExchangeSettings(book_depth=2,
                                                               snapshot_interval_s=4.0)})
    replayer = Replayer(settings)
    books = [r for r in replayer.records(check_inputs([str(recording)]))
             if isinstance(r, BookSnapshot)]
    # grid points 8, 12 (then 16 and 20 fall in the 10 s silence before T0+21: skipped)
    assert [(int(b.timestamp.timestamp() - T0), len(b.bids), len(b.asks)) for b in books] == [
        (4, 2, 2), (8, 2, 2), (12, 2, 2)]
    assert replayer.stats.grid_points_skipped == 2


def test_unknown_exchange_frames_and_damaged_lines_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    path.write_text(
        f"{BINANCE_WS} <-> {T0}\n"
        "garbage that is no capture line\n"
        f"{T0 + 1}: " + _depth(1, 1, [], []) + "\n"
        f"wss://example.com/ws <-> {T0 + 2}\n"
        f"{T0 + 3}: " + "{}\n"
        f"{T0 + 4}: " + '{"torn'  # no newline: the writer died mid-line
    )
    replayer = Replayer(Settings())
    assert list(replayer.records([path])) == []
    s = replayer.stats
    assert (s.frames, s.frames_parsed, s.frames_unparseable) == (2, 1, 1)
    assert s.unparseable["no known exchange for connection wss://example.com/ws"] == 1
    assert (s.capture.bad_lines, s.capture.torn_lines) == (1, 1)


@pytest.mark.parametrize(("url", "exchange"), [
    ("wss://stream.binance.com:9443/stream?streams=x", "binance"),
    ("https://api.binance.com/api/v3/depth?symbol=X", "binance"),
    ("wss://api.gateio.ws/ws/v4/", "gateio"),
    ("wss://ws.gate.io/v3/", "gateio"),
    ("wss://api.huobi.pro/ws", "huobi"),
    ("wss://api-aws.huobi.pro/feed", "huobi"),
    ("wss://api.htx.com/ws", "huobi"),
    ("ws://127.0.0.1:8765/binance/ws", "binance"),
    ("ws://127.0.0.1:8765/gateio/ws/v4/", "gateio"),
    ("ws://localhost:8765/huobi/feed", "huobi"),
    ("http://127.0.0.1:8765/gateio/api/v4/spot/order_book?currency_pair=A_B", "gateio"),
    ("wss://example.com/ws", None),
    ("ws://127.0.0.1:8765/coingecko/api/v3", None),
])
def test_exchange_of(url: str, exchange: str | None) -> None:
    assert exchange_of(url) == exchange


def _agg_trade(trade_id: int, ts: float) -> str:
    return json.dumps({"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": trade_id, "p": "100.10", "q": "0.50",
        "f": 1, "l": 1, "T": int(ts * 1000), "m": True}})


def test_a_recording_of_many_connections_replays_with_few_open_files(tmp_path: Path) -> None:
    """One file per connection: a day of reconnects is thousands of files. The merge opens
    a connection's files when it reaches them, so 64 file descriptors replay 300."""
    import resource
    import subprocess
    import sys

    from .util import REPO

    directory = tmp_path / "rec"
    rec = Recorder(directory)
    for i in range(300):  # one after the other, as reconnects are
        stream = f"binance.stream0.{i}"
        rec.connected(stream, BINANCE_WS, T0 + 10 * i)
        rec.received(stream, T0 + 10 * i + 1, _agg_trade(1000 + i, T0 + 10 * i + 1))
        rec.end(stream)
    rec.close()
    assert len(list(directory.iterdir())) == 300

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    result = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "replay", "--dry-run", str(directory)],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=few_files)
    assert result.returncode == 0, result.stderr[-2000:]
    trades = of_type(json_lines(result.stdout), "trade")
    assert [t["trade_id"] for t in trades] == list(range(1000, 1300))

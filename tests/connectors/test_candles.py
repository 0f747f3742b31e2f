"""CandleFinalizer: when a candle push is final, per exchange (protocols.md §1.2, §2.2, §3.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from ingest.exchanges.binance import parse as binance
from ingest.exchanges.candles import CandleFinalizer
from ingest.exchanges.gateio import parse as gateio
from ingest.records import Candle

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def candle(minute: int, close: str = "101", *, closed: bool = False, volume: str = "5",
           quote: str | None = "505", exchange: str = "huobi") -> Candle:
    return Candle(exchange, "BTCUSDT", "1m", T0 + timedelta(minutes=minute), "100", "102", "99",
                  close, volume, quote, 7, closed)


def test_binance_emits_only_on_x_and_never_infers() -> None:
    f = CandleFinalizer([("BTCUSDT", "1m")], infer_from_next_window=False)
    assert f.observe(candle(0, "100.5")) == []
    assert f.observe(candle(0, "101")) == []
    # The next window starts without the closing push of the first: nothing is guessed.
    assert f.observe(candle(1, "103")) == []
    final = f.observe(candle(1, "104", closed=True))
    assert [(c.timestamp, c.close, c.closed) for c in final] == [(T0 + timedelta(minutes=1),
                                                                   "104", True)]
    assert f.stats.finalized == 1 and f.stats.inferred == 0 and f.held == 0


def test_binance_kline_frame_quote_volume_and_count_kept() -> None:
    frame = (b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1633998523963,'
             b'"s":"BTCUSDT","k":{"t":1633998480000,"T":1633998539999,"s":"BTCUSDT","i":"1m",'
             b'"f":1,"L":30,"o":"0.35270000","c":"0.35280000","h":"0.35280000",'
             b'"l":"0.35220000","v":"25877.00000000","n":30,"x":true,"q":"9116.04600000",'
             b'"V":"58.00000000","Q":"20.46240000","B":"0"}}}')
    (k,) = binance.parse(frame, 1.0)
    f = CandleFinalizer([("BTCUSDT", "1m")], infer_from_next_window=False)
    (out,) = f.observe(k)  # type: ignore[arg-type]
    assert (out.quote_volume, out.trades_count, out.volume) == ("9116.04600000", 30,
                                                                "25877.00000000")


def test_gate_w_true_final_and_later_window_infers_when_w_missing() -> None:
    f = CandleFinalizer([("BTCUSDT", "1m")], infer_from_next_window=True)
    assert f.observe(candle(0, "100", exchange="gateio")) == []
    out = f.observe(candle(0, "101", closed=True, exchange="gateio"))  # w: true
    assert [c.close for c in out] == ["101"]
    assert f.observe(candle(0, "101", closed=True, exchange="gateio")) == []  # duplicate
    assert f.observe(candle(1, "102", exchange="gateio")) == []
    assert f.observe(candle(1, "103", exchange="gateio")) == []
    out = f.observe(candle(2, "104", exchange="gateio"))  # w never came for minute 1
    assert [(c.timestamp, c.close, c.closed) for c in out] == [
        (T0 + timedelta(minutes=1), "103", True)]
    assert f.stats.finalized == 1 and f.stats.inferred == 1


def test_gate_frame_without_base_volume_is_never_inferred_final() -> None:
    # 2021 Gate frames have no "a": the parser gives volume "0" with a quote volume.
    frame = (b'{"time":1606292600,"channel":"spot.candlesticks","event":"update","result":'
             b'{"t":"1606292580","v":"2362.32035","c":"19128.1","h":"19128.1","l":"19128.1",'
             b'"o":"19128.1","n":"1m_BTC_USDT"}}')
    (old,) = gateio.parse(frame, 1.0)
    assert isinstance(old, Candle) and old.volume == "0"
    f = CandleFinalizer([("BTCUSDT", "1m")], infer_from_next_window=True)
    f.observe(old)
    later = msgspec.structs.replace(old, timestamp=old.timestamp + timedelta(minutes=1))
    assert f.observe(later) == []
    assert f.stats.unusable == 1


def test_huobi_later_id_finalises_previous_and_reordered_push_is_stale() -> None:
    f = CandleFinalizer([("BTCUSDT", "1m")], infer_from_next_window=True)
    f.observe(candle(0, "100"))
    f.observe(candle(0, "101"))
    out = f.observe(candle(1, "102"))
    assert [(c.close, c.closed) for c in out] == [("101", True)]
    assert f.observe(candle(0, "99")) == []  # late push of an emitted window
    assert f.stats.stale == 1
    assert f.held == 1


def test_unconfigured_key_is_not_held_and_forget_open_after_reconnect() -> None:
    f = CandleFinalizer([("BTCUSDT", "1m")], infer_from_next_window=True)
    other = msgspec.structs.replace(candle(0), symbol="ETHUSDT")
    assert f.observe(other) == [] and f.held == 0 and f.stats.unexpected == 1
    f.observe(candle(0, "100"))
    assert f.forget_open(["BTCUSDT"]) == 1
    # After a disconnect the held push may be incomplete: a later window emits nothing.
    assert f.observe(candle(5, "110")) == []

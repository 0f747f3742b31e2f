"""Golden values of the model's trades and of the live trade frames.

The digests were taken from the straightforward per-trade implementation (one ``walk.draw``
chain per value, one ``json`` encode per frame) before the batched fast paths replaced it:
any change to what the simulator computes or sends moves them. HTX frames are compared after
gunzip, since the compressed bytes depend on the compression level.
"""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import pytest

from ingest.sim.feed import Feed, Topic
from ingest.sim.intervals import MINUTE_MS
from ingest.sim.market import MarketModel
from ingest.sim.server import SimOptions, Simulator
from ingest.sim.spec import make_spec

from .helpers import ManualClock

M0 = 1_704_067_200_000 // MINUTE_MS  # 2024-01-01


def digest(values: Any) -> str:
    return hashlib.sha256(repr(values).encode()).hexdigest()[:16]


def model(exchange: str, symbol: str, seed: int, per_minute: int) -> MarketModel:
    return MarketModel(make_spec(exchange, symbol, seed, per_minute), seed)


def test_first_trades_of_a_minute() -> None:
    m = model("binance", "BTC/USDT", 1, 20)
    assert [tuple(t) for t in m.trades(M0)[:4]] == GOLDEN_FIRST


MODEL_CASES = [
    ("binance", "BTC/USDT", 1, 20),
    ("gateio", "ETH/BTC", 3, 4),
    ("huobi", "DOGE/USDT", 7, 500),
    ("binance", "SOL/USDT", 2, 100_000),
]


def model_values(m: MarketModel) -> list[Any]:
    """Whole minutes, slices, counts and time windows: every path that reaches the trades."""
    out: list[Any] = []
    n = m.per_minute
    for minute in (M0 - 1, M0, M0 + 777):
        trades = m.trades(minute, 0, min(m.count(minute), 5_000))
        out.append([tuple(t) for t in trades])
        out.append([tuple(t) for t in m.trades(minute, n // 3, n // 3 + 50)])
        out.append([m.count_before(minute, minute * MINUTE_MS + cut)
                    for cut in (0, 1, 599, 17_345, 30_000, 59_999, 60_000)])
    start = (M0 + 12) * MINUTE_MS + 4_321
    window = m.trades_between(start, start + min(90_000, 4_000 * 60_000 // n), limit=3_000)
    out.append([tuple(t) for t in window])
    out.append([tuple(t) for t in m.trades_before(start, 40)])
    out.append([tuple(t) for t in m.trades_from_id(m.first_id(M0 + 3) - 7, 60, start)])
    out.append(m.summary((M0 + 12) * MINUTE_MS, start))
    out.append(m.last_price(start))
    return out


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[3]}")
def test_model_golden(case: tuple[str, str, int, int]) -> None:
    assert digest(model_values(model(*case))) == GOLDEN_MODEL[case]


class FakeConn:
    """Collects what a feed hands to one client."""

    def __init__(self, combined: bool = False) -> None:
        self.state: dict[str, Any] = {"combined": combined}
        self.topics: set[str] = set()
        self.closed = False
        self.frames: list[str | bytes] = []

    def send(self, frame: str | bytes, *, data: bool = True) -> bool:
        self.frames.append(frame)
        return True

    def send_many(self, frames: list[str | bytes]) -> int:
        self.frames.extend(frames)
        return len(frames)


def topics(feed: Feed, symbol: str) -> list[tuple[Topic, FakeConn]]:
    sym = symbol.replace("/", "")
    if feed.exchange == "binance":
        parse = feed.parse_stream  # type: ignore[attr-defined]
        raw, agg = parse(f"{sym.lower()}@trade"), parse(f"{sym.lower()}@aggTrade")
        return [(raw, FakeConn()), (raw, FakeConn(combined=True)), (agg, FakeConn(True))]
    if feed.exchange == "gateio":
        return [(t, FakeConn()) for t in feed.topics_for(  # type: ignore[attr-defined]
            "spot.trades", [symbol.replace("/", "_")])]
    return [(feed.parse_topic(f"market.{sym.lower()}.trade.detail"), FakeConn())]  # type: ignore[attr-defined]


def live_frames(exchange: str) -> tuple[list[Any], dict[str, Any]]:
    """Publish 3 s of trades at 6,000 trades/min per market, in uneven ticks."""
    clock = ManualClock(M0 * 60.0 + 7.5)
    sim = Simulator(SimOptions(seed=5, symbols=("BTC/USDT", "XRP/USDT"), exchanges=(exchange,),
                               trades_per_minute=6_000, clock=clock))
    feed = sim.feeds[exchange]
    conns: list[FakeConn] = []
    for symbol in ("BTC/USDT", "XRP/USDT"):
        for topic, conn in topics(feed, symbol):
            feed.subscribe(conn, topic)  # type: ignore[arg-type]
            conns.append(conn)
    for step in (0.0, 0.02, 0.021, 0.5, 0.003, 1.0, 0.25, 0.2, 1.006):
        clock.advance(step)
        feed.publish(int(clock() * 1000), step)
    frames = []
    for conn in conns:
        if exchange == "huobi":
            frames.append([gzip.decompress(f) for f in conn.frames])  # type: ignore[arg-type]
        else:
            frames.append(conn.frames)
    return frames, feed.stats()


@pytest.mark.parametrize("exchange", ["binance", "gateio", "huobi"])
def test_live_trade_frames_golden(exchange: str) -> None:
    frames, stats = live_frames(exchange)
    assert all(len(f) > 200 for f in frames)
    assert digest(frames) == GOLDEN_FRAMES[exchange]
    assert digest(stats) == GOLDEN_STATS[exchange]


GOLDEN_FIRST: list[tuple[int, int, int, int, bool]] = [
    (1252597926, 1704067201040, 5267351, 1902, True),
    (1252597927, 1704067204527, 5273698, 2335, False),
    (1252597928, 1704067207551, 5274947, 1930, True),
    (1252597929, 1704067210884, 5273761, 1872, False),
]
GOLDEN_MODEL: dict[tuple[str, str, int, int], str] = {
    ("binance", "BTC/USDT", 1, 20): "12da49d0d1760b49",
    ("gateio", "ETH/BTC", 3, 4): "1d9f67b1b52f7db4",
    ("huobi", "DOGE/USDT", 7, 500): "f73b97961a973328",
    ("binance", "SOL/USDT", 2, 100_000): "83ccee510b4d85d3",
}
GOLDEN_FRAMES = {"binance": "64269e45a494bda6", "gateio": "057ac7854997968b",
                 "huobi": "df214a9666469875"}
GOLDEN_STATS = {"binance": "1b6efdd09dab70a2", "gateio": "1fdbc3ad73c68c1c",
                "huobi": "17caddd24357fb65"}

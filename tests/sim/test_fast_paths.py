"""The batched fast paths agree with the plain ones they replace: column batches with the
model's trades, ``walk.draws`` with ``walk.draw``, each exchange's ``trade_frames`` with its
readable ``trade_frame``, pre-framed websocket writes with RFC 6455 framing, and the HTX gzip
members with every inflater a client uses."""

from __future__ import annotations

import gzip
import zlib

import pytest

from ingest.errors import ConfigError
from ingest.exchanges.huobi.parse import decompress
from ingest.sim import walk
from ingest.sim.conn import encode_frames, frame_header
from ingest.sim.intervals import MINUTE_MS
from ingest.sim.server import SimOptions, Simulator

from .helpers import ManualClock
from .test_golden import M0, model, topics


@pytest.mark.parametrize("key", [0, 1, walk.MASK64, walk.stable_key(3, "binance", "BTCUSDT")])
def test_draws_are_draw(key: int) -> None:
    for tag, start, n in ((walk.TAG_QTY, 0, 1), (walk.TAG_TRADE_TIME, 5, 7),
                          (13, (1 << 48) - 40, 40), (walk.TAG_QTY, 10**9, 300)):
        assert walk.draws(key, tag, start, start + n) == [
            walk.draw(key, tag, i) for i in range(start, start + n)]
    assert walk.draws(key, 1, 5, 5) == []


@pytest.mark.parametrize("per_minute", [4, 20, 7_000])
def test_batches_are_the_trades(per_minute: int) -> None:
    m = model("gateio", "ETH/USDT", 4, per_minute)
    n = m.count(M0)
    for j0, j1 in ((0, n), (1, 2), (n // 2, n), (n - 1, n + 5), (3, 3)):
        assert m.batch(M0, j0, j1).trades() == m.trades(M0, j0, j1)
    start = M0 * MINUTE_MS + 59_000  # across a minute boundary
    for end in (start, start + 1, start + 1_500, start + 61_000):
        batch = m.batch_between(start, end)
        assert batch.trades() == m.trades_between(start, end)
        assert list(batch.ids) == [t.id for t in batch.trades()]


@pytest.mark.parametrize("exchange", ["binance", "gateio", "huobi"])
def test_trade_frames_are_trade_frame(exchange: str) -> None:
    clock = ManualClock(M0 * 60.0 + 3.25)
    sim = Simulator(SimOptions(seed=9, symbols=("BTC/USDT", "DOGE/USDT", "ETH/BTC"),
                               exchanges=(exchange,), trades_per_minute=3_000, clock=clock))
    feed = sim.feeds[exchange]
    for symbol in ("BTC/USDT", "DOGE/USDT", "ETH/BTC"):
        lm = feed.markets[symbol.replace("/", "")]
        now_ms = int(clock.t * 1000)
        batch = lm.model.batch_between(now_ms - 2_000, now_ms + 1_500)
        assert len(batch) > 50
        for topic, _ in topics(feed, symbol):
            fast = feed.trade_frames(topic, lm, batch, now_ms)
            plain = [feed.trade_frame(topic, lm, t, now_ms) for t in batch.trades()]
            if exchange == "huobi":
                fast = [gzip.decompress(f) for f in fast]  # type: ignore[arg-type]
                plain = [gzip.decompress(f) for f in plain]  # type: ignore[arg-type]
            assert fast == plain


def test_gzip_members_inflate_alone_at_every_level() -> None:
    clock = ManualClock(M0 * 60.0)
    for level in (0, 1, 6, 9):
        sim = Simulator(SimOptions(exchanges=("huobi",), clock=clock, huobi_gzip_level=level))
        feed = sim.feeds["huobi"]
        bodies = [b"", b'{"ping":1}', b'{"x":"' + b"ab" * 20_000 + b'"}', bytes(range(256)) * 9]
        members = [feed._gzip(body) for body in bodies]
        for body, member in zip(bodies, members, strict=True):
            assert gzip.decompress(member) == body
            assert zlib.decompress(member, 16 + zlib.MAX_WBITS) == body
            assert decompress(member, 1 << 20) == body  # the service's own, strict about the end
        if level:
            assert len(members[2]) < 1_000  # really compressed
    with pytest.raises(ConfigError):
        SimOptions(huobi_gzip_level=10)


def test_encoded_frames_are_rfc6455_frames() -> None:
    def plain(frames: list[str | bytes]) -> bytes:
        out = b""
        for frame in frames:
            payload = frame.encode() if isinstance(frame, str) else frame
            out += frame_header(0x81 if isinstance(frame, str) else 0x82, len(payload)) + payload
        return out

    text = ["", "a" * 125, "b" * 126, "c" * 65_535, "d" * 65_536, '{"e":"trade"}']
    assert encode_frames(text) == plain(text)  # all ASCII text: the one-encode path
    mixed = [*text, "prix: 1 €", b"\x1f\x8b", b"z" * 70_000]
    assert encode_frames(mixed) == plain(mixed)
    assert frame_header(0x81, 5) == b"\x81\x05"
    assert frame_header(0x82, 300) == b"\x82\x7e\x01\x2c"
    assert frame_header(0x81, 1 << 16) == b"\x81\x7f" + (1 << 16).to_bytes(8, "big")

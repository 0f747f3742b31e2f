"""The live side shared by the three exchanges: topics, publishing, and /sim/stats.

Each tick the engine calls :meth:`Feed.publish` with the injected clock's time. A market's
trade cursor advances to that time whether anyone listens or not, and every trade whose
timestamp has passed is handed to the trade topics, so live trades are exactly the model's
history. Candle topics send an update every ``kline_interval`` and a closing update when
their window ends (the closed candle is the model's summary of that window, i.e. what REST
returns). Book topics send diffs of their view of the live book.

Exchange modules subclass :class:`Feed` and only format frames and parse subscriptions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest.sim import book as books
from ingest.sim.conn import ClientConn, Frame
from ingest.sim.faults import FaultSpec
from ingest.sim.intervals import Interval
from ingest.sim.market import MarketModel, Summary, Trade, TradeBatch
from ingest.sim.spec import TextCache
from ingest.sim.walk import TAG_COUNT, draw


@dataclass
class FeedConfig:
    seed: int
    clock: Callable[[], float]  # unix seconds; exchange event times come from here
    faults: FaultSpec
    kline_interval_ms: int = 2000
    book_interval_ms: int = 100
    queue_max: int = 10_000
    max_closes_per_tick: int = 100  # after a clock jump, closes beyond this are not replayed
    binance_ping_interval_s: float = 20.0
    binance_pong_timeout_s: float = 60.0
    binance_max_msgs_per_s: int = 5  # Binance disconnects clients above 5 messages/s
    huobi_ping_interval_s: float = 5.0
    huobi_gzip_level: int = 1  # zlib level of HTX frames; 0: stored (valid gzip, uncompressed)


@dataclass
class MarketStats:
    trades: int = 0
    first_trade_id: int | None = None
    last_trade_id: int | None = None
    closed_candles: dict[str, int] = field(default_factory=dict)
    book_update_id: int | None = None
    book_gaps: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "trades": self.trades,
            "first_trade_id": None if self.first_trade_id is None else str(self.first_trade_id),
            "last_trade_id": None if self.last_trade_id is None else str(self.last_trade_id),
            "closed_candles": dict(self.closed_candles),
            "book_update_id": None if self.book_update_id is None else str(self.book_update_id),
            "book_gaps": self.book_gaps,
        }


class LiveMarket:
    def __init__(self, model: MarketModel, now_ms: int, book_interval_ms: int) -> None:
        self.model = model
        self.spec = model.spec
        self.trade_cursor_ms = now_ms  # trades with ts < cursor have been handled
        self.new_trades = TradeBatch(0, [], [], [], [])
        self.stats = MarketStats()
        self._book_interval_ms = book_interval_ms
        first_id = 1_000_000_000 + draw(model.key, TAG_COUNT, (1 << 47) + 2) % 9_000_000_000
        self.book = books.Book(model.key, model.qty_mean, first_id)
        self.book.step(model.last_price(now_ms))
        self.last_book_ms = now_ms
        self._texts: dict[str, TextCache] = {}

    def texts(self, name: str, render: Callable[[int], str]) -> TextCache:
        """This market's cache of ``render``'s text of prices or quantities (``name`` tells
        the exchanges' formats apart)."""
        cache = self._texts.get(name)
        if cache is None:
            cache = self._texts[name] = TextCache(render)
        return cache

    def advance(self, now_ms: int, want_trades: bool) -> None:
        """Collect the trades with cursor ≤ ts ≤ now (only if someone may want them: they
        are history either way) and step the book when due."""
        end = now_ms + 1
        if want_trades:
            self.new_trades = self.model.batch_between(self.trade_cursor_ms, end)
        else:
            self.new_trades = TradeBatch(0, [], [], [], [])
        self.trade_cursor_ms = end
        if now_ms - self.last_book_ms >= self._book_interval_ms:
            self.book.step(self.model.last_price(now_ms))
            self.last_book_ms = now_ms


class Topic:
    """One subscribable stream and its publishing state, shared by its subscribers."""

    def __init__(self, key: str, kind: str, symbol: str, **params: Any) -> None:
        self.key = key
        self.kind = kind  # "trade" | "kline" | "diff" | "snap"
        self.symbol = symbol
        self.interval: Interval | None = params.pop("interval", None)
        self.native: str = params.pop("native", "")  # the exchange's name for the interval
        self.depth: int = params.pop("depth", 0)  # book levels per side, 0 = all
        self.period_ms: int = params.pop("period_ms", 0)
        self.params = params  # exchange-specific extras
        self.conns: set[ClientConn] = set()
        self.last_ms = -(1 << 62)
        self.window: int | None = None  # kline: open time of the current window
        self.last_id = 0  # book views: update id covered by the last message
        self.bids: books.Levels = {}
        self.asks: books.Levels = {}


class Feed:
    exchange = ""

    def __init__(self, config: FeedConfig, models: dict[str, MarketModel]) -> None:
        self.config = config
        now = self.now_ms()
        self.markets = {
            sym: LiveMarket(m, now, config.book_interval_ms) for sym, m in models.items()
        }
        self.topics: dict[str, Topic] = {}
        self.conns: set[ClientConn] = set()
        self._rng = random.Random(config.seed * 7919 + len(self.exchange))
        self.started_at_ms = now

    def now_ms(self) -> int:
        return int(self.config.clock() * 1000)

    # -- connections and subscriptions --------------------------------------------------

    def register(self, conn: ClientConn) -> None:
        self.conns.add(conn)

    def unregister(self, conn: ClientConn) -> None:
        self.conns.discard(conn)
        for key in list(conn.topics):
            self.unsubscribe(conn, key)

    def subscribe(self, conn: ClientConn, topic: Topic) -> Topic:
        """Add ``conn`` to ``topic`` (or to the live topic with the same key)."""
        live = self.topics.get(topic.key)
        if live is None:
            live = self.topics[topic.key] = topic
            if topic.kind in ("diff", "snap"):
                book = self.markets[topic.symbol].book
                topic.bids, topic.asks = book.top(topic.depth)
                topic.last_id = book.update_id
                topic.last_ms = self.now_ms()
        live.conns.add(conn)
        conn.topics.add(live.key)
        return live

    def unsubscribe(self, conn: ClientConn, key: str) -> bool:
        conn.topics.discard(key)
        topic = self.topics.get(key)
        if topic is None or conn not in topic.conns:
            return False
        topic.conns.discard(conn)
        if not topic.conns:
            del self.topics[key]
        return True

    # -- publishing ---------------------------------------------------------------------

    def publish(self, now_ms: int, elapsed_s: float) -> None:
        trading = {t.symbol for t in self.topics.values() if t.kind == "trade"}
        for sym, lm in self.markets.items():
            lm.advance(now_ms, sym in trading)
        stalled = {
            sym
            for sym in self.markets
            if self.config.faults.stalled(self.exchange, sym, elapsed_s)
        }
        for topic in list(self.topics.values()):
            lm = self.markets[topic.symbol]
            if topic.symbol in stalled:
                self._suppress(topic, lm, now_ms)
            elif topic.kind == "trade":
                self._publish_trades(topic, lm, now_ms)
            elif topic.kind == "kline":
                self._publish_kline(topic, lm, now_ms)
            else:
                self._publish_view(topic, lm, now_ms)

    def _publish_trades(self, topic: Topic, lm: LiveMarket, now_ms: int) -> None:
        batch = lm.new_trades
        if not len(batch):
            return
        taken = self.deliver_many(topic, self.trade_frames(topic, lm, batch, now_ms))
        if taken:
            self._count_trades(lm, batch.ids[:taken])

    def _count_trades(self, lm: LiveMarket, ids: range) -> None:
        """Count delivered trades not counted before (another topic of the same market may
        have delivered them already). Stats ids increase with trade ids."""
        stats = lm.stats
        last = self.stats_trade_id(lm, ids[-1])
        if stats.last_trade_id is not None:
            if last <= stats.last_trade_id:
                return
            while self.stats_trade_id(lm, ids[0]) <= stats.last_trade_id:
                ids = ids[1:]
        stats.trades += len(ids)
        stats.last_trade_id = last
        if stats.first_trade_id is None:
            stats.first_trade_id = self.stats_trade_id(lm, ids[0])

    def _publish_kline(self, topic: Topic, lm: LiveMarket, now_ms: int) -> None:
        iv = topic.interval
        assert iv is not None
        start = iv.start(now_ms)
        if topic.window is None:
            topic.window = start
        closes = 0
        while topic.window < start:
            end = iv.end(topic.window)
            if closes < self.config.max_closes_per_tick:
                summary = lm.model.summary(topic.window, end)
                if self.deliver(topic, self.kline_frame(topic, lm, summary, True, now_ms)):
                    counts = lm.stats.closed_candles
                    counts[iv.name] = counts.get(iv.name, 0) + 1
                closes += 1
            topic.window = end
            topic.last_ms = -(1 << 62)  # the new window's first update goes out at once
        if now_ms - topic.last_ms >= self.config.kline_interval_ms:
            topic.last_ms = now_ms
            summary = lm.model.summary(start, now_ms + 1)
            self.deliver(topic, self.kline_frame(topic, lm, summary, False, now_ms))

    def _publish_view(self, topic: Topic, lm: LiveMarket, now_ms: int) -> None:
        if now_ms - topic.last_ms < topic.period_ms:
            return
        topic.last_ms = now_ms
        book = lm.book
        bids, asks = book.top(topic.depth)
        if topic.kind == "snap":
            topic.bids, topic.asks, topic.last_id = bids, asks, book.update_id
            if self.deliver(topic, self.book_frame(topic, lm, [], [], now_ms, full=True)):
                lm.stats.book_update_id = book.update_id
            return
        bid_diff = books.diff(topic.bids, bids, True)
        ask_diff = books.diff(topic.asks, asks, False)
        if not bid_diff and not ask_diff:
            return
        first_id = topic.last_id + 1
        topic.bids, topic.asks, topic.last_id = bids, asks, book.update_id
        if self.config.faults.skip_seq and self._rng.random() < self.config.faults.skip_seq:
            lm.stats.book_gaps += 1  # withheld: the next message starts after a real gap
            return
        frame = self.book_frame(topic, lm, bid_diff, ask_diff, now_ms, first_id=first_id)
        if self.deliver(topic, frame):
            lm.stats.book_update_id = book.update_id

    def _suppress(self, topic: Topic, lm: LiveMarket, now_ms: int) -> None:
        """A stalled symbol: keep the state moving, send nothing (so resuming shows a gap)."""
        if topic.kind == "kline" and topic.interval is not None:
            topic.window = topic.interval.start(now_ms)
        elif topic.kind in ("diff", "snap"):
            topic.bids, topic.asks = lm.book.top(topic.depth)
            topic.last_id = lm.book.update_id

    def deliver(self, topic: Topic, frame: Frame) -> bool:
        """Send a data frame to every subscriber; True if at least one took it."""
        sent = False
        for conn in list(topic.conns):
            sent = conn.send(frame) or sent
        return sent

    def deliver_many(self, topic: Topic, frames: list[Frame]) -> int:
        """Send data frames to every subscriber; how many leading frames at least one took
        (a subscriber takes a prefix: it stops taking only when it is gone)."""
        taken = 0
        for conn in list(topic.conns):
            taken = max(taken, conn.send_many(frames))
        return taken

    def stats(self) -> dict[str, Any]:
        return {sym: lm.stats.as_json() for sym, lm in self.markets.items()}

    # -- exchange-specific hooks ----------------------------------------------------------

    def stats_trade_id(self, lm: LiveMarket, trade_id: int) -> int:
        """The id this exchange's clients store for a trade."""
        return trade_id

    def trade_frame(self, topic: Topic, lm: LiveMarket, trade: Trade, now_ms: int) -> Frame:
        raise NotImplementedError

    def trade_frames(
        self, topic: Topic, lm: LiveMarket, batch: TradeBatch, now_ms: int
    ) -> list[Frame]:
        """``trade_frame`` of each trade of the batch; exchanges write it faster."""
        return [self.trade_frame(topic, lm, trade, now_ms) for trade in batch.trades()]

    def kline_frame(
        self, topic: Topic, lm: LiveMarket, s: Summary, closed: bool, now_ms: int
    ) -> Frame:
        raise NotImplementedError

    def book_frame(
        self,
        topic: Topic,
        lm: LiveMarket,
        bids: books.Diff,
        asks: books.Diff,
        now_ms: int,
        *,
        first_id: int = 0,
        full: bool = False,
    ) -> Frame:
        raise NotImplementedError

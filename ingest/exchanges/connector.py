"""One exchange's streaming connector: sockets, parsing, candles, books, counters.

A ``Connector`` owns the ``WsClient``s of one exchange (several when the streams exceed
``max_streams_per_connection``; HTX also has its MBP ``/feed`` socket), a
``CandleFinalizer``, a ``BookKeeper`` and the per-exchange counters. Each socket's
``FeedHandler`` (``handler.py``; the exchange modules subclass it) parses frames with the
exchange's pure parser and the connector routes what comes out:

- trades → the sink at once (exact duplicates from a rotation overlap or a replayed frame
  are dropped by a bounded per-symbol set of recent ids; the unique key would absorb them
  anyway, this keeps the counters honest and the writer's work down);
- candle pushes → the finalizer → final candles to the sink;
- book deltas → the book keeper (synchronous; a resync never runs in the read loop);
- ``Control`` items (pings, acks, errors, shutdown notices) → the exchange handler.

Records go to ``sink.offer`` without waiting while the writer has room; when its memory is
full ``handle_frame`` returns the ``sink.put_many`` coroutine for the rest, the socket stops
reading, and TCP pushes back on the exchange.

A bad frame is logged (truncated, at most a few lines per interval) and counted, never fatal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ingest.errors import ConfigError, ExchangeError, ParseError
from ingest.exchanges.bookkeeper import BookKeeper, ResyncFn, SnapshotGrid, next_grid_s
from ingest.exchanges.candles import CandleFinalizer
from ingest.exchanges.plan import Stream, stream_key
from ingest.logs import get_logger
from ingest.records import BookDelta, Candle, Record, Trade
from ingest.settings import ExchangeSettings
from ingest.transport.connection import snippet
from ingest.transport.ratelimit import RateLimiter
from ingest.transport.recorder import Recorder
from ingest.transport.ws import Frame, WsClient, WsConnection, WsState
from ingest.transport.wsapi import WsConfig

if TYPE_CHECKING:
    from ingest.exchanges.handler import FeedHandler

OnReconnect = Callable[[str, list[str]], Awaitable[None] | None]
_MAX_KEYS = 100_000  # memoised stream keys, bounded against a flood of odd symbols
_RECENT_TRADE_IDS = 4096  # per symbol: far more than one rotation overlap delivers twice
_LOG_BURST = 10  # parse-error lines per window before they are only counted
_LOG_WINDOW_S = 60.0
# A socket's close handshake may take this long: close() of a whole connector stays well
# inside the container's 8-s stop budget, leaving time for the writer to drain.
CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ConnectorOptions:
    """Tuning that settings do not carry (tests shorten the timings)."""

    ws: Mapping[str, Any] = field(default_factory=dict)  # WsConfig field overrides
    connect_limiter: RateLimiter | None = None  # default: 1 new connection/s per exchange
    resync_concurrency: int = 2
    resync_retry_base_s: float = 0.5
    resync_wait_image_s: float = 10.0
    max_book_buffer: int = 1000
    wall: Callable[[], float] = time.time  # wall clock for the snapshot grid

    def ws_config(self, base: WsConfig) -> WsConfig:
        return dataclasses.replace(base, **dict(self.ws)) if self.ws else base

    def limiter(self, exchange: str) -> RateLimiter:
        # Reliability target: at most one new connection per second per exchange (also
        # Binance's 300 connections / 5 min).
        return self.connect_limiter or RateLimiter(1.0, 1.0, name=f"{exchange}.connect")


class RecordSink(Protocol):
    """What connectors need of the writer (``ingest.sink.Sink`` is one)."""

    def offer(self, records: list[Record]) -> int: ...

    async def put_many(self, records: Iterable[Record]) -> None: ...


class _RecentIds:
    """A bounded set remembering the last ``size`` ids."""

    __slots__ = ("_order", "_seen", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._seen: set[int] = set()
        self._order: deque[int] = deque()

    def add(self, value: int) -> bool:
        """False if ``value`` was seen recently."""
        if value in self._seen:
            return False
        self._seen.add(value)
        self._order.append(value)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())
        return True


class Connector:
    """Runs one exchange's sockets until ``close()`` (or cancellation of ``run()``)."""

    def __init__(
        self,
        exchange: str,
        settings: ExchangeSettings,
        streams: Sequence[Stream],
        sink: RecordSink,
        *,
        keeper: BookKeeper | None,
        finalizer: CandleFinalizer,
        on_reconnect: OnReconnect | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.exchange = exchange
        self.settings = settings
        self.streams = list(streams)
        self.sink = sink
        self.keeper = keeper
        self.finalizer = finalizer
        self.on_reconnect = on_reconnect
        self.wall = wall
        self.handlers: list[FeedHandler] = []
        self.clients: list[WsClient] = []
        self.log = get_logger("ingest.exchanges", exchange=exchange)
        self.counters: dict[str, Any] = {
            "frames_received": 0, "frames_parsed": 0, "frames_rejected": 0,
            "frames_by_channel": {}, "trades": 0, "trades_duplicate": 0, "candles": 0, "book_snapshots": 0,
            "unexpected": 0, "stale_streams": 0, "resubscribes": 0, "resubscribes_dropped": 0,
            "reconnects": 0,
            "controls": {},
        }
        self._recent: dict[str, _RecentIds] = {}
        self._trade_keys: dict[str, str] = {}  # symbol -> its trades stream key
        # Set by the exchange module: the exchange's own symbol list, for check_markets.
        self.market_lister: Callable[[], Awaitable[set[str]]] | None = None
        self._log_window = (0.0, 0)  # (window start, lines logged in it)
        self._stopped = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._callbacks: set[asyncio.Task[Any]] = set()

    @property
    def symbols(self) -> list[str]:
        return sorted({s.unified for s in self.streams})

    def attach(
        self, handler: FeedHandler, config: WsConfig, *, connect_limiter: RateLimiter,
        recorder: Recorder | None = None,
    ) -> WsClient:
        """Create the ``WsClient`` for ``handler`` and watch its streams."""
        client = WsClient(
            f"{self.exchange}.{handler.name}", handler, config, connect_limiter=connect_limiter,
            recorder=recorder, log_context={"exchange": self.exchange},
        )
        handler.client = client
        self.handlers.append(handler)
        self.clients.append(client)
        for key in handler.streams:
            client.watch(key)
        return client

    # -- routing (called from handle_frame, synchronously) ---------------------------------

    def route(self, handler: FeedHandler, item: Any, out: list[Record],
              source: WsConnection | None) -> None:
        kind = type(item)
        if kind is Trade:
            key = self._trade_keys.get(item.symbol)
            if key is None:
                key = stream_key("trades", item.symbol)
                if len(self._trade_keys) < _MAX_KEYS:
                    self._trade_keys[item.symbol] = key
            if not handler.mark(key):
                self.counters["unexpected"] += 1
                return
            recent = self._recent.get(item.symbol)
            if recent is None:
                recent = self._recent[item.symbol] = _RecentIds(_RECENT_TRADE_IDS)
            if recent.add(item.trade_id):
                out.append(item)
            else:
                self.counters["trades_duplicate"] += 1
        elif kind is Candle:
            if not handler.mark(stream_key("candles", item.symbol, item.interval)):
                self.counters["unexpected"] += 1
                return
            out.extend(self.finalizer.observe(item))
        elif kind is BookDelta:
            if self.keeper is None or not handler.mark(stream_key("book", item.symbol)):
                self.counters["unexpected"] += 1
                return
            self.keeper.on_delta(item, source)
        else:
            self.counters["unexpected"] += 1

    def emit(self, records: list[Record]) -> Awaitable[None] | None:
        """Hand records to the sink: synchronously while it has room (the common case, no
        coroutine per frame), else the coroutine that waits for room with the rest."""
        taken = self.sink.offer(records)
        if taken == len(records):
            self._count(records)
            return None
        self._count(records[:taken])
        return self._emit_rest(records[taken:])

    async def _emit_rest(self, records: list[Record]) -> None:
        await self.sink.put_many(records)
        self._count(records)

    def _count(self, records: list[Record]) -> None:
        trades = [*map(type, records)].count(Trade)  # C loops, not a generator per frame
        self.counters["trades"] += trades
        self.counters["candles"] += len(records) - trades

    def reject(self, ws: str, frame: Frame, exc: ParseError) -> None:
        self.counters["frames_rejected"] += 1
        now = time.monotonic()
        start, logged = self._log_window
        if now - start >= _LOG_WINDOW_S:
            start, logged = now, 0
        if logged < _LOG_BURST:
            self.log.warning("frame rejected", ws=ws, error=str(exc)[:200], frame=snippet(frame))
        self._log_window = (start, logged + 1)

    # -- events from handlers ------------------------------------------------------------

    def stale(self, handler: FeedHandler, stream: Stream) -> None:
        self.counters["stale_streams"] += 1
        self.counters["resubscribes"] += 1
        handler.resubscribe(stream)
        if stream.channel == "book" and self.keeper is not None:
            book = self.keeper.books.get(stream.symbol)
            if book is not None and not book.synced:
                self.keeper.request(stream.symbol, "stale stream")

    def reconnected(self, handler: FeedHandler) -> None:
        """A socket is back after a disconnect: open candles may have missed updates, and
        the gap-repair hook learns which symbols to look at."""
        self.counters["reconnects"] += 1
        if self.keeper is not None:
            # Updates were missed while the socket was down: those books resync now (a
            # quiet book would otherwise wait for its next update or the watchdog).
            books = self._book_symbols(handler)
            self.keeper.drop(books, "reconnected")
            for symbol in books:
                self.keeper.request(symbol, "reconnected")
        repairable = [s for s in handler.streams.values() if s.channel in ("trades", "candles")]
        self.finalizer.forget_open({s.symbol for s in repairable if s.channel == "candles"})
        if self.on_reconnect is None or not repairable:
            return  # a book socket: books are resynced, there is nothing to refill
        try:
            result = self.on_reconnect(self.exchange, sorted({s.unified for s in repairable}))
        except Exception as exc:
            self.log.error("on_reconnect failed", error=repr(exc)[:300])
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callbacks.add(task)
            task.add_done_callback(self._callback_done)

    @staticmethod
    def _book_symbols(handler: FeedHandler) -> list[str]:
        return [s.symbol for s in handler.streams.values() if s.channel == "book"]

    def _live_book_symbols(self) -> set[str]:
        """Symbols whose book socket is open (one still subscribing and both sockets of a
        rotation count: they are receiving)."""
        live: set[str] = set()
        for handler in self.handlers:
            client = handler.client
            if client is not None and any(not c.closed for c in client.connections):
                live.update(self._book_symbols(handler))
        return live

    def _callback_done(self, task: asyncio.Task[Any]) -> None:
        self._callbacks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("on_reconnect failed", error=repr(task.exception())[:300])

    async def check_markets(self) -> None:
        """Raise ConfigError naming the configured symbols the exchange does not list.
        An unreachable exchange is only logged: the streams will tell."""
        if self.market_lister is None:
            return
        try:
            listed = await self.market_lister()
        except (ExchangeError, ParseError) as exc:
            self.log.warning("could not check the exchange's markets", error=str(exc)[:300])
            return
        unknown = sorted({s.unified for s in self.streams if s.native not in listed})
        if unknown:
            raise ConfigError(f"{self.exchange}: unknown symbol(s) {', '.join(unknown)} "
                              "(the exchange does not list them)")

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every socket, the resync workers and the snapshot clock until ``close()``."""
        if self._run_task is not None:
            raise RuntimeError(f"{self.exchange}: run() is already running")
        self._run_task = asyncio.current_task()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(c.run(), name=c.name) for c in self.clients]
                if self.keeper is not None:
                    tasks.append(tg.create_task(self.keeper.run(), name=f"{self.exchange}.books"))
                    tasks.append(tg.create_task(self._snapshot_loop(),
                                                name=f"{self.exchange}.snapshots"))
                await self._stopped.wait()
                for task in tasks:
                    task.cancel()
        finally:
            for task in list(self._callbacks):
                task.cancel()
            self._run_task = None

    async def _snapshot_loop(self) -> None:
        assert self.keeper is not None
        interval = self.settings.snapshot_interval_s
        grid = SnapshotGrid(interval)
        while True:
            await asyncio.sleep(next_grid_s(self.wall(), interval))
            now = self.wall()
            at = grid.take(now)
            if at is None:
                continue  # woke just before the grid point: that one is still to come
            snaps = self.keeper.snapshots(at, now, live=self._live_book_symbols())
            if snaps:
                await self.sink.put_many(snaps)
                self.counters["book_snapshots"] += len(snaps)

    async def close(self) -> None:
        """Close every socket and stop ``run()``; bounded by the clients' own timeouts."""
        self._stopped.set()
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        task = self._run_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=2 * CLOSE_TIMEOUT_S + 1)

    # -- reading -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: frames, records per channel, books, candles, sockets."""
        c = self.counters
        fs = self.finalizer.stats
        out: dict[str, Any] = {
            "exchange": self.exchange,
            "frames": {"received": c["frames_received"], "parsed": c["frames_parsed"],
                       "parsed_by_channel": dict(c["frames_by_channel"]),
                       "rejected": c["frames_rejected"],
                       "transport_rejected": sum(cl.stats.frames_rejected for cl in self.clients),
                       "handler_errors": sum(cl.stats.handler_errors for cl in self.clients)},
            "trades": {"emitted": c["trades"], "duplicates": c["trades_duplicate"]},
            "candles": {"emitted": c["candles"], "updates": fs.updates,
                        "finalized": fs.finalized + fs.inferred, "inferred": fs.inferred,
                        "stale": fs.stale, "unusable": fs.unusable, "held_open": self.finalizer.held},
            "book": {"snapshots_emitted": c["book_snapshots"]},
            "unexpected": c["unexpected"], "stale_streams": c["stale_streams"],
            "resubscribes": c["resubscribes"], "resubscribes_dropped": c["resubscribes_dropped"],
            "reconnects": c["reconnects"],
            "controls": dict(c["controls"]),
            "connections": {cl.name: cl.stats.as_dict() for cl in self.clients},
            "last_message_age_s": self._ages(),
        }
        if self.keeper is not None:
            out["book"].update(self.keeper.as_dict())
        return out

    def _ages(self) -> dict[str, float]:
        now = time.monotonic()
        ages: dict[str, float] = {}
        for h in self.handlers:
            for key in h.streams:
                # A stream that never sent anything is as old as its wait: visible on the
                # age gauge and in the "silent" summary, not hidden as "no age".
                ages[key] = round(now - h.last_seen.get(key, h.created), 3)
        return ages

    def health(self) -> dict[str, Any]:
        """Per stream: its socket's state and the age of its last message."""
        ages = self._ages()
        streams = {}
        for h in self.handlers:
            state = h.client.state if h.client is not None else WsState.IDLE
            for key in h.streams:
                streams[key] = {"connection": h.name, "state": str(state),
                                "connected": state in (WsState.CONNECTED, WsState.ROTATING),
                                "last_message_age_s": ages.get(key)}
        healthy = bool(streams) and all(s["connected"] for s in streams.values())
        return {"exchange": self.exchange, "healthy": healthy, "streams": streams}


def make_connector(
    exchange: str,
    settings: ExchangeSettings,
    streams: Sequence[Stream],
    sink: RecordSink,
    *,
    resync: ResyncFn,
    infer_candles: bool,
    options: ConnectorOptions,
    on_reconnect: OnReconnect | None = None,
) -> Connector:
    """The exchange-neutral parts: a finalizer over the candle streams and, when books are
    streamed, a keeper over the book symbols. The exchange module attaches the sockets."""
    candle_keys = [(s.symbol, s.interval or "") for s in streams if s.channel == "candles"]
    book_symbols = [s.symbol for s in streams if s.channel == "book"]
    keeper = None
    if book_symbols:
        keeper = BookKeeper(
            exchange, book_symbols, depth=settings.book_depth, resync=resync,
            concurrency=options.resync_concurrency, max_buffer=options.max_book_buffer,
            retry_base_s=options.resync_retry_base_s, wait_image_s=options.resync_wait_image_s,
        )
    finalizer = CandleFinalizer(candle_keys, infer_from_next_window=infer_candles)
    return Connector(exchange, settings, streams, sink, keeper=keeper, finalizer=finalizer,
                     on_reconnect=on_reconnect, wall=options.wall)

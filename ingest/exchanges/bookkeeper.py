"""The order books of one exchange connector: deltas in, resyncs out, snapshots on a grid.

``BookKeeper`` owns one ``LocalBook`` per symbol. The read loop hands it every ``BookDelta``
(``on_delta``: synchronous, never waits); a gap or a book still awaiting its image queues a
*resync of that symbol only*. Resyncs run in a few worker tasks beside the read loops (a REST
snapshot must never stall a socket), deduplicated per symbol, with a per-symbol backoff
between attempts; the REST calls themselves wait in the exchange's weight limiter in the
``HttpClient``, so a mass reconnect queues its snapshots instead of earning 429s.

The resync function returns the image (REST) or None when the image arrives on the stream
later (HTX ``req``); then the request is retried if the book is not synced within
``wait_image_s``.

Rotation overlap: while two sockets deliver the same updates, a delta from the *other*
socket that would be a gap relative to the book is parked, not treated as a gap: the
socket the book follows may simply be behind. Parked deltas are applied as soon as they
continue the book; only when the followed socket has closed is a remaining hole a gap.

Snapshots: ``grid_floor`` aligns the snapshot timestamp to the ``snapshot_interval_s`` grid
(floor(now / interval) * interval, UTC), so two replicas streaming the same symbol write the
same (exchange, symbol, timestamp) key and the database keeps one row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ingest.books import LocalBook, Outcome
from ingest.logs import get_logger
from ingest.records import BookDelta, BookSnapshot

ResyncFn = Callable[[str], Awaitable[BookDelta | None]]


class Source(Protocol):
    """Where a delta came from (a ``WsConnection``): only ``closed`` is read."""

    @property
    def closed(self) -> bool: ...


def grid_floor(now_s: float, interval_s: float) -> datetime:
    """The snapshot grid point at or before ``now_s``, in whole microseconds (so float
    noise in ``interval_s`` cannot split one grid point into two keys)."""
    step_us = max(1, round(interval_s * 1_000_000))
    now_us = int(now_s * 1_000_000)
    floor_us = now_us - now_us % step_us
    return datetime.fromtimestamp(floor_us // 1_000_000, UTC).replace(
        microsecond=floor_us % 1_000_000
    )


def next_grid_s(now_s: float, interval_s: float) -> float:
    """Seconds from ``now_s`` until the next grid point (never 0)."""
    step_us = max(1, round(interval_s * 1_000_000))
    now_us = int(now_s * 1_000_000)
    return (step_us - now_us % step_us) / 1_000_000


class SnapshotGrid:
    """Which grid point a snapshot taken now belongs to, at most once each.

    The loop sleeps on the monotonic clock for a delay computed from the wall clock; where
    the wall clock is slewed against it (seen on VMs: 145 µs in 5 s) the loop can wake a
    hair before the grid point and read the previous one again. Its key already stored,
    the newer book would be skipped as a duplicate. ``take`` returns None then (sleep
    again; the next grid point is microseconds away). A wall clock stepped back by more
    than a minute is taken as is, so snapshots do not stop until it catches up."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: datetime | None = None
        self._back = timedelta(seconds=max(60.0, 2 * interval_s))

    def take(self, now_s: float) -> datetime | None:
        grid = grid_floor(now_s, self.interval_s)
        last = self._last
        if last is not None and last - self._back < grid <= last:
            return None
        self._last = grid
        return grid


@dataclass
class _Pending:
    reason: str
    state: str = "queued"  # queued | inflight | waiting
    retry_at: float = 0.0
    attempts: int = 0


@dataclass
class KeeperStats:
    deltas: int = 0
    applied: int = 0
    stale: int = 0
    buffered: int = 0
    gaps: int = 0
    resyncs_requested: int = 0
    resyncs_deduped: int = 0
    resync_attempts: int = 0
    resyncs_done: int = 0
    resync_failures: int = 0
    resync_timeouts: int = 0
    parked: int = 0
    unexpected: int = 0
    snapshots: int = 0
    snapshots_unsynced: int = 0
    books_dropped: int = 0  # books forgotten because their socket was lost
    gaps_by_symbol: dict[str, int] = field(default_factory=dict)
    resyncs_by_symbol: dict[str, int] = field(default_factory=dict)
    dropped_by_symbol: dict[str, int] = field(default_factory=dict)


class BookKeeper:
    def __init__(
        self,
        exchange: str,
        symbols: Iterable[str],
        *,
        depth: int,
        resync: ResyncFn,
        clock: Callable[[], float] = time.monotonic,
        concurrency: int = 2,
        max_buffer: int = 1000,
        retry_base_s: float = 0.5,
        retry_cap_s: float = 30.0,
        wait_image_s: float = 10.0,
        max_parked: int = 256,
    ) -> None:
        self.exchange = exchange
        self.depth = depth
        self.books = {s: LocalBook(exchange, s, max_buffer=max_buffer) for s in symbols}
        self._resync = resync
        self._clock = clock
        self._concurrency = max(1, concurrency)
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._wait_image_s = wait_image_s
        self._max_parked = max_parked
        # At most one entry per symbol (dedupe below), so this queue is bounded by design.
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: dict[str, _Pending] = {}
        self._source: dict[str, Source] = {}
        self._parked: dict[str, list[BookDelta]] = {}
        self._last_grid: dict[str, datetime] = {}
        self.stats = KeeperStats()
        self.log = get_logger("ingest.exchanges.books", exchange=exchange)

    # -- the read loop's side ------------------------------------------------------------

    def on_delta(self, delta: BookDelta, source: Source | None = None) -> Outcome | None:
        book = self.books.get(delta.symbol)
        if book is None:
            self.stats.unexpected += 1
            return None
        self.stats.deltas += 1
        if self._should_park(book, delta, source):
            self._park(book, delta)
            return None
        outcome = book.apply(delta)
        self._after(book, outcome, source)
        return outcome

    def _after(self, book: LocalBook, outcome: Outcome, source: Source | None) -> None:
        sym = book.symbol
        if outcome is Outcome.APPLIED:
            self.stats.applied += 1
            if source is not None:
                self._source[sym] = source
            if self._parked.get(sym):
                self._unpark(book)
            self._settle(sym)
        elif outcome is Outcome.STALE:
            self.stats.stale += 1
        elif outcome is Outcome.BUFFERED:
            self.stats.buffered += 1
            if sym not in self._pending:
                self.request(sym, "initial sync")
        else:
            self._on_gap(book)

    def _on_gap(self, book: LocalBook) -> None:
        sym = book.symbol
        self.stats.gaps += 1
        self.stats.gaps_by_symbol[sym] = self.stats.gaps_by_symbol.get(sym, 0) + 1
        self._parked.pop(sym, None)
        self.log.warning("resyncing book after a sequence gap", symbol=sym, reason=book.gap_reason)
        self.request(sym, "gap")

    def request(self, symbol: str, reason: str) -> bool:
        """Queue a resync of ``symbol``; False when one is already pending (deduped)."""
        if symbol not in self.books:
            return False
        if symbol in self._pending:
            self.stats.resyncs_deduped += 1
            return False
        self._pending[symbol] = _Pending(reason)
        self.stats.resyncs_requested += 1
        by = self.stats.resyncs_by_symbol
        by[symbol] = by.get(symbol, 0) + 1
        self._queue.put_nowait(symbol)
        return True

    def _settle(self, symbol: str) -> None:
        if symbol in self._pending and self.books[symbol].synced:
            del self._pending[symbol]
            self.stats.resyncs_done += 1

    # -- rotation overlap: park deltas that are ahead of the followed socket --------------

    def _should_park(self, book: LocalBook, delta: BookDelta, source: Source | None) -> bool:
        last = book.last_id
        if source is None or delta.full or last is None or delta.last_id <= last:
            return False
        followed = self._source.get(book.symbol)
        if followed is None or followed is source or followed.closed:
            return False
        return not _continues(delta, last)

    def _park(self, book: LocalBook, delta: BookDelta) -> None:
        parked = self._parked.setdefault(book.symbol, [])
        if len(parked) >= self._max_parked:
            self._parked.pop(book.symbol)
            self._after(book, book.apply(delta), None)  # too far behind: a real gap now
            return
        parked.append(delta)
        self.stats.parked += 1

    def _unpark(self, book: LocalBook) -> None:
        parked = sorted(self._parked.pop(book.symbol, []), key=lambda d: d.last_id)
        keep: list[BookDelta] = []
        for delta in parked:
            last = book.last_id
            if last is None or delta.last_id <= last:
                continue  # now stale
            if _continues(delta, last):
                book.apply(delta)
                self.stats.applied += 1
            else:
                keep.append(delta)
        if keep:
            self._parked[book.symbol] = keep

    def _release_parked(self) -> None:
        """The followed socket has closed: what is still parked is applied, so a hole
        that nobody will fill is reported as the gap it is."""
        for sym in list(self._parked):
            followed = self._source.get(sym)
            if followed is not None and not followed.closed:
                continue
            book = self.books[sym]
            for delta in sorted(self._parked.pop(sym), key=lambda d: d.last_id):
                outcome = book.apply(delta)
                self._after(book, outcome, None)
                if outcome is Outcome.GAP:
                    break

    # -- resync workers --------------------------------------------------------------------

    async def run(self) -> None:
        """Resync workers and the retry clock; runs until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for i in range(self._concurrency):
                tg.create_task(self._worker(), name=f"{self.exchange}.resync.{i}")
            tg.create_task(self._ticker(), name=f"{self.exchange}.resync.tick")

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.tick()

    def tick(self, now: float | None = None) -> None:
        """Requeue resyncs whose retry time has come; release parked deltas."""
        now = self._clock() if now is None else now
        for sym, pending in list(self._pending.items()):
            if pending.state != "waiting" or now < pending.retry_at:
                continue
            if self.books[sym].synced:
                self._settle(sym)
                continue
            if pending.reason == "awaiting image":
                self.stats.resync_timeouts += 1
            pending.state = "queued"
            self._queue.put_nowait(sym)
        if self._parked:
            self._release_parked()

    async def _worker(self) -> None:
        while True:
            sym = await self._queue.get()
            pending = self._pending.get(sym)
            if pending is None or pending.state != "queued":
                continue
            await self._attempt(sym, pending)

    async def _attempt(self, sym: str, pending: _Pending) -> None:
        pending.state = "inflight"
        pending.attempts += 1
        self.stats.resync_attempts += 1
        try:
            image = await self._resync(sym)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.resync_failures += 1
            delay = self._backoff(pending.attempts)
            self.log.warning("book resync failed", symbol=sym, attempt=pending.attempts,
                             retry_in_s=delay, error=f"{type(exc).__name__}: {exc}"[:300])
            self._wait(sym, pending, delay, pending.reason)
            return
        if image is None:  # the image comes on the stream (HTX req)
            self._wait(sym, pending, self._wait_image_s, "awaiting image")
            return
        book = self.books[sym]
        outcome = book.apply(image)
        if outcome is Outcome.APPLIED:
            self.stats.applied += 1
        if book.synced:
            self._settle(sym)
            self.log.info("book synced", symbol=sym, last_update_id=book.last_id,
                          attempts=pending.attempts, reason=pending.reason)
            return
        # Binance's "snapshot older than the first buffered U": fetch again, later.
        self._wait(sym, pending, self._backoff(pending.attempts), "snapshot behind stream")

    def _wait(self, sym: str, pending: _Pending, delay_s: float, reason: str) -> None:
        if self._pending.get(sym) is pending:
            pending.state, pending.reason = "waiting", reason
            pending.retry_at = self._clock() + delay_s

    def _backoff(self, attempts: int) -> float:
        return float(min(self._retry_cap_s, self._retry_base_s * 2 ** max(0, attempts - 1)))

    # -- snapshots --------------------------------------------------------------------------

    def drop(self, symbols: Iterable[str], reason: str) -> int:
        """Forget the books of ``symbols`` (their socket is gone: updates are being missed,
        so the image is no longer the exchange's book); no snapshot is written from them
        until they resync. The connector asks for that when the socket is back."""
        dropped = []
        for sym in symbols:
            book = self.books.get(sym)
            if book is None or (not book.synced and not book.buffered):
                continue
            book.reset()
            self._parked.pop(sym, None)
            dropped.append(sym)
            by = self.stats.dropped_by_symbol
            by[sym] = by.get(sym, 0) + 1
        if dropped:
            self.stats.books_dropped += len(dropped)
            self.log.warning("books dropped until they resync", reason=reason,
                             symbols=len(dropped), first=dropped[:5])
        return len(dropped)

    def snapshots(self, timestamp: datetime, recv_ts: float = 0.0,
                  live: set[str] | None = None) -> list[BookSnapshot]:
        """Top-``depth`` snapshots of the synced books at grid point ``timestamp`` (each
        symbol at most once per grid point). ``live``: the symbols whose socket is
        connected; any other book is dropped (``drop``), not written from memory."""
        if live is not None:
            self.drop([sym for sym in self.books if sym not in live], "socket not connected")
        out = []
        for sym, book in self.books.items():
            if not book.synced:
                self.stats.snapshots_unsynced += 1
                continue
            if self._last_grid.get(sym) == timestamp:
                continue
            self._last_grid[sym] = timestamp
            out.append(book.snapshot(self.depth, timestamp, recv_ts))
        self.stats.snapshots += len(out)
        return out

    # -- reading -----------------------------------------------------------------------------

    def pending(self) -> dict[str, str]:
        return {sym: f"{p.state}: {p.reason}" for sym, p in self._pending.items()}

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "deltas": s.deltas, "applied": s.applied, "stale": s.stale, "buffered": s.buffered,
            "gaps": s.gaps, "resyncs_requested": s.resyncs_requested,
            "resyncs_deduped": s.resyncs_deduped, "resync_attempts": s.resync_attempts,
            "resyncs_done": s.resyncs_done, "resync_failures": s.resync_failures,
            "resync_timeouts": s.resync_timeouts, "parked": s.parked,
            "unexpected": s.unexpected, "snapshots": s.snapshots,
            "snapshots_unsynced": s.snapshots_unsynced, "books_dropped": s.books_dropped,
            "pending": self.pending(),
            "books": {
                sym: {"synced": b.synced, "last_update_id": b.last_id, "buffered": b.buffered,
                      "gaps": s.gaps_by_symbol.get(sym, 0),
                      "resyncs": s.resyncs_by_symbol.get(sym, 0),
                      "dropped": s.dropped_by_symbol.get(sym, 0)}
                for sym, b in self.books.items()
            },
        }


def _continues(delta: BookDelta, last: int) -> bool:
    # The book's own rule (books.LocalBook._continues): HTX chains prevSeqNum, Binance and
    # Gate accept a first id at or below last + 1.
    if delta.prev_id is not None:
        return delta.prev_id == last
    return delta.first_id <= last + 1


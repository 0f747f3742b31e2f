"""Local order books: a snapshot plus deltas under each exchange's sequence rules.

One ``LocalBook`` per (exchange, symbol). Feed it every ``BookDelta`` the parsers produce,
full images (REST snapshots, Gate ``full:true``/``spot.order_book``, HTX ``depth.step0`` and
MBP REQ replies) and increments alike, through ``apply``. Each call returns an ``Outcome``:

- ``APPLIED``: the book changed (or was replaced by a newer full image).
- ``STALE``: already reflected in the book (an old id, a duplicate); ignored.
- ``BUFFERED``: no usable image yet; the delta is kept until one arrives.
- ``GAP``: the sequence broke. The book is discarded (never applied across a gap) and
  the delta that revealed it starts a new buffer; the caller resyncs this symbol only
  (fetches a REST snapshot, sends an HTX REQ, or re-subscribes Gate ``spot.obu``).

Sequence rules (protocols.md), chosen by the delta itself:

- ``prev_id`` set (HTX MBP): apply only when ``prev_id`` equals the book's id (seqNum
  chain); ``last_id <= id`` is stale; anything else is a gap.
- otherwise (Binance ``U``/``u``, Gate ``U``/``u`` including ``spot.obu``): ``u <= id`` is
  stale, ``U > id + 1`` is a gap, else apply (``U <= id + 1 <= u``: an overlapping first
  event after the snapshot is applied, as both exchanges' procedures say).
- a full image older than or equal to the book (``last_id <= id``) is stale (HTX ``version``
  ordering); a newer one replaces the book, then buffered deltas are replayed under the
  rules above: stale ones dropped, and a hole between the image and the first buffered
  delta (Binance "snapshot older than the first U") is a gap that keeps the buffer.

Levels are stored per side as a dict keyed by ``Decimal`` price (so ``"10.2"`` and
``"10.20"`` are one level) holding the level exactly as received. Applying a delta is a
dict update per level; nothing is kept sorted. Reading ``top(n)`` selects the best ``n``
with ``heapq`` (O(levels)) and caches the answer until the side changes: books are read
once per snapshot interval (10 s by default) and updated up to ten times a second, so
sorting on every update (the earlier bisect-maintained key list) was the wrong trade.
"""

from __future__ import annotations

import enum
import heapq
from datetime import datetime
from decimal import Decimal

from ingest.errors import IngestError
from ingest.records import BookDelta, BookSnapshot, Level


class Outcome(enum.Enum):
    APPLIED = "applied"
    STALE = "stale"
    BUFFERED = "buffered"
    GAP = "gap"


# The members as module constants: reading ``Outcome.X`` goes through the enum's
# descriptor on Python 3.11, a measurable cost once per delta.
_APPLIED, _STALE, _BUFFERED, _GAP = Outcome.APPLIED, Outcome.STALE, Outcome.BUFFERED, Outcome.GAP


class BookNotSynced(IngestError):
    """``snapshot()`` was asked of a book that has no image yet (or lost it to a gap)."""


class _Side:
    """One side of a book: ``{Decimal(price): level}``. An image is kept as it came and
    made into the dict only when a delta, ``top`` or ``levels`` needs it: a feed of full
    images (HTX ``depth.step0``) pays for the images that are snapshotted, not for each
    one that arrives. Parsers emit plain decimal text, so a zero quantity (a level to
    drop) is made of "0" and "." only."""

    __slots__ = ("_image", "_levels", "_top", "descending")

    def __init__(self, descending: bool) -> None:
        self.descending = descending  # bids: best is the highest price
        self._levels: dict[Decimal, Level] = {}
        self._image: tuple[Level, ...] | None = None  # the last image, not yet in _levels
        self._top: tuple[int, tuple[Level, ...]] | None = None  # (n, best n), until a change

    @property
    def levels(self) -> dict[Decimal, Level]:
        image = self._image
        if image is not None:
            self._levels = {Decimal(lv[0]): lv for lv in image if lv[1].strip("0.")}
            self._image = None
        return self._levels

    def replace(self, levels: tuple[Level, ...]) -> None:
        self._image = levels
        self._levels = {}
        self._top = None

    def update(self, levels: tuple[Level, ...]) -> None:
        book = self.levels
        for level in levels:
            if level[1].strip("0."):  # not a zero quantity
                book[Decimal(level[0])] = level
            else:
                book.pop(Decimal(level[0]), None)
        if levels:
            self._top = None

    def clear(self) -> None:
        self._image = None
        self._levels = {}
        self._top = None

    def top(self, n: int) -> tuple[Level, ...]:
        if n <= 0:
            return ()
        cached = self._top
        if cached is not None and cached[0] == n:
            return cached[1]
        book = self.levels
        pick = heapq.nlargest if self.descending else heapq.nsmallest
        best = tuple(book[k] for k in pick(n, book))
        self._top = (n, best)
        return best


class LocalBook:
    """The book of one symbol on one exchange. Not thread-safe; one owner task."""

    __slots__ = (
        "_asks", "_bids", "_buffer", "_last_id", "applied", "exchange", "gap_reason", "gaps",
        "max_buffer", "stale", "symbol",
    )

    def __init__(self, exchange: str, symbol: str, *, max_buffer: int = 1000) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self.exchange = exchange
        self.symbol = symbol
        self.max_buffer = max_buffer
        self._bids = _Side(descending=True)
        self._asks = _Side(descending=False)
        self._last_id: int | None = None  # None: no image (awaiting a snapshot)
        self._buffer: list[BookDelta] = []
        self.gap_reason = ""  # why the last GAP happened, for the log line
        self.applied = 0
        self.stale = 0
        self.gaps = 0

    # -- state -------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._last_id is not None

    @property
    def last_id(self) -> int | None:
        return self._last_id

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def depth(self) -> tuple[int, int]:
        return len(self._bids.levels), len(self._asks.levels)

    def reset(self) -> None:
        """Forget the image and the buffer (e.g. after a reconnect)."""
        self._discard()
        self._buffer = []

    # -- applying ----------------------------------------------------------------------

    def apply(self, delta: BookDelta) -> Outcome:
        if delta.symbol != self.symbol or delta.exchange != self.exchange:
            raise ValueError(f"delta for {delta.exchange}/{delta.symbol} fed to {self.symbol}")
        if delta.full:
            return self._apply_full(delta)
        last = self._last_id
        if last is None:
            return self._buffer_delta(delta)
        if delta.last_id <= last:
            self.stale += 1
            return _STALE
        if not self._continues(delta, last):
            return self._gap(delta, f"book at {last}, got {_span(delta)}")
        self._bids.update(delta.bids)
        self._asks.update(delta.asks)
        self._last_id = delta.last_id
        self.applied += 1
        return _APPLIED

    @staticmethod
    def _continues(delta: BookDelta, last: int) -> bool:
        if delta.prev_id is not None:
            return delta.prev_id == last
        return delta.first_id <= last + 1

    def _apply_full(self, image: BookDelta) -> Outcome:
        if self._last_id is not None and image.last_id <= self._last_id:
            self.stale += 1
            return _STALE
        self._bids.replace(image.bids)
        self._asks.replace(image.asks)
        self._last_id = image.last_id
        self.applied += 1
        return self._replay() if self._buffer else Outcome.APPLIED

    def _replay(self) -> Outcome:
        pending, self._buffer = self._buffer, []
        for i, delta in enumerate(pending):
            last = self._last_id
            assert last is not None
            if delta.last_id <= last:
                continue  # already in the image
            if not self._continues(delta, last):
                self._discard()
                self._buffer = pending[i:]  # still good for a newer image
                return self._report_gap(f"image {last} older than buffered {_span(delta)}")
            self._bids.update(delta.bids)
            self._asks.update(delta.asks)
            self._last_id = delta.last_id
        return _APPLIED

    def _buffer_delta(self, delta: BookDelta) -> Outcome:
        buf = self._buffer
        if buf:
            tail = buf[-1].last_id
            if delta.last_id <= tail:
                self.stale += 1
                return _STALE
            if not self._continues(delta, tail):
                # The older deltas can never be applied now: any usable image is newer.
                buf.clear()
        if len(buf) >= self.max_buffer:
            buf.clear()
            buf.append(delta)
            return self._report_gap(f"buffer overflow ({self.max_buffer}) awaiting a snapshot")
        buf.append(delta)
        return _BUFFERED

    def _gap(self, delta: BookDelta, reason: str) -> Outcome:
        self._discard()
        self._buffer = [delta]
        return self._report_gap(reason)

    def _report_gap(self, reason: str) -> Outcome:
        self.gaps += 1
        self.gap_reason = reason
        return _GAP

    def _discard(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._last_id = None

    # -- reading -----------------------------------------------------------------------

    def top(self, n: int) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
        """The best ``n`` levels per side, best first, as received (price, quantity) text."""
        return self._bids.top(n), self._asks.top(n)

    def snapshot(self, n: int, timestamp: datetime, recv_ts: float = 0.0) -> BookSnapshot:
        """The top ``n`` levels as a storable record; raises BookNotSynced without an image."""
        if self._last_id is None:
            raise BookNotSynced(f"{self.exchange}/{self.symbol}: no book image")
        bids, asks = self.top(n)
        return BookSnapshot(
            exchange=self.exchange, symbol=self.symbol, timestamp=timestamp, bids=bids,
            asks=asks, last_update_id=self._last_id, recv_ts=recv_ts,
        )


def _span(delta: BookDelta) -> str:
    if delta.prev_id is not None:
        return f"prev {delta.prev_id} -> {delta.last_id}"
    return f"{delta.first_id}..{delta.last_id}"

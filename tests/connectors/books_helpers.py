"""BookDelta factories for the book tests."""

from __future__ import annotations

from datetime import UTC, datetime

from ingest.records import BookDelta, Level

TS = datetime(2024, 3, 1, tzinfo=UTC)


def delta(symbol: str, first: int, last: int, bids: tuple[Level, ...] = (),
          asks: tuple[Level, ...] = (), *, exchange: str = "binance",
          prev: int | None = None) -> BookDelta:
    return BookDelta(exchange, symbol, TS, bids, asks, first, last, prev_id=prev)


def image(symbol: str, last: int, bids: tuple[Level, ...], asks: tuple[Level, ...], *,
          exchange: str = "binance") -> BookDelta:
    return BookDelta(exchange, symbol, TS, bids, asks, last, last, full=True)


class Src:
    """A stand-in for a WsConnection: only ``closed`` is read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

"""What a backfill is asked to do: times, the candle grid, jobs, and input checks.

Times are integer milliseconds since the epoch, UTC, everywhere inside backfill; datetimes
appear only at the database and in messages. A candle *window* is identified by its open
time on the interval's grid (fixed intervals from the epoch; ``7d`` from Monday 00:00 UTC,
like Binance's ``1w`` and Gate's ``7d``). A candle range ``[start, end)`` covers the windows
that open at or after ``start`` and have closed by ``end``: a window still open at ``end``
(or now) is not stored as final.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from ingest.errors import ConfigError
from ingest.exchanges.naming import INTERVAL_SECONDS, interval_to_native, to_compact
from ingest.settings import INTERVALS, canonical_exchange

DAY_MS = 86_400_000
WEEK_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday; weeks open on Mondays
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def span_ms(interval: str) -> int:
    return INTERVAL_SECONDS[interval] * 1000


def align_down(t_ms: int, interval: str) -> int:
    """Open time of the window containing ``t_ms``."""
    span = span_ms(interval)
    offset = WEEK_OFFSET_MS if interval == "7d" else 0
    return t_ms - (t_ms - offset) % span


def align_up(t_ms: int, interval: str) -> int:
    """Open time of the first window opening at or after ``t_ms``."""
    down = align_down(t_ms, interval)
    return down if down == t_ms else down + span_ms(interval)


def window_bounds(start_ms: int, end_ms: int, interval: str) -> tuple[int, int]:
    """(first open, stop): the windows with ``first <= open < stop`` are inside the range
    and closed by ``end_ms``."""
    return align_up(start_ms, interval), align_down(end_ms, interval)


def to_dt(t_ms: int) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000, UTC)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def iso(t_ms: int) -> str:
    return to_dt(t_ms).isoformat().replace("+00:00", "Z")


def parse_time(text: str, option: str) -> int:
    """ISO-8601 (``2024-01-01T12:00:00Z``, ``2024-01-01 12:00``, with an offset or naive =
    UTC) or a date (``2024-01-01`` = midnight UTC) → ms."""
    raw = text.strip()
    try:
        if _DATE.fullmatch(raw):
            d = date.fromisoformat(raw)
            dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
            dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except ValueError:
        raise ConfigError(f"{option}: not an ISO-8601 time or a date: {text!r} "
                          "(e.g. 2024-01-01 or 2024-01-01T12:00:00Z)") from None
    return to_ms(dt)


def check_range(start_ms: int, end_ms: int, now_ms: int) -> int:
    """The range's effective end: ``end_ms`` clamped to now. ConfigError for a range that is
    empty or lies in the future."""
    if start_ms >= now_ms:
        raise ConfigError(f"--start {iso(start_ms)} is in the future (now is {iso(now_ms)})")
    if start_ms >= end_ms:
        raise ConfigError(f"--start {iso(start_ms)} is not before --end {iso(end_ms)}")
    return min(end_ms, now_ms)


def check_interval(exchange: str, interval: str) -> str:
    if interval not in INTERVALS:
        raise ConfigError(f"--interval: unsupported interval {interval!r} "
                          f"(supported: {' '.join(INTERVALS)})")
    interval_to_native(exchange, interval)
    return interval


@dataclass(frozen=True)
class CandleJob:
    exchange: str  # stored name: binance, gateio, huobi
    symbol: str  # unified: BTC/USDT
    interval: str
    start_ms: int
    end_ms: int

    @property
    def compact(self) -> str:
        return to_compact(self.symbol)

    @property
    def label(self) -> str:
        return f"{self.exchange} {self.symbol} {self.interval} candles"

    def describe(self) -> str:
        return f"{self.label} {iso(self.start_ms)} .. {iso(self.end_ms)}"


@dataclass(frozen=True)
class TradeJob:
    exchange: str
    symbol: str
    start_ms: int
    end_ms: int
    first_id: int | None = None  # an id range (Binance gap repair) instead of resuming
    last_id: int | None = None

    @property
    def compact(self) -> str:
        return to_compact(self.symbol)

    @property
    def label(self) -> str:
        return f"{self.exchange} {self.symbol} trades"

    def describe(self) -> str:
        if self.first_id is not None:
            return f"{self.label} ids {self.first_id} .. {self.last_id}"
        return f"{self.label} {iso(self.start_ms)} .. {iso(self.end_ms)}"


Job = CandleJob | TradeJob


@dataclass(frozen=True)
class BackfillRequest:
    """Validated CLI input (market membership is checked later, against the exchange)."""

    targets: dict[str, tuple[str, ...]]  # exchange → unified symbols
    intervals: dict[str, tuple[str, ...]]  # exchange → intervals (may be empty)
    trades: bool
    start_ms: int
    end_ms: int

    def jobs(self) -> list[Job]:
        out: list[Job] = []
        for exchange, symbols in self.targets.items():
            for symbol in symbols:
                out.extend(CandleJob(exchange, symbol, i, self.start_ms, self.end_ms)
                           for i in self.intervals.get(exchange, ()))
                if self.trades:
                    out.append(TradeJob(exchange, symbol, self.start_ms, self.end_ms))
        return out


def exchange_name(text: str) -> str:
    return canonical_exchange(text)

"""Candle intervals: window arithmetic (fixed, weekly, calendar month/year) and each exchange's
names for them. Every window starts on a minute boundary, so a window is a whole number of
minutes and its candle is an aggregate of 1m candles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday; weekly candles start on Mondays, four days later.
MONDAY_OFFSET_MS = 4 * DAY_MS


@dataclass(frozen=True)
class Interval:
    name: str  # normalised name, as settings and /sim/stats spell it: 1m 1h 1d 7d 1M 1y
    kind: str  # "fixed" | "week" | "month" | "year"
    length_ms: int = 0  # for "fixed" and "week"

    def start(self, t_ms: int) -> int:
        """Open time of the window containing ``t_ms``."""
        if self.kind == "fixed":
            return t_ms - t_ms % self.length_ms
        if self.kind == "week":
            return t_ms - (t_ms - MONDAY_OFFSET_MS) % WEEK_MS
        d = datetime.fromtimestamp(t_ms / 1000, UTC)
        month = d.month if self.kind == "month" else 1
        return _ms(d.year, month)

    def end(self, start_ms: int) -> int:
        """Open time of the window after the one opening at ``start_ms``."""
        if self.kind in ("fixed", "week"):
            return start_ms + self.length_ms
        d = datetime.fromtimestamp(start_ms / 1000, UTC)
        if self.kind == "year":
            return _ms(d.year + 1, 1)
        return _ms(d.year + d.month // 12, d.month % 12 + 1)

    def previous(self, start_ms: int) -> int:
        return self.start(start_ms - 1)

    def windows(self, from_ms: int, count: int) -> list[int]:
        """Up to ``count`` window starts, the first being the window containing ``from_ms``."""
        starts = []
        s = self.start(from_ms)
        for _ in range(count):
            starts.append(s)
            s = self.end(s)
        return starts

    def windows_back(self, last_start_ms: int, count: int) -> list[int]:
        """``count`` window starts ending with ``last_start_ms``, oldest first."""
        starts = [last_start_ms]
        for _ in range(count - 1):
            starts.append(self.previous(starts[-1]))
        starts.reverse()
        return starts


def _ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1000


def _fixed(name: str, ms: int) -> Interval:
    return Interval(name, "fixed", ms)


_ALL: dict[str, Interval] = {
    iv.name: iv
    for iv in (
        _fixed("1m", MINUTE_MS),
        _fixed("3m", 3 * MINUTE_MS),
        _fixed("5m", 5 * MINUTE_MS),
        _fixed("15m", 15 * MINUTE_MS),
        _fixed("30m", 30 * MINUTE_MS),
        _fixed("1h", HOUR_MS),
        _fixed("2h", 2 * HOUR_MS),
        _fixed("4h", 4 * HOUR_MS),
        _fixed("6h", 6 * HOUR_MS),
        _fixed("8h", 8 * HOUR_MS),
        _fixed("12h", 12 * HOUR_MS),
        _fixed("1d", DAY_MS),
        _fixed("3d", 3 * DAY_MS),
        Interval("7d", "week", WEEK_MS),
        Interval("1M", "month"),
        Interval("1y", "year"),
    )
}

# Exchange-native interval names → normalised interval. Sub-minute intervals (Binance 1s,
# Gate 1s/10s) are not simulated: the model's finest candle is one minute.
NATIVE: dict[str, dict[str, str]] = {
    "binance": {
        **{n: n for n in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h")},
        **{n: n for n in ("12h", "1d", "3d", "1M")},
        "1w": "7d",
    },
    "gateio": {
        **{n: n for n in ("1m", "5m", "15m", "30m", "1h", "4h", "8h", "1d", "7d")},
        "30d": "1M",
    },
    "huobi": {
        "1min": "1m",
        "5min": "5m",
        "15min": "15m",
        "30min": "30m",
        "60min": "1h",
        "4hour": "4h",
        "1day": "1d",
        "1week": "7d",
        "1mon": "1M",
        "1year": "1y",
    },
}


def native_interval(exchange: str, name: str) -> Interval | None:
    """The interval an exchange calls ``name``, or None if it has no such interval."""
    normalised = NATIVE[exchange].get(name)
    return _ALL[normalised] if normalised else None


def interval(name: str) -> Interval:
    """A normalised interval by name (``1m``, ``1h``, ``7d`` …)."""
    return _ALL[name]

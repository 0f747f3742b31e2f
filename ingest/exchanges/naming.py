"""Symbol and interval names: settings form ↔ each exchange's own ↔ stored form.

Settings use the unified ccxt symbol (``BTC/USDT``) and the seed's intervals
(``1m 5m 15m 30m 1h 4h 1d 7d``). Rows are stored with the compact symbol (``BTCUSDT``).
Going *to* an exchange, an unsupported name is a configuration mistake (``ConfigError``
naming it and the exchange); coming *from* one, an unknown name is a bad frame
(``ParseError``).
"""

from __future__ import annotations

import re
from types import MappingProxyType

from ingest.errors import ConfigError, ParseError
from ingest.settings import INTERVALS, canonical_exchange

_UNIFIED = re.compile(r"([A-Z0-9]{1,20})/([A-Z0-9]{1,20})")

INTERVAL_SECONDS = MappingProxyType({
    "1m": 60, "5m": 300, "15m": 900, "30m": 1800,
    "1h": 3600, "4h": 14400, "1d": 86400, "7d": 604800,
})
assert tuple(INTERVAL_SECONDS) == INTERVALS  # the seed's list is the single source

# seed interval → exchange interval
_TO_NATIVE: dict[str, MappingProxyType[str, str]] = {
    # Binance has no 7d; its week candle 1w opens on Monday 00:00 UTC like Gate's 7d.
    "binance": MappingProxyType({i: i for i in INTERVALS} | {"7d": "1w"}),
    "gateio": MappingProxyType({i: i for i in INTERVALS}),
    "huobi": MappingProxyType({
        "1m": "1min", "5m": "5min", "15m": "15min", "30m": "30min",
        "1h": "60min", "4h": "4hour", "1d": "1day", "7d": "1week",
    }),
}
_FROM_NATIVE = {ex: MappingProxyType({v: k for k, v in m.items()}) for ex, m in _TO_NATIVE.items()}


def _split(unified: str, exchange: str) -> tuple[str, str]:
    m = _UNIFIED.fullmatch(unified)
    if m is None:
        raise ConfigError(
            f"{exchange}: unsupported symbol {unified!r} (expected unified form like 'BTC/USDT')"
        )
    return m.group(1), m.group(2)


def to_native_symbol(exchange: str, unified: str) -> str:
    """``BTC/USDT`` → binance ``BTCUSDT``, gateio ``BTC_USDT``, huobi ``btcusdt``."""
    ex = canonical_exchange(exchange)
    base, quote = _split(unified, ex)
    if ex == "binance":
        return base + quote
    if ex == "gateio":
        return f"{base}_{quote}"
    return (base + quote).lower()


def binance_stream_symbol(unified: str) -> str:
    """``BTC/USDT`` → ``btcusdt``: stream names are lowercase."""
    base, quote = _split(unified, "binance")
    return (base + quote).lower()


def to_compact(unified: str) -> str:
    """``BTC/USDT`` → ``BTCUSDT``, the stored form."""
    base, quote = _split(unified, "symbol")
    return base + quote


# Symbols already checked: a connection carries a few hundred; bounded, cleared when full.
_CHECKED: set[str] = set()
_CHECKED_MAX = 10_000


def check_compact(symbol: str) -> str:
    """A compact symbol taken from a frame: refuse anything that is not one. (This runs on
    every frame: a set lookup for the symbols seen before, string predicates otherwise.)"""
    if symbol in _CHECKED:
        return symbol
    if not (
        2 <= len(symbol) <= 40 and symbol.isascii() and symbol.isalnum() and symbol.isupper()
    ):
        raise ParseError(f"bad symbol {symbol[:40]!r}")
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    _CHECKED.add(symbol)
    return symbol


def native_to_compact(exchange: str, native: str) -> str:
    """``BTCUSDT``/``btcusdt``/``BTC_USDT`` → ``BTCUSDT``. Raises ParseError when the
    result is not a plausible symbol (it comes from a frame)."""
    ex = canonical_exchange(exchange)
    if ex == "gateio":
        base, sep, quote = native.partition("_")
        if not sep or not base or not quote:
            raise ParseError(f"bad gate pair {native[:40]!r}")
        native = base + quote
    return check_compact(native.upper())


def interval_to_native(exchange: str, interval: str) -> str:
    ex = canonical_exchange(exchange)
    try:
        return _TO_NATIVE[ex][interval]
    except KeyError:
        raise ConfigError(
            f"{ex}: unsupported interval {interval!r} (supported: {' '.join(INTERVALS)})"
        ) from None


def interval_from_native(exchange: str, native: str) -> str:
    """Exchange interval → seed interval; ParseError for one we do not store."""
    ex = canonical_exchange(exchange)
    try:
        return _FROM_NATIVE[ex][native]
    except KeyError:
        raise ParseError(f"{ex}: unsupported interval {native[:20]!r}") from None

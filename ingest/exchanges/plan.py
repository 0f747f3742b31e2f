"""What a connector subscribes to: one ``Stream`` per (channel, symbol[, interval]).

Names are checked here, at startup: a symbol that is not a unified ``BASE/QUOTE`` or an
interval the exchange has no stream for raises ``ConfigError`` naming it and the exchange
(the CLI turns that into exit code 2), before any socket is opened.

Stream keys are the connector's own exchange-neutral names (``trade:BTCUSDT``,
``candle:BTCUSDT:1m``, ``book:BTCUSDT``): the watchdog, health and stats use them; each
exchange module maps a stream to its wire subscription.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingest.errors import ConfigError
from ingest.exchanges.naming import interval_to_native, to_compact, to_native_symbol
from ingest.settings import CHANNELS, ExchangeSettings

# Levels each exchange's book channel maintains (a deeper snapshot cannot be served).
MAX_BOOK_DEPTH = {"binance": 1000, "gateio": 100, "huobi": 150}


@dataclass(frozen=True)
class Stream:
    key: str
    channel: str  # trades | candles | book
    symbol: str  # compact, as stored: BTCUSDT
    unified: str  # as configured: BTC/USDT
    native: str  # the exchange's spelling: BTCUSDT / BTC_USDT / btcusdt
    interval: str | None = None  # seed interval: 1m … 7d
    native_interval: str | None = None  # the exchange's: 1m / 1w / 1min …


def stream_key(channel: str, symbol: str, interval: str | None = None) -> str:
    if channel == "trades":
        return f"trade:{symbol}"
    if channel == "candles":
        return f"candle:{symbol}:{interval}"
    return f"book:{symbol}"


def plan_streams(exchange: str, settings: ExchangeSettings, symbols: Sequence[str]) -> list[Stream]:
    """Every stream for ``symbols`` (unified) on ``exchange``, grouped by symbol."""
    for channel in settings.channels:
        if channel not in CHANNELS:
            raise ConfigError(f"{exchange}: unknown channel {channel!r}")
    if "book" in settings.channels and settings.book_depth > MAX_BOOK_DEPTH[exchange]:
        raise ConfigError(
            f"{exchange}: book_depth {settings.book_depth} exceeds the "
            f"{MAX_BOOK_DEPTH[exchange]} levels its book stream maintains"
        )
    natives = {i: interval_to_native(exchange, i) for i in settings.candle_intervals}
    streams: list[Stream] = []
    seen: set[str] = set()
    for unified in symbols:
        native = to_native_symbol(exchange, unified)  # ConfigError names symbol and exchange
        compact = to_compact(unified)
        if compact in seen:
            raise ConfigError(f"{exchange}: symbol {unified!r} is listed twice")
        seen.add(compact)
        for channel in ("trades", "candles", "book"):
            if channel not in settings.channels:
                continue
            if channel == "candles":
                streams.extend(
                    Stream(stream_key(channel, compact, i), channel, compact, unified, native,
                           i, natives[i])
                    for i in settings.candle_intervals
                )
            else:
                streams.append(Stream(stream_key(channel, compact), channel, compact, unified,
                                      native))
    return streams


def chunk(streams: Sequence[Stream], size: int) -> list[list[Stream]]:
    """Split into connections of at most ``size`` streams, in order (a symbol's streams
    stay together unless one symbol alone has more than ``size``)."""
    if size < 1:
        raise ConfigError("max_streams_per_connection must be at least 1")
    groups: list[list[Stream]] = []
    current: list[Stream] = []
    by_symbol: dict[str, list[Stream]] = {}
    for s in streams:
        by_symbol.setdefault(s.symbol, []).append(s)
    for group in by_symbol.values():
        if current and len(current) + len(group) > size:
            groups.append(current)
            current = []
        for s in group:
            if len(current) >= size:
                groups.append(current)
                current = []
            current.append(s)
    if current:
        groups.append(current)
    return groups

"""All streaming connectors of one instance, built from settings.

    connectors = build_feeds(settings, sink, http, recorder=rec, shard=(k, n))
    for c in connectors: await c.check_markets()    # optional: unknown symbols → ConfigError
    ... run each ``c.run()`` in the TaskGroup; on stop ``await c.close()``, then the sink

Sharding: each (exchange, symbol) pair belongs to exactly one of ``n`` shards, chosen by a
stable hash (SHA-1 of ``"exchange:SYMBOL"``, stored names), so every instance, on any
machine and Python version, agrees on the split (``hash()`` is salted per process).

REST budgets: ``install_rest_limiters`` gives the ``HttpClient`` one limiter per exchange
(unless the caller installed its own, e.g. shared with backfill), sized to the exchange's
published limit with 20% headroom and capped by ``rest_requests_per_min`` requests (for
Binance, whose limiter counts request weight, that many depth snapshots of weight 50): a
mass reconnect queues its snapshot requests instead of causing a 429 storm.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence

from ingest.errors import ConfigError
from ingest.exchanges.binance import rest as binance_rest
from ingest.exchanges.binance import stream as binance
from ingest.exchanges.connector import Connector, ConnectorOptions, OnReconnect, RecordSink
from ingest.exchanges.gateio import rest as gate_rest
from ingest.exchanges.gateio import stream as gateio
from ingest.exchanges.huobi import rest as huobi_rest
from ingest.exchanges.huobi import stream as huobi
from ingest.exchanges.naming import to_compact
from ingest.settings import ExchangeSettings, Settings, canonical_exchange
from ingest.transport.http import HttpClient
from ingest.transport.ratelimit import RateLimiter
from ingest.transport.recorder import Recorder

Builder = Callable[..., Connector]
BUILDERS: dict[str, Builder] = {
    "binance": binance.build_connector,
    "gateio": gateio.build_connector,
    "huobi": huobi.build_connector,
}
# Shares of each exchange's published REST budget, per IP: the live book snapshots take
# LIVE_SHARE, gap repair's ccxt client REPAIR_SHARE (backfill_repair), 20 % stays free for
# anything else on the host. The two limiters do not see each other, so their sum is what
# must stay under the limit.
LIVE_SHARE = 0.5
REPAIR_SHARE = 0.3
# (units per window, window seconds) as each exchange publishes them.
_PUBLISHED: dict[str, tuple[float, float]] = {
    "binance": (binance_rest.WEIGHT_PER_MIN, 60.0),
    "gateio": (gate_rest.REQUESTS_PER_10S, 10.0),
    "huobi": (huobi_rest.REQUESTS_PER_MIN, 60.0),
}
# Units one of the connector's requests costs (Binance: a depth snapshot's weight).
_REQUEST_UNITS = {"binance": float(binance_rest.depth_weight(binance_rest.DEPTH_LIMIT))}


def shard_of(exchange: str, symbol: str, n: int) -> int:
    """The shard (0..n-1) of a pair; ``symbol`` unified (``BTC/USDT``) or compact."""
    if n < 1:
        raise ValueError("n must be at least 1")
    compact = to_compact(symbol) if "/" in symbol else symbol.upper()
    key = f"{canonical_exchange(exchange)}:{compact}".encode()
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "big") % n


def shard_symbols(exchange: str, symbols: Sequence[str], shard: tuple[int, int]) -> list[str]:
    k, n = shard
    if not 0 <= k < n:
        raise ConfigError(f"shard {k}/{n}: need 0 <= K < N")
    return [s for s in symbols if shard_of(exchange, s, n) == k]


def rest_limiter(exchange: str, settings: ExchangeSettings) -> RateLimiter:
    limit, window_s = _PUBLISHED[exchange]
    units = _REQUEST_UNITS.get(exchange, 1.0)
    requests = settings.rest_requests_per_min * window_s / 60.0
    per_window = min(limit * LIVE_SHARE, requests * units)
    # A quarter may go at once, the rest refills over the window (burst + refill stays
    # within per_window); the bucket must still hold one request (Binance depth: 50).
    burst = max(units, per_window * 0.25)
    return RateLimiter(per_window * 0.75 / window_s, burst, name=f"{exchange}.rest")


def install_rest_limiters(http: HttpClient, settings: Settings) -> None:
    for exchange, ex in settings.enabled_exchanges().items():
        if http.limiter_for("", exchange) is None:
            http.set_limiter(exchange, rest_limiter(exchange, ex))


def build_feeds(
    settings: Settings,
    sink: RecordSink,
    http: HttpClient,
    *,
    recorder: Recorder | None = None,
    shard: tuple[int, int] = (0, 1),
    on_reconnect: OnReconnect | None = None,
    options: ConnectorOptions | None = None,
) -> list[Connector]:
    """One connector per enabled exchange with at least one symbol in this shard.
    Raises ConfigError (naming the exchange) for a symbol, interval or depth it cannot serve."""
    install_rest_limiters(http, settings)
    connectors = []
    for exchange, ex in settings.enabled_exchanges().items():
        symbols = shard_symbols(exchange, ex.symbols, shard)
        if not symbols:
            continue
        connectors.append(BUILDERS[exchange](
            ex, symbols, sink, http, recorder=recorder, on_reconnect=on_reconnect,
            options=options,
        ))
    return connectors


async def check_feeds(connectors: Sequence[Connector]) -> None:
    """Ask each exchange for its market list, all at once: ConfigError naming symbols it
    does not list. An exchange that cannot be reached is logged and skipped (its streams
    will tell); a slow one does not hold up the others' checks."""
    results = await asyncio.gather(*(c.check_markets() for c in connectors),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    unknown = [str(e) for e in errors if isinstance(e, ConfigError)]
    if unknown:  # every exchange's unknown symbols in one line
        raise ConfigError("; ".join(unknown))
    if errors:
        raise errors[0]


async def run_feeds(connectors: Sequence[Connector], stop_event: asyncio.Event) -> None:
    """Run every connector until ``stop_event``, then close them (bounded by the sockets'
    close timeouts). A connector that fails (a bad URL) fails this task."""
    async with asyncio.TaskGroup() as tg:
        for connector in connectors:
            tg.create_task(connector.run(), name=f"feed.{connector.exchange}")
        await stop_event.wait()
        await asyncio.gather(*(c.close() for c in connectors))

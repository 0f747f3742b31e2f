"""``ingest generate-test-data``: random-walk market data for development and sizing.

    ingest generate-test-data --days 7 [--symbols BTC/USDT ETH/USDT] [--exchange binance]
                              [--seed 42] [--end 2024-06-01] [--quiet]

For every market (exchange x symbol) and the ``--days`` whole UTC days ending at ``--end``
(default: today 00:00 UTC): trades, 1m candles built from those trades, every other
configured interval aggregated from the 1m candles (open = first open, close = last close,
high = max, low = min, volumes and counts summed; only windows wholly inside the range), an
order book snapshot every ``--book-interval-s`` around the last trade price, and one BTC
dominance and one Fear & Greed value per day. Everything goes through the Sink, so the
rows are validated and stored exactly as live data would be.

Prices are integer ticks and quantities integer lots, turned into decimal text with
``Decimal.scaleb`` (never a float). Each market has its own generator seeded from
``(seed, exchange, symbol)``: the same seed and range give identical rows, whatever else
is generated alongside.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ingest.errors import ConfigError
from ingest.exchanges.naming import to_compact
from ingest.logs import get_logger
from ingest.records import BookSnapshot, Candle, MarketMetric, Record, Trade
from ingest.settings import INTERVALS, Settings, canonical_exchange
from ingest.sink.tables import BOOKS
from ingest.sink.writer import MIB

log = get_logger("ingest.testdata")

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WEEK_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday; 7d windows open on Mondays
SPAN_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS, "30m": 30 * MINUTE_MS,
           "1h": 60 * MINUTE_MS, "4h": 240 * MINUTE_MS, "1d": DAY_MS, "7d": 7 * DAY_MS}
# base asset → (start price, price decimals, quantity decimals, max lots per trade)
PROFILES: dict[str, tuple[str, int, int, int]] = {
    "BTC": ("60000", 2, 5, 20_000), "ETH": ("3000", 2, 4, 50_000),
    "BNB": ("550", 2, 3, 20_000), "SOL": ("150", 2, 3, 100_000),
}
DEFAULT_PROFILE = ("1", 4, 2, 100_000)
TABLES = ("candlesticks", "trades", "order_books", "market_metrics")
TABLE_OF: dict[Any, str] = {Candle: "candlesticks", Trade: "trades", BookSnapshot: "order_books",
                            MarketMetric: "market_metrics"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=_positive, default=1, metavar="N",
                        help="whole UTC days to generate, ending at --end (default: 1)")
    parser.add_argument("--symbols", nargs="+", metavar="S",
                        help="unified symbols like BTC/USDT (default: each exchange's configured ones)")
    parser.add_argument("--exchange", metavar="E",
                        help="only this exchange (default: every enabled exchange)")
    parser.add_argument("--seed", type=int, help="random seed; the same seed gives identical rows "
                        "(default: a random one, printed)")
    parser.add_argument("--end", type=_day, metavar="YYYY-MM-DD",
                        help="end of the range, exclusive, 00:00 UTC (default: today)")
    parser.add_argument("--book-interval-s", type=_book_interval, default=300, metavar="S",
                        help="seconds between order book snapshots, a multiple of 60 (default: 300)")
    parser.add_argument("--max-trades-per-minute", type=_positive, default=6, metavar="N",
                        help="trades per minute are drawn from 1..N (default: 6)")
    parser.add_argument("--quiet", action="store_true", help="print nothing")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date YYYY-MM-DD, got {text!r}") from None


def _book_interval(text: str) -> int:
    value = _positive(text)
    if value % 60:
        raise argparse.ArgumentTypeError(f"must be a multiple of 60 seconds, got {value}")
    return value


def dec(units: int, places: int) -> str:
    """``units`` x 10^-places as plain decimal text (``dec(12345, 2) == "123.45"``)."""
    return format(Decimal(units).scaleb(-places), "f")


def to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def window_start(ms: int, interval: str) -> int:
    offset = WEEK_OFFSET_MS if interval == "7d" else 0
    return ms - (ms - offset) % SPAN_MS[interval]


@dataclass
class Agg:
    """OHLCV in integer units: prices in ticks, volume in lots, quote in ticks x lots."""

    start_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote: int = 0
    trades: int = 0

    def add(self, other: Agg) -> None:
        self.high, self.low = max(self.high, other.high), min(self.low, other.low)
        self.close = other.close
        self.volume += other.volume
        self.quote += other.quote
        self.trades += other.trades


@dataclass
class Market:
    exchange: str
    symbol: str  # compact, as stored
    intervals: tuple[str, ...]
    depth: int
    seed: int
    price_places: int = 2
    qty_places: int = 5
    max_lots: int = 1
    price: int = 0  # ticks
    next_trade_id: int = 0
    update_id: int = 0
    rng: random.Random = field(default_factory=random.Random)
    open_windows: dict[str, Agg] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A string seed is hashed with SHA-512 by random.seed: stable across processes.
        self.rng = random.Random(f"{self.seed}:{self.exchange}:{self.symbol}")
        base = next((b for b in PROFILES if self.symbol.startswith(b)), None)
        start, self.price_places, self.qty_places, self.max_lots = PROFILES.get(
            base or "", DEFAULT_PROFILE)
        ticks = int(Decimal(start).scaleb(self.price_places))
        self.price = ticks + self.rng.randint(-ticks // 10, ticks // 10)
        self.next_trade_id = self.rng.randint(10**8, 10**9)
        self.update_id = self.rng.randint(10**9, 10**10)


def _minute(m: Market, minute_ms: int, max_trades: int) -> tuple[Agg, list[Trade]]:
    """One minute of trades on the random walk, and the 1m candle they make."""
    rng, step = m.rng, max(1, m.price // 3000)  # about ±0.03 % per trade
    offsets = sorted(rng.sample(range(MINUTE_MS), rng.randint(1, max_trades)))
    trades: list[Trade] = []
    prices: list[int] = []
    volume = quote = 0
    for offset in offsets:
        m.price = max(1, m.price + rng.randint(-step, step))
        lots = rng.randint(1, m.max_lots)
        prices.append(m.price)
        volume += lots
        quote += m.price * lots
        trades.append(Trade(
            exchange=m.exchange, symbol=m.symbol, trade_id=m.next_trade_id,
            timestamp=to_dt(minute_ms + offset), price=dec(m.price, m.price_places),
            quantity=dec(lots, m.qty_places),
            quote_quantity=dec(m.price * lots, m.price_places + m.qty_places),
            is_buyer_maker=rng.random() < 0.5))
        m.next_trade_id += 1
    agg = Agg(minute_ms, prices[0], max(prices), min(prices), prices[-1], volume, quote,
              len(trades))
    return agg, trades


def _candle(m: Market, interval: str, a: Agg) -> Candle:
    p, q = m.price_places, m.qty_places
    return Candle(exchange=m.exchange, symbol=m.symbol, interval=interval,
                  timestamp=to_dt(a.start_ms), open=dec(a.open, p), high=dec(a.high, p),
                  low=dec(a.low, p), close=dec(a.close, p), volume=dec(a.volume, q),
                  quote_volume=dec(a.quote, p + q), trades_count=a.trades, closed=True)


def _aggregate(m: Market, one: Agg, range_ms: tuple[int, int]) -> list[Candle]:
    """Fold a 1m candle into each longer interval; emit the windows it completes. A window
    is stored only when it lies wholly inside the range (its 1m candles all exist)."""
    out = []
    for interval in m.intervals:
        if interval == "1m":
            continue
        start = window_start(one.start_ms, interval)
        current = m.open_windows.get(interval)
        if current is None or current.start_ms != start:
            current = m.open_windows[interval] = Agg(start, one.open, one.high, one.low,
                                                     one.close, one.volume, one.quote, one.trades)
        else:
            current.add(one)
        end = start + SPAN_MS[interval]
        if one.start_ms + MINUTE_MS == end and start >= range_ms[0] and end <= range_ms[1]:
            out.append(_candle(m, interval, current))
    return out


def _book(m: Market, ts_ms: int) -> BookSnapshot:
    rng, p, q = m.rng, m.price_places, m.qty_places
    gap = max(1, m.price // 20_000)  # level spacing, about 0.005 %
    bids = tuple((dec(m.price - gap * (i + 1), p), dec(rng.randint(1, m.max_lots), q))
                 for i in range(m.depth) if m.price - gap * (i + 1) > 0)
    asks = tuple((dec(m.price + gap * (i + 1), p), dec(rng.randint(1, m.max_lots), q))
                 for i in range(m.depth))
    m.update_id += rng.randint(1, 500)
    return BookSnapshot(exchange=m.exchange, symbol=m.symbol, timestamp=to_dt(ts_ms),
                        bids=bids, asks=asks, last_update_id=m.update_id)


def market_hour(m: Market, hour_ms: int, range_ms: tuple[int, int], *, book_interval_ms: int,
                max_trades: int) -> list[Record]:
    """One hour of one market: trades, candles of every interval, book snapshots."""
    out: list[Record] = []
    for minute_ms in range(hour_ms, hour_ms + HOUR_MS, MINUTE_MS):
        if minute_ms % book_interval_ms == 0:  # the book at the minute's start: last price so far
            out.append(_book(m, minute_ms))
        one, trades = _minute(m, minute_ms, max_trades)
        out.extend(trades)
        if "1m" in m.intervals:
            out.append(_candle(m, "1m", one))
        out.extend(_aggregate(m, one, range_ms))
    return out


_FEAR_GREED_BANDS = ((24, "Extreme Fear"), (46, "Fear"), (54, "Neutral"), (75, "Greed"),
                     (100, "Extreme Greed"))


def metric_days(seed: int, days_ms: list[int]) -> Iterator[MarketMetric]:
    """One BTC dominance (percent, 2 decimals) and one Fear & Greed value (0-100) per day."""
    rng = random.Random(f"{seed}:metrics")
    dominance, fear_greed = rng.randint(4000, 6000), rng.randint(20, 80)
    for day_ms in days_ms:
        dominance = min(9000, max(1000, dominance + rng.randint(-60, 60)))
        fear_greed = min(100, max(0, fear_greed + rng.randint(-8, 8)))
        label = next(name for top, name in _FEAR_GREED_BANDS if fear_greed <= top)
        ts = to_dt(day_ms)
        yield MarketMetric("btc_dominance", ts, dec(dominance, 2),
                           {"source": "generated", "unit": "percent"})
        yield MarketMetric("fear_greed_index", ts, str(fear_greed),
                           {"source": "generated", "classification": label})


def plan_markets(settings: Settings, exchange: str | None, symbols: list[str] | None,
                 seed: int) -> list[Market]:
    """The markets to generate: configured exchanges (or one) x their symbols (or given)."""
    enabled = settings.enabled_exchanges()
    if exchange is not None:
        name = canonical_exchange(exchange)
        chosen = {name: settings.exchanges[name]}
    else:
        chosen = dict(enabled)
    if not chosen:
        raise ConfigError("no exchange enabled in the settings; pass --exchange")
    markets = []
    for name, ex in chosen.items():
        for unified in symbols or ex.symbols:
            if "/" not in unified:
                raise ConfigError(f"--symbols: {unified!r} must be unified form like BTC/USDT")
            intervals = tuple(i for i in INTERVALS if i in ex.candle_intervals)
            markets.append(Market(name, to_compact(unified), intervals, ex.book_depth, seed))
    return markets


def day_range(end: date, days: int) -> tuple[int, int]:
    end_ms = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp() * 1000)
    return end_ms - days * DAY_MS, end_ms


class _Writer:
    """Counts rows per table, and flushes the sink before queued book snapshots could
    reach the writer's memory share: under memory pressure the writer drops the oldest
    snapshots (right for a live feed, wrong for a generator that outpaces the database)."""

    def __init__(self, sink: Any, memory_limit_mb: int) -> None:
        self.sink = sink
        self.counts = dict.fromkeys(TABLES, 0)
        self.book_budget = int(memory_limit_mb * MIB * BOOKS.memory_share / 2)
        self.book_bytes = 0

    async def put(self, records: list[Record]) -> None:
        for r in records:
            self.counts[TABLE_OF[type(r)]] += 1
            if type(r) is BookSnapshot:
                self.book_bytes += BOOKS.estimate_bytes(r)
        await self.sink.put_many(records)
        if self.book_bytes > self.book_budget:
            await self.sink.flush()
            self.book_bytes = 0


async def generate(sink: Any, markets: list[Market], range_ms: tuple[int, int], *, seed: int,
                   book_interval_s: int, max_trades: int,
                   memory_limit_mb: int = 128) -> dict[str, int]:
    """Generate and ``put_many`` hour by hour (memory stays small); counts per table."""
    writer = _Writer(sink, memory_limit_mb)
    for m in markets:
        for hour_ms in range(range_ms[0], range_ms[1], HOUR_MS):
            await writer.put(market_hour(m, hour_ms, range_ms,
                                         book_interval_ms=book_interval_s * 1000,
                                         max_trades=max_trades))
    await writer.put(list(metric_days(seed, list(range(range_ms[0], range_ms[1], DAY_MS)))))
    return writer.counts


async def stored_in_range(pool: Any, markets: list[Market], range_ms: tuple[int, int]) -> list[str]:
    """What the database already holds where the generator would write: generated rows
    must never mix with (or, for candles, replace) real ones."""
    lo, hi = to_dt(range_ms[0]), to_dt(range_ms[1])
    found = []
    async with pool.acquire() as conn:
        for m in markets:
            for table in ("candlesticks", "trades", "order_books"):
                # table names are constants of this module, never input
                hit = await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {table} WHERE exchange = $1 AND symbol = $2 "
                    "AND timestamp >= $3 AND timestamp < $4)", m.exchange, m.symbol, lo, hi)
                if hit:
                    found.append(f"{table} {m.exchange}:{m.symbol}")
        if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM market_metrics WHERE metric_type IN "
                "('btc_dominance', 'fear_greed_index') AND timestamp >= $1 AND timestamp < $2)",
                lo, hi):
            found.append("market_metrics btc_dominance/fear_greed_index")
    return found


def report(counts: dict[str, int], sink_stats: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"{'table':<16} {'generated':>11} {'written':>11} {'already stored':>15}"]
    for table in TABLES:
        s = sink_stats.get(table, {})
        written = s.get("rows_written", 0) + s.get("rows_updated", 0)
        lines.append(f"{table:<16} {counts[table]:>11,} {written:>11,} "
                     f"{s.get('duplicates_skipped', 0):>15,}")
        problems = {k: s[k] for k in ("rows_rejected", "rows_quarantined", "rows_dropped") if s.get(k)}
        if problems:
            lines.append(f"  {table}: " + ", ".join(f"{v} {k.removeprefix('rows_')}"
                                                      for k, v in problems.items()))
    return lines


async def run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: `ingest generate-test-data --help` must not need the database layer.
    from ingest.db.bootstrap import bootstrap
    from ingest.db.local import database_settings
    from ingest.db.pool import connect_with_retry
    from ingest.sink import open_side_sink

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    end = args.end or datetime.now(UTC).date()
    if end > datetime.now(UTC).date() + timedelta(days=1):
        raise ConfigError(f"--end {end} is in the future: the writer refuses rows after now + 1 day")
    markets = plan_markets(settings, args.exchange, args.symbols, seed)
    range_ms = day_range(end, args.days)
    log.info("generating test data", seed=seed, start=to_dt(range_ms[0]).isoformat(),
             end=to_dt(range_ms[1]).isoformat(), markets=[f"{m.exchange}:{m.symbol}" for m in markets])
    async with database_settings(settings) as resolved:
        pool = await connect_with_retry(resolved.database)
        try:
            await bootstrap(pool, resolved)
            stored = await stored_in_range(pool, markets, range_ms)
            if stored:
                raise ConfigError(
                    f"the database already holds rows between {to_dt(range_ms[0]):%Y-%m-%d} and "
                    f"{to_dt(range_ms[1]):%Y-%m-%d} ({', '.join(stored[:4])}"
                    f"{', …' if len(stored) > 4 else ''}): generate-test-data never writes over "
                    "stored data; choose another --end or --symbols, or an empty database")
            sink = await open_side_sink(pool, resolved.writer, "generate-test-data")
            try:
                counts = await generate(sink, markets, range_ms, seed=seed,
                                        book_interval_s=args.book_interval_s,
                                        max_trades=args.max_trades_per_minute,
                                        memory_limit_mb=resolved.writer.memory_limit_mb)
                await sink.flush()
                stats = sink.stats()
            finally:
                await sink.close()
        finally:
            await pool.close()
    if not args.quiet:
        print(f"seed {seed}, {to_dt(range_ms[0]):%Y-%m-%d} .. {to_dt(range_ms[1]):%Y-%m-%d} "
              f"(exclusive), {len(markets)} markets")
        print("\n".join(report(counts, stats)))
    return 0

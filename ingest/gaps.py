"""Finding what is missing from stored history, and filling it through the backfill code.

Candles: every window of the interval grid inside the range (opening at/after the start,
closed by the end) must have a row; the missing ones come from ``generate_series`` over the
grid, merged into runs (``backfill_store.missing_windows``).

Trades: a hole can be seen from ids alone only where the exchange's trade ids are a
contiguous per-market sequence. Which exchanges qualify, for the id we store as trade_id:

- binance: yes. Raw trade ids (``@trade`` ``t``, REST ``id``) count up by one per market.
- gateio: no. We store Gate's ``id``, which is global across markets (the per-market
  ``sequence_id``/``id_market`` is not stored, so that the stream's and REST's rows share a
  key); trade holes on Gate are refilled by time range (``ingest backfill``).
- huobi: no. ``tradeId`` grows but skips; and REST serves only the latest 2000 trades.

Holes before the first or after the last stored trade of the range are not visible from
ids; ``ingest backfill`` over the range fills those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ingest import backfill_store as store
from ingest.backfill_plan import CandleJob, Job, TradeJob, iso, span_ms, window_bounds
from ingest.exchanges.naming import to_compact

TRADE_IDS_CONTIGUOUS = frozenset({"binance"})


@dataclass
class GapReport:
    exchange: str
    symbol: str  # unified
    start_ms: int
    end_ms: int
    candles: dict[str, list[store.CandleGap]] = field(default_factory=dict)  # interval → runs
    trade_ids: list[store.TradeIdGap] | None = None  # None: ids not contiguous here
    trades_checked: bool = True  # False with --no-trades

    @property
    def missing_windows(self) -> int:
        return sum(g.windows for gaps in self.candles.values() for g in gaps)

    @property
    def missing_trades(self) -> int:
        return sum(g.count for g in self.trade_ids or ())

    def jobs(self) -> list[Job]:
        """Backfill jobs that fill exactly these gaps."""
        out: list[Job] = []
        for interval, gaps in self.candles.items():
            span = span_ms(interval)
            out.extend(CandleJob(self.exchange, self.symbol, interval, g.first_open_ms,
                                 g.last_open_ms + span) for g in gaps)
        for g in self.trade_ids or ():
            out.append(TradeJob(self.exchange, self.symbol, g.after_ms, g.before_ms + 1,
                                first_id=g.first_id, last_id=g.last_id))
        return out

    def lines(self) -> list[str]:
        head = f"{self.exchange} {self.symbol} {iso(self.start_ms)} .. {iso(self.end_ms)}"
        out = []
        for interval, gaps in self.candles.items():
            total = sum(g.windows for g in gaps)
            out.append(f"{head} {interval} candles: {total} missing windows in {len(gaps)} runs")
            out.extend(f"  missing {interval} {iso(g.first_open_ms)} .. {iso(g.last_open_ms)} "
                       f"({g.windows} windows)" for g in gaps)
        if not self.trades_checked:
            out.append(f"{head} trades: not checked (--no-trades)")
        elif self.trade_ids is None:
            out.append(f"{head} trades: {self.exchange} trade ids are not contiguous; "
                       "id gaps cannot be listed (use `ingest backfill --trades` over the range)")
        else:
            out.append(f"{head} trades: {self.missing_trades} missing ids in "
                       f"{len(self.trade_ids)} gaps")
            out.extend(f"  missing trade ids {g.first_id} .. {g.last_id} ({g.count}) between "
                       f"{iso(g.after_ms)} and {iso(g.before_ms)}" for g in self.trade_ids)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange, "symbol": self.symbol,
            "start": iso(self.start_ms), "end": iso(self.end_ms),
            "candles": {i: [{"first_open": iso(g.first_open_ms), "last_open": iso(g.last_open_ms),
                             "windows": g.windows} for g in gaps]
                        for i, gaps in self.candles.items()},
            "trade_ids": None if self.trade_ids is None else [
                {"first_id": g.first_id, "last_id": g.last_id, "count": g.count,
                 "after": iso(g.after_ms), "before": iso(g.before_ms)} for g in self.trade_ids],
        }


async def find_gaps(pool: asyncpg.Pool, exchange: str, symbol: str, intervals: list[str],
                    start_ms: int, end_ms: int, *, trades: bool = True) -> GapReport:
    """Missing candle windows per interval and (where ids allow) missing trade ids in
    ``[start_ms, end_ms)``; ``end_ms`` should already be clamped to what can be final."""
    compact = to_compact(symbol)
    report = GapReport(exchange, symbol, start_ms, end_ms, trades_checked=trades)
    for interval in intervals:
        lo, hi = window_bounds(start_ms, end_ms, interval)
        report.candles[interval] = await store.missing_windows(pool, exchange, compact,
                                                               interval, lo, hi)
    if trades and exchange in TRADE_IDS_CONTIGUOUS:
        report.trade_ids = await store.trade_id_gaps(pool, exchange, compact, start_ms, end_ms)
    return report

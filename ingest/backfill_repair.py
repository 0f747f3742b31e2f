"""Gap repair for the running service: refill what a stream missed while it was down.

    repairer = GapRepairer(settings, sink, pool)
    repairer.start()                                   # at startup: every enabled stream
    connector = build_connector(..., on_reconnect=repairer.on_reconnect)
    ...
    await repairer.close()                             # at shutdown, before the sink closes

``on_reconnect(exchange, symbols)`` only schedules: the repair runs in background tasks
(at most ``max_concurrency`` jobs at once across all exchanges, and on a ccxt rate budget of
its own set to half the exchange's limit, so live book resyncs keep headroom), never on the
connector's path. A repair already running for a symbol is not started twice; a reconnect
during it makes it run once more afterwards.

What is repaired, per stream, within ``backfill.gap_repair_lookback_h``:

- candles (each configured interval): every closed window with no stored candle, from the
  oldest candle stored in the lookback (or the lookback's start, when older candles exist)
  to now. Windows before anything was ever stored are not "missed", and are left to
  ``ingest backfill``.
- trades: from the newest trade stored before the reconnect (minus a margin for clock skew)
  to now; Binance continues from that trade's id. Rows the live stream has meanwhile stored
  are absorbed as duplicates by the writer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from ingest import backfill_store as store
from ingest.backfill import SETTLE_MS, Backfiller
from ingest.backfill_plan import CandleJob, Job, TradeJob, span_ms, window_bounds
from ingest.backfill_progress import JobResult
from ingest.exchanges.naming import to_compact
from ingest.feeds import REPAIR_SHARE, shard_symbols
from ingest.logs import get_logger
from ingest.settings import Settings, canonical_exchange
from ingest.sink import Sink

log = get_logger("ingest.backfill.repair")

RECONNECT_MARGIN_MS = 10_000  # trades stamped this close to a reconnect may be post-reconnect
# ccxt's own rateLimit per exchange (ms per cost unit): the exchange's whole budget (Binance
# 1,200 units of weight 5 a minute = 6,000). Gap repair takes feeds.REPAIR_SHARE of it.
_CCXT_RATE_MS = {"binance": 50.0, "gateio": 50.0, "huobi": 100.0}


class GapRepairer:
    def __init__(self, settings: Settings, sink: Sink, pool: asyncpg.Pool, *,
                 clock: Callable[[], float] = time.time, max_concurrency: int = 2,
                 rate_share: float = REPAIR_SHARE, rate_limit_ms: float | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock
        rates = {ex: (rate_limit_ms if rate_limit_ms is not None else ms / rate_share)
                 for ex, ms in _CCXT_RATE_MS.items()}
        # Jobs are exact gap runs (resume=False): no "newest stored" shortcut inside them.
        self.backfiller = Backfiller(settings, sink, pool, clock=clock, rate_limit_ms=rates,
                                     resume=False)
        self._slots = asyncio.Semaphore(max(1, max_concurrency))
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._again: dict[tuple[str, str], float] = {}
        self.results: deque[JobResult] = deque(maxlen=500)
        self.counters = {"repairs": 0, "jobs": 0, "rows": 0, "failed_jobs": 0, "unserved": 0}

    # -- the hooks ---------------------------------------------------------------------

    def on_reconnect(self, exchange: str, symbols: Sequence[str]) -> None:
        """Connector hook: schedule a repair of ``symbols`` (unified) on ``exchange``.
        Returns at once; never raises for a repair's failure (that is logged)."""
        if not self.settings.backfill.gap_repair:
            return
        exchange = canonical_exchange(exchange)
        at = self.clock()
        for symbol in symbols:
            self._schedule((exchange, symbol), at)

    def start(self, shard: tuple[int, int] = (0, 1)) -> None:
        """Schedule a repair of every enabled exchange's configured symbols in this
        instance's ``shard`` (at startup): each pair is repaired by the instance that
        streams it, so N shards do not load the exchanges' history N times."""
        for exchange, es in self.settings.enabled_exchanges().items():
            symbols = shard_symbols(exchange, list(es.symbols), shard)
            if symbols:
                self.on_reconnect(exchange, symbols)

    async def repair_since_last(self, exchange: str, symbols: Sequence[str], *,
                                reconnected_at: float | None = None) -> list[JobResult]:
        """Fill the candles and trades of ``symbols`` missed since each stream's last stored
        row (within the lookback), and wait until they are handed to the writer."""
        exchange = canonical_exchange(exchange)
        at = self.clock() if reconnected_at is None else reconnected_at
        jobs: list[Job] = []
        for symbol in symbols:
            jobs.extend(await self.plan(exchange, symbol, at))
        results = await asyncio.gather(*(self._run(job) for job in jobs))
        self.counters["repairs"] += 1
        return list(results)

    async def plan(self, exchange: str, symbol: str, reconnected_at: float) -> list[Job]:
        """The jobs that would fill what ``symbol``'s streams missed."""
        es = self.backfiller.exchange_settings(exchange)
        now = int(self.clock() * 1000)
        floor = now - int(self.settings.backfill.gap_repair_lookback_h * 3_600_000)
        jobs: list[Job] = []
        if "candles" in es.channels:
            for interval in es.candle_intervals:
                jobs.extend(await self._candle_jobs(exchange, symbol, interval, floor, now))
        if "trades" in es.channels:
            cut = min(int(reconnected_at * 1000) - RECONNECT_MARGIN_MS, now)
            job = await self._trade_job(exchange, symbol, floor, cut, now)
            if job is not None:
                jobs.append(job)
        return jobs

    async def wait_idle(self) -> None:
        """Wait until no scheduled repair is pending or running (tests, shutdown)."""
        while True:
            running = [t for t in self._tasks.values() if not t.done()]
            if not running:
                return
            await asyncio.gather(*running, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self.backfiller.close()

    def stats(self) -> dict[str, Any]:
        running = sum(1 for t in self._tasks.values() if not t.done())
        return {**self.counters, "running": running}

    # -- internals ---------------------------------------------------------------------

    async def _candle_jobs(self, exchange: str, symbol: str, interval: str, floor: int,
                           now: int) -> list[Job]:
        compact, span = to_compact(symbol), span_ms(interval)
        lo, hi = window_bounds(floor, now - SETTLE_MS, interval)
        first = await store.oldest_candle(self.pool, exchange, compact, interval, lo, hi)
        if first is None:
            if await store.newest_candle(self.pool, exchange, compact, interval, 0, lo) is None:
                return []  # never streamed: nothing was missed
            first = lo
        gaps = await store.missing_windows(self.pool, exchange, compact, interval, first, hi)
        return [CandleJob(exchange, symbol, interval, g.first_open_ms, g.last_open_ms + span)
                for g in gaps]

    async def _trade_job(self, exchange: str, symbol: str, floor: int, cut: int,
                         now: int) -> TradeJob | None:
        compact = to_compact(symbol)
        last = await store.newest_trade(self.pool, exchange, compact, floor, max(cut, floor + 1))
        if last is not None:
            return TradeJob(exchange, symbol, last.ts_ms, now, first_id=last.trade_id + 1)
        if await store.newest_trade(self.pool, exchange, compact, 0, floor) is None:
            return None  # never streamed
        return TradeJob(exchange, symbol, floor, now)

    async def _run(self, job: Job) -> JobResult:
        async with self._slots:
            result = await self.backfiller.run_job(job)
        self.results.append(result)
        self.counters["jobs"] += 1
        self.counters["rows"] += result.rows
        self.counters["unserved"] += len(result.unserved)
        if result.error:
            self.counters["failed_jobs"] += 1
        elif result.rows:
            log.info("gap repaired", job=job.describe(), rows=result.rows, pages=result.pages)
        return result

    def _schedule(self, key: tuple[str, str], at: float) -> None:
        task = self._tasks.get(key)
        if task is not None and not task.done():
            self._again[key] = at  # run once more when the current repair ends
            return
        self._tasks[key] = asyncio.create_task(self._worker(key, at),
                                               name=f"gap-repair-{key[0]}-{key[1]}")

    async def _worker(self, key: tuple[str, str], at: float) -> None:
        while True:
            # A window that closed just before the reconnect is not final at the exchange
            # for SETTLE_MS, and the stream dropped its unfinished candle at the disconnect:
            # plan only once it has settled, or it would stay missing until the next repair.
            settle_s = SETTLE_MS / 1000 + 0.25
            await asyncio.sleep(max(0.0, min(settle_s, at + settle_s - self.clock())))
            try:
                await self.repair_since_last(key[0], [key[1]], reconnected_at=at)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a repair must never take the service down
                log.error("gap repair failed", exchange=key[0], symbol=key[1],
                          error=f"{type(exc).__name__}: {exc}"[:500])
            if key not in self._again:
                return
            at = self._again.pop(key)


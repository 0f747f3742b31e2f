"""Backfill: exchange history through ccxt's async REST into the same writer as the stream.

    async with Backfiller(settings, sink, pool) as bf:
        await bf.check(request.targets)            # ConfigError for unknown symbols
        summary = await bf.run(request.jobs(), concurrency=4)

A job is one (exchange, symbol, interval) candle range or one (exchange, symbol) trade
range (see ``backfill_plan``). Jobs are resumable and idempotent: each continues after the
stored run that begins at its start (a rerun, or a run interrupted and started again,
continues from there; rows stored further on, by the live stream, do not move that point,
so the hole before them is fetched), and whatever is fetched twice is absorbed by the
tables' unique keys in the ``Sink``. Paging per exchange lives in ``backfill_sources``; ccxt and its retries in
``backfill_client``; the daemon's gap repair in ``backfill_repair`` (``GapRepairer``); the
``gaps`` command in ``gaps``.

Candles: only windows closed by the range's end (and by now) are stored; paging stops at a
candle the exchange still reports open, so a later run picks it up. Ranges an exchange
cannot serve (HTX trades older than its latest 2000) are logged as warnings and listed in
the summary; the job continues with what can be served.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import asyncpg

from ingest import backfill_store as store
from ingest.backfill_client import ExchangeClient, RetryPolicy
from ingest.backfill_plan import CandleJob, Job, TradeJob, iso, span_ms, to_ms, window_bounds
from ingest.backfill_progress import JobResult, Progress, Summary
from ingest.backfill_sources import Page, Source, source_for
from ingest.errors import IngestError
from ingest.logs import get_logger
from ingest.records import Candle, Record
from ingest.settings import ExchangeSettings, Settings, default_exchanges
from ingest.sink import Sink

log = get_logger("ingest.backfill")

SETTLE_MS = 2_000  # a window is final only this long after it ends (clock skew margin)
_TABLES = ("candlesticks", "trades")
_COUNTERS = ("rows_written", "rows_updated", "duplicates_skipped", "rows_rejected",
             "rows_quarantined", "rows_spooled", "rows_ignored")


def exchange_settings(settings: Settings, exchange: str) -> ExchangeSettings:
    configured = settings.exchanges.get(exchange)
    return configured if configured is not None else default_exchanges()[exchange]


async def open_client(settings: Settings, exchange: str, *, rate_limit_ms: float | None = None,
                      retry: RetryPolicy | None = None) -> ExchangeClient:
    """A ccxt client for ``exchange`` at its configured ``rest_url``, markets loaded."""
    client = ExchangeClient(exchange, exchange_settings(settings, exchange),
                            timeout_s=settings.backfill.request_timeout_s,
                            rate_limit_ms=rate_limit_ms, retry=retry)
    try:
        await client.open()
    except BaseException:
        await client.close()
        raise
    return client


class Backfiller:
    def __init__(self, settings: Settings, sink: Sink, pool: asyncpg.Pool, *,
                 clock: Callable[[], float] = time.time,
                 rate_limit_ms: float | Mapping[str, float] | None = None,
                 progress: Progress | None = None, retry: RetryPolicy | None = None,
                 resume: bool = True, clients: Mapping[str, ExchangeClient] | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self.pool = pool
        self.clock = clock
        self.rate_limit_ms = rate_limit_ms
        self.progress = progress or Progress()
        self.retry = retry
        self.resume = resume
        self._clients: dict[str, ExchangeClient] = dict(clients or {})  # closed by close()
        self._opening: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> Backfiller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def exchange_settings(self, exchange: str) -> ExchangeSettings:
        return exchange_settings(self.settings, exchange)

    async def client(self, exchange: str) -> ExchangeClient:
        """The exchange's ccxt client, markets loaded (built once, on first use)."""
        lock = self._opening.setdefault(exchange, asyncio.Lock())
        async with lock:
            if exchange not in self._clients:
                self._clients[exchange] = await open_client(
                    self.settings, exchange, rate_limit_ms=self._rate_limit_ms(exchange),
                    retry=self.retry)
        return self._clients[exchange]

    def _rate_limit_ms(self, exchange: str) -> float | None:
        if isinstance(self.rate_limit_ms, Mapping):
            return self.rate_limit_ms.get(exchange)
        return self.rate_limit_ms

    async def source(self, exchange: str) -> Source:
        return source_for(await self.client(exchange), self.clock)

    async def check(self, targets: Mapping[str, Sequence[str]]) -> None:
        """ConfigError naming the first symbol an exchange does not list as a spot market."""
        for exchange, symbols in targets.items():
            client = await self.client(exchange)
            for symbol in symbols:
                client.check_symbol(symbol)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # -- running jobs ------------------------------------------------------------------

    async def run(self, jobs: Sequence[Job], concurrency: int = 4) -> Summary:
        """Run ``jobs`` (at most ``concurrency`` at once), wait until the writer has stored
        everything, and summarise. Failed jobs are in the summary; the others complete."""
        started = time.monotonic()
        before = self._table_counts()
        # Clients outlive a run (gap repair, `gaps --repair` runs twice): count this run only.
        known = list(self._clients.values())
        requests_before = sum(c.stats.requests for c in known)
        retries_before = sum(c.stats.retries for c in known)
        limiter_before = sum(c.limiter_s for c in known)
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(job: Job) -> JobResult:
            async with gate:
                return await self.run_job(job)

        async with self.progress:
            results = list(await asyncio.gather(*(one(j) for j in jobs)))
        flush_started = time.monotonic()
        await self.sink.flush()
        flush_s = time.monotonic() - flush_started
        after = self._table_counts()
        clients = list(self._clients.values())
        return Summary(
            results, time.monotonic() - started,
            requests=sum(c.stats.requests for c in clients) - requests_before,
            retries=sum(c.stats.retries for c in clients) - retries_before,
            table_stats={t: {k: after[t][k] - before[t][k] for k in _COUNTERS} for t in _TABLES},
            flush_s=flush_s, limiter_s=sum(c.limiter_s for c in clients) - limiter_before)

    async def run_job(self, job: Job) -> JobResult:
        """One job; a permanent failure is logged and returned (naming exchange, symbol and
        range), never raised, so the other jobs finish."""
        result = JobResult(job)
        key = f"{id(result)}"
        ok = False
        try:
            if isinstance(job, CandleJob):
                await self._candles(job, result, key)
            else:
                await self._trades(job, result, key)
            ok = True
        except IngestError as exc:
            result.error = f"{job.describe()}: {exc}"
            log.error("backfill job failed", job=job.describe(), error=str(exc)[:500])
        finally:
            self.progress.finish(key, ok=ok)
        return result

    async def _candles(self, job: CandleJob, result: JobResult, key: str) -> None:
        span = span_ms(job.interval)
        now = min(job.end_ms, self.now_ms() - SETTLE_MS)
        lo, hi = window_bounds(job.start_ms, now, job.interval)
        if self.resume and hi > lo:
            resume = await store.candle_resume(self.pool, job.exchange, job.compact,
                                               job.interval, lo, hi)
            if resume > lo:
                lo = resume
                result.resumed_from_ms = lo
        self.progress.add(key, job.label, max(0, hi - lo) / span)
        if hi <= lo:
            return
        source = await self.source(job.exchange)
        pages = self._timed(source.candles(job.symbol, job.interval, lo, hi, now), result)
        async with contextlib.aclosing(pages):
            await self._store_candles(pages, result, key, (lo, hi, span))

    async def _store_candles(self, pages: AsyncIterator[Page], result: JobResult, key: str,
                             grid: tuple[int, int, int]) -> None:
        lo, hi, span = grid
        async for page in pages:
            self._unserved(result, page)
            keep: list[Record] = []
            still_open: Candle | None = None
            for c in page.records:
                assert isinstance(c, Candle)
                if lo <= to_ms(c.timestamp) < hi:
                    if not c.closed:
                        still_open = c
                        break
                    keep.append(c)
            await self._put(keep, result)
            self.progress.update(key, (min(page.done_ms, hi) - lo) / span, result.rows)
            if still_open is not None:
                result.note = (f"stopped at {iso(to_ms(still_open.timestamp))}: the exchange "
                               "still reports that candle open")
                return

    async def _trades(self, job: TradeJob, result: JobResult, key: str) -> None:
        source = await self.source(job.exchange)
        if job.first_id is not None and job.last_id is not None:
            self.progress.add(key, job.label, job.last_id - job.first_id + 1)
            pages = self._timed(source.trade_ids(job.symbol, job.first_id, job.last_id), result)
            async with contextlib.aclosing(pages):
                async for page in pages:
                    await self._put(page.records, result)
                    self.progress.update(key, result.rows, result.rows)
            return
        lo, hi = job.start_ms, min(job.end_ms, self.now_ms())
        after_id = None if job.first_id is None else job.first_id - 1
        if self.resume and after_id is None and hi > lo:
            last = await store.trade_resume(self.pool, job.exchange, job.compact, lo, hi,
                                            ids_contiguous=job.exchange == "binance")
            if last is not None:
                lo, after_id = last.ts_ms, last.trade_id
                result.resumed_from_ms = lo
        self.progress.add(key, job.label, max(1, hi - lo))
        if hi <= lo:
            return
        pages = self._timed(source.trades(job.symbol, lo, hi, after_id), result)
        async with contextlib.aclosing(pages):
            async for page in pages:
                self._unserved(result, page)
                await self._put(page.records, result)
                self.progress.update(key, page.done_ms - lo, result.rows)

    async def _timed(self, pages: AsyncGenerator[Page, None],
                     result: JobResult) -> AsyncGenerator[Page, None]:
        """The pages, with the time spent waiting for each added to ``network_s``."""
        async with contextlib.aclosing(pages):
            while True:
                started = time.monotonic()
                try:
                    page = await anext(pages)
                except StopAsyncIteration:
                    return
                finally:
                    result.network_s += time.monotonic() - started
                result.pages += 1
                yield page

    def _unserved(self, result: JobResult, page: Page) -> None:
        for gap in page.unserved:
            log.warning("range not served by the exchange", job=result.job.label,
                        start=iso(gap.start_ms), end=iso(gap.end_ms), reason=gap.reason)
        result.unserved.extend(page.unserved)

    async def _put(self, records: Sequence[Record], result: JobResult) -> None:
        if not records:
            return
        started = time.monotonic()
        await self.sink.put_many(records)
        result.write_s += time.monotonic() - started
        result.rows += len(records)

    def _table_counts(self) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, Any]] = self.sink.stats()
        return {t: {k: int(stats.get(t, {}).get(k, 0)) for k in _COUNTERS} for t in _TABLES}


def __getattr__(name: str) -> Any:
    # GapRepairer lives in backfill_repair (it imports this module); re-exported lazily.
    if name == "GapRepairer":
        from ingest.backfill_repair import GapRepairer

        return GapRepairer
    raise AttributeError(name)

"""One table's queue and its COPY workers.

Records wait in a pending batch that is sealed at ``max_batch_rows`` (or a quarter of the
table's memory share), or by a worker once its oldest row is ``flush_interval_ms`` old.
Queued bytes (estimated per record) never exceed the table's share of ``memory_limit_mb``:

* trades, candles, metrics block the producer while the database is merely slow
  (backpressure); while it is failing, the oldest whole batch goes to the spool instead;
* order-book snapshots never block: the oldest queued snapshots are dropped and counted
  (spooled instead while the database is failing).

A batch is validated and encoded when it is sealed, usually in the producer's turn, so
that CPU work overlaps the COPY the database is running for the previous batch. Workers
take the oldest spooled frame first, then sealed batches, so a table is written in the
order it was accepted. Candles have one worker, so a later correction always wins; trades
have two concurrent COPYs (their rows never replace each other; on two cores this measured
faster than one). Replayed frames are not counted against the memory share: each worker
holds at most one. Failed writes are retried with capped, fully jittered backoff
(tenacity) until they succeed or the sink closes; a retried batch is safe because writes
are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from ingest.errors import WriteError
from ingest.settings import WriterSettings
from ingest.sink.dbwrite import BatchWriter, Outcome, is_transient
from ingest.sink.quarantine import Quarantine
from ingest.sink.spool import FrameRef, Spool
from ingest.sink.stats import TableCounters
from ingest.sink.tables import Prepared, TableSpec, prepare
from ingest.sink.validate import Window, truncate

MIB = 1 << 20
_LOG_SAMPLES = 3  # rejected/quarantined rows shown per batch; the rest are counted


@dataclass(eq=False, slots=True)
class Batch:
    id: int  # 0 for a batch replayed from the spool
    records: list[Any]
    nbytes: int
    spool_ref: FrameRef | None = None
    prepared: Prepared | None = None


class TableWriter:
    def __init__(self, spec: TableSpec, pool: asyncpg.Pool, settings: WriterSettings,
                 spool: Spool, quarantine: Quarantine, clock: Callable[[], datetime],
                 log: Any) -> None:
        self.spec = spec
        self.counters = TableCounters()
        self.quota_bytes = max(1, int(settings.memory_limit_mb * MIB * spec.memory_share))
        self._seal_bytes = max(1, self.quota_bytes // 4)
        self._max_rows = settings.max_batch_rows
        self._interval_s = settings.flush_interval_ms / 1000
        self._retry_max_s = settings.retry_max_s
        self._db = BatchWriter(pool, spec, settings.db_timeout_s)
        self._spool, self._quarantine, self._clock = spool, quarantine, clock
        self._log = log.bind(table=spec.name)
        self._estimate = spec.estimate_bytes
        self._texts: dict[str, str] = {}
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._pending_since = 0.0
        self._ready: deque[Batch] = deque()
        self._inflight: dict[int, Batch] = {}
        self._unfinished: set[int] = set()
        self._spooling = False  # inside an outage whose batches go to disk
        self._replaying = 0
        self._queued_bytes = 0
        self._next_id = 1
        self._work = asyncio.Event()  # a batch is ready, a batch was started, or closing
        self._space = asyncio.Event()  # memory was freed, or the database started failing
        self._progress = asyncio.Event()  # a batch finished
        self._closing_evt = asyncio.Event()
        self._closing = False
        self.unhealthy = False
        self._workers: list[asyncio.Task[None]] = []

    # -- producer side ---------------------------------------------------------------------

    def try_put(self, record: Any) -> bool:
        """Accept without waiting if there is room; False means call ``put_slow``."""
        size = self._estimate(record)
        if self._queued_bytes and self._queued_bytes + size > self.quota_bytes:
            return False
        self._accept(record, size)
        return True

    def take_run(self, records: list[Any], start: int) -> int:
        """Accept the run of same-type records from ``start`` as far as memory allows,
        in slices rather than one by one; returns the index of the first record not taken.
        Only for tables whose records have a fixed size estimate (trades)."""
        size, rtype, n = self.spec.fixed_bytes, self.spec.record_type, len(records)
        i = start
        while i < n:
            room = (self.quota_bytes - self._queued_bytes) // size
            if room <= 0 and self._queued_bytes:
                break
            limit = min(n, i + max(1, min(room, self._max_rows - len(self._pending))))
            j = i
            if self.spec.closed_only:  # an open candle ends the run; put() counts it
                while j < limit and type(records[j]) is rtype and records[j].closed:
                    j += 1
            else:
                while j < limit and type(records[j]) is rtype:
                    j += 1
            if j == i:
                break
            if not self._pending:
                self._pending_since = time.monotonic()
                self._work.set()
            self._pending.extend(records[i:j])
            taken = (j - i) * size
            self._pending_bytes += taken
            self._queued_bytes += taken
            self.counters.rows_accepted += j - i
            self.counters.queue_bytes_peak = max(self.counters.queue_bytes_peak, self._queued_bytes)
            if len(self._pending) >= self._max_rows or self._pending_bytes >= self._seal_bytes:
                self._seal()
            i = j
            if j < limit:  # the run ended (another record type)
                break
        return i

    async def put_slow(self, record: Any) -> None:
        size = self._estimate(record)
        while self._queued_bytes and self._queued_bytes + size > self.quota_bytes:
            if self._closing:
                raise WriteError(f"{self.spec.name}: the sink is closing")
            if self.unhealthy and self._spill_oldest():
                continue
            if self.spec.policy == "drop_oldest":
                if not self._drop_oldest():
                    self._count_dropped([record], "queue full of batches being written")
                    return
                continue
            self.counters.producer_waits += 1
            self._space.clear()
            await self._space.wait()
        if self._closing:
            raise WriteError(f"{self.spec.name}: the sink is closing")
        self._accept(record, size)

    def _accept(self, record: Any, size: int) -> None:
        pending = self._pending
        if not pending:
            self._pending_since = time.monotonic()
            self._work.set()  # a worker starts the age timer
        pending.append(record)
        self._pending_bytes += size
        self._queued_bytes += size
        self.counters.rows_accepted += 1
        if self._queued_bytes > self.counters.queue_bytes_peak:
            self.counters.queue_bytes_peak = self._queued_bytes
        if len(pending) >= self._max_rows or self._pending_bytes >= self._seal_bytes:
            self._seal()

    def _seal(self) -> None:
        if not self._pending:
            return
        batch = Batch(self._next_id, self._pending, self._pending_bytes)
        self._next_id += 1
        self._pending, self._pending_bytes = [], 0
        # Validate and encode now, usually in the producer's turn: that CPU work then
        # overlaps the COPY the database is running for the previous batch.
        batch.prepared = self._prepare(batch.records)
        self._ready.append(batch)
        self._unfinished.add(batch.id)
        self._work.set()

    def _spill_oldest(self) -> bool:
        if not self._ready:
            self._seal()
        if not self._ready:
            return False
        batch = self._ready.popleft()
        self._spill(batch)
        self._finish(batch)
        return True

    def _drop_oldest(self) -> bool:
        if self._ready:
            batch = self._ready.popleft()
            self._finish(batch)
            self._count_dropped(batch.records, "memory limit: oldest queued batch")
            return True
        if not self._pending:
            return False
        k = max(1, len(self._pending) // 4)
        dropped, self._pending = self._pending[:k], self._pending[k:]
        freed = sum(map(self._estimate, dropped))
        self._pending_bytes -= freed
        self._release(freed)
        self._count_dropped(dropped, "memory limit: oldest pending snapshots")
        return True

    def _count_dropped(self, records: Sequence[Any], why: str) -> None:
        # A drop is data loss (book snapshots only, by design): an ERROR with exact counts
        # and the time range, never silent.
        self.counters.rows_dropped += len(records)
        stamps = [r.timestamp for r in records]
        self._log.error("rows dropped", rows=len(records), reason=why,
                        first_ts=min(stamps).isoformat() if stamps else None,
                        last_ts=max(stamps).isoformat() if stamps else None)

    def _release(self, nbytes: int) -> None:
        self._queued_bytes -= nbytes
        self._space.set()

    def _finish(self, batch: Batch) -> None:
        if batch.spool_ref is None:
            self._release(batch.nbytes)
            self._unfinished.discard(batch.id)
        else:
            self._replaying -= 1
        self._progress.set()

    def _spill(self, batch: Batch) -> None:
        """Put a batch (validated first, so the spool holds only storable rows) on disk."""
        prepared = batch.prepared
        if prepared is None:
            prepared = self._prepare(batch.records)
        if prepared.records and self._spool.append(self.spec.name, prepared.records):
            if not self._spooling:
                # Once per outage, so operators see the spool start filling.
                self._log.warning("spooling batches to disk: the database is not keeping up",
                                  spool_bytes=self._spool.total_bytes)
            self._spooling = True
            self.counters.rows_spooled += len(prepared.records)

    # -- worker side -----------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.spec.concurrency):
            task = asyncio.create_task(self._worker(), name=f"sink-{self.spec.name}-{i}")
            self._workers.append(task)

    async def _worker(self) -> None:
        while True:
            batch = await self._take()
            if batch is None:
                return
            if batch.spool_ref is None:
                self._inflight[batch.id] = batch
            try:
                await self._process(batch)  # cancelled at the close deadline: close() spools it
            except Exception:  # a bug in here must cost neither the rows nor the worker
                self._log.exception("writer error; the batch goes to the spool")
                if batch.spool_ref is None:
                    self._spill(batch)
            self._inflight.pop(batch.id, None)
            self._finish(batch)

    async def _take(self) -> Batch | None:
        while True:
            if self._closing and self.unhealthy:
                self._seal()
                while self._spill_oldest():
                    pass
                return None
            if not self._closing and self._spool.has_frames(self.spec.name):
                got = self._spool.read_next(self.spec.name)
                if got is not None:
                    self._replaying += 1
                    return Batch(0, got[1], 0, spool_ref=got[0])
            if self._ready:
                return self._ready.popleft()
            due: float | None = None
            if self._pending:
                due = self._pending_since + self._interval_s - time.monotonic()
                if due <= 0 or self._closing:
                    self._seal()
                    continue
            elif self._closing:
                return None
            self._work.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due):
                    await self._work.wait()

    def _prepare(self, records: list[Any]) -> Prepared:
        prepared = prepare(self.spec, records, Window(self._clock(), self._texts))
        if prepared.rejected:
            self.counters.rows_rejected += len(prepared.rejected)
            self._log.warning("rows rejected before COPY", rows=len(prepared.rejected),
                              samples=[f"{reason}: {truncate(rec)}"
                                       for rec, reason in prepared.rejected[:_LOG_SAMPLES]])
        self.counters.duplicates_skipped += prepared.in_batch_duplicates
        return prepared

    async def _process(self, batch: Batch) -> None:
        started = time.monotonic()
        prepared = batch.prepared or self._prepare(batch.records)
        batch.prepared = prepared
        try:
            outcome = await self._write_retrying(prepared)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_transient(exc):  # given up because the sink is closing
                if batch.spool_ref is None:
                    self._spill(batch)
                return  # a replayed frame stays in the spool for the next start
            self._log.exception("batch failed on an unexpected error; its rows are quarantined",
                                rows=len(prepared.records))
            outcome = Outcome(quarantined=[(r, f"unexpected {type(exc).__name__}: {exc}"[:300])
                                           for r in prepared.records])
        self._record(outcome, len(batch.records) if batch.spool_ref else 0)
        if batch.spool_ref is not None:
            self._spool.ack(batch.spool_ref)
        self.counters.latency.observe(time.monotonic() - started)

    def _record(self, outcome: Outcome, replayed: int) -> None:
        c = self.counters
        c.rows_written += outcome.inserted
        self._spooling = False
        c.rows_updated += outcome.updated
        c.duplicates_skipped += outcome.duplicates
        c.rows_replayed += replayed
        c.batches += 1
        c.merged_batches += outcome.merged
        if outcome.quarantined:
            c.rows_quarantined += len(outcome.quarantined)
            self._log.error("rows quarantined: the database refused them",
                            rows=len(outcome.quarantined), file=str(self._quarantine.path),
                            samples=[f"{reason}: {truncate(rec)}"
                                     for rec, reason in outcome.quarantined[:_LOG_SAMPLES]])
            self._quarantine.write(self.spec.name, outcome.quarantined)

    async def _write_retrying(self, prepared: Prepared) -> Outcome:
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            # Full jitter: uniform in [0, min(cap, 0.05 * 2^n)] seconds.
            wait=wait_random_exponential(multiplier=0.05, max=self._retry_max_s),
            stop=lambda _state: self._closing,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        outcome = Outcome()
        async for attempt in retrying:
            with attempt:
                outcome = await self._db.write(prepared)
        if self.unhealthy:
            self.unhealthy = False
            self._log.info("database writes recovered")
        return outcome

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing_evt.wait()  # closing cuts the backoff short

    def _before_sleep(self, state: RetryCallState) -> None:
        self.counters.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        self._log.warning("database write failed; retrying", attempt=state.attempt_number,
                          error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                          retry_in_s=round(state.upcoming_sleep, 3))
        if not self.unhealthy:
            self.unhealthy = True
            self._space.set()  # blocked producers may now spill to the spool

    # -- flush, close, stats ---------------------------------------------------------------

    async def flush(self) -> None:
        self._seal()
        target = self._next_id - 1
        while (any(i <= target for i in self._unfinished) or self._replaying
               or self._spool.has_frames(self.spec.name)):
            self._progress.clear()
            await self._progress.wait()

    def begin_close(self) -> None:
        self._closing = True
        self._seal()
        for event in (self._closing_evt, self._work, self._space, self._progress):
            event.set()

    async def join(self) -> None:
        await asyncio.gather(*self._workers, return_exceptions=True)

    def cancel(self) -> None:
        for task in self._workers:
            task.cancel()

    def spill_leftovers(self) -> int:
        """At the close deadline: batches not known to be written go to the spool."""
        self._seal()
        batches = [*self._inflight.values(), *self._ready]
        self._inflight.clear()
        self._ready.clear()
        for batch in batches:
            self._spill(batch)
            self._finish(batch)
        return sum(len(b.records) for b in batches)

    def stats(self) -> dict[str, Any]:
        out = self.counters.as_dict()
        name = self.spec.name
        out["rows_dropped"] += self._spool.dropped_rows[name]
        queued = (len(self._pending) + sum(len(b.records) for b in self._ready)
                  + sum(len(b.records) for b in self._inflight.values()))
        out.update(queue_rows=queued, batches_in_flight=len(self._inflight), queue_bytes=self._queued_bytes,
                   queue_limit_bytes=self.quota_bytes, spool_bytes=self._spool.table_bytes(name),
                   spool_rows=self._spool.table_rows(name),
                   spool_torn_frames=self._spool.torn_frames[name], healthy=not self.unhealthy)
        return out

"""The one writer: every market-data record goes through a ``Sink``.

    sink = Sink(pool, settings.writer)
    await sink.start()                 # opens the spool; replays what a previous run left
    await sink.put(trade)              # or put_many(records); may wait (backpressure)
    await sink.flush()                 # everything accepted so far is stored
    await sink.close()                 # within shutdown_budget_s; the rest goes to the spool

Records are routed by type to one ``TableWriter`` per table (candlesticks, trades,
order_books, market_metrics); see ``writer`` for queueing and ``dbwrite`` for how a batch is
written. Guarantees: a row accepted by ``put`` is stored exactly once, or is in the spool
(replayed at the next start), or was dropped with an ERROR log line and a counter
(``rows_dropped``: order books under memory pressure, the spool cap). Rows the database
cannot store are rejected (validation) or quarantined (database error), logged and counted.

Candles: only closed candles are stored (open ones are counted as ``rows_ignored``). A closed
candle that arrives again with different values replaces the stored one (an exchange's
late correction, or a backfill that knows better); an identical one is skipped as a
duplicate. Later wins: within a batch, and across batches because a table's batches are
written in the order they were accepted, spool replay included.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from ingest.errors import WriteError
from ingest.logs import get_logger
from ingest.records import Candle, Record
from ingest.settings import WriterSettings
from ingest.sink.quarantine import Quarantine
from ingest.sink.spool import Spool
from ingest.sink.tables import SPECS, TableSpec
from ingest.sink.writer import MIB, TableWriter

_SUMMARY_KEYS = ("rows_written", "rows_updated", "duplicates_skipped", "rows_rejected",
                 "rows_quarantined", "rows_spooled", "rows_replayed", "rows_dropped", "retries",
                 "batches", "queue_rows", "queue_bytes", "spool_bytes")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Sink:
    def __init__(self, pool: asyncpg.Pool, settings: WriterSettings, *,
                 clock: Callable[[], datetime] = utc_now,
                 specs: Iterable[TableSpec] = SPECS) -> None:
        self._settings = settings
        self._log = get_logger("ingest.sink")
        specs = tuple(specs)
        spool_dir = Path(settings.spool_dir)
        self._spool = Spool(spool_dir, settings.spool_max_mb * MIB,
                            {s.name: s.record_type for s in specs}, self._log)
        self._quarantine = Quarantine(spool_dir / "quarantine.jsonl", self._log)
        self._writers = {s.name: TableWriter(s, pool, settings, self._spool, self._quarantine,
                                             clock, self._log) for s in specs}
        self._routes = {w.spec.record_type: w for w in self._writers.values()}
        self._state = "new"
        self._stats_task: asyncio.Task[None] | None = None

    @property
    def spool_dir(self) -> Path:
        return self._spool.directory

    async def __aenter__(self) -> Sink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open (and lock) the spool and start the writers. Frames left by a previous
        process are replayed first, in order, as soon as the database answers."""
        if self._state != "new":
            raise WriteError(f"sink cannot start: it is {self._state}")
        self._spool.open()
        if self._spool.total_bytes:
            self._log.info("spool: replaying what a previous run left", dir=str(self.spool_dir),
                           bytes=self._spool.total_bytes,
                           rows={t: self._spool.table_rows(t) for t in self._writers})
        for writer in self._writers.values():
            writer.start()
        self._stats_task = asyncio.create_task(self._log_stats(), name="sink-stats")
        self._state = "running"

    def _route(self, record: Record) -> TableWriter | None:
        writer = self._routes.get(type(record))
        if writer is None:
            raise TypeError(f"the sink stores Candle, Trade, BookSnapshot and MarketMetric, "
                            f"not {type(record).__name__}")
        if self._state != "running":
            raise WriteError(f"sink is {self._state}: {type(record).__name__} not accepted")
        if type(record) is Candle and not record.closed:
            writer.counters.rows_ignored += 1
            return None
        return writer

    async def put(self, record: Record) -> None:
        """Accept one record. Waits while its table's memory share is full and the database
        is slow; raises WriteError once the sink is closing."""
        writer = self._route(record)
        if writer is not None and not writer.try_put(record):
            await writer.put_slow(record)

    async def put_many(self, records: Iterable[Record]) -> None:
        """Like ``put`` for each record, in order; cheaper per record."""
        items = records if isinstance(records, list) else list(records)
        step = max(1, self._settings.max_batch_rows)
        i, n = 0, len(items)
        while i < n:
            stop = min(n, i + step)
            i += self.offer(items[i:stop])
            if i < stop:  # no room for items[i]: wait for it (backpressure), then go on
                writer = self._route(items[i])
                assert writer is not None  # offer() stops only at a record it could route
                await writer.put_slow(items[i])
                i += 1
            else:
                await asyncio.sleep(0)  # let a worker start the COPY of a batch just sealed

    def offer(self, records: list[Record]) -> int:
        """Accept records in order for as long as memory allows without waiting; returns how
        many were taken (``len(records)``: all). The rest go through ``put_many``, which
        waits. The read loops' fast path: no coroutine per frame when there is room."""
        i, n = 0, len(records)
        while i < n:
            record = records[i]
            writer = self._route(record)
            if writer is None:
                i += 1
                continue
            j = writer.take_run(records, i) if writer.spec.fixed_bytes else i
            if j == i:
                if not writer.try_put(record):
                    return i
                j = i + 1
            i = j
        return n

    async def flush(self) -> None:
        """Wait until every record accepted so far is in the database (or was spooled
        because the database was failing and memory was full), and the spool is replayed.
        While the database is down this waits: it is backpressure, like ``put``."""
        if self._state != "running":
            raise WriteError(f"sink cannot flush: it is {self._state}")
        await asyncio.gather(*(w.flush() for w in self._writers.values()))

    async def close(self) -> None:
        """Stop intake, write what is queued, and return within ``shutdown_budget_s``.
        Batches not known to be written by then (queued, or cut off mid-COPY) are spooled
        and replayed at the next start; idempotent keys absorb any that did commit."""
        if self._state in ("closing", "closed"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        loop = asyncio.get_running_loop()
        budget_s = self._settings.shutdown_budget_s
        reserve_s = min(2.0, budget_s * 0.25)  # for cancelling COPYs and writing the spool
        deadline = loop.time() + budget_s - reserve_s
        writers = list(self._writers.values())
        for w in writers:
            w.begin_close()
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.gather(*(w.join() for w in writers))
        except TimeoutError:
            for w in writers:
                w.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(reserve_s / 2):
                    await asyncio.gather(*(w.join() for w in writers))
        spilled = sum(w.spill_leftovers() for w in writers)
        self._spool.close()
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        self._state = "closed"
        self._log.info("sink closed", spooled_at_close=spilled, spool_bytes=self._spool.total_bytes,
                       tables=self._summary())

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters and gauges per table (see ``stats.TableCounters`` for their meaning)."""
        return {name: w.stats() for name, w in self._writers.items()}

    def _summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, s in self.stats().items():
            row = {k: s[k] for k in _SUMMARY_KEYS}
            if s["flush_latency_count"]:
                avg_s = s["flush_latency_sum_s"] / s["flush_latency_count"]
                row["flush_latency_avg_s"] = round(avg_s, 4)
                row["flush_latency_max_s"] = s["flush_latency_max_s"]
            out[name] = row
        return out

    async def _log_stats(self) -> None:
        while True:
            await asyncio.sleep(self._settings.stats_interval_s)
            self._log.info("sink stats", tables=self._summary())


SIDE_SPOOL_SLOTS = 4


async def open_side_sink(pool: asyncpg.Pool, settings: WriterSettings, name: str) -> Sink:
    """A started Sink whose spool is ``<spool_dir>/<name>`` (or ``<name>.1`` … when another
    process holds that one), for commands that run beside the service: the service holds
    the main spool directory, and two spools must never share a directory."""
    base = Path(settings.spool_dir) / name
    for slot in range(SIDE_SPOOL_SLOTS):
        spool = base if slot == 0 else base.with_name(f"{name}.{slot}")
        sink = Sink(pool, dataclasses.replace(settings, spool_dir=str(spool)))
        try:
            await sink.start()
            return sink
        except WriteError:
            if slot == SIDE_SPOOL_SLOTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover

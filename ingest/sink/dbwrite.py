"""One batch into one table: COPY fast path, idempotent merge, poison-row isolation.

    COPY rows ──ok──────────────────────────────────────────► inserted
       │ UniqueViolation (some keys already stored)
       ▼
    BEGIN; CREATE TEMP TABLE (columns listed) ON COMMIT DROP; COPY into it;
    INSERT … SELECT … ON CONFLICT …; COMMIT ───────────────► inserted / updated / skipped
       │ data error (CHECK, NUMERIC overflow, bad JSON …) on either path
       ▼
    split in halves and write each the same way; a single failing row is quarantined.

After a unique violation the next batches go straight to the merge (a replay or a
reconnect overlap usually spans several batches) until one finds no duplicates.

Every database call runs under an outer ``asyncio.timeout`` (asyncpg's own ``timeout=`` did
not stop a COPY to a server that stopped answering). Connection and timeout errors are left
to the caller, which retries the whole batch: already stored rows then come back as
duplicates and are skipped, so a retry never stores a row twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from ingest.records import Record
from ingest.sink.tables import Prepared, TableSpec

T = TypeVar("T")

# SQLSTATE classes 22 (data exception), 23 (integrity constraint violation) and 54 (a
# limit such as index row size) are about the rows, not the connection: halving finds
# the row. 23505 (unique) is handled apart.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,  # e.g. one row's index entry too large
)


def is_data_error(exc: BaseException) -> bool:
    return isinstance(exc, DATA_ERRORS) and not isinstance(exc, asyncpg.UniqueViolationError)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the database may answer differently later.

    Anything from the server or the socket that is not about the rows themselves: lost
    connections, refused connections, timeouts, a server starting up or shutting down, too
    many connections, a full disk, a missing table while migrations run."""
    if is_data_error(exc) or isinstance(exc, asyncpg.UniqueViolationError):
        return False
    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError)


@dataclass(slots=True)
class Outcome:
    inserted: int = 0
    updated: int = 0
    duplicates: int = 0
    merged: bool = False  # the batch went through the staging table
    quarantined: list[tuple[Record, str]] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.duplicates += other.duplicates
        self.merged = self.merged or other.merged
        self.quarantined.extend(other.quarantined)


async def _source(payload: bytes) -> Any:
    # The payload is fully built before COPY starts: a generator that raises inside COPY
    # can hang asyncpg (reliability.md).
    yield payload


class BatchWriter:
    """Writes prepared batches of one table through the pool."""

    def __init__(self, pool: asyncpg.Pool, spec: TableSpec, timeout_s: float) -> None:
        self._pool = pool
        self._spec = spec
        self._timeout_s = timeout_s
        # After a batch met stored keys, the next ones likely will too (a replay or a
        # reconnect overlap): go straight to the merge until one finds no duplicates.
        self.prefer_merge = False

    async def write(self, batch: Prepared) -> Outcome:
        return await self._write_range(batch, 0, len(batch.lines))

    async def _write_range(self, batch: Prepared, start: int, stop: int) -> Outcome:
        if start >= stop:
            return Outcome()
        payload = batch.payload(start, stop)
        rows = stop - start
        try:
            if not self.prefer_merge:
                try:
                    await self._copy(payload)
                    return Outcome(inserted=rows)
                except asyncpg.UniqueViolationError:
                    self.prefer_merge = True
            inserted, updated = await self._merge(payload)
        except DATA_ERRORS as exc:
            if isinstance(exc, asyncpg.UniqueViolationError):  # cannot happen after merge
                raise
            return await self._isolate(batch, start, stop, exc)
        duplicates = rows - inserted - updated
        if duplicates == 0:
            self.prefer_merge = False
        return Outcome(inserted=inserted, updated=updated, duplicates=duplicates, merged=True)

    async def _isolate(self, batch: Prepared, start: int, stop: int, exc: BaseException) -> Outcome:
        if stop - start == 1:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return Outcome(quarantined=[(batch.records[start], reason)])
        mid = (start + stop) // 2
        out = await self._write_range(batch, start, mid)
        out.add(await self._write_range(batch, mid, stop))
        return out

    async def _with_connection(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``op`` on a pooled connection, all of it under the outer timeout.

        A connection cut off mid-operation (timeout, cancellation, socket error) is
        terminated before it goes back: its state is unknown, and asyncpg's own release
        would first send a cancel request, which hangs on a server that stopped answering.
        """
        conn: asyncpg.Connection | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                conn = await self._pool.acquire()
                result = await op(conn)
        except BaseException as exc:
            if conn is not None:
                if not isinstance(exc, asyncpg.PostgresError):
                    conn.terminate()
                await self._release(conn)
            raise
        await self._release(conn)
        return result

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._pool.release(conn)
        except (TimeoutError, OSError, asyncpg.InterfaceError, asyncpg.PostgresError):
            conn.terminate()

    async def _copy(self, payload: bytes) -> None:
        spec = self._spec

        async def op(conn: asyncpg.Connection) -> None:
            await conn.copy_to_table(spec.name, source=_source(payload),
                                     columns=list(spec.columns), format="text")

        await self._with_connection(op)

    async def _merge(self, payload: bytes) -> tuple[int, int]:
        spec = self._spec

        async def op(conn: asyncpg.Connection) -> tuple[int, int]:
            async with conn.transaction():
                await conn.execute(spec.stage_ddl)
                await conn.copy_to_table(spec.stage_table, source=_source(payload),
                                         columns=list(spec.columns), format="text")
                row = await conn.fetchrow(spec.merge_sql)
            assert row is not None
            return int(row[0]), int(row[1])

        return await self._with_connection(op)

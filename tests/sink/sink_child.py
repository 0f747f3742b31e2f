"""A small process around a Sink, for the kill/terminate tests (run as a script).

    sink_child.py spool  DSN SPOOL_DIR   database unreachable: accept trades until some are
                                         spooled, report, then idle until killed
    sink_child.py stream DSN SPOOL_DIR   write trades as fast as possible; on SIGTERM close
                                         the sink and report what was accepted; exit 0

Reports are JSON lines on stdout; logs go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asyncpg

from ingest.errors import WriteError
from ingest.logs import configure
from ingest.records import Trade
from ingest.settings import WriterSettings
from ingest.sink import Sink

BASE = datetime(2024, 3, 1, tzinfo=UTC)


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def chunk(start: int, n: int) -> list[Trade]:
    return [Trade("binance", "BTCUSDT", i, BASE + timedelta(milliseconds=i), "42000.5", "0.5",
                  None, False) for i in range(start, start + n)]


async def spool_mode(dsn: str, spool_dir: str) -> None:
    settings = WriterSettings(max_batch_rows=200, memory_limit_mb=1, spool_dir=spool_dir,
                              db_timeout_s=1, retry_max_s=0.2, flush_interval_ms=20)
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    sink = Sink(pool, settings)
    await sink.start()
    start = 0
    while sink.stats()["trades"]["rows_spooled"] < 5000:
        await sink.put_many(chunk(start, 500))
        start += 500
    stats = sink.stats()["trades"]
    report(accepted=stats["rows_accepted"], spooled=stats["rows_spooled"])
    await asyncio.Event().wait()  # idle with data in the spool until SIGKILL


async def stream_mode(dsn: str, spool_dir: str) -> None:
    settings = WriterSettings(max_batch_rows=2000, memory_limit_mb=32, spool_dir=spool_dir,
                              shutdown_budget_s=3.0, db_timeout_s=10, retry_max_s=0.5)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    sink = Sink(pool, settings)
    await sink.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def produce() -> None:
        start = 0
        with contextlib.suppress(WriteError):  # the sink closed under us: expected
            while True:
                await sink.put_many(chunk(start, 1000))
                start += 1000
                if start == 20_000:
                    report(ready=True)

    producer = asyncio.create_task(produce())
    await stop.wait()
    await sink.close()
    await producer
    stats = sink.stats()["trades"]
    report(accepted=stats["rows_accepted"], written=stats["rows_written"],
           spooled=stats["rows_spooled"])
    await pool.close()


def main() -> None:
    configure(level="WARNING", fmt="json", stream=sys.stderr)
    mode, dsn, spool_dir = sys.argv[1:4]
    runner = spool_mode if mode == "spool" else stream_mode
    asyncio.run(runner(dsn, spool_dir))


if __name__ == "__main__":
    main()

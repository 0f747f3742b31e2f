"""Whole processes: SIGKILL with data in the spool, SIGTERM during heavy writes."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from ingest.db.embedded import free_port
from ingest.records import Trade
from ingest.settings import WriterSettings
from ingest.sink import Sink
from ingest.sink.spool import Spool

from .conftest import settings_with

CHILD = Path(__file__).with_name("sink_child.py")


async def spawn(mode: str, dsn: str, spool_dir: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), mode, dsn, str(spool_dir),
        stdout=asyncio.subprocess.PIPE, stderr=log.open("wb"))


async def read_report(proc: asyncio.subprocess.Process, timeout_s: float = 60) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        line = await proc.stdout.readline()
    assert line, "the child exited without reporting"
    report: dict[str, Any] = json.loads(line)
    return report


async def stored(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT count(*), count(DISTINCT trade_id) FROM trades")
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_sigkill_with_data_in_the_spool_is_replayed_at_next_start(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings,
        tmp_path: Path) -> None:
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"  # nothing listens there
    spool_dir = Path(writer_settings.spool_dir)
    proc = await spawn("spool", dead, spool_dir, tmp_path / "child.log")
    report = await read_report(proc)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert report["spooled"] >= 5000

    async with Sink(pool, writer_settings) as sink:  # start() finds the spool
        await sink.flush()
        stats = sink.stats()["trades"]
    assert await stored(schema_db) == (report["spooled"], report["spooled"])
    assert stats["rows_replayed"] == stats["rows_written"] == report["spooled"]
    assert stats["duplicates_skipped"] == 0
    assert not list(spool_dir.glob("*.seg"))


async def test_sigterm_during_heavy_writes_exits_within_budget_losing_nothing(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings,
        tmp_path: Path) -> None:
    spool_dir = Path(writer_settings.spool_dir)
    proc = await spawn("stream", schema_db, spool_dir, tmp_path / "child.log")
    assert (await read_report(proc))["ready"]
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(3.0 + 10):  # budget 3 s; the slack absorbs a loaded machine
        final = await read_report(proc)
        assert await proc.wait() == 0
    accepted = final["accepted"]
    in_db, _ = await stored(schema_db)
    spool = Spool(spool_dir, 1 << 30, {"trades": Trade}, structlog.get_logger())
    spool.open()
    in_spool = spool.table_rows("trades")
    spool.close()
    assert in_db + in_spool >= accepted  # stored or spooled (a cut-off COPY may be both)

    async with Sink(pool, settings_with(writer_settings)) as sink:  # replay the rest
        await sink.flush()
    assert await stored(schema_db) == (accepted, accepted)

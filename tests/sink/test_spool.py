"""The on-disk spool on its own: frames, torn frames, the cap's drop order, the lock."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from structlog.testing import capture_logs

from ingest.errors import WriteError
from ingest.records import BookSnapshot, Trade
from ingest.settings import WriterSettings
from ingest.sink import Sink
from ingest.sink.spool import HEADER, Spool

from .conftest import book, count, trades

TYPES = {"trades": Trade, "order_books": BookSnapshot}


def open_spool(directory: Path, max_bytes: int = 10 << 20) -> Spool:
    spool = Spool(directory, max_bytes, TYPES, structlog.get_logger())
    spool.open()
    return spool


def drain(spool: Spool, table: str = "trades") -> list[list[object]]:
    out = []
    while (got := spool.read_next(table)) is not None:
        out.append(got[1])
        spool.ack(got[0])
    return out


def test_frames_round_trip_in_order_and_segments_are_deleted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    batches = [trades(i * 100, i * 100 + 100) for i in range(5)]
    for b in batches:
        assert spool.append("trades", b)
    assert spool.table_rows("trades") == 500
    spool.close()
    again = open_spool(tmp_path)  # a new process finds them
    assert drain(again) == batches
    assert again.total_bytes == 0
    assert not list(tmp_path.glob("*.seg"))
    again.close()


def test_torn_final_frame_is_counted_not_fatal(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.append("trades", trades(0, 100))
    spool.append("trades", trades(100, 200))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-37])  # the crash hit mid-write of the second frame
    again = open_spool(tmp_path)
    assert again.torn_frames["trades"] == 1
    assert drain(again) == [trades(0, 100)]
    again.close()


def test_corrupt_frame_is_detected_by_checksum(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(3):
        spool.append("trades", trades(i * 10, i * 10 + 10))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    frame_len = len(data) // 3
    data[frame_len + HEADER.size + 5] ^= 0xFF  # flip a byte inside the second body
    segment.write_bytes(bytes(data))
    again = open_spool(tmp_path)
    with capture_logs() as logs:
        got = drain(again)
    assert got == [trades(0, 10), trades(20, 30)]
    assert again.torn_frames["trades"] == 1
    assert again.dropped_rows["trades"] == 10
    assert any(e["event"] == "spool: corrupt frame skipped" and e["rows"] == 10 for e in logs)
    again.close()


def test_cap_drops_book_snapshots_first_then_oldest_batch(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=10 << 20)
    spool.segment_max_bytes = 1  # one frame per segment: every drop is one batch
    sizes = []
    appends: list[tuple[str, list[Any]]] = [
        ("trades", trades(0, 50)), ("order_books", [book(i) for i in range(60)]),
        ("trades", trades(50, 100)), ("trades", trades(100, 150))]
    for table, rows in appends:
        before = spool.total_bytes
        spool.append(table, rows)
        sizes.append(spool.total_bytes - before)
    assert sizes[1] > sizes[3] + 100  # dropping the books alone makes room for one more batch
    spool.max_bytes = spool.total_bytes + 50  # full now
    with capture_logs() as logs:
        spool.append("trades", trades(150, 200))  # the books go first
        assert spool.dropped_rows == {"trades": 0, "order_books": 60}
        spool.append("trades", trades(200, 250))  # full again: the oldest trade batch goes
    assert spool.dropped_rows == {"trades": 50, "order_books": 60}
    assert spool.total_bytes <= spool.max_bytes
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [(e["table"], e["rows"]) for e in errors] == [("order_books", 60), ("trades", 50)]
    assert errors[1]["first_ts"] == "2024-03-01T00:00:00+00:00"
    assert errors[1]["last_ts"] == "2024-03-01T00:00:00.049000+00:00"
    assert [b[0].trade_id for b in drain(spool)] == [50, 100, 150, 200]  # type: ignore[attr-defined]
    spool.close()


def test_batch_larger_than_the_cap_is_dropped_and_counted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=1000)
    with capture_logs() as logs:
        assert not spool.append("trades", trades(0, 100))
    assert spool.dropped_rows["trades"] == 100
    assert logs[0]["log_level"] == "error" and logs[0]["rows"] == 100
    spool.close()


def test_a_segment_that_cannot_be_created_is_a_counted_drop_not_an_exception(
        tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "spool")
    assert spool.append("trades", trades(0, 10))
    spool.segment_max_bytes = 1  # the next batch needs a new segment file
    shutil.rmtree(tmp_path / "spool")  # the directory is gone (a cleaner, an unmounted volume)
    with capture_logs() as logs:
        assert not spool.append("trades", trades(10, 20))
    assert spool.dropped_rows["trades"] == 10
    assert any(e["event"] == "spool: rows dropped" and e["rows"] == 10
               and "could not be created" in e["reason"] for e in logs)
    spool.close()


def test_segment_files_stay_small_so_a_drop_at_the_cap_costs_few_batches() -> None:
    log = structlog.get_logger()
    assert Spool(Path("/nonexistent"), 1024 << 20, TYPES, log).segment_max_bytes == 4 << 20
    assert Spool(Path("/nonexistent"), 64 << 20, TYPES, log).segment_max_bytes == 256 << 10


def test_second_process_cannot_share_a_spool(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    with pytest.raises(WriteError, match="in use"):
        open_spool(tmp_path)
    spool.close()
    open_spool(tmp_path).close()


async def test_sink_start_replays_a_spool_with_a_torn_frame(
        pool: asyncpg.Pool, schema_db: str, writer_settings: WriterSettings) -> None:
    directory = Path(writer_settings.spool_dir)
    spool = open_spool(directory)
    spool.append("trades", trades(0, 300))
    spool.append("trades", trades(300, 600))
    spool.close()
    (segment,) = directory.glob("*.seg")
    segment.write_bytes(segment.read_bytes()[:-10])  # killed while writing the second frame
    async with Sink(pool, writer_settings) as sink:
        await sink.flush()
        stats = sink.stats()["trades"]
    assert await count(schema_db) == 300
    assert stats["spool_torn_frames"] == 1 and stats["rows_replayed"] == 300
    assert stats["spool_bytes"] == 0

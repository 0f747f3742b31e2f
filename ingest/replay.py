"""``ingest replay``: captured websocket frames → the exchange parsers → the writer.

    ingest replay FILE...              parse, write through the writer, print a summary
    ingest replay --dry-run FILE...    print the records as JSON lines instead of writing

FILE is a capture in ingest's recording format (``service.record_dir``: ``NAME.STARTED.N.gz``)
or in cryptofeed's (``BINANCE.0``, ``BINANCE.http.0.0``, ``BINANCE.ws.1.0``), plain or gzip;
a directory means the files in it. Give the files of one feed together: they are merged
by timestamp so REST book images apply at the right point (see ``ingest.replay_feed`` for
what is emitted and when).

``--dry-run`` writes one JSON object per record to stdout: ``type`` (``candle``, ``trade``,
``book_snapshot``, ``metric``), then the target table's columns in table order; timestamps
ISO-8601 UTC, prices and quantities as strings exactly as the parser produced them. The
summary goes to stderr. Otherwise the database is resolved as every command does
(``database.url``/``DATABASE_URL``, else the embedded cluster), pending migrations are
applied, the records go through the one ``Sink``, and the summary is printed to stdout.
Replaying a capture again is harmless: the tables' unique keys absorb the repeats, which
the summary shows as "already stored".

The writer's spool is ``<writer.spool_dir>/replay``, so a replay can run beside the service
(which holds the lock on its own spool). Exit codes: 0 done (unparseable frames are counted,
never fatal); 1 some rows are not in the database (spooled or dropped: see the summary);
2 a missing file, an unknown format or a bad setting, as one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from ingest.records import Record
from ingest.replay_feed import Replayer, ReplayStats, check_inputs
from ingest.settings import Settings
from ingest.sink.tables import SPEC_BY_TYPE, SPECS

PUT_BATCH = 1000  # records per put_many: parsing yields to the writers this often
_KIND_TABLE = {spec.record_type.kind: spec.name for spec in SPECS}  # "trade" → "trades"
_ENCODER = msgspec.json.Encoder()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="capture files of one feed (or directories of them), in any order")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the records as JSON lines instead of writing them")


def record_json(record: Record) -> bytes:
    """One record as the dry-run line: its type, then the target table's columns."""
    obj: dict[str, Any] = {"type": record.kind}
    for column in SPEC_BY_TYPE[type(record)].columns:
        value = getattr(record, column)
        obj[column] = value.isoformat() if isinstance(value, datetime) else value
    return _ENCODER.encode(obj)


# -- the summary ---------------------------------------------------------------------------


def input_summary(replayer: Replayer, n_files: int) -> list[str]:
    s: ReplayStats = replayer.stats
    cap = s.capture
    damaged = f", {cap.bad_lines} unreadable" if cap.bad_lines else ""
    damaged += f", {cap.torn_lines} torn" if cap.torn_lines else ""
    damaged += f", {cap.long_lines} too long" if cap.long_lines else ""
    lines = [
        f"replay: {n_files} files, {cap.records} capture lines{damaged}",
        f"replay: {s.frames} frames: {s.frames_parsed} parsed ({s.controls} control), "
        f"{s.frames_unparseable} unparseable",
        f"replay: REST: {s.rest_images} book images applied, {s.rest_rejected} rejected, "
        f"{s.rest_ignored} other responses ignored",
    ]
    for reason, count in s.unparseable.most_common(8):
        lines.append(f"replay:   {count} x {reason}")
    if len(s.unparseable) > 8:
        lines.append(f"replay:   … and {len(s.unparseable) - 8} other reasons")
    c = replayer.candle_stats()
    books = sum(len(b) for b in replayer.books.values())
    synced = sum(b.synced for bs in replayer.books.values() for b in bs.values())
    lines.append(
        f"replay: candle pushes {c.get('updates', 0)}: {c.get('final', 0)} final, "
        f"{c.get('held_open', 0)} still open at the end, {c.get('unusable', 0)} unusable "
        f"(no base volume), {c.get('stale', 0)} stale")
    lines.append(f"replay: books {books} ({synced} synced at the end), {s.book_gaps} sequence "
                 f"gaps, {s.grid_points_skipped} snapshot grid points skipped (capture silent)")
    counts = ", ".join(f"{s.records.get(kind, 0)} {kind}" for kind in _KIND_TABLE)
    lines.append(f"replay: records: {counts}")
    return lines


def writer_summary(replayer: Replayer, sink_stats: dict[str, dict[str, Any]]) -> tuple[list[str], bool]:
    """Per table: records, written, already stored, rejected (and trouble when there is any).
    Also whether every row is in the database."""
    lines, complete = [], True
    for kind, table in _KIND_TABLE.items():
        st = sink_stats.get(table, {})
        line = (f"{table}: {replayer.stats.records.get(kind, 0)} records, "
                f"{st.get('rows_written', 0)} written, {st.get('duplicates_skipped', 0)} already "
                f"stored, {st.get('rows_rejected', 0)} rejected")
        for key in ("rows_updated", "rows_quarantined", "rows_spooled", "rows_dropped"):
            if st.get(key):
                line += f", {st[key]} {key.removeprefix('rows_')}"
        if st.get("rows_spooled") or st.get("rows_dropped") or st.get("queue_rows"):
            complete = False
        lines.append(line)
    return lines, complete


# -- running -------------------------------------------------------------------------------


def _dry_run(replayer: Replayer, paths: list[Path], out: IO[bytes]) -> None:
    for record in replayer.records(paths):
        out.write(record_json(record) + b"\n")
    out.flush()


def _batches(records: Iterator[Record]) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) >= PUT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def _write(replayer: Replayer, paths: list[Path],
                 settings: Settings) -> dict[str, dict[str, Any]]:
    # Imported here: `ingest replay --dry-run` must not need the database layer.
    from ingest.db.bootstrap import bootstrap
    from ingest.db.local import database_settings
    from ingest.db.pool import connect_with_retry
    from ingest.sink import open_side_sink

    async with database_settings(settings) as resolved:
        pool = await connect_with_retry(resolved.database)
        try:
            await bootstrap(pool, resolved)
            sink = await open_side_sink(pool, resolved.writer, "replay")
            try:
                for batch in _batches(replayer.records(paths)):
                    await sink.put_many(batch)
                    await asyncio.sleep(0)  # let the writers COPY while parsing goes on
                await sink.flush()
            finally:
                await sink.close()
            return sink.stats()
        finally:
            await pool.close()


async def run(args: argparse.Namespace, settings: Settings) -> int:
    paths = check_inputs(args.files)  # ConfigError: one line, exit code 2
    replayer = Replayer(settings)
    if args.dry_run:
        try:
            _dry_run(replayer, paths, sys.stdout.buffer)
        except BrokenPipeError:  # `ingest replay --dry-run … | head`: the reader is done
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("\n".join(input_summary(replayer, len(paths))), file=sys.stderr)
        return 0
    sink_stats = await _write(replayer, paths, settings)
    lines, complete = writer_summary(replayer, sink_stats)
    print("\n".join([*input_summary(replayer, len(paths)), *lines]))
    return 0 if complete else 1

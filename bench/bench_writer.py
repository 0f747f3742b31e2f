"""Writer benchmark (not a test): the Sink against psql \\copy and multi-row INSERT.

    python bench/bench_writer.py [--rows 500000] [--repeat 3] [--batch-rows 5000]

On a throwaway PostgreSQL (EmbeddedPostgres), with the schema's tables and all their
indexes, the same N trades and N candles are loaded

  (a) by ``psql \\copy`` from a CSV file: the ceiling (no validation, no Python);
  (b) through ``ingest.sink.Sink``: validation, de-duplication, COPY, stats;
  (c) by 100-row multi-row INSERT on one connection, two ways: ``insert_100`` a prepared
      statement with binary parameters and ``ON CONFLICT DO NOTHING`` (the strongest form of
      the approach), and ``insert_sql_100`` SQL text with the values written into it, in a
      transaction, exactly as cryptofeed's PostgreSQL backend does (``write_batch``): the
      way common feed handlers actually write.

Each method runs ``--repeat`` times, interleaved, each time into a fresh database; the best
and the median rows/s are printed (the machine is shared: the best is the least disturbed).
Also: binary vs CSV COPY as such, the Sink with 1% already-stored rows in every batch, peak
RSS with a full queue (a child process), and spool write / read / replay rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
import structlog
from common import (
    best_and_median,
    fresh_database,
    make_candles,
    make_trades,
    rss_kib,
    throwaway_cluster,
)

from ingest.db.embedded import EmbeddedPostgres
from ingest.logs import configure
from ingest.records import Trade
from ingest.settings import WriterSettings
from ingest.sink import Sink
from ingest.sink.spool import Spool
from ingest.sink.tables import CANDLES, TRADES, TableSpec, prepare
from ingest.sink.validate import Window

PSQL = "psql"


def csv_file(spec: TableSpec, records: Sequence[Any], directory: Path) -> Path:
    """The rows as CSV for psql: the writer's own lines (COPY text format) with tabs turned
    into commas and NULL (\\N) into an empty field, so every method loads identical data
    (the generated values hold no commas, quotes or backslashes)."""
    path = directory / f"{spec.name}.csv"
    payload = prepare(spec, list(records), Window(datetime.now(UTC), {})).payload()
    path.write_bytes(payload.replace(b"\t", b",").replace(b"\\N", b""))
    return path


def psql_copy(server: EmbeddedPostgres, dsn: str, spec: TableSpec, path: Path) -> float:
    psql = str(server.bindir / PSQL)
    cmd = f"\\copy {spec.name} ({', '.join(spec.columns)}) FROM '{path}' WITH (FORMAT csv)"
    start = time.perf_counter()
    subprocess.run([psql, "-q", "-X", "-v", "ON_ERROR_STOP=1", dsn, "-c", cmd], check=True)
    return time.perf_counter() - start


async def sink_load(dsn: str, records: Sequence[Any], settings: WriterSettings) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4)
    try:
        async with Sink(pool, settings) as sink:
            start = time.perf_counter()
            await sink.put_many(records)
            await sink.flush()
            elapsed = time.perf_counter() - start
            stats = sink.stats()
    finally:
        await pool.close()
    written = sum(s["rows_written"] + s["duplicates_skipped"] for s in stats.values())
    assert written == len(records), f"sink stored {written} of {len(records)}"
    return elapsed


def _params(spec: TableSpec, rec: Any) -> tuple[Any, ...]:
    if spec is TRADES:
        return (rec.exchange, rec.symbol, rec.trade_id, rec.timestamp, rec.price, rec.quantity,
                rec.quote_quantity, rec.is_buyer_maker)
    return (rec.exchange, rec.symbol, rec.interval, rec.timestamp, rec.open, rec.high, rec.low,
            rec.close, rec.volume, rec.quote_volume, rec.trades_count)


async def insert_load(dsn: str, spec: TableSpec, records: Sequence[Any], rows: int = 100) -> float:
    ncol = len(spec.columns)
    values = ", ".join("(" + ", ".join(f"${r * ncol + c + 1}" for c in range(ncol)) + ")"
                       for r in range(rows))
    sql = (f"INSERT INTO {spec.name} ({', '.join(spec.columns)}) VALUES {values} "
           "ON CONFLICT DO NOTHING")
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        for i in range(0, len(records) - len(records) % rows, rows):
            params = [v for rec in records[i:i + rows] for v in _params(spec, rec)]
            await conn.execute(sql, *params)
        return time.perf_counter() - start
    finally:
        await conn.close()


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def insert_sql_load(dsn: str, spec: TableSpec, records: Sequence[Any], rows: int = 100) -> float:
    """cryptofeed's backend: one SQL text per batch with the values in it (bench-only: the
    data are generated here; the service never builds SQL from data)."""
    head = f"INSERT INTO {spec.name} ({', '.join(spec.columns)}) VALUES "
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        for i in range(0, len(records) - len(records) % rows, rows):
            args = ",".join("(" + ",".join(_literal(v) for v in _params(spec, rec)) + ")"
                            for rec in records[i:i + rows])
            async with conn.transaction():
                await conn.execute(head + args)
        return time.perf_counter() - start
    finally:
        await conn.close()


async def _load_variant(conn: asyncpg.Connection, variant: str, trades: Sequence[Trade],
                        batch: int) -> None:
    cols = list(TRADES.columns)
    for i in range(0, len(trades), batch):
        chunk = list(trades[i:i + batch])
        if variant in ("text", "csv"):  # the writer's own encoder (it validates too)
            data = prepare(TRADES, chunk, Window(datetime.now(UTC), {})).payload()
            if variant == "csv":
                data = data.replace(b"\t", b",").replace(b"\\N", b"")

            async def src(data: bytes = data) -> Any:
                yield data

            await conn.copy_to_table(TRADES.name, source=src(), columns=cols, format=variant)
        else:  # no validation at all: the binary numbers flatter binary
            conv = Decimal if variant == "binary_decimal" else str
            recs = [(t.exchange, t.symbol, t.trade_id, t.timestamp, conv(t.price),
                     conv(t.quantity), None, t.is_buyer_maker) for t in chunk]
            await conn.copy_records_to_table(TRADES.name, records=recs, columns=cols)


async def copy_formats(server: EmbeddedPostgres, trades: Sequence[Trade], batch: int,
                       repeat: int) -> dict[str, tuple[float, float]]:
    """Binary COPY (copy_records_to_table) vs text and CSV (copy_to_table from bytes), one
    connection, sequential batches: rows/s (client and server in series, so this tracks
    their total CPU) and the client's CPU µs per row; medians over ``repeat`` runs."""
    runs: dict[str, list[tuple[float, float]]] = {
        v: [] for v in ("text", "csv", "binary_str", "binary_decimal")}
    for _ in range(repeat):
        for variant, results in runs.items():
            conn = await asyncpg.connect(await fresh_database(server, "b_fmt"))
            try:
                start, cpu = time.perf_counter(), time.process_time()
                await _load_variant(conn, variant, trades, batch)
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            finally:
                await conn.close()
            results.append((len(trades) / elapsed, cpu / len(trades) * 1e6))
    return {v: (statistics.median(r[0] for r in res), statistics.median(r[1] for r in res))
            for v, res in runs.items()}


async def compare(server: EmbeddedPostgres, spec: TableSpec, records: Sequence[Any],
                  settings: WriterSettings, repeat: int,
                  tmp: Path) -> dict[str, tuple[float, float]]:
    path = csv_file(spec, records, tmp)
    rates: dict[str, list[float]] = {"psql_copy": [], "sink": [], "insert_100": [],
                                     "insert_sql_100": []}
    n = len(records)
    for _ in range(repeat):
        dsn = await fresh_database(server, "b_psql")
        rates["psql_copy"].append(n / await asyncio.to_thread(psql_copy, server, dsn, spec, path))
        dsn = await fresh_database(server, "b_sink")
        spool = tempfile.mkdtemp(dir=tmp)
        rates["sink"].append(n / await sink_load(dsn, records, replace(settings, spool_dir=spool)))
        dsn = await fresh_database(server, "b_insert")
        rates["insert_100"].append(n / await insert_load(dsn, spec, records))
        dsn = await fresh_database(server, "b_insert_sql")
        rates["insert_sql_100"].append(n / await insert_sql_load(dsn, spec, records))
    return {k: best_and_median(v) for k, v in rates.items()}


async def with_duplicates(server: EmbeddedPostgres, trades: Sequence[Trade],
                          settings: WriterSettings, tmp: Path, repeat: int) -> tuple[float, float]:
    """Every 100th row is already stored: each batch takes the staging-table merge."""
    rates = []
    for _ in range(repeat):
        dsn = await fresh_database(server, "b_dups")
        pre = tempfile.mkdtemp(dir=tmp)
        await sink_load(dsn, trades[::100], replace(settings, spool_dir=pre))
        spool = tempfile.mkdtemp(dir=tmp)
        rates.append(len(trades) / await sink_load(dsn, trades, replace(settings, spool_dir=spool)))
    return best_and_median(rates)


async def spool_rates(server: EmbeddedPostgres, trades: Sequence[Trade], settings: WriterSettings,
                      tmp: Path) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(dir=tmp))
    spool = Spool(directory, 8 << 30, {"trades": Trade}, structlog.get_logger())
    spool.open()
    batch = settings.max_batch_rows
    start = time.perf_counter()
    for i in range(0, len(trades), batch):
        spool.append("trades", list(trades[i:i + batch]))
    write_s = time.perf_counter() - start
    size = spool.total_bytes
    spool.close()
    reader = Spool(directory, 8 << 30, {"trades": Trade}, structlog.get_logger())
    reader.open()
    start = time.perf_counter()
    refs = []
    while (got := reader.read_next("trades")) is not None:
        refs.append(got[0])
    read_s = time.perf_counter() - start
    reader.close()  # nothing acked: the frames stay for the replay below
    dsn = await fresh_database(server, "b_replay")
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4)
    try:
        start = time.perf_counter()
        async with Sink(pool, replace(settings, spool_dir=str(directory))) as sink:
            await sink.flush()
        replay_s = time.perf_counter() - start
    finally:
        await pool.close()
    n = len(trades)
    return {"write_rows_s": n / write_s, "write_mib_s": size / write_s / 2**20,
            "read_rows_s": n / read_s, "replay_rows_s": n / replay_s, "bytes_per_row": size / n}


def rss_probe(server: EmbeddedPostgres, settings: WriterSettings) -> dict[str, Any]:
    """Fill the trades queue in a child process while the table is locked; report RSS."""
    dsn = asyncio.run(fresh_database(server, "b_rss"))
    proc = subprocess.run(
        [sys.executable, __file__, "--rss-probe", dsn, "--memory-limit-mb",
         str(settings.memory_limit_mb)], capture_output=True, text=True, check=True, timeout=300)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def _rss_child(dsn: str, memory_limit_mb: int) -> None:
    settings = WriterSettings(memory_limit_mb=memory_limit_mb, spool_dir=tempfile.mkdtemp(),
                              db_timeout_s=600)
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
    locker = await asyncpg.connect(dsn)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE trades IN SHARE MODE")  # COPYs wait: the queue fills
    sink = Sink(pool, settings)
    await sink.start()
    before = rss_kib()["VmRSS"]

    async def produce() -> None:
        i = 0
        while True:  # records made one at a time: only the queue holds them
            await sink.put_many(make_trades(1000, seed=i))
            i += 1

    producer = asyncio.create_task(produce())
    while sink.stats()["trades"]["producer_waits"] == 0:
        await asyncio.sleep(0.05)
    stats = sink.stats()["trades"]
    peak = rss_kib()
    print(json.dumps({"rss_before_kib": before, "rss_full_kib": peak["VmRSS"],
                      "hwm_kib": peak["VmHWM"], "queue_rows": stats["queue_rows"],
                      "queue_bytes": stats["queue_bytes"],
                      "queue_limit_bytes": stats["queue_limit_bytes"]}), flush=True)
    producer.cancel()
    os._exit(0)  # the locked COPYs are not worth a graceful close here


def _fmt(rate: float) -> str:
    return f"{rate:>12,.0f}"


def report_compare(title: str, res: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}: rows/s (best / median)")
    for name, (best, med) in res.items():
        print(f"  {name:<12} {_fmt(best)} / {_fmt(med)}")
    psql, sink, ins = res["psql_copy"][0], res["sink"][0], res["insert_100"][0]
    ins_sql = res["insert_sql_100"][0]
    print(f"  sink / psql \\copy = {sink / psql:.2f}   sink / insert_100 = {sink / ins:.1f}   "
          f"sink / insert_sql_100 = {sink / ins_sql:.1f}")


async def run(server: EmbeddedPostgres, args: argparse.Namespace) -> None:
    settings = WriterSettings(max_batch_rows=args.batch_rows, spool_dir="unused")
    trades = make_trades(args.rows)
    candles = make_candles(args.rows)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as t:
        tmp = Path(t)
        os.chmod(tmp, 0o755)  # psql reads the CSV as this user; the server does not
        print(f"rows={args.rows} repeat={args.repeat} max_batch_rows={args.batch_rows} "
              f"cpus={os.cpu_count()}")
        fmt = await copy_formats(server, trades, args.batch_rows, args.repeat)
        print("\nCOPY format, trades, one connection, sequential batches (medians):")
        for name, (rate, cpu_us) in fmt.items():
            print(f"  {name:<15} {_fmt(rate)} rows/s   client CPU {cpu_us:.2f} µs/row")
        report_compare("trades", await compare(server, TRADES, trades, settings, args.repeat, tmp))
        report_compare("candles", await compare(server, CANDLES, candles, settings, args.repeat, tmp))
        best, med = await with_duplicates(server, trades, settings, tmp, args.repeat)
        print(f"\ntrades with 1% already stored in every batch (sink): {_fmt(best)} / {_fmt(med)}")
        sp = await spool_rates(server, trades, settings, tmp)
        print(f"\nspool: write {_fmt(sp['write_rows_s'])} rows/s ({sp['write_mib_s']:.0f} MiB/s, "
              f"{sp['bytes_per_row']:.0f} B/row), read+decode {_fmt(sp['read_rows_s'])} rows/s, "
              f"replay into PostgreSQL {_fmt(sp['replay_rows_s'])} rows/s")
    rss = await asyncio.to_thread(rss_probe, server, settings)
    print(f"\npeak RSS with a full trades queue (memory_limit_mb={settings.memory_limit_mb}, "
          f"trades share {rss['queue_limit_bytes'] / 2**20:.0f} MiB): "
          f"{rss['rss_before_kib'] / 1024:.0f} MiB before, {rss['rss_full_kib'] / 1024:.0f} MiB full "
          f"(+{(rss['rss_full_kib'] - rss['rss_before_kib']) / 1024:.0f} MiB for "
          f"{rss['queue_rows']:,} queued rows, estimated {rss['queue_bytes'] / 2**20:.0f} MiB), "
          f"high-water {rss['hwm_kib'] / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=WriterSettings().max_batch_rows)
    parser.add_argument("--rss-probe", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--memory-limit-mb", type=int, default=WriterSettings().memory_limit_mb)
    args = parser.parse_args()
    configure(level="WARNING", fmt="console", stream=sys.stderr)
    if args.rss_probe:
        asyncio.run(_rss_child(args.rss_probe, args.memory_limit_mb))
        return
    with throwaway_cluster() as server:
        asyncio.run(run(server, args))


if __name__ == "__main__":
    main()

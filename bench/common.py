"""Shared helpers for the benchmarks: a throwaway PostgreSQL, fresh databases, test data."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from ingest.db.embedded import EmbeddedPostgres  # noqa: E402
from ingest.records import Candle, Trade  # noqa: E402

SCHEMA_SQL = (REPO / "schema" / "0001_market_data.up.sql").read_text()
BASE_TS = datetime(2024, 1, 1, tzinfo=UTC)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "DOGEUSDT", "ADAUSDT", "TRXUSDT")


TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / TICK, int(fields[12]) / TICK


@contextlib.contextmanager
def process(cmd: list[str], log: Path | None = None, *, cwd: Path = REPO,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (own session, output to ``log`` or nowhere) stopped with SIGTERM,
    then killed, when the block ends."""
    with (log or Path(os.devnull)).open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[EmbeddedPostgres]:
    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-pg-"))
    os.chmod(tmp, 0o755)
    server = EmbeddedPostgres(data_dir=tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)


async def fresh_database(server: EmbeddedPostgres, name: str, *, schema: bool = True) -> str:
    """Drop and create ``name``, with the market-data schema (all its indexes) unless
    ``schema`` is false (for a service that migrates its database itself)."""
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # bench constant
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = server.dsn(name)
    if schema:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SCHEMA_SQL)
        finally:
            await conn.close()
    return dsn


def make_trades(n: int, seed: int = 1) -> list[Trade]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        price = f"{20000 + rng.random() * 50000:.2f}"
        qty = f"{rng.random() * 3:.8f}"
        out.append(Trade("binance", symbol, 1_000_000 + i, BASE_TS + timedelta(milliseconds=3 * i),
                         price, qty, None, bool(i & 1)))
    return out


def make_candles(n: int, seed: int = 2) -> list[Candle]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        minute = i // len(SYMBOLS)
        o = 20000 + rng.random() * 50000
        out.append(Candle("binance", symbol, "1m", BASE_TS + timedelta(minutes=minute),
                          f"{o:.2f}", f"{o * 1.01:.2f}", f"{o * 0.99:.2f}", f"{o * 1.001:.2f}",
                          f"{rng.random() * 100:.8f}", f"{rng.random() * 1e6:.8f}",
                          rng.randrange(10_000), True))
    return out


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_and_median(rates: list[float]) -> tuple[float, float]:
    return max(rates), statistics.median(rates)


def rss_kib() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, in KiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out

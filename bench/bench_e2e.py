"""End-to-end benchmark (not a test): simulator → connectors → Sink → PostgreSQL, one machine.

    python bench/bench_e2e.py                       # all three parts, about 5 minutes
    python bench/bench_e2e.py --only throughput --rates 10000,25000,50000,75000
    python bench/bench_e2e.py --only latency --latency-rate 10000
    python bench/bench_e2e.py --only rss --rss-symbols 100 --rss-rate 1000

Every part starts the simulator as a separate process (``python -m ingest.cli simulate``)
and a throwaway PostgreSQL (``EmbeddedPostgres``, durable: fsync and synchronous_commit on,
as in production), and stops both by PID at the end.

(a) throughput: trades only (no books, no candles), ``--symbols`` markets per exchange on
    all three exchanges; the service side (``build_feeds`` connectors + ``Sink`` with the
    default ``WriterSettings``, pool from ``connect_with_retry``, as ``ingest run`` wires
    them) runs in this process. For each ``--rates`` value (trade frames/s in total, the
    simulator's ``--rate``) it waits ``--warmup`` s, then measures over ``--window`` s:
    trade frames the simulator queued to its clients (``/sim/stats``), frames the
    connectors received, rows the Sink committed, the trades queue depth (sampled every
    0.25 s), producer waits, reconnects and drops, and the CPU each process used (simulator,
    this process, PostgreSQL backends) — so the report says which side limits. "Keeps up":
    committed ≥ 97% of sent, the backlog (sent - received) grows by less than 0.5 s of
    traffic over the window, the trades queue holds less than 1 s of traffic at the end, no
    reconnects (the simulator disconnects a client whose 10,000-frame send queue is full),
    nothing dropped or spooled.
(b) latency at ``--latency-rate``: event time (the trade's exchange timestamp, set by the
    simulator from the same wall clock) to commit. The trades writer's ``BatchWriter.write``
    is wrapped on this instance only (no module is changed): when it returns, the COPY of
    that batch has completed on an autocommit connection, i.e. the rows are committed and
    visible. ``time.time()`` then, minus each row's timestamp, is that row's latency; every
    row committed in the window counts. Cross-check from outside the process: a second
    connection polls ``SELECT max(timestamp) FROM trades`` every 100 ms; ``now -
    max(timestamp)`` is how stale the table looks to a reader at a random instant (the
    newest row's own latency plus the time since its batch committed).
(c) RSS: ``ingest run --config <generated toml>`` as a subprocess with ``DATABASE_URL``
    set, ``--rss-symbols`` symbols x 3 exchanges x 3 channels (trades, book, candles 1m),
    against the simulator at ``--rss-rate`` trade frames/s (books move every 100 ms, klines
    every 2 s). After the books are synced (``ingest_books_unsynced`` = 0 on /metrics) and
    ``--rss-warmup`` s more, VmRSS is sampled every second for ``--rss-window`` s from
    /proc/PID/status; VmHWM (peak since start) is read at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import asyncpg
from common import REPO, cpu_times, fresh_database, process, throwaway_cluster

from ingest.db.embedded import EmbeddedPostgres, free_port
from ingest.db.pool import connect_with_retry
from ingest.feeds import build_feeds
from ingest.logs import configure
from ingest.settings import DatabaseSettings, WriterSettings, parse_settings
from ingest.sink import Sink
from ingest.transport.http import HttpClient

PY = sys.executable
BASE_SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "BNB", "DOGE", "ADA", "TRX", "LTC", "DOT", "LINK",
                "AVAX")


def symbols(n: int) -> list[str]:
    """``n`` unified USDT symbols: real names first, then ``C013/USDT``… (the simulator
    gives unknown coins a seeded price)."""
    return [f"{BASE_SYMBOLS[i]}/USDT" if i < len(BASE_SYMBOLS) else f"C{i:03d}/USDT"
            for i in range(n)]


# ---------------------------------------------------------------------------------------
# Processes (each started here is stopped here, by PID)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 if it is gone)."""
    return sum(cpu_times(pid))


def children(ppid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(int(p.name))
    return out


def postgres_cpu_s(server: EmbeddedPostgres) -> float:
    """CPU of the postmaster and all its backends/workers (exited backends not counted;
    ours stay connected through the pool)."""
    pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    return cpu_s(pid) + sum(cpu_s(c) for c in children(pid))


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


async def http_json(url: str, timeout_s: float = 5.0) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(
            total=timeout_s)) as r:
        return await r.json(content_type=None)


async def http_text(url: str, timeout_s: float = 5.0) -> str:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(
            total=timeout_s)) as r:
        return await r.text()


async def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode} (see its log)")
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            await http_text(url, 1.0)
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer within {timeout_s} s")
        await asyncio.sleep(0.2)


def sim_cmd(port: int, rate: float, syms: list[str]) -> list[str]:
    return [PY, "-m", "ingest.cli", "--log-level", "WARNING", "simulate", "--port", str(port),
            "--rate", str(rate), "--symbols", ",".join(syms)]


async def sim_trades(port: int) -> int:
    """Trade frames the simulator has queued to its clients, all exchanges and symbols."""
    stats = await http_json(f"http://127.0.0.1:{port}/sim/stats")
    return sum(s["trades"] for ex in stats.values() for s in ex.values())


# ---------------------------------------------------------------------------------------
# The service side, in this process (as ``ingest run`` wires it, minus metrics/gap repair)


def exchange_settings(sim_port: int, syms: list[str], channels: list[str],
                      intervals: tuple[str, ...] = ("1m",)) -> dict[str, Any]:
    ws, http = f"ws://127.0.0.1:{sim_port}", f"http://127.0.0.1:{sim_port}"
    urls = {
        "binance": {"ws_url": f"{ws}/binance", "rest_url": f"{http}/binance"},
        "gateio": {"ws_url": f"{ws}/gateio/ws/v4/", "rest_url": f"{http}/gateio/api/v4"},
        "huobi": {"ws_url": f"{ws}/huobi/ws", "ws_feed_url": f"{ws}/huobi/feed",
                  "rest_url": f"{http}/huobi"},
    }
    return {name: {**u, "symbols": syms, "channels": channels,
                   "candle_intervals": list(intervals)} for name, u in urls.items()}


@dataclass
class Service:
    pool: asyncpg.Pool
    sink: Sink
    http: HttpClient
    connectors: list[Any]
    tasks: list[asyncio.Task[None]]
    latencies: list[float] = field(default_factory=list)
    record_latency: bool = False

    def frames(self) -> int:
        return sum(c.counters["frames_received"] for c in self.connectors)

    def trades_emitted(self) -> int:
        return sum(c.counters["trades"] for c in self.connectors)

    def reconnects(self) -> int:
        return sum(c.counters["reconnects"] for c in self.connectors)

    def rejected(self) -> int:
        return sum(c.counters["frames_rejected"] for c in self.connectors)

    def duplicates(self) -> int:
        return sum(c.counters["trades_duplicate"] for c in self.connectors)

    def trades_table(self) -> dict[str, Any]:
        return self.sink.stats()["trades"]

    def streams_live(self) -> bool:
        return all(c.counters["trades"] > 0 for c in self.connectors)


async def start_service(sim_port: int, dsn: str, syms: list[str], spool: Path) -> Service:
    pool = await connect_with_retry(DatabaseSettings(url=dsn))
    sink = Sink(pool, WriterSettings(spool_dir=str(spool)))  # production defaults
    await sink.start()
    http = HttpClient()
    await http.start()
    settings = parse_settings({"exchanges": exchange_settings(sim_port, syms, ["trades"])},
                              "bench_e2e")
    connectors = build_feeds(settings, sink, http)
    tasks = [asyncio.create_task(c.run(), name=c.exchange) for c in connectors]
    svc = Service(pool, sink, http, connectors, tasks)
    _hook_commits(svc)
    return svc


def _hook_commits(svc: Service) -> None:
    """Observe each committed trades batch: wrap this Sink's trades ``BatchWriter.write``
    (the COPY on an autocommit connection; when it returns the rows are committed)."""
    db = svc.sink._writers["trades"]._db
    original = db.write

    async def write(prepared: Any) -> Any:
        outcome = await original(prepared)
        if svc.record_latency:
            now = time.time()
            svc.latencies.extend(now - r.timestamp.timestamp() for r in prepared.records)
        return outcome

    db.write = write  # type: ignore[method-assign, assignment]


async def stop_service(svc: Service) -> None:
    await asyncio.gather(*(c.close() for c in svc.connectors), return_exceptions=True)
    await asyncio.wait(svc.tasks, timeout=10)
    await svc.sink.close()
    await svc.http.close()
    await svc.pool.close()


# ---------------------------------------------------------------------------------------
# (a) throughput and (b) latency


@dataclass
class Point:
    rate: float
    window_s: float = 0.0
    sent: float = 0.0  # /s
    received: float = 0.0  # frames/s
    emitted: float = 0.0  # trades/s handed to the Sink
    committed: float = 0.0  # rows/s
    backlog_growth: int = 0  # frames (sent - received) added over the window
    queue_rows_max: int = 0
    queue_rows_end: int = 0
    producer_waits: int = 0
    reconnects: int = 0
    dropped: int = 0
    spooled: int = 0
    rejected: int = 0
    duplicates: int = 0
    batches: int = 0
    write_ms: float = 0.0  # mean time of one batch's write (COPY) in the window
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core
    latency: dict[str, float] = field(default_factory=dict)
    freshness: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def keeps_up(self) -> bool:
        return (not self.error and self.committed >= 0.97 * self.sent
                and self.backlog_growth < 0.5 * self.sent and self.queue_rows_end < self.sent
                and self.reconnects == 0 and self.dropped == 0 and self.spooled == 0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


async def _snapshot(svc: Service, sim_port: int, sim_pid: int,
                    server: EmbeddedPostgres) -> dict[str, Any]:
    t = svc.trades_table()
    return {
        "t": time.monotonic(), "sent": await sim_trades(sim_port), "received": svc.frames(),
        "emitted": svc.trades_emitted(), "written": t["rows_written"], "batches": t["batches"],
        "waits": t["producer_waits"], "dropped": t["rows_dropped"], "spooled": t["rows_spooled"],
        "write_s": t["flush_latency_sum_s"], "writes": t["flush_latency_count"],
        "reconnects": svc.reconnects(), "rejected": svc.rejected(), "dups": svc.duplicates(),
        "cpu_sim": cpu_s(sim_pid), "cpu_self": cpu_s(os.getpid()),
        "cpu_pg": postgres_cpu_s(server),
    }


async def _poll_freshness(dsn: str, out: list[float], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            newest = await conn.fetchval("SELECT max(timestamp) FROM trades")
            if newest is not None:
                out.append(time.time() - newest.timestamp())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await conn.close()


async def run_point(server: EmbeddedPostgres, rate: float, syms: list[str], args: Any,
                    work: Path, latency: bool = False) -> Point:
    point = Point(rate)
    dsn = await fresh_database(server, "e2e")
    port = free_port()
    tag = f"{'lat' if latency else 'tp'}{int(rate)}"
    with process(sim_cmd(port, rate, syms), work / f"sim-{tag}.log") as sim:
        await wait_http(f"http://127.0.0.1:{port}/sim/health", sim)
        svc = await start_service(port, dsn, syms, work / f"spool-{tag}")
        try:
            deadline = time.monotonic() + 30
            while not svc.streams_live():
                if time.monotonic() > deadline:
                    raise TimeoutError("not every exchange delivered trades within 30 s")
                await asyncio.sleep(0.1)
            await asyncio.sleep(args.warmup)
            fresh: list[float] = []
            stop = asyncio.Event()
            poller = asyncio.create_task(_poll_freshness(dsn, fresh, stop)) if latency else None
            spies = _start_pyspy(args, tag, {"service": os.getpid(), "simulator": sim.pid})
            a = await _snapshot(svc, port, sim.pid, server)
            svc.record_latency = latency
            qmax = 0
            end = a["t"] + args.window
            while time.monotonic() < end:
                qmax = max(qmax, svc.trades_table()["queue_rows"])
                await asyncio.sleep(0.25)
            svc.record_latency = False
            b = await _snapshot(svc, port, sim.pid, server)
            _stop_pyspy(spies)
            stop.set()
            if poller is not None:
                await poller
            _fill(point, a, b, qmax, svc)
            if latency:
                lat = svc.latencies
                point.latency = {"n": len(lat), "p50": pct(lat, 50), "p90": pct(lat, 90),
                                 "p99": pct(lat, 99), "max": max(lat) if lat else float("nan")}
                point.freshness = {"n": len(fresh), "p50": pct(fresh, 50),
                                   "p99": pct(fresh, 99)}
        except Exception as exc:
            point.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            await stop_service(svc)
    return point


def _start_pyspy(args: Any, tag: str, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """``--pyspy DIR``: sample the service (this process) and the simulator during the
    window, collapsed stacks in DIR/<who>-<tag>.txt (profiling runs only: py-spy itself
    takes CPU from the same 2 cores, so their rates are not the headline figures)."""
    if not args.pyspy:
        return []
    out = Path(args.pyspy)
    out.mkdir(parents=True, exist_ok=True)
    spy = str(Path(PY).with_name("py-spy"))
    return [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration",
                              str(int(args.window)), "--rate", "200", "--nonblocking",
                              "--format", "raw", "--output", str(out / f"{who}-{tag}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for who, pid in pids.items()]


def _stop_pyspy(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        try:
            spy.wait(15)
        except subprocess.TimeoutExpired:
            spy.terminate()
            spy.wait(5)


def _fill(p: Point, a: dict[str, Any], b: dict[str, Any], qmax: int, svc: Service) -> None:
    dt = b["t"] - a["t"]
    p.window_s = dt
    p.sent = (b["sent"] - a["sent"]) / dt
    p.received = (b["received"] - a["received"]) / dt
    p.emitted = (b["emitted"] - a["emitted"]) / dt
    p.committed = (b["written"] - a["written"]) / dt
    p.backlog_growth = (b["sent"] - a["sent"]) - (b["received"] - a["received"])
    p.queue_rows_max = qmax
    p.queue_rows_end = svc.trades_table()["queue_rows"]
    p.producer_waits = b["waits"] - a["waits"]
    p.reconnects = b["reconnects"] - a["reconnects"]
    p.dropped = b["dropped"] - a["dropped"]
    p.spooled = b["spooled"] - a["spooled"]
    p.rejected = b["rejected"] - a["rejected"]
    p.duplicates = b["dups"] - a["dups"]
    p.batches = b["batches"] - a["batches"]
    writes = b["writes"] - a["writes"]
    p.write_ms = 1000 * (b["write_s"] - a["write_s"]) / writes if writes else float("nan")
    p.cpu = {k: 100 * (b[f"cpu_{k}"] - a[f"cpu_{k}"]) / dt for k in ("sim", "self", "pg")}


def print_throughput(points: list[Point], n_syms: int) -> None:
    print(f"\n(a) sustained trades, {n_syms} symbols x 3 exchanges, trades channel only; "
          f"per second over the window; CPU in % of one core (2 cores = 200%)")
    head = (f"{'target':>7} {'sim sent':>9} {'received':>9} {'committed':>9} {'backlog+':>8} "
            f"{'q max':>7} {'q end':>7} {'waits':>5} {'recon':>5} {'drop':>4} "
            f"{'cpu sim':>7} {'cpu svc':>7} {'cpu pg':>6} {'total':>5}  "
            f"{'us/frame sim svc pg':>19}  keeps up")
    print(head)
    print("-" * len(head))
    for p in points:
        if p.error:
            print(f"{p.rate:>7,.0f}  error: {p.error}")
            continue
        per = {k: 1e4 * v / max(p.received, 1.0) for k, v in p.cpu.items()}  # µs per frame
        print(f"{p.rate:>7,.0f} {p.sent:>9,.0f} {p.received:>9,.0f} {p.committed:>9,.0f} "
              f"{p.backlog_growth:>8,} {p.queue_rows_max:>7,} {p.queue_rows_end:>7,} "
              f"{p.producer_waits:>5} {p.reconnects:>5} {p.dropped + p.spooled:>4} "
              f"{p.cpu['sim']:>6.0f}% {p.cpu['self']:>6.0f}% {p.cpu['pg']:>5.0f}% "
              f"{sum(p.cpu.values()):>4.0f}%  {per['sim']:>7.1f} {per['self']:>4.1f} "
              f"{per['pg']:>4.1f}  {'yes' if p.keeps_up else 'NO'}")
    ok = [p for p in points if p.keeps_up]
    best = max(ok, key=lambda p: p.committed) if ok else None
    print(f"highest sustained: {best.committed:,.0f} trade frames/s committed "
          f"(simulator target {best.rate:,.0f}/s)" if best else "highest sustained: none")
    if best:
        per_svc = best.cpu["self"] / 100 / best.received
        per_pg = best.cpu["pg"] / 100 / best.committed
        print(f"at that point the service costs {per_svc * 1e6:.1f} us of CPU per trade frame "
              f"(receive, parse, route, queue, encode, COPY) and PostgreSQL {per_pg * 1e6:.1f} us "
              f"per row: without the simulator on the machine the service's one event-loop "
              f"thread would saturate near {1 / per_svc:,.0f} frames/s")


def print_latency(p: Point) -> None:
    print(f"\n(b) latency, event time -> commit, target {p.rate:,.0f} trade frames/s "
          f"(sent {p.sent:,.0f}/s, committed {p.committed:,.0f}/s, {p.batches} batches "
          f"in {p.window_s:.0f} s)")
    if p.error:
        print(f"  error: {p.error}")
        return
    lat, fr = p.latency, p.freshness
    print(f"  per committed row (n={lat['n']:,}): p50 {lat['p50'] * 1000:.0f} ms, "
          f"p90 {lat['p90'] * 1000:.0f} ms, p99 {lat['p99'] * 1000:.0f} ms, "
          f"max {lat['max'] * 1000:.0f} ms")
    print(f"  cross-check, staleness of the newest visible row, polled every 100 ms (n={fr['n']}): "
          f"p50 {fr['p50'] * 1000:.0f} ms, p99 {fr['p99'] * 1000:.0f} ms")
    print(f"  batches: {p.committed * p.window_s / max(p.batches, 1):,.0f} rows on average, "
          f"written (COPY) in {p.write_ms:.0f} ms on average")
    print(f"  cpu: simulator {p.cpu['sim']:.0f}%, service {p.cpu['self']:.0f}%, "
          f"postgres {p.cpu['pg']:.0f}%")


# ---------------------------------------------------------------------------------------
# (c) RSS of `ingest run`


def rss_config(path: Path, sim_port: int, health_port: int, syms: list[str],
               spool: Path, intervals: tuple[str, ...]) -> None:
    http = f"http://127.0.0.1:{sim_port}"
    lines = [
        "[writer]", f'spool_dir = "{spool}"', "stats_interval_s = 3600.0", "",
        "[metrics]", f'coingecko_url = "{http}/coingecko/api/v3"',
        f'fear_greed_url = "{http}/alternative"', "",
        "[health]", f"port = {health_port}", "",
        "[logging]", "summary_interval_s = 10.0", "",
        "[backfill]", "gap_repair = false", "",
    ]
    channels = ["candles", "trades", "book"]
    for name, ex in exchange_settings(sim_port, syms, channels, intervals).items():
        lines.append(f"[exchanges.{name}]")
        for key, value in ex.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines))


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def import_rss_kib(module: str) -> int:
    """VmRSS of a fresh interpreter that has only imported ``module``."""
    code = (f"import {module}, pathlib; print([l.split()[1] for l in pathlib.Path("
            "'/proc/self/status').read_text().splitlines() if l.startswith('VmRSS')][0])")
    return int(subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip())


@dataclass
class RssResult:
    rss_kib: list[int] = field(default_factory=list)
    baseline_kib: dict[str, int] = field(default_factory=dict)
    hwm_kib: int = 0
    synced_after_s: float = 0.0
    frames_per_s: float = 0.0
    rows_per_s: float = 0.0
    streams: int = 0
    unsynced: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    error: str = ""


async def run_rss(server: EmbeddedPostgres, args: Any, work: Path) -> RssResult:
    res = RssResult()
    res.baseline_kib = {m: import_rss_kib(m) for m in ("asyncio", "ccxt", "ingest.daemon")}
    syms = symbols(args.rss_symbols)
    dsn = await fresh_database(server, "rss", schema=False)  # `ingest run` migrates it itself
    sim_port, health_port = free_port(), free_port()
    cfg = work / "rss.toml"
    rss_config(cfg, sim_port, health_port, syms, work / "spool-rss",
               tuple(args.rss_intervals.split(",")))
    env = {**os.environ, "DATABASE_URL": dsn}
    env.pop("INGEST_CONFIG", None)
    svc_cmd = [PY, "-m", "ingest.cli", "--config", str(cfg), "--log-level", "WARNING", "run"]
    with process(sim_cmd(sim_port, args.rss_rate, syms), work / "sim-rss.log") as sim:
        await wait_http(f"http://127.0.0.1:{sim_port}/sim/health", sim)
        started = time.monotonic()
        with process(svc_cmd, work / "service-rss.log", env=env) as svc:
            try:
                await wait_http(f"http://127.0.0.1:{health_port}/healthz", svc, 60)
                url = f"http://127.0.0.1:{health_port}/metrics"
                while True:
                    text = await http_text(url)
                    unsynced = metric_sum(text, "ingest_books_unsynced")
                    if unsynced == 0 and metric_sum(text, "ingest_records_emitted_total") > 0:
                        break
                    if time.monotonic() - started > args.rss_sync_timeout:
                        res.unsynced = unsynced
                        break
                    if svc.poll() is not None:
                        raise RuntimeError(f"ingest run exited with {svc.returncode}")
                    await asyncio.sleep(1)
                res.synced_after_s = time.monotonic() - started
                await asyncio.sleep(args.rss_warmup)
                m0, t0 = await http_text(url), time.monotonic()
                c0 = (cpu_s(sim.pid), cpu_s(svc.pid), postgres_cpu_s(server))
                for _ in range(int(args.rss_window)):
                    res.rss_kib.append(proc_status(svc.pid)["VmRSS"])
                    await asyncio.sleep(1)
                m1, t1 = await http_text(url), time.monotonic()
                c1 = (cpu_s(sim.pid), cpu_s(svc.pid), postgres_cpu_s(server))
                res.hwm_kib = proc_status(svc.pid)["VmHWM"]
                res.cpu = {k: 100 * (b - a) / (t1 - t0)
                           for k, a, b in zip(("sim", "svc", "pg"), c0, c1, strict=True)}
                res.frames_per_s = (metric_sum(m1, "ingest_frames_received_total")
                                    - metric_sum(m0, "ingest_frames_received_total")) / (t1 - t0)
                res.rows_per_s = (metric_sum(m1, "ingest_records_emitted_total")
                                  - metric_sum(m0, "ingest_records_emitted_total")) / (t1 - t0)
                res.streams = int(metric_sum(m1, "ingest_stream_connected"))
                res.unsynced = metric_sum(m1, "ingest_books_unsynced")
            except Exception as exc:
                res.error = f"{type(exc).__name__}: {exc}"[:300]
    return res


def print_rss(res: RssResult, args: Any) -> None:
    print(f"\n(c) RSS of `ingest run`, {args.rss_symbols} symbols x 3 exchanges x 3 channels "
          f"(trades, book, candles {args.rss_intervals}), simulator --rate {args.rss_rate:g}")
    if res.error:
        print(f"  error: {res.error}")
    if not res.rss_kib:
        return
    mib = [k / 1024 for k in res.rss_kib]
    print(f"  books synced after {res.synced_after_s:.0f} s (unsynced at the end: "
          f"{res.unsynced:.0f}); streams connected: {res.streams}; "
          f"frames received {res.frames_per_s:,.0f}/s, records emitted {res.rows_per_s:,.0f}/s")
    print(f"  VmRSS over {len(mib)} s after {args.rss_warmup:g} s warm-up: median "
          f"{statistics.median(mib):.0f} MiB, min {min(mib):.0f}, max {max(mib):.0f}; "
          f"VmHWM (peak since start) {res.hwm_kib / 1024:.0f} MiB")
    print(f"  cpu: simulator {res.cpu['sim']:.0f}%, service {res.cpu['svc']:.0f}%, "
          f"postgres {res.cpu['pg']:.0f}%")
    print("  for scale, VmRSS of a fresh interpreter after only importing: " + ", ".join(
        f"{m} {k / 1024:.0f} MiB" for m, k in res.baseline_kib.items()))


# ---------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> None:
    configure(level="WARNING", fmt="json", stream=sys.stderr)
    parts = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-e2e-"))
    print(f"logs and spools under {work}; {os.cpu_count()} cores; Python "
          f"{sys.version.split()[0]}", flush=True)
    try:
        with throwaway_cluster() as server:
            syms = symbols(args.symbols)
            if "throughput" in parts:
                points = []
                for rate in (float(r) for r in args.rates.split(",")):
                    points.append(await run_point(server, rate, syms, args, work))
                    p = points[-1]
                    print(f"  {rate:,.0f}/s: sent {p.sent:,.0f}/s committed {p.committed:,.0f}/s "
                          f"{'keeps up' if p.keeps_up else 'does not keep up'} {p.error}",
                          flush=True)
                print_throughput(points, len(syms))
            if "latency" in parts:
                print_latency(await run_point(server, args.latency_rate, syms, args, work,
                                              latency=True))
            if "rss" in parts:
                print_rss(await run_rss(server, args, work), args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="throughput,latency,rss")
    ap.add_argument("--rates", default="10000,25000,40000,50000,75000")
    ap.add_argument("--symbols", type=int, default=4, help="symbols per exchange for (a), (b)")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--latency-rate", type=float, default=10_000)
    ap.add_argument("--rss-symbols", type=int, default=100)
    ap.add_argument("--rss-rate", type=float, default=1000)
    ap.add_argument("--rss-intervals", default="1m", help="candle intervals for (c), comma-separated")
    ap.add_argument("--rss-warmup", type=float, default=10.0)
    ap.add_argument("--rss-window", type=float, default=20.0)
    ap.add_argument("--rss-sync-timeout", type=float, default=90.0)
    ap.add_argument("--keep", action="store_true", help="keep the logs directory")
    ap.add_argument("--pyspy", metavar="DIR", help="py-spy the service and the simulator "
                    "during each (a)/(b) window; collapsed stacks into DIR")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()

"""What operators see: Prometheus metrics and a periodic summary line, read from live stats.

    observer = Observer()                     # the daemon registers components as it builds them
    observer.set_sink(sink); observer.add_connectors(connectors)
    observer.set_metrics_service(metrics); observer.set_gap_repair(repairer)
    observer.backfill.add(key, label, total)  # progress hook for backfill / gap repair jobs
    registry = metrics_registry(observer)     # for /metrics (ingest.health)
    await summary_loop(observer, settings.logging.summary_interval_s, stop_event)

Nothing is counted twice: the components keep their counters (``Sink.stats()``,
``Connector.stats()``/``health()``, ``MetricsService.stats()``), and the collector turns
those dicts into metric families at scrape time. A component whose ``stats()`` raises is
left out of that scrape (and logged), so one bug cannot blank the whole page.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ingest import __version__
from ingest.logs import get_logger

log = get_logger("ingest.observe")

if TYPE_CHECKING:  # typed as a Progress for Backfiller(progress=...); no runtime import (ccxt)
    from ingest.backfill_progress import Progress as _ProgressBase
else:
    _ProgressBase = object


class StatsSource(Protocol):
    def stats(self) -> dict[str, Any]: ...


class ConnectorLike(StatsSource, Protocol):
    exchange: str

    def health(self) -> dict[str, Any]: ...


class BackfillProgress(_ProgressBase):
    """Progress of backfill and gap-repair jobs, for /metrics and the summary.

    Same calls as ``backfill_progress.Progress`` (``add``/``update``/``finish``, an async
    context manager), so it can be passed wherever one is expected; ``finish(key, ok=False)``
    counts a failed job. Finished jobs leave the gauges (the label set stays bounded by the
    jobs running at once) and are counted in ``jobs_finished``."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.jobs_finished = {"ok": 0, "failed": 0}
        self.rows_total = 0  # rows of finished jobs; running ones add theirs in as_dict()

    def add(self, key: str, label: str, total: float) -> None:
        self.jobs[key] = {"label": label, "total": max(float(total), 1.0), "done": 0.0,
                          "rows": 0, "started": time.monotonic()}

    def update(self, key: str, done: float, rows: int) -> None:
        job = self.jobs.get(key)
        if job is not None:
            job["done"], job["rows"] = min(float(done), job["total"]), rows

    def finish(self, key: str, ok: bool = True) -> None:
        job = self.jobs.pop(key, None)
        if job is not None:
            self.rows_total += job["rows"]
            self.jobs_finished["ok" if ok else "failed"] += 1

    async def __aenter__(self) -> BackfillProgress:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def as_dict(self) -> dict[str, Any]:
        running = {j["label"]: {"ratio": round(j["done"] / j["total"], 6), "rows": j["rows"]}
                   for j in self.jobs.values()}
        return {"running": running, "jobs_finished": dict(self.jobs_finished),
                "rows": self.rows_total + sum(j["rows"] for j in self.jobs.values())}


@dataclass
class Snapshot:
    """Every component's stats, read once (scrape, summary, readiness share the shape)."""

    at: float  # monotonic seconds
    wall: float  # unix seconds
    sink: dict[str, dict[str, Any]] = field(default_factory=dict)
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)  # exchange → stats()
    health: dict[str, dict[str, Any]] = field(default_factory=dict)  # exchange → health()
    stale_after_s: dict[str, float] = field(default_factory=dict)  # exchange → setting
    metric_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    gap_repair: dict[str, Any] = field(default_factory=dict)
    backfill: dict[str, Any] = field(default_factory=dict)
    recorder: dict[str, Any] = field(default_factory=dict)  # empty unless --record


class Observer:
    """Holds the live components; ``snapshot()`` reads them all."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.sink: StatsSource | None = None
        self.connectors: list[ConnectorLike] = []
        self.metrics_service: StatsSource | None = None
        self.gap_repair: StatsSource | None = None
        self.recorder: StatsSource | None = None
        self.backfill = BackfillProgress()
        self.clock, self.wall = clock, wall
        self.started_wall = wall()
        self._failed: set[str] = set()  # components whose stats() raised (logged once each)

    def set_sink(self, sink: StatsSource) -> None:
        self.sink = sink

    def add_connectors(self, connectors: Iterable[ConnectorLike]) -> None:
        self.connectors.extend(connectors)

    def set_metrics_service(self, service: StatsSource | None) -> None:
        self.metrics_service = service

    def set_gap_repair(self, repairer: StatsSource | None) -> None:
        self.gap_repair = repairer

    def set_recorder(self, recorder: StatsSource | None) -> None:
        self.recorder = recorder

    def _read(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
        except Exception as exc:  # a bug in one component must not blank the page
            if name not in self._failed:
                self._failed.add(name)
                log.error("stats of a component failed; it is left out of metrics",
                          component=name, error=f"{type(exc).__name__}: {exc}"[:300])
            return None
        self._failed.discard(name)
        return value

    def snapshot(self) -> Snapshot:
        snap = Snapshot(at=self.clock(), wall=self.wall())
        if self.sink is not None:
            snap.sink = self._read("sink", self.sink.stats) or {}
        for c in self.connectors:
            stats = self._read(f"connector.{c.exchange}", c.stats)
            health = self._read(f"connector.{c.exchange}.health", c.health)
            if stats is not None and health is not None:
                snap.connectors[c.exchange], snap.health[c.exchange] = stats, health
                settings = getattr(c, "settings", None)
                snap.stale_after_s[c.exchange] = float(getattr(settings, "stale_after_s", 60.0))
        if self.metrics_service is not None:
            snap.metric_jobs = self._read("metrics", self.metrics_service.stats) or {}
        if self.gap_repair is not None:
            snap.gap_repair = self._read("gap_repair", self.gap_repair.stats) or {}
        if self.recorder is not None:
            snap.recorder = self._read("recorder", self.recorder.stats) or {}
        snap.backfill = self.backfill.as_dict()
        return snap


# ---------------------------------------------------------------------------------------------
# Prometheus

# Sink.stats() key → (metric name without _total, help). Counters per table.
_SINK_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("rows_accepted", "ingest_rows_accepted", "Rows accepted by the writer"),
    ("rows_written", "ingest_rows_written", "New rows stored"),
    ("rows_updated", "ingest_rows_updated", "Stored candles replaced by a corrected close"),
    ("duplicates_skipped", "ingest_rows_duplicate", "Rows whose unique key was already stored"),
    ("rows_rejected", "ingest_rows_rejected", "Rows that failed validation before COPY"),
    ("rows_quarantined", "ingest_rows_quarantined", "Rows the database refused (quarantine file)"),
    ("rows_spooled", "ingest_rows_spooled", "Rows written to the disk spool"),
    ("rows_replayed", "ingest_rows_replayed", "Rows read back from the spool and stored"),
    ("rows_dropped", "ingest_rows_dropped", "Rows lost on purpose (memory or spool cap)"),
    ("batches", "ingest_write_batches", "Batches written"),
    ("retries", "ingest_write_retries", "Failed database writes that were retried"),
    ("producer_waits", "ingest_producer_waits", "Times a producer waited for queue space"),
)
_SINK_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("queue_rows", "ingest_queue_rows", "Rows queued in memory"),
    ("queue_bytes", "ingest_queue_bytes", "Estimated bytes queued in memory"),
    ("queue_limit_bytes", "ingest_queue_limit_bytes", "Memory share of the table's queue"),
    ("spool_bytes", "ingest_spool_bytes", "Bytes waiting in the disk spool"),
    ("spool_rows", "ingest_spool_rows", "Rows waiting in the disk spool"),
    ("healthy", "ingest_writer_healthy", "1 while the table's database writes succeed"),
)


Rows = Iterable[tuple[Sequence[str], float]]
Extract = Callable[[str, dict[str, Any], dict[str, Any]], Rows]  # (exchange, stats, health)


def _fam(kind: str, name: str, doc: str, labels: Sequence[str], rows: Rows) -> Metric:
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    fam = cls(name, doc, labels=list(labels))
    for values, value in rows:
        fam.add_metric(list(values), float(value))
    return fam


def _sink_families(sink: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    for key, name, doc in _SINK_COUNTERS:
        yield _fam("counter", name, doc, ["table"], (([t], s.get(key, 0)) for t, s in sink.items()))
    for key, name, doc in _SINK_GAUGES:
        yield _fam("gauge", name, doc, ["table"], (([t], s[key]) for t, s in sink.items() if key in s))
    hist = HistogramMetricFamily("ingest_flush_seconds", "Time to write one batch",
                                 labels=["table"])
    for table, s in sink.items():
        buckets = s.get("flush_latency_buckets") or {"+Inf": s.get("flush_latency_count", 0)}
        hist.add_metric([table], [(b, float(n)) for b, n in buckets.items()],
                        float(s.get("flush_latency_sum_s", 0.0)))
    yield hist


def _per_conn(key: str) -> Extract:
    return lambda ex, s, h: [([ex, name.removeprefix(f"{ex}.")], c.get(key, 0))
                             for name, c in s.get("connections", {}).items()]


def _sum_conns(key: str) -> Extract:
    return lambda ex, s, h: [([ex], sum(c.get(key, 0) for c in s.get("connections", {}).values()))]


def _at(*path: str) -> Extract:
    def extract(ex: str, s: dict[str, Any], h: dict[str, Any]) -> Rows:
        value: Any = s
        for key in path:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return [([ex], value if isinstance(value, int | float) else 0)]
    return extract


_EX, _CONN, _STREAM = ("exchange",), ("exchange", "connection"), ("exchange", "stream")
# (kind, name, help, labels, rows from one connector's stats() and health())
_CONNECTOR_METRICS: tuple[tuple[str, str, str, tuple[str, ...], Extract], ...] = (
    ("counter", "ingest_frames_received", "Websocket frames received", _CONN,
     _per_conn("frames_received")),
    ("counter", "ingest_frames_parsed", "Frames parsed, by the channel they carried",
     ("exchange", "channel"),
     lambda ex, s, h: [([ex, ch], n) for ch, n in
                       sorted(s.get("frames", {}).get("parsed_by_channel", {}).items())]),
    ("counter", "ingest_frames_rejected", "Frames rejected, by stage", ("exchange", "stage"),
     lambda ex, s, h: [([ex, stage], s.get("frames", {}).get(key, 0)) for stage, key in (
         ("parse", "rejected"), ("transport", "transport_rejected"), ("handler", "handler_errors"))]),
    ("counter", "ingest_records_emitted", "Records handed to the writer", ("exchange", "channel"),
     lambda ex, s, h: [([ex, "trades"], s.get("trades", {}).get("emitted", 0)),
                       ([ex, "candles"], s.get("candles", {}).get("emitted", 0)),
                       ([ex, "book"], s.get("book", {}).get("snapshots_emitted", 0))]),
    ("counter", "ingest_trades_duplicate", "Trades seen twice (overlap)", _EX,
     _at("trades", "duplicates")),
    ("counter", "ingest_ws_reconnects", "Websocket reconnects", _EX, _sum_conns("reconnects")),
    ("counter", "ingest_ws_rotations", "Planned connection rotations", _EX, _sum_conns("rotations")),
    ("counter", "ingest_ws_connect_failures", "Failed connects", _EX,
     _sum_conns("connect_failures")),
    ("counter", "ingest_stream_stale", "Streams that went quiet (resubscribed)", _EX,
     _at("stale_streams")),
    ("counter", "ingest_book_gaps", "Order book sequence gaps", _EX, _at("book", "gaps")),
    ("counter", "ingest_book_resyncs", "Order book resyncs completed", _EX,
     _at("book", "resyncs_done")),
    ("counter", "ingest_book_resync_failures", "Failed or timed-out resync attempts", _EX,
     lambda ex, s, h: [([ex], s.get("book", {}).get("resync_failures", 0)
                        + s.get("book", {}).get("resync_timeouts", 0))]),
    ("gauge", "ingest_books_unsynced", "Books not in sync (resyncing)", _EX,
     lambda ex, s, h: [([ex], sum(1 for b in s.get("book", {}).get("books", {}).values()
                                  if not b.get("synced")))]),
    ("gauge", "ingest_ws_connected", "1 while the socket is connected", _CONN,
     lambda ex, s, h: [([ex, n.removeprefix(f"{ex}.")], c.get("state") in ("connected", "rotating"))
                       for n, c in s.get("connections", {}).items()]),
    ("gauge", "ingest_stream_connected", "1 while the stream's socket is connected", _STREAM,
     lambda ex, s, h: [([ex, k], bool(v.get("connected"))) for k, v in h.get("streams", {}).items()]),
    ("gauge", "ingest_stream_last_message_age_seconds", "Seconds since the stream's last message",
     _STREAM, lambda ex, s, h: [([ex, k], a) for k, a in s.get("last_message_age_s", {}).items()
                                if a is not None]),
)


def _connector_families(snap: Snapshot) -> Iterator[Metric]:
    for kind, name, doc, labels, extract in _CONNECTOR_METRICS:
        rows = [r for ex, s in snap.connectors.items()
                for r in extract(ex, s, snap.health.get(ex, {}))]
        yield _fam(kind, name, doc, labels, rows)


def _job_families(jobs: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    runs = [([job, "ok"], s.get("successes", 0)) for job, s in jobs.items()]
    runs += [([job, str(reason)], n) for job, s in jobs.items()
             for reason, n in s.get("failures", {}).items()]
    yield _fam("counter", "ingest_metric_job_runs", "Metric source polls by result",
               ["source", "result"], runs)
    yield _fam("counter", "ingest_metric_job_rows", "Rows a metric source handed to the writer",
               ["source"], (([j], s.get("rows", 0)) for j, s in jobs.items()))
    yield _fam("gauge", "ingest_metric_job_last_success_timestamp_seconds",
               "Unix time of the source's last successful poll", ["source"],
               (([j], s["last_success_ts"]) for j, s in jobs.items()
                if s.get("last_success_ts") is not None))
    yield _fam("gauge", "ingest_metric_job_consecutive_failures",
               "Failed polls since the last success", ["source"],
               (([j], s.get("consecutive_failures", 0)) for j, s in jobs.items()))


def _repair_families(snap: Snapshot) -> Iterator[Metric]:
    bf, gr = snap.backfill, snap.gap_repair
    running = bf.get("running", {})
    yield _fam("gauge", "ingest_backfill_jobs_running", "Backfill/gap-repair jobs running", [],
               [([], len(running))])
    yield _fam("gauge", "ingest_backfill_job_progress_ratio", "Done share of a running job",
               ["job"], (([label], j["ratio"]) for label, j in running.items()))
    yield _fam("counter", "ingest_backfill_jobs_finished", "Backfill jobs finished", ["result"],
               (([r], n) for r, n in bf.get("jobs_finished", {}).items()))
    yield _fam("counter", "ingest_backfill_rows", "Rows fetched by backfill jobs", [],
               [([], bf.get("rows", 0))])
    if gr:  # GapRepairer.stats(): jobs, failed_jobs, rows, unserved, running
        failed = gr.get("failed_jobs", 0)
        yield _fam("counter", "ingest_gap_repair_jobs", "Gap-repair jobs by result", ["result"],
                   [(["ok"], gr.get("jobs", 0) - failed), (["failed"], failed)])
        yield _fam("counter", "ingest_gap_repair_rows", "Rows refilled from REST", [],
                   [([], gr.get("rows", 0))])
        yield _fam("counter", "ingest_gap_repair_unserved", "Ranges the exchange could not serve",
                   [], [([], gr.get("unserved", 0))])
        yield _fam("gauge", "ingest_gap_repair_running", "Gap repairs running", [],
                   [([], gr.get("running", 0))])


class IngestCollector(Collector):
    """Reads ``observer.snapshot()`` at each scrape."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterator[Metric]:
        snap = self.observer.snapshot()
        yield _fam("gauge", "ingest_up", "1 while the service runs", [], [([], 1)])
        yield _fam("gauge", "ingest_build_info", "Version of ingest", ["version"],
                   [([__version__], 1)])
        yield _fam("gauge", "ingest_start_time_seconds", "Unix time the service started", [],
                   [([], self.observer.started_wall)])
        yield from _sink_families(snap.sink)
        yield from _connector_families(snap)
        yield from _job_families(snap.metric_jobs)
        yield from _repair_families(snap)
        if snap.recorder:
            rec = snap.recorder
            yield _fam("counter", "ingest_recorder_lines", "Lines of --record, by result",
                       ["result"], [(["written"], rec.get("lines_written", 0)),
                                    (["dropped"], rec.get("dropped", 0))])
            yield _fam("counter", "ingest_recorder_write_errors", "Failed --record writes", [],
                       [([], rec.get("write_errors", 0))])


def metrics_registry(observer: Observer, *, process: bool = True) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one: tests build many)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(observer))
    if process:  # RSS, CPU, open fds: the memory cap is a reliability promise
        ProcessCollector(registry=registry)
    return registry


# ---------------------------------------------------------------------------------------------
# The periodic summary line


def _rate(cur: float, prev: float, dt: float) -> float:
    return round(max(cur - prev, 0) / dt, 2) if dt > 0 else 0.0


def _frames(stats: dict[str, Any]) -> int:
    return sum(c.get("frames_received", 0) for c in stats.get("connections", {}).values())


def _sink_problems(prev: Snapshot, cur: Snapshot) -> list[str]:
    out = []
    for table, s in cur.sink.items():
        p = prev.sink.get(table, {})
        if s.get("healthy") is False:
            out.append(f"{table}: database writes failing (retrying; spooling when memory is full)")
        for key in ("rows_dropped", "rows_rejected", "rows_quarantined"):
            delta = s.get(key, 0) - p.get(key, 0)
            if delta > 0:
                out.append(f"{table}: {delta} {key.removeprefix('rows_')}")
        if s.get("spool_bytes"):
            out.append(f"{table}: {s['spool_bytes']} bytes in the spool")
    return out


def _stream_problems(cur: Snapshot) -> list[str]:
    out = []
    for ex, h in cur.health.items():
        streams = h.get("streams", {})
        down = sorted(k for k, v in streams.items() if not v.get("connected"))
        budget = cur.stale_after_s.get(ex, 60.0)
        silent = sorted(k for k, v in streams.items() if v.get("connected")
                        and (v.get("last_message_age_s") or 0) > budget)
        if down:
            out.append(f"{ex}: {len(down)}/{len(streams)} streams disconnected "
                       f"(reconnecting), e.g. {', '.join(down[:3])}")
        if silent:
            out.append(f"{ex}: {len(silent)} streams silent > {budget:g} s, e.g. "
                       f"{', '.join(silent[:3])}")
        books = cur.connectors.get(ex, {}).get("book", {})
        unsynced = sorted(sym for sym, b in books.get("books", {}).items() if not b.get("synced"))
        if unsynced:
            out.append(f"{ex}: books resyncing: {', '.join(unsynced[:5])}")
    return out


def _job_problems(prev: Snapshot, cur: Snapshot) -> list[str]:
    out = []
    for job, s in cur.metric_jobs.items():
        if s.get("consecutive_failures"):
            out.append(f"{job}: {s['consecutive_failures']} failed polls in a row "
                       f"({s.get('last_failure_reason')}); retrying on schedule")
    failed = cur.gap_repair.get("failed_jobs", 0) - prev.gap_repair.get("failed_jobs", 0)
    if failed > 0:
        out.append(f"gap repair: {failed} jobs failed")
    return out


def summarise(prev: Snapshot, cur: Snapshot) -> dict[str, Any]:
    """The fields of one summary line: rates since ``prev``, lag, queues, problems."""
    dt = cur.at - prev.at
    rows = {t: _rate(s.get("rows_written", 0) + s.get("rows_updated", 0),
                     prev.sink.get(t, {}).get("rows_written", 0)
                     + prev.sink.get(t, {}).get("rows_updated", 0), dt)
            for t, s in cur.sink.items()}
    frames = {ex: _rate(_frames(s), _frames(prev.connectors.get(ex, {})), dt)
              for ex, s in cur.connectors.items()}
    lag = {ex: max((a for a in s.get("last_message_age_s", {}).values() if a is not None),
                   default=None) for ex, s in cur.connectors.items()}
    out: dict[str, Any] = {
        "interval_s": round(dt, 1), "rows_per_s": rows, "frames_per_s": frames,
        "max_message_age_s": lag,
        "queue_rows": {t: s.get("queue_rows", 0) for t, s in cur.sink.items()},
        "queue_bytes": sum(s.get("queue_bytes", 0) for s in cur.sink.values()),
        "spool_bytes": sum(s.get("spool_bytes", 0) for s in cur.sink.values()),
    }
    oldest = {t: s["queue_oldest_age_s"] for t, s in cur.sink.items()
              if s.get("queue_oldest_age_s") is not None}
    if oldest:  # only when the writer reports it
        out["queue_oldest_age_s"] = oldest
    if cur.backfill.get("running"):
        out["backfill_running"] = {k: v["ratio"] for k, v in cur.backfill["running"].items()}
    out["unhealthy"] = _sink_problems(prev, cur) + _stream_problems(cur) + _job_problems(prev, cur)
    return out


async def summary_loop(observer: Observer, interval_s: float, stop_event: asyncio.Event) -> None:
    """Log one ``summary`` line every ``interval_s`` until ``stop_event``, and a last one."""
    prev = observer.snapshot()
    while not stop_event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), timeout=interval_s)
        cur = observer.snapshot()
        if cur.at - prev.at >= min(1.0, interval_s):  # a last line at stop, unless trivial
            log.info("summary", **summarise(prev, cur))
        prev = cur

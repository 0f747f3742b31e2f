"""Backfill progress and its summary.

On a terminal: a rich progress bar per job (on stderr). Otherwise (a container, a pipe):
one JSON log line per running job every ``interval_s``, through the configured logger. The
summary at the end counts what the writer stored and skipped, requests, time, and every
range the exchange could not serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from ingest.backfill_plan import Job, iso
from ingest.backfill_sources import Unserved
from ingest.logs import get_logger

_log = get_logger("ingest.backfill")


class Progress:
    """No output (the daemon's gap repair); the base of the two renderers."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    def add(self, key: str, label: str, total: float) -> None:
        self.jobs[key] = {"label": label, "total": max(total, 1.0), "done": 0.0, "rows": 0,
                          "started": time.monotonic()}

    def update(self, key: str, done: float, rows: int) -> None:
        job = self.jobs.get(key)
        if job is not None:
            job["done"], job["rows"] = min(done, job["total"]), rows

    def finish(self, key: str, ok: bool = True) -> None:
        """The job ended: done in full, or (``ok=False``) failed where it stood."""
        job = self.jobs.get(key)
        if job is not None:
            if ok:
                job["done"] = job["total"]
            job["failed"] = not ok

    async def __aenter__(self) -> Progress:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class RichProgress(Progress):
    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                        TextColumn("{task.fields[rows]:>9,} rows"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self._tasks: dict[str, Any] = {}

    def add(self, key: str, label: str, total: float) -> None:
        super().add(key, label, total)
        self._tasks[key] = self._bar.add_task(label, total=max(total, 1.0), rows=0)

    def update(self, key: str, done: float, rows: int) -> None:
        super().update(key, done, rows)
        if key in self._tasks:
            self._bar.update(self._tasks[key], completed=self.jobs[key]["done"], rows=rows)

    def finish(self, key: str, ok: bool = True) -> None:
        super().finish(key, ok)
        if key in self._tasks:
            self._bar.update(self._tasks[key], completed=self.jobs[key]["total"])

    async def __aenter__(self) -> Progress:
        self._bar.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._bar.stop()


class LogProgress(Progress):
    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._finished: set[str] = set()

    def finish(self, key: str, ok: bool = True) -> None:
        super().finish(key, ok)
        self._emit(key)
        self._finished.add(key)

    def _emit(self, key: str) -> None:
        job = self.jobs[key]
        elapsed_s = time.monotonic() - job["started"]
        _log.info("backfill progress", job=job["label"], rows=job["rows"],
                  done_pct=round(100.0 * job["done"] / job["total"], 1),
                  elapsed_s=round(elapsed_s, 1), **({"failed": True} if job.get("failed") else {}))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for key in list(self.jobs):
                if key not in self._finished:
                    self._emit(key)

    async def __aenter__(self) -> Progress:
        self._task = asyncio.create_task(self._loop(), name="backfill-progress")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def make_progress(mode: str, interval_s: float = 10.0) -> Progress:
    """``auto``: a bar on a terminal, log lines otherwise; ``bar``, ``log`` or ``none``."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "log"
    if mode == "bar":
        return RichProgress()
    if mode == "log":
        return LogProgress(interval_s)
    return Progress()


@dataclass
class JobResult:
    job: Job
    rows: int = 0  # records handed to the writer
    pages: int = 0
    network_s: float = 0.0  # waiting for the exchange (rate limiter, wire, parse)
    write_s: float = 0.0  # waiting for the writer (backpressure)
    resumed_from_ms: int | None = None
    unserved: list[Unserved] = field(default_factory=list)
    note: str = ""
    error: str = ""


@dataclass
class Summary:
    results: list[JobResult]
    elapsed_s: float
    requests: int
    retries: int
    table_stats: dict[str, dict[str, int]]  # writer counters for candlesticks and trades
    flush_s: float = 0.0  # the final wait for the writer to store everything
    limiter_s: float = 0.0  # part of the jobs' network time spent in ccxt's rate limiter

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.results if r.error]

    @property
    def unserved(self) -> list[tuple[Job, Unserved]]:
        return [(r.job, u) for r in self.results for u in r.unserved]

    def time_shares(self) -> dict[str, float]:
        """How the jobs' waiting time divides: the exchange (``network``, of which
        ``rate_limiter``) and the writer (``writing``: backpressure and the final flush).
        Summed over jobs, which run concurrently: shares, not wall time."""
        net = sum(r.network_s for r in self.results)
        write = sum(r.write_s for r in self.results) + self.flush_s
        total = net + write
        if not total:
            return {"network": 0.0, "rate_limiter": 0.0, "writing": 0.0}
        return {"network": net / total, "rate_limiter": min(self.limiter_s, net) / total,
                "writing": write / total}

    def as_dict(self) -> dict[str, Any]:
        shares = self.time_shares()
        return {
            "elapsed_s": round(self.elapsed_s, 3), "requests": self.requests,
            "retries": self.retries, "tables": self.table_stats,
            "rows_handed_to_writer": sum(r.rows for r in self.results),
            "time_shares": {k: round(v, 3) for k, v in shares.items()},
            "unserved": [{"job": j.label, "range": u.describe()} for j, u in self.unserved],
            "errors": self.errors,
        }

    def lines(self) -> list[str]:
        out = []
        for r in self.results:
            state = "FAILED" if r.error else "ok"
            extra = "" if r.resumed_from_ms is None else f" (resumed at {iso(r.resumed_from_ms)})"
            out.append(f"{state:<6} {r.job.describe()}: {r.rows} rows fetched, {r.pages} pages"
                       f"{extra}{'; ' + r.note if r.note else ''}")
        for table, s in self.table_stats.items():
            out.append(f"{table}: {s.get('rows_written', 0)} rows stored, "
                       f"{s.get('rows_updated', 0)} updated, "
                       f"{s.get('duplicates_skipped', 0)} duplicates skipped"
                       + "".join(f", {s[k]} {k.removeprefix('rows_')}"
                                 for k in ("rows_rejected", "rows_quarantined", "rows_spooled")
                                 if s.get(k)))
        shares = self.time_shares()
        out.append(f"{self.requests} requests ({self.retries} retried), {self.elapsed_s:.1f} s; "
                   f"waiting: network {shares['network']:.0%} (rate limiter "
                   f"{shares['rate_limiter']:.0%}), writing {shares['writing']:.0%}")
        for job, u in self.unserved:
            out.append(f"UNSERVED {job.label} {u.describe()}")
        return out


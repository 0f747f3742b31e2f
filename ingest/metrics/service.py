"""The metrics component: runs each source on its own schedule and hands rows to the writer.

    MetricsService(settings, session, sink).run(stop_event)   # the daemon's task
    MetricsService(...).run_once()                             # `ingest metrics --once`

One task per source; a source's runs never overlap (the next run is computed only after
the previous one ended, by ``schedule.next_run``). A failed run — network, 5xx, 429, a bad
body — is logged with a short reason, counted, and retried at the next computed time; it
never stops the other source or the service. Rows go through the one writer (``sink``);
the unique key (metric_type, metric_name, timestamp) with the source's own timestamp
absorbs repeated polls of an unchanged value.

The Fear & Greed history (``limit=0``) is loaded on the first run when the database's index
values do not span a week yet (a few rows, from a ``--no-history`` run or sample data, do
not count as the history); afterwards only the newest day is fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from ingest import logs
from ingest.errors import RateLimited
from ingest.metrics.http import Sleep, reason_of, redact
from ingest.metrics.parse import Parsed
from ingest.metrics.schedule import RETRY_BASE_S, next_run, utc_iso
from ingest.metrics.sources import (
    COINGECKO_JOB,
    FEAR_GREED_JOB,
    Poller,
    coingecko_request,
    fear_greed_request,
    parse_coingecko_global,
    parse_fear_greed,
    policy_for,
)
from ingest.records import MarketMetric
from ingest.settings import MetricsSettings, Settings


def _log() -> Any:
    # Resolved per call, not at import: a logger bound at import time keeps the structlog
    # configuration of that moment, and cli.py imports commands before configuring logs.
    return logs.get_logger("ingest.metrics")

DB_PROBE_TIMEOUT_S = 10.0
# "The history is stored": index values from the API spanning at least a week. A few rows
# (a --no-history run, sample or generated data) do not count: loading the history again
# is one request, and the unique key absorbs what is already there.
HAS_FEAR_GREED_SQL = (
    "SELECT coalesce(max(timestamp) - min(timestamp) >= interval '7 days', false) "
    "FROM market_metrics WHERE metric_type = 'fear_greed_index' "
    "AND metadata->>'source' IS DISTINCT FROM 'generated'"
)


class MetricSink(Protocol):
    """What this component needs from the writer (``ingest.sink.Sink``)."""

    async def put_many(self, records: Sequence[Any], /) -> Any: ...


HistoryProbe = Callable[[], Awaitable[bool]]  # True when the database already has F&G rows


def pool_probe(pool: Any) -> HistoryProbe:
    """A probe on an asyncpg pool, with an outer timeout (asyncpg's own one is not enough)."""

    async def probe() -> bool:
        async with asyncio.timeout(DB_PROBE_TIMEOUT_S):
            return bool(await pool.fetchval(HAS_FEAR_GREED_SQL))

    return probe


@dataclass
class JobStats:
    runs: int = 0
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # reason → count
    rows: int = 0  # rows handed to the writer
    skipped: int = 0  # optional fields / history entries left out as unusable
    consecutive_failures: int = 0
    last_success_ts: float | None = None  # wall-clock unix seconds
    last_failure_reason: str | None = None
    last_duration_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs, "successes": self.successes,
            "failures": dict(self.failures), "failures_total": sum(self.failures.values()),
            "rows": self.rows, "skipped": self.skipped,
            "consecutive_failures": self.consecutive_failures,
            "last_success_ts": self.last_success_ts,
            "last_success": utc_iso(self.last_success_ts),
            "last_failure_reason": self.last_failure_reason,
            "last_duration_s": self.last_duration_s,
        }


@dataclass
class RunResult:
    job: str
    ok: bool
    records: list[MarketMetric] = field(default_factory=list)
    reason: str | None = None
    detail: str | None = None
    retry_after_s: float | None = None
    history: bool = False  # this run loaded the Fear & Greed history


class MetricsService:
    def __init__(
        self,
        settings: Settings | MetricsSettings,
        session: aiohttp.ClientSession,
        sink: MetricSink,
        *,
        pool: Any = None,
        history_probe: HistoryProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        retry_base_s: float = RETRY_BASE_S,
    ) -> None:
        self.settings = settings.metrics if isinstance(settings, Settings) else settings
        m = self.settings
        self._sink = sink
        self._clock, self._wall, self._rand = clock, wall, rand
        self._retry_base_s = retry_base_s
        secrets = (m.coingecko_api_key,) if m.coingecko_api_key else ()
        logs.register_secret(m.coingecko_api_key)  # belt and braces: the CLI does it too
        self._poller = Poller(session, policy_for(m), sleep, secrets, wall)
        self._secrets = secrets
        pool = pool if pool is not None else getattr(sink, "pool", None)
        self._probe = history_probe or (pool_probe(pool) if pool is not None else None)
        self._history_pending = m.load_fear_greed_history
        self._intervals = {COINGECKO_JOB: m.coingecko_interval_s,
                           FEAR_GREED_JOB: m.fear_greed_interval_s}
        self._polls: dict[str, Callable[[], Awaitable[tuple[Parsed, bool]]]] = {
            COINGECKO_JOB: self._poll_coingecko, FEAR_GREED_JOB: self._poll_fear_greed}
        self._stats = {job: JobStats() for job in self._polls}
        self._next_at: dict[str, float] = {}

    @property
    def jobs(self) -> tuple[str, ...]:
        return tuple(self._polls) if self.settings.enabled else ()

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per source, plain data (for /metrics and the periodic summary)."""
        out = {job: s.as_dict() for job, s in self._stats.items()}
        now = self._clock()
        for job, at in self._next_at.items():
            out[job]["next_run_in_s"] = round(max(at - now, 0.0), 3)
        out[FEAR_GREED_JOB]["history_pending"] = self._history_pending
        return out

    # ---- one run -------------------------------------------------------------------------

    async def _poll_coingecko(self) -> tuple[Parsed, bool]:
        parsed = await self._poller.poll(COINGECKO_JOB, coingecko_request(self.settings),
                                         parse_coingecko_global)
        return parsed, False

    async def _history_needed(self) -> bool:
        if not self._history_pending:
            return False
        if self._probe is None:
            _log().warning("metrics history check skipped: no database to ask",
                           source=FEAR_GREED_JOB)
            self._history_pending = False
            return False
        try:
            has_rows = await self._probe()
        except Exception as exc:  # database down: fetch today's value, ask again next run
            _log().warning("metrics history check failed", source=FEAR_GREED_JOB,
                           detail=redact(f"{type(exc).__name__}: {exc}", self._secrets)[:300])
            return False
        if has_rows:
            self._history_pending = False
        return not has_rows

    async def _poll_fear_greed(self) -> tuple[Parsed, bool]:
        history = await self._history_needed()
        request = fear_greed_request(self.settings, 0 if history else 1)
        parsed = await self._poller.poll(FEAR_GREED_JOB, request, parse_fear_greed)
        return parsed, history

    async def run_job(self, job: str) -> RunResult:
        """Poll one source once, hand its rows to the writer, count and log the outcome."""
        st = self._stats[job]
        st.runs += 1
        started = self._clock()
        try:
            parsed, history = await self._polls[job]()
        except Exception as exc:
            return self._failed(job, exc, started)
        try:
            if parsed.records:
                await self._sink.put_many(parsed.records)
        except Exception as exc:
            return self._failed(job, exc, started, reason="sink")
        if history:
            self._history_pending = False
        st.successes += 1
        st.consecutive_failures = 0
        st.rows += len(parsed.records)
        st.skipped += len(parsed.skipped)
        st.last_success_ts = self._wall()
        st.last_duration_s = round(self._clock() - started, 6)
        if parsed.skipped:
            _log().warning("metrics fields skipped", source=job, count=len(parsed.skipped),
                           detail=redact("; ".join(parsed.skipped[:3]), self._secrets)[:300])
        newest = max((r.timestamp for r in parsed.records), default=None)
        _log().info("metrics poll", source=job, rows=len(parsed.records), history=history,
                    source_time=newest.isoformat() if newest else None)
        return RunResult(job, True, parsed.records, history=history)

    def _failed(self, job: str, exc: Exception, started: float,
                reason: str | None = None) -> RunResult:
        st = self._stats[job]
        reason = reason or reason_of(exc)
        text = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        detail = redact(str(text), self._secrets)[:300]
        st.failures[reason] = st.failures.get(reason, 0) + 1
        st.consecutive_failures += 1
        st.last_failure_reason = reason
        st.last_duration_s = round(self._clock() - started, 6)
        retry_after = exc.retry_after_s if isinstance(exc, RateLimited) else None
        _log().warning("metrics poll failed", source=job, reason=reason, detail=detail,
                       retry_after_s=retry_after, exc_info=reason == "internal")
        return RunResult(job, False, reason=reason, detail=detail, retry_after_s=retry_after)

    async def run_once(self) -> list[RunResult]:
        """Every enabled source once (the history load included when due)."""
        return list(await asyncio.gather(*(self.run_job(job) for job in self.jobs)))

    # ---- the runner: waiting and sequencing only; the maths is in schedule.py ------------

    async def run(self, stop_event: asyncio.Event) -> None:
        """Run every enabled source on its schedule until ``stop_event`` is set."""
        if not self.jobs:
            _log().info("metrics disabled")
            return
        async with asyncio.TaskGroup() as tg:
            for job in self.jobs:
                tg.create_task(self._loop(job, stop_event), name=f"metrics-{job}")

    async def _loop(self, job: str, stop: asyncio.Event) -> None:
        next_at = self._clock()  # first run at start: the service has nothing yet
        while not await self._wait_until(next_at, stop):
            start = self._clock()
            result = await self._run_unless_stopped(job, stop)
            if result is None:
                return
            end = self._clock()
            next_at = self.plan_next(job, start, end, result)
            _log().debug("metrics next run", source=job, in_s=round(next_at - end, 3))

    def plan_next(self, job: str, start: float, end: float, result: RunResult) -> float:
        """The next start of ``job`` after a run from ``start`` to ``end`` (clock seconds)."""
        not_before = end + result.retry_after_s if result.retry_after_s else None
        at = next_run(start, end, self._intervals[job], self.settings.jitter_s, self._rand(),
                      failures=self._stats[job].consecutive_failures, not_before=not_before,
                      retry_base_s=self._retry_base_s)
        self._next_at[job] = at
        return at

    async def _wait_until(self, at: float, stop: asyncio.Event) -> bool:
        """Wait for time ``at``; True when stopped first."""
        delay = at - self._clock()
        if delay <= 0 or stop.is_set():
            return stop.is_set()
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def _run_unless_stopped(self, job: str, stop: asyncio.Event) -> RunResult | None:
        """One run, cancelled if the service is stopped meanwhile (a poll can take a while
        with retries, and shutdown has a budget of seconds)."""
        run = asyncio.create_task(self.run_job(job))
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (run, stopped):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        return run.result() if run in done else None

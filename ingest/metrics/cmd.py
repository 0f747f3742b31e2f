"""``ingest metrics``: poll CoinGecko /global and the Fear & Greed index into market_metrics.

    ingest metrics --once [--format table|json] [--no-history]
    ingest metrics                      # keep polling on the configured schedule until ^C

``--once`` runs every source once (and loads the Fear & Greed history when the database has
none), writes through the writer, prints what it stored, and exits 0 — or 1 with one line
on stderr when every source failed. With no database configured, the embedded cluster is
used (see ``ingest.db.local``); pending migrations are applied first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from ingest.errors import ExchangeError
from ingest.metrics.service import MetricsService, RunResult
from ingest.records import MarketMetric
from ingest.settings import MetricsSettings, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true",
                        help="run every source once, print what was stored, and exit")
    parser.add_argument("--format", choices=["table", "json"], default="table",
                        help="--once output: a table, or one JSON object per row (default: table)")
    parser.add_argument("--no-history", action="store_true",
                        help="do not load the Fear & Greed history, even on first start")


def new_session(m: MetricsSettings) -> aiohttp.ClientSession:
    """An HTTP session for the metrics sources (the daemon may pass its shared one instead).
    Per-request timeouts are set by the fetch; this one only bounds a stuck connection."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=m.http_timeout_s),
        connector=aiohttp.TCPConnector(limit=8),
        trust_env=True,  # honour HTTPS_PROXY / NO_PROXY, as operators expect
    )


def _metric_label(r: MarketMetric) -> str:
    name = r.metadata.get("name")
    label = f"{r.metric_type}/{name}" if name else r.metric_type
    classification = r.metadata.get("classification")
    return f"{label} ({classification})" if classification else label


def _table(results: list[RunResult]) -> list[str]:
    lines = [f"{'source':<11} {'metric':<44} {'source time (UTC)':<26} value"]
    for res in results:
        if not res.ok:
            lines.append(f"{res.job:<11} FAILED {res.reason}: {res.detail}")
            continue
        shown = res.records
        if res.history and len(res.records) > 1:
            # thousands of days: show the newest, summarise the rest
            first = min(r.timestamp for r in res.records).date()
            last = max(r.timestamp for r in res.records).date()
            lines.append(f"{res.job:<11} history loaded: {len(res.records)} days, "
                         f"{first} .. {last}")
            shown = [max(res.records, key=lambda r: r.timestamp)]
        for r in shown:
            ts = r.timestamp.strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"{res.job:<11} {_metric_label(r):<44} {ts:<26} {r.value}")
    return lines


def _json_lines(results: list[RunResult]) -> list[str]:
    out: list[str] = []
    for res in results:
        if not res.ok:
            out.append(orjson.dumps({"source": res.job, "error": res.reason,
                                     "detail": res.detail}).decode())
            continue
        for r in res.records:
            out.append(orjson.dumps({
                "source": res.job, "metric_type": r.metric_type,
                "name": r.metadata.get("name", ""), "timestamp": r.timestamp.isoformat(),
                "value": r.value, "metadata": r.metadata}).decode())
    return out


def _writer_line(sink_stats: dict[str, Any]) -> str:
    s = sink_stats.get("market_metrics", {})
    written = s.get("rows_written", "?")
    dupes = s.get("duplicates_skipped", "?")
    problems = {k: s[k] for k in ("rows_rejected", "rows_quarantined", "rows_spooled")
                if s.get(k)}
    extra = "".join(f", {v} {k.removeprefix('rows_')}" for k, v in problems.items())
    return f"market_metrics: {written} rows written, {dupes} already stored{extra}"


def report(results: list[RunResult], fmt: str, sink_stats: dict[str, Any]) -> list[str]:
    """What ``--once`` prints; raises ``ExchangeError`` (one line) when every source failed."""
    if results and not any(r.ok for r in results):
        why = "; ".join(f"{r.job}: {r.reason} ({(r.detail or '')[:120]})" for r in results)
        raise ExchangeError(f"every metrics source failed: {why}")
    if fmt == "json":
        return _json_lines(results)
    return [*_table(results), _writer_line(sink_stats)]


@contextlib.asynccontextmanager
async def _wired(settings: Settings,
                 m: MetricsSettings) -> AsyncIterator[tuple[MetricsService, Any]]:
    # Imported here: `ingest metrics --help` must not need the database layer to load.
    from ingest.db.bootstrap import bootstrap
    from ingest.db.local import database_settings
    from ingest.db.pool import connect_with_retry
    from ingest.sink import open_side_sink

    async with database_settings(settings) as resolved:
        pool = await connect_with_retry(resolved.database)
        try:
            await bootstrap(pool, resolved)
            sink = await open_side_sink(pool, resolved.writer, "metrics")
            try:
                async with new_session(m) as session:
                    yield MetricsService(m, session, sink, pool=pool), sink
            finally:
                await sink.close()
        finally:
            await pool.close()


async def _forever(service: MetricsService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await service.run(stop)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    m = settings.metrics
    if args.no_history:
        m = dataclasses.replace(m, load_fear_greed_history=False)
    if args.once:
        m = dataclasses.replace(m, enabled=True)  # asked for explicitly
    elif not m.enabled:
        print("metrics are disabled in the settings (metrics.enabled = false)")
        return 0
    async with _wired(settings, m) as (service, sink):
        if not args.once:
            await _forever(service)
            return 0
        results = await service.run_once()
        await sink.flush()
        lines = report(results, args.format, sink.stats())
    print("\n".join(lines))
    return 0

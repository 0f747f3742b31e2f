"""``ingest run``: the composition root. The only place that wires objects together.

Startup order: resolve the database (the embedded cluster when none is configured),
connect with retries, apply pending migrations and reconcile policies, and only then start
the components, each a task in one ``TaskGroup``. SIGTERM/SIGINT set ``stop_event``; every
component watches it and finishes its work; whatever has not finished within
``writer.shutdown_budget_s`` is cancelled. A component that crashes stops the service with
exit code 1 (the container restarts it) rather than leaving it half-alive.

Adding a component: write ``def start_x(service: Service) -> None`` that calls
``service.start("x", coroutine)``, and append it to ``COMPONENTS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import time
import types
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg

from ingest.backfill_repair import GapRepairer
from ingest.db.bootstrap import BootstrapResult, bootstrap
from ingest.db.local import database_settings
from ingest.db.policies import retention_loop
from ingest.db.pool import connect_with_retry
from ingest.errors import ConfigError, IngestError
from ingest.exchanges.connector import Connector
from ingest.exchanges.plan import plan_streams
from ingest.feeds import build_feeds, check_feeds, run_feeds
from ingest.health import HealthServer
from ingest.logs import get_logger
from ingest.metrics.service import MetricsService
from ingest.observe import Observer, summary_loop
from ingest.settings import Settings, parse_shard, port_number, redact_dsn
from ingest.sink import Sink
from ingest.transport.http import HttpClient
from ingest.transport.recorder import Recorder

log = get_logger("ingest.daemon")
T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--simulate", action="store_true",
                        help="point the exchanges and metrics sources at `ingest simulate`")
    parser.add_argument("--record", metavar="DIR", help="record raw websocket frames under DIR")
    parser.add_argument("--health-port", type=port_number, metavar="P",
                        help="port for /healthz, /readyz and /metrics (default: health.port)")
    parser.add_argument("--shard", metavar="K/N",
                        help="take only the (exchange, symbol) pairs hashing to K of N")


@dataclass(frozen=True)
class RunOptions:
    simulate: bool = False
    record_dir: str = ""
    health_port: int = 8080
    shard: tuple[int, int] = (0, 1)


def options_from(args: argparse.Namespace, settings: Settings) -> RunOptions:
    """Command line over settings. Raises ConfigError for a malformed --shard."""
    if getattr(args, "shard", None):
        shard = parse_shard(args.shard)
    else:
        shard = parse_shard(settings.service.shard, settings.source, "service.shard")
    port = getattr(args, "health_port", None)
    record = getattr(args, "record", None)
    record_dir = record or settings.service.record_dir
    if record_dir:
        _check_record_dir(record_dir, "--record" if record else
                          f"service.record_dir in {settings.source}")
    return RunOptions(
        simulate=bool(getattr(args, "simulate", False)),
        record_dir=record_dir,
        health_port=settings.health.port if port is None else port,
        shard=shard,
    )


def _check_record_dir(path: str, where: str) -> None:
    """Create the recording directory now, so a path that cannot be one is a clear error
    before the database and the exchanges are touched."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create the directory {path!r}: "
                          f"{exc.strerror or exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: the directory {path!r} is not writable")


@dataclass
class Service:
    """What components get: settings, the pool, the stop signal, and ``start``."""

    settings: Settings
    options: RunOptions
    pool: asyncpg.Pool
    stop_event: asyncio.Event
    bootstrap: BootstrapResult
    _tg: asyncio.TaskGroup
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # What /metrics, /readyz and the summary line read; components register as they start.
    observer: Observer = field(default_factory=Observer)
    health: HealthServer | None = None  # serving since before the database connected

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` for the life of the service. It must return soon after
        ``stop_event`` is set (after flushing what it holds)."""
        task = self._tg.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def drain(self, budget_s: float) -> None:
        """Wait for the components to finish; cancel whatever is still running after
        ``budget_s`` (the container's stop budget is about 8 s)."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=budget_s)
        for task in pending:
            log.warning("component did not stop within the shutdown budget; cancelling",
                        component=task.get_name(), budget_s=budget_s)
            task.cancel()


def start_retention(service: Service) -> None:
    # TimescaleDB drops old chunks by its own policy jobs; plain PostgreSQL needs us.
    if not service.bootstrap.timescaledb:
        service.start("retention", retention_loop(service.pool, service.settings,
                                                  service.stop_event))


def simulated(settings: Settings, endpoints: dict[str, dict[str, str]]) -> Settings:
    """``settings`` with every exchange and metrics endpoint pointed at a local simulator."""
    exchanges = {name: dataclasses.replace(ex, **endpoints[name])
                 for name, ex in settings.exchanges.items() if name in endpoints}
    metrics = dataclasses.replace(settings.metrics, **endpoints["metrics"])
    return dataclasses.replace(settings, exchanges=types.MappingProxyType(exchanges),
                               metrics=metrics)


async def _start_simulator(settings: Settings) -> Any:
    from ingest.sim.server import start_simulator  # only the demo needs it

    symbols = sorted({sym for ex in settings.enabled_exchanges().values() for sym in ex.symbols})
    sim = await start_simulator(port=0, symbols=tuple(symbols), rate=50.0)
    log.info("simulator started in-process (--simulate)", url=sim.url, symbols=symbols)
    return sim


async def _pipeline(service: Service) -> None:
    """The market-data path: connectors → Sink → PostgreSQL, the metrics scheduler and
    gap repair feeding the same Sink. On stop: the producers stop first, then the Sink
    drains (what it cannot write within its share of the budget goes to the spool)."""
    settings, opts, budget_s = service.settings, service.options, service.settings.writer.shutdown_budget_s
    sim = await _start_simulator(settings) if opts.simulate else None
    if sim is not None:
        settings = simulated(settings, sim.endpoints())
    # Producers get up to a quarter of the stop budget to close their sockets; the Sink
    # gets the rest, so the whole drain fits the container's stop timeout.
    producer_budget_s = min(2.0, budget_s * 0.25)
    writer_settings = dataclasses.replace(
        settings.writer, shutdown_budget_s=max(0.5, budget_s - 2 * producer_budget_s - 0.5))
    sink = Sink(service.pool, writer_settings)
    recorder = Recorder(opts.record_dir) if opts.record_dir else None
    http = HttpClient(recorder=recorder)  # REST book images are part of a recording
    session = aiohttp.ClientSession()
    repairer = GapRepairer(settings, sink, service.pool) if settings.backfill.gap_repair else None
    if repairer is not None:  # its jobs' progress shows on /metrics and in the summary
        repairer.backfiller.progress = service.observer.backfill
    try:
        await sink.start()
        await http.start()
        connectors = build_feeds(settings, sink, http, recorder=recorder, shard=opts.shard,
                                 on_reconnect=repairer.on_reconnect if repairer else None)
        await check_markets(connectors)
        metrics = (MetricsService(settings, session, sink, pool=service.pool)
                   if settings.metrics.enabled else None)
        service.observer.set_sink(sink)
        service.observer.add_connectors(connectors)
        service.observer.set_metrics_service(metrics)
        service.observer.set_gap_repair(repairer)
        service.observer.set_recorder(recorder)
        if repairer is not None:
            repairer.start(opts.shard)  # fills what was missed while we were down, in the background
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_feeds(connectors, service.stop_event), name="feeds")
            if metrics is not None:
                tg.create_task(metrics.run(service.stop_event), name="metrics")
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(producer_budget_s):
                if repairer is not None:
                    await repairer.close()
                await session.close()
                await http.close()
        await sink.close()
        if recorder is not None:
            recorder.close(timeout_s=1.0)
        if sim is not None:
            await sim.stop()


MARKET_CHECK_BUDGET_S = 30.0


async def check_markets(connectors: Sequence[Connector]) -> None:
    """A configured symbol the exchange does not list is a ConfigError (exit 2) before any
    stream starts. An exchange that cannot be asked in time is logged and not waited for:
    its streams will tell (a network outage must not keep the service from starting)."""
    try:
        async with asyncio.timeout(MARKET_CHECK_BUDGET_S):
            await check_feeds(connectors)
    except TimeoutError:
        log.warning("could not check the exchanges' market lists in time; starting anyway",
                    budget_s=MARKET_CHECK_BUDGET_S)


def start_pipeline(service: Service) -> None:
    service.start("pipeline", _pipeline(service))


def check_streams(settings: Settings) -> None:
    """Unknown symbols, unsupported intervals or depths: one ConfigError before anything starts."""
    for exchange, ex in settings.enabled_exchanges().items():
        plan_streams(exchange, ex, ex.symbols)


def start_observability(service: Service) -> None:
    """/healthz, /readyz and /metrics (unless health.enabled is false) and the periodic
    summary line. Everything is read when asked, so components may register later."""
    settings = service.settings
    if service.health is not None:
        service.health.pool = service.pool  # /readyz now checks the database for real
    elif settings.health.enabled:
        server = HealthServer(settings, pool=service.pool, observer=service.observer,
                              port=service.options.health_port)
        service.start("health", server.serve(service.stop_event))
    service.start("summary", summary_loop(service.observer, settings.logging.summary_interval_s,
                                          service.stop_event))


COMPONENTS: list[Callable[[Service], None]] = [start_observability, start_retention,
                                               start_pipeline]


async def _unless_stopped(coro: Coroutine[Any, Any, T], stop_event: asyncio.Event) -> T | None:
    """``await coro``, unless the stop signal comes first: then cancel it and return None.
    A SIGTERM while the database is still unreachable must not wait out the retries."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop_event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def run_service(settings: Settings, args: argparse.Namespace,
                      stop_event: asyncio.Event) -> int:
    """Run until ``stop_event`` is set; 0 after an orderly drain, 1 if a component failed.
    ``settings.database.url`` must be set (``run`` resolves the embedded cluster)."""
    options = options_from(args, settings)
    # /healthz and /readyz answer from the start: while the database is unreachable or the
    # migrations run, /readyz is 503 naming what is not ready (a probe must not see a
    # refused connection and restart the container mid-migration).
    health = None
    if settings.health.enabled:
        health = HealthServer(settings, pool=None, port=options.health_port)
        try:
            await health.start()
        except OSError as exc:
            raise IngestError(f"health server: cannot listen on {settings.health.host}:"
                              f"{options.health_port}: {exc.strerror or exc}") from None
    try:
        return await _run_connected(settings, options, stop_event, health)
    finally:
        if health is not None:
            await health.stop()


async def _run_connected(settings: Settings, options: RunOptions, stop_event: asyncio.Event,
                         health: HealthServer | None) -> int:
    pool = await _unless_stopped(connect_with_retry(settings.database), stop_event)
    if pool is None:
        log.info("stopped while waiting for the database")
        return 0
    if health is not None:
        health.pool = pool  # /readyz: database reachable; schema pending until bootstrapped
    try:
        boot = await _unless_stopped(bootstrap(pool, settings), stop_event)
        if boot is None:
            log.info("stopped during the schema bootstrap (the current migration rolled back)")
            return 0
        started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tg:
                service = Service(settings, options, pool, stop_event, boot, tg)
                if health is not None:
                    service.health, service.observer = health, health.observer
                for component in COMPONENTS:
                    component(service)
                log.info("ingest started", database=redact_dsn(settings.database.url),
                         timescaledb=boot.timescaledb, migrations_applied=boot.migrations.applied,
                         shard=f"{options.shard[0]}/{options.shard[1]}",
                         simulate=options.simulate, record_dir=options.record_dir or None,
                         health_port=options.health_port,
                         components=[t.get_name() for t in service.tasks])
                await stop_event.wait()
                log.info("stopping: draining components",
                         budget_s=settings.writer.shutdown_budget_s)
                await service.drain(settings.writer.shutdown_budget_s)
        except* ConfigError as group:
            # e.g. the exchange does not list a configured symbol: a user mistake, exit 2
            for exc in group.exceptions:
                log.error("configuration error; stopping the service", error=str(exc))
            stop_event.set()
            return_code = 2
        except* Exception as group:
            for exc in group.exceptions:
                log.error("component failed; stopping the service",
                          error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            stop_event.set()
            return_code = 1
        else:
            return_code = 0
        log.info("ingest stopped", uptime_s=round(time.monotonic() - started, 1),
                 exit_code=return_code)
        return return_code
    finally:
        try:
            await asyncio.wait_for(pool.close(), timeout=5)
        except TimeoutError:
            pool.terminate()


def _install_signals(stop_event: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if stop_event.is_set():
            # A second signal: stop waiting for the drain.
            log.warning("second signal; stopping now", signal=signal.Signals(signum).name)
            if main_task is not None:
                main_task.cancel()
            return
        log.info("signal received; shutting down", signal=signal.Signals(signum).name)
        stop_event.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    def remove() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    return remove


async def run(args: argparse.Namespace, settings: Settings) -> int:
    options_from(args, settings)  # fail on a bad --shard or --record before starting anything
    check_streams(settings)
    stop_event = asyncio.Event()
    remove_signals = _install_signals(stop_event)
    try:
        async with database_settings(settings) as resolved:
            return await run_service(resolved, args, stop_event)
    except asyncio.CancelledError:
        if stop_event.is_set():  # a second signal cut the drain short
            log.warning("stopped without finishing the drain")
            return 1
        raise
    finally:
        remove_signals()

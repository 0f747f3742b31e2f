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
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from ingest.db.bootstrap import BootstrapResult, bootstrap
from ingest.db.local import database_settings
from ingest.db.policies import retention_loop
from ingest.db.pool import connect_with_retry
from ingest.errors import ConfigError
from ingest.logs import get_logger
from ingest.settings import Settings, parse_shard, redact_dsn

log = get_logger("ingest.daemon")
T = TypeVar("T")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--simulate", action="store_true",
                        help="point the exchanges and metrics sources at `ingest simulate`")
    parser.add_argument("--record", metavar="DIR", help="record raw websocket frames under DIR")
    parser.add_argument("--health-port", type=_port, metavar="P",
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
    shard_text = getattr(args, "shard", None) or settings.service.shard
    try:
        shard = parse_shard(shard_text)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("service.shard", "--shard")) from None
    port = getattr(args, "health_port", None)
    return RunOptions(
        simulate=bool(getattr(args, "simulate", False)),
        record_dir=getattr(args, "record", None) or settings.service.record_dir,
        health_port=settings.health.port if port is None else port,
        shard=shard,
    )


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


COMPONENTS: list[Callable[[Service], None]] = [start_retention]


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
    pool = await _unless_stopped(connect_with_retry(settings.database), stop_event)
    if pool is None:
        log.info("stopped while waiting for the database")
        return 0
    try:
        boot = await _unless_stopped(bootstrap(pool, settings), stop_event)
        if boot is None:
            log.info("stopped during the schema bootstrap (the current migration rolled back)")
            return 0
        started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as tg:
                service = Service(settings, options, pool, stop_event, boot, tg)
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
    options_from(args, settings)  # fail on a bad --shard before starting anything
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

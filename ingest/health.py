"""``/healthz``, ``/readyz`` and ``/metrics`` on one small aiohttp server.

    observer = Observer()
    server = HealthServer(settings, pool=pool, observer=observer, port=options.health_port)
    await server.start()            # port 0: an ephemeral port, see ``server.port``
    ...
    await server.stop()

- ``/healthz``: the process answers (200 ``{"status": "ok"}``). Liveness only: a database
  outage must not make the orchestrator restart a service that is spooling correctly.
- ``/readyz``: 200 when the database answers ``SELECT 1``, the schema has no pending
  migration, and every configured stream is connected or has been reconnecting for less than
  its exchange's ``stale_after_s``; otherwise 503 with a JSON body naming what is not ready.
- ``/metrics``: Prometheus text format from ``observe.IngestCollector``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from prometheus_client.exposition import choose_encoder

from ingest.db import migrate
from ingest.logs import get_logger
from ingest.observe import ConnectorLike, Observer, Snapshot, StatsSource, metrics_registry
from ingest.settings import Settings

log = get_logger("ingest.health")

DB_CHECK_TIMEOUT_S = 2.0  # a probe must answer well inside the orchestrator's own timeout
SCHEMA_RECHECK_S = 30.0  # migrations change only on upgrade: re-read the ledger this often

# Returns the problems with the schema; empty when it is current.
SchemaCheck = Callable[[asyncpg.Pool], Awaitable[list[str]]]


async def pending_migrations(pool: asyncpg.Pool) -> list[str]:
    """Migrations the database lacks (or whose file changed since it was applied). Skipped
    TimescaleDB migrations on plain PostgreSQL are fine: that is a supported layout."""
    problems = []
    for m in await migrate.status(pool):
        label = f"{m.version:04d}_{m.name}"
        if m.state == "pending":
            problems.append(f"{label} pending (run `ingest db upgrade`)")
        elif m.checksum_changed:
            problems.append(f"{label} changed since it was applied")
    return problems


@dataclass
class Readiness:
    ready: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        failing = [name for name, c in self.checks.items() if not c["ok"]]
        return {"status": "ready" if self.ready else "not ready", "failing": failing,
                "checks": self.checks}


def stream_readiness(snap: Snapshot, started_wall: float) -> dict[str, Any]:
    """Every stream connected, or down for less than its exchange's ``stale_after_s``.

    "Down since" is the later of the process start and the socket's last frame or connect
    (wall clock, from the connection's stats), so a reconnect in progress does not flap
    readiness while a stream that stays away past its budget does."""
    late: list[str] = []
    reconnecting: list[str] = []
    for ex, health in snap.health.items():
        budget = snap.stale_after_s.get(ex, 60.0)
        conns = snap.connectors.get(ex, {}).get("connections", {})
        for key, s in health.get("streams", {}).items():
            if s.get("connected"):
                continue
            c = conns.get(f"{ex}.{s.get('connection')}", {})
            since = max(started_wall, c.get("last_message_ts") or 0.0,
                        c.get("last_connect_ts") or 0.0)
            down_s = snap.wall - since
            entry = f"{ex} {key} ({s.get('state')}, {down_s:.0f} s)"
            (late if down_s > budget else reconnecting).append(entry)
    out: dict[str, Any] = {"ok": not late,
                           "streams": sum(len(h.get("streams", {})) for h in snap.health.values())}
    if late:
        out["not_connected"] = sorted(late)
    if reconnecting:
        out["reconnecting"] = sorted(reconnecting)
    return out


class HealthServer:
    def __init__(
        self,
        settings: Settings,
        *,
        pool: asyncpg.Pool | None,
        observer: Observer | None = None,
        connectors: Iterable[ConnectorLike] = (),
        sink: StatsSource | None = None,
        metrics_service: StatsSource | None = None,
        schema_check: SchemaCheck = pending_migrations,
        port: int | None = None,
        db_timeout_s: float = DB_CHECK_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.pool = pool  # may be set later: /readyz says "not connected" until then
        self.observer = observer or Observer()
        if sink is not None:
            self.observer.set_sink(sink)
        self.observer.add_connectors(connectors)
        if metrics_service is not None:
            self.observer.set_metrics_service(metrics_service)
        self.schema_check = schema_check
        self.host = settings.health.host
        self.port = settings.health.port if port is None else port
        self.db_timeout_s = db_timeout_s
        self.registry = metrics_registry(self.observer)
        self._schema_ok_at: float | None = None  # monotonic time of the last passing check
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # the ephemeral port the OS chose
            self.port = int(self._runner.addresses[0][1])
        log.info("health server listening", host=self.host, port=self.port,
                 paths=["/healthz", "/readyz", "/metrics"])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve(self, stop_event: asyncio.Event) -> None:
        """The daemon's task: serve until ``stop_event``."""
        await self.start()
        try:
            await stop_event.wait()
        finally:
            await self.stop()

    # -- checks --------------------------------------------------------------------------

    async def _database(self) -> dict[str, Any]:
        if self.pool is None:
            return {"ok": False, "error": "not connected yet"}
        try:
            async with asyncio.timeout(self.db_timeout_s):
                await self.pool.fetchval("SELECT 1")
        except TimeoutError:
            return {"ok": False, "error": f"no answer to SELECT 1 within {self.db_timeout_s:g} s"}
        except Exception as exc:  # refused, reset, killed backend: all mean "not reachable"
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"ok": True}

    async def _schema(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._schema_ok_at is not None and now - self._schema_ok_at < SCHEMA_RECHECK_S:
            return {"ok": True}
        if self.pool is None:
            return {"ok": False, "error": "not connected yet"}
        try:
            async with asyncio.timeout(self.db_timeout_s):
                problems = await self.schema_check(self.pool)
        except Exception as exc:  # any failure to read the ledger means "not known current"
            self._schema_ok_at = None
            return {"ok": False, "error": f"cannot read migrations: {type(exc).__name__}: {exc}"[:300]}
        self._schema_ok_at = None if problems else now
        return {"ok": not problems, **({"problems": problems} if problems else {})}

    async def readiness(self) -> Readiness:
        db = await self._database()
        # Without a database the ledger cannot be read; say so once, not twice.
        schema = await self._schema() if db["ok"] else {"ok": False, "error": "database not reachable"}
        streams = stream_readiness(self.observer.snapshot(), self.observer.started_wall)
        checks = {"database": db, "schema": schema, "streams": streams}
        return Readiness(all(c["ok"] for c in checks.values()), checks)

    # -- handlers ------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        result = await self.readiness()
        return _json(200 if result.ready else 503, result.body())

    async def _metrics(self, request: web.Request) -> web.Response:
        # Content negotiation as prometheus_client's own handler does it: OpenMetrics when
        # the scraper asks for it (Prometheus does), else the classic text format.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")

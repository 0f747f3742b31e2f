"""Fixtures for the connector tests: a collecting sink, a scripted local websocket server,
a local aiohttp REST app, fast connector options. No database here (see test_e2e_sim)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from ingest.exchanges.connector import Connector, ConnectorOptions
from ingest.records import BookSnapshot, Candle, Record, Trade
from ingest.transport.backoff import BackoffPolicy
from ingest.transport.http import HttpClient, HttpConfig
from ingest.transport.ratelimit import RateLimiter

FAST_WS: dict[str, Any] = {
    "backoff": BackoffPolicy(base_s=0.01, cap_s=0.05, min_s=0.0, stable_after_s=3600),
    "proxy": None, "ping_interval_s": None, "watchdog_interval_s": 0.05,
    "close_timeout_s": 1.0, "rotation_overlap_s": 2.0,
}


def fast_options(**changes: Any) -> ConnectorOptions:
    base: dict[str, Any] = {
        "ws": FAST_WS, "connect_limiter": RateLimiter(1000, 1000),
        "resync_retry_base_s": 0.05, "resync_wait_image_s": 1.0,
    }
    base.update(changes)
    return ConnectorOptions(**base)


class FakeSink:
    """Collects what the connectors emit (stands in for ``ingest.sink.Sink``)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.open = asyncio.Event()
        self.open.set()

    def offer(self, records: list[Record]) -> int:
        if not self.open.is_set():  # cleared: backpressure
            return 0
        self.records.extend(records)
        return len(records)

    async def put_many(self, records: Any) -> None:
        await self.open.wait()  # cleared: backpressure
        self.records.extend(records)

    def trades(self) -> list[Trade]:
        return [r for r in self.records if isinstance(r, Trade)]

    def candles(self) -> list[Candle]:
        return [r for r in self.records if isinstance(r, Candle)]

    def snapshots(self, symbol: str | None = None) -> list[BookSnapshot]:
        return [r for r in self.records if isinstance(r, BookSnapshot)
                and (symbol is None or r.symbol == symbol)]


async def until(cond: Callable[[], object], timeout_s: float = 5.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)


@dataclass
class Conn:
    ws: ServerConnection
    path: str
    received: list[Any] = field(default_factory=list)  # decoded JSON messages

    @property
    def closed(self) -> bool:
        return self.ws.close_code is not None


OnMessage = Callable[["FakeWs", Conn, Any], Awaitable[None]]


class FakeWs:
    """A websocket server on 127.0.0.1:0; the test pushes frames and reads requests."""

    def __init__(self, *, gzip_frames: bool = False, on_message: OnMessage | None = None,
                 on_connect: Callable[[FakeWs, Conn], Awaitable[None]] | None = None) -> None:
        self.gzip_frames = gzip_frames
        self.on_message = on_message
        self.on_connect = on_connect
        self.conns: list[Conn] = []
        self.port = 0

    def url(self, path: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        conn = Conn(ws, ws.request.path)
        self.conns.append(conn)
        try:
            if self.on_connect is not None:
                await self.on_connect(self, conn)
            async for message in ws:
                msg = json.loads(message)
                conn.received.append(msg)
                if self.on_message is not None:
                    await self.on_message(self, conn, msg)
        except Exception:  # the client went away mid-scenario
            pass

    async def send(self, conn: Conn, obj: Any) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        await conn.ws.send(gzip.compress(text.encode()) if self.gzip_frames else text)

    def live(self, path_prefix: str = "") -> list[Conn]:
        return [c for c in self.conns if not c.closed and c.path.startswith(path_prefix)]

    async def broadcast(self, obj: Any, path_prefix: str = "") -> None:
        for conn in self.live(path_prefix):
            await self.send(conn, obj)


@pytest.fixture
async def fake_ws() -> AsyncIterator[Callable[..., Awaitable[FakeWs]]]:
    servers: list[Any] = []

    async def start(**kwargs: Any) -> FakeWs:
        srv = FakeWs(**kwargs)
        handle = await serve(srv.handle, "127.0.0.1", 0, ping_interval=None)
        srv.port = handle.sockets[0].getsockname()[1]
        servers.append(handle)
        return srv

    yield start
    for handle in servers:
        handle.close()
        await handle.wait_closed()


@pytest.fixture
async def rest_app() -> AsyncIterator[Callable[[list[web.RouteDef]], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(routes: list[web.RouteDef]) -> str:
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient(HttpConfig(timeout_s=5, backoff_base_s=0.01, backoff_cap_s=0.05,
                                     attempts=5)) as client:
        yield client


@asynccontextmanager
async def running(connector: Connector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(connector.run())
    try:
        yield task
    finally:
        await connector.close()
        await asyncio.wait_for(task, 10)

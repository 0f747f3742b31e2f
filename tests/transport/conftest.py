"""Shared helpers for transport tests: a fake clock and a local websocket server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "samples"


class FakeClock:
    """A monotonic clock the test moves; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


async def until(cond: Callable[[], object], timeout_s: float = 5.0, what: str = "") -> None:
    """Poll ``cond`` (cheap, generous timeout: correctness, not timing, is under test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)


@dataclass
class ServerConn:
    index: int
    ws: ServerConnection
    opened_at: float
    closed_at: float | None = None
    received: list[str | bytes] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    async def collect(self) -> None:
        """Read until the client goes away."""
        async for message in self.ws:
            self.received.append(message)
            self.received_at.append(asyncio.get_running_loop().time())


Behaviour = Callable[["WsServer", ServerConn], Awaitable[None]]


class WsServer:
    """A websocket server on 127.0.0.1:0 that records every connection it accepted."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or (lambda server, conn: conn.collect())
        self.conns: list[ServerConn] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        conn = ServerConn(len(self.conns), ws, loop.time())
        self.conns.append(conn)
        try:
            await self.behaviour(self, conn)
        except Exception:  # the client went away mid-scenario: fine for a test server
            pass
        finally:
            conn.closed_at = loop.time()


@pytest.fixture
async def ws_server() -> AsyncIterator[Callable[[Behaviour | None], Awaitable[WsServer]]]:
    servers: list[Any] = []

    async def start(behaviour: Behaviour | None = None) -> WsServer:
        srv = WsServer(behaviour)
        handle = await serve(srv._handle, "127.0.0.1", 0, ping_interval=None)
        srv.port = handle.sockets[0].getsockname()[1]
        servers.append(handle)
        return srv

    yield start
    for handle in servers:
        handle.close()
        await handle.wait_closed()

"""One websocket client of the simulator: a bounded send queue drained by a writer task.

Publishing never awaits a client: frames go into the client's queue, and a client whose
queue is full is disconnected (and logged) instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from ingest.sim.faults import FaultSpec, FrameFaults

log = structlog.get_logger("ingest.sim")
_ids = itertools.count(1)

Frame = str | bytes


class ClientConn:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        exchange: str,
        *,
        queue_max: int,
        faults: FaultSpec,
        seed: int,
    ) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.exchange = exchange
        self.path = request.path
        self._transport = request.transport
        self.queue: asyncio.Queue[Frame | None] = asyncio.Queue(queue_max)
        self._faults = (
            FrameFaults(faults, seed * 1_000_003 + self.id) if faults.touches_frames else None
        )
        self.topics: set[str] = set()
        self.opened_at = asyncio.get_running_loop().time()
        self.closed = False
        self.state: dict[str, Any] = {}  # protocol-specific (Binance combined flag, …)
        self.writer: asyncio.Task[None] | None = None

    def send(self, frame: Frame, *, data: bool = True) -> bool:
        """Queue a frame; data frames are subject to frame faults. False if the client is
        gone or was just dropped for being too slow."""
        if self.closed:
            return False
        frames = self._faults.apply(frame) if data and self._faults else [frame]
        for f in frames:
            try:
                self.queue.put_nowait(f)
            except asyncio.QueueFull:
                log.warning(
                    "sim.slow_client_dropped",
                    exchange=self.exchange,
                    conn=self.id,
                    queued=self.queue.qsize(),
                )
                self.abort()
                return False
        return True

    async def run_writer(self) -> None:
        try:
            while (frame := await self.queue.get()) is not None:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, like a network failure."""
        self.closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()

    async def close(self, code: int = 1000, message: str = "") -> None:
        """Close with a close frame, after the writer has flushed what is queued."""
        if self.closed:
            return
        self.closed = True
        if self.writer is not None and not self.queue.full():
            self.queue.put_nowait(None)  # the writer stops after the queued frames
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.writer), 1.0)
        await self.ws.close(code=code, message=message.encode())


TextHandler = Callable[[ClientConn, str], Awaitable[None]]
ControlHandler = Callable[[ClientConn, WSMsgType, bytes], Awaitable[None]]
Task = Callable[[ClientConn], Coroutine[Any, Any, None]]


async def _handle_text(conn: ClientConn, data: str | bytes, on_text: TextHandler) -> None:
    """One client request; a request the handler did not anticipate is logged, not fatal."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        await on_text(conn, text)
    except Exception:
        log.exception("sim.bad_client_message", exchange=conn.exchange, conn=conn.id,
                      message=text[:200])


async def serve(
    request: web.Request,
    *,
    exchange: str,
    register: Callable[[ClientConn], None],
    unregister: Callable[[ClientConn], None],
    on_text: TextHandler,
    queue_max: int,
    faults: FaultSpec,
    seed: int,
    on_control: ControlHandler | None = None,
    tasks: tuple[Task, ...] = (),
    setup: Callable[[ClientConn], None] | None = None,
) -> web.WebSocketResponse:
    """Run one websocket connection: reader loop here, writer and ``tasks`` beside it.

    With ``on_control`` set, ping and pong frames are handed to it (the server answers
    pings itself otherwise)."""
    ws = web.WebSocketResponse(
        autoping=on_control is None, compress=False, max_msg_size=1 << 20
    )
    await ws.prepare(request)
    conn = ClientConn(ws, request, exchange, queue_max=queue_max, faults=faults, seed=seed)
    if setup is not None:
        setup(conn)
    register(conn)
    conn.writer = asyncio.create_task(conn.run_writer())
    background = [conn.writer]
    background += [asyncio.create_task(task(conn)) for task in tasks]
    log.info("sim.ws_open", exchange=exchange, conn=conn.id, path=request.path_qs)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await _handle_text(conn, msg.data, on_text)
            elif on_control is not None and msg.type in (WSMsgType.PING, WSMsgType.PONG):
                await on_control(conn, msg.type, msg.data)
    finally:
        conn.closed = True
        unregister(conn)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        log.info("sim.ws_closed", exchange=exchange, conn=conn.id, code=ws.close_code)
    return ws

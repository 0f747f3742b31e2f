"""One websocket client of the simulator: a bounded send queue drained by a writer task.

Publishing never awaits a client: frames go into the client's queue, and a client whose
queue is full is disconnected (and logged) instead of buffering without bound.

The writer frames everything queued since its last turn itself (unmasked server frames, FIN
set, no extensions: what aiohttp's ``send_str``/``send_bytes`` write with ``compress=False``)
and hands it to the transport in one write, then waits on the response's ``drain()`` like
aiohttp's writer does, so a client that does not read still fills its queue and is dropped.
A frame per ``send_str`` costs more than the rest of publishing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import WSMsgType, web

from ingest.sim.faults import FaultSpec, FrameFaults

log = structlog.get_logger("ingest.sim")
_ids = itertools.count(1)

Frame = str | bytes

_TEXT, _BINARY = 0x80 | WSMsgType.TEXT, 0x80 | WSMsgType.BINARY  # FIN + opcode
_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack


def frame_header(first_byte: int, length: int) -> bytes:
    """RFC 6455 §5.2 header of an unmasked frame with a ``length``-byte payload."""
    if length < 126:
        return bytes((first_byte, length))
    if length < 1 << 16:
        return _LEN16(first_byte, 126, length)
    return _LEN64(first_byte, 127, length)


def encode_frames(frames: list[Frame]) -> bytes:
    """Websocket frames, back to back: str as text, bytes as binary."""
    if all(isinstance(f, str) and f.isascii() for f in frames):
        # The usual text batch: ASCII, so the headers can ride in the same str (as latin-1
        # characters) and the whole batch is encoded at once.
        text = _TEXT_HEADERS
        return "".join([part for f in frames for part in (text[len(f)], f)]).encode("latin-1")
    binary, parts = _BINARY_HEADERS, []
    for frame in frames:
        if isinstance(frame, str):
            payload = frame.encode()
            parts += (frame_header(_TEXT, len(payload)), payload)
        else:
            parts += (binary[len(frame)], frame)
    return b"".join(parts)


class _Headers(dict[int, Any]):
    """Frame headers by payload length, made once per length (up to 64 KiB)."""

    def __init__(self, first_byte: int, as_text: bool) -> None:
        super().__init__()
        self._first_byte, self._as_text = first_byte, as_text

    def __missing__(self, length: int) -> Any:
        header = frame_header(self._first_byte, length)
        if self._as_text:
            header = header.decode("latin-1")
        if length < 1 << 16:
            self[length] = header
        return header


_TEXT_HEADERS = _Headers(_TEXT, as_text=True)  # as latin-1 text
_BINARY_HEADERS = _Headers(_BINARY, as_text=False)


class Drainable(Protocol):
    async def drain(self) -> None: ...


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
        stream: Drainable | None = None,
    ) -> None:
        self.id = next(_ids)
        self.ws = ws
        self.exchange = exchange
        self.path = request.path
        self._transport = request.transport
        self._stream = stream  # what ws.prepare() returned: its drain() is flow control
        self._queue: deque[Frame | None] = deque()
        self._queue_max = queue_max
        self._wakeup: asyncio.Future[None] | None = None
        self._faults = (
            FrameFaults(faults, seed * 1_000_003 + self.id) if faults.touches_frames else None
        )
        self.topics: set[str] = set()
        self.opened_at = asyncio.get_running_loop().time()
        self.closed = False
        self.state: dict[str, Any] = {}  # protocol-specific (Binance combined flag, …)
        self.writer: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, frame: Frame, *, data: bool = True) -> bool:
        """Queue a frame; data frames are subject to frame faults. False if the client is
        gone or was just dropped for being too slow."""
        if self.closed:
            return False
        frames = self._faults.apply(frame) if data and self._faults else [frame]
        return self._put(frames) == len(frames)

    def send_many(self, frames: list[Frame]) -> int:
        """Queue data frames in order; how many were taken (all of them, unless the client
        is gone or is dropped on the way for being too slow)."""
        if self.closed:
            return 0
        if self._faults is not None:
            taken = 0
            while taken < len(frames) and self.send(frames[taken]):
                taken += 1
            return taken
        return self._put(frames)

    def _put(self, frames: Sequence[Frame | None]) -> int:
        queue = self._queue
        room = self._queue_max - len(queue)
        if len(frames) <= room:
            queue.extend(frames)
        elif room > 0:
            queue.extend(frames[:room])
        if queue and self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        if len(frames) > room:
            log.warning(
                "sim.slow_client_dropped", exchange=self.exchange, conn=self.id, queued=len(queue)
            )
            self.abort()
            return max(0, room)
        return len(frames)

    async def run_writer(self) -> None:
        queue, loop = self._queue, asyncio.get_running_loop()
        try:
            while True:
                if not queue:
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    continue
                batch: list[Frame] = []
                stop = False
                while queue:
                    frame = queue.popleft()
                    if frame is None:
                        stop = True
                        break
                    batch.append(frame)
                if batch:
                    self._write(encode_frames(batch))
                    if self._stream is not None:
                        await self._stream.drain()
                if stop:
                    return
        except (ConnectionError, RuntimeError):
            self.abort()

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if self.ws.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)

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
        if self.writer is not None and len(self._queue) < self._queue_max:
            self._put([None])  # the writer stops after the queued frames
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
    stream = await ws.prepare(request)
    conn = ClientConn(ws, request, exchange, queue_max=queue_max, faults=faults, seed=seed,
                      stream=stream)
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

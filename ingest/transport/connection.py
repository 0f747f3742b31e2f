"""One live websocket of a ``WsClient``: a reader task and a sender task.

The reader hands every frame to the handler (through its ``preprocess``) and queues the
replies it returns. Complete data frames are handed over straight from the protocol's
``data_received`` (``DirectClientConnection``): no queue, future and task switch per
frame, which was a tenth of the service's CPU at high rates. Frame order is kept: while
the handler waits for room downstream, reading is paused and the frames already parsed
wait in a backlog bounded by one socket read.

The sender drains a bounded priority queue (urgent replies first, then subscribes in
order) through this connection's own token bucket, and sends the handler's
application-level ping when it is due. Nothing here reconnects: when either task ends the
connection is *done* and the client's supervisor decides what happens next.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.protocol import CONNECTING, OPEN, Event

from ingest.errors import ExchangeError
from ingest.transport.framing import FrameRejected

if TYPE_CHECKING:
    from ingest.transport.ws import WsClient

Frame = bytes | str
Outgoing = str | bytes
Replies = Iterable[Outgoing] | None

_URGENT, _NORMAL = 0, 1
_CLOSE_TOO_BIG = 1009
_MAX_CLOSE_REASON = 100  # the protocol allows 123 bytes


class DirectClientConnection(ClientConnection):
    """A ``websockets`` client connection that hands each complete, unfragmented data
    message to ``on_message`` as it arrives, instead of queueing it for ``recv()``.

    The framing of those messages (FIN set, no RSV bit, text or binary, unmasked, within
    ``max_size``, nothing fragmented in progress) is read here, from the bytes of each
    socket read: the library's parser costs a generator run and a ``Frame`` per message,
    about 7 µs here, the loop below about 1. Every other frame (pings, pongs, close,
    fragments, compressed or malformed frames) is handed to the library whole, and so are
    the handshake and everything after the connection leaves the OPEN state, so the
    library's parser is always at a frame boundary when it is given bytes. Frames also take
    the library's path while ``on_message`` is unset or while its ``recv()`` queue holds
    earlier messages (order is kept). A partial frame at the end of a read waits here,
    bounded by ``max_size``."""

    on_message: Callable[[Frame], None] | None = None
    on_control: Callable[[], None] | None = None  # a ping or pong arrived
    on_invalid_text: Callable[[bytes], None] | None = None  # a text frame that is not UTF-8
    _partial: bytes | bytearray = b""  # the start of a frame that has not all arrived
    _head: bytes = b""  # the last bytes of an unfinished handshake response
    _library_reads: bool = False  # every byte goes to the library from now on

    def data_received(self, data: bytes) -> None:
        if self._library_reads:
            super().data_received(data)
            return
        state = self.protocol.state
        if state is not OPEN:
            if state is not CONNECTING:  # we sent a close frame: the library reads the rest
                self._hand_over(bytes(self._partial) + data, 0)
                return
            data = self._handshake(data)
            if not data:
                return
        if self._partial:
            buf: bytes | bytearray = self._partial
            buf += data  # a bytearray: amortised growth while a large frame arrives
        else:
            buf = data
        self._frames(buf)

    def _handshake(self, data: bytes) -> bytes:
        """Bytes before the end of the HTTP response go to the library; the frames that
        came in the same read are returned."""
        window = self._head + data
        end = window.find(b"\r\n\r\n")
        if end < 0:
            self._head = window[-3:]
            super().data_received(data)
            return b""
        cut = end + 4 - len(self._head)
        self._head = b""
        super().data_received(data[:cut])
        rest = data[cut:]
        if self.protocol.state is not OPEN:
            self._library_reads = True
            if rest:
                super().data_received(rest)
            return b""
        return rest

    def _frames(self, buf: bytes | bytearray) -> None:
        proto = self.protocol
        max_size = proto.max_message_size
        size = len(buf)
        pos = 0
        while size - pos >= 2:
            head1, head2 = buf[pos], buf[pos + 1]
            length = head2 & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                length = int.from_bytes(buf[start:start + 2])
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                length = int.from_bytes(buf[start:start + 8])
                start += 8
            if (max_size is not None and length > max_size) or head2 & 0x80:
                # Too big (1009) or masked (1002): the library refuses it from its header.
                self._hand_over(buf, pos)
                return
            end = start + length
            if end > size:
                break
            on_message = self.on_message
            if ((head1 == 0x81 or head1 == 0x82) and on_message is not None
                    and proto.current_size is None
                    and not self.recv_messages.frames.queue):
                if head1 == 0x82:
                    on_message(bytes(buf[start:end]))
                else:
                    try:
                        text = str(buf[start:end], "utf-8")
                    except UnicodeDecodeError:  # the library checks this only in recv()
                        if self.on_invalid_text is not None:
                            self.on_invalid_text(bytes(buf[start:end]))
                    else:
                        on_message(text)
            else:
                super().data_received(bytes(buf[pos:end]))
                if proto.state is not OPEN:  # closing, or the library failed the connection
                    self._hand_over(buf, end)
                    return
            pos = end
        if pos >= size:
            self._partial = b""
        elif buf is self._partial:  # the start of a large frame, growing read by read
            del buf[:pos]  # in place: no copy of what has arrived so far
        else:
            self._partial = bytearray(buf[pos:])

    def _hand_over(self, buf: bytes | bytearray, pos: int) -> None:
        self._library_reads = True
        self._partial = b""
        if pos < len(buf):
            super().data_received(bytes(buf[pos:]))

    def process_event(self, event: Event) -> None:
        # Frames the library parsed: see the class docstring for which.
        if (type(event) is WsFrame and self.on_control is not None
                and (event.opcode is Opcode.PING or event.opcode is Opcode.PONG)):
            self.on_control()
        on_message = self.on_message
        if (on_message is not None and type(event) is WsFrame and event.fin
                and not self.recv_messages.frames.queue):
            opcode = event.opcode
            if opcode is Opcode.TEXT:
                try:
                    text = bytes(event.data).decode()
                except UnicodeDecodeError:  # the library checks this only in recv()
                    if self.on_invalid_text is not None:
                        self.on_invalid_text(bytes(event.data))
                    return
                on_message(text)
                return
            if opcode is Opcode.BINARY:
                on_message(bytes(event.data))
                return
        super().process_event(event)


class WsClosed(ExchangeError):
    """The connection is closed (or closing): the message was not sent."""


def snippet(frame: Frame, limit: int = 200) -> str:
    """A loggable prefix of a frame."""
    text = frame[:limit] if isinstance(frame, str) else repr(frame[:limit])
    return text if len(frame) <= limit else f"{text}…"


class WsConnection:
    def __init__(self, client: WsClient, conn_id: str, url: str, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        self.client = client
        self.id = conn_id
        self.url = url
        self.opened_at = client.clock()
        self.last_frame_at = self.opened_at  # any frame: data, ping or pong
        self.last_data_at = self.opened_at
        self.frames = 0
        self.error = ""  # why it ended, when it was not our choice
        self._ws = ws
        self._limiter = client.send_limiter_factory()
        self._queue: asyncio.PriorityQueue[tuple[int, int, Outgoing]] = asyncio.PriorityQueue(
            client.config.send_queue_size
        )
        self._seq = itertools.count()
        self._done: asyncio.Future[None] = loop.create_future()
        self._first_frame: asyncio.Future[None] = loop.create_future()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed_by_us = False
        self._unsent = 0  # queued messages that never reached the socket
        self._released = False
        # Frames that arrived while the handler waits for room (reading is paused then).
        self._backlog: collections.deque[Frame] | None = None
        self._drainer: asyncio.Task[None] | None = None
        if isinstance(ws, DirectClientConnection):
            ws.on_message = self._on_direct
            ws.on_control = self._on_ping_or_pong
            ws.on_invalid_text = self._on_invalid_text

    def __repr__(self) -> str:
        return f"<WsConnection {self.id} {self.url} {'closed' if self.closed else 'open'}>"

    @property
    def closed(self) -> bool:
        return self._done.done()

    @property
    def close_code(self) -> int | None:
        """The peer's close code, else ours (1009 for a frame too big), else 1006."""
        proto = self._ws.protocol
        frame = proto.close_rcvd or proto.close_sent
        if frame is not None:
            return int(frame.code)
        code = self._ws.close_code
        return None if code is None else int(code)

    @property
    def close_reason(self) -> str:
        proto = self._ws.protocol
        frame = proto.close_rcvd or proto.close_sent
        return frame.reason if frame is not None else ""

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read(), name=f"{self.id}.read"),
            asyncio.create_task(self._send_loop(), name=f"{self.id}.send"),
        ]

    # -- sending --------------------------------------------------------------------------

    async def send(self, message: Outgoing, *, urgent: bool = False) -> None:
        """Queue ``message``; waits while the queue is full. Raises ``WsClosed``."""
        if self.closed:
            raise WsClosed(f"{self.id} is closed")
        item = (_URGENT if urgent else _NORMAL, next(self._seq), message)
        if not self._queue.full():
            self._queue.put_nowait(item)
            return
        put = asyncio.ensure_future(self._queue.put(item))
        try:
            await asyncio.wait({put, self._done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()
        if self.closed:
            raise WsClosed(f"{self.id} closed while sending")

    def room(self) -> int:
        """How many more messages the send queue takes now (0 when closed)."""
        if self.closed:
            return 0
        return self._queue.maxsize - self._queue.qsize()

    def send_nowait(self, message: Outgoing, *, urgent: bool = False) -> bool:
        """Queue ``message`` if there is room; False when closed or full."""
        if self.closed or self._queue.full():
            return False
        self._queue.put_nowait((_URGENT if urgent else _NORMAL, next(self._seq), message))
        return True

    async def drain(self) -> None:
        """Wait until everything queued so far is on the wire.

        Raises ``WsClosed`` if the connection ended with messages unsent; one that ends
        after sending them all is left to the supervisor, like any other lost socket.
        """
        join = asyncio.ensure_future(self._queue.join())
        try:
            await asyncio.wait({join, self._done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            join.cancel()
        if self._unsent:
            raise WsClosed(f"{self.id} closed with {self._unsent} messages unsent")

    async def wait_first_frame(self, timeout_s: float) -> bool:
        await asyncio.wait({self._first_frame, self._done}, timeout=timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
        return self._first_frame.done()

    async def _send_loop(self) -> None:
        interval = self.client.handler.app_ping_interval_s
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + interval if interval else None
        try:
            while True:
                if next_ping is not None and loop.time() >= next_ping:
                    # Checked first so a long subscribe backlog cannot starve the ping.
                    next_ping = loop.time() + (interval or 0.0)
                    ping = self._app_ping()
                    if ping is not None:
                        await self._transmit(ping)
                    continue
                timeout = None if next_ping is None else next_ping - loop.time()
                try:
                    async with asyncio.timeout(timeout):
                        _, _, message = await self._queue.get()
                except TimeoutError:
                    continue
                try:
                    await self._transmit(message)
                except BaseException:
                    self._unsent += 1
                    raise
                finally:
                    self._queue.task_done()
        except ConnectionClosed:
            pass
        except Exception as exc:
            self._fail("send", exc)
        finally:
            self._finish()

    def _fail(self, where: str, exc: Exception) -> None:
        # A bug or an unexpected library error: end this connection (the client reconnects)
        # rather than leave a socket nobody reads or writes.
        self.error = f"{where}: {exc!r}"[:200]
        self.client.log.error("ws.task_failed", conn=self.id, task=where, error=self.error)

    def _app_ping(self) -> Outgoing | None:
        try:
            return self.client.handler.app_ping()
        except Exception as exc:
            self.client.log.error("ws.app_ping_failed", conn=self.id, error=repr(exc)[:300])
            return None

    async def _transmit(self, message: Outgoing) -> None:
        await self._limiter.acquire()
        await self._ws.send(message)
        self.client.stats.messages_sent += 1
        if self.client.recorder is not None:
            self.client.recorder.sent(self.id, self.url, time.time(), message)

    # -- receiving ------------------------------------------------------------------------

    async def _read(self) -> None:
        """Frames the library queued for ``recv()`` (see ``DirectClientConnection``); the
        loop also ends when the socket does."""
        try:
            async for message in self._ws:
                if self._backlog is not None:
                    # Downstream is full and the drainer holds earlier frames: this one
                    # goes after them, and nothing more is taken from the library's queue
                    # (its own flow control then holds the socket) until they are done.
                    self._backlog.append(message)
                    if self._drainer is not None:
                        await asyncio.shield(self._drainer)
                    continue
                self._deliver(message)
        except ConnectionClosedError as exc:
            if exc.sent is not None and exc.sent.code == _CLOSE_TOO_BIG:
                self.client.stats.oversize_frames += 1
                self.error = f"frame larger than {self.client.config.max_frame_bytes} bytes"
            elif not self.error:
                self.error = str(exc)[:200]
        except ConnectionClosed:
            pass
        except Exception as exc:
            self._fail("read", exc)
        finally:
            self._finish()

    def _on_ping_or_pong(self) -> None:
        # Proof the socket is alive (Binance pings every 20 s): a socket whose streams are
        # all quiet (illiquid pairs) is not dead. Quiet streams are the watchdog's business.
        self.last_frame_at = self.client.clock()

    def _on_invalid_text(self, data: bytes) -> None:
        # One bad frame is counted and logged, never fatal (as a parser's refusal).
        self.client.stats.frames_rejected += 1
        self.client.log.warning("ws.frame_rejected", conn=self.id, reason="invalid_utf8",
                                error="text frame is not UTF-8", frame=snippet(data))

    def _on_direct(self, message: Frame) -> None:
        if self._backlog is not None:  # the handler is waiting: keep the order
            self._backlog.append(message)
            return
        self._deliver(message)

    def _deliver(self, message: Frame) -> None:
        replies = self._on_frame(message)
        if replies is not None and inspect.isawaitable(replies):
            # Downstream is full: stop reading until the handler has its room, so the
            # exchange's own TCP window holds what comes next.
            self._backlog = collections.deque()
            self._pause_reading(True)
            self._drainer = asyncio.create_task(self._drain(replies, message),
                                                name=f"{self.id}.drain")
            return
        if replies:
            self._queue_replies(replies)

    async def _drain(self, pending: Awaitable[Replies], message: Frame) -> None:
        backlog = self._backlog
        assert backlog is not None
        try:
            while True:
                replies = await self._await_handler(pending, message)
                if replies:
                    self._queue_replies(replies)
                while backlog:
                    message = backlog.popleft()
                    replies = self._on_frame(message)
                    if replies is not None and inspect.isawaitable(replies):
                        pending = replies
                        break
                    if replies:
                        self._queue_replies(replies)
                else:
                    return
        except Exception as exc:
            self._fail("read", exc)
            self._finish()
        finally:
            self._backlog = None
            self._drainer = None
            self._pause_reading(False)

    def _pause_reading(self, pause: bool) -> None:
        transport = self._ws.transport
        if transport is None or transport.is_closing():
            return
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _on_frame(self, message: Frame) -> Replies | Awaitable[Replies]:
        client = self.client
        stats = client.stats
        recv_ts = time.time()
        self.last_frame_at = self.last_data_at = client.clock()
        self.frames += 1
        stats.frames_received += 1
        stats.bytes_received += len(message)
        stats.last_message_ts = recv_ts
        if not self._first_frame.done():
            self._first_frame.set_result(None)
        if client.recorder is not None:
            client.recorder.received(self.id, recv_ts, message)
        client.frame_source = self
        try:
            return client.handler.handle_frame(client.handler.preprocess(message), recv_ts)
        except FrameRejected as exc:
            stats.frames_rejected += 1
            client.log.warning("ws.frame_rejected", conn=self.id, reason=exc.reason,
                               error=str(exc)[:200], frame=snippet(message))
        except Exception as exc:
            # One bad frame is counted and logged; it never ends the stream.
            stats.handler_errors += 1
            client.log.warning("ws.handler_error", conn=self.id, error=repr(exc)[:300],
                               frame=snippet(message))
        return None

    async def _await_handler(self, pending: Awaitable[Replies], message: Frame) -> Replies:
        try:
            return await pending
        except Exception as exc:
            self.client.stats.handler_errors += 1
            self.client.log.warning("ws.handler_error", conn=self.id, error=repr(exc)[:300],
                                    frame=snippet(message))
            return None

    def _queue_replies(self, replies: Iterable[Outgoing]) -> None:
        for reply in replies:
            if not self.send_nowait(reply, urgent=True):
                self.client.stats.replies_dropped += 1
                self.client.log.warning("ws.reply_dropped", conn=self.id, reply=snippet(reply),
                                        queued=self._queue.qsize())

    # -- ending ---------------------------------------------------------------------------

    def _finish(self) -> None:
        if self._done.done():
            return
        self._done.set_result(None)
        # Nothing queued will be sent now: release anyone blocked in send() or drain().
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self._unsent += 1
        self.client._connection_done(self)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (bounded by ``close_timeout_s``) and end both tasks. Idempotent."""
        if self._released:
            return
        self._released = True
        self._closed_by_us = not self.closed
        try:
            await self._ws.close(code, reason[:_MAX_CLOSE_REASON])
        except Exception as exc:  # closing must never fail the caller
            self.client.log.debug("ws.close_failed", conn=self.id, error=repr(exc)[:200])
        finally:
            tasks = [*self._tasks, *([self._drainer] if self._drainer is not None else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._finish()
            self._log_closed(reason)
            self.client._forget(self)
            if self.client.recorder is not None:
                self.client.recorder.end(self.id)

    def _log_closed(self, reason: str) -> None:
        uptime_s = round(self.client.clock() - self.opened_at, 3)
        fields = {
            "conn": self.id, "code": self.close_code, "close_reason": self.close_reason,
            "uptime_s": uptime_s, "frames": self.frames,
        }
        if self._closed_by_us:
            self.client.log.info("ws.disconnected", by="client", reason=reason, **fields)
        else:
            self.client.log.warning("ws.disconnected", by="peer", error=self.error, **fields)

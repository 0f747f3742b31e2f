"""Reconnecting websocket client shared by the exchange connectors.

One ``WsClient`` per logical connection. The connector supplies a ``WsHandler`` (the
exchange-specific part: URL, subscribe messages, frame handling) and the client does the
rest: connect under a shared per-exchange connection limiter, feed every frame to the
handler, send through a bounded queue spaced by a per-connection token bucket, reconnect
with capped jittered backoff, watch streams for staleness, and rotate before a maximum
lifetime by opening the replacement first.

Sending: ``on_open(conn)`` subscribes with ``await conn.send(...)``; ``handle_frame`` may
return messages (an HTX ``{"pong": n}``) which go out *urgently* on the connection the frame
came from, ahead of queued subscribes. During a rotation both sockets feed
``handle_frame``; the unique keys downstream absorb the overlap.

Protocol-level pings are answered by ``websockets`` itself (Binance pings every 20 s and
wants a pong within a minute); our own keepalive pings follow ``ping_interval_s``.

Frames: ``bytes`` for binary, ``str`` for text; ``recv_ts`` is wall-clock Unix seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidURI

from ingest.errors import ConfigError
from ingest.logs import get_logger
from ingest.transport.backoff import Backoff
from ingest.transport.connection import (
    DirectClientConnection,
    Frame,
    Outgoing,
    Replies,
    WsClosed,
    WsConnection,
)
from ingest.transport.ratelimit import RateLimiter
from ingest.transport.recorder import Recorder
from ingest.transport.watchdog import StreamWatchdog
from ingest.transport.wsapi import BaseWsHandler, WsConfig, WsHandler, WsState, WsStats

__all__ = [
    "BaseWsHandler", "Frame", "Outgoing", "Replies", "WsClient", "WsClosed", "WsConfig",
    "WsConnection", "WsHandler", "WsState", "WsStats",
]


# A socket whose streams all stay quiet this many stale_after_s periods (answering pings
# all along) is replaced: resubscribing its streams one by one has not brought data back.
DATA_SILENCE_PERIODS = 10


class WsClient:
    """A websocket that stays connected until ``close()`` or cancellation of ``run()``."""

    def __init__(
        self,
        name: str,
        handler: WsHandler,
        config: WsConfig | None = None,
        *,
        connect_limiter: RateLimiter | None = None,
        recorder: Recorder | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        send_limiter_factory: Callable[[], RateLimiter] | None = None,
        log_context: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.config = cfg = config or WsConfig()
        self.connect_limiter = connect_limiter
        self.recorder = recorder
        self.clock = clock
        self.backoff = backoff or Backoff(cfg.backoff, clock=clock)
        self.send_limiter_factory = send_limiter_factory or (
            lambda: RateLimiter(cfg.send_rate_per_s, cfg.send_burst, name=f"{name}.send")
        )
        self.stats = WsStats()
        self.watchdog = StreamWatchdog(cfg.stale_after_s)
        self.log = get_logger("ingest.transport.ws", ws=name, **(log_context or {}))
        self._conns: set[WsConnection] = set()
        self._current: WsConnection | None = None
        self._seq = 0
        self._signal = asyncio.Event()  # something for the supervisor to look at
        self._closing = asyncio.Event()
        self._rotate_reason: str | None = None
        self._reconnect_reason: str | None = None
        self._retry_rotation: tuple[float, str] | None = None
        self._run_task: asyncio.Task[None] | None = None
        # The connection whose frame handle_frame is looking at (valid during the call):
        # during a rotation overlap a book keeper may want to tell the two apart.
        self.frame_source: WsConnection | None = None

    # -- what connectors and health code use ---------------------------------------------

    @property
    def state(self) -> WsState:
        return self.stats.state

    @property
    def current(self) -> WsConnection | None:
        return self._current

    @property
    def connections(self) -> tuple[WsConnection, ...]:
        return tuple(self._conns)

    async def send(self, message: Outgoing, *, urgent: bool = False) -> None:
        """Send on the current connection (raises ``WsClosed`` when there is none)."""
        conn = self._current
        if conn is None:
            raise WsClosed(f"{self.name}: not connected")
        await conn.send(message, urgent=urgent)

    def send_nowait(self, message: Outgoing, *, urgent: bool = False) -> bool:
        conn = self._current
        return conn is not None and conn.send_nowait(message, urgent=urgent)

    def send_all_nowait(self, messages: list[Outgoing]) -> bool:
        """Queue all of ``messages`` on the current connection, or none of them (an
        unsubscribe whose subscribe did not fit would leave the stream unsubscribed)."""
        conn = self._current
        if conn is None or conn.room() < len(messages):
            return False
        return all(conn.send_nowait(m) for m in messages)

    def watch(self, stream_key: str, stale_after_s: float | None = None) -> None:
        self.watchdog.watch(stream_key, self.clock(), stale_after_s)

    def unwatch(self, stream_key: str) -> None:
        self.watchdog.unwatch(stream_key)

    def mark(self, stream_key: str) -> None:
        """Call on every message of a stream (its liveness, not the connection's)."""
        self.watchdog.mark(stream_key, self.clock())

    def rotate(self, reason: str = "requested") -> None:
        """Replace the connection make-before-break (Binance ``serverShutdown``). Safe to
        call from ``handle_frame``: the supervisor does the work."""
        self._rotate_reason = reason
        self._signal.set()

    def reconnect(self, reason: str = "requested") -> None:
        """Drop the connection and reconnect after a backoff delay."""
        self._reconnect_reason = reason
        self._signal.set()

    async def close(self) -> None:
        """Stop ``run()`` and close every socket; waits a bounded time, then cancels."""
        self._closing.set()
        self._signal.set()
        task = self._run_task
        if task is None or task.done() or task is asyncio.current_task():
            return
        await asyncio.wait({task}, timeout=2 * self.config.close_timeout_s + 1)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})

    def check(self, now: float | None = None) -> list[tuple[str, float]]:
        """One watchdog tick (the supervisor calls it every ``watchdog_interval_s``):
        connection silence → reconnect; lifetime → rotate; quiet streams → ``on_stale``."""
        now = self.clock() if now is None else now
        conn = self._current
        if conn is None or conn.closed or self.state is not WsState.CONNECTED:
            return []
        cfg = self.config
        silent_s = now - conn.last_frame_at
        if silent_s >= cfg.stale_after_s:
            # Not a frame, ping or pong: the socket is dead. Reconnect, do not resubscribe.
            self.stats.stale_connections += 1
            self.reconnect(f"no frames for {silent_s:.1f} s")
            return []
        no_data_s = now - conn.last_data_at
        if no_data_s >= cfg.stale_after_s * DATA_SILENCE_PERIODS:
            # Pings only, for many periods: every subscription may have died on a socket
            # the exchange keeps open. Illiquid pairs pay one reconnect per this long.
            self.stats.stale_connections += 1
            self.reconnect(f"no data for {no_data_s:.0f} s, only pings")
            return []
        if self._retry_rotation is not None and now >= self._retry_rotation[0]:
            self.rotate(self._retry_rotation[1])
            self._retry_rotation = None
        elif (cfg.max_lifetime_s is not None and self._retry_rotation is None
              and now - conn.opened_at >= cfg.max_lifetime_s):
            self.rotate("max lifetime")
        due = self.watchdog.due(now)
        for key, quiet_s in due:
            self.stats.stale_streams += 1
            self.log.warning("ws.stream_stale", conn=conn.id, stream=key, quiet_s=round(quiet_s, 1))
            try:
                self.handler.on_stale(self, key, quiet_s)
            except Exception as exc:
                self.log.error("ws.on_stale_failed", stream=key, error=repr(exc)[:300])
        return due

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        if self._run_task is not None:
            raise RuntimeError(f"{self.name}: run() is already running")
        self._run_task = asyncio.current_task()
        try:
            while not self._closing.is_set():
                conn = await self._connect_until_open()
                if conn is None:
                    break
                await self._supervise(conn)
                if self._closing.is_set():
                    break
                self.backoff.disconnected()
                self.stats.reconnects += 1
                await self._pause()
        finally:
            await self._close_all()
            self._set_state(WsState.CLOSED)
            self._run_task = None

    async def _connect_until_open(self) -> WsConnection | None:
        while not self._closing.is_set():
            self._set_state(WsState.CONNECTING)
            # Requests were about the socket that is gone; ones made while the new socket
            # subscribes (a serverShutdown already) must survive, so clear them here.
            self._reconnect_reason = self._rotate_reason = None
            self._retry_rotation = None
            try:
                conn = await self._open()
            except ConfigError:
                raise
            except Exception as exc:
                self.stats.connect_failures += 1
                delay = self.backoff.next_delay()
                self.log.warning("ws.connect_failed", error=_describe(exc),
                                 attempt=self.backoff.attempt, retry_in_s=round(delay, 3))
                await self._pause(delay)
                continue
            self._current = conn
            self._set_state(WsState.CONNECTED)
            return conn
        return None

    async def _pause(self, delay: float | None = None) -> None:
        if delay is None:
            delay = self.backoff.next_delay()
        self.stats.last_backoff_s = delay
        self._set_state(WsState.RECONNECTING)
        self.log.info("ws.reconnecting", delay_s=round(delay, 3), attempt=self.backoff.attempt)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    async def _open(self) -> WsConnection:
        """Connect, subscribe, and wait until the subscribes are on the wire."""
        if self.connect_limiter is not None:
            await self.connect_limiter.acquire()
        url = self.handler.url()
        self._seq += 1
        try:
            ws = await connect(url, **self._connect_kwargs())
        except InvalidURI as exc:
            raise ConfigError(f"{self.name}: invalid websocket URL {url!r}: {exc}") from exc
        conn = WsConnection(self, f"{self.name}.{self._seq}", url, ws)
        self._conns.add(conn)
        self.stats.open_connections = len(self._conns)
        conn.start()
        self.stats.connects += 1
        self.stats.last_connect_ts = time.time()
        if self.recorder is not None:
            self.recorder.connected(conn.id, url, self.stats.last_connect_ts)
        self.log.info("ws.connected", conn=conn.id, url=url, attempt=self.backoff.attempt)
        try:
            async with asyncio.timeout(self.config.subscribe_timeout_s):
                await self.handler.on_open(conn)
                await conn.drain()
        except BaseException:
            await conn.aclose(1000, "subscribe failed")
            raise
        self.backoff.connected()
        self.watchdog.rearm(self.clock())
        return conn

    def _connect_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = {
            "open_timeout": cfg.open_timeout_s,
            "close_timeout": cfg.close_timeout_s,
            "ping_interval": cfg.ping_interval_s,
            "ping_timeout": cfg.ping_timeout_s,
            "max_size": cfg.max_frame_bytes,
            "max_queue": cfg.max_recv_queue,
            "compression": cfg.compression,
            "create_connection": DirectClientConnection,
        }
        if cfg.proxy is not True:  # the keyword exists from websockets 15 on
            kwargs["proxy"] = cfg.proxy
        if cfg.headers:
            kwargs["additional_headers"] = dict(cfg.headers)
        return kwargs

    async def _supervise(self, conn: WsConnection) -> None:
        """Watch the current connection until it must be replaced after a backoff."""
        while True:
            self._signal.clear()
            if self._closing.is_set():
                await conn.aclose(1000, "client closing")
                return
            if conn.closed:
                await conn.aclose()
                return
            if self._reconnect_reason is not None:
                reason, self._reconnect_reason = self._reconnect_reason, None
                self.log.warning("ws.dropping", conn=conn.id, reason=reason)
                await conn.aclose(1000, reason)
                return
            if self._rotate_reason is not None:
                conn = await self._rotate(conn)
                continue
            self.check()
            if self._reconnect_reason is None and self._rotate_reason is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._signal.wait(), self.config.watchdog_interval_s)

    async def _rotate(self, old: WsConnection) -> WsConnection:
        reason, self._rotate_reason = self._rotate_reason or "requested", None
        self._set_state(WsState.ROTATING)
        self.log.info("ws.rotating", conn=old.id, reason=reason,
                      age_s=round(self.clock() - old.opened_at, 1))
        try:
            new = await self._open()
        except ConfigError:
            raise
        except Exception as exc:
            # Keep the old socket; try again later (or reconnect if the old one dies).
            delay = self.backoff.next_delay()
            self._retry_rotation = (self.clock() + delay, reason)
            self.stats.connect_failures += 1
            self.log.warning("ws.rotation_failed", conn=old.id, error=_describe(exc),
                             retry_in_s=round(delay, 3))
            self._set_state(WsState.CONNECTED)
            return old
        # Both sockets feed handle_frame until the new one has spoken (or the overlap
        # budget runs out), so nothing is missed while the old one is closed.
        await new.wait_first_frame(self.config.rotation_overlap_s)
        self._current = new
        self._retry_rotation = None
        self.stats.rotations += 1
        self._set_state(WsState.CONNECTED)
        await old.aclose(1000, "rotated")
        self.log.info("ws.rotated", old=old.id, new=new.id, reason=reason)
        return new

    async def _close_all(self) -> None:
        for conn in list(self._conns):
            await conn.aclose(1000, "client closing")
        self._current = None

    def _set_state(self, state: WsState) -> None:
        self.stats.state = state

    # -- called by WsConnection -----------------------------------------------------------

    def _connection_done(self, conn: WsConnection) -> None:
        self._signal.set()

    def _forget(self, conn: WsConnection) -> None:
        self._conns.discard(conn)
        self.stats.open_connections = len(self._conns)
        self.stats.last_close_code = conn.close_code
        self.stats.last_close_reason = conn.close_reason


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


"""What a connector plugs into a ``WsClient``, and what health code reads back.

- ``WsHandler``: the exchange-specific hooks (URL, subscribe, frame handling, pings);
  ``BaseWsHandler`` gives the optional ones their defaults;
- ``WsConfig``: timeouts, limits, rates, lifetime, backoff for one client;
- ``WsStats`` / ``WsState``: live counters and the connection state.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ingest.transport.backoff import BackoffPolicy
from ingest.transport.connection import Frame, Outgoing, Replies

if TYPE_CHECKING:
    from ingest.transport.connection import WsConnection
    from ingest.transport.ws import WsClient


class WsHandler(Protocol):
    """What a connector plugs into a ``WsClient`` (subclass ``BaseWsHandler`` for defaults)."""

    # Send ``app_ping()`` this often on each connection (Gate ``spot.ping``: 10 s); None: never.
    app_ping_interval_s: float | None

    def url(self) -> str:
        """The URL for the next connection (may differ each time, e.g. a combined-stream URL)."""

    async def on_open(self, conn: WsConnection) -> None:
        """Subscribe on the new connection with ``await conn.send(...)``."""

    def preprocess(self, frame: Frame) -> Frame:
        """Raw frame to what ``handle_frame`` takes (HTX: ``gunzip_bounded``).

        Raise ``FrameRejected`` to drop a frame; it is counted and logged, not fatal.
        """

    def handle_frame(self, frame: Frame, recv_ts: float) -> Replies | Awaitable[Replies]:
        """Parse and forward one frame. Return messages to send back on the same connection
        at once (pongs), or None. May be a coroutine to apply backpressure."""

    def app_ping(self) -> Outgoing | None:
        """The application-level ping message, or None."""

    def on_stale(self, client: WsClient, stream_key: str, quiet_s: float) -> None:
        """A watched stream has been quiet ``quiet_s``: resubscribe it, or
        ``client.reconnect(...)``. Called again every period while it stays quiet."""


class BaseWsHandler:
    """Defaults for the optional parts of ``WsHandler``."""

    app_ping_interval_s: float | None = None

    def url(self) -> str:
        raise NotImplementedError

    async def on_open(self, conn: WsConnection) -> None:
        return None

    def preprocess(self, frame: Frame) -> Frame:
        return frame

    def handle_frame(self, frame: Frame, recv_ts: float) -> Replies | Awaitable[Replies]:
        raise NotImplementedError

    def app_ping(self) -> Outgoing | None:
        return None

    def on_stale(self, client: WsClient, stream_key: str, quiet_s: float) -> None:
        return None


class WsState(enum.StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    ROTATING = "rotating"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass
class WsStats:
    """Live counters for health and metrics code (read them, do not write them)."""

    state: WsState = WsState.IDLE
    connects: int = 0
    connect_failures: int = 0
    reconnects: int = 0  # connections lost or dropped and replaced after a backoff
    rotations: int = 0  # connections replaced make-before-break
    frames_received: int = 0
    bytes_received: int = 0  # text frames count characters (exchange JSON is ASCII)
    frames_rejected: int = 0  # refused by preprocess (gzip bomb, corrupt)
    handler_errors: int = 0
    oversize_frames: int = 0  # a frame above max_frame_bytes closed the connection
    messages_sent: int = 0
    replies_dropped: int = 0  # send queue full
    stale_streams: int = 0
    stale_connections: int = 0
    open_connections: int = 0
    last_message_ts: float | None = None  # wall clock of the last frame
    last_connect_ts: float | None = None
    last_close_code: int | None = None
    last_close_reason: str = ""
    last_backoff_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = str(self.state)
        return out


@dataclass(frozen=True)
class WsConfig:
    open_timeout_s: float = 10.0
    close_timeout_s: float = 5.0
    ping_interval_s: float | None = 20.0  # our keepalive pings (liveness); None disables
    ping_timeout_s: float | None = 20.0
    max_frame_bytes: int = 4 * 1024 * 1024  # a bigger frame closes the connection (1009)
    max_recv_queue: int = 64  # frames websockets buffers before applying TCP backpressure
    send_queue_size: int = 256
    # Binance counts our pings, pongs and subscribes against 5 messages/s per connection;
    # 3/s with no burst leaves room for the pongs websockets sends on its own.
    send_rate_per_s: float = 3.0
    send_burst: float = 1.0
    stale_after_s: float = 60.0  # per stream, and for a connection with no frames at all
    watchdog_interval_s: float = 1.0
    max_lifetime_s: float | None = None  # Binance: 23.5 h, under its 24 h limit
    rotation_overlap_s: float = 5.0  # wait this long for the new socket's first frame
    subscribe_timeout_s: float = 120.0  # on_open plus sending what it queued
    compression: str | None = "deflate"
    proxy: str | bool | None = True  # True: from the environment, as websockets does
    headers: Mapping[str, str] = field(default_factory=dict)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)

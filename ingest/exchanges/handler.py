"""The per-socket part of a connector, shared by the three exchanges.

A ``FeedHandler`` is the ``WsHandler`` of one ``WsClient``: it parses each frame with the
exchange's pure parser, hands records to its ``Connector`` for routing, answers
``Control`` items (the exchange subclass adds pings, shutdown notices), marks each stream's
liveness for the per-stream watchdog, and resubscribes a stream that went quiet. Exchange
modules implement ``url``, ``parse``, ``subscribe_messages`` and ``resubscribe``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from ingest.errors import ParseError
from ingest.exchanges.base import Control, ParseResult
from ingest.exchanges.plan import Stream
from ingest.records import BookDelta, Candle, Record, Trade
from ingest.transport.ws import Frame, Outgoing, Replies, WsClient, WsConnection, WsState
from ingest.transport.wsapi import BaseWsHandler

if TYPE_CHECKING:
    from ingest.exchanges.connector import Connector


# The channel a parsed frame belongs to, by the type of what it carried (for metrics).
_CHANNEL_OF: dict[type, str] = {Trade: "trades", Candle: "candles", BookDelta: "book"}


class FeedHandler(BaseWsHandler):
    """The per-socket part shared by the exchanges. Subclasses implement ``url``,
    ``parse``, ``subscribe_messages`` and ``resubscribe``, and may extend ``on_control``."""

    def __init__(self, connector: Connector, name: str, streams: Sequence[Stream]) -> None:
        self.connector = connector
        self.name = name
        self.streams = {s.key: s for s in streams}
        self.symbols = sorted({s.unified for s in streams})
        self.client: WsClient | None = None
        self.conn: WsConnection | None = None  # the latest socket opened (may be subscribing)
        self.last_seen: dict[str, float] = {}
        self.created = time.monotonic()  # the "last message" of a stream that never had one
        self.opens = 0
        self.log = connector.log.bind(ws=name)

    # -- exchange-specific ------------------------------------------------------------------

    def parse(self, frame: Frame, recv_ts: float) -> ParseResult:
        raise NotImplementedError

    def subscribe_messages(self, streams: Sequence[Stream]) -> list[Outgoing]:
        return []

    def resubscribe(self, stream: Stream) -> None:
        """Ask again for one quiet stream (never the whole connection): ``send_resubscribe``
        of the exchange's messages."""

    def send_resubscribe(self, stream: Stream, messages: list[Outgoing]) -> bool:
        """Queue a stream's resubscribe messages, all or none; a refusal (the socket's
        send queue is full or it is down) is logged and counted, and the stream is asked
        for again when the watchdog next finds it quiet."""
        client = self.client
        if client is None:
            return False
        if client.send_all_nowait(messages):
            self.log.info("resubscribing a quiet stream", stream=stream.key)
            return True
        self.connector.counters["resubscribes_dropped"] += 1
        self.log.warning("resubscribe not sent: send queue full or socket down",
                         stream=stream.key)
        return False

    def on_control(self, ctl: Control) -> list[Outgoing]:
        c = self.connector.counters
        c["controls"][ctl.kind] = c["controls"].get(ctl.kind, 0) + 1
        if ctl.kind == "error":
            self.log.warning("exchange refused a request", detail=str(ctl.value)[:300])
        return []

    # -- WsHandler ------------------------------------------------------------------------

    async def on_open(self, conn: WsConnection) -> None:
        client = self.client
        reconnect = self.opens > 0 and client is not None and client.state is WsState.CONNECTING
        self.opens += 1
        self.conn = conn
        if reconnect:
            self.connector.reconnected(self)
        for message in self.subscribe_messages(list(self.streams.values())):
            await conn.send(message)

    def handle_frame(self, frame: Frame, recv_ts: float) -> Replies | Awaitable[Replies]:
        conn = self.connector
        counters = conn.counters
        counters["frames_received"] += 1
        try:
            items = self.parse(frame, recv_ts)
        except ParseError as exc:
            conn.reject(self.name, frame, exc)
            return None
        counters["frames_parsed"] += 1
        by_channel = counters["frames_by_channel"]
        channel = _CHANNEL_OF.get(type(items[0]), "control") if items else "control"
        by_channel[channel] = by_channel.get(channel, 0) + 1
        replies: list[Outgoing] = []
        out: list[Record] = []
        source = self.client.frame_source if self.client is not None else None
        for item in items:
            if type(item) is Control:
                replies.extend(self.on_control(item))
            else:
                conn.route(self, item, out, source)
        if not out:
            return replies or None
        if replies and self.client is not None:
            for reply in replies:
                self.client.send_nowait(reply, urgent=True)
        return conn.emit(out)

    def on_stale(self, client: WsClient, stream_key: str, quiet_s: float) -> None:
        stream = self.streams.get(stream_key)
        if stream is not None:
            self.connector.stale(self, stream)

    def mark(self, key: str) -> bool:
        if key not in self.streams:
            return False
        self.last_seen[key] = time.monotonic()
        if self.client is not None:
            self.client.mark(key)
        return True

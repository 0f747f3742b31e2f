"""HTX (Huobi) spot streaming: gzip frames, JSON pings, MBP books on /feed.

Sockets: ``ws_url`` (``/ws``) carries ``market.<s>.trade.detail`` and
``market.<s>.kline.<p>``; ``ws_feed_url`` (``/feed``) carries ``market.<s>.mbp.150``. Every
server frame is gzip: ``preprocess`` inflates it with a bound (a bomb is rejected and
counted, never inflated). ``{"ping": n}`` is answered ``{"pong": n}`` through
``handle_frame``'s return value, ahead of anything queued.

Book channel: ``mbp.150`` increments (``prevSeqNum`` chains ``seqNum``) with a ``req`` for
the full image on the same socket, not ``depth.step0``: the increments are 100 ms apart
(step0 images come once a second), every change is applied in order with a sequence check,
and a resync is one small websocket request instead of a 150-level image every second.
``req`` is limited to one per 100 ms per connection: the feed socket sends at most 9
messages/s (burst 1), so any two of its messages are at least 111 ms apart.

Candles: HTX has no closed flag; a push for a later window finalises the held one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ingest.errors import ConfigError, ExchangeError
from ingest.exchanges.base import Control, ParseResult
from ingest.exchanges.connector import (
    CLOSE_TIMEOUT_S,
    Connector,
    ConnectorOptions,
    OnReconnect,
    RecordSink,
    make_connector,
)
from ingest.exchanges.handler import FeedHandler
from ingest.exchanges.huobi import parse, rest
from ingest.exchanges.plan import Stream, chunk, plan_streams
from ingest.records import BookDelta
from ingest.settings import ExchangeSettings
from ingest.transport.framing import DEFAULT_MAX_INFLATED_BYTES, gunzip_bounded
from ingest.transport.http import HttpClient
from ingest.transport.recorder import Recorder
from ingest.transport.ws import Frame, Outgoing, WsConfig

EXCHANGE = "huobi"
MBP_LEVELS = 150
# One message per 111 ms at most: the req limit (1 per 100 ms per connection) holds for
# any mix of req, sub and pong.
SEND_RATE_PER_S = 9.0


def topic(stream: Stream) -> str:
    sym = stream.native
    if stream.channel == "trades":
        return f"market.{sym}.trade.detail"
    if stream.channel == "candles":
        return f"market.{sym}.kline.{stream.native_interval}"
    return f"market.{sym}.mbp.{MBP_LEVELS}"


class HuobiHandler(FeedHandler):
    def __init__(
        self, connector: Connector, name: str, streams: Sequence[Stream], url: str,
        max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    ) -> None:
        super().__init__(connector, name, streams)
        self._url = url
        self.topics = {s.key: topic(s) for s in streams}
        self._max_inflated = max_inflated_bytes
        self._next_id = 0

    def url(self) -> str:
        return self._url

    def preprocess(self, frame: Frame) -> Frame:
        return gunzip_bounded(frame, self._max_inflated)

    def parse(self, frame: Frame, recv_ts: float) -> ParseResult:
        return parse.parse(frame, recv_ts)  # type: ignore[arg-type]  # msgspec takes str too

    def on_control(self, ctl: Control) -> list[Outgoing]:
        super().on_control(ctl)
        if ctl.kind == "ping":
            return [json.dumps({"pong": ctl.value})]
        return []

    def _message(self, verb: str, name: str) -> str:
        self._next_id += 1
        return json.dumps({verb: name, "id": f"{verb}{self._next_id}"})

    def subscribe_messages(self, streams: Sequence[Stream]) -> list[Outgoing]:
        return [self._message("sub", self.topics[s.key]) for s in streams]

    def resubscribe(self, stream: Stream) -> None:
        name = self.topics[stream.key]
        self.send_resubscribe(stream, [self._message("unsub", name), self._message("sub", name)])

    async def request_image(self, stream: Stream) -> None:
        """``req`` the full MBP image on this socket (the one whose increments buffer;
        it may still be sending its subscribes, before the client calls it current)."""
        message = self._message("req", self.topics[stream.key])
        if self.conn is not None and not self.conn.closed:
            await self.conn.send(message)
        elif self.client is not None:
            await self.client.send(message)  # raises WsClosed: retried by the keeper
        else:
            raise ExchangeError(f"huobi: {self.name} has no client")


def build_connector(
    settings: ExchangeSettings,
    symbols: Sequence[str],
    sink: RecordSink,
    http: HttpClient,
    *,
    recorder: Recorder | None = None,
    on_reconnect: OnReconnect | None = None,
    options: ConnectorOptions | None = None,
) -> Connector:
    """An HTX connector for ``symbols`` (unified). ConfigError for a bad name."""
    options = options or ConnectorOptions()
    streams = plan_streams(EXCHANGE, settings, symbols)
    feeds: dict[str, tuple[HuobiHandler, Stream]] = {}

    async def resync(symbol: str) -> BookDelta | None:
        handler, stream = feeds[symbol]
        await handler.request_image(stream)
        return None  # the image arrives on the feed socket as a "rep"

    connector = make_connector(EXCHANGE, settings, streams, sink, resync=resync,
                               infer_candles=True, options=options, on_reconnect=on_reconnect)
    config = options.ws_config(WsConfig(
        stale_after_s=settings.stale_after_s, send_rate_per_s=SEND_RATE_PER_S, send_burst=1.0,
        close_timeout_s=CLOSE_TIMEOUT_S,
    ))
    limiter = options.limiter(EXCHANGE)
    market = [s for s in streams if s.channel != "book"]
    books = [s for s in streams if s.channel == "book"]
    if books and not settings.ws_feed_url:
        raise ConfigError("huobi: ws_feed_url (the MBP /feed endpoint) is required for books")
    size = settings.max_streams_per_connection
    for i, group in enumerate(chunk(market, size)):
        handler = HuobiHandler(connector, f"ws{i}", group, settings.ws_url)
        connector.attach(handler, config, connect_limiter=limiter, recorder=recorder)
    for i, group in enumerate(chunk(books, size)):
        handler = HuobiHandler(connector, f"feed{i}", group, settings.ws_feed_url)
        connector.attach(handler, config, connect_limiter=limiter, recorder=recorder)
        feeds.update((s.symbol, (handler, s)) for s in group)

    async def markets() -> set[str]:
        return await rest.list_symbols(http, settings.rest_url)

    connector.market_lister = markets
    return connector

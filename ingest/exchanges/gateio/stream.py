"""Gate.io spot streaming (API v4): one socket per group of streams.

Subscriptions, one request each so any one stream can be resubscribed alone:
``spot.trades`` ``[PAIR]``, ``spot.candlesticks`` ``[INTERVAL, PAIR]`` (Gate wants one
request per pair/interval), ``spot.order_book_update`` ``[PAIR, "100ms"]``.

Book channel: ``spot.order_book_update`` at 100 ms (100 levels), not ``spot.obu``:
- its update ids are the ones the REST ``/spot/order_book?with_id=true`` snapshot carries,
  so a gap is repaired by one rate-limited REST call for that symbol, leaving the
  subscription (and every other symbol on the socket) alone;
- the server's ``full: true`` image on subscribe is honoured (the book replaces itself), so
  the initial sync after a (mass) reconnect needs no REST at all;
- ``spot.obu`` repairs a gap only by unsubscribe + resubscribe, and allows one subscription
  per stream per connection (a duplicate is an error): racy with a rotation overlap or a
  lost ack, for the same 100-ms/400-level or 20-ms/50-level data.

Keepalive: ``spot.ping`` every 10 s (the official client's habit; it also resets the
server's idle timer) plus protocol pings every 10 s. Candles are final on ``w`` or when a
later window of the same pair/interval appears (``w`` "may be missing").
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from ingest.exchanges.base import ParseResult
from ingest.exchanges.connector import (
    CLOSE_TIMEOUT_S,
    Connector,
    ConnectorOptions,
    OnReconnect,
    RecordSink,
    make_connector,
)
from ingest.exchanges.gateio import parse, rest
from ingest.exchanges.handler import FeedHandler
from ingest.exchanges.plan import Stream, chunk, plan_streams
from ingest.records import BookDelta
from ingest.settings import ExchangeSettings
from ingest.transport.http import HttpClient
from ingest.transport.recorder import Recorder
from ingest.transport.ws import Frame, Outgoing, WsConfig

EXCHANGE = "gateio"
BOOK_INTERVAL = "100ms"
PING_INTERVAL_S = 10.0
SEND_RATE_PER_S = 10.0
# A subscribe's "time" must be within 60 s of Gate's clock and every subscribe of a socket is
# stamped when the socket opens: at 10 a second the 500th goes out 50 s later. More streams
# than this per socket would be refused, so they go on another socket.
MAX_STREAMS_PER_SOCKET = 500


def subscription(stream: Stream) -> tuple[str, list[str]]:
    """(channel, payload) of a stream's subscribe request."""
    if stream.channel == "trades":
        return "spot.trades", [stream.native]
    if stream.channel == "candles":
        return "spot.candlesticks", [stream.native_interval or "", stream.native]
    return "spot.order_book_update", [stream.native, BOOK_INTERVAL]


class GateHandler(FeedHandler):
    app_ping_interval_s = PING_INTERVAL_S

    def __init__(
        self, connector: Connector, name: str, streams: Sequence[Stream], ws_url: str
    ) -> None:
        super().__init__(connector, name, streams)
        self._url = ws_url
        self._next_id = 0

    def url(self) -> str:
        return self._url

    def parse(self, frame: Frame, recv_ts: float) -> ParseResult:
        return parse.parse(frame, recv_ts)  # type: ignore[arg-type]  # msgspec takes str too

    def app_ping(self) -> Outgoing | None:
        return json.dumps({"time": int(time.time()), "channel": "spot.ping"})

    def request(self, stream: Stream, event: str) -> str:
        channel, payload = subscription(stream)
        self._next_id += 1
        # "time" must be within 60 s of the server's clock.
        return json.dumps({"time": int(time.time()), "id": self._next_id, "channel": channel,
                           "event": event, "payload": payload})

    def subscribe_messages(self, streams: Sequence[Stream]) -> list[Outgoing]:
        return [self.request(s, "subscribe") for s in streams]

    def resubscribe(self, stream: Stream) -> None:
        # Gate subscriptions add up ("you can subscribe repeatedly"): subscribe alone, with
        # no unsubscribed moment. (spot.obu refuses a duplicate; it is not used here.)
        self.send_resubscribe(stream, [self.request(stream, "subscribe")])


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
    """A Gate.io connector for ``symbols`` (unified). ConfigError for a bad name."""
    options = options or ConnectorOptions()
    streams = plan_streams(EXCHANGE, settings, symbols)
    pairs = {s.symbol: s.native for s in streams}

    async def resync(symbol: str) -> BookDelta:
        return await rest.fetch_order_book(http, settings.rest_url, pairs[symbol])

    connector = make_connector(EXCHANGE, settings, streams, sink, resync=resync,
                               infer_candles=True, options=options, on_reconnect=on_reconnect)
    # Gate documents no inbound message limit; 10/s keeps a 200-stream subscribe short.
    config = options.ws_config(WsConfig(
        stale_after_s=settings.stale_after_s, ping_interval_s=PING_INTERVAL_S,
        close_timeout_s=CLOSE_TIMEOUT_S,
        send_rate_per_s=SEND_RATE_PER_S, send_burst=5.0,
    ))
    limiter = options.limiter(EXCHANGE)
    per_socket = min(settings.max_streams_per_connection, MAX_STREAMS_PER_SOCKET)
    for i, group in enumerate(chunk(streams, per_socket)):
        handler = GateHandler(connector, f"ws{i}", group, settings.ws_url)
        connector.attach(handler, config, connect_limiter=limiter, recorder=recorder)

    async def markets() -> set[str]:
        return await rest.list_pairs(http, settings.rest_url)

    connector.market_lister = markets
    return connector

"""Binance spot streaming: combined streams, REST-aligned books, rotation.

Sockets: ``<ws_url>/stream?streams=a/b/...`` (combined, so every event names its stream),
at most ``max_streams_per_connection`` streams each; all of an exchange's sockets share one
connect limiter. Subscribing in the URL costs none of the 5 messages/s a connection may
send; live ``SUBSCRIBE``/``UNSUBSCRIBE`` is only used to resubscribe a stale stream, spaced
by the client's send limiter (3/s).

Streams: ``<s>@trade`` (raw trades, ids continuous per symbol), ``<s>@kline_<i>`` (final
when ``k.x``), ``<s>@depth@100ms`` diffs with a ``GET /api/v3/depth?limit=1000`` snapshot
(weight 50) fetched by the book keeper's workers, never in the read loop; deltas buffer in
the ``LocalBook`` while it is fetched and the book does the alignment (protocols.md §1.2).

Lifetime: a connection lasts at most 24 h, so each is rotated (make-before-break) at
23.5 h, and at once on ``serverShutdown``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ingest.exchanges.base import Control, ParseResult
from ingest.exchanges.binance import parse, rest
from ingest.exchanges.connector import (
    CLOSE_TIMEOUT_S,
    Connector,
    ConnectorOptions,
    OnReconnect,
    RecordSink,
    make_connector,
)
from ingest.exchanges.handler import FeedHandler
from ingest.exchanges.plan import Stream, chunk, plan_streams
from ingest.records import BookDelta
from ingest.settings import ExchangeSettings
from ingest.transport.http import HttpClient
from ingest.transport.recorder import Recorder
from ingest.transport.ws import Frame, Outgoing, WsConfig

EXCHANGE = "binance"
MAX_LIFETIME_S = 23.5 * 3600


def wire_name(stream: Stream) -> str:
    sym = stream.native.lower()
    if stream.channel == "trades":
        return f"{sym}@trade"
    if stream.channel == "candles":
        return f"{sym}@kline_{stream.native_interval}"
    return f"{sym}@depth@100ms"


class BinanceHandler(FeedHandler):
    def __init__(
        self, connector: Connector, name: str, streams: Sequence[Stream], ws_url: str
    ) -> None:
        super().__init__(connector, name, streams)
        self.wire = {s.key: wire_name(s) for s in streams}
        self._url = f"{ws_url.rstrip('/')}/stream?streams=" + "/".join(self.wire.values())
        self._next_id = 0

    def url(self) -> str:
        return self._url

    def parse(self, frame: Frame, recv_ts: float) -> ParseResult:
        return parse.parse(frame, recv_ts)  # type: ignore[arg-type]  # msgspec takes str too

    def on_control(self, ctl: Control) -> list[Outgoing]:
        super().on_control(ctl)
        if ctl.kind == "server_shutdown" and self.client is not None:
            self.log.info("serverShutdown: rotating the connection")
            self.client.rotate("serverShutdown")
        return []

    def _request(self, method: str, names: list[str]) -> str:
        self._next_id += 1
        return json.dumps({"method": method, "params": names, "id": self._next_id})

    def resubscribe(self, stream: Stream) -> None:
        # SUBSCRIBE alone: a no-op for a live subscription, and it restores a lost one
        # without an unsubscribed moment in which updates would be missed.
        self.send_resubscribe(stream, [self._request("SUBSCRIBE", [self.wire[stream.key]])])


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
    """A Binance connector for ``symbols`` (unified). ConfigError for a bad name."""
    options = options or ConnectorOptions()
    streams = plan_streams(EXCHANGE, settings, symbols)

    async def resync(symbol: str) -> BookDelta:
        return await rest.fetch_depth(http, settings.rest_url, symbol)

    connector = make_connector(EXCHANGE, settings, streams, sink, resync=resync,
                               infer_candles=False, options=options, on_reconnect=on_reconnect)
    config = options.ws_config(WsConfig(
        stale_after_s=settings.stale_after_s, max_lifetime_s=MAX_LIFETIME_S,
        close_timeout_s=CLOSE_TIMEOUT_S,
    ))
    limiter = options.limiter(EXCHANGE)
    for i, group in enumerate(chunk(streams, settings.max_streams_per_connection)):
        handler = BinanceHandler(connector, f"stream{i}", group, settings.ws_url)
        connector.attach(handler, config, connect_limiter=limiter, recorder=recorder)

    async def markets() -> set[str]:
        return await rest.list_symbols(http, settings.rest_url)

    connector.market_lister = markets
    return connector

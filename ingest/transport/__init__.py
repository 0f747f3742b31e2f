"""Network I/O shared by the exchange connectors: reconnecting websockets, REST, capture.

- ``ws``: ``WsClient`` (one per connection) driven by a connector's ``WsHandler``;
- ``ratelimit``: ``RateLimiter`` token buckets (messages, connections, REST weight);
- ``backoff``: capped full-jitter backoff (pure rule + stateful helper);
- ``watchdog``: per-stream staleness;
- ``framing``: bounded gzip inflation for HTX;
- ``http``: ``HttpClient`` over one aiohttp session;
- ``recorder``: raw capture in cryptofeed's line format, and ``read_capture``.
"""

from ingest.transport.backoff import Backoff, BackoffPolicy, backoff_delay
from ingest.transport.framing import FrameRejected, gunzip_bounded
from ingest.transport.http import HttpClient, HttpConfig, HttpError, ResponseTooLarge
from ingest.transport.ratelimit import RateLimiter
from ingest.transport.recorder import CaptureRecord, CaptureStats, Recorder, read_capture
from ingest.transport.watchdog import StreamWatchdog
from ingest.transport.ws import (
    BaseWsHandler,
    WsClient,
    WsClosed,
    WsConfig,
    WsConnection,
    WsHandler,
    WsState,
    WsStats,
)

__all__ = [
    "Backoff",
    "BackoffPolicy",
    "BaseWsHandler",
    "CaptureRecord",
    "CaptureStats",
    "FrameRejected",
    "HttpClient",
    "HttpConfig",
    "HttpError",
    "RateLimiter",
    "Recorder",
    "ResponseTooLarge",
    "StreamWatchdog",
    "WsClient",
    "WsClosed",
    "WsConfig",
    "WsConnection",
    "WsHandler",
    "WsState",
    "WsStats",
    "backoff_delay",
    "gunzip_bounded",
    "read_capture",
]

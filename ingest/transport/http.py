"""The shared aiohttp session for exchange REST: rate-limited, bounded, retried.

Every request first waits for its *weight* in the limiter of its exchange (or host), so a
mass reconnect that wants forty depth snapshots queues them behind each other instead of
earning a 429 or a Binance 418 ban. Lower ``priority`` jumps the line (a live book resync
before a backfill page).

Then, within ``timeout_s``: status 200 (2xx) only; the body is counted as it streams in
(after any gzip decoding, so a compressed bomb stops at the cap too) and refused above
``max_body_bytes``; redirects are not followed. Network errors, timeouts and 5xx are
retried with capped full-jitter backoff; a 429/418 empties the limiter for its Retry-After
(every queued request waits it out) and is retried after it, unless that is longer than
``max_retry_after_s``, which raises ``RateLimited`` at once. The last failure is raised.

    ExchangeError
    ├── RateLimited       429/418 after the allowed retries (retry_after_s when given)
    └── HttpError         status, network, timeout (``retryable`` says which)
        └── ResponseTooLarge
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ingest.errors import ExchangeError, RateLimited
from ingest.logs import get_logger
from ingest.transport.backoff import backoff_delay
from ingest.transport.ratelimit import RateLimiter
from ingest.transport.recorder import Recorder

Sleep = Callable[[float], Awaitable[None]]
_log = get_logger("ingest.transport.http")
_CHUNK_BYTES = 64 * 1024
_SNIPPET_BYTES = 300


class HttpError(ExchangeError):
    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ResponseTooLarge(HttpError):
    """The body is larger than ``max_body_bytes`` (never retried)."""


@dataclass(frozen=True)
class HttpConfig:
    timeout_s: float = 30.0  # the whole request, body included; limiter waits excluded
    connect_timeout_s: float = 10.0
    max_body_bytes: int = 32 * 1024 * 1024  # Binance exchangeInfo is several MB
    attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer Retry-After (418 bans) fails at once
    max_connections: int = 32
    user_agent: str = "ingest/0.1"
    trust_env: bool = False  # HTTP(S)_PROXY from the environment


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpClient:
    """One per process; ``async with HttpClient(...) as http: body = await http.get(...)``."""

    def __init__(
        self,
        config: HttpConfig | None = None,
        *,
        limiters: Mapping[str, RateLimiter] | None = None,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        session: aiohttp.ClientSession | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.config = config or HttpConfig()
        self._limiters: dict[str, RateLimiter] = dict(limiters or {})
        self._sleep = sleep
        self._rand = rand
        self._session = session
        self._owns_session = session is None
        self._recorder = recorder
        self.requests = 0
        self.retries = 0
        self.failures = 0

    def set_limiter(self, key: str, limiter: RateLimiter) -> None:
        """``key``: an exchange name (passed as ``limiter=``) or a URL host."""
        self._limiters[key] = limiter

    def limiter_for(self, url: str, key: str | None = None) -> RateLimiter | None:
        return self._limiters.get(key or urlsplit(url).hostname or "")

    async def start(self) -> None:
        if self._session is None:
            cfg = self.config
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=cfg.timeout_s, connect=cfg.connect_timeout_s),
                connector=aiohttp.TCPConnector(limit=cfg.max_connections),
                headers={"User-Agent": cfg.user_agent},
                trust_env=cfg.trust_env,
            )

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> HttpClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(
        self,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        weight: float = 1.0,
        priority: int = 0,
        limiter: str | None = None,
    ) -> bytes:
        """GET ``url`` and return the body. ``weight`` is what the exchange charges for
        it (Binance depth limit=1000: 50); ``limiter`` names the exchange's bucket."""
        bucket = self.limiter_for(url, limiter)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        body = b""
        try:
            async for attempt in retrying:
                with attempt:
                    body = await self._once(url, params, headers, weight, priority, bucket)
        except ExchangeError:
            self.failures += 1
            raise
        return body

    async def _once(
        self,
        url: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
        weight: float,
        priority: int,
        bucket: RateLimiter | None,
    ) -> bytes:
        if bucket is not None:
            await bucket.acquire(weight, priority=priority)
        if self._session is None:
            raise RuntimeError("HttpClient.start() was not called")
        self.requests += 1
        try:
            async with self._session.get(
                url, params=params, headers=headers, allow_redirects=False
            ) as resp:
                await self._check_status(resp, bucket)
                body = await self._read_body(resp)
                final_url = str(resp.url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = f"GET {url}: {type(exc).__name__}: {exc}"[:300]
            raise HttpError(detail, retryable=True) from exc
        if self._recorder is not None:
            self._record(final_url, body)
        return body

    def _record(self, url: str, body: bytes) -> None:
        # Text as text, like cryptofeed's REST lines; anything else as a bytes literal.
        try:
            payload: str | bytes = body.decode("utf-8")
        except UnicodeDecodeError:
            payload = body
        if self._recorder is not None:
            self._recorder.rest("http", url, time.time(), payload)

    async def _check_status(self, resp: aiohttp.ClientResponse, bucket: RateLimiter | None) -> None:
        status = resp.status
        if 200 <= status < 300:
            return
        where = f"GET {resp.url.with_query(None)}: HTTP {status}"
        if status in (429, 418):
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if bucket is not None and retry_after:
                bucket.penalize(retry_after)  # everyone queued on this exchange waits too
            raise RateLimited(f"{where} (Retry-After {retry_after})", retry_after)
        snippet = (await resp.content.read(_SNIPPET_BYTES)).decode("utf-8", "replace")
        raise HttpError(f"{where}: {snippet}", status=status, retryable=status >= 500)

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.config.max_body_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise ResponseTooLarge(
                f"GET {resp.url}: Content-Length {resp.content_length} > {limit} bytes",
                status=resp.status,
            )
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                raise ResponseTooLarge(f"GET {resp.url}: body exceeds {limit} bytes",
                                       status=resp.status)
        return bytes(body)

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, RateLimited):
            return exc.retry_after_s is None or exc.retry_after_s <= self.config.max_retry_after_s
        return isinstance(exc, HttpError) and exc.retryable

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            return exc.retry_after_s
        cfg = self.config
        return backoff_delay(
            state.attempt_number - 1, self._rand(),
            base_s=cfg.backoff_base_s, cap_s=cfg.backoff_cap_s, min_s=0.0,
        )

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        _log.warning("http.retry", attempt=state.attempt_number, delay_s=round(delay, 3),
                     error=str(exc)[:300])


"""ccxt's async REST, pointed at the configured endpoints, answering with the raw body.

Backfill goes through ccxt (its rate limiter, its endpoint table, its error mapping) but
parses nothing ccxt parsed: ccxt's unified OHLCV drops quote volume and trade counts, and
its JSON decoder turns HTX's numbers into floats. ``ExchangeClient.get`` calls one of ccxt's
raw endpoint methods (``publicGetKlines``, ``publicSpotGetCandlesticks``,
``spotPublicGetMarketHistoryCandles``, …) and hands back the exact response text, which the
project's own REST parsers turn into the same records the live stream produces.

How the body is caught: ccxt calls ``on_rest_response`` with the text of every response,
inside the task that made the request. A context variable set around each call gives that
hook a box to fill, so concurrent requests on one client never see each other's bodies
(``last_http_response`` would be racy).

Retries (tenacity): ccxt's ``NetworkError`` family (timeouts, resets, 5xx,
``ExchangeNotAvailable``/``OnMaintenance``, 429 ``RateLimitExceeded``, 418
``DDoSProtection``) is retried with capped full-jitter backoff. A ``Retry-After`` header is
honoured, and pauses every request of this client until it has passed (they would all get
the same answer). Anything else is permanent and raises ``ExchangeError`` at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from ingest.errors import ConfigError, ExchangeError
from ingest.logs import get_logger
from ingest.settings import ExchangeSettings

T = TypeVar("T")
_log = get_logger("ingest.backfill")

CCXT_IDS = {"binance": "binance", "gateio": "gate", "huobi": "htx"}
# Binance's current weights (protocols.md §1.3); ccxt 4.5.90 still charges the old ones
# (historicalTrades 10, aggTrades 2). One ccxt cost unit is weight 5 (rateLimit 50 ms).
_BINANCE_COSTS = {"historicalTrades": 5.0, "trades": 5.0, "aggTrades": 0.8}
_DUMMY_KEY = "ingest-backfill-no-key"


@dataclass
class RawReply:
    status: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    recv_ts: float = 0.0

    @property
    def body(self) -> bytes:
        return self.text.encode()


_BACK_OFF = (418, 429, 503)  # statuses whose Retry-After is honoured
_CAPTURE: contextvars.ContextVar[RawReply | None] = contextvars.ContextVar(
    "ingest_backfill_capture", default=None)


class _Capture:
    """Mixin for a ccxt exchange class: copy each response into the caller's box, and
    count the time spent waiting for ccxt's rate limiter."""

    limiter_s = 0.0

    async def throttle(self, cost: Any = None) -> Any:
        started = time.monotonic()
        try:
            return await super().throttle(cost)  # type: ignore[misc]
        finally:
            self.limiter_s += time.monotonic() - started

    def on_rest_response(self, code: Any, reason: Any, url: Any, method: Any, response_headers: Any,
                         response_body: Any, request_headers: Any, request_body: Any) -> Any:
        box = _CAPTURE.get()
        if box is not None:
            box.status = int(code or 0)
            box.headers = dict(response_headers or {})
            box.text = response_body if isinstance(response_body, str) else ""
            box.recv_ts = time.time()
        return super().on_rest_response(  # type: ignore[misc]
            code, reason, url, method, response_headers, response_body, request_headers,
            request_body)


class _Binance(_Capture, ccxt.binance):  # type: ignore[misc]
    def calculate_rate_limiter_cost(self, api: Any, method: Any, path: Any, params: Any,
                                    config: Any = None) -> Any:
        if api == ["public"] and path in _BINANCE_COSTS:
            return _BINANCE_COSTS[path]
        return super().calculate_rate_limiter_cost(api, method, path, params, config or {})

    def sign(self, path: str, api: Any = None, method: str = "GET", params: Any = None) -> Any:
        signed = super().sign(path, api or ["public"], method, params or {})
        if path == "historicalTrades":
            # ccxt refuses the call without a key, so it has a dummy one; Binance needs none
            # (keyless since 2023-07) and might refuse a malformed one: do not send it.
            signed["headers"] = {k: v for k, v in (signed.get("headers") or {}).items()
                                 if k != "X-MBX-APIKEY"} or None
        return signed


class _Gate(_Capture, ccxt.gate):  # type: ignore[misc]
    pass


class _Htx(_Capture, ccxt.htx):  # type: ignore[misc]
    pass


def build_ccxt(exchange: str, rest_url: str, *, timeout_s: float,
               rate_limit_ms: float | None = None) -> Any:
    """A ccxt async exchange for spot market data at ``rest_url`` (protocols.md §4.2)."""
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": int(timeout_s * 1000)}
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    base = rest_url.rstrip("/")
    if exchange == "binance":
        ex = _Binance({**config, "options": {"fetchMarkets": {"types": ["spot"]}}})
        ex.urls["api"]["public"] = f"{base}/api/v3"
        return ex
    if exchange == "gateio":
        ex = _Gate({**config, "options": {"fetchMarkets": {"types": ["spot"]}}})
        for key in ex.urls["api"]["public"]:
            ex.urls["api"]["public"][key] = base
        return ex
    if exchange == "huobi":
        ex = _Htx({**config, "options": {"fetchMarkets": {
            "types": {"spot": True, "linear": False, "inverse": False}}}})
        parts = urlsplit(base)
        # HTX urls are templates 'https://{hostname}'; the host may carry a path prefix.
        ex.urls["hostnames"]["spot"] = parts.netloc + parts.path
        for key in list(ex.urls["api"]):
            ex.urls["api"][key] = f"{parts.scheme}://{{hostname}}"
        return ex
    raise ConfigError(f"unknown exchange {exchange!r}")


@dataclass
class ClientStats:
    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    network_s: float = 0.0  # time inside requests: rate-limiter waits, the wire, pauses


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_retry_after_s: float = 600.0  # a longer ban (418) is reported, not slept through


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # an HTTP date: rare for exchanges; fall back to backoff
    return None


class ExchangeClient:
    """One ccxt client per exchange, shared by every backfill job on that exchange."""

    def __init__(self, exchange: str, settings: ExchangeSettings, *, timeout_s: float,
                 rate_limit_ms: float | None = None, retry: RetryPolicy | None = None) -> None:
        self.exchange = exchange
        self.ccxt = build_ccxt(exchange, settings.rest_url, timeout_s=timeout_s,
                               rate_limit_ms=rate_limit_ms)
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._paused_until = 0.0
        self._markets: dict[str, Any] = {}

    async def open(self) -> None:
        """Load the spot markets (so symbols can be checked); then arm historicalTrades."""
        async def load(box: RawReply) -> dict[str, Any]:
            markets: dict[str, Any] = await self.ccxt.load_markets()
            return markets

        self._markets = await self._retrying("load markets", load)
        if self.exchange == "binance":
            self.ccxt.apiKey = _DUMMY_KEY

    def check_symbol(self, unified: str) -> None:
        market = self._markets.get(unified)
        if market is None or not market.get("spot"):
            raise ConfigError(f"{self.exchange}: unknown symbol {unified!r} "
                              f"(not among the exchange's {len(self._markets)} spot markets)")

    @property
    def limiter_s(self) -> float:
        """Time requests have waited in ccxt's rate limiter (summed over callers)."""
        return float(self.ccxt.limiter_s)

    async def get(self, method: str, params: dict[str, Any]) -> RawReply:
        """Call ccxt's raw endpoint ``method`` and return the response text (retried)."""
        fn = getattr(self.ccxt, method)

        async def once(box: RawReply) -> RawReply:
            await fn(dict(params))  # ccxt's decoded JSON is dropped: the box has the text
            return box

        return await self._retrying(method, once)

    async def close(self) -> None:
        await self.ccxt.close()

    async def _attempt(self, fn: Callable[[RawReply], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            pause = self._paused_until - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            box = RawReply()
            token = _CAPTURE.set(box)
            self.stats.requests += 1
            try:
                try:
                    return await fn(box)
                except ccxt.ExchangeError as exc:
                    if box.status not in _BACK_OFF and box.status < 500:
                        raise
                    # An error body on a 429/418/5xx (HTX answers 429 with its own error
                    # envelope, which ccxt maps by body to a plain ExchangeError): what the
                    # HTTP status says wins, and that is "retry later".
                    retry: type[ccxt.NetworkError] = (
                        ccxt.ExchangeNotAvailable if box.status >= 500 else ccxt.RateLimitExceeded)
                    raise retry(str(exc)) from exc
            except ccxt.NetworkError as exc:
                wait = _retry_after_s(box.headers) if box.status in _BACK_OFF else None
                exc.retry_after_s = wait  # read by the retry policy
                if wait:
                    self._paused_until = max(self._paused_until, loop.time() + wait)
                raise
            finally:
                _CAPTURE.reset(token)
        finally:
            self.stats.network_s += loop.time() - started

    async def _retrying(self, what: str, fn: Callable[[RawReply], Awaitable[T]]) -> T:
        policy = self.retry
        backoff = wait_random_exponential(multiplier=policy.backoff_base_s, max=policy.backoff_cap_s)

        def retryable(exc: BaseException) -> bool:
            after = getattr(exc, "retry_after_s", None)
            too_long = after is not None and after > policy.max_retry_after_s
            return isinstance(exc, ccxt.NetworkError) and not too_long

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after_s", None)
            # The pause itself happens in _attempt (shared by every caller); add jitter.
            return backoff(state) * 0.1 if after else backoff(state)

        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            _log.warning("exchange request failed; retrying", exchange=self.exchange, what=what,
                         attempt=state.attempt_number,
                         retry_after_s=getattr(exc, "retry_after_s", None),
                         error=f"{type(exc).__name__}: {exc}"[:300])

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(policy.attempts), wait=wait, reraise=True,
                retry=retry_if_exception(retryable), before_sleep=before_sleep,
            ):
                with attempt:
                    return await self._attempt(fn)
        except ccxt.BaseError as exc:
            after = getattr(exc, "retry_after_s", None)
            ban = (f" (Retry-After {after:g} s is longer than the {policy.max_retry_after_s:g} s "
                   "this waits)" if after and after > policy.max_retry_after_s else "")
            raise ExchangeError(f"{self.exchange}: {what}: {type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:300]}{ban}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

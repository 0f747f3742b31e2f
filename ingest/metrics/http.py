"""One GET against a metrics API, through the shared aiohttp session, made safe to trust.

What a response must pass before a parser sees it:
- status 200 (429 → ``RateLimited`` with its Retry-After; 5xx → retryable; others → bad);
- a JSON content type (an HTML error page or a CDN's text page is refused by name);
- a body no larger than ``max_body_bytes``, counted as it streams in (after any gzip
  decoding, so a compressed bomb stops at the cap too);
- all of that within ``timeout_s``.

Network errors, timeouts and 5xx are retried a few times with capped, jittered back-off
(tenacity, with an injectable ``sleep`` so tests do not wait). A 429 whose Retry-After is
short is waited out once inside the run; a longer one ends the run and the scheduler
pushes the next run past it. Redirects are not followed: an API key header must not be
carried to a host we did not configure.

Failure reasons are short fixed codes (``timeout``, ``network``, ``http_5xx``, ``http_4xx``,
``rate_limited``, ``content_type``, ``html_page``, ``too_large``) — fit for a metric label.
Details are truncated and have every configured secret replaced by ``***``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from ingest import logs
from ingest.errors import ExchangeError, IngestError, RateLimited
from ingest.metrics.parse import snippet
from ingest.metrics.schedule import parse_retry_after
from ingest.metrics.values import BadValue

Sleep = Callable[[float], Awaitable[None]]


def _log() -> Any:
    # Resolved per call, not at import: a logger bound at import time keeps the structlog
    # configuration of that moment, and cli.py imports commands before configuring logs.
    return logs.get_logger("ingest.metrics.http")

USER_AGENT = "ingest-metrics/0.1"


class FetchError(ExchangeError):
    """The request failed before a usable body arrived. ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str, *, retryable: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retryable = retryable


@dataclass(frozen=True)
class FetchPolicy:
    timeout_s: float = 15.0
    max_body_bytes: int = 2_000_000
    attempts: int = 3  # per run; the scheduler retries the run itself later
    backoff_cap_s: float = 10.0
    max_inline_retry_after_s: float = 60.0  # a longer Retry-After ends the run instead


def reason_of(exc: BaseException) -> str:
    """The short failure code of anything a poll can raise."""
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, FetchError | BadValue):
        return exc.reason
    if isinstance(exc, IngestError):
        return type(exc).__name__.lower()
    return "internal"


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return logs.scrub(text)


def _media_ok(media_type: str) -> bool:
    return media_type in ("application/json", "text/json") or media_type.endswith("+json")


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise FetchError("too_large", f"Content-Length {resp.content_length} > {limit} bytes")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise FetchError("too_large", f"body exceeds {limit} bytes")
    return bytes(buf)


async def _check_status(resp: aiohttp.ClientResponse, now_wall_s: float) -> None:
    if resp.status == 200:
        return
    head = snippet(await resp.content.read(512))
    if resp.status == 429:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"), now_wall_s)
        raise RateLimited(f"HTTP 429 (Retry-After {retry_after}s): {head}", retry_after)
    if resp.status >= 500:
        raise FetchError("http_5xx", f"HTTP {resp.status}: {head}", retryable=True)
    reason = "http_4xx" if resp.status >= 400 else "http_status"  # 3xx: redirects not followed
    raise FetchError(reason, f"HTTP {resp.status}: {head}")


async def _get_raw(
    session: aiohttp.ClientSession,
    url: str,
    params: dict[str, str],
    headers: dict[str, str],
    policy: FetchPolicy,
    now_wall: Callable[[], float],
) -> bytes:
    timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
    try:
        async with session.get(url, params=params, headers=headers, timeout=timeout,
                               allow_redirects=False) as resp:
            await _check_status(resp, now_wall())
            media = resp.content_type.lower()
            if "html" in media:
                raise FetchError("html_page", f"{media}: {snippet(await resp.content.read(512))}")
            if not _media_ok(media):
                raise FetchError("content_type", f"unexpected content type {media!r}")
            return await _read_capped(resp, policy.max_body_bytes)
    except TimeoutError:
        raise FetchError("timeout", f"no complete answer within {policy.timeout_s:g} s",
                         retryable=True) from None
    except aiohttp.ClientError as exc:
        # The aiohttp exception is not chained: some carry request_info with our headers.
        raise FetchError("network", f"{type(exc).__name__}: {str(exc)[:200]}",
                         retryable=True) from None


async def get_once(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: dict[str, str],
    headers: dict[str, str],
    policy: FetchPolicy,
    secrets: Sequence[str] = (),
    now_wall: Callable[[], float] = time.time,
) -> bytes:
    """One attempt: the body of a 200 JSON response, or a ``FetchError``/``RateLimited``.

    Error texts quote the start of the response body, and a hostile or buggy server may
    echo our headers back: every secret is replaced before the exception leaves here.
    """
    failure: FetchError | RateLimited
    try:
        return await _get_raw(session, url, params, headers, policy, now_wall)
    except FetchError as exc:
        failure = FetchError(exc.reason, redact(exc.detail, secrets), retryable=exc.retryable)
    except RateLimited as exc:
        failure = RateLimited(redact(str(exc), secrets), exc.retry_after_s)
    # Raised outside the handler, so the unredacted original is not even its __context__.
    raise failure


def _should_retry(policy: FetchPolicy) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, RateLimited):
            wait_s = exc.retry_after_s
            return wait_s is not None and wait_s <= policy.max_inline_retry_after_s
        return isinstance(exc, FetchError) and exc.retryable

    return check


def _wait(policy: FetchPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=0.5, max=policy.backoff_cap_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            return exc.retry_after_s  # the server said when; honour it exactly
        return float(backoff(state))

    return wait


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    params: dict[str, str],
    headers: dict[str, str],
    policy: FetchPolicy,
    sleep: Sleep,
    secrets: Sequence[str] = (),
    log_context: dict[str, Any] | None = None,
) -> bytes:
    """``get_once`` with retries on network errors, timeouts, 5xx and short 429s."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        _log().info("metrics request retry", **(log_context or {}),
                    attempt=state.attempt_number, reason=reason_of(exc) if exc else "?",
                    wait_s=round(wait_s, 3), detail=redact(str(exc), secrets)[:300])

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=retry_if_exception(_should_retry(policy)),
        sleep=sleep,
        reraise=True,
        before_sleep=before_sleep,
    )
    body: bytes = await retrying(get_once, session, url, params=params, headers=headers,
                                 policy=policy, secrets=secrets)
    return body

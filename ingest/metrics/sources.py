"""The two sources: what to request (URL, query, headers) and which parser reads the answer.

CoinGecko ``GET {base}/global``: keyless, or with a demo key (``x-cg-demo-api-key``, same
host) or a pro key (``x-cg-pro-api-key``; the pro host ``pro-api.coingecko.com`` when the
configured URL is still the public default). The key travels only as a header — never in
the URL, so it cannot reach a log line through a logged URL or an aiohttp error text.

alternative.me ``GET {base}/fng/?limit=N``: ``limit=1`` for the newest day, ``limit=0``
for the whole history (loaded once, on first start).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from ingest.metrics.http import FetchPolicy, Sleep, fetch
from ingest.metrics.parse import Parsed, parse_coingecko_global, parse_fear_greed
from ingest.settings import MetricsSettings

COINGECKO_JOB = "coingecko"
FEAR_GREED_JOB = "fear_greed"
COINGECKO_PUBLIC_URL = MetricsSettings().coingecko_url
COINGECKO_PRO_URL = "https://pro-api.coingecko.com/api/v3"
KEY_HEADERS = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}

Parser = Callable[[bytes, float], Parsed]


@dataclass(frozen=True)
class Request:
    url: str
    params: dict[str, str]
    # repr=False: a Request printed in a traceback or a debug line must not show the key.
    headers: dict[str, str] = field(repr=False)


def _base(url: str) -> str:
    return url.rstrip("/")


def coingecko_request(m: MetricsSettings) -> Request:
    base = _base(m.coingecko_url)
    headers = {"Accept": "application/json", "User-Agent": "ingest-metrics/0.1"}
    if m.coingecko_api_key:
        headers[KEY_HEADERS[m.coingecko_api_plan]] = m.coingecko_api_key
        if m.coingecko_api_plan == "pro" and base == _base(COINGECKO_PUBLIC_URL):
            base = COINGECKO_PRO_URL  # pro keys are refused on the public host
    return Request(url=f"{base}/global", params={}, headers=headers)


def fear_greed_request(m: MetricsSettings, limit: int) -> Request:
    return Request(
        url=f"{_base(m.fear_greed_url)}/fng/",
        params={"limit": str(limit)},
        headers={"Accept": "application/json", "User-Agent": "ingest-metrics/0.1"},
    )


@dataclass
class Poller:
    """Everything a poll needs besides the request: the shared session and the knobs."""

    session: aiohttp.ClientSession
    policy: FetchPolicy
    sleep: Sleep
    secrets: tuple[str, ...] = ()
    now_wall: Callable[[], float] = time.time

    async def poll(self, job: str, request: Request, parser: Parser) -> Parsed:
        body = await fetch(self.session, request.url, params=request.params,
                           headers=request.headers, policy=self.policy, sleep=self.sleep,
                           secrets=self.secrets, log_context={"source": job})
        return parser(body, self.now_wall())


def policy_for(m: MetricsSettings) -> FetchPolicy:
    return FetchPolicy(timeout_s=m.http_timeout_s, max_body_bytes=m.max_body_bytes)


__all__ = [
    "COINGECKO_JOB",
    "COINGECKO_PRO_URL",
    "FEAR_GREED_JOB",
    "Poller",
    "Request",
    "coingecko_request",
    "fear_greed_request",
    "parse_coingecko_global",
    "parse_fear_greed",
    "policy_for",
]

"""The HTTP layer against a local scripted server: status handling, limits, retries, keys."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from ingest import logs
from ingest.errors import RateLimited
from ingest.metrics.http import FetchError, FetchPolicy, fetch
from ingest.metrics.sources import (
    COINGECKO_PRO_URL,
    coingecko_request,
    fear_greed_request,
)
from ingest.settings import MetricsSettings
from tests.metrics.conftest import Sleeps
from tests.metrics.fakeapi import CG_PATH, COINGECKO_BODY, FNG_PATH, FakeApi, Reply

POLICY = FetchPolicy(timeout_s=2.0, max_body_bytes=64 * 1024, attempts=3)
KEY = "CG-test-secret-key-0123456789"


async def get(api: FakeApi, session: aiohttp.ClientSession, sleeps: Sleeps,
              policy: FetchPolicy = POLICY, path: str = CG_PATH,
              headers: dict[str, str] | None = None) -> bytes:
    return await fetch(session, api.base + path, params={}, headers=headers or {},
                       policy=policy, sleep=sleeps, secrets=(KEY,))


async def test_ok(api: FakeApi, session: aiohttp.ClientSession, sleeps: Sleeps) -> None:
    assert await get(api, session, sleeps) == COINGECKO_BODY
    assert sleeps.calls == []


async def test_429_short_retry_after_is_waited_out(api: FakeApi, session: aiohttp.ClientSession,
                                                  sleeps: Sleeps) -> None:
    api.queue(CG_PATH, Reply(429, b'{"status": {"error_code": 429}}', headers={"Retry-After": "7"}))
    assert await get(api, session, sleeps) == COINGECKO_BODY
    assert sleeps.calls == [7.0]  # exactly what the server asked for
    assert len(api.requests(CG_PATH)) == 2


async def test_429_long_retry_after_ends_the_run(api: FakeApi, session: aiohttp.ClientSession,
                                                sleeps: Sleeps) -> None:
    api.queue(CG_PATH, Reply(429, b"{}", headers={"Retry-After": "3600"}))
    with pytest.raises(RateLimited) as info:
        await get(api, session, sleeps)
    assert info.value.retry_after_s == 3600.0
    assert sleeps.calls == []
    assert len(api.requests(CG_PATH)) == 1  # no hammering a server that said "later"


async def test_429_without_retry_after_is_not_retried(api: FakeApi, session: aiohttp.ClientSession,
                                                     sleeps: Sleeps) -> None:
    api.queue(CG_PATH, Reply(429, b"{}"))
    with pytest.raises(RateLimited) as info:
        await get(api, session, sleeps)
    assert info.value.retry_after_s is None
    assert len(api.requests(CG_PATH)) == 1


async def test_500_then_success(api: FakeApi, session: aiohttp.ClientSession,
                                sleeps: Sleeps) -> None:
    api.queue(CG_PATH, Reply(500, b"oops", "text/plain"), Reply(503, b"{}"))
    assert await get(api, session, sleeps) == COINGECKO_BODY
    assert len(sleeps.calls) == 2
    assert all(0 <= s <= POLICY.backoff_cap_s for s in sleeps.calls)


async def test_5xx_gives_up_after_the_attempts(api: FakeApi, session: aiohttp.ClientSession,
                                               sleeps: Sleeps) -> None:
    api.queue(CG_PATH, *[Reply(502, b"bad gateway", "text/plain")] * 5)
    with pytest.raises(FetchError) as info:
        await get(api, session, sleeps)
    assert info.value.reason == "http_5xx"
    assert len(api.requests(CG_PATH)) == POLICY.attempts


async def test_timeout_is_retried_then_reported(api: FakeApi, session: aiohttp.ClientSession,
                                                sleeps: Sleeps) -> None:
    policy = dataclasses.replace(POLICY, timeout_s=0.2, attempts=2)
    api.queue(CG_PATH, *[Reply(body=COINGECKO_BODY, delay_s=1.0)] * 2)
    with pytest.raises(FetchError) as info:
        await get(api, session, sleeps, policy)
    assert info.value.reason == "timeout"
    assert len(sleeps.calls) == 1


async def test_connection_refused_is_network(session: aiohttp.ClientSession,
                                             sleeps: Sleeps) -> None:
    from ingest.db.embedded import free_port

    with pytest.raises(FetchError) as info:
        await fetch(session, f"http://127.0.0.1:{free_port()}/global", params={}, headers={},
                    policy=POLICY, sleep=sleeps)
    assert info.value.reason == "network"
    assert len(sleeps.calls) == POLICY.attempts - 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(200, b"<html><body>Attention required</body></html>", "text/html"), "html_page"),
        (Reply(403, b"<html>Forbidden</html>", "text/html"), "http_4xx"),
        (Reply(404, b'{"error": "not found"}'), "http_4xx"),
        (Reply(200, b'{"data": {}}', "text/plain"), "content_type"),
        (Reply(200, b'{"data": {}}', "application/octet-stream"), "content_type"),
        (Reply(200, b"x" * (64 * 1024 + 1)), "too_large"),  # Content-Length says so
        (Reply(200, b"x" * (300 * 1024), chunked=True), "too_large"),  # counted as it streams
    ],
)
async def test_bad_responses(api: FakeApi, session: aiohttp.ClientSession, sleeps: Sleeps,
                             reply: Reply, reason: str) -> None:
    api.queue(CG_PATH, reply)
    with pytest.raises(FetchError) as info:
        await get(api, session, sleeps)
    assert info.value.reason == reason
    assert len(str(info.value)) < 500
    assert len(api.requests(CG_PATH)) == 1  # not retried: asking again gives the same


async def test_redirect_is_not_followed(api: FakeApi, session: aiohttp.ClientSession,
                                        sleeps: Sleeps) -> None:
    with pytest.raises(FetchError) as info:
        await get(api, session, sleeps, path="/redirect/global", headers={"x-cg-demo-api-key": KEY})
    assert info.value.reason == "http_status"
    assert api.requests(CG_PATH) == []  # the key went nowhere else


async def test_key_echoed_by_server_is_redacted_from_errors(
    api: FakeApi, session: aiohttp.ClientSession, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the global log scrubber: this layer must redact on its own.
    monkeypatch.setattr(logs, "_known_secrets", set())
    api.queue(CG_PATH, Reply(400, b"bad key ", "text/plain", echo_headers=True),
              Reply(200, b"<html>", "text/html", echo_headers=True),
              Reply(429, b"slow down ", "text/plain", echo_headers=True))
    for _ in range(3):
        with pytest.raises((FetchError, RateLimited)) as info:
            await get(api, session, sleeps, headers={"x-cg-demo-api-key": KEY})
        assert KEY not in str(info.value)
        assert KEY not in repr(info.value.args)
        assert info.value.__cause__ is None and info.value.__context__ is None
    assert all(s.headers.get("x-cg-demo-api-key") == KEY for s in api.requests(CG_PATH))


def test_coingecko_request_key_headers() -> None:
    plain = coingecko_request(MetricsSettings())
    assert plain.url == "https://api.coingecko.com/api/v3/global"
    assert not any(k.startswith("x-cg") for k in plain.headers)

    demo = coingecko_request(MetricsSettings(coingecko_api_key=KEY))
    assert demo.url == "https://api.coingecko.com/api/v3/global"
    assert demo.headers["x-cg-demo-api-key"] == KEY
    assert KEY not in repr(demo) and KEY not in demo.url

    pro = coingecko_request(MetricsSettings(coingecko_api_key=KEY, coingecko_api_plan="pro"))
    assert pro.url == f"{COINGECKO_PRO_URL}/global"
    assert pro.headers["x-cg-pro-api-key"] == KEY
    assert "x-cg-demo-api-key" not in pro.headers

    custom = coingecko_request(MetricsSettings(coingecko_url="http://127.0.0.1:9/cg/api/v3/",
                                               coingecko_api_key=KEY, coingecko_api_plan="pro"))
    assert custom.url == "http://127.0.0.1:9/cg/api/v3/global"  # a configured URL is kept


def test_fear_greed_request() -> None:
    r = fear_greed_request(MetricsSettings(fear_greed_url="http://h/alternative/"), 0)
    assert (r.url, r.params) == ("http://h/alternative/fng/", {"limit": "0"})


async def test_fear_greed_path(api: FakeApi, session: aiohttp.ClientSession,
                               sleeps: Sleeps) -> None:
    body = await get(api, session, sleeps, path=FNG_PATH)
    assert b"Neutral" in body

"""HttpClient against a local aiohttp server: limits, retries, bounds."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from ingest.errors import RateLimited
from ingest.transport.http import (
    HttpClient,
    HttpConfig,
    HttpError,
    ResponseTooLarge,
    parse_retry_after,
)
from ingest.transport.ratelimit import RateLimiter
from ingest.transport.recorder import Recorder, read_capture
from tests.transport.conftest import FakeClock


class Server:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.base = ""

    def count(self, request: web.Request) -> int:
        n = self.hits.get(request.path, 0) + 1
        self.hits[request.path] = n
        return n

    async def ok(self, request: web.Request) -> web.Response:
        self.count(request)
        return web.Response(body=b'{"lastUpdateId":1}', content_type="application/json")

    async def flaky(self, request: web.Request) -> web.Response:
        if self.count(request) <= 2:
            return web.Response(status=503, text="busy")
        return web.Response(body=b"fine")

    async def limited(self, request: web.Request) -> web.Response:
        if self.count(request) == 1:
            return web.Response(status=429, headers={"Retry-After": "7"})
        return web.Response(body=b"after the wait")

    async def always_429(self, request: web.Request) -> web.Response:
        self.count(request)
        return web.Response(status=429, headers={"Retry-After": "1"})

    async def banned(self, request: web.Request) -> web.Response:
        self.count(request)
        return web.Response(status=418, headers={"Retry-After": "3600"})

    async def not_found(self, request: web.Request) -> web.Response:
        self.count(request)
        return web.Response(status=404, text='{"code":-1121,"msg":"Invalid symbol."}')

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)

    async def big_chunked(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"y" * 1000)
        await resp.write_eof()
        return resp

    async def bomb(self, request: web.Request) -> web.Response:
        body = gzip.compress(b"0" * 10_000_000)
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.add_routes([
        web.get("/ok", srv.ok), web.get("/flaky", srv.flaky), web.get("/limited", srv.limited),
        web.get("/always429", srv.always_429), web.get("/banned", srv.banned),
        web.get("/missing", srv.not_found), web.get("/big", srv.big),
        web.get("/big-chunked", srv.big_chunked), web.get("/bomb", srv.bomb),
    ])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.base = f"http://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def client(clock: FakeClock, **cfg: object) -> HttpClient:
    config = HttpConfig(max_body_bytes=1000, attempts=3, backoff_base_s=0.5, backoff_cap_s=4,
                        **cfg)  # type: ignore[arg-type]
    http = HttpClient(config, sleep=clock.sleep, rand=lambda: 1.0)
    http.set_limiter("binance", RateLimiter(10, 10, clock=clock, sleep=clock.sleep))
    return http


async def test_get_returns_bytes(server: Server, clock: FakeClock) -> None:
    async with client(clock) as http:
        assert await http.get(f"{server.base}/ok", params={"symbol": "BTCUSDT"}) == (
            b'{"lastUpdateId":1}')


async def test_5xx_is_retried_with_capped_backoff(server: Server, clock: FakeClock) -> None:
    async with client(clock) as http:
        assert await http.get(f"{server.base}/flaky") == b"fine"
    assert server.hits["/flaky"] == 3
    assert clock.sleeps == [0.5, 1.0]  # backoff_delay(attempt, rand=1.0): full ceiling
    assert http.retries == 2


async def test_429_retry_after_is_honoured_and_holds_the_bucket(
    server: Server, clock: FakeClock
) -> None:
    async with client(clock) as http:
        body = await http.get(f"{server.base}/limited", limiter="binance")
    assert body == b"after the wait"
    assert clock.sleeps[0] == 7.0  # Retry-After, not the backoff rule
    assert server.hits["/limited"] == 2


async def test_429_after_the_allowed_retries_raises_rate_limited(
    server: Server, clock: FakeClock
) -> None:
    async with client(clock) as http:
        with pytest.raises(RateLimited) as info:
            await http.get(f"{server.base}/always429")
    assert info.value.retry_after_s == 1.0
    assert server.hits["/always429"] == 3
    assert http.failures == 1


async def test_long_ban_is_not_waited_inline(server: Server, clock: FakeClock) -> None:
    async with client(clock) as http:
        with pytest.raises(RateLimited) as info:
            await http.get(f"{server.base}/banned", limiter="binance")
    assert info.value.retry_after_s == 3600
    assert server.hits["/banned"] == 1
    assert clock.sleeps == []
    # ...but the exchange's bucket now holds everyone else for the ban.
    limiter = http.limiter_for("", "binance")
    assert limiter is not None and limiter.delay_for(1) > 3500


async def test_4xx_is_not_retried(server: Server, clock: FakeClock) -> None:
    async with client(clock) as http:
        with pytest.raises(HttpError) as info:
            await http.get(f"{server.base}/missing")
    assert info.value.status == 404 and "Invalid symbol" in str(info.value)
    assert server.hits["/missing"] == 1


@pytest.mark.parametrize("path", ["/big", "/big-chunked", "/bomb"])
async def test_oversize_body_is_rejected(server: Server, clock: FakeClock, path: str) -> None:
    async with client(clock) as http:
        with pytest.raises(ResponseTooLarge):
            await http.get(f"{server.base}{path}")
    assert clock.sleeps == []  # not retried


async def test_network_error_is_retried_then_raised(clock: FakeClock) -> None:
    async with client(clock) as http:
        with pytest.raises(HttpError) as info:
            await http.get("http://127.0.0.1:1/unreachable")
    assert info.value.retryable
    assert len(clock.sleeps) == 2


async def test_requests_wait_for_weight_instead_of_bursting(
    server: Server, clock: FakeClock
) -> None:
    async with client(clock) as http:
        http.set_limiter("binance", RateLimiter(100, 100, clock=clock, sleep=clock.sleep))
        for _ in range(4):  # 4 depth snapshots of weight 50 against 100 per second
            await http.get(f"{server.base}/ok", weight=50, limiter="binance")
    assert server.hits["/ok"] == 4
    assert clock() - 1000.0 == pytest.approx(1.0)  # two fit the bucket, two waited 0.5 s


async def test_rest_responses_can_be_recorded(
    server: Server, clock: FakeClock, tmp_path: Path
) -> None:
    rec = Recorder(tmp_path)
    async with HttpClient(HttpConfig(), recorder=rec) as http:
        await http.get(f"{server.base}/ok", params={"symbol": "BTCUSDT"})
    rec.close()
    (record,) = read_capture(tmp_path)
    assert record.kind == "rest" and record.url == f"{server.base}/ok?symbol=BTCUSDT"
    assert record.payload == '{"lastUpdateId":1}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 0 ", 0.0), ("1.5", 1.5), ("-3", 0.0), (None, None), ("soon", None),
     ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1445412480.0) == expected

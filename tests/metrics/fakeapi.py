"""A scripted local stand-in for CoinGecko /api/v3/global and alternative.me /fng/.

Bodies are shaped like the ones in ../shared/protocols.md sections 5 and 6. Each path has
a queue of scripted replies (status, body, content type, headers, delay); when the queue
is empty the path answers with its normal body. Every request is recorded (path, query,
headers) with the number of requests in flight, so tests can check overlap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CG_PATH = "/coingecko/api/v3/global"
FNG_PATH = "/alternative/fng/"

# protocols.md §5: the reference sample's numbers, with the common-use-cases dominance block.
COINGECKO_BODY = (
    b'{"data": {"active_cryptocurrencies": 13690, "upcoming_icos": 0, "ongoing_icos": 49,'
    b' "ended_icos": 3376, "markets": 1046,'
    b' "total_market_cap": {"btc": 39003738.0847159, "eth": 803832137.207531,'
    b' "usd": 2721226850772.63},'
    b' "total_volume": {"btc": 993675.225562481, "usd": 69327091133.54},'
    b' "market_cap_percentage": {"btc": 47.82057011844006, "eth": 16.943340351591583},'
    b' "market_cap_change_percentage_24h_usd": -5.032104325648996,'
    b' "updated_at": 1706002730}}'
)
COINGECKO_TS = 1706002730

# protocols.md §6, newest first; time_until_update only on the newest entry.
FNG_LATEST = (
    b'{"name": "Fear and Greed Index", "data": [{"value": "47", "value_classification":'
    b' "Neutral", "timestamp": "1777248000", "time_until_update": "3600"}],'
    b' "metadata": {"error": null}}'
)
FNG_LATEST_TS = 1777248000
HISTORY_DAYS = 30
_CLASSES = ("Extreme Fear", "Fear", "Neutral", "Greed", "Extreme Greed")


def fng_history(days: int = HISTORY_DAYS, newest_ts: int = FNG_LATEST_TS) -> bytes:
    import json

    entries = [
        {"value": str((7 * i + 47) % 101), "value_classification": _CLASSES[i % 5],
         "timestamp": str(newest_ts - 86400 * i)}
        for i in range(days)
    ]
    entries[0]["value"] = "47"
    entries[0]["value_classification"] = "Neutral"
    return json.dumps({"name": "Fear and Greed Index", "data": entries,
                       "metadata": {"error": None}}).encode()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunked: bool = False  # stream without Content-Length
    echo_headers: bool = False  # put the request headers into the body (a hostile server)


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeApi:
    def __init__(self) -> None:
        self.script: dict[str, deque[Reply]] = {CG_PATH: deque(), FNG_PATH: deque()}
        self.seen: list[Seen] = []
        self.in_flight: dict[str, int] = {CG_PATH: 0, FNG_PATH: 0}
        self.max_in_flight: dict[str, int] = {CG_PATH: 0, FNG_PATH: 0}
        self.default_delay_s = 0.0
        self._runner: web.AppRunner | None = None
        self.base = ""

    def queue(self, path: str, *replies: Reply) -> None:
        self.script[path].extend(replies)

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def _default(self, request: web.Request) -> Reply:
        if request.path == CG_PATH:
            return Reply(body=COINGECKO_BODY)
        limit = request.query.get("limit", "1")
        return Reply(body=fng_history() if limit == "0" else FNG_LATEST)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.seen.append(Seen(path, dict(request.query), dict(request.headers)))
        self.in_flight[path] += 1
        self.max_in_flight[path] = max(self.max_in_flight[path], self.in_flight[path])
        try:
            reply = self.script[path].popleft() if self.script[path] else self._default(request)
            delay = reply.delay_s or self.default_delay_s
            if delay:
                await asyncio.sleep(delay)
            return await self._respond(request, reply)
        finally:
            self.in_flight[path] -= 1

    async def _respond(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        body = reply.body
        if reply.echo_headers:
            body += b"<pre>" + repr(dict(request.headers)).encode() + b"</pre>"
        if not reply.chunked:
            resp = web.Response(status=reply.status, body=body, headers=reply.headers)
            resp.content_type = reply.content_type
            return resp
        stream = web.StreamResponse(status=reply.status, headers=reply.headers)
        stream.content_type = reply.content_type
        stream.enable_chunked_encoding()
        await stream.prepare(request)
        for i in range(0, len(body), 65536):
            await stream.write(body[i : i + 65536])
        await stream.write_eof()
        return stream

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get(CG_PATH, self._handle)
        app.router.add_get(FNG_PATH, self._handle)
        app.router.add_get("/redirect/global", self._redirect)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path, dict(request.query), dict(request.headers)))
        raise web.HTTPFound(f"{self.base}{CG_PATH}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def settings_kwargs(self) -> dict[str, Any]:
        return {"coingecko_url": f"{self.base}/coingecko/api/v3",
                "fear_greed_url": f"{self.base}/alternative"}

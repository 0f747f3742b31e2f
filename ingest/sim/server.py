"""One aiohttp server for the whole simulator; :func:`start_simulator` is the entry point.

Layout (each service under its own prefix, so one port serves everything)::

    /binance/stream, /binance/ws[/<stream>]     websockets      /binance/api/v3/...   REST
    /gateio/ws/v4/                              websocket       /gateio/api/v4/...    REST
    /huobi/ws, /huobi/feed                      websockets      /huobi/...            REST
    /coingecko/api/v3/global                    /alternative/fng/
    /sim/stats  /sim/book?exchange=&symbol=  /sim/health
    POST /sim/drop[?exchange=]  POST /sim/binance/shutdown

A single engine task publishes every ``tick_s``: each exchange feed emits what the clock says
has happened since the previous tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from ingest.errors import ConfigError
from ingest.settings import EXCHANGES
from ingest.sim import book as books
from ingest.sim.binance import BinanceFeed
from ingest.sim.binance_rest import BinanceRest
from ingest.sim.faults import FaultSpec, compact_symbol, parse_faults
from ingest.sim.feed import Feed, FeedConfig
from ingest.sim.gateio import GateFeed
from ingest.sim.gateio_rest import GateRest
from ingest.sim.huobi import HuobiFeed
from ingest.sim.huobi_rest import HuobiRest
from ingest.sim.market import MarketModel
from ingest.sim.metrics_api import MetricsApi
from ingest.sim.rest import json_response
from ingest.sim.spec import make_spec

log = structlog.get_logger("ingest.sim")

DEFAULT_PORT = 8765

_429_BODIES: dict[str, Any] = {
    "binance": {"code": -1003, "msg": "Too many requests; current limit of IP is 6000 "
                "requests per minute. Please use WebSocket Streams for live updates."},
    "gateio": {"label": "TOO_MANY_REQUESTS", "message": "Request Rate Limit Exceeded"},
    "huobi": {"status": "error", "err-code": "too-many-requests",
              "err-msg": "429 too many request", "data": None},
    "coingecko": {"status": {"error_code": 429, "error_message": "You've exceeded the Rate "
                             "Limit. Please visit https://www.coingecko.com/en/api/pricing"}},
    "alternative": {"metadata": {"error": "Too many requests"}},
}


@dataclass
class SimOptions:
    seed: int = 1
    symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")
    rate: float = 10.0  # trade frames per second in total (all exchanges and symbols)
    trades_per_minute: int | None = None  # per market; None: from rate (history depends on it)
    duration_s: float | None = None  # stop publishing after this; endpoints stay up
    faults: FaultSpec | str = ""
    clock: Callable[[], float] = time.time  # unix seconds; exchange event times
    exchanges: tuple[str, ...] = EXCHANGES
    tick_s: float = 0.02
    kline_interval_s: float = 2.0
    book_interval_s: float = 0.1
    binance_ping_interval_s: float = 20.0
    binance_pong_timeout_s: float = 60.0
    binance_max_msgs_per_s: int = 5
    huobi_ping_interval_s: float = 5.0
    huobi_gzip_level: int = 1
    queue_max: int = 10_000
    fault_spec: FaultSpec = field(init=False, default_factory=FaultSpec)

    def __post_init__(self) -> None:
        self.fault_spec = (
            parse_faults(self.faults) if isinstance(self.faults, str) else self.faults
        )
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"--rate must be a positive number, got {self.rate}")
        if self.trades_per_minute is not None and self.trades_per_minute <= 0:
            raise ConfigError(f"--trades-per-minute must be positive, got {self.trades_per_minute}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s)
                                                and self.duration_s >= 0):
            raise ConfigError(f"--duration must be 0 or more seconds, got {self.duration_s}")
        for name, value in (("--binance-ping-interval", self.binance_ping_interval_s),
                            ("--binance-pong-timeout", self.binance_pong_timeout_s),
                            ("--huobi-ping-interval", self.huobi_ping_interval_s)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
        if not self.symbols:
            raise ConfigError("--symbols must name at least one symbol")
        if not 0 <= self.huobi_gzip_level <= 9:
            raise ConfigError(f"--huobi-gzip-level must be 0-9, got {self.huobi_gzip_level}")
        unknown = set(self.exchanges) - set(EXCHANGES)
        if unknown:
            raise ConfigError(f"unknown exchanges {sorted(unknown)} (known: {EXCHANGES})")
        simulated = {compact_symbol(s) for s in self.symbols}
        for stall in self.fault_spec.stalls:
            if stall.symbol not in simulated:
                raise ConfigError(f"--faults stall: {stall.symbol} is not one of the simulated "
                                  f"symbols ({', '.join(sorted(simulated))})")

    def per_market_trades_per_minute(self) -> int:
        if self.trades_per_minute is not None:
            return max(4, self.trades_per_minute)
        markets = len(self.exchanges) * len(self.symbols)
        return max(4, round(self.rate * 60 / markets))


_FEEDS: dict[str, type[Feed]] = {"binance": BinanceFeed, "gateio": GateFeed, "huobi": HuobiFeed}


class Simulator:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        config = FeedConfig(
            seed=options.seed, clock=options.clock, faults=options.fault_spec,
            kline_interval_ms=round(options.kline_interval_s * 1000),
            book_interval_ms=round(options.book_interval_s * 1000),
            queue_max=options.queue_max,
            binance_ping_interval_s=options.binance_ping_interval_s,
            binance_pong_timeout_s=options.binance_pong_timeout_s,
            binance_max_msgs_per_s=options.binance_max_msgs_per_s,
            huobi_ping_interval_s=options.huobi_ping_interval_s,
            huobi_gzip_level=options.huobi_gzip_level,
        )
        per_minute = options.per_market_trades_per_minute()
        self.feeds: dict[str, Feed] = {}
        for exchange in options.exchanges:
            models = {}
            for symbol in options.symbols:
                try:
                    spec = make_spec(exchange, symbol, options.seed, per_minute)
                except ValueError as exc:
                    raise ConfigError(f"--symbols: {exc}") from None
                models[spec.symbol] = MarketModel(spec, options.seed)
            self.feeds[exchange] = _FEEDS[exchange](config, models)
        self.metrics = MetricsApi(options.seed, options.clock)
        self._rng = random.Random(options.seed)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ticked = asyncio.Event()
        self.host = ""
        self.port = 0

    # -- public API ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def endpoints(self) -> dict[str, dict[str, str]]:
        """Settings values that point the daemon (or ccxt) at this simulator."""
        http, ws = self.url, self.ws_url
        return {
            "binance": {"ws_url": f"{ws}/binance", "rest_url": f"{http}/binance"},
            "gateio": {"ws_url": f"{ws}/gateio/ws/v4/", "rest_url": f"{http}/gateio/api/v4"},
            "huobi": {"ws_url": f"{ws}/huobi/ws", "ws_feed_url": f"{ws}/huobi/feed",
                      "rest_url": f"{http}/huobi"},
            "metrics": {"coingecko_url": f"{http}/coingecko/api/v3",
                        "fear_greed_url": f"{http}/alternative"},
        }

    def stats(self) -> dict[str, Any]:
        """What has been sent to clients, per exchange and compact symbol."""
        return {name: feed.stats() for name, feed in self.feeds.items()}

    def model(self, exchange: str, symbol: str) -> MarketModel:
        return self.feeds[exchange].markets[compact_symbol(symbol)].model

    def book(self, exchange: str, symbol: str, limit: int = 0) -> dict[str, Any]:
        """The live book, prices and quantities as decimal text, best first."""
        lm = self.feeds[exchange].markets[compact_symbol(symbol)]
        spec = lm.spec

        def text(levels: list[tuple[int, int]]) -> list[list[str]]:
            return [[spec.price_text(p), spec.qty_text(q)] for p, q in levels]

        return {
            "exchange": exchange, "symbol": spec.symbol,
            "update_id": str(lm.book.update_id), "timestamp": lm.last_book_ms,
            "bids": text(books.sorted_levels(lm.book.bids, True, limit)),
            "asks": text(books.sorted_levels(lm.book.asks, False, limit)),
        }

    def drop_connections(self, exchange: str | None = None) -> int:
        conns = [c for name, f in self.feeds.items() if exchange in (None, name) for c in f.conns]
        for conn in conns:
            conn.abort()
        return len(conns)

    async def wait_tick(self, ticks: int = 1) -> None:
        """Return once the engine has published ``ticks`` more times: with an injected clock
        moved by the caller, everything up to the clock's time has then been queued."""
        for _ in range(ticks):
            event = self._ticked
            await event.wait()

    async def binance_shutdown(self, grace_s: float = 1.0) -> None:
        feed = self.feeds.get("binance")
        if isinstance(feed, BinanceFeed):
            await feed.server_shutdown(grace_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- server -------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._rate_limit_middleware])
        routes: dict[str, list[web.RouteDef]] = {}
        for name, feed in self.feeds.items():
            if isinstance(feed, BinanceFeed):
                routes[name] = [web.get("/stream", feed.handle_ws), web.get("/ws", feed.handle_ws),
                                web.get("/ws/{tail:.*}", feed.handle_ws),
                                *BinanceRest(feed).routes()]
            elif isinstance(feed, GateFeed):
                routes[name] = [web.get("/ws/v4/", feed.handle_ws),
                                web.get("/ws/v4", feed.handle_ws), *GateRest(feed).routes()]
            elif isinstance(feed, HuobiFeed):
                routes[name] = [web.get("/ws", feed.handle_ws), web.get("/feed", feed.handle_ws),
                                *HuobiRest(feed).routes()]
        for name, defs in routes.items():
            sub = web.Application()
            sub.add_routes(defs)
            app.add_subapp(f"/{name}", sub)
        app.add_routes(self.metrics.routes())
        app.add_routes([
            web.get("/sim/stats", self._stats_handler),
            web.get("/sim/book", self._book_handler),
            web.get("/sim/health", self._health_handler),
            web.post("/sim/drop", self._drop_handler),
            web.post("/sim/binance/shutdown", self._shutdown_handler),
        ])
        return app

    @web.middleware
    async def _rate_limit_middleware(self, request: web.Request, handler: Any) -> Any:
        spec = self.options.fault_spec
        if (
            spec.http429
            and not request.path.startswith("/sim/")
            and request.headers.get("Upgrade", "").lower() != "websocket"
            and self._rng.random() < spec.http429
        ):
            service = request.path.split("/")[1]
            return json_response(
                _429_BODIES.get(service, {"error": "Too Many Requests"}), status=429,
                headers={"Retry-After": str(spec.retry_after_s)},
            )
        return await handler(request)

    async def _stats_handler(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.stats())

    async def _health_handler(self, request: web.Request) -> web.StreamResponse:
        return json_response({"status": "ok", "url": self.url})

    async def _book_handler(self, request: web.Request) -> web.StreamResponse:
        exchange, symbol = request.query.get("exchange", ""), request.query.get("symbol", "")
        try:
            limit = int(request.query.get("limit", "0"))
            return json_response(self.book(exchange, symbol, limit))
        except (KeyError, ValueError):
            return json_response({"error": f"unknown exchange/symbol {exchange}/{symbol}"},
                                 status=404)

    async def _drop_handler(self, request: web.Request) -> web.StreamResponse:
        return json_response({"dropped": self.drop_connections(request.query.get("exchange"))})

    async def _shutdown_handler(self, request: web.Request) -> web.StreamResponse:
        self._tasks.append(asyncio.create_task(self.binance_shutdown()))
        return json_response({"status": "ok"})

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host = host
        self.port = self._runner.addresses[0][1]
        self._tasks.append(asyncio.create_task(self._engine()))
        spec = self.options.fault_spec
        if spec.drop_every_s:
            self._tasks.append(asyncio.create_task(self._dropper(spec.drop_every_s)))
        if spec.shutdown_every_s:
            self._tasks.append(asyncio.create_task(self._shutdowns(spec.shutdown_every_s)))
        log.info("sim.started", url=self.url, seed=self.options.seed,
                 symbols=list(self.options.symbols), rate=self.options.rate,
                 trades_per_minute=self.options.per_market_trades_per_minute(),
                 faults=spec.text or None)

    async def _engine(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        duration = self.options.duration_s
        while True:
            elapsed = loop.time() - started
            if duration is None or elapsed < duration:
                now_ms = int(self.options.clock() * 1000)
                for feed in self.feeds.values():
                    try:
                        feed.publish(now_ms, elapsed)
                    except Exception:  # one bad tick must not stop the simulator
                        log.exception("sim.publish_failed", exchange=feed.exchange)
            ticked, self._ticked = self._ticked, asyncio.Event()
            ticked.set()
            await asyncio.sleep(self.options.tick_s)

    async def _dropper(self, every_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(every_s / 4, 0.5))
            now = loop.time()
            for feed in self.feeds.values():
                for conn in list(feed.conns):
                    if now - conn.opened_at >= every_s:
                        log.info("sim.fault_drop", exchange=feed.exchange, conn=conn.id)
                        conn.abort()

    async def _shutdowns(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.binance_shutdown()


async def start_simulator(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, **opts: Any
) -> Simulator:
    """Start the simulator on ``host:port`` (port 0: any free port) and return it running.

    ``opts`` are :class:`SimOptions` fields: seed, symbols, rate, trades_per_minute,
    duration_s, faults (spec text or FaultSpec), clock, exchanges, tick_s, kline_interval_s,
    book_interval_s, binance_ping_interval_s, binance_pong_timeout_s, binance_max_msgs_per_s,
    huobi_ping_interval_s, huobi_gzip_level, queue_max.
    """
    try:
        options = SimOptions(**opts)
    except TypeError as exc:
        raise ConfigError(f"simulator option: {exc}") from None
    sim = Simulator(options)
    await sim.start(host, port)
    return sim


async def run_simulator(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    ready: Callable[[Simulator], None] | None = None,
    **opts: Any,
) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation), then stop cleanly. ``ready`` is called
    with the running simulator once it listens."""
    sim = await start_simulator(host, port, **opts)
    if ready is not None:
        ready(sim)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        for name, urls in sim.endpoints().items():
            log.info("sim.endpoints", service=name, **urls)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await sim.stop()
        log.info("sim.stopped")


__all__ = ["DEFAULT_PORT", "SimOptions", "Simulator", "run_simulator", "start_simulator"]

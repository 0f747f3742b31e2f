"""WsClient against a real local websockets server."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from ingest.transport.backoff import Backoff, BackoffPolicy, backoff_delay
from ingest.transport.framing import gunzip_bounded
from ingest.transport.ratelimit import RateLimiter
from ingest.transport.ws import (
    BaseWsHandler,
    Frame,
    Replies,
    WsClient,
    WsConfig,
    WsConnection,
    WsState,
)
from tests.transport.conftest import FakeClock, ServerConn, WsServer, until

TINY_BACKOFF = BackoffPolicy(base_s=0.01, cap_s=0.04, min_s=0.0, stable_after_s=3600)


class Handler(BaseWsHandler):
    """Records frames; subscribes with ``subs``; answers ``{"ping": n}`` like HTX."""

    def __init__(self, url: str, subs: tuple[str, ...] = (), *, gzip_max: int | None = None):
        self._url = url
        self.subs = subs
        self.gzip_max = gzip_max
        self.frames: list[tuple[Any, Any]] = []  # (server conn index, decoded frame)
        self.stale: list[tuple[str, float]] = []
        self.client: WsClient | None = None
        self.opened: list[str] = []
        self.sources: set[str] = set()  # connection ids that fed handle_frame

    def url(self) -> str:
        return self._url

    async def on_open(self, conn: WsConnection) -> None:
        self.opened.append(conn.id)
        for sub in self.subs:
            await conn.send(sub)

    def preprocess(self, frame: Frame) -> Frame:
        return gunzip_bounded(frame, self.gzip_max) if self.gzip_max else frame

    def handle_frame(self, frame: Frame, recv_ts: float) -> Replies:
        assert self.client is not None and self.client.frame_source is not None
        self.sources.add(self.client.frame_source.id)
        msg = json.loads(frame)
        self.frames.append((msg.get("conn", "?"), msg))
        if "ping" in msg:
            return [json.dumps({"pong": msg["ping"]})]
        if "s" in msg and self.client is not None:
            self.client.mark(msg["s"])
        return None

    def on_stale(self, client: WsClient, stream_key: str, quiet_s: float) -> None:
        self.stale.append((stream_key, quiet_s))


def make_client(handler: Handler, **kwargs: Any) -> WsClient:
    cfg = kwargs.pop("config", None) or WsConfig(
        backoff=TINY_BACKOFF, proxy=None, ping_interval_s=None, send_rate_per_s=1000,
        send_burst=1000, close_timeout_s=1.0,
    )
    client = WsClient("test", handler, cfg, **kwargs)
    handler.client = client
    return client


@asynccontextmanager
async def running(client: WsClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        await client.close()
        await asyncio.wait({task}, timeout=5)
        assert task.done()
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def asked(conn: ServerConn, go: asyncio.Event) -> bool:
    """A scripted server waits for the test's go-ahead: True when given (and cleared), False
    once the client has gone (the server's loop must end then, or the fixture's teardown
    waits for it forever)."""
    waiting = asyncio.ensure_future(go.wait())
    closed = asyncio.ensure_future(conn.ws.wait_closed())
    await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
    for task in (waiting, closed):
        task.cancel()
    if not waiting.done() or waiting.cancelled():
        return False
    go.clear()
    return True


def pinging_server(go: asyncio.Event, pinged: asyncio.Event) -> Any:
    """A server that sends no data, only a ping (and waits for the pong) per go-ahead."""

    async def behaviour(server: WsServer, conn: ServerConn) -> None:
        while await asked(conn, go):
            await asyncio.wait_for(await conn.ws.ping(b"binance"), 5)  # the client's pong
            pinged.set()

    return behaviour


def checked_by_hand(handler: Handler, clock: FakeClock) -> WsClient:
    """A client on a fake clock whose watchdog runs only when the test calls check()."""
    return make_client(handler, clock=clock, config=WsConfig(
        backoff=TINY_BACKOFF, proxy=None, ping_interval_s=None, stale_after_s=30,
        watchdog_interval_s=3600))


async def ping_after(seconds: float, clock: FakeClock, go: asyncio.Event,
                     pinged: asyncio.Event) -> None:
    """Move the clock, then have ``pinging_server`` ping once and get its pong."""
    clock.advance(seconds)
    go.set()
    await pinged.wait()
    pinged.clear()


class WaitsAt5(Handler):
    """Its handling of frame ``n == 5`` must wait for ``release``: the sink has no room."""

    def __init__(self, url: str, release: asyncio.Event) -> None:
        super().__init__(url)
        self.release = release

    def handle_frame(self, frame: Frame, recv_ts: float) -> Any:
        super().handle_frame(frame, recv_ts)
        return self.wait_for_room() if json.loads(frame)["n"] == 5 else None

    async def wait_for_room(self) -> None:
        await self.release.wait()


async def waiting_at_5(client: WsClient, handler: WaitsAt5) -> WsConnection:
    """Frames 0-5 handled, the last one waiting; the connection they came on."""
    await until(lambda: len(handler.frames) == 6, what="frames 0-5, the last one waiting")
    await until(lambda: client.current is not None, what="connected")  # set after subscribing
    conn = client.current
    assert conn is not None
    return conn


def leftover_tasks(prefix: str) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]


async def test_subscribes_are_sent_in_order_and_spaced_by_the_limiter(ws_server: Any) -> None:
    server: WsServer = await ws_server(None)
    clock = FakeClock()
    grants: list[float] = []

    class Recording(RateLimiter):
        async def acquire(self, cost: float = 1.0, *, priority: int = 0) -> None:
            await super().acquire(cost, priority=priority)
            grants.append(clock())

    subs = tuple(json.dumps({"method": "SUBSCRIBE", "params": [f"s{i}@trade"], "id": i})
                 for i in range(5))
    handler = Handler(server.url, subs)
    client = make_client(handler, send_limiter_factory=lambda: Recording(
        2.0, 1.0, clock=clock, sleep=clock.sleep))
    async with running(client):
        await until(lambda: client.state is WsState.CONNECTED, what="connected")
        await until(lambda: server.conns and len(server.conns[0].received) == 5)
    assert server.conns[0].received == list(subs)
    # One at once, then one every 1/rate seconds of the (fake) clock.
    assert [round(t - grants[0], 6) for t in grants] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert client.stats.messages_sent == 5
    assert handler.opened == ["test.1"]


async def test_reconnects_after_server_close_with_backoff_delays_from_the_rule(
    ws_server: Any,
) -> None:
    async def close_first_three(server: WsServer, conn: ServerConn) -> None:
        if conn.index < 3:
            await conn.ws.close(1001, "going away")
        else:
            await conn.collect()

    server = await ws_server(close_first_three)
    handler = Handler(server.url)
    client = make_client(handler, backoff=Backoff(TINY_BACKOFF, rand=lambda: 0.5))
    with capture_logs() as logs:
        async with running(client):
            await until(lambda: len(server.conns) == 4 and client.state is WsState.CONNECTED)
    delays = [e["delay_s"] for e in logs if e["event"] == "ws.reconnecting"]
    expected = [round(backoff_delay(a, 0.5, base_s=0.01, cap_s=0.04, min_s=0.0), 3)
                for a in range(3)]
    assert delays == expected == [0.005, 0.01, 0.02]
    assert client.stats.reconnects == 3
    assert client.stats.connects == 4
    closes = [e for e in logs if e["event"] == "ws.disconnected" and e["by"] == "peer"]
    assert [e["code"] for e in closes] == [1001, 1001, 1001]


async def test_connect_failures_back_off_and_are_counted() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = Handler(f"ws://127.0.0.1:{port}/")
    client = make_client(handler)
    async with running(client):
        await until(lambda: client.stats.connect_failures >= 3)
    assert client.stats.connects == 0
    assert client.state is WsState.CLOSED


async def test_watchdog_fires_for_the_quiet_stream_only(ws_server: Any) -> None:
    async def stream_a(server: WsServer, conn: ServerConn) -> None:
        n = 0
        while True:
            await conn.ws.send(json.dumps({"s": "A", "n": n}))
            n += 1
            await asyncio.sleep(0.01)

    server = await ws_server(stream_a)
    clock = FakeClock()
    handler = Handler(server.url)
    cfg = WsConfig(backoff=TINY_BACKOFF, proxy=None, ping_interval_s=None, stale_after_s=30,
                   watchdog_interval_s=3600)  # only the test's own check() runs
    client = make_client(handler, config=cfg, clock=clock)
    client.watch("A")
    client.watch("B")
    async with running(client):
        await until(lambda: len(handler.frames) >= 2)
        clock.advance(31)
        seen = len(handler.frames)
        await until(lambda: len(handler.frames) > seen)  # A speaks after the jump
        due = client.check()
        assert [key for key, _ in due] == ["B"]
        assert handler.stale == [("B", 31.0)]
        assert client.stats.stale_streams == 1
        assert client.stats.stale_connections == 0
        assert client.check() == []  # reported once per period, not on every check
    assert client.stats.connects == 1  # a quiet stream is not a dead connection


async def test_connection_with_no_frames_is_reconnected(ws_server: Any) -> None:
    server = await ws_server(None)  # accepts, never speaks
    clock = FakeClock()
    handler = Handler(server.url)
    client = checked_by_hand(handler, clock)
    async with running(client):
        await until(lambda: client.state is WsState.CONNECTED)
        clock.advance(30)
        client.check()
        await until(lambda: len(server.conns) == 2 and client.state is WsState.CONNECTED)
    assert client.stats.stale_connections == 1
    assert client.stats.reconnects == 1
    assert handler.stale == []  # the socket was dead: no per-stream resubscribes


async def test_a_socket_that_only_pings_is_alive(ws_server: Any) -> None:
    """Binance pings every 20 s; a socket whose streams are all quiet (illiquid pairs)
    sends nothing else and must not be taken for a dead one."""
    pinged, go = asyncio.Event(), asyncio.Event()
    server = await ws_server(pinging_server(go, pinged))
    clock = FakeClock()
    handler = Handler(server.url)
    client = checked_by_hand(handler, clock)
    async with running(client):
        await until(lambda: client.state is WsState.CONNECTED)
        for _ in range(3):  # 3 x 20 s without a data frame
            await ping_after(20, clock, go, pinged)
            client.check()
        assert client.stats.stale_connections == 0
        clock.advance(30)  # and then not even a ping: dead
        client.check()
        await until(lambda: client.stats.reconnects == 1)
    assert handler.frames == []
    assert client.stats.stale_connections == 1


async def test_rotation_opens_and_subscribes_the_new_connection_before_closing_the_old(
    ws_server: Any,
) -> None:
    async def behaviour(server: WsServer, conn: ServerConn) -> None:
        reader = asyncio.create_task(conn.collect())
        try:
            if conn.index == 1:
                await until(lambda: conn.received)  # subscribed
                await asyncio.sleep(0.1)  # meanwhile conn 0 keeps streaming
            n = 0
            while True:
                await conn.ws.send(json.dumps(
                    {"conn": conn.index, "n": n, "new_open": len(server.conns) > 1}))
                n += 1
                await asyncio.sleep(0.01)
        finally:
            reader.cancel()

    server = await ws_server(behaviour)
    handler = Handler(server.url, subs=('{"sub":"x"}',))
    client = make_client(handler)
    async with running(client):
        await until(lambda: len(handler.frames) >= 3)
        client.rotate("serverShutdown")
        await until(lambda: client.stats.rotations == 1 and server.conns[0].closed_at is not None)
        await until(lambda: any(c == 1 for c, _ in handler.frames))
        assert client.current is not None and client.current.id == "test.2"
    old, new = server.conns[0], server.conns[1]
    assert old.closed_at is not None
    assert new.opened_at < old.closed_at
    assert new.received_at[0] < old.closed_at  # subscribed before the old one closed
    # The old socket kept feeding handle_frame while the new one was open.
    assert any(c == 0 and m["new_open"] for c, m in handler.frames)
    assert handler.sources == {"test.1", "test.2"}
    assert client.stats.reconnects == 0
    assert client.stats.connects == 2


async def test_rotation_is_scheduled_before_max_lifetime(ws_server: Any) -> None:
    async def chatty(server: WsServer, conn: ServerConn) -> None:
        while True:
            await conn.ws.send(json.dumps({"conn": conn.index}))
            await asyncio.sleep(0.01)

    server = await ws_server(chatty)
    clock = FakeClock()
    cfg = WsConfig(backoff=TINY_BACKOFF, proxy=None, ping_interval_s=None,
                   max_lifetime_s=23.5 * 3600, watchdog_interval_s=3600, stale_after_s=10**6)
    client = make_client(Handler(server.url), config=cfg, clock=clock)
    async with running(client):
        await until(lambda: client.state is WsState.CONNECTED)
        clock.advance(23.5 * 3600 - 1)
        client.check()
        assert client.stats.rotations == 0
        clock.advance(1)
        client.check()
        await until(lambda: client.stats.rotations == 1)
    assert len(server.conns) == 2


async def test_oversized_frame_closes_and_reconnects(ws_server: Any) -> None:
    async def big_then_quiet(server: WsServer, conn: ServerConn) -> None:
        if conn.index == 0:
            await conn.ws.send("x" * 2000)
        await conn.collect()

    server = await ws_server(big_then_quiet)
    cfg = WsConfig(backoff=TINY_BACKOFF, proxy=None, ping_interval_s=None, max_frame_bytes=1000)
    client = make_client(Handler(server.url), config=cfg)
    async with running(client):
        await until(lambda: len(server.conns) == 2 and client.state is WsState.CONNECTED)
        assert client.stats.last_close_code == 1009
    assert client.stats.oversize_frames == 1
    assert client.stats.reconnects == 1


async def test_gzip_bomb_is_rejected_and_the_stream_continues(ws_server: Any) -> None:
    bomb = gzip.compress(b"0" * (20 * 1024 * 1024))
    ok = gzip.compress(json.dumps({"ok": 1}).encode())

    async def behaviour(server: WsServer, conn: ServerConn) -> None:
        await conn.ws.send(bomb)
        await conn.ws.send(b"not gzip at all")
        await conn.ws.send(ok)
        await conn.collect()

    server = await ws_server(behaviour)
    handler = Handler(server.url, gzip_max=64 * 1024)
    client = make_client(handler)
    async with running(client):
        await until(lambda: len(handler.frames) == 1)
    assert len(bomb) < 64 * 1024  # small on the wire, huge once inflated
    assert handler.frames[0][1] == {"ok": 1}
    assert client.stats.frames_rejected == 2
    assert client.stats.connects == 1


async def test_server_ping_frames_are_answered(ws_server: Any) -> None:
    async def pinger(server: WsServer, conn: ServerConn) -> None:
        waiter = await conn.ws.ping(b"binance")
        conn.notes["latency"] = await asyncio.wait_for(waiter, 5)
        await conn.collect()

    server = await ws_server(pinger)
    client = make_client(Handler(server.url))
    async with running(client):
        await until(lambda: server.conns and "latency" in server.conns[0].notes)
    assert server.conns[0].notes["latency"] >= 0


async def test_app_level_ping_is_answered_urgently_on_the_same_connection(
    ws_server: Any,
) -> None:
    async def htx(server: WsServer, conn: ServerConn) -> None:
        reader = asyncio.create_task(conn.collect())
        await until(lambda: conn.received)  # first subscribe arrived; more are queued
        await conn.ws.send(gzip.compress(b'{"ping": 1492420473027}'))
        await reader

    server = await ws_server(htx)
    subs = tuple(json.dumps({"sub": f"market.s{i}.trade.detail", "id": i}) for i in range(10))
    handler = Handler(server.url, subs, gzip_max=1 << 20)
    cfg = WsConfig(backoff=TINY_BACKOFF, proxy=None, ping_interval_s=None,
                   send_rate_per_s=20, send_burst=1)
    client = make_client(handler, config=cfg)
    async with running(client):
        await until(lambda: server.conns and len(server.conns[0].received) == 11, timeout_s=10)
    received = server.conns[0].received
    pong = received.index('{"pong": 1492420473027}')
    assert pong < 9  # ahead of the subscribes still queued behind the limiter


async def test_app_ping_is_sent_every_interval(ws_server: Any) -> None:
    class Gate(Handler):
        app_ping_interval_s = 0.02

        def app_ping(self) -> str:
            return '{"channel":"spot.ping"}'

    server = await ws_server(None)
    client = make_client(Gate(server.url))
    async with running(client):
        await until(lambda: server.conns and len(server.conns[0].received) >= 3)
    assert set(server.conns[0].received) == {'{"channel":"spot.ping"}'}


async def test_bad_frame_is_counted_not_fatal(ws_server: Any) -> None:
    async def behaviour(server: WsServer, conn: ServerConn) -> None:
        await conn.ws.send("{not json")
        await conn.ws.send('{"good": true}')
        await conn.collect()

    server = await ws_server(behaviour)
    handler = Handler(server.url)
    client = make_client(handler)
    async with running(client):
        await until(lambda: len(handler.frames) == 1)
    assert client.stats.handler_errors == 1
    assert client.stats.connects == 1


async def test_connect_limiter_is_shared_between_clients(ws_server: Any) -> None:
    server = await ws_server(None)
    clock = FakeClock()
    limiter = RateLimiter(1.0, 1.0, clock=clock, sleep=clock.sleep)
    a = make_client(Handler(server.url), connect_limiter=limiter)
    b = make_client(Handler(server.url), connect_limiter=limiter)
    async with running(a), running(b):
        await until(lambda: len(server.conns) == 2)
    assert limiter.granted == 2
    assert clock.sleeps == [pytest.approx(1.0)]  # the second connection waited its second


@pytest.mark.parametrize("stop", ["close", "cancel"])
async def test_close_and_cancel_leave_no_tasks(ws_server: Any, stop: str) -> None:
    server = await ws_server(None)
    client = make_client(Handler(server.url, subs=('{"sub":1}',)))
    task = asyncio.create_task(client.run())
    await until(lambda: client.state is WsState.CONNECTED)
    assert leftover_tasks("test.")  # reader and sender are running
    if stop == "close":
        await client.close()
    else:
        task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done()
    assert client.state is WsState.CLOSED
    assert client.connections == ()
    assert leftover_tasks("test.") == []
    await until(lambda: server.conns[0].closed_at is not None)


def test_stats_are_plain_data() -> None:
    client = make_client(Handler("ws://127.0.0.1:1/"))
    snapshot = client.stats.as_dict()
    assert snapshot["state"] == "idle"
    assert snapshot["connects"] == 0
    json.dumps(snapshot)



async def test_frames_keep_their_order_while_the_handler_waits_and_reading_pauses(
    ws_server: Any,
) -> None:
    """Frames are handed over straight from the protocol; one whose handling must wait
    (downstream full) pauses reading, and every later frame, fragmented ones (the
    library's own path) included, is handled after it, in order."""
    release = asyncio.Event()

    async def burst(server: WsServer, conn: ServerConn) -> None:
        for n in range(300):
            if n % 100 == 50:  # a fragmented message: not handed over directly
                await conn.ws.send(['{"n": ', f"{n}", "}"])
            else:
                await conn.ws.send(json.dumps({"n": n, "pad": "x" * 500}))
        await conn.collect()

    server = await ws_server(burst)
    handler = WaitsAt5(server.url, release)
    client = make_client(handler)
    async with running(client):
        conn = await waiting_at_5(client, handler)
        transport = conn._ws.transport
        assert not transport.is_reading()  # the exchange's TCP window holds the rest
        assert [m["n"] for _, m in handler.frames] == list(range(6))
        release.set()
        await until(lambda: len(handler.frames) == 300, what="all frames")
        assert transport.is_reading()
    assert [m["n"] for _, m in handler.frames] == list(range(300))
    assert client.stats.handler_errors == 0



async def test_send_all_nowait_queues_all_or_none(ws_server: Any) -> None:
    server = await ws_server(None)
    cfg = WsConfig(backoff=TINY_BACKOFF, proxy=None, ping_interval_s=None, send_queue_size=3)
    client = make_client(Handler(server.url), config=cfg)
    async with running(client):
        await until(lambda: client.state is WsState.CONNECTED)
        conn = client.current
        assert conn is not None
        # No await in between: the sender task cannot take anything off the queue.
        assert client.send_all_nowait(["a", "b"])
        assert not client.send_all_nowait(["unsub c", "sub c"])  # one slot left: neither
        assert conn.queued == 2
        assert client.send_all_nowait(["d"])
        assert conn.queued == 3
        await until(lambda: len(server.conns[0].received) == 3)
    assert server.conns[0].received == ["a", "b", "d"]


async def test_a_queued_message_taken_while_the_handler_waits_keeps_its_place(
    ws_server: Any,
) -> None:
    """A fragmented message (the library's queue) taken off that queue while the handler
    waits for room goes before the frames that arrive once reading resumes."""
    release, go, sent = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def behaviour(server: WsServer, conn: ServerConn) -> None:
        for n in range(6):
            await conn.ws.send(json.dumps({"n": n}))
        await conn.ws.send(['{"n": ', "6", "}"])  # fragmented: the library's queue
        if not await asked(conn, go):
            return
        for n in range(7, 20):  # held in the socket while the client does not read
            await conn.ws.send(json.dumps({"n": n}))
        sent.set()
        await conn.collect()

    server = await ws_server(behaviour)
    handler = WaitsAt5(server.url, release)
    client = make_client(handler)
    async with running(client):
        conn = await waiting_at_5(client, handler)
        ws = conn._ws
        await until(lambda: not ws.recv_messages.frames.queue, what="message 6 taken")
        assert not ws.transport.is_reading()
        go.set()
        await sent.wait()
        release.set()
        await until(lambda: len(handler.frames) == 20, what="all frames")
    assert [m["n"] for _, m in handler.frames] == list(range(20))


async def test_a_text_frame_that_is_not_utf8_is_counted_not_fatal(ws_server: Any) -> None:
    from websockets.frames import Frame as WsFrame
    from websockets.frames import Opcode

    async def behaviour(server: WsServer, conn: ServerConn) -> None:
        await conn.ws.recv()  # the client's subscribe: it is streaming now
        conn.ws.protocol.send_frame(WsFrame(Opcode.TEXT, b'{"n": "\xff"}'))
        conn.ws.send_data()
        await conn.ws.send('{"good": true}')
        await conn.collect()

    server = await ws_server(behaviour)
    handler = Handler(server.url, subs=('{"sub": 1}',))
    client = make_client(handler)
    async with running(client):
        await until(lambda: len(handler.frames) == 1)
    assert handler.frames[0][1] == {"good": True}
    assert client.stats.frames_rejected == 1
    assert client.stats.connects == 1


async def test_a_socket_that_only_pings_for_ten_periods_is_replaced(ws_server: Any) -> None:
    """Every subscription may have died on a socket the exchange keeps open (and pings)."""
    pinged, go = asyncio.Event(), asyncio.Event()
    server = await ws_server(pinging_server(go, pinged))
    clock = FakeClock()
    client = checked_by_hand(Handler(server.url), clock)
    async with running(client):
        await until(lambda: client.state is WsState.CONNECTED)
        for _ in range(14):  # 280 s of pings and no data: alive
            await ping_after(20, clock, go, pinged)
            client.check()
            assert client.stats.stale_connections == 0
        clock.advance(20)  # 300 s = 10 periods
        client.check()
        await until(lambda: client.stats.reconnects == 1)
    assert client.stats.stale_connections == 1

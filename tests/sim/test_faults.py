"""Fault injection: the spec syntax, and each fault's effect on the wire."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import time
from typing import Any

import aiohttp
import pytest
import websockets

from ingest.errors import ConfigError
from ingest.sim.conn import ClientConn
from ingest.sim.faults import FaultSpec, FrameFaults, Stall, parse_faults

from .conftest import SimFactory
from .helpers import ManualClock, collect, decode_gzip, recv_until, ws_connect


def test_spec_syntax() -> None:
    spec = parse_faults("drop=30,skip_seq=0.01,dup=0.01,reorder=0.01,malformed=0.001,"
                        "stall=BTCUSDT:20,stall=gate/ETH_USDT:5:10,http429=0.1,retry_after=2,"
                        "shutdown=600")
    assert spec.drop_every_s == 30 and spec.skip_seq == 0.01 and spec.malformed == 0.001
    assert spec.stalls == (Stall("BTCUSDT", 20.0), Stall("ETHUSDT", 5.0, 10.0, "gateio"))
    assert spec.http429 == 0.1 and spec.retry_after_s == 2 and spec.shutdown_every_s == 600
    assert spec.stalled("binance", "BTCUSDT", 21) and not spec.stalled("binance", "BTCUSDT", 19)
    assert spec.stalled("gateio", "ETHUSDT", 14) and not spec.stalled("gateio", "ETHUSDT", 15)
    assert not spec.stalled("huobi", "ETHUSDT", 14)
    assert parse_faults("") == FaultSpec()


def test_stall_takes_the_symbol_in_any_spelling_with_or_without_an_exchange() -> None:
    spec = parse_faults("stall=BTC/USDT:20,stall=binance/BTC/USDT:5,stall=htx/eth_usdt:1:2")
    assert spec.stalls == (Stall("BTCUSDT", 20.0), Stall("BTCUSDT", 5.0, None, "binance"),
                           Stall("ETHUSDT", 1.0, 2.0, "huobi"))


@pytest.mark.parametrize("bad", ["dup=2", "drop=x", "flood=1", "stall=BTCUSDT", "dup",
                                 "stall=kraken/BTC/USDT:1", "dup=nan", "drop=inf",
                                 "retry_after=inf", "stall=BTCUSDT:nan"])
def test_bad_specs_name_the_item(bad: str) -> None:
    with pytest.raises(ConfigError, match="--faults"):
        parse_faults(bad)


def test_frame_faults_dup_reorder_malform() -> None:
    dup = FrameFaults(parse_faults("dup=1"), seed=1)
    assert dup.apply("a") == ["a", "a"]
    reorder = FrameFaults(parse_faults("reorder=1"), seed=1)
    assert [reorder.apply(f) for f in "abcd"] == [[], ["b", "a"], [], ["d", "c"]]
    broken = FrameFaults(parse_faults("malformed=1"), seed=1)
    out = broken.apply('{"e":"trade","p":"1.0"}')[0]
    with pytest.raises(ValueError):
        json.loads(out)
    binary = broken.apply(gzip.compress(b'{"ch":"x"}'))[0]
    assert isinstance(binary, bytes)
    with pytest.raises((OSError, ValueError, EOFError)):
        json.loads(gzip.decompress(binary))


class _Ws:
    closed = False


class _StuckStream:
    """The response's writer when the peer never reads: the transport stays paused."""

    async def drain(self) -> None:
        await asyncio.Event().wait()


class _Transport:
    aborted = False

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class _Request:
    path = "/binance/ws"

    def __init__(self) -> None:
        self.transport = _Transport()


async def test_slow_client_is_dropped_not_buffered() -> None:
    request = _Request()
    conn = ClientConn(_Ws(), request, "binance", queue_max=10,  # type: ignore[arg-type]
                      faults=FaultSpec(), seed=1, stream=_StuckStream())
    writer = asyncio.create_task(conn.run_writer())
    assert conn.send("first") and conn.send_many(["second", "third"]) == 2
    await asyncio.sleep(0)  # the writer writes them and blocks until the peer reads
    assert request.transport.written == b"\x81\x05first\x81\x06second\x81\x05third"
    results = [conn.send(f"frame {i}") for i in range(8)]
    assert results == [True] * 8 and conn.send_many(["a", "b", "c"]) == 2
    assert conn.closed and request.transport.aborted and conn.queued == 10
    assert conn.send("more") is False and conn.send_many(["more"]) == 0
    writer.cancel()


async def test_http429_with_retry_after(make_sim: SimFactory) -> None:
    sim = await make_sim(faults="http429=1,retry_after=3")
    async with aiohttp.ClientSession() as http:
        for path, key in (("/binance/api/v3/time", "code"), ("/gateio/api/v4/spot/time", "label"),
                          ("/huobi/v1/common/symbols", "err-code"),
                          ("/coingecko/api/v3/global", "status"),
                          ("/alternative/fng/", "metadata")):
            async with http.get(sim.url + path) as resp:
                assert resp.status == 429 and resp.headers["Retry-After"] == "3"
                assert key in await resp.json()
        async with http.get(sim.url + "/sim/stats") as resp:
            assert resp.status == 200  # the simulator's own endpoints are never limited
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade") as ws:
        await ws.recv()  # websockets are not limited either


async def test_skip_seq_makes_a_real_gap(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, symbols=("BTC/USDT",), faults="skip_seq=0.5")
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@depth@100ms") as ws:
        for _ in range(20):
            clock.advance(0.1)
            await sim.wait_tick()
        last_u = sim.feeds["binance"].topics["btcusdt@depth@100ms"].last_id
        events: list[dict[str, Any]] = []
        await recv_until(ws, lambda m: m["u"] == last_u or m["u"] > last_u, on_each=events.append)
    gaps = [b["U"] - a["u"] - 1 for a, b in itertools.pairwise(events) if b["U"] != a["u"] + 1]
    withheld = sim.stats()["binance"]["BTCUSDT"]["book_gaps"]
    assert withheld > 0 and gaps and all(g > 0 for g in gaps)
    # Every withheld message changed the book: its ids are missing from the stream.
    assert len(events) + withheld >= 20 - 1


async def test_dup_and_reorder_on_the_wire(make_sim: SimFactory) -> None:
    sim = await make_sim(faults="dup=1", trades_per_minute=3000)
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade") as ws:
        trades = await collect(ws, 6, lambda m: m.get("e") == "trade")
    ids = [t["t"] for t in trades]
    assert ids[0::2] == ids[1::2]
    sim = await make_sim(faults="reorder=1", trades_per_minute=3000)
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade") as ws:
        trades = await collect(ws, 6, lambda m: m.get("e") == "trade")
    ids = [t["t"] for t in trades]
    assert ids[0] > ids[1] and ids[2] > ids[3]  # pairs swapped


async def test_malformed_frames_on_the_wire(make_sim: SimFactory) -> None:
    sim = await make_sim(faults="malformed=1", trades_per_minute=3000)
    async with ws_connect(f"{sim.ws_url}/huobi/ws") as ws:
        await ws.send(json.dumps({"sub": "market.btcusdt.trade.detail", "id": 1}))
        ack = decode_gzip(await ws.recv())  # replies are never broken
        assert ack["status"] == "ok"
        with pytest.raises((OSError, ValueError, EOFError)):
            decode_gzip(await ws.recv())


async def test_stall_silences_one_symbol_but_not_its_history(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, faults="stall=binance/BTCUSDT:0", trades_per_minute=600)
    async with ws_connect(f"{sim.ws_url}/binance/stream?streams=btcusdt@trade/ethusdt@trade") as ws, \
            ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as gws:
        await gws.send(json.dumps({"time": int(time.time()), "channel": "spot.trades",
                                   "event": "subscribe", "payload": ["BTC_USDT"]}))
        await recv_until(gws, lambda m: m.get("event") == "subscribe")
        start_ms = int(clock() * 1000)
        clock.advance(5)
        await sim.wait_tick()
        eth = await collect(ws, 20, lambda m: True)
        assert {m["stream"] for m in eth} == {"ethusdt@trade"}
        await recv_until(gws, lambda m: m.get("channel") == "spot.trades"
                         and m.get("event") == "update")  # other exchanges unaffected
    stats = sim.stats()
    assert stats["binance"]["BTCUSDT"]["trades"] == 0 and stats["binance"]["ETHUSDT"]["trades"]
    model = sim.model("binance", "BTCUSDT")
    assert model.trades_between(start_ms + 1, start_ms + 5000)  # REST can still repair it


async def test_drop_aborts_connections(make_sim: SimFactory) -> None:
    sim = await make_sim(faults="drop=0.2")
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade") as ws:
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is None  # no close frame: a dropped connection


async def test_periodic_server_shutdown(make_sim: SimFactory) -> None:
    sim = await make_sim(faults="shutdown=0.1")
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade") as ws:
        await recv_until(ws, lambda m: m.get("e") == "serverShutdown")


async def test_unexpected_client_messages_do_not_kill_the_connection(
    make_sim: SimFactory,
) -> None:
    sim = await make_sim()
    async with ws_connect(f"{sim.ws_url}/binance/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": 5, "id": 1}))
        assert (await recv_until(ws, lambda m: m.get("id") == 1))["error"]["code"] == 2
        await ws.send("[1, 2")
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert (await recv_until(ws, lambda m: m.get("id") == 2))["result"] == []
    async with ws_connect(f"{sim.ws_url}/huobi/ws") as ws:
        await ws.send(json.dumps({"req": "market.btcusdt.kline.1min", "from": "x", "id": "a"}))
        await ws.send(json.dumps({"ping": 5}))
        assert await recv_until(ws, lambda m: "pong" in m, decode=decode_gzip) == {"pong": 5}
    async with ws_connect(f"{sim.ws_url}/gateio/ws/v4/") as ws:
        await ws.send(json.dumps({"channel": "spot.trades", "event": "subscribe",
                                  "payload": {"a": 1}}))
        await ws.send(json.dumps({"channel": "spot.ping"}))
        await recv_until(ws, lambda m: m.get("channel") == "spot.pong")

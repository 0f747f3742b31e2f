"""``ingest simulate`` arguments and entry point; ``--duration`` stops publishing only."""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import pytest

from ingest.sim import Simulator, cli, run_simulator

from .conftest import SimFactory
from .helpers import ManualClock, ws_connect


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_and_defaults() -> None:
    args = parse()
    assert (args.host, args.port, args.seed, args.rate) == ("127.0.0.1", 8765, 1, 10.0)
    assert args.symbols == ("BTC/USDT", "ETH/USDT") and args.faults == ""
    args = parse("--symbols", "BTC/USDT,SOL/USDT", "--rate", "500", "--duration", "30",
                 "--faults", "drop=30,http429=0.1", "--seed", "42", "--port", "0")
    assert args.symbols == ("BTC/USDT", "SOL/USDT") and args.duration == 30.0


async def test_bad_faults_exit_with_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli.main(parse("--port", "0", "--faults", "explode=1")) == 2
    assert "unknown fault 'explode'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expected"), [
    (("--rate", "nan"), "--rate must be a positive number, got nan"),
    (("--rate", "inf"), "--rate must be a positive number, got inf"),
    (("--rate", "0"), "--rate must be a positive number"),
    (("--duration", "-5"), "--duration must be 0 or more seconds"),
    (("--duration", "nan"), "--duration must be 0 or more seconds"),
    (("--binance-ping-interval", "0"), "--binance-ping-interval must be a positive number"),
    (("--huobi-ping-interval", "-1"), "--huobi-ping-interval must be a positive number"),
    (("--trades-per-minute", "0"), "--trades-per-minute must be positive"),
    (("--faults", "retry_after=inf"), "retry_after=inf is out of range"),
    (("--faults", "stall=XRP/USDT:20"), "XRPUSDT is not one of the simulated symbols"),
])
async def test_bad_options_are_one_line_and_exit_2(
    argv: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli.main(parse("--port", "0", *argv)) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize("port", ["-1", "70000", "x"])
def test_bad_port_is_an_argument_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("--port", port)
    assert exited.value.code == 2
    assert "must be a port number 0-65535" in capsys.readouterr().err


async def test_run_simulator_serves_until_cancelled() -> None:
    started: asyncio.Future[Simulator] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_simulator("127.0.0.1", 0, symbols=("BTC/USDT",),
                                             ready=started.set_result))
    sim = await started
    async with aiohttp.ClientSession() as http, http.get(f"{sim.url}/sim/health") as resp:
        assert (await resp.json())["status"] == "ok"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):  # stopped: nothing listens any more
        async with aiohttp.ClientSession() as http, http.get(f"{sim.url}/sim/health"):
            pass


async def test_duration_stops_publishing_but_not_rest(make_sim: SimFactory) -> None:
    clock = ManualClock(time.time())
    sim = await make_sim(clock=clock, duration_s=0.0, trades_per_minute=6000)
    async with ws_connect(f"{sim.ws_url}/binance/ws/btcusdt@trade") as ws:
        clock.advance(2)
        await sim.wait_tick(3)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await ws.recv()
    async with aiohttp.ClientSession() as http, \
            http.get(f"{sim.url}/binance/api/v3/trades?symbol=BTCUSDT&limit=5") as resp:
        assert resp.status == 200 and len(await resp.json()) == 5
    assert sim.stats()["binance"]["BTCUSDT"]["trades"] == 0

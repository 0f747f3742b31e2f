"""Simulator benchmark (not a test): CPU the simulator spends per trade frame it publishes.

    .venv/bin/python bench/bench_sim.py                          # 10k, 20k, 40k frames/s, 3 runs
    .venv/bin/python bench/bench_sim.py --rates 20000 --repeat 1 --window 5   # a quick look
    .venv/bin/python bench/bench_sim.py --pyspy /tmp/sim-prof     # + a py-spy profile per rate
    .venv/bin/python bench/bench_sim.py --sim-args="--huobi-gzip-level 0"  # extra simulate args

    # before/after: the simulator of another tree, e.g. the last commit's
    mkdir -p /tmp/orig && git archive HEAD ingest | tar -x -C /tmp/orig
    .venv/bin/python bench/bench_sim.py --src /tmp/orig

For each ``--rates`` value (trade frames/s in total, the simulator's ``--rate``) it starts
``python -m ingest.cli simulate`` as a subprocess with ``--symbols`` markets (4 by default, so
12 trade streams over Binance, Gate.io and HTX) and a client process subscribed to the trades
channel only, as bench_e2e.py's throughput part subscribes: a Binance combined stream
(``<s>@trade``), a Gate.io ``spot.trades`` subscription per pair, an HTX ``/ws``
``market.<s>.trade.detail`` per symbol. The clients are raw sockets that read and discard
(cheap, and their CPU is not counted). After ``--warmup`` s it measures over ``--window`` s
the simulator's user+system CPU (``/proc/PID/stat``) and the trade frames it sent
(``/sim/stats``), and prints CPU µs per frame, best and median over ``--repeat`` runs, and
the kernel's part of it (median). The default run takes about 2 minutes.

Results (2 shared cores; µs of simulator CPU per trade frame, median of 3 runs):

    rate     before   after, HTX gzip level 1 (default)   after, --huobi-gzip-level 0
    10,000   56       23                                  19
    20,000   47       17                                  12
    40,000   -        12.5                                10

"before" is the simulator that sent each frame with aiohttp's ``send_str``/``send_bytes``
and computed each trade through its own chain of draws; at 40,000 frames/s it fell behind
and dropped its clients.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO
from common import cpu_times as cpu_s
from common import process as common_process

from ingest.db.embedded import free_port

PY = sys.executable
BASE_SYMBOLS = ("BTC", "ETH", "SOL", "XRP", "BNB", "DOGE", "ADA", "TRX", "LTC", "DOT", "LINK",
                "AVAX")


def http_json(url: str) -> dict[str, dict[str, dict[str, int]]]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: dict[str, dict[str, dict[str, int]]] = json.load(resp)
        return data


def sim_trades(port: int) -> int:
    stats = http_json(f"http://127.0.0.1:{port}/sim/stats")
    return sum(s["trades"] for ex in stats.values() for s in ex.values())


def process(cmd: list[str], log: Path | None = None, src: Path = REPO
            ) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``common.process`` with ``src`` (a tree of this project) first on the path."""
    return common_process(cmd, log, cwd=src, env={**os.environ, "PYTHONPATH": str(src)})


# ---------------------------------------------------------------------------------------
# Clients (``--clients``, one process): raw sockets that subscribe, then read and discard.
# Parsing 40k frames/s in Python would take a core the simulator needs; the frames are
# counted by the simulator's /sim/stats instead (pings are switched off, so nothing needs
# an answer).


def masked_text(text: str) -> bytes:
    """A client text frame; the all-zero mask key leaves the payload as is."""
    payload = text.encode()
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0xFE]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def client(port: int, path: str, requests: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"{path}: {head.decode(errors='replace')}")
    writer.write(b"".join(masked_text(r) for r in requests))
    received = 0
    while data := await reader.read(1 << 18):
        received += len(data)
    print(f"{path}: connection closed after {received} bytes", file=sys.stderr)


async def clients(port: int, syms: list[str]) -> None:
    streams = "/".join(f"{s.replace('/', '').lower()}@trade" for s in syms)
    gate = [json.dumps({"time": int(time.time()), "channel": "spot.trades",
                        "event": "subscribe", "payload": [s.replace("/", "_")]}) for s in syms]
    htx = [json.dumps({"sub": f"market.{s.replace('/', '').lower()}.trade.detail", "id": s})
           for s in syms]
    await asyncio.gather(client(port, f"/binance/stream?streams={streams}", []),
                         client(port, "/gateio/ws/v4/", gate), client(port, "/huobi/ws", htx))


# ---------------------------------------------------------------------------------------
# The measurement


async def wait_up(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await asyncio.to_thread(http_json, f"http://127.0.0.1:{port}/sim/health")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the simulator did not answer within {timeout_s} s") from None
            await asyncio.sleep(0.2)


async def run_point(
    rate: float, args: argparse.Namespace, run: int
) -> tuple[float, float, float] | None:
    """(µs of simulator CPU per trade frame sent, the part of it in the kernel, frames/s
    sent) for one run at ``rate``; None if nothing was sent (the clients were dropped)."""
    port = free_port()
    syms = [f"{BASE_SYMBOLS[i]}/USDT" for i in range(args.symbols)]
    sim_cmd = [PY, "-m", "ingest.cli", "--log-level", "WARNING", "simulate", "--port",
               str(port), "--rate", str(rate), "--symbols", ",".join(syms),
               "--binance-ping-interval", "1e6", "--huobi-ping-interval", "1e6",
               *shlex.split(args.sim_args)]
    log = Path(f"/tmp/bench-sim-{port}.log")
    with process(sim_cmd, log, Path(args.src).resolve()) as sim:
        await wait_up(port)
        with contextlib.ExitStack() as stack:
            stack.enter_context(process([PY, __file__, "--clients", "--port", str(port),
                                         "--symbols", str(args.symbols)]))
            await asyncio.sleep(args.warmup)
            cpu0, sent0, t0 = cpu_s(sim.pid), sim_trades(port), time.monotonic()
            spy = None
            if args.pyspy:
                Path(args.pyspy).mkdir(parents=True, exist_ok=True)
                out = Path(args.pyspy) / f"sim-{int(rate)}-{run}.json"
                spy = stack.enter_context(process([
                    str(Path(PY).parent / "py-spy"), "record", "-p", str(sim.pid), "-o",
                    str(out), "--format", "speedscope", "-d", str(int(args.window)),
                    "--rate", "200", "--nonblocking"]))
            await asyncio.sleep(args.window)
            cpu1, sent1, t1 = cpu_s(sim.pid), sim_trades(port), time.monotonic()
            if spy is not None:
                spy.wait(30)
        if sim.poll() is not None:
            raise SystemExit(f"the simulator exited, see {log}")
    dropped = log.read_text().count("slow_client_dropped")
    if dropped:
        print(f"  (rate {rate:g}: {dropped} slow clients dropped, see {log})")
    else:
        log.unlink()
    frames = sent1 - sent0
    if frames <= 0:
        return None
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    return (user + system) / frames * 1e6, system / frames * 1e6, frames / (t1 - t0)


async def main(args: argparse.Namespace) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    print(f"simulator CPU per trade frame, {args.symbols} symbols x 3 exchanges, trades only, "
          f"window {args.window:g} s, {args.repeat} runs; simulator from {args.src} "
          f"{args.sim_args}".rstrip())
    print(f"{'rate':>7} {'sent/s':>9} {'best µs':>8} {'median µs':>10} {'(kernel)':>9}  runs")
    for rate in rates:
        results = [await run_point(rate, args, i) for i in range(args.repeat)]
        runs = [r for r in results if r is not None]
        if not runs:
            print(f"{rate:>7,.0f}  nothing sent: the simulator dropped its clients", flush=True)
            continue
        per_frame = [r[0] for r in runs]
        kernel = statistics.median(r[1] for r in runs)
        sent = statistics.median(r[2] for r in runs)
        print(f"{rate:>7,.0f} {sent:>9,.0f} {min(per_frame):>8.2f} "
              f"{statistics.median(per_frame):>10.2f} {kernel:>9.2f}  "
              + " ".join(f"{x:.2f}" for x in per_frame), flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="10000,20000,40000")
    ap.add_argument("--symbols", type=int, default=4, help="symbols per exchange")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--pyspy", metavar="DIR", help="write a speedscope profile per run here")
    ap.add_argument("--src", default=str(REPO), metavar="DIR",
                    help="run the simulator of this source tree (default: this repository)")
    ap.add_argument("--sim-args", default="", metavar="ARGS",
                    help="more `ingest simulate` arguments, e.g. '--huobi-gzip-level 0'")
    ap.add_argument("--clients", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return ap.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.clients:
        syms = [f"{BASE_SYMBOLS[i]}/USDT" for i in range(arguments.symbols)]
        asyncio.run(clients(arguments.port, syms))
    else:
        asyncio.run(main(arguments))

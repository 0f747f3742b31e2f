"""``ingest simulate``: arguments and entry points for ingest/cli.py.

The simulator is self-contained: it needs no settings (no database, no exchanges), so
``run(args, settings)`` ignores them and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ingest.errors import ConfigError
from ingest.settings import port_number
from ingest.sim.server import DEFAULT_PORT, run_simulator


def _symbols(text: str) -> tuple[str, ...]:
    symbols = tuple(s for s in text.replace(" ", ",").split(",") if s)
    if not symbols:
        raise argparse.ArgumentTypeError("at least one symbol is required")
    return symbols


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help="listen port, 0 for any free port (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the deterministic market data (default %(default)s)")
    parser.add_argument("--symbols", type=_symbols, default=("BTC/USDT", "ETH/USDT"),
                        help="comma-separated unified symbols (default BTC/USDT,ETH/USDT)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="trade frames per second in total, across exchanges and symbols "
                             "(default %(default)s); with --seed it fixes the history")
    parser.add_argument("--trades-per-minute", type=int, default=None,
                        help="trades per minute per market; overrides --rate")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop publishing after S seconds; endpoints stay up")
    parser.add_argument("--faults", default="", metavar="SPEC",
                        help="fault injection, e.g. 'drop=30,skip_seq=0.01,dup=0.01,"
                             "reorder=0.01,malformed=0.001,stall=BTCUSDT:20,http429=0.1'")
    parser.add_argument("--binance-ping-interval", type=float, default=20.0, metavar="S")
    parser.add_argument("--binance-pong-timeout", type=float, default=60.0, metavar="S")
    parser.add_argument("--huobi-ping-interval", type=float, default=5.0, metavar="S")
    parser.add_argument("--huobi-gzip-level", type=int, default=1, metavar="N",
                        help="zlib level of HTX frames, 0-9 (default %(default)s); 0 writes "
                             "stored blocks: valid gzip, uncompressed, far cheaper to make")


async def main(args: argparse.Namespace) -> int:
    try:
        await run_simulator(
            args.host,
            args.port,
            seed=args.seed,
            symbols=tuple(args.symbols),
            rate=args.rate,
            trades_per_minute=args.trades_per_minute,
            duration_s=args.duration,
            faults=args.faults,
            binance_ping_interval_s=args.binance_ping_interval,
            binance_pong_timeout_s=args.binance_pong_timeout,
            huobi_ping_interval_s=args.huobi_ping_interval,
            huobi_gzip_level=args.huobi_gzip_level,
        )
    except ConfigError as exc:
        print(f"ingest simulate: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # typically: the port is taken
        print(f"ingest simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def run(args: argparse.Namespace, settings: Any = None) -> int:
    """The ``run(args, settings)`` entry point ingest/cli.py calls for every command."""
    return await main(args)

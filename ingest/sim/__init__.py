"""Local simulator of Binance, Gate.io and HTX (websocket + REST) and the CoinGecko and
alternative.me metrics APIs, on one aiohttp server, from a seeded deterministic model.

    sim = await start_simulator("127.0.0.1", 0, seed=7, symbols=("BTC/USDT",), rate=50)
    sim.endpoints()   # ws/rest URLs for settings
    sim.stats()       # what was sent to clients
    await sim.stop()

See ``server.py`` for the layout, ``market.py`` for how history is derived, ``faults.py``
for the ``--faults`` syntax.
"""

from ingest.sim.faults import FaultSpec, parse_faults
from ingest.sim.server import DEFAULT_PORT, SimOptions, Simulator, run_simulator, start_simulator

__all__ = [
    "DEFAULT_PORT",
    "FaultSpec",
    "SimOptions",
    "Simulator",
    "parse_faults",
    "run_simulator",
    "start_simulator",
]

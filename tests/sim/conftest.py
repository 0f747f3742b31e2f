"""Fixtures for the simulator tests: a simulator factory on a free port with fast timings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ingest.sim import Simulator, start_simulator

# Fast defaults: short ticks and intervals keep the suite quick; the model's history does not
# depend on them (only on seed, symbols' names and trades per minute).
FAST: dict[str, Any] = {
    "seed": 7,
    "symbols": ("BTC/USDT", "ETH/USDT"),
    "trades_per_minute": 120,
    "tick_s": 0.005,
    "kline_interval_s": 0.2,
    "book_interval_s": 0.02,
    "binance_max_msgs_per_s": 50,
}

SimFactory = Callable[..., Awaitable[Simulator]]


@pytest.fixture
async def make_sim() -> AsyncIterator[SimFactory]:
    sims: list[Simulator] = []

    async def factory(**opts: Any) -> Simulator:
        sim = await start_simulator("127.0.0.1", 0, **{**FAST, **opts})
        sims.append(sim)
        return sim

    yield factory
    for sim in sims:
        await sim.stop()

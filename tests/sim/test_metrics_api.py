"""The CoinGecko /global and alternative.me Fear & Greed simulations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp

from ingest.sim import Simulator

from .conftest import SimFactory
from .helpers import ManualClock

NOW = datetime(2025, 6, 1, 12, 34, 56, tzinfo=UTC).timestamp()


async def get(sim: Simulator, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(sim.url + path) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_coingecko_global_refreshes_every_ten_minutes(make_sim: SimFactory) -> None:
    clock = ManualClock(NOW)
    sim = await make_sim(clock=clock)
    first = await get(sim, "/coingecko/api/v3/global")
    data = first["data"]
    assert 45 < data["market_cap_percentage"]["btc"] < 60
    assert 0 < data["market_cap_percentage"]["eth"] < 25
    assert data["total_market_cap"]["usd"] > 1e12 and data["total_volume"]["usd"] > 1e10
    assert isinstance(data["market_cap_change_percentage_24h_usd"], float)
    slot = int(NOW) // 600 * 600
    assert slot <= data["updated_at"] < slot + 600
    clock.advance(60)  # same 10-minute slot: same figures
    assert await get(sim, "/coingecko/api/v3/global") == first
    clock.advance(600)
    later = await get(sim, "/coingecko/api/v3/global")
    assert later["data"]["updated_at"] >= slot + 600 and later != first


async def test_fear_and_greed(make_sim: SimFactory) -> None:
    sim = await make_sim(clock=ManualClock(NOW))
    latest = await get(sim, "/alternative/fng/")
    assert latest["name"] == "Fear and Greed Index" and latest["metadata"] == {"error": None}
    (entry,) = latest["data"]
    assert list(entry) == ["value", "value_classification", "timestamp", "time_until_update"]
    today = int(NOW) // 86400 * 86400
    assert entry["timestamp"] == str(today)
    assert entry["time_until_update"] == str(today + 86400 - int(NOW))
    assert 0 <= int(entry["value"]) <= 100
    week = (await get(sim, "/alternative/fng/?limit=7"))["data"]
    assert [int(e["timestamp"]) for e in week] == [today - 86400 * i for i in range(7)]
    assert all("time_until_update" not in e for e in week[1:])
    everything = (await get(sim, "/alternative/fng/?limit=0"))["data"]
    assert everything[-1]["timestamp"] == str(int(datetime(2018, 2, 1, tzinfo=UTC).timestamp()))
    assert len(everything) == (today - 1517443200) // 86400 + 1
    assert everything[:7] == week

"""Simulated CoinGecko ``/coingecko/api/v3/global`` and alternative.me ``/alternative/fng/``
(protocols.md §5-6), deterministic from the seed and the (injected) clock.

CoinGecko's figures change once per 10-minute slot of clock time (``updated_at`` is in that
slot, in seconds); the Fear & Greed index has one value per UTC day, newest first, values and
timestamps as strings, ``time_until_update`` on the newest entry only; ``limit=0`` returns the
whole history since 2018-02-01, when the index starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ingest.sim.rest import BadRequest, json_response, param_int
from ingest.sim.walk import TAG_METRIC, stable_key, unit

_SLOT_S = 600
_DAY_S = 86_400
_FNG_FIRST_DAY = 17_563  # 2018-02-01
_SLOTS_PER_DAY = _DAY_S // _SLOT_S


def _noise(key: int, x: float) -> float:
    """Smooth noise in [-1, 1]: two octaves of interpolated seeded values."""
    total = 0.0
    for octave, (scale, weight) in enumerate(((1.0, 0.6), (7.0, 0.4))):
        pos = x / scale
        i = math.floor(pos)
        f = pos - i
        a = unit(key, TAG_METRIC, (octave << 40) + i) * 2 - 1
        b = unit(key, TAG_METRIC, (octave << 40) + i + 1) * 2 - 1
        total += weight * (a + (b - a) * f * f * (3 - 2 * f))
    return total


def classify(value: int) -> str:
    if value < 25:
        return "Extreme Fear"
    if value < 47:
        return "Fear"
    if value < 55:
        return "Neutral"
    if value < 76:
        return "Greed"
    return "Extreme Greed"


class MetricsApi:
    def __init__(self, seed: int, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._cg_key = stable_key(seed, "coingecko")
        self._fng_key = stable_key(seed, "fear_greed")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/coingecko/api/v3/global", self.coingecko_global),
            web.get("/alternative/fng/", self.fear_greed),
            web.get("/alternative/fng", self.fear_greed),
        ]

    def _market_cap(self, slot: int) -> float:
        return 2.4e12 * math.exp(0.25 * _noise(self._cg_key, slot / _SLOTS_PER_DAY / 10))

    def global_data(self, now_s: float) -> dict[str, Any]:
        slot = int(now_s // _SLOT_S)
        day = slot / _SLOTS_PER_DAY
        cap = self._market_cap(slot)
        cap_day_ago = self._market_cap(slot - _SLOTS_PER_DAY)
        volume = cap * (0.035 + 0.015 * _noise(self._cg_key, day + 100.0))
        btc = 52.0 + 6.0 * _noise(self._cg_key, day / 3 + 200.0)
        eth = 16.0 + 3.0 * _noise(self._cg_key, day / 3 + 300.0)
        usdt = 4.5 + 0.5 * _noise(self._cg_key, day + 400.0)
        btc_usd = cap * btc / 100 / 19_700_000  # about 19.7 M coins outstanding
        eth_usd = cap * eth / 100 / 120_000_000
        offset = int(unit(self._cg_key, TAG_METRIC, 1 << 44 | slot) * 60)
        return {"data": {
            "active_cryptocurrencies": 13_690 + slot % 50, "upcoming_icos": 0,
            "ongoing_icos": 49, "ended_icos": 3376, "markets": 1046,
            "total_market_cap": {"btc": cap / btc_usd, "eth": cap / eth_usd, "usd": cap,
                                 "eur": cap / 1.08},
            "total_volume": {"btc": volume / btc_usd, "eth": volume / eth_usd, "usd": volume,
                             "eur": volume / 1.08},
            "market_cap_percentage": {"btc": btc, "eth": eth, "usdt": usdt},
            "market_cap_change_percentage_24h_usd": (cap / cap_day_ago - 1) * 100,
            "updated_at": slot * _SLOT_S + offset,
        }}

    async def coingecko_global(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.global_data(self._clock()))

    def fng_value(self, day: int) -> int:
        return max(0, min(100, round(50 + 45 * _noise(self._fng_key, day / 5))))

    def fng_data(self, now_s: float, limit: int) -> dict[str, Any]:
        today = int(now_s // _DAY_S)
        count = today - _FNG_FIRST_DAY + 1 if limit == 0 else min(limit, today - _FNG_FIRST_DAY + 1)
        data: list[dict[str, str]] = []
        for day in range(today, today - count, -1):
            value = self.fng_value(day)
            entry = {"value": str(value), "value_classification": classify(value),
                     "timestamp": str(day * _DAY_S)}
            if not data:
                entry["time_until_update"] = str(int((today + 1) * _DAY_S - now_s))
            data.append(entry)
        return {"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}}

    async def fear_greed(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = param_int(request, "limit", 1, low=0) or 0
        except BadRequest as exc:
            return json_response({"name": "Fear and Greed Index", "data": [],
                                  "metadata": {"error": exc.message}}, status=400)
        return json_response(self.fng_data(self._clock(), limit))

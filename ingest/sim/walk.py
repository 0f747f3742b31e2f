"""Deterministic randomness and the price path, all addressable in O(1).

Nothing here iterates from the epoch: every value is a pure function of a key and an index,
so the history of any date can be regenerated on demand and live data agrees with it.

The price path is built top-down. A day's open is a smooth multi-scale noise function of the
day number (its close is the next day's open); a day is split into 24 hour candles and an hour
into 60 minute candles by :func:`split`, which keeps the children inside the parent's range and
makes one child reach the parent's high and one its low. So the candle of any aligned window is
known without looking at its minutes, and aggregating the minutes reproduces it exactly.
"""

from __future__ import annotations

import functools
import hashlib
import math
from array import array

MASK64 = (1 << 64) - 1
TWO64 = float(1 << 64)
_LANE_ONE = (1).to_bytes(16, "little")

OHLC = tuple[int, int, int, int]  # open, high, low, close in price ticks

# Tags keep the streams of numbers drawn for different purposes independent.
TAG_ANCHOR = 1
TAG_DAY_RANGE = 2
TAG_BRIDGE = 3
TAG_CHILD_HIGH = 4
TAG_CHILD_LOW = 5
TAG_EXTREME = 6
TAG_COUNT = 7
TAG_QTY = 8
TAG_TRADE_TIME = 9
TAG_TRADE_PRICE = 10
TAG_TRADE_EXTREME = 11
TAG_METRIC = 12


def mix64(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-distributed 64-bit bijection."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def stable_key(*parts: object) -> int:
    """A 64-bit key from text parts; stable across processes (unlike ``hash()``)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def draw(key: int, tag: int, index: int) -> int:
    """The 64-bit number for (key, tag, index). ``index`` must be in [0, 2**48)."""
    return mix64(key ^ mix64((tag << 48) ^ index))


def draws(key: int, tag: int, start: int, stop: int) -> list[int]:
    """``draw(key, tag, i)`` for i in [start, stop), all at once.

    Pure Python pays per operation, not per bit, so the values ride in one big int, 64-bit
    lanes 128 bits apart: each step of mix64 is then one big-int operation for all of them
    (a product of a lane and a 64-bit constant fits its 128 bits; every shift is masked back
    to the lanes before the next product).
    """
    n = stop - start
    if n <= 0:
        return []
    ones, lanes, golden, ramp = _lane_constants(n)
    x = ones * ((tag << 48) + start) + ramp  # lane i: (tag << 48) ^ (start + i), as i < 2**48
    for salt in (0, key):  # mix64(key ^ mix64((tag << 48) ^ i))
        if salt:
            x ^= ones * salt
        x = (x + golden) & lanes
        x = ((x ^ (x >> 30)) & lanes) * 0xBF58476D1CE4E5B9 & lanes
        x = ((x ^ (x >> 27)) & lanes) * 0x94D049BB133111EB & lanes
        x = (x ^ (x >> 31)) & lanes
    return array("Q", x.to_bytes(16 * n, "little"))[::2].tolist()


@functools.lru_cache(maxsize=8)
def _lane_constants(n: int) -> tuple[int, int, int, int]:
    """For ``n`` lanes: 1 in each, 2**64 - 1 in each, mix64's constant in each, i in lane i."""
    ones = int.from_bytes(_LANE_ONE * n, "little")
    ramp = array("Q", bytes(16 * n))
    ramp[::2] = array("Q", range(n))
    return ones, ones * MASK64, ones * 0x9E3779B97F4A7C15, int.from_bytes(ramp.tobytes(), "little")


def unit(key: int, tag: int, index: int) -> float:
    """A float in [0, 1) for (key, tag, index)."""
    return draw(key, tag, index) / TWO64


# Octaves of the daily log-price noise: (period in days, amplitude in log units). Longer
# periods get larger amplitudes, like a random walk's sqrt(t) growth, but bounded so that a
# seeded symbol stays within a plausible band of its reference price forever.
_OCTAVES: tuple[tuple[int, float], ...] = (
    (1, 0.012),
    (3, 0.02),
    (9, 0.035),
    (27, 0.06),
    (81, 0.1),
    (243, 0.16),
    (729, 0.25),
)


def value_noise(key: int, tag: int, octave: int, x: float) -> float:
    """Smoothly interpolated noise in [-1, 1] at position ``x`` (x ≥ 0)."""
    i = math.floor(x)
    f = x - i
    a = unit(key, tag, (octave << 44) + i) * 2.0 - 1.0
    b = unit(key, tag, (octave << 44) + i + 1) * 2.0 - 1.0
    s = f * f * (3.0 - 2.0 * f)
    return a + (b - a) * s


def wander(key: int, tag: int, x: float) -> float:
    """A smooth wandering value in [-1, 1]: knots every 1 unit of x, a finer octave every 1/4."""
    return 0.7 * value_noise(key, tag, 1, x) + 0.3 * value_noise(key, tag, 2, x * 4)


def anchor_price(key: int, day: int, reference: float) -> float:
    """The price at 00:00 UTC of ``day`` (days since the epoch)."""
    log_offset = 0.0
    for octave, (period, amplitude) in enumerate(_OCTAVES):
        log_offset += amplitude * value_noise(key, TAG_ANCHOR, octave, day / period)
    return reference * math.exp(log_offset)


def day_range(key: int, day: int, o: int, c: int) -> tuple[int, int]:
    """High and low of a day whose open and close are known: a few percent beyond them."""
    top, bottom = max(o, c), min(o, c)
    up = unit(key, TAG_DAY_RANGE, 2 * day) ** 2
    down = unit(key, TAG_DAY_RANGE, 2 * day + 1) ** 2
    high = top + int(top * 0.02 * up)
    low = max(1, bottom - int(bottom * 0.02 * down))
    return high, low


def squash(level: float, low: int, high: int) -> int:
    """Map ``level`` into [low, high] smoothly (tanh around the middle), so a path that
    wanders out of range bends back instead of sticking to the boundary."""
    half = (high - low) / 2
    if half <= 0:
        return low
    mid = low + half
    return min(high, max(low, round(mid + half * math.tanh((level - mid) / half))))


def split(key: int, first_child: int, parent: OHLC, count: int) -> list[OHLC]:
    """Divide ``parent`` into ``count`` consecutive child candles.

    Children chain (each opens at the previous close), stay within the parent's range, and
    together reach exactly its high and low. ``first_child`` is the absolute index of the first
    child (e.g. minutes since the epoch), which makes the draws unique per child.
    """
    o, h, low, c = parent
    spread = h - low
    bounds = [o]
    for i in range(1, count):
        x = i / count
        # Drift from open to close plus a smooth wander (knots every 6 children), tapered to
        # nothing at both ends where the path is pinned to the parent's open and close.
        w = wander(key, TAG_BRIDGE, (first_child + i) / 6)
        level = o + (c - o) * x + w * 4 * x * (1 - x) * spread * 0.4
        bounds.append(squash(level, low, h))
    bounds.append(c)
    children: list[OHLC] = []
    for i in range(count):
        co, cc = bounds[i], bounds[i + 1]
        top, bottom = max(co, cc), min(co, cc)
        # Cubing the draw keeps most excursions small and a few large, like real wicks.
        ch = top + int((h - top) * unit(key, TAG_CHILD_HIGH, first_child + i) ** 3)
        cl = bottom - int((bottom - low) * unit(key, TAG_CHILD_LOW, first_child + i) ** 3)
        children.append((co, ch, cl, cc))
    pick = draw(key, TAG_EXTREME, first_child)
    i_high, i_low = pick % count, (pick >> 20) % count
    co, _, cl, cc = children[i_high]
    children[i_high] = (co, h, cl, cc)
    co, ch, _, cc = children[i_low]
    children[i_low] = (co, ch, low, cc)
    return children


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split an integer ``total`` in proportion to ``weights`` so the parts sum exactly."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        parts = [0] * len(weights)
        if parts:
            parts[-1] = total
        return parts
    parts = [total * w // weight_sum for w in weights]
    remainder = total - sum(parts)
    # Largest remainders first; ties broken by position, so the result is deterministic.
    order = sorted(
        range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i)
    )
    for i in order[:remainder]:
        parts[i] += 1
    return parts


class TradePath:
    """Prices of the trades of one minute with ``n`` trades and candle ``ohlc``.

    The first trade is at the open, the last at the close, trade ``picks[0]`` at the high and
    ``picks[1]`` at the low; in between the price wanders smoothly from open to close, with a
    short excursion up to the high and down to the low around their trades.

    The minute's noise knots are drawn once here, so :meth:`prices` costs a few float
    operations per trade; the arithmetic is exactly :func:`wander`'s, so the prices do not
    depend on how a minute's trades are sliced.
    """

    __slots__ = ("_c", "_drop", "_h", "_knots", "_last", "_lift", "_low", "_minute", "_o",
                 "_picks", "_width", "_x_high", "_x_low")

    def __init__(
        self, key: int, minute: int, ohlc: OHLC, n: int, picks: tuple[int, int]
    ) -> None:
        self._o, self._h, self._low, self._c = ohlc
        self._minute = minute
        self._last = n - 1
        self._picks = picks
        self._width = max(0.08, 2.5 / self._last)
        # Knots of wander(minute * 3 + x * 3) for x in [0, 1]: octave 1 at 3m..3m+4, octave 2
        # at 12m..12m+13 (value_noise needs the knot after floor(x) too).
        self._knots = tuple(
            [unit(key, TAG_TRADE_PRICE, (octave << 44) + i) * 2.0 - 1.0
             for i in range(first, first + count)]
            for octave, first, count in ((1, minute * 3, 5), (2, minute * 12, 14))
        )
        self._x_high, self._x_low = picks[0] / self._last, picks[1] / self._last
        self._lift = self._h - self._path(self._x_high)
        self._drop = self._low - self._path(self._x_low)

    def _path(self, x: float) -> float:
        o, c, spread = self._o, self._c, self._h - self._low
        w = self._wander(self._minute * 3 + x * 3)
        return o + (c - o) * x + w * 4 * x * (1 - x) * spread * 0.35

    def _wander(self, x: float) -> float:
        (k1, k2), m = self._knots, self._minute
        i = math.floor(x)
        f = x - i
        a, b = k1[i - m * 3], k1[i - m * 3 + 1]
        v1 = a + (b - a) * (f * f * (3.0 - 2.0 * f))
        x4 = x * 4
        i = math.floor(x4)
        f = x4 - i
        a, b = k2[i - m * 12], k2[i - m * 12 + 1]
        return 0.7 * v1 + 0.3 * (a + (b - a) * (f * f * (3.0 - 2.0 * f)))

    def prices(self, j0: int, j1: int) -> list[int]:
        """Prices of trades j0..j1-1: ``_path`` and ``squash`` inlined, the same arithmetic
        (operation for operation, so the same floats)."""
        o, h, low, c = self._o, self._h, self._low, self._c
        if h <= low:
            return [low] * (j1 - j0)
        spread, last, width = h - low, self._last, self._width
        x_high, x_low, lift, drop = self._x_high, self._x_low, self._lift, self._drop
        near = width * 1.01  # cheap pre-test for the excursions; the exact one follows
        k1, k2 = self._knots
        m3, rise = self._minute * 3, c - o
        m12 = m3 * 4
        # squash(level, low, h) without its clamp: mid ± half are exactly h and low, and
        # |tanh| <= 1, so the rounded result is always within [low, h].
        half = (h - low) / 2
        mid = low + half
        floor, tanh = math.floor, math.tanh
        out = []
        append = out.append
        # The noise knots change every quarter unit of the wander position, which only
        # grows with j: look them up when it crosses into the next quarter.
        i1 = i2 = 0
        a1 = d1 = a2 = d2 = 0.0
        next_quarter = -math.inf
        for j in range(j0, j1):
            x = j / last
            xw = m3 + x * 3
            xw4 = xw * 4  # exact: floor(xw4) // 4 == floor(xw)
            if xw4 >= next_quarter:
                i2 = floor(xw4)
                i1, next_quarter = i2 // 4, i2 + 1
                a1, d1 = k1[i1 - m3], k1[i1 - m3 + 1] - k1[i1 - m3]
                a2, d2 = k2[i2 - m12], k2[i2 - m12 + 1] - k2[i2 - m12]
            f = xw - i1
            v1 = a1 + d1 * (f * f * (3.0 - 2.0 * f))
            f = xw4 - i2
            w = 0.7 * v1 + 0.3 * (a2 + d2 * (f * f * (3.0 - 2.0 * f)))
            level = o + rise * x + w * 4 * x * (1 - x) * spread * 0.35
            if -near < x - x_high < near:
                r = abs(x - x_high) / width
                if r < 1.0:
                    level += lift * (1.0 - r * r) ** 2
            if -near < x - x_low < near:
                r = abs(x - x_low) / width
                if r < 1.0:
                    level += drop * (1.0 - r * r) ** 2
            append(round(mid + half * tanh((level - mid) / half)))
        for j, pinned in ((0, o), (last, c), (self._picks[0], h), (self._picks[1], low)):
            if j0 <= j < j1:
                out[j - j0] = pinned
        return out

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

import hashlib
import math

MASK64 = (1 << 64) - 1
TWO64 = float(1 << 64)

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


def _bump(distance: float, width: float) -> float:
    """1 at distance 0, falling smoothly to 0 at ``width``."""
    r = distance / width
    return (1.0 - r * r) ** 2 if r < 1.0 else 0.0


def trade_prices(
    key: int, minute: int, ohlc: OHLC, n: int, picks: tuple[int, int], j0: int, j1: int
) -> list[int]:
    """Prices of trades j0..j1-1 of a minute with ``n`` trades and candle ``ohlc``.

    The first trade is at the open, the last at the close, trade ``picks[0]`` at the high and
    ``picks[1]`` at the low; in between the price wanders smoothly from open to close, with a
    short excursion up to the high and down to the low around their trades.
    """
    o, h, low, c = ohlc
    spread = h - low
    last = n - 1
    i_high, i_low = picks
    width = max(0.08, 2.5 / last)

    def path(x: float) -> float:
        w = wander(key, TAG_TRADE_PRICE, minute * 3 + x * 3)
        return o + (c - o) * x + w * 4 * x * (1 - x) * spread * 0.35

    x_high, x_low = i_high / last, i_low / last
    lift, drop = h - path(x_high), low - path(x_low)
    out = []
    for j in range(j0, j1):
        if j == 0:
            price = o
        elif j == last:
            price = c
        elif j == i_high:
            price = h
        elif j == i_low:
            price = low
        else:
            x = j / last
            level = path(x) + lift * _bump(abs(x - x_high), width)
            level += drop * _bump(abs(x - x_low), width)
            price = squash(level, low, h)
        out.append(price)
    return out

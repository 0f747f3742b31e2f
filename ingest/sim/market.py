"""The deterministic market model: trades and candles of any time range, from the seed alone.

Per market (exchange, symbol) and minute M (minutes since the epoch):

* Trade count ``n(M) = C + d(M) - d(M-1)`` with ``d`` drawn in ``[0, (C-4)/2]``. The sum
  over any run of minutes telescopes, so the first trade id of a minute is arithmetic:
  ``first_id(M) = base + M*C + d(M-1)``. Ids are contiguous across minutes and every minute
  has at least four trades (first = open, last = close, one at the high, one at the low).
* Trade quantity ``q(g) = Q + r(g) - r(g-P)`` for trade id ``g``: sums over any id range (and
  over the taker-buy trades, whose side repeats with period P) telescope too, so the volume of
  any window costs O(P), not O(trades).
* Prices come from :mod:`walk` top-down (day → hours → minutes → trades), so the candle of any
  aligned window is known directly and equals the aggregate of its minutes.
* Quote volume is allocated top-down with exact integer sums (day = Σ hours = Σ minutes); it
  tracks volume * typical price rather than the sum of each trade's price * quantity.

C (trades per minute) is a parameter of the history: the same seed and C give the same data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

from ingest.sim import walk
from ingest.sim.intervals import MINUTE_MS
from ingest.sim.spec import REFERENCE_USD, MarketSpec

SIDE_PERIOD = 8  # taker sides repeat with this period (see module docstring)
_MINUTES_PER_DAY = 1440
_BLOCK = 256  # trade ids per batch of draws
_KEPT_BLOCKS = 16
_FEW = 16  # fewer draws than this are cheaper one by one than a block


class Trade(NamedTuple):
    id: int
    ts_ms: int
    price: int  # ticks
    qty: int  # qty units
    buyer_maker: bool  # True when the taker sold


@dataclass(frozen=True, slots=True)
class TradeBatch:
    """Trades with consecutive ids from ``first_id``, by column: what the live feed formats,
    without a tuple per trade."""

    first_id: int
    ts_ms: list[int]
    prices: list[int]
    qtys: list[int]
    buyer_maker: list[bool]

    def __len__(self) -> int:
        return len(self.ts_ms)

    @property
    def ids(self) -> range:
        return range(self.first_id, self.first_id + len(self.ts_ms))

    def trades(self) -> list[Trade]:
        new = tuple.__new__
        return [new(Trade, row) for row in zip(
            self.ids, self.ts_ms, self.prices, self.qtys, self.buyer_maker, strict=True)]

    def extend(self, other: TradeBatch) -> TradeBatch:
        """This batch followed by ``other`` (whose ids must continue this one's)."""
        if not other.ts_ms:
            return self
        if not self.ts_ms:
            return other
        assert other.first_id == self.first_id + len(self.ts_ms)
        return TradeBatch(self.first_id, self.ts_ms + other.ts_ms, self.prices + other.prices,
                          self.qtys + other.qtys, self.buyer_maker + other.buyer_maker)


@dataclass(frozen=True, slots=True)
class Summary:
    """A candle over [start_ms, end_ms); prices in ticks, volumes in units (see MarketSpec)."""

    start_ms: int
    end_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    buy_volume: int
    buy_quote_volume: int
    count: int
    first_id: int  # -1 when count == 0
    last_id: int


Node = tuple[walk.OHLC, int, int]  # (ohlc, quote volume, taker-buy quote volume)


class _MinutePlan(NamedTuple):
    """What every trade of a minute shares, drawn once per minute."""

    n: int
    first_id: int
    path: walk.TradePath


def _share_quote(total: int, ohlcs: list[walk.OHLC], volumes: list[int]) -> list[int]:
    """Split an hour's quote volume over its minutes, summing exactly to ``total``.

    Each minute starts at volume * typical price; the difference from ``total`` goes to the
    minutes with room towards their high (or low), so each minute's implied VWAP stays within
    its own range whenever the hour's total allows it.
    """
    base = [v * (sum(o) // 4) for v, o in zip(volumes, ohlcs, strict=True)]
    residual = total - sum(base)
    if residual >= 0:
        room = [v * (o[1] - sum(o) // 4) for v, o in zip(volumes, ohlcs, strict=True)]
    else:
        room = [v * (sum(o) // 4 - o[2]) for v, o in zip(volumes, ohlcs, strict=True)]
    if sum(room) < abs(residual):
        room = base  # not enough room anywhere: spread in proportion instead
    sign = 1 if residual >= 0 else -1
    return [b + sign * a for b, a in zip(base, walk.allocate(abs(residual), room), strict=True)]


class MarketModel:
    def __init__(self, spec: MarketSpec, seed: int) -> None:
        self.spec = spec
        self.key = walk.stable_key(seed, spec.exchange, spec.symbol)
        # The path's shape is shared by all exchanges, so their prices stay close.
        self.path_key = walk.stable_key(seed, spec.symbol)
        premium = (walk.unit(self.key, walk.TAG_ANCHOR, 1 << 47) - 0.5) * 0.002
        self.reference_ticks = spec.reference_price * (1 + premium) * 10**spec.price_decimals
        self.per_minute = spec.trades_per_minute
        self.id_base = 100_000_000 + walk.draw(self.key, walk.TAG_COUNT, 1 << 47) % 900_000_000
        notional_units = 1000.0 / REFERENCE_USD.get(spec.quote, 1.0) / spec.reference_price
        scale = 0.5 + walk.unit(self.key, walk.TAG_QTY, 1 << 47)
        self.qty_mean: int = max(2, round(notional_units * 10.0**spec.qty_decimals * scale))
        self.sides = self._side_pattern()
        self._hours = functools.lru_cache(maxsize=256)(self._split_day)
        self._minutes = functools.lru_cache(maxsize=2048)(self._split_hour)
        self._prefix: tuple[int, int, int, int] = (-1, 0, 0, 0)  # (minute, k, high, low)
        self._plan = functools.lru_cache(maxsize=64)(self._plan_minute)
        self._blocks: dict[tuple[int, int], list[int]] = {}  # (tag, id // _BLOCK) → draws

    def _side_pattern(self) -> tuple[bool, ...]:
        bits = walk.draw(self.key, walk.TAG_QTY, (1 << 47) + 1)
        pattern = [bool(bits >> i & 1) for i in range(SIDE_PERIOD)]
        pattern[0], pattern[1] = True, False  # both sides always occur
        return tuple(pattern)

    # -- trade ids and counts -------------------------------------------------------------

    def _d(self, minute: int) -> int:
        if minute < 0:
            return 0
        # d in [0, (C-4)//2]: counts stay within C ± (C-4)/2, so the live rate stays near
        # --rate while every minute keeps its four pinned trades.
        return walk.draw(self.key, walk.TAG_COUNT, minute) % ((self.per_minute - 4) // 2 + 1)

    def first_id(self, minute: int) -> int:
        return self.id_base + minute * self.per_minute + self._d(minute - 1)

    def count(self, minute: int) -> int:
        return self.per_minute + self._d(minute) - self._d(minute - 1)

    def minute_of_id(self, trade_id: int) -> int:
        minute = (trade_id - self.id_base) // self.per_minute
        return minute if trade_id >= self.first_id(minute) else minute - 1

    # -- quantities and sides -------------------------------------------------------------

    def _r(self, trade_id: int) -> int:
        return walk.draw(self.key, walk.TAG_QTY, trade_id) % self.qty_mean

    def qty(self, trade_id: int) -> int:
        return self.qty_mean + self._r(trade_id) - self._r(trade_id - SIDE_PERIOD)

    def buyer_maker(self, trade_id: int) -> bool:
        return self.sides[trade_id % SIDE_PERIOD]

    def _window(self, trade_id: int) -> list[int]:
        """r(g) for the SIDE_PERIOD ids before ``trade_id``: all that a volume sum needs."""
        return [self._r(g) for g in range(trade_id - SIDE_PERIOD, trade_id)]

    def _sums(self, first: int, end: int, head: list[int], tail: list[int]) -> tuple[int, int]:
        """(Σ qty, Σ taker-buy qty) over ids [first, end), given ``_window`` of both ends."""
        volume = (end - first) * self.qty_mean + sum(tail) - sum(head)
        buy = 0
        for cls in range(SIDE_PERIOD):
            if self.sides[cls]:
                continue
            lo = first + (cls - first) % SIDE_PERIOD  # first id ≥ first in this class
            if lo >= end:
                continue
            hi = end - 1 - (end - 1 - cls) % SIDE_PERIOD  # last id < end in this class
            n = (hi - lo) // SIDE_PERIOD + 1
            # hi is in the tail window, lo - SIDE_PERIOD in the head window.
            buy += n * self.qty_mean + tail[hi - end + SIDE_PERIOD] - head[lo - first]
        return volume, buy

    def volumes(self, first: int, end: int) -> tuple[int, int]:
        """(Σ qty, Σ taker-buy qty) over trade ids [first, end), in O(SIDE_PERIOD)."""
        return self._sums(first, end, self._window(first), self._window(end))

    def _run_volumes(
        self, first_minute: int, minutes_each: int, count: int
    ) -> list[tuple[int, int]]:
        """Volumes of ``count`` consecutive runs of minutes; shared boundaries drawn once."""
        ids = [self.first_id(first_minute + i * minutes_each) for i in range(count + 1)]
        windows = [self._window(g) for g in ids]
        return [
            self._sums(ids[i], ids[i + 1], windows[i], windows[i + 1]) for i in range(count)
        ]

    # -- candles: day → hour → minute nodes -----------------------------------------------
    #
    # Quote volume is exact by construction at day and hour level (a day's is the sum of its
    # hours' volume * typical price) and allocated with exact integer shares to minutes, so
    # any window's quote volume is the sum of its minutes' and the implied VWAP stays close
    # to the minute's typical price.

    def _day_ohlc(self, day: int) -> walk.OHLC:
        o = max(1, round(walk.anchor_price(self.path_key, day, self.reference_ticks)))
        c = max(1, round(walk.anchor_price(self.path_key, day + 1, self.reference_ticks)))
        high, low = walk.day_range(self.key, day, o, c)
        return (o, high, low, c)

    def _split_day(self, day: int) -> list[Node]:
        ohlcs = walk.split(self.key, (1 << 40) + day * 24, self._day_ohlc(day), 24)
        vols = self._run_volumes(day * _MINUTES_PER_DAY, 60, 24)
        return [
            (ohlc, v * (sum(ohlc) // 4), vb * (sum(ohlc) // 4))
            for ohlc, (v, vb) in zip(ohlcs, vols, strict=True)
        ]

    def day_node(self, day: int) -> Node:
        hours = self._hours(day)
        return (self._day_ohlc(day), sum(h[1] for h in hours), sum(h[2] for h in hours))

    def hour_node(self, hour: int) -> Node:
        return self._hours(hour // 24)[hour % 24]

    def _split_hour(self, hour: int) -> list[Node]:
        parent_ohlc, qv, qvb = self.hour_node(hour)
        ohlcs = walk.split(self.key, (2 << 40) + hour * 60, parent_ohlc, 60)
        vols = self._run_volumes(hour * 60, 1, 60)
        qvs = _share_quote(qv, ohlcs, [v for v, _ in vols])
        qvbs = _share_quote(qvb, ohlcs, [vb for _, vb in vols])
        return list(zip(ohlcs, qvs, qvbs, strict=True))

    def minute_node(self, minute: int) -> Node:
        return self._minutes(minute // 60)[minute % 60]

    def _nodes(self, first_minute: int, end_minute: int) -> list[Node]:
        """The largest aligned day/hour/minute nodes that exactly cover the minutes."""
        nodes, m = [], first_minute
        while m < end_minute:
            if m % _MINUTES_PER_DAY == 0 and m + _MINUTES_PER_DAY <= end_minute:
                nodes.append(self.day_node(m // _MINUTES_PER_DAY))
                m += _MINUTES_PER_DAY
            elif m % 60 == 0 and m + 60 <= end_minute:
                nodes.append(self.hour_node(m // 60))
                m += 60
            else:
                nodes.append(self.minute_node(m))
                m += 1
        return nodes

    def summary(self, start_ms: int, end_ms: int) -> Summary:
        """The candle of trades with start_ms ≤ ts < end_ms. ``start_ms`` is minute-aligned;
        ``end_ms`` may cut a minute (the live, still-open candle)."""
        first_minute, end_minute = start_ms // MINUTE_MS, end_ms // MINUTE_MS
        nodes = self._nodes(first_minute, end_minute)
        g0 = self.first_id(first_minute)
        g1 = self.first_id(end_minute)
        partial = self._partial(end_minute, end_ms) if end_ms % MINUTE_MS else None
        if partial is not None:
            g1 += partial[0]
        if g1 == g0:
            price = self.minute_node(first_minute)[0][0]
            return Summary(start_ms, end_ms, price, price, price, price, 0, 0, 0, 0, 0, -1, -1)
        ohlcs = [n[0] for n in nodes]
        qv = sum(n[1] for n in nodes)
        qvb = sum(n[2] for n in nodes)
        if partial is not None:
            _, p_ohlc, p_qv, p_qvb = partial
            ohlcs.append(p_ohlc)
            qv, qvb = qv + p_qv, qvb + p_qvb
        volume, buy_volume = self.volumes(g0, g1)
        return Summary(
            start_ms, end_ms, ohlcs[0][0], max(o[1] for o in ohlcs), min(o[2] for o in ohlcs),
            ohlcs[-1][3], volume, qv, buy_volume, qvb, g1 - g0, g0, g1 - 1,
        )

    def _partial(self, minute: int, end_ms: int) -> tuple[int, walk.OHLC, int, int] | None:
        """The first trades of ``minute`` before ``end_ms``: (count, ohlc, qv, qvb) or None."""
        k = self.count_before(minute, end_ms)
        if k == 0:
            return None
        (o, _, _, _), qv_m, qvb_m = self.minute_node(minute)
        high, low = self._prefix_extremes(minute, k)
        g0 = self.first_id(minute)
        n = self.count(minute)
        v, vb = self.volumes(g0, g0 + k)
        v_m, vb_m = self.volumes(g0, g0 + n)
        close = self.trade(minute, k - 1).price
        qvb = qvb_m * vb // vb_m if vb_m else 0
        return k, (o, high, low, close), qv_m * v // v_m, qvb

    def _prefix_extremes(self, minute: int, k: int) -> tuple[int, int]:
        # The live candle asks for ever-longer prefixes of the same minute: extend, don't redo.
        cached_minute, cached_k, high, low = self._prefix
        if cached_minute != minute or cached_k > k:
            cached_k, high, low = 0, 0, 1 << 62
        for t in self.trades(minute, cached_k, k):
            high, low = max(high, t.price), min(low, t.price)
        self._prefix = (minute, k, high, low)
        return high, low

    # -- trades ---------------------------------------------------------------------------

    def _trade_time(self, minute: int, n: int, j: int, trade_id: int) -> int:
        frac = self.draws(walk.TAG_TRADE_TIME, trade_id, trade_id + 1)[0] & 0xFFFF
        return minute * MINUTE_MS + MINUTE_MS * ((j << 16) + frac) // (n << 16)

    def count_before(self, minute: int, t_ms: int) -> int:
        """How many trades of ``minute`` have ts < t_ms (O(1): trade j lies in the j-th of n
        equal slices of the minute)."""
        offset = t_ms - minute * MINUTE_MS
        if offset <= 0:
            return 0
        plan = self._plan(minute)
        n = plan.n
        if offset >= MINUTE_MS:
            return n
        k = offset * n // MINUTE_MS
        if k < n and self._trade_time(minute, n, k, plan.first_id + k) < t_ms:
            k += 1
        return k

    def trade(self, minute: int, j: int) -> Trade:
        return self.trades(minute, j, j + 1)[0]

    def _plan_minute(self, minute: int) -> _MinutePlan:
        n = self.count(minute)
        pick = walk.draw(self.key, walk.TAG_TRADE_EXTREME, minute)
        i_high = 1 + pick % (n - 2)
        i_low = 1 + (pick >> 20) % (n - 3)
        i_low += i_low >= i_high
        path = walk.TradePath(self.key, minute, self.minute_node(minute)[0], n, (i_high, i_low))
        return _MinutePlan(n, self.first_id(minute), path)

    def trades(self, minute: int, j0: int = 0, j1: int | None = None) -> list[Trade]:
        """Trades j0..j1-1 of ``minute``: first at the open, last at the close, one each at
        the high and the low, the rest scattered around the open→close drift."""
        return self.batch(minute, j0, j1).trades()

    def batch(self, minute: int, j0: int = 0, j1: int | None = None) -> TradeBatch:
        """:meth:`trades` by column. Each column is computed in one pass over the trades."""
        plan = self._plan(minute)
        n = plan.n
        j0, j1 = max(0, j0), n if j1 is None else min(j1, n)
        g0 = plan.first_id
        if j0 >= j1:
            return TradeBatch(g0 + j0, [], [], [], [])
        start_ms, n16 = minute * MINUTE_MS, n << 16
        times = [  # _trade_time of each trade
            start_ms + MINUTE_MS * ((j << 16) + (d & 0xFFFF)) // n16
            for j, d in zip(range(j0, j1), self.draws(walk.TAG_TRADE_TIME, g0 + j0, g0 + j1),
                            strict=True)
        ]
        mean = self.qty_mean
        r = [d % mean for d in self.draws(walk.TAG_QTY, g0 + j0 - SIDE_PERIOD, g0 + j1)]
        qtys = [mean + r_g - r_back for r_g, r_back in zip(r[SIDE_PERIOD:], r, strict=False)]
        sides = self.sides
        phase = (g0 + j0) % SIDE_PERIOD
        periods = (j1 - j0 + phase) // SIDE_PERIOD + 1
        buyer_maker = list((sides * periods)[phase:phase + j1 - j0])
        return TradeBatch(g0 + j0, times, plan.path.prices(j0, j1), qtys, buyer_maker)

    def batch_between(self, start_ms: int, end_ms: int) -> TradeBatch:
        """:meth:`trades_between` (without a limit) by column."""
        minute = start_ms // MINUTE_MS
        out = self.batch(minute, self.count_before(minute, start_ms),
                         self.count_before(minute, end_ms))
        while (minute := minute + 1) * MINUTE_MS < end_ms:
            out = out.extend(self.batch(minute, 0, self.count_before(minute, end_ms)))
        return out

    def draws(self, tag: int, first: int, end: int) -> list[int]:
        """``walk.draw(self.key, tag, g)`` for trade ids g in [first, end). They are made in
        blocks of ids, each in one ``walk.draws`` pass, and kept a little while: the live feed
        asks for a few dozen consecutive ids per tick. A few ids outside the kept blocks (the
        last trade, for the book) are drawn one by one instead."""
        blocks = self._blocks
        if end - first <= _FEW and (tag, first // _BLOCK) not in blocks:
            return [walk.draw(self.key, tag, g) for g in range(first, end)]
        out: list[int] = []
        while first < end:
            b, offset = divmod(first, _BLOCK)
            block = blocks.get((tag, b))
            if block is None:
                block = blocks[tag, b] = walk.draws(self.key, tag, b * _BLOCK, (b + 1) * _BLOCK)
                if len(blocks) > _KEPT_BLOCKS:
                    del blocks[next(iter(blocks))]  # the oldest
            take = min(end - first, _BLOCK - offset)
            out += block[offset:offset + take]
            first += take
        return out

    def trades_between(self, start_ms: int, end_ms: int, limit: int = 1 << 30) -> list[Trade]:
        """Trades with start_ms ≤ ts < end_ms, oldest first, at most ``limit``."""
        out: list[Trade] = []
        minute = start_ms // MINUTE_MS
        while minute * MINUTE_MS < end_ms and len(out) < limit:
            j0 = self.count_before(minute, start_ms)
            j1 = self.count_before(minute, end_ms)
            out.extend(self.trades(minute, j0, min(j1, j0 + limit - len(out))))
            minute += 1
        return out

    def trades_before(self, end_ms: int, limit: int) -> list[Trade]:
        """The ``limit`` most recent trades with ts < end_ms, oldest first."""
        out: list[Trade] = []
        minute = (end_ms - 1) // MINUTE_MS
        while len(out) < limit:
            j1 = self.count_before(minute, end_ms)
            out[:0] = self.trades(minute, max(0, j1 - (limit - len(out))), j1)
            minute -= 1
        return out

    def trades_from_id(self, trade_id: int, limit: int, end_ms: int) -> list[Trade]:
        """Up to ``limit`` trades with id ≥ trade_id and ts < end_ms, oldest first."""
        out: list[Trade] = []
        minute = self.minute_of_id(max(trade_id, self.id_base))
        while len(out) < limit and minute * MINUTE_MS < end_ms:
            j0 = max(0, trade_id - self.first_id(minute))
            j1 = self.count_before(minute, end_ms)
            out.extend(self.trades(minute, j0, min(j1, j0 + limit - len(out))))
            minute += 1
        return out

    def trades_before_id(self, trade_id: int, limit: int) -> list[Trade]:
        """Up to ``limit`` trades with id < trade_id, oldest first."""
        first = max(self.first_id(0), trade_id - limit)
        return self.trades_from_id(first, trade_id - first, 1 << 62)

    def last_price(self, t_ms: int) -> int:
        """Price of the last trade at or before t_ms."""
        minute = t_ms // MINUTE_MS
        k = self.count_before(minute, t_ms + 1)
        return self.trade(minute, k - 1).price if k else self.minute_node(minute)[0][0]

"""A live order book per market, kept around the model's last trade price.

The book is live state, not history: it evolves in steps (one per ``book_interval``), and each
level change takes one update id, as on Binance and Gate. Streams publish *views* of it (the
whole book, or its top N levels) as diffs between what they last published and now, so a view's
U..u range always covers every id since its previous message: a client that applies the diffs
to the REST snapshot (whose id is the book's current id) ends with exactly this book.
"""

from __future__ import annotations

import heapq
import random

Levels = dict[int, int]  # price ticks → quantity units
Diff = list[tuple[int, int]]  # (price, qty); qty 0 removes the level


class Book:
    def __init__(self, seed_key: int, qty_mean: int, first_id: int, depth: int = 200) -> None:
        self._rng = random.Random(seed_key)
        self._qty_mean = qty_mean
        self.depth = depth
        self.bids: Levels = {}
        self.asks: Levels = {}
        self.update_id = first_id

    def _qty(self) -> int:
        return max(1, int(self._qty_mean * self._rng.expovariate(1.0) * 4))

    def _set(self, side: Levels, price: int, qty: int) -> None:
        if qty:
            side[price] = qty
        elif side.pop(price, None) is None:
            return
        self.update_id += 1

    def step(self, price: int) -> None:
        """Move the book to a new last price and churn a few levels near the top."""
        rng = self._rng
        gap = max(1, price // 20_000)  # typical level spacing: about 0.5 bp of price
        for p in [p for p in self.bids if p >= price]:
            self._set(self.bids, p, 0)
        for p in [p for p in self.asks if p <= price]:
            self._set(self.asks, p, 0)
        if not self.bids or max(self.bids) < price - 2 * gap:
            self._set(self.bids, max(1, price - rng.randint(1, gap)), self._qty())
        if not self.asks or min(self.asks) > price + 2 * gap:
            self._set(self.asks, price + rng.randint(1, gap), self._qty())
        for _ in range(rng.randint(1, 4)):
            side, best_first = (self.bids, True) if rng.random() < 0.5 else (self.asks, False)
            near = sorted(side, reverse=best_first)[:20]
            p = rng.choice(near)
            self._set(side, p, 0 if rng.random() < 0.2 and len(side) > 2 else self._qty())
        self._fill(price, gap)

    def _fill(self, price: int, gap: int) -> None:
        rng = self._rng
        while len(self.bids) < self.depth:
            worst = min(self.bids, default=price)
            if worst <= 1:
                break
            self._set(self.bids, max(1, worst - rng.randint(1, 2 * gap)), self._qty())
        while len(self.asks) < self.depth:
            worst = max(self.asks, default=price)
            self._set(self.asks, worst + rng.randint(1, 2 * gap), self._qty())
        while len(self.bids) > self.depth:
            self._set(self.bids, min(self.bids), 0)
        while len(self.asks) > self.depth:
            self._set(self.asks, max(self.asks), 0)

    def top(self, depth: int) -> tuple[Levels, Levels]:
        """The best ``depth`` levels of each side (0: all of them)."""
        if depth <= 0 or depth >= self.depth:
            return dict(self.bids), dict(self.asks)
        bids = {p: self.bids[p] for p in heapq.nlargest(depth, self.bids)}
        asks = {p: self.asks[p] for p in heapq.nsmallest(depth, self.asks)}
        return bids, asks


def sorted_levels(levels: Levels, bids: bool, limit: int = 0) -> list[tuple[int, int]]:
    """Levels best first, at most ``limit`` (0: all)."""
    prices = sorted(levels, reverse=bids)
    if limit > 0:
        prices = prices[:limit]
    return [(p, levels[p]) for p in prices]


def diff(old: Levels, new: Levels, bids: bool) -> Diff:
    """Changes taking ``old`` to ``new``, best price first; removed levels get quantity 0."""
    changes = [(p, q) for p, q in new.items() if old.get(p) != q]
    changes.extend((p, 0) for p in old if p not in new)
    changes.sort(reverse=bids)
    return changes

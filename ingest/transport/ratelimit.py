"""An asyncio token bucket with a bounded, prioritised waiting line.

One class serves three jobs:
- per websocket connection: space outgoing messages (Binance counts our subscribes, pings
  and pongs against 5 messages/s per connection);
- per exchange: at most one new connection per second, shared by every connection;
- per REST host: request *weight* per minute (Binance 6000/min, a depth snapshot costs
  more than a ticker), so a mass reconnect queues its snapshot requests instead of
  bursting into a 429.

Callers wait their turn instead of failing: the lowest ``priority`` goes first, then
first-come first-served. The line is bounded (``max_waiters``); beyond it ``acquire``
raises ``RateLimited`` at once, which is better than an unbounded pile of coroutines.
``penalize(s)`` empties the bucket for ``s`` seconds when the server says we overdid it.
The clock and sleep are injectable so tests check spacing without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ingest.errors import RateLimited

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
_EPSILON_S = 1e-9  # float slack: a wait this short is no wait


@dataclass(eq=False)
class _Waiter:
    cost: float
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        name: str = "",
        max_waiters: int = 1024,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate_per_s and burst must be positive")
        self.name = name
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_waiters = max_waiters
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._updated = clock()
        self._line: list[tuple[int, int, _Waiter]] = []
        self._seq = itertools.count()
        self.granted = 0
        self.rejected = 0
        self.waited = 0  # grants that had to wait for tokens

    @classmethod
    def per_window(
        cls, limit: float, window_s: float, *, burst_fraction: float = 0.25, **kwargs: object
    ) -> RateLimiter:
        """A bucket that never exceeds ``limit`` in any window of ``window_s``.

        A bucket of size B refilled at r allows B + r*W in a window W, so the limit is split
        between burst and refill (``burst_fraction`` of it may go at once).
        """
        if not 0 < burst_fraction < 1:
            raise ValueError("burst_fraction must be between 0 and 1")
        burst = limit * burst_fraction
        rate = limit * (1 - burst_fraction) / window_s
        return cls(rate, burst, **kwargs)  # type: ignore[arg-type]

    @property
    def queued(self) -> int:
        return len(self._line)

    def available(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
            self._updated = now

    def delay_for(self, cost: float) -> float:
        """Seconds until ``cost`` tokens are available (0 when they are now)."""
        self._refill()
        missing = cost - self._tokens
        return 0.0 if missing <= _EPSILON_S * self.rate_per_s else missing / self.rate_per_s

    def try_acquire(self, cost: float = 1.0) -> bool:
        """Take ``cost`` now if nobody is waiting and the tokens are there."""
        if self._line or self.delay_for(cost) > 0:
            return False
        self._tokens -= cost
        self.granted += 1
        return True

    def penalize(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a 429/418 Retry-After from the server)."""
        self._refill()
        self._tokens = min(self._tokens, -seconds * self.rate_per_s)
        if self._line:
            self._line[0][2].wake.set()

    async def acquire(self, cost: float = 1.0, *, priority: int = 0) -> None:
        """Wait for ``cost`` tokens; lower ``priority`` is served first."""
        if cost > self.burst:
            raise ValueError(f"cost {cost} exceeds the bucket size {self.burst}")
        if self.try_acquire(cost):
            return
        if len(self._line) >= self.max_waiters:
            self.rejected += 1
            raise RateLimited(
                f"rate limiter {self.name!r}: {len(self._line)} requests already waiting"
            )
        waiter = _Waiter(cost)
        entry = (priority, next(self._seq), waiter)
        heapq.heappush(self._line, entry)
        try:
            await self._wait_turn(waiter)
        finally:
            self._leave(entry)

    async def _wait_turn(self, waiter: _Waiter) -> None:
        while True:
            if self._line[0][2] is waiter:
                delay = self.delay_for(waiter.cost)
                if delay <= 0:
                    self._tokens -= waiter.cost
                    self.granted += 1
                    self.waited += 1
                    return
                # Sleep the deficit; a higher-priority arrival may take the head meanwhile,
                # which is checked again on waking.
                await self._sleep(delay)
            else:
                waiter.wake.clear()
                await waiter.wake.wait()

    def _leave(self, entry: tuple[int, int, _Waiter]) -> None:
        # Granted or cancelled: either way the next in line must re-check its turn.
        if self._line and self._line[0] is entry:
            heapq.heappop(self._line)
        else:
            with contextlib.suppress(ValueError):
                self._line.remove(entry)
            heapq.heapify(self._line)
        if self._line:
            self._line[0][2].wake.set()

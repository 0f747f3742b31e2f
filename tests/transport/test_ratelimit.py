"""Token bucket spacing, priority, penalties and bounds, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from ingest.errors import RateLimited
from ingest.transport.ratelimit import RateLimiter
from tests.transport.conftest import FakeClock


def limiter(clock: FakeClock, rate: float, burst: float, **kw: object) -> RateLimiter:
    return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


async def test_burst_then_one_token_per_interval() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate=5, burst=2)
    times = []
    for _ in range(6):
        await rl.acquire()
        times.append(round(clock() - 1000.0, 6))
    assert times == [0.0, 0.0, 0.2, 0.4, 0.6, 0.8]
    assert rl.granted == 6 and rl.waited == 4


async def test_request_weight_is_charged() -> None:
    clock = FakeClock()
    rl = RateLimiter.per_window(6000, 60.0, clock=clock, sleep=clock.sleep)  # Binance
    assert rl.burst == 1500 and rl.rate_per_s == 75
    for _ in range(30):
        await rl.acquire(50)  # depth limit=1000 costs 50: the burst covers 30 of them
    assert clock() == 1000.0
    await rl.acquire(50)
    assert clock() == pytest.approx(1000.0 + 50 / 75)


async def test_concurrent_waiters_are_served_in_order_without_a_burst() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate=2, burst=1)
    served: list[tuple[int, float]] = []

    async def snapshot(i: int) -> None:
        await rl.acquire()
        served.append((i, clock() - 1000.0))

    await asyncio.gather(*(snapshot(i) for i in range(5)))
    assert served == [(0, 0.0), (1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0)]


async def test_lower_priority_value_goes_first() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate=1, burst=1)
    await rl.acquire()  # empty the bucket so everyone queues
    order: list[str] = []

    async def req(name: str, priority: int) -> None:
        await rl.acquire(priority=priority)
        order.append(name)

    tasks = [asyncio.create_task(req(f"backfill{i}", 10)) for i in range(3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(req("resync", 0)))
    await asyncio.gather(*tasks)
    # The first backfill was already at the head and sleeping for its token; the resync
    # then overtakes everything still waiting.
    assert order == ["backfill0", "resync", "backfill1", "backfill2"]


async def test_penalize_holds_everyone_for_retry_after() -> None:
    clock = FakeClock()
    rl = limiter(clock, rate=10, burst=10)
    rl.penalize(30.0)
    await rl.acquire()
    assert clock() - 1000.0 == pytest.approx(30.1)


async def test_line_is_bounded() -> None:
    clock = FakeClock()
    rl = RateLimiter(1, 1, clock=clock, max_waiters=2)  # real sleep: they stay queued
    await rl.acquire()
    waiting = [asyncio.create_task(rl.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(RateLimited):
        await rl.acquire()
    assert rl.rejected == 1
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert rl.queued == 0


async def test_cancelled_waiter_does_not_block_the_line() -> None:
    clock = FakeClock()
    gate = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()
        clock.advance(seconds)

    rl = RateLimiter(1, 1, clock=clock, sleep=slow_sleep)
    await rl.acquire()
    head = asyncio.create_task(rl.acquire())
    second = asyncio.create_task(rl.acquire())
    await asyncio.sleep(0)
    head.cancel()
    await asyncio.gather(head, return_exceptions=True)
    gate.set()
    await asyncio.wait_for(second, 1)
    assert rl.queued == 0


async def test_cost_above_burst_is_a_bug() -> None:
    rl = RateLimiter(1, 5)
    with pytest.raises(ValueError):
        await rl.acquire(6)

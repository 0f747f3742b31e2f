"""The backoff rule from a table, and the stateful helper's reset rule."""

from __future__ import annotations

import pytest

from ingest.transport.backoff import Backoff, BackoffPolicy, backoff_ceiling, backoff_delay
from tests.transport.conftest import FakeClock


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (0, 0.0, 0.1),  # the floor: never a zero-delay retry
        (0, 1.0, 1.0),  # attempt 0: up to base
        (0, 0.5, 0.55),
        (1, 1.0, 2.0),
        (2, 1.0, 4.0),
        (3, 0.5, 4.05),
        (4, 1.0, 16.0),
        (5, 1.0, 30.0),  # capped
        (6, 0.0, 0.1),  # full jitter: even late attempts may retry soon
        (10_000, 1.0, 30.0),  # no float overflow after a long outage
        (-1, 1.0, 1.0),
    ],
)
def test_backoff_delay_table(attempt: int, rand: float, expected: float) -> None:
    delay = backoff_delay(attempt, rand, base_s=1.0, cap_s=30.0, min_s=0.1)
    assert delay == pytest.approx(expected)


def test_delay_stays_within_floor_and_ceiling() -> None:
    for attempt in range(12):
        ceiling = backoff_ceiling(attempt, base_s=0.5, cap_s=60.0)
        for rand in (0.0, 0.25, 0.999, 1.0):
            delay = backoff_delay(attempt, rand, base_s=0.5, cap_s=60.0, min_s=0.2)
            assert 0.2 <= delay <= ceiling <= 60.0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0, 1.5)
    with pytest.raises(ValueError):
        BackoffPolicy(base_s=10, cap_s=5)


def test_attempts_grow_and_reset_only_after_a_stable_connection() -> None:
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(base_s=1, cap_s=8, min_s=0, stable_after_s=60),
                      rand=lambda: 1.0, clock=clock)
    assert [backoff.next_delay() for _ in range(5)] == [1, 2, 4, 8, 8]
    backoff.connected()
    clock.advance(59)  # dropped before it was stable: keep climbing
    backoff.disconnected()
    assert backoff.next_delay() == 8
    backoff.connected()
    clock.advance(60)
    backoff.disconnected()  # stable long enough: start over
    assert backoff.attempt == 0
    assert backoff.next_delay() == 1
    backoff.disconnected()  # without a connection in between: no reset
    assert backoff.attempt == 1

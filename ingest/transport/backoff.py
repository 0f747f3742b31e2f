"""Capped, fully jittered exponential backoff for reconnects and retries.

``backoff_delay`` is the pure rule (tested from a table); ``Backoff`` is the small stateful
helper a reconnect loop keeps. Full jitter (a uniform draw between a small floor and the
exponential ceiling) spreads a fleet of clients that lost the same server, so they do not
all come back in the same second; the cap bounds the worst wait; the floor stops a
flapping server from ever seeing a zero-delay retry loop.

The attempt counter is reset only when a connection has stayed up for ``stable_after_s``:
a server that accepts and then drops us at once must keep pushing the delay up.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

# Beyond this many doublings every realistic ceiling is already at the cap; clamping also
# keeps ``factor ** attempt`` from overflowing a float after a very long outage.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class BackoffPolicy:
    base_s: float = 1.0
    cap_s: float = 30.0
    factor: float = 2.0
    min_s: float = 0.1
    stable_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_s <= self.base_s <= self.cap_s:
            raise ValueError("backoff needs 0 <= min_s <= base_s <= cap_s")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if self.stable_after_s < 0:
            raise ValueError("stable_after_s must be >= 0")


def backoff_ceiling(attempt: int, *, base_s: float, cap_s: float, factor: float = 2.0) -> float:
    """The largest delay allowed for ``attempt`` (0-based): ``min(cap, base * factor**attempt)``."""
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    return float(min(cap_s, base_s * factor**exponent))


def backoff_delay(
    attempt: int,
    rand: float,
    *,
    base_s: float = 1.0,
    cap_s: float = 30.0,
    factor: float = 2.0,
    min_s: float = 0.1,
) -> float:
    """Full-jitter delay for ``attempt`` given a draw ``rand`` in [0, 1).

    ``min_s + rand * (ceiling - min_s)``, so the result is always within
    ``[min_s, backoff_ceiling(attempt)]``.
    """
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand!r}")
    ceiling = backoff_ceiling(attempt, base_s=base_s, cap_s=cap_s, factor=factor)
    floor = min(min_s, ceiling)
    return floor + rand * (ceiling - floor)


class Backoff:
    """Attempt counting for one reconnect loop.

    Call ``next_delay()`` before each retry, ``connected()`` when a connection is up and
    ``disconnected()`` when it is lost; the latter resets the counter only if the
    connection had been stable for ``policy.stable_after_s``.
    """

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        *,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self.attempt = 0
        self.last_delay_s = 0.0
        self._rand = rand
        self._clock = clock
        self._connected_at: float | None = None

    def next_delay(self) -> float:
        p = self.policy
        delay = backoff_delay(
            self.attempt, self._rand(),
            base_s=p.base_s, cap_s=p.cap_s, factor=p.factor, min_s=p.min_s,
        )
        self.attempt += 1
        self.last_delay_s = delay
        return delay

    def connected(self) -> None:
        self._connected_at = self._clock()

    def disconnected(self) -> None:
        if self._connected_at is not None:
            if self._clock() - self._connected_at >= self.policy.stable_after_s:
                self.attempt = 0
            self._connected_at = None

    def reset(self) -> None:
        self.attempt = 0
        self._connected_at = None

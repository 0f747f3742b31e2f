"""When a job runs next: pure maths on plain numbers, tested from a table (arq style).

Times are seconds on one clock (the runner uses ``time.monotonic``). ``rand`` is a number
in [0, 1) supplied by the caller, so every case is reproducible.

The rules, in order:

1. Success: the next slot is ``last_start + interval`` — anchored at the start, so the
   cadence does not drift by the run's own duration.
2. Overrun (the run ended after its next slot): the missed slots are skipped, not run
   back to back; the next run is the first slot on the grid at or after ``last_end``. One
   job never overlaps itself, and a slow source is not hammered to catch up.
3. Failure: retry sooner than a full interval, with a doubling back-off from
   ``retry_base_s`` after the end of the failed run, capped at the interval (a failing
   source is never polled more often than a healthy one would be, after the first retries).
4. Jitter: ``rand * jitter`` is added, only ever later (never earlier than the slot, so a
   rate limit or Retry-After is not undercut). Jitter is capped at half the interval so
   it cannot swallow a period.
5. ``not_before`` (a Retry-After deadline) pushes the result past it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_BASE_S = 60.0
MAX_RETRY_AFTER_S = 86_400.0  # a longer Retry-After is taken as a day, not as "never"


def next_run(
    last_start: float,
    last_end: float,
    interval_s: float,
    jitter_s: float,
    rand: float,
    *,
    failures: int = 0,
    not_before: float | None = None,
    retry_base_s: float = RETRY_BASE_S,
) -> float:
    """The time of the next run after one that ran from ``last_start`` to ``last_end``.

    ``failures`` counts consecutive failed runs including the last one (0 after a success).
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    if failures > 0:
        # 2**failures overflows a float long before it matters: cap the exponent.
        backoff_s = retry_base_s * 2.0 ** min(failures - 1, 30)
        at = last_end + min(interval_s, backoff_s)
    else:
        at = last_start + interval_s
        if last_end > at:
            at += math.ceil((last_end - at) / interval_s) * interval_s
    at += min(max(jitter_s, 0.0), interval_s / 2) * min(max(rand, 0.0), 1.0)
    if not_before is not None and not_before > at:
        at = not_before
    return at


def parse_retry_after(value: str | None, now_wall_s: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT by definition
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now_wall_s
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def utc_iso(ts_s: float | None) -> str | None:
    """Wall-clock unix seconds → ISO-8601 UTC text for stats; None stays None."""
    return None if ts_s is None else datetime.fromtimestamp(ts_s, tz=UTC).isoformat()

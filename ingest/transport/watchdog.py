"""Per-stream staleness: which subscribed streams have gone quiet for too long.

A quiet symbol is not a dead connection: an illiquid pair can go minutes without a trade
while its neighbours on the same socket stream happily. So staleness is tracked per stream
key (the connector's own name for a subscription, e.g. ``btcusdt@trade``), and the
connector decides what a quiet stream means (resubscribe it, or reconnect). Whole-
connection silence is the websocket client's job, not this class's.

A stream that stays quiet is reported again after a period that doubles each time (up
to ``MAX_BACKOFF`` periods), and the count starts over when it speaks: an illiquid pair is
not resubscribed every minute for hours.

Pure bookkeeping with an explicit ``now``: the caller owns the clock, so tests drive it.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BACKOFF = 32  # a stream quiet for hours is reported every 32 periods (32 min at 60 s)


@dataclass
class _Stream:
    last_seen: float  # the last message (or when watching started)
    next_due: float  # when to report it next if it stays quiet
    stale_after_s: float
    fired: int = 0


class StreamWatchdog:
    def __init__(self, stale_after_s: float) -> None:
        if stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
        self.stale_after_s = stale_after_s
        self._streams: dict[str, _Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, key: object) -> bool:
        return key in self._streams

    def keys(self) -> list[str]:
        return list(self._streams)

    def watch(self, key: str, now: float, stale_after_s: float | None = None) -> None:
        """Expect messages on ``key`` (a stream that never speaks is stale too)."""
        limit = stale_after_s if stale_after_s is not None else self.stale_after_s
        if limit <= 0:
            raise ValueError("stale_after_s must be positive")
        self._streams[key] = _Stream(now, now + limit, limit)

    def unwatch(self, key: str) -> None:
        self._streams.pop(key, None)

    def mark(self, key: str, now: float) -> None:
        """A message arrived on ``key``; unknown keys start being watched."""
        stream = self._streams.get(key)
        if stream is None:
            self._streams[key] = _Stream(now, now + self.stale_after_s, self.stale_after_s)
        else:
            stream.last_seen = now
            stream.next_due = now + stream.stale_after_s
            stream.fired = 0

    def rearm(self, now: float) -> None:
        """A new socket: every stream gets one fresh period (its backoff starts over)
        without forgetting when it last spoke."""
        for stream in self._streams.values():
            stream.next_due = now + stream.stale_after_s
            stream.fired = 0

    def quiet_for(self, key: str, now: float) -> float:
        return now - self._streams[key].last_seen

    def due(self, now: float) -> list[tuple[str, float]]:
        """Streams quiet past their limit, as ``(key, quiet_s)``.

        A reported stream is reported again after 1, 2, 4 … ``MAX_BACKOFF`` more periods
        while it stays quiet, not on every check.
        """
        out: list[tuple[str, float]] = []
        for key, stream in self._streams.items():
            if now >= stream.next_due:
                stream.fired += 1
                periods = min(MAX_BACKOFF, 1 << min(stream.fired - 1, 30))
                stream.next_due = now + stream.stale_after_s * periods
                out.append((key, now - stream.last_seen))
        return out

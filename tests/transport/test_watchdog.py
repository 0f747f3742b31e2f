"""Per-stream staleness bookkeeping, driven by an explicit clock."""

from __future__ import annotations

import itertools

import pytest

from ingest.transport.watchdog import StreamWatchdog


def test_quiet_stream_reported_active_stream_not() -> None:
    wd = StreamWatchdog(stale_after_s=10)
    wd.watch("btcusdt@trade", now=0)
    wd.watch("illiquid@trade", now=0)
    for t in range(1, 12):
        wd.mark("btcusdt@trade", now=t)
    assert wd.due(now=9.9) == []
    assert wd.due(now=11) == [("illiquid@trade", 11)]
    assert wd.due(now=12) == []  # once per period, not on every check
    assert wd.due(now=21) == [("btcusdt@trade", 10), ("illiquid@trade", 21)]


def test_mark_revives_and_unknown_keys_are_watched() -> None:
    wd = StreamWatchdog(stale_after_s=5)
    wd.mark("new", now=100)
    assert "new" in wd and len(wd) == 1
    assert wd.due(now=104) == []
    assert wd.due(now=105) == [("new", 5)]
    wd.mark("new", now=106)
    assert wd.due(now=110) == []
    assert wd.quiet_for("new", now=110) == 4


def test_rearm_gives_grace_but_keeps_last_seen() -> None:
    wd = StreamWatchdog(stale_after_s=10)
    wd.watch("a", now=0)
    wd.rearm(now=8)  # a reconnect at t=8
    assert wd.due(now=12) == []
    assert wd.due(now=18) == [("a", 18)]


def test_per_stream_limit_and_unwatch() -> None:
    wd = StreamWatchdog(stale_after_s=60)
    wd.watch("kline_1m", now=0, stale_after_s=5)
    wd.watch("trades", now=0)
    assert wd.due(now=6) == [("kline_1m", 6)]
    wd.unwatch("kline_1m")
    assert wd.keys() == ["trades"]
    with pytest.raises(ValueError):
        StreamWatchdog(0)


def test_a_stream_that_stays_quiet_is_reported_less_and_less_often() -> None:
    wd = StreamWatchdog(stale_after_s=10)
    wd.watch("illiquid@kline_1m", now=0)
    reported = [t for t in range(0, 2000) if wd.due(now=t)]
    # 1, 1, 2, 4, 8, 16, 32, 32 … periods apart
    assert reported[:8] == [10, 20, 40, 80, 160, 320, 640, 960]
    assert all(b - a == 320 for a, b in itertools.pairwise(reported[6:]))
    wd.mark("illiquid@kline_1m", now=2000)  # it spoke: back to one period
    assert wd.due(now=2009) == []
    assert wd.due(now=2010) == [("illiquid@kline_1m", 10)]
    assert wd.due(now=2019) == []
    assert wd.due(now=2020) == [("illiquid@kline_1m", 20)]


def test_rearm_after_a_reconnect_starts_the_backoff_over() -> None:
    wd = StreamWatchdog(stale_after_s=10)
    wd.watch("quiet", now=0)
    for t in (10, 20, 40, 80):  # backed off: the next report would be at 160
        assert wd.due(now=t) == [("quiet", t)]
    wd.rearm(now=85)  # a new socket
    assert wd.due(now=94) == []
    assert wd.due(now=95) == [("quiet", 95)]

"""Per-stream staleness bookkeeping, driven by an explicit clock."""

from __future__ import annotations

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

"""BookKeeper: resync only the gapped symbol, dedupe, retries, rotation overlap, grid."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from ingest.books import Outcome
from ingest.exchanges.bookkeeper import BookKeeper, SnapshotGrid, grid_floor, next_grid_s
from ingest.records import BookDelta
from tests.connectors.books_helpers import Src, delta, image

BIDS = (("100", "1"), ("99", "2"), ("98", "3"))
ASKS = (("101", "1"), ("102", "2"), ("103", "3"))


class FakeRest:
    def __init__(self, images: dict[str, list[BookDelta | Exception | None]]) -> None:
        self.images = images
        self.calls: list[str] = []

    async def __call__(self, symbol: str) -> BookDelta | None:
        self.calls.append(symbol)
        item = self.images[symbol].pop(0)
        if isinstance(item, Exception):
            raise item
        return item


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def drain(keeper: BookKeeper) -> None:
    """Run the workers until the queue is idle (no tick: retries are driven by hand)."""
    task = asyncio.create_task(keeper._worker())
    for _ in range(20):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_snapshot_grid_takes_each_point_once() -> None:
    grid = SnapshotGrid(0.5)
    t0 = 1_700_000_000.0
    at = lambda s: datetime.fromtimestamp(s, UTC)  # noqa: E731
    assert grid.take(t0 + 0.000_02) == at(t0)
    # Woke 15 µs early for the next point (wall clock slewed against the sleep clock):
    # the previous point again, which must not be snapshotted twice.
    assert grid.take(t0 + 0.499_985) is None
    assert grid.take(t0 + 0.500_001) == at(t0 + 0.5)
    assert grid.take(t0 + 1.7) == at(t0 + 1.5)  # a late wake skips a point, never repeats
    assert grid.take(t0 + 1.9) is None
    assert grid.take(t0 - 3600) == at(t0 - 3600)  # stepped back an hour: carry on from there


def test_grid_floor_and_next() -> None:
    assert grid_floor(1_700_000_012.345, 10.0) == datetime.fromtimestamp(1_700_000_010, UTC)
    assert grid_floor(1_700_000_012.345, 0.1) == datetime(2023, 11, 14, 22, 13, 32, 300000,
                                                         tzinfo=UTC)
    # Two replicas a few ms apart in the same interval agree on the key.
    assert grid_floor(1_700_000_019.999, 10.0) == grid_floor(1_700_000_010.0, 10.0)
    assert next_grid_s(1_700_000_012.5, 10.0) == pytest.approx(7.5)
    assert next_grid_s(1_700_000_010.0, 10.0) == pytest.approx(10.0)


async def test_buffered_deltas_then_snapshot_then_gap_resyncs_only_that_symbol() -> None:
    rest = FakeRest({
        "BTCUSDT": [image("BTCUSDT", 10, BIDS, ASKS)],
        "ETHUSDT": [image("ETHUSDT", 50, BIDS, ASKS), image("ETHUSDT", 60, BIDS, ASKS)],
    })
    k = BookKeeper("binance", ["BTCUSDT", "ETHUSDT"], depth=2, resync=rest)
    assert k.on_delta(delta("BTCUSDT", 9, 11, bids=(("100", "5"),))) is Outcome.BUFFERED
    assert k.on_delta(delta("ETHUSDT", 49, 51)) is Outcome.BUFFERED
    assert k.on_delta(delta("BTCUSDT", 12, 12)) is Outcome.BUFFERED  # no second request
    assert k.request("BTCUSDT", "stale stream") is False  # deduped while pending
    assert k.stats.resyncs_requested == 2 and k.stats.resyncs_deduped == 1
    await drain(k)
    assert sorted(rest.calls) == ["BTCUSDT", "ETHUSDT"]
    btc = k.books["BTCUSDT"]
    assert btc.synced and btc.last_id == 12
    assert btc.top(1) == ((("100", "5"),), (("101", "1"),))
    with capture_logs() as logs:
        assert k.on_delta(delta("ETHUSDT", 53, 54)) is Outcome.GAP  # 52 never came
    assert any(
        e["event"] == "resyncing book after a sequence gap" and e.get("symbol") == "ETHUSDT"
        and e["log_level"] == "warning" for e in logs
    )
    assert not k.books["ETHUSDT"].synced and btc.synced
    assert k.on_delta(delta("BTCUSDT", 13, 13)) is Outcome.APPLIED  # BTC carries on
    await drain(k)
    assert rest.calls.count("ETHUSDT") == 2 and rest.calls.count("BTCUSDT") == 1
    assert k.as_dict()["books"]["ETHUSDT"]["gaps"] == 1
    assert k.as_dict()["books"]["BTCUSDT"]["gaps"] == 0


async def test_snapshot_older_than_buffer_is_refetched_after_backoff() -> None:
    clock = Clock()
    rest = FakeRest({"BTCUSDT": [image("BTCUSDT", 5, BIDS, ASKS), image("BTCUSDT", 20, BIDS,
                                                                            ASKS)]})
    k = BookKeeper("binance", ["BTCUSDT"], depth=3, resync=rest, clock=clock, retry_base_s=1.0)
    k.on_delta(delta("BTCUSDT", 10, 12))  # first U=10, snapshot at 5: a hole 6..9
    await drain(k)
    assert not k.books["BTCUSDT"].synced and rest.calls == ["BTCUSDT"]
    k.on_delta(delta("BTCUSDT", 13, 21))
    k.tick(clock.now + 0.5)
    await drain(k)
    assert rest.calls == ["BTCUSDT"]  # backing off, not hammering
    k.tick(clock.now + 1.0)
    await drain(k)
    assert rest.calls == ["BTCUSDT", "BTCUSDT"]
    assert k.books["BTCUSDT"].synced and k.books["BTCUSDT"].last_id == 21


async def test_failed_fetch_retries_and_image_on_stream_times_out() -> None:
    clock = Clock()
    rest = FakeRest({"BTCUSDT": [RuntimeError("boom"), None, None]})
    k = BookKeeper("huobi", ["BTCUSDT"], depth=3, resync=rest, clock=clock, wait_image_s=5.0)
    k.on_delta(delta("BTCUSDT", 11, 11, exchange="huobi", prev=10))
    await drain(k)
    assert k.stats.resync_failures == 1
    k.tick(clock.now + 0.5)
    await drain(k)
    assert len(rest.calls) == 2  # req sent; the image comes on the stream
    k.tick(clock.now + 4.0)
    await drain(k)
    assert len(rest.calls) == 2
    k.tick(clock.now + 6.0)  # never came: req again
    await drain(k)
    assert len(rest.calls) == 3 and k.stats.resync_timeouts == 1
    # The rep arrives: aligned with the buffered increment whose prevSeqNum equals it.
    out = k.on_delta(image("BTCUSDT", 10, BIDS, ASKS, exchange="huobi"))
    assert out is Outcome.APPLIED and k.books["BTCUSDT"].last_id == 11
    assert k.pending() == {}


def test_rotation_overlap_parks_deltas_ahead_of_the_followed_socket() -> None:
    old, new = Src("old"), Src("new")
    k = BookKeeper("binance", ["BTCUSDT"], depth=3, resync=FakeRest({}))
    k.on_delta(image("BTCUSDT", 100, BIDS, ASKS))
    assert k.on_delta(delta("BTCUSDT", 101, 102), old) is Outcome.APPLIED
    # The new socket is ahead: 105..106 before the old socket delivered 103..104.
    assert k.on_delta(delta("BTCUSDT", 105, 106, asks=(("101", "9"),)), new) is None
    assert k.books["BTCUSDT"].synced and k.stats.gaps == 0
    assert k.on_delta(delta("BTCUSDT", 103, 104), old) is Outcome.APPLIED
    assert k.books["BTCUSDT"].last_id == 106  # the parked one followed
    assert k.on_delta(delta("BTCUSDT", 105, 106), old) is Outcome.STALE  # the overlap
    assert k.on_delta(delta("BTCUSDT", 103, 104), new) is Outcome.STALE
    assert k.books["BTCUSDT"].top(1)[1] == (("101", "9"),)
    assert k.stats.gaps == 0


def test_parked_hole_becomes_a_gap_once_the_followed_socket_closes() -> None:
    old, new = Src("old"), Src("new")
    k = BookKeeper("binance", ["BTCUSDT"], depth=3, resync=FakeRest({}))
    k.on_delta(image("BTCUSDT", 100, BIDS, ASKS))
    k.on_delta(delta("BTCUSDT", 101, 101), old)
    assert k.on_delta(delta("BTCUSDT", 110, 111), new) is None
    old.closed = True
    k.tick()
    assert k.stats.gaps == 1 and not k.books["BTCUSDT"].synced
    assert "BTCUSDT" in k.pending()


def test_snapshots_top_n_synced_only_once_per_grid_point() -> None:
    k = BookKeeper("binance", ["BTCUSDT", "ETHUSDT"], depth=2, resync=FakeRest({}))
    k.on_delta(image("BTCUSDT", 7, BIDS, ASKS))
    ts = grid_floor(1_700_000_012.0, 1.0)
    (snap,) = k.snapshots(ts, 1_700_000_012.0)
    assert (snap.symbol, snap.timestamp, snap.last_update_id) == ("BTCUSDT", ts, 7)
    assert snap.bids == (("100", "1"), ("99", "2")) and snap.asks == (("101", "1"), ("102", "2"))
    assert k.snapshots(ts) == []  # the same grid point again
    assert k.stats.snapshots_unsynced == 2


def test_books_whose_socket_is_down_are_dropped_not_written_from_memory() -> None:
    k = BookKeeper("binance", ["BTCUSDT", "ETHUSDT"], depth=2, resync=FakeRest({}))
    k.on_delta(image("BTCUSDT", 7, BIDS, ASKS))
    k.on_delta(image("ETHUSDT", 9, BIDS, ASKS))
    with capture_logs() as logs:
        snaps = k.snapshots(grid_floor(1_700_000_012.0, 1.0), live={"ETHUSDT"})
    assert [s.symbol for s in snaps] == ["ETHUSDT"]
    assert not k.books["BTCUSDT"].synced  # it resyncs from its next delta
    assert k.books["ETHUSDT"].synced
    assert k.stats.books_dropped == 1
    assert k.as_dict()["books"]["BTCUSDT"]["dropped"] == 1
    assert [e["event"] for e in logs] == ["books dropped until they resync"]
    # Still down at the next grid point: nothing more to drop, nothing written.
    assert k.snapshots(grid_floor(1_700_000_013.0, 1.0), live={"ETHUSDT"})[0].symbol == "ETHUSDT"
    assert k.stats.books_dropped == 1
    # Back: the first delta buffers and asks for a snapshot, as at startup.
    assert k.on_delta(delta("BTCUSDT", 20, 21, bids=(("100", "5"),))) is Outcome.BUFFERED
    assert k.pending() == {"BTCUSDT": "queued: initial sync"}

"""LocalBook: replays of the real captures, each exchange's sequence rules, and a
state-machine test against a naive model of the exchange's true book."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ingest.books import BookNotSynced, LocalBook, Outcome
from ingest.exchanges.binance import parse as binance
from ingest.exchanges.gateio import parse as gate
from ingest.exchanges.huobi import parse as huobi
from ingest.records import BookDelta, BookSnapshot, Level

from .exchanges.samples import Entry, capture, fixture, received

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def delta(
    first: int, last: int, bids: tuple[Level, ...] = (), asks: tuple[Level, ...] = (),
    *, full: bool = False, prev: int | None = None, exchange: str = "binance",
) -> BookDelta:
    return BookDelta(
        exchange=exchange, symbol="BTCUSDT", timestamp=T0, bids=bids, asks=asks,
        first_id=first, last_id=last, full=full, prev_id=prev,
    )


def image(seq: int, bids: tuple[Level, ...] = (), asks: tuple[Level, ...] = (),
          exchange: str = "binance") -> BookDelta:
    return delta(seq, seq, bids, asks, full=True, exchange=exchange)


# -- replays of the 2021 captures -----------------------------------------------------------


def _merged(ws: str, http: str) -> list[Entry]:
    entries = received(ws) + [e for e in capture(http) if e.kind == "rest"]
    return sorted(entries, key=lambda e: e.ts or 0.0)


def test_binance_capture_replay_matches_book_ticker() -> None:
    """REST snapshots + depth@100ms through LocalBook: no gap, and every bookTicker whose
    update id equals the book's id shows exactly the book's best bid and ask."""
    tickers: dict[tuple[str, int], tuple[Level, Level]] = {}
    for entry in received("BINANCE.ws.1.0"):
        if b"@bookTicker" in entry.data:  # real-time, so it may arrive before the depth batch
            t = json.loads(entry.data)["data"]
            tickers[(t["s"], t["u"])] = ((t["b"], t["B"]), (t["a"], t["A"]))
    books: dict[str, LocalBook] = {}
    outcomes: list[Outcome] = []
    matched = 0
    for entry in _merged("BINANCE.ws.1.0", "BINANCE.http.0.0"):
        if entry.kind == "rest":
            m = re.search(r"symbol=(\w+)", entry.url or "")
            assert m
            item = binance.parse_depth_snapshot(entry.data, m.group(1), entry.ts or 0.0)
        elif b"@depth" in entry.data:
            [parsed] = binance.parse(entry.data, entry.ts or 0.0)
            assert isinstance(parsed, BookDelta)
            item = parsed
        else:
            continue
        book = books.setdefault(item.symbol, LocalBook("binance", item.symbol))
        outcomes.append(book.apply(item))
        key = (item.symbol, book.last_id or 0)
        if key in tickers:
            bids, asks = book.top(1)
            assert (bids[0], asks[0]) == tickers[key]
            matched += 1
    assert Outcome.GAP not in outcomes
    assert outcomes.count(Outcome.BUFFERED) == 4  # one per symbol before its snapshot
    assert matched >= 20
    nkn = books["NKNUSDT"]
    assert nkn.synced and nkn.last_id == 499870179 and nkn.buffered == 0
    assert nkn.top(2) == (  # checked against a plain-dict replay of the same frames
        (("0.35270000", "9602.00000000"), ("0.35260000", "2829.00000000")),
        (("0.35310000", "152.00000000"), ("0.35320000", "949.00000000")),
    )
    assert books["RUNEEUR"].top(1) == ((("6.25100000", "69.30000000"),),
                                       (("6.26900000", "69.30000000"),))


def test_gate_capture_replay() -> None:
    books: dict[str, LocalBook] = {}
    outcomes: dict[str, list[Outcome]] = {}
    for entry in _merged("GATEIO.ws.1.0", "GATEIO.http.0.0"):
        if entry.kind == "rest":
            m = re.search(r"currency_pair=(\w+)", entry.url or "")
            assert m
            item = gate.parse_order_book(entry.data, m.group(1), entry.ts or 0.0)
        else:
            if b'"spot.order_book_update","event":"update"' not in entry.data:
                continue
            [parsed] = gate.parse(entry.data, entry.ts or 0.0)
            assert isinstance(parsed, BookDelta)
            item = parsed
        book = books.setdefault(item.symbol, LocalBook("gateio", item.symbol))
        outcomes.setdefault(item.symbol, []).append(book.apply(item))
    assert len(books) == 10
    assert all(Outcome.GAP not in seq for seq in outcomes.values())
    # NEO_BTC: 31244061 buffered; the REST image (id 31244065) lands before the frames
    # 31244062..64 and 31244065, which are then stale; 31244066 applies on top.
    assert outcomes["NEOBTC"][:5] == [
        Outcome.BUFFERED, Outcome.APPLIED, Outcome.STALE, Outcome.STALE, Outcome.APPLIED,
    ]
    neo = books["NEOBTC"]
    assert neo.last_id == 31244121
    assert neo.top(1) == ((("0.0018659", "0.5"),), (("0.001873", "5.24738"),))
    hai = books["HAIETH"]
    assert hai.last_id == 2691456
    assert hai.top(1) == ((("0.00010324", "5997.415"),), (("0.00010397", "5885.172"),))


def test_huobi_capture_depth_images_by_version() -> None:
    books: dict[str, LocalBook] = {}
    last: dict[str, BookDelta] = {}
    for entry in received("HUOBI.ws.44.0"):
        for item in huobi.parse(huobi.decompress(entry.data, 1 << 20), entry.ts or 0.0):
            if isinstance(item, BookDelta):
                book = books.setdefault(item.symbol, LocalBook("huobi", item.symbol))
                assert book.apply(item) is Outcome.APPLIED  # versions only go up
                assert book.apply(item) is Outcome.STALE  # the same version again
                last[item.symbol] = item
    assert len(books) == 10
    for symbol, book in books.items():
        image_ = last[symbol]
        bids, asks = book.top(5)
        assert bids == image_.bids[:5] and asks == image_.asks[:5]
        assert book.last_id == image_.last_id


# -- Binance / Gate U/u rules -------------------------------------------------------------


def test_buffer_then_snapshot_drops_old_and_applies_overlap() -> None:
    book = LocalBook("binance", "BTCUSDT")
    assert book.apply(delta(90, 95, bids=(("1", "1"),))) is Outcome.BUFFERED
    assert book.apply(delta(96, 102, bids=(("2", "5"),))) is Outcome.BUFFERED
    assert book.apply(delta(103, 104, asks=(("3", "1"),))) is Outcome.BUFFERED
    assert not book.synced
    # Snapshot 100 lies inside the second event [96;102]: that one is applied, the first dropped.
    assert book.apply(image(100, bids=(("1.5", "9"),))) is Outcome.APPLIED
    assert book.synced and book.last_id == 104 and book.buffered == 0
    assert book.top(5) == ((("2", "5"), ("1.5", "9")), (("3", "1"),))


def test_stale_events_are_ignored() -> None:
    book = LocalBook("binance", "BTCUSDT")
    book.apply(image(100, bids=(("1", "1"),)))
    assert book.apply(delta(99, 100, bids=(("1", "0"),))) is Outcome.STALE
    assert book.apply(delta(101, 101, bids=(("1", "2"),))) is Outcome.APPLIED
    assert book.apply(delta(101, 101, bids=(("1", "0"),))) is Outcome.STALE  # duplicate
    assert book.top(1) == ((("1", "2"),), ())
    assert (book.applied, book.stale, book.gaps) == (2, 2, 0)


def test_gap_discards_the_book_and_resync_recovers() -> None:
    book = LocalBook("binance", "BTCUSDT")
    book.apply(image(100, bids=(("1", "1"),)))
    assert book.apply(delta(103, 105, bids=(("2", "1"),))) is Outcome.GAP
    assert not book.synced and book.top(5) == ((), ()) and book.buffered == 1
    assert "100" in book.gap_reason and "103..105" in book.gap_reason
    with pytest.raises(BookNotSynced):
        book.snapshot(5, T0)
    assert book.apply(delta(106, 107, asks=(("9", "1"),))) is Outcome.BUFFERED
    # The resync snapshot covers 104: events 103..105 and 106..107 replay on top.
    assert book.apply(image(104, bids=(("1", "3"),))) is Outcome.APPLIED
    assert book.last_id == 107
    assert book.top(5) == ((("2", "1"), ("1", "3")), (("9", "1"),))


def test_snapshot_older_than_buffered_events_is_a_gap_that_keeps_the_buffer() -> None:
    book = LocalBook("binance", "BTCUSDT")
    book.apply(delta(200, 210, bids=(("5", "1"),)))
    assert book.apply(image(150)) is Outcome.GAP  # Binance: lastUpdateId < first U - 1
    assert not book.synced and book.buffered == 1
    assert book.apply(image(205)) is Outcome.APPLIED
    assert book.last_id == 210 and book.top(1) == ((("5", "1"),), ())


def test_gap_inside_the_buffer_keeps_only_the_usable_tail() -> None:
    book = LocalBook("binance", "BTCUSDT")
    book.apply(delta(10, 11))
    book.apply(delta(15, 16, bids=(("1", "1"),)))  # 12..14 lost before any snapshot
    assert book.buffered == 1
    assert book.apply(image(14)) is Outcome.APPLIED and book.last_id == 16


def test_buffer_overflow_is_a_gap() -> None:
    book = LocalBook("binance", "BTCUSDT", max_buffer=3)
    assert [book.apply(delta(i, i)) for i in range(1, 5)] == [Outcome.BUFFERED] * 3 + [Outcome.GAP]
    assert book.buffered == 1 and "overflow" in book.gap_reason
    assert book.apply(image(3)) is Outcome.APPLIED and book.last_id == 4


def test_levels_zero_removes_and_equal_prices_are_one_level() -> None:
    book = LocalBook("gateio", "BTCUSDT")
    book.apply(image(1, bids=(("10.2", "1"), ("10.1", "2")), exchange="gateio"))
    book.apply(delta(2, 2, bids=(("10.20", "5"),), exchange="gateio"))  # same price, new text
    assert book.top(5)[0] == (("10.20", "5"), ("10.1", "2"))
    book.apply(delta(3, 3, bids=(("10.2000", "0.000"),), exchange="gateio"))
    assert book.top(5)[0] == (("10.1", "2"),)
    book.apply(delta(4, 4, bids=(("10.05", "0"),), exchange="gateio"))  # absent level: no-op
    assert book.depth() == (1, 0)


def test_gate_full_true_replaces_the_book() -> None:
    book = LocalBook("gateio", "BTCUSDT")
    book.apply(image(10, bids=(("1", "1"), ("2", "2")), asks=(("5", "1"),), exchange="gateio"))
    [full] = gate.parse(fixture("gateio_order_book_update_full.json"), 0.0)
    assert isinstance(full, BookDelta) and full.full
    assert book.apply(full) is Outcome.APPLIED
    assert book.last_id == 48776306
    # Only the image's non-zero levels remain; ("19088.37", "0") is not a level.
    assert book.top(10) == ((("19137.74", "0.0001"),), (("19137.75", "0.6135"),))
    assert book.apply(full) is Outcome.STALE  # the same image again


def test_gate_obu_full_then_increments() -> None:
    [full] = gate.parse(fixture("gateio_obu_full.json"), 0.0)
    [inc] = gate.parse(fixture("gateio_obu_update.json"), 0.0)
    assert isinstance(full, BookDelta) and isinstance(inc, BookDelta)
    book = LocalBook("gateio", "BTCUSDT")
    assert book.apply(full) is Outcome.APPLIED
    assert book.apply(inc) is Outcome.APPLIED
    assert book.top(3) == (
        (("104027.1", "509392"), ("104027", "477932"), ("104024.5", "10343")), (),
    )
    later = msgspec.structs.replace(inc, first_id=73777715300, last_id=73777715301)
    assert book.apply(later) is Outcome.GAP  # U != local id + 1



# -- HTX MBP chain --------------------------------------------------------------------------


def test_huobi_req_image_aligns_with_prev_seq_num() -> None:
    book = LocalBook("huobi", "BTCUSDT")
    first = delta(11, 20, bids=(("1", "1"),), prev=10, exchange="huobi")
    second = delta(21, 35, bids=(("2", "1"),), prev=20, exchange="huobi")
    assert book.apply(first) is Outcome.BUFFERED
    assert book.apply(second) is Outcome.BUFFERED
    assert book.apply(image(20, bids=(("1", "7"),), exchange="huobi")) is Outcome.APPLIED
    assert book.last_id == 35 and book.top(5)[0] == (("2", "1"), ("1", "7"))
    assert book.apply(delta(36, 40, prev=35, exchange="huobi")) is Outcome.APPLIED
    assert book.apply(delta(30, 35, prev=29, exchange="huobi")) is Outcome.STALE


def test_huobi_broken_chain_is_a_gap_even_when_ranges_overlap() -> None:
    book = LocalBook("huobi", "BTCUSDT")
    book.apply(image(100, exchange="huobi"))
    # prevSeqNum 98 < 100 < seqNum: U/u would call it an overlap; for MBP it is a gap.
    assert book.apply(delta(99, 105, prev=98, exchange="huobi")) is Outcome.GAP
    assert not book.synced


def test_huobi_req_image_older_than_cache_is_a_gap() -> None:
    book = LocalBook("huobi", "BTCUSDT")
    book.apply(delta(51, 60, prev=50, exchange="huobi"))
    assert book.apply(image(40, exchange="huobi")) is Outcome.GAP
    assert book.apply(image(50, exchange="huobi")) is Outcome.APPLIED and book.last_id == 60


def test_huobi_parsed_mbp_chain() -> None:
    [rep] = huobi.parse(fixture("huobi_mbp_rep.json"), 0.0)
    assert isinstance(rep, BookDelta)
    frame = json.dumps({"ch": "market.btcusdt.mbp.150", "ts": 1698359289300, "tick": {
        "seqNum": 104999417790, "prevSeqNum": 104999417756, "bids": [[9058.3, 1.5]]}}).encode()
    [inc] = huobi.parse(frame, 0.0)
    assert isinstance(inc, BookDelta) and inc.prev_id == 104999417756
    book = LocalBook("huobi", "BTCUSDT")
    assert book.apply(inc) is Outcome.BUFFERED
    assert book.apply(rep) is Outcome.APPLIED
    assert book.last_id == 104999417790
    assert book.top(2) == ((("9058.3", "1.5"),), (("9084.27", "0.2"),))  # 9058.27 had size 0


# -- reading ---------------------------------------------------------------------------------


def test_top_and_snapshot() -> None:
    book = LocalBook("binance", "BTCUSDT")
    book.apply(image(7, bids=(("9.5", "1"), ("10", "2"), ("9.75", "3")),
                     asks=(("11", "1"), ("10.5", "2"))))
    assert book.top(2) == ((("10", "2"), ("9.75", "3")), (("10.5", "2"), ("11", "1")))
    assert book.top(0) == ((), ())
    snap = book.snapshot(1, T0, recv_ts=3.0)
    assert snap == BookSnapshot(
        exchange="binance", symbol="BTCUSDT", timestamp=T0, bids=(("10", "2"),),
        asks=(("10.5", "2"),), last_update_id=7, recv_ts=3.0,
    )


def test_images_become_a_book_only_when_it_is_read() -> None:
    """A feed of full images (HTX depth.step0) pays for the image that is read, not for
    each one: the levels are keyed by Decimal only when a delta or a snapshot needs them."""
    book = LocalBook("huobi", "BTCUSDT")
    first = image(1, bids=(("10", "1"), ("9", "0")), asks=(("11", "1"),), exchange="huobi")
    second = image(2, bids=(("10.5", "2"), ("9.5", "0.0")), asks=(("12", "3"),),
                   exchange="huobi")
    book.apply(first)
    book.apply(second)
    assert book._bids._image is second.bids and book._bids._levels == {}  # not keyed yet
    assert book.top(5) == ((("10.5", "2"),), (("12", "3"),))  # second image, zero dropped
    assert book._bids._image is None and book.depth() == (1, 1)
    book.apply(image(3, bids=(("10", "1"),), asks=(("13", "1"),), exchange="huobi"))
    book.apply(delta(4, 4, bids=(("10.0", "0"), ("8", "4")), exchange="huobi"))
    assert book.top(5) == ((("8", "4"),), (("13", "1"),))


def test_wrong_symbol_is_a_bug() -> None:
    book = LocalBook("binance", "ETHUSDT")
    with pytest.raises(ValueError, match="BTCUSDT"):
        book.apply(image(1))


def test_reset() -> None:
    book = LocalBook("binance", "BTCUSDT")
    book.apply(image(1, bids=(("1", "1"),)))
    book.apply(delta(5, 6))
    book.reset()
    assert not book.synced and book.buffered == 0 and book.depth() == (0, 0)


# -- state machine: LocalBook against the exchange's true book ------------------------------

PRICES = [f"{p}" for p in range(1, 13)] + ["1.0", "2.50", "7.000"]
QTYS = ["0", "0.0", "1", "2.5", "10"]
_levels = st.lists(st.tuples(st.sampled_from(PRICES), st.sampled_from(QTYS)), max_size=4)


class BookMachine(RuleBasedStateMachine):
    """The exchange keeps a true book and a sequence id; updates are delivered, dropped,
    duplicated or replaced by (possibly old) snapshots. Whenever LocalBook says it is
    synced, its levels must equal the true book at its id, sorted naively."""

    @initialize(chain=st.booleans())
    def start(self, chain: bool) -> None:
        self.chain = chain
        self.exchange = "huobi" if chain else "binance"
        self.book = LocalBook(self.exchange, "BTCUSDT", max_buffer=8)
        self.seq = 100
        self.truth: dict[str, dict[Decimal, Level]] = {"bids": {}, "asks": {}}
        self.history: dict[int, dict[str, dict[Decimal, Level]]] = {100: _copy(self.truth)}
        self.pending: list[BookDelta] = []
        self.delivered: list[BookDelta] = []

    @rule(bids=_levels, asks=_levels, step=st.integers(1, 4))
    def exchange_update(self, bids: list[Level], asks: list[Level], step: int) -> None:
        for side, levels in (("bids", bids), ("asks", asks)):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    self.truth[side].pop(Decimal(price), None)
                else:
                    self.truth[side][Decimal(price)] = (price, qty)
        prev, self.seq = self.seq, self.seq + step
        self.history[self.seq] = _copy(self.truth)
        self.pending.append(BookDelta(
            exchange=self.exchange, symbol="BTCUSDT", timestamp=T0, bids=tuple(bids),
            asks=tuple(asks), first_id=prev + 1, last_id=self.seq,
            prev_id=prev if self.chain else None,
        ))

    @precondition(lambda self: self.pending)
    @rule(count=st.integers(1, 3))
    def deliver(self, count: int) -> None:
        for _ in range(min(count, len(self.pending))):
            self._deliver_one(self.pending.pop(0))

    def _deliver_one(self, d: BookDelta) -> None:
        before, was_synced = self.book.last_id, self.book.synced
        outcome = self.book.apply(d)
        self.delivered.append(d)
        if was_synced:
            assert before is not None
            contiguous = d.prev_id == before if self.chain else d.first_id <= before + 1
            if d.last_id <= before:
                assert outcome is Outcome.STALE
            elif contiguous:
                assert outcome is Outcome.APPLIED
            else:
                assert outcome is Outcome.GAP and not self.book.synced
        else:
            assert outcome in (Outcome.BUFFERED, Outcome.STALE, Outcome.GAP)

    @precondition(lambda self: self.pending)
    @rule()
    def lose(self) -> None:
        self.pending.pop(0)

    @precondition(lambda self: self.delivered)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        d = data.draw(st.sampled_from(self.delivered))
        before = self.book.last_id
        outcome = self.book.apply(d)
        if before is not None and d.last_id <= before:
            assert outcome is Outcome.STALE

    @precondition(lambda self: not self.book.synced or self.seq > (self.book.last_id or 0))
    @rule(data=st.data())
    def snapshot(self, data: st.DataObject) -> None:
        # Mostly a fresh image (a REST snapshot or REQ reply), sometimes an old one.
        recent = sorted(self.history)[-3:]
        seq = data.draw(st.sampled_from(recent) | st.sampled_from(sorted(self.history)))
        state = self.history[seq]
        img = BookDelta(
            exchange=self.exchange, symbol="BTCUSDT", timestamp=T0,
            bids=tuple(state["bids"].values()), asks=tuple(state["asks"].values()),
            first_id=seq, last_id=seq, full=True,
        )
        before = self.book.last_id
        outcome = self.book.apply(img)
        if before is not None and seq <= before:
            assert outcome is Outcome.STALE
        else:
            assert outcome in (Outcome.APPLIED, Outcome.GAP)

    @invariant()
    def matches_truth_when_synced(self) -> None:
        if not hasattr(self, "book") or not self.book.synced:
            return
        last = self.book.last_id
        assert last is not None and last in self.history
        state = self.history[last]
        bids = tuple(state["bids"][k] for k in sorted(state["bids"], reverse=True))
        asks = tuple(state["asks"][k] for k in sorted(state["asks"]))
        assert self.book.top(100) == (bids, asks)
        assert self.book.depth() == (len(bids), len(asks))


def _copy(truth: dict[str, dict[Decimal, Level]]) -> dict[str, dict[Decimal, Level]]:
    return {side: dict(levels) for side, levels in truth.items()}


BookMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBookMachine = BookMachine.TestCase

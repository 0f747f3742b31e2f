"""Parser benchmark (not a test): our pure parsers against cryptofeed's, on the same frames.

    python bench/bench_parsers.py [--frames 30000] [--repeat 5]
    python bench/bench_parsers.py --profile gateio:trade     # cProfile of our side only

Input: the real captures in ``../shared/samples/cryptofeed/`` (``BINANCE.ws.1.0``,
``GATEIO.ws.1.0``, ``HUOBI.ws.44.0``), data frames only: trades, klines and order-book
frames (Binance ``bookTicker`` and Gate ``spot.tickers`` are left out: we do not subscribe to
tickers; subscription acks and pings are left out too). Each kind is replicated to about
``--frames`` frames. Book frames carry sequence numbers, and both sides check them, so copy
``k`` of a book frame has its ids shifted by ``k`` x the symbol's id span in the capture
(Binance/Gate ``U``/``u``, HTX ``version``): the replicated stream is contiguous, every copy
is applied rather than skipped as stale, and both sides get byte-identical frames. HTX frames
are gzip, and each side inflates them itself (ours: ``gunzip_bounded``, as the connector does;
cryptofeed: ``zlib.decompress`` inside its handler). Shifted HTX book frames are recompressed
at level 6 with mtime 0 and the captured header's OS byte, which reproduces the captured gzip
bytes exactly (checked at start).

Sides, each producing normalised objects:

* ``ours parse``: ``ingest.exchanges.<x>.parse.parse(frame, recv_ts)`` → Trade / Candle /
  BookDelta records (decimal text validated, aware datetimes).
* ``ours +book``: the same, and every BookDelta applied to an ``ingest.books.LocalBook``
  (primed with the capture's REST snapshot): that is the work cryptofeed's handler does for
  book frames, since it keeps the book inside the handler. The fair figure for book frames.
* ``cryptofeed``: ``await feed.message_handler(frame, conn, recv_ts)`` of
  ``cryptofeed.exchanges.Binance / Gateio / Huobi`` instantiated with the capture's symbols
  and channels and callbacks that only count; ``candle_closed_only=False`` so every kline
  becomes a Candle (the default would return early on open candles). Its symbol tables are
  preloaded from the capture's REST body (``BINANCE.0``, ``GATEIO.0``, ``HUOBI.0``) and its
  ``http_conn.read`` answers the depth snapshot from ``BINANCE.http.0.0`` /
  ``GATEIO.http.0.0``: nothing touches the network.

Book snapshots are taken during an untimed warm-up copy on both sides; every run then times
the remaining copies from a fresh feed / fresh books. Counts of objects produced are checked
to be equal on both sides. ``--repeat`` runs, interleaved; best and median frames/s printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO

from ingest.books import LocalBook
from ingest.exchanges.binance import parse as binance_parse
from ingest.exchanges.gateio import parse as gate_parse
from ingest.exchanges.huobi import parse as huobi_parse
from ingest.records import BookDelta
from ingest.transport.framing import DEFAULT_MAX_INFLATED_BYTES, gunzip_bounded
from ingest.transport.recorder import read_capture

SAMPLES = REPO.parent / "shared" / "samples" / "cryptofeed"
KINDS = ("trade", "kline", "depth")


# ---------------------------------------------------------------------------------------
# Frames from the captures


@dataclass
class Frame:
    kind: str  # trade | kline | depth
    symbol: str  # the exchange's own symbol (sequence ids are per symbol)
    payload: str | bytes  # as the websocket delivers it: str for text, bytes for HTX gzip
    ts: float


@dataclass
class Capture:
    exchange: str
    frames: list[Frame]
    rest: dict[str, str] = field(default_factory=dict)  # url -> body
    config: dict[str, list[str]] = field(default_factory=dict)
    symbol_body: Any = None  # the decoded REST symbol list (BINANCE.0 etc.)


def _records(name: str) -> Iterator[Any]:
    yield from read_capture(SAMPLES / name)


def _load(exchange: str, ws: str, info: str, http: str | None) -> Capture:
    cap = Capture(exchange, [])
    for rec in _records(info):
        if rec.kind == "rest":
            cap.symbol_body = json.loads(rec.payload)
        elif rec.kind == "config":
            cap.config = json.loads(rec.payload)
    if http is not None:
        for rec in _records(http):
            if rec.kind == "rest":
                cap.rest[rec.url] = rec.payload
    for rec in _records(ws):
        if rec.kind != "recv":
            continue
        classified = CLASSIFY[exchange](rec.payload)
        if classified is not None:
            cap.frames.append(Frame(classified[0], classified[1], rec.payload, rec.ts))
    return cap


def _binance_kind(payload: str | bytes) -> tuple[str, str] | None:
    msg = json.loads(payload)
    stream = msg.get("stream", "")
    symbol = msg.get("data", {}).get("s", "")
    if "@depth" in stream:
        return "depth", symbol
    if stream.endswith(("@aggTrade", "@trade")):
        return "trade", symbol
    if "@kline_" in stream:
        return "kline", symbol
    return None  # bookTicker: not a channel we stream


def _gate_kind(payload: str | bytes) -> tuple[str, str] | None:
    msg = json.loads(payload)
    if msg.get("event") != "update":
        return None  # subscribe acks
    channel, result = msg.get("channel"), msg.get("result", {})
    if channel == "spot.order_book_update":
        return "depth", result["s"]
    if channel == "spot.trades":
        return "trade", result["currency_pair"]
    if channel == "spot.candlesticks":
        return "kline", result["n"].partition("_")[2]
    return None  # spot.tickers


def _huobi_kind(payload: str | bytes) -> tuple[str, str] | None:
    assert isinstance(payload, bytes)
    msg = json.loads(gzip.decompress(payload))
    ch = msg.get("ch", "")
    symbol = ch.split(".")[1] if ch else ""
    if ".depth." in ch:
        return "depth", symbol
    if ch.endswith(".trade.detail"):
        return "trade", symbol
    if ".kline." in ch:
        return "kline", symbol
    return None  # subscribe acks, pings


CLASSIFY: dict[str, Callable[[str | bytes], tuple[str, str] | None]] = {
    "binance": _binance_kind, "gateio": _gate_kind, "huobi": _huobi_kind,
}


def load_captures() -> dict[str, Capture]:
    return {
        "binance": _load("binance", "BINANCE.ws.1.0", "BINANCE.0", "BINANCE.http.0.0"),
        "gateio": _load("gateio", "GATEIO.ws.1.0", "GATEIO.0", "GATEIO.http.0.0"),
        "huobi": _load("huobi", "HUOBI.ws.44.0", "HUOBI.0", None),
    }


# ---------------------------------------------------------------------------------------
# Replication with contiguous sequence ids

_U = re.compile(r'"U":(\d+)')
_u = re.compile(r'"u":(\d+)')
_VERSION = re.compile(rb'"version":(\d+)')


def _ids(frame: Frame) -> tuple[int, int]:
    """(first, last) sequence id of a book frame."""
    if isinstance(frame.payload, bytes):
        v = int(_VERSION.search(gzip.decompress(frame.payload)).group(1))  # type: ignore[union-attr]
        return v, v
    return int(_U.search(frame.payload).group(1)), int(_u.search(frame.payload).group(1))  # type: ignore[union-attr]


def _spans(frames: list[Frame]) -> dict[str, tuple[int, int]]:
    """Per symbol: (first id in the capture, id span to shift each copy by). Checks that
    Binance/Gate U/u are contiguous within the capture."""
    out: dict[str, tuple[int, int]] = {}
    last: dict[str, int] = {}
    for f in frames:
        if f.kind != "depth":
            continue
        first, end = _ids(f)
        if f.symbol not in out:
            out[f.symbol] = (first, 0)
        elif isinstance(f.payload, str) and first != last[f.symbol] + 1:
            raise SystemExit(f"{f.symbol}: U/u not contiguous in the capture ({last[f.symbol]} "
                             f"then {first})")
        last[f.symbol] = end
    return {s: (first, last[s] - first + 1) for s, (first, _) in out.items()}


def _shift(frame: Frame, offset: int) -> str | bytes:
    if offset == 0:
        return frame.payload
    if isinstance(frame.payload, bytes):
        raw = _VERSION.sub(lambda m: b'"version":%d' % (int(m.group(1)) + offset),
                           gzip.decompress(frame.payload), 1)
        return _gzip_like(raw, frame.payload)
    text = _U.sub(lambda m: f'"U":{int(m.group(1)) + offset}', frame.payload, 1)
    return _u.sub(lambda m: f'"u":{int(m.group(1)) + offset}', text, 1)


def _gzip_like(data: bytes, original: bytes) -> bytes:
    """gzip ``data`` as the capture's frames are: level 6, mtime 0, and the original's OS
    byte in the header (Python writes its own)."""
    out = gzip.compress(data, 6, mtime=0)
    return out[:9] + original[9:10] + out[10:]


def replicate(frames: list[Frame], copies: int) -> list[list[Frame]]:
    """``copies`` copies of ``frames`` (capture order), book ids shifted per copy."""
    spans = _spans(frames)
    out = []
    for k in range(copies):
        out.append([
            Frame(f.kind, f.symbol,
                  _shift(f, k * spans[f.symbol][1]) if f.kind == "depth" else f.payload, f.ts)
            for f in frames
        ])
    return out


def check_gzip_roundtrip(frames: list[Frame]) -> bool:
    """Recompressing at level 6, mtime 0 reproduces the captured HTX bytes."""
    return all(_gzip_like(gzip.decompress(f.payload), f.payload) == f.payload
               for f in frames if isinstance(f.payload, bytes))


# ---------------------------------------------------------------------------------------
# Our side

PARSERS = {"binance": binance_parse.parse, "gateio": gate_parse.parse, "huobi": huobi_parse.parse}


def _with_id(body: str, key: str, value: int) -> str:
    return re.sub(rf'"{key}":\d+', f'"{key}":{value}', body, count=1)


def our_books(cap: Capture) -> dict[str, LocalBook]:
    """One LocalBook per symbol, primed with the capture's REST snapshot (its id set just
    before the capture's first U, so every delta applies). HTX book frames are images."""
    spans = _spans(cap.frames)
    books: dict[str, LocalBook] = {}
    for native, (first, _) in spans.items():
        if cap.exchange == "huobi":
            continue  # depth.step0 frames are full images: the first one syncs the book
        body = next(b for u, b in cap.rest.items()
                    if f"symbol={native}&" in u or f"currency_pair={native}&" in u)
        if cap.exchange == "binance":
            image = binance_parse.parse_depth_snapshot(
                _with_id(body, "lastUpdateId", first - 1).encode(), native)
        else:
            image = gate_parse.parse_order_book(_with_id(body, "id", first - 1).encode(), native)
        book = LocalBook(cap.exchange, image.symbol)
        book.apply(image)
        books[image.symbol] = book
    return books


def run_ours(exchange: str, copies: list[list[Frame]], cap: Capture,
             with_books: bool) -> tuple[float, Counter[str]]:
    parse = PARSERS[exchange]
    gz = exchange == "huobi"
    books: dict[str, LocalBook] = our_books(cap) if with_books else {}
    counts: Counter[str] = Counter()

    def one_pass(frames: list[Frame], count: bool) -> None:
        for f in frames:
            payload = gunzip_bounded(f.payload, DEFAULT_MAX_INFLATED_BYTES) if gz else f.payload
            items = parse(payload, f.ts)  # type: ignore[arg-type]  # msgspec takes str too
            for item in items:
                t = type(item)
                if with_books and t is BookDelta:  # (type() is cheaper than isinstance)
                    book = books.get(item.symbol)  # type: ignore[union-attr]
                    if book is None:
                        book = books[item.symbol] = LocalBook(exchange, item.symbol)  # type: ignore[union-attr]
                    outcome = book.apply(item)  # type: ignore[arg-type]
                    if count:
                        counts["book:" + outcome.value] += 1
                if count:
                    counts[t.__name__] += 1

    one_pass(copies[0], False)  # warm-up (books sync on their first image)
    gc.collect()
    start = time.perf_counter()
    for frames in copies[1:]:
        one_pass(frames, True)
    return time.perf_counter() - start, counts


# ---------------------------------------------------------------------------------------
# cryptofeed's side


class _Conn:
    """What cryptofeed's handlers may touch of a connection (HTX answers pings on it)."""

    uuid = "bench"

    async def write(self, msg: str) -> None:
        return None


def cryptofeed_feed(cap: Capture, counts: Counter[str]) -> Any:
    from cryptofeed.defines import CANDLES, L2_BOOK, TICKER, TRADES
    from cryptofeed.exchanges import Binance, Gateio, Huobi
    from cryptofeed.symbols import Symbols

    cls = {"binance": Binance, "gateio": Gateio, "huobi": Huobi}[cap.exchange]
    # cryptofeed loads symbol info over REST at init: preload it from the capture instead.
    Symbols.set(cls.id, *cls._parse_symbol_data(cap.symbol_body))

    async def on_trade(obj: Any, receipt: float) -> None:
        counts["Trade"] += 1

    async def on_candle(obj: Any, receipt: float) -> None:
        counts["Candle"] += 1

    async def on_book(obj: Any, receipt: float) -> None:
        counts["BookDelta"] += 1

    names = {"trades": TRADES, "l2_book": L2_BOOK, "candles": CANDLES, "ticker": TICKER}
    symbols = sorted({s for syms in cap.config.values() for s in syms})
    channels = [names[c] for c in cap.config if c in names]
    feed = cls(symbols=symbols, channels=channels, candle_closed_only=False,
               callbacks={TRADES: on_trade, CANDLES: on_candle, L2_BOOK: on_book})

    spans = _spans(cap.frames)
    rest = cap.rest

    async def read(url: str, *args: Any, **kwargs: Any) -> str:
        # The depth snapshot cryptofeed fetches on a symbol's first book frame: the
        # capture's own body, its id set just before the capture's first U (as for ours).
        for u, body in rest.items():
            for native, (first, _) in spans.items():
                if (f"symbol={native}&" in u and f"symbol={native}&" in url) or (
                        f"currency_pair={native}&" in u and f"currency_pair={native}&" in url):
                    key = "lastUpdateId" if cap.exchange == "binance" else "id"
                    return _with_id(body, key, first - 1)
        raise RuntimeError(f"the benchmark has no snapshot for {url}")

    feed.http_conn.read = read
    return feed


def run_cryptofeed(copies: list[list[Frame]], cap: Capture) -> tuple[float, Counter[str]]:
    counts: Counter[str] = Counter()
    feed = cryptofeed_feed(cap, counts)
    handler = feed.message_handler
    conn = _Conn()

    async def one_pass(frames: list[Frame]) -> None:
        for f in frames:
            await handler(f.payload, conn, f.ts)

    async def main() -> float:
        await feed.subscribe(conn)  # resets its book state, as on every (re)connect
        await one_pass(copies[0])  # warm-up: takes the depth snapshots
        counts.clear()
        gc.collect()
        start = time.perf_counter()
        for frames in copies[1:]:
            await one_pass(frames)
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    return elapsed, counts


# ---------------------------------------------------------------------------------------
# Report


@dataclass
class Row:
    exchange: str
    kind: str
    frames: int  # timed frames per run
    ours: list[float] = field(default_factory=list)  # frames/s per run
    ours_book: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    note: str = ""


def _fmt(rates: list[float]) -> str:
    if not rates:
        return f"{'-':>19}"
    return f"{max(rates):>9,.0f} /{statistics.median(rates):>8,.0f}"


def _ratio(a: list[float], b: list[float]) -> str:
    if not a or not b:
        return "   -"
    return f"{max(a) / max(b):4.1f}"


def bench_kind(cap: Capture, kind: str, frames_wanted: int, repeat: int) -> Row:
    frames = [f for f in cap.frames if kind == "all" or f.kind == kind]
    copies_n = max(2, -(-frames_wanted // len(frames)) + 1)  # + the warm-up copy
    copies = replicate(frames, copies_n)
    timed = len(frames) * (copies_n - 1)
    row = Row(cap.exchange, kind, timed)
    has_book = any(f.kind == "depth" for f in frames)
    counts_seen: dict[str, Counter[str]] = {}
    for _ in range(repeat):
        elapsed, counts = run_ours(cap.exchange, copies, cap, with_books=False)
        row.ours.append(timed / elapsed)
        counts_seen["ours"] = counts
        if has_book:
            elapsed, counts = run_ours(cap.exchange, copies, cap, with_books=True)
            row.ours_book.append(timed / elapsed)
            counts_seen["ours_book"] = counts
        try:
            elapsed, counts = run_cryptofeed(copies, cap)
        except Exception as exc:  # report ours alone, and why
            row.note = f"cryptofeed failed: {type(exc).__name__}: {exc}"[:200]
            break
        row.theirs.append(timed / elapsed)
        counts_seen["cryptofeed"] = counts
    _check_counts(row, counts_seen)
    return row


def _check_counts(row: Row, seen: dict[str, Counter[str]]) -> None:
    """Both sides must have produced the same objects, else the comparison is void."""
    ours, theirs = seen.get("ours"), seen.get("cryptofeed")
    if ours is None or theirs is None:
        return
    keys = ("Trade", "Candle", "BookDelta")
    a = {k: ours.get(k, 0) for k in keys}
    b = {k: theirs.get(k, 0) for k in keys}
    booked = seen.get("ours_book")
    not_applied = {k: v for k, v in (booked or {}).items()
                   if k.startswith("book:") and k != "book:applied"}
    if a != b or not_applied:
        row.note = f"COUNTS DIFFER ours {a} cryptofeed {b} books {dict(booked or {})}"
    else:
        row.note = ", ".join(f"{v} {k}" for k, v in a.items() if v) + " per run on each side"


def print_table(rows: list[Row], repeat: int) -> None:
    print(f"\nframes/s, best / median of {repeat} (higher is better); ratio = best / best\n")
    head = (f"{'exchange':<8} {'frames':<6} {'timed':>7}  {'ours parse':>19}  {'ours +book':>19}"
            f"  {'cryptofeed':>19}  {'parse/cf':>8} {'+book/cf':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.exchange:<8} {r.kind:<6} {r.frames:>7}  {_fmt(r.ours)}  {_fmt(r.ours_book)}"
              f"  {_fmt(r.theirs)}  {_ratio(r.ours, r.theirs):>8} "
              f"{_ratio(r.ours_book, r.theirs):>8}")
    print("\nobjects produced (checked equal on both sides):")
    for r in rows:
        print(f"  {r.exchange:<8} {r.kind:<6} {r.note}")


def profile(caps: dict[str, Capture], spec: str, frames_wanted: int, with_books: bool) -> None:
    """cProfile of our side on one exchange's frames of one kind (or ``all``)."""
    import cProfile
    import pstats

    exchange, _, kind = spec.partition(":")
    cap = caps[exchange]
    frames = [f for f in cap.frames if kind in ("all", "") or f.kind == kind]
    copies = replicate(frames, max(2, -(-frames_wanted // len(frames)) + 1))
    prof = cProfile.Profile()
    prof.runcall(run_ours, exchange, copies, cap, with_books)
    pstats.Stats(prof).sort_stats("tottime").print_stats(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30_000, help="timed frames per row (about)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--exchanges", default="binance,gateio,huobi")
    ap.add_argument("--profile", metavar="EXCHANGE:KIND",
                    help="cProfile our parser on those frames instead (kind: trade, kline, depth, all)")
    ap.add_argument("--with-books", action="store_true", help="--profile: apply book frames too")
    args = ap.parse_args()
    if args.profile:
        profile(load_captures(), args.profile, args.frames, args.with_books)
        return

    from importlib.metadata import version

    import cryptofeed

    caps = load_captures()
    print(f"cryptofeed {version('cryptofeed')} "
          f"({Path(cryptofeed.__file__).parent}), Python {sys.version.split()[0]}")
    for name, cap in caps.items():
        kinds = Counter(f.kind for f in cap.frames)
        print(f"  {name}: data frames in the capture {dict(kinds)}")
    print(f"  HTX gzip recompression reproduces the captured bytes: "
          f"{check_gzip_roundtrip(caps['huobi'].frames)}")

    rows = []
    for name in args.exchanges.split(","):
        cap = caps[name]
        present = [k for k in KINDS if any(f.kind == k for f in cap.frames)]
        for kind in [*present, "all"]:
            rows.append(bench_kind(cap, kind, args.frames, args.repeat))
            r = rows[-1]
            print(f"  done {name} {kind}: ours {max(r.ours):,.0f}/s, cryptofeed "
                  f"{max(r.theirs) if r.theirs else 0:,.0f}/s", flush=True)
    print_table(rows, args.repeat)


if __name__ == "__main__":
    main()

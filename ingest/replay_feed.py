"""The engine of ``ingest replay``: captured frames in, the records the live service would
have stored out. No database, no clock, no output: ``ingest.replay`` does those.

Input: captures in the project's recording format (``transport.recorder``) and in
cryptofeed's (``shared/samples/cryptofeed``), plain or gzip, read by ``read_capture``.
The files of one feed (bootstrap ``.0``, ``.http.*`` REST responses, ``.ws.*`` frames) are
merged by timestamp, so a REST book image lands where it was received in the frame stream.
Segments of one recorded connection (``NAME.STARTED.N.gz``) are chained, so only one file
per connection is open at a time.

Which exchange: a frame belongs to the connection its file last connected to; the URL's host
(``*.binance.*``, ``*.gateio.*``/``*.gate.*``, ``*.huobi.*``/``*.htx.*``) or, for the
simulator, its first path segment (``/binance``, ``/gateio``, ``/huobi``) names it. A REST
line is judged by its own URL (one recording's ``http`` file serves every exchange).

What comes out, as in the live connectors (``exchanges.connector``):

- trades, as parsed;
- final candles only, through the live ``CandleFinalizer``: Binance ``k.x``; Gate ``w`` or a
  later window; HTX a later ``id`` for the same symbol and interval. Gate's 2021 frames carry
  no base volume, so an inferred Gate candle from them is counted ``unusable``, not stored;
- book snapshots: every delta and image goes to a ``LocalBook`` (REST images: Binance
  ``/api/v3/depth``, Gate ``/spot/order_book`` with ``with_id``). Each exchange has its own
  capture clock, the receive timestamps of its own records (frames, REST responses,
  connects). When that clock passes a point of the ``snapshot_interval_s`` grid, the live
  rule ``bookkeeper.grid_floor`` (floor(ts / interval) * interval, UTC), the exchange's
  synced books are snapshotted, top ``book_depth``, at that grid point, in the state before
  the first record past it: what the live clock sees at that instant. A silence longer than
  the interval (a recording gap, a dead feed) writes nothing for the grid points inside it,
  since the capture cannot show the book lived through it; they are counted.

Not reproduced: the live service forgets open candles on a reconnect; a capture does not
say which new connection was a reconnect and which a rotation, so open candles carry over.
"""

from __future__ import annotations

import heapq
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ingest.books import LocalBook, Outcome
from ingest.errors import ConfigError, ExchangeError, ParseError
from ingest.exchanges.base import Control, ParseResult
from ingest.exchanges.binance import parse as binance
from ingest.exchanges.bookkeeper import grid_floor
from ingest.exchanges.candles import CandleFinalizer
from ingest.exchanges.gateio import parse as gateio
from ingest.exchanges.huobi import parse as huobi
from ingest.records import BookDelta, Candle, Record, Trade
from ingest.settings import EXCHANGE_ALIASES, ExchangeSettings, Settings
from ingest.transport.framing import DEFAULT_MAX_INFLATED_BYTES, gunzip_bounded
from ingest.transport.recorder import CaptureRecord, CaptureStats, read_capture

PARSERS: dict[str, Callable[[bytes, float], ParseResult]] = {
    "binance": binance.parse, "gateio": gateio.parse, "huobi": huobi.parse,
}
# As the connectors are built (exchanges/*/stream.py): only Binance marks every final push.
INFER_CANDLES = {"binance": False, "gateio": True, "huobi": True}
REST_BOOKS: dict[tuple[str, str], tuple[str, Callable[[bytes, str, float], BookDelta]]] = {
    ("binance", "/api/v3/depth"): ("symbol", binance.parse_depth_snapshot),
    ("gateio", "/spot/order_book"): ("currency_pair", gateio.parse_order_book),
}
_KINDS = ("recv", "rest", "connect")  # sent frames and configuration lines carry no data
_SNIFF_BYTES = 64 * 1024
_FIRST_LINE = re.compile(
    rb"\s*(?:(?P<config>configuration:)|(?P<url>(?:wss?|https?)://\S+) (?P<op><->|<-|->)[ :]"
    rb"|(?P<recv>[0-9][0-9.eE+-]*: ))"
)
_SEGMENT = re.compile(r"^(?P<stream>.+\.\d{8}T\d{6}Z)\.(?P<index>\d+)\.gz$")
_DIGITS = re.compile(r"\d+")


def exchange_of(url: str | None) -> str | None:
    """``binance``/``gateio``/``huobi`` for a URL of that exchange or of the simulator."""
    if not url:
        return None
    parts = urlsplit(url)
    for label in (parts.hostname or "").lower().split("."):
        if label in EXCHANGE_ALIASES:
            return EXCHANGE_ALIASES[label]
    first = parts.path.strip("/").split("/", 1)[0].lower()
    return EXCHANGE_ALIASES.get(first)


# -- the files -----------------------------------------------------------------------------


def _head(path: Path) -> bytes:
    """The first bytes of the file's content (inflated when it is gzip). Only the start is
    inflated, so a gzip stream cut short (a crashed writer) still sniffs."""
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if head[:2] != b"\x1f\x8b":
        return head
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, _SNIFF_BYTES)


def _sniff(path: Path) -> None:
    """Raise ConfigError unless ``path`` starts like a capture whose frames can be placed."""
    try:
        head = _head(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    head = head.lstrip(b"\r\n")
    if not head:
        return  # an empty capture replays nothing
    m = _FIRST_LINE.match(head)
    if m is None:
        raise ConfigError(f"{path}: unknown format (not a capture in ingest's recording or "
                          "cryptofeed's line format)")
    if m["recv"]:
        raise ConfigError(f"{path}: frames come before any 'wss://URL <-> TS' connect line, "
                          "so their exchange is unknown (give the capture's first file)")
    if m["url"] and m["op"] == b"<->":
        url = m["url"].decode("utf-8", "replace")
        if exchange_of(url) is None:
            raise ConfigError(f"{path}: unknown exchange for {url[:200]} (expected a Binance, "
                              "Gate.io or HTX host, or the simulator's /binance, /gateio, "
                              "/huobi paths)")


def check_inputs(names: Iterable[str]) -> list[Path]:
    """The files to replay (a directory means the files in it), each checked to exist and
    to look like a capture. Raises ConfigError (exit code 2) naming the first bad one."""
    out: list[Path] = []
    seen: set[Path] = set()
    for name in names:
        path = Path(name)
        if path.is_dir():
            items = sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            items = [path]
        elif path.exists():
            raise ConfigError(f"{name}: not a regular file")
        else:
            raise ConfigError(f"{name}: no such file")
        for item in items:
            key = item.resolve()
            if key not in seen:
                seen.add(key)
                _sniff(item)
                out.append(item)
    return out


def _streams(paths: list[Path]) -> list[list[Path]]:
    """Group rotated segments of one recorded connection, in order; other files alone."""
    groups: dict[str, list[tuple[int, Path]]] = {}
    singles: list[list[Path]] = []
    for path in paths:
        m = _SEGMENT.match(path.name)
        if m is None:
            singles.append([path])
        else:
            groups.setdefault(str(path.parent / m["stream"]), []).append((int(m["index"]), path))
    return singles + [[p for _, p in sorted(g)] for g in groups.values()]


def _read(path: Path, stats: CaptureStats) -> Iterator[CaptureRecord]:
    try:
        yield from read_capture(path, stats=stats)
    except zlib.error:  # corrupt deflate data (read_capture handles a cut-short stream)
        stats.torn_lines += 1  # the rest of this file is unreadable; the others go on
    except OSError as exc:  # gone, unreadable, or out of file descriptors
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def _data(group: list[Path], stats: CaptureStats) -> Iterator[CaptureRecord]:
    """The data-bearing records of one recorded connection, its segments in order."""
    for path in group:
        for record in _read(path, stats):
            if record.kind in _KINDS and record.ts is not None:
                yield record


def _first_ts(group: list[Path]) -> float | None:
    records = _data(group, CaptureStats())  # a look only: counted when really read
    try:
        first = next(records, None)
    finally:
        records.close()
    return None if first is None else first.ts


def merged(paths: list[Path], stats: CaptureStats) -> Iterator[CaptureRecord]:
    """Every data-bearing record of every file, merged by timestamp (each file's own order
    is kept; at equal timestamps the file given first goes first).

    A connection's files are opened when the merge reaches its first record and closed
    when it ends, so only connections that overlap in time are open at once: a long
    recording has one file per connection, thousands after a day of reconnects."""
    waiting: list[tuple[float, int, list[Path]]] = []  # (first ts, order, files), latest first
    for order, group in enumerate(_streams(paths)):
        first = _first_ts(group)
        if first is not None:
            waiting.append((first, order, group))
    waiting.sort(reverse=True)
    heap: list[tuple[float, int, CaptureRecord, Iterator[CaptureRecord]]] = []
    while heap or waiting:
        while waiting and (not heap or waiting[-1][0] <= heap[0][0]):
            _, order, group = waiting.pop()
            records = _data(group, stats)
            record = next(records, None)
            if record is not None:
                heapq.heappush(heap, (record.ts or 0.0, order, record, records))
        if not heap:
            continue
        _, order, record, records = heap[0]
        yield record
        following = next(records, None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following.ts or 0.0, order, following, records))


# -- the replay ----------------------------------------------------------------------------


@dataclass
class ReplayStats:
    capture: CaptureStats = field(default_factory=CaptureStats)
    frames: int = 0
    frames_parsed: int = 0
    frames_unparseable: int = 0
    unparseable: Counter[str] = field(default_factory=Counter)  # reason → frames
    controls: int = 0  # acks, pings, pongs: parsed, nothing to store
    rest_images: int = 0  # REST book images applied to a book
    rest_rejected: int = 0
    rest_ignored: int = 0  # other REST responses (exchangeInfo, currency pairs, …)
    book_gaps: int = 0
    grid_points_skipped: int = 0  # snapshot grid points inside silences of the capture
    records: Counter[str] = field(default_factory=Counter)  # record kind → emitted

    def reject(self, reason: str) -> None:
        self.frames_unparseable += 1
        self.unparseable[_DIGITS.sub("N", reason)[:100]] += 1


class Replayer:
    """Feed it capture records in time order (``feed``), or let ``records`` read files."""

    def __init__(self, settings: Settings) -> None:
        self._settings = {name: settings.exchanges.get(name) or ExchangeSettings()
                          for name in PARSERS}
        self.books: dict[str, dict[str, LocalBook]] = {name: {} for name in PARSERS}
        self.finalizers: dict[tuple[str, str, str], CandleFinalizer] = {}
        self._next_grid_us: dict[str, int] = {}  # per exchange: the next grid point, µs
        self._last_ts: dict[str, float] = {}  # per exchange: capture time of its last record
        self._url_exchange: dict[str | None, str | None] = {}
        self.stats = ReplayStats()

    def records(self, paths: list[Path]) -> Iterator[Record]:
        for rec in merged(paths, self.stats.capture):
            yield from self.feed(rec)

    def feed(self, rec: CaptureRecord) -> list[Record]:
        out: list[Record] = []
        exchange = self._exchange(rec.url) if rec.kind == "recv" else exchange_of(rec.url)
        if exchange is not None and rec.ts is not None:
            self._tick(exchange, rec.ts, out)
        if rec.kind == "recv":
            self._frame(exchange, rec, out)
        elif rec.kind == "rest":
            self._rest(exchange, rec)
        for r in out:
            self.stats.records[r.kind] += 1
        return out

    # -- books and the snapshot grid ---------------------------------------------------------

    def _book(self, exchange: str, symbol: str) -> LocalBook:
        books = self.books[exchange]
        book = books.get(symbol)
        if book is None:
            book = books[symbol] = LocalBook(exchange, symbol)
        return book

    def _apply(self, delta: BookDelta) -> None:
        if self._book(delta.exchange, delta.symbol).apply(delta) is Outcome.GAP:
            self.stats.book_gaps += 1

    def _tick(self, exchange: str, ts: float, out: list[Record]) -> None:
        """Advance the exchange's capture clock; snapshot its books at a grid point passed."""
        last = self._last_ts.get(exchange)
        if last is not None and ts <= last:
            return
        self._last_ts[exchange] = ts
        interval_s = self._settings[exchange].snapshot_interval_s
        step_us = max(1, round(interval_s * 1_000_000))  # as grid_floor rounds it
        now_us = int(ts * 1_000_000)
        next_us = self._next_grid_us.get(exchange)
        self._next_grid_us[exchange] = now_us - now_us % step_us + step_us
        if last is None or next_us is None or now_us < next_us:
            return
        if ts - last > interval_s:  # a silence: nothing shows the book lived through it
            self.stats.grid_points_skipped += (now_us - next_us) // step_us + 1
            return
        at = grid_floor(ts, interval_s)
        depth = self._settings[exchange].book_depth
        books = self.books[exchange].values()
        out.extend(b.snapshot(depth, at, ts) for b in books if b.synced)

    # -- frames and REST responses -----------------------------------------------------------

    def _exchange(self, url: str | None) -> str | None:
        exchange = self._url_exchange.get(url, "?")
        if exchange == "?":
            exchange = self._url_exchange[url] = exchange_of(url)
        return exchange

    def _frame(self, exchange: str | None, rec: CaptureRecord, out: list[Record]) -> None:
        self.stats.frames += 1
        if exchange is None:
            self.stats.reject(f"no known exchange for connection {str(rec.url)[:60]}")
            return
        payload = rec.payload if rec.payload is not None else b""
        try:
            if exchange == "huobi":
                frame = gunzip_bounded(payload, DEFAULT_MAX_INFLATED_BYTES)
            else:
                frame = payload.encode() if isinstance(payload, str) else payload
            items = PARSERS[exchange](frame, rec.ts or 0.0)
        except ParseError as exc:
            reason = str(exc)
            self.stats.reject(reason if reason.startswith(exchange) else f"{exchange}: {reason}")
            return
        except Exception as exc:  # a parser bug on one odd frame must not end the replay
            self.stats.reject(f"{exchange}: {type(exc).__name__}")
            return
        self.stats.frames_parsed += 1
        for item in items:
            if isinstance(item, Trade):
                out.append(item)
            elif isinstance(item, Candle):
                out.extend(self._finalizer(exchange, item).observe(item))
            elif isinstance(item, BookDelta):
                self._apply(item)
            elif isinstance(item, Control):
                self.stats.controls += 1

    def _finalizer(self, exchange: str, candle: Candle) -> CandleFinalizer:
        key = (exchange, candle.symbol, candle.interval)
        fin = self.finalizers.get(key)
        if fin is None:
            fin = self.finalizers[key] = CandleFinalizer(
                [key[1:]], infer_from_next_window=INFER_CANDLES[exchange])
        return fin

    def _rest(self, exchange: str | None, rec: CaptureRecord) -> None:
        parts = urlsplit(rec.url or "")
        route = next((v for (ex, suffix), v in REST_BOOKS.items()
                      if ex == exchange and parts.path.rstrip("/").endswith(suffix)), None)
        if route is None:
            self.stats.rest_ignored += 1
            return
        param, parse = route
        symbol = parse_qs(parts.query).get(param, [""])[0]
        body = rec.payload if rec.payload is not None else b""
        try:
            if not symbol:
                raise ParseError(f"no {param} in the URL")
            image = parse(body.encode() if isinstance(body, str) else body, symbol, rec.ts or 0.0)
        except (ParseError, ExchangeError) as exc:
            self.stats.rest_rejected += 1
            self.stats.unparseable[f"REST: {_DIGITS.sub('N', str(exc))[:90]}"] += 1
            return
        self.stats.rest_images += 1
        self._apply(image)

    # -- reading -------------------------------------------------------------------------

    def candle_stats(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for fin in self.finalizers.values():
            s = fin.stats
            out.update(updates=s.updates, final=s.finalized + s.inferred, stale=s.stale,
                       unusable=s.unusable)
        out["held_open"] = sum(f.held for f in self.finalizers.values())
        return dict(out)

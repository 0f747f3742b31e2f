"""What the writer knows about each table: columns, key, COPY encoding, staging SQL.

Table and column names come only from the constants here; data goes through COPY.
Each encoder validates one record and returns its line in COPY's text format (tab
separated, ``\\N`` for NULL; see ``validate``). Text beat binary and CSV here: see
bench/README.md.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ingest.records import METRIC_TYPES, BookSnapshot, Candle, MarketMetric, Record, Trade
from ingest.settings import INTERVALS
from ingest.sink.validate import (
    INT64_MAX,
    INT64_MIN,
    OHLCV,
    PRICE_QTY_QUOTE,
    Reject,
    Window,
    copy_escape,
    decimal_text,
    int64_text,
    iso_text,
    nonneg,
    positive,
)

Policy = Literal["block", "drop_oldest"]
Encoded = tuple[Hashable, str]  # (unique key, COPY text line)
NULL = "\\N"
_INTERVALS = frozenset(INTERVALS)
_METRIC_TYPES = frozenset(METRIC_TYPES)


@dataclass(frozen=True)
class TableSpec:
    name: str
    record_type: type[Any]
    columns: tuple[str, ...]
    column_types: tuple[str, ...]  # for the staging table, listed explicitly (not LIKE)
    encode: Callable[[Any, Window], Encoded]  # validates; raises Reject
    estimate_bytes: Callable[[Any], int]
    fixed_bytes: int  # > 0: every record is estimated at this size (put() takes runs at once)
    policy: Policy
    memory_share: float  # of WriterSettings.memory_limit_mb
    concurrency: int  # concurrent COPYs; 1 where batch order matters (candle corrections)
    conflict_update: tuple[str, ...] = ()  # candles: columns replaced when values differ
    conflict_key: tuple[str, ...] = ()
    closed_only: bool = False  # candles: records with closed=False are not stored

    @property
    def stage_table(self) -> str:
        return f"_ingest_stage_{self.name}"

    @property
    def stage_ddl(self) -> str:
        cols = ", ".join(f"{c} {t}" for c, t in zip(self.columns, self.column_types, strict=True))
        return f"CREATE TEMP TABLE {self.stage_table} ({cols}) ON COMMIT DROP"

    @property
    def merge_sql(self) -> str:
        """INSERT … SELECT from the staging table; returns (inserted, updated).

        ``xmax = 0`` tells a freshly inserted row from one updated by ON CONFLICT."""
        cols = ", ".join(self.columns)
        if self.conflict_update:
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in self.conflict_update)
            old = ", ".join(f"t.{c}" for c in self.conflict_update)
            new = ", ".join(f"EXCLUDED.{c}" for c in self.conflict_update)
            conflict = (f"ON CONFLICT ({', '.join(self.conflict_key)}) DO UPDATE SET {sets} "
                        f"WHERE ({old}) IS DISTINCT FROM ({new})")
        else:
            # No conflict target: needs only the INSERT privilege (reliability.md).
            conflict = "ON CONFLICT DO NOTHING"
        return (f"WITH m AS (INSERT INTO {self.name} AS t ({cols}) SELECT {cols} FROM "
                f"{self.stage_table} {conflict} RETURNING (t.xmax = 0) AS inserted) "
                "SELECT count(*) FILTER (WHERE inserted), "
                "count(*) FILTER (WHERE NOT inserted) FROM m")


def _opt(value: Any, field: str) -> str:
    return NULL if value is None else nonneg(value, field)


def _encode_trade(t: Trade, w: Window) -> Encoded:
    # The hot path, once per trade: the common checks are inlined, the helpers called
    # only to raise with a reason.
    tid, ts, exchange, symbol = t.trade_id, t.timestamp, t.exchange, t.symbol
    if type(tid) is not int or not INT64_MIN <= tid <= INT64_MAX:
        int64_text(tid, "trade_id")
    try:
        in_window = w.low <= ts <= w.high
    except TypeError:  # naive datetime, or not a datetime
        in_window = False
    if not in_window:
        w.timestamp(ts)
    texts = w.texts
    price, qty, quote = t.price, t.quantity, t.quote_quantity
    if (type(price) is str and type(qty) is str and type(quote) is str
            and PRICE_QTY_QUOTE(nums := f"{price}\t{qty}\t{quote}") and price.strip("0.")):
        pass
    else:
        nums = (f"{positive(price, 'price')}\t{nonneg(qty, 'quantity')}\t"
                f"{NULL if quote is None else nonneg(quote, 'quote_quantity')}")
    line = (f"{texts.get(exchange) or w.text(exchange, 'exchange')}\t"
            f"{texts.get(symbol) or w.text(symbol, 'symbol')}\t{tid}\t{iso_text(ts)}\t"
            f"{nums}\t{'t' if t.is_buyer_maker else 'f'}\n")
    return (exchange, symbol, tid, ts), line


def _encode_candle(c: Candle, w: Window) -> Encoded:
    exchange, symbol, interval, ts = c.exchange, c.symbol, c.interval, c.timestamp
    if interval not in _INTERVALS:
        raise Reject(f"interval: unknown {str(interval)[:20]!r}")
    try:
        in_window = w.low <= ts <= w.high
    except TypeError:
        in_window = False
    if not in_window:
        w.timestamp(ts)
    o, h, lo, cl, v, qv = c.open, c.high, c.low, c.close, c.volume, c.quote_volume
    try:  # join() raises TypeError unless all are str
        nums = "\t".join((o, h, lo, cl, v) if qv is None else (o, h, lo, cl, v, qv))
        ok = (OHLCV(nums) is not None and bool(o.strip("0.")) and bool(h.strip("0."))
              and bool(lo.strip("0.")) and bool(cl.strip("0.")))
    except TypeError:
        ok = False
    if ok:
        nums = nums + "\t" + NULL if qv is None else nums
    else:
        nums = "\t".join((positive(o, "open"), positive(h, "high"), positive(lo, "low"),
                          positive(cl, "close"), nonneg(v, "volume"), _opt(qv, "quote_volume")))
    count = c.trades_count
    if count is not None and (type(count) is not int or not 0 <= count <= INT64_MAX):
        int64_text(count, "trades_count", nonneg=True)
    texts = w.texts
    line = (f"{texts.get(exchange) or w.text(exchange, 'exchange')}\t"
            f"{texts.get(symbol) or w.text(symbol, 'symbol')}\t{interval}\t{iso_text(ts)}\t"
            f"{nums}\t{NULL if count is None else count}\n")
    return (exchange, symbol, interval, ts), line


def _json_field(value: Any, field: str) -> str:
    try:
        raw = orjson.dumps(value).decode()
    except TypeError as exc:
        raise Reject(f"{field}: not JSON-serialisable ({exc})") from None
    return copy_escape(raw)


def _levels(levels: Any, field: str) -> str:
    if not isinstance(levels, tuple | list):
        raise Reject(f"{field}: expected a sequence of (price, quantity)")
    for level in levels:
        if not isinstance(level, tuple | list) or len(level) != 2:
            raise Reject(f"{field}: level {str(level)[:40]} is not (price, quantity)")
        positive(level[0], f"{field} price")
        nonneg(level[1], f"{field} quantity")
    return _json_field(levels, field)


def _encode_book(b: BookSnapshot, w: Window) -> Encoded:
    line = (f"{w.text(b.exchange, 'exchange')}\t{w.text(b.symbol, 'symbol')}\t"
            f"{w.timestamp(b.timestamp)}\t{_levels(b.bids, 'bids')}\t{_levels(b.asks, 'asks')}\t"
            f"{int64_text(b.last_update_id, 'last_update_id')}\n")
    return (b.exchange, b.symbol, b.timestamp), line


def _encode_metric(m: MarketMetric, w: Window) -> Encoded:
    if m.metric_type not in _METRIC_TYPES:
        raise Reject(f"metric_type: unknown {str(m.metric_type)[:40]!r}")
    if not isinstance(m.metadata, dict):
        raise Reject("metadata: must be an object")
    line = (f"{m.metric_type}\t{w.timestamp(m.timestamp)}\t"
            f"{decimal_text(m.value, minimum='any', field='value')}\t"
            f"{_json_field(m.metadata, 'metadata')}\n")
    return (m.metric_type, metric_name(m.metadata), m.timestamp), line


def metric_name(metadata: Any) -> str:
    """What the GENERATED column ``metric_name`` will hold: COALESCE(metadata->>'name', '')."""
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if name is None:
        return ""
    return name if isinstance(name, str) else orjson.dumps(name).decode()


# Estimates of resident bytes per queued record (object, strings, datetime, list slot and
# its COPY line while a batch is being written), measured with tracemalloc on typical rows.
# Trades and candles vary little, so a constant keeps put() cheap.
TRADE_BYTES = 400


def _trade_bytes(t: Trade) -> int:
    return TRADE_BYTES


CANDLE_BYTES = 720


def _candle_bytes(c: Candle) -> int:
    return CANDLE_BYTES


def _book_bytes(b: BookSnapshot) -> int:
    try:
        return 320 + 240 * (len(b.bids) + len(b.asks))
    except TypeError:
        return 320


def _metric_bytes(m: MarketMetric) -> int:
    size = len(m.metadata) if isinstance(m.metadata, dict) else 1
    return 480 + (len(m.value) if type(m.value) is str else 16) + 96 * size


_NUM = "NUMERIC(38,18)"

CANDLES = TableSpec(
    name="candlesticks", record_type=Candle,
    columns=("exchange", "symbol", "interval", "timestamp", "open", "high", "low", "close",
             "volume", "quote_volume", "trades_count"),
    column_types=("TEXT", "TEXT", "TEXT", "TIMESTAMPTZ", _NUM, _NUM, _NUM, _NUM, _NUM, _NUM,
                  "BIGINT"),
    encode=_encode_candle, estimate_bytes=_candle_bytes, fixed_bytes=CANDLE_BYTES,
    closed_only=True,
    policy="block", memory_share=0.15, concurrency=1,
    conflict_key=("exchange", "symbol", "interval", "timestamp"),
    conflict_update=("open", "high", "low", "close", "volume", "quote_volume", "trades_count"),
)
TRADES = TableSpec(
    name="trades", record_type=Trade,
    columns=("exchange", "symbol", "trade_id", "timestamp", "price", "quantity",
             "quote_quantity", "is_buyer_maker"),
    column_types=("TEXT", "TEXT", "BIGINT", "TIMESTAMPTZ", _NUM, _NUM, _NUM, "BOOLEAN"),
    encode=_encode_trade, estimate_bytes=_trade_bytes, fixed_bytes=TRADE_BYTES,
    policy="block", memory_share=0.5, concurrency=2,
)
BOOKS = TableSpec(
    name="order_books", record_type=BookSnapshot,
    columns=("exchange", "symbol", "timestamp", "bids", "asks", "last_update_id"),
    column_types=("TEXT", "TEXT", "TIMESTAMPTZ", "JSONB", "JSONB", "BIGINT"),
    encode=_encode_book, estimate_bytes=_book_bytes, fixed_bytes=0,
    policy="drop_oldest", memory_share=0.25, concurrency=1,
)
METRICS = TableSpec(
    name="market_metrics", record_type=MarketMetric,
    # metric_name is GENERATED from metadata: never listed, never written.
    columns=("metric_type", "timestamp", "value", "metadata"),
    column_types=("TEXT", "TIMESTAMPTZ", _NUM, "JSONB"),
    encode=_encode_metric, estimate_bytes=_metric_bytes, fixed_bytes=0,
    policy="block", memory_share=0.10, concurrency=1,
)

SPECS: tuple[TableSpec, ...] = (CANDLES, TRADES, BOOKS, METRICS)
SPEC_BY_TYPE: dict[type[Any], TableSpec] = {s.record_type: s for s in SPECS}


@dataclass(slots=True)
class Prepared:
    """A batch after validation and in-batch de-duplication, aligned row for row."""

    records: list[Record]
    lines: list[str]
    rejected: list[tuple[Record, str]]
    in_batch_duplicates: int

    def payload(self, start: int = 0, stop: int | None = None) -> bytes:
        return "".join(self.lines[start:stop]).encode()


def prepare(spec: TableSpec, records: list[Any], window: Window) -> Prepared:
    """Validate and encode ``records``; later rows win over earlier ones with the same key
    (for candles that is the correction; for the other tables the rows are identical)."""
    encode = spec.encode
    by_key: dict[Hashable, int] = {}
    kept: list[Any] = []
    lines: list[str] = []
    rejected: list[tuple[Record, str]] = []
    duplicates = 0
    for rec in records:
        try:
            k, line = encode(rec, window)
        except Reject as exc:
            rejected.append((rec, exc.reason))
            continue
        except Exception as exc:  # a malformed record must not cost its batch
            rejected.append((rec, f"malformed record: {type(exc).__name__}: {exc}"[:200]))
            continue
        slot = by_key.get(k)
        if slot is None:
            by_key[k] = len(lines)
            kept.append(rec)
            lines.append(line)
        else:
            duplicates += 1
            kept[slot] = rec
            lines[slot] = line
    return Prepared(kept, lines, rejected, duplicates)

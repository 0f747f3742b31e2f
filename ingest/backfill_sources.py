"""Each exchange's history, page by page, as the live stream's records.

Paging is done here, by hand, rather than with ccxt's ``paginate`` helpers (which clamp the
start of a range and stop after ten calls). Every page is parsed by the project's REST
parsers from the raw body, so a backfilled row is byte-identical to a streamed one.

Where ccxt's defaults are wrong for history (protocols.md §4.2):

- Binance trades: ccxt's default is aggTrades, whose ids are not the stream's raw trade ids.
  Raw trades come from ``historicalTrades?fromId``; the first id at a time is the ``f`` of
  the first aggTrade at/after it (or, for a quiet hour, a binary search on fromId).
- Gate trades: ccxt does not send ``since`` for spot. Time windows (``from``/``to``) are
  paged with ``page``, which Gate caps at ``limit*(page-1) <= 100000``; a window that would
  need more is split in two.
- HTX trades: only the latest 2000 exist over REST. Older parts of a range are reported as
  unserved, never silently skipped.
- HTX candles: ``/market/history/candles`` with ``from``/``to`` (what ccxt uses for spot).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import msgspec

from ingest.backfill_client import ExchangeClient
from ingest.backfill_plan import align_up, iso, span_ms, to_ms
from ingest.errors import ExchangeError, ParseError
from ingest.exchanges.binance import parse as binance
from ingest.exchanges.gateio import parse as gateio
from ingest.exchanges.huobi import parse as huobi
from ingest.exchanges.naming import interval_to_native, to_compact, to_native_symbol
from ingest.records import Candle, Trade

BINANCE_PAGE = 1000
GATE_PAGE = 1000
GATE_MAX_OFFSET = 100_000  # limit * (page - 1) <= 100000
GATE_TARGET_TRADES = 20_000  # per time window: ~20 pages, far from the page cap
HTX_TRADES = 2000
CANDLE_PAGE = 1000  # Gate "at most 1000 points"; HTX size <= 1000


@dataclass
class Unserved:
    """Part of a range the exchange cannot serve."""

    start_ms: int
    end_ms: int
    reason: str

    def describe(self) -> str:
        return f"{iso(self.start_ms)} .. {iso(self.end_ms)}: {self.reason}"


@dataclass
class Page:
    records: list[Candle] | list[Trade]
    done_ms: int  # everything before this time has been fetched
    unserved: list[Unserved] = field(default_factory=list)


_GATE_TOO_OLD = re.compile(r"too long ago\D{0,40}?(\d+)\s*points", re.IGNORECASE)


class _AggTrade(msgspec.Struct):
    f: int  # first raw trade id of the aggregate
    T: int


_AGG = msgspec.json.Decoder(list[_AggTrade])


def _ms(t: Trade | Candle) -> int:
    return to_ms(t.timestamp)


class Source:
    """History of one exchange through one ``ExchangeClient``."""

    def __init__(self, client: ExchangeClient, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.exchange = client.exchange
        self.clock = clock

    async def candles(self, symbol: str, interval: str, lo: int, hi: int,
                      now_ms: int) -> AsyncGenerator[Page, None]:
        """Candles opening in ``[lo, hi)``, oldest first (``lo`` on the grid)."""
        span = span_ms(interval)
        cur = lo
        while cur < hi:
            last_open = min(cur + (CANDLE_PAGE - 1) * span, hi - span)
            try:
                rows = await self._candle_window(symbol, interval, cur, last_open, now_ms)
            except ExchangeError as exc:
                served = self._served_from(exc, interval, int(self.clock() * 1000))
                if served is None:
                    raise
                resume = min(max(served, cur + span), hi)
                yield Page([], resume, [Unserved(cur, resume, str(exc).split(": ", 1)[-1][:200])])
                cur = resume
                continue
            yield Page(sorted(rows, key=_ms), last_open + span)
            cur = last_open + span

    def _served_from(self, exc: ExchangeError, interval: str, now_ms: int) -> int | None:
        """Where candle history starts, when ``exc`` says the range is too old for the
        exchange (None: a real error)."""
        return None

    async def _candle_window(self, symbol: str, interval: str, first: int, last: int,
                             now_ms: int) -> list[Candle]:
        raise NotImplementedError

    def trades(self, symbol: str, lo: int, hi: int, after_id: int | None) -> AsyncGenerator[Page, None]:
        """Trades with ``lo <= time < hi``, oldest first; ``after_id`` is the newest stored
        trade in the range (a resume point), where the exchange's ids allow using it."""
        raise NotImplementedError

    def trade_ids(self, symbol: str, first_id: int, last_id: int) -> AsyncGenerator[Page, None]:
        raise ExchangeError(f"{self.exchange}: trade ids are not contiguous; "
                            "only time ranges can be refetched")


class BinanceSource(Source):
    async def candles(self, symbol: str, interval: str, lo: int, hi: int,
                      now_ms: int) -> AsyncGenerator[Page, None]:
        native, compact = to_native_symbol("binance", symbol), to_compact(symbol)
        span, cur = span_ms(interval), lo
        while cur < hi:
            reply = await self.client.get("publicGetKlines", {
                "symbol": native, "interval": interval_to_native("binance", interval),
                "startTime": cur, "endTime": hi - 1, "limit": BINANCE_PAGE})
            rows = binance.parse_klines(reply.body, compact, interval, now_ms, reply.recv_ts)
            if not rows:
                return
            cur = _ms(rows[-1]) + span
            yield Page(rows, cur)

    async def trades(self, symbol: str, lo: int, hi: int,
                     after_id: int | None) -> AsyncGenerator[Page, None]:
        native = to_native_symbol("binance", symbol)
        first = after_id + 1 if after_id is not None else await self._first_id_at(native, lo, hi)
        if first is None:
            return
        async for page in self._from_id(symbol, first, None, lo, hi):
            yield page

    async def trade_ids(self, symbol: str, first_id: int, last_id: int) -> AsyncGenerator[Page, None]:
        async for page in self._from_id(symbol, first_id, last_id, 0, 1 << 62):
            yield page

    async def _historical(self, native: str, compact: str, from_id: int | None,
                          limit: int) -> list[Trade]:
        params: dict[str, object] = {"symbol": native, "limit": limit}
        if from_id is not None:
            params["fromId"] = from_id
        reply = await self.client.get("publicGetHistoricalTrades", params)
        return binance.parse_trades(reply.body, compact, reply.recv_ts)

    async def _from_id(self, symbol: str, first_id: int, last_id: int | None, lo: int,
                       hi: int) -> AsyncGenerator[Page, None]:
        native, compact = to_native_symbol("binance", symbol), to_compact(symbol)
        next_id = first_id
        while True:
            rows = await self._historical(native, compact, next_id, BINANCE_PAGE)
            if not rows:
                return
            last = rows[-1]
            keep = [t for t in rows if lo <= _ms(t) < hi
                    and (last_id is None or t.trade_id <= last_id)]
            done = (_ms(last) >= hi or len(rows) < BINANCE_PAGE
                    or (last_id is not None and last.trade_id >= last_id))
            yield Page(keep, min(_ms(last), hi))
            if done:
                return
            next_id = last.trade_id + 1

    async def _first_id_at(self, native: str, lo: int, hi: int) -> int | None:
        """The first raw trade id at/after ``lo`` (None: no trade in ``[lo, hi)``)."""
        reply = await self.client.get("publicGetAggTrades", {
            "symbol": native, "startTime": lo, "endTime": min(lo + 3_600_000, hi) - 1,
            "limit": 1})
        try:
            aggs = _AGG.decode(reply.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ParseError(f"binance: aggTrades: {str(exc)[:120]}") from exc
        if aggs:
            return aggs[0].f
        return await self._search_first_id(native, lo, hi)

    async def _search_first_id(self, native: str, lo: int, hi: int) -> int | None:
        """A quiet hour: search fromId for the first trade at/after ``lo``. The predicate
        "the first trade from id x is at/after lo" is monotone in x: gallop down from the
        newest trade to bracket it, then bisect (about 2*log2(distance) requests; probes
        stay near ``lo`` and never below id 0)."""
        compact = native  # Binance's symbol is already the compact form
        newest = await self._historical(native, compact, None, 1)
        if not newest or _ms(newest[-1]) < lo:
            return None
        high, found = newest[-1].trade_id, newest[-1]
        low, step = 0, BINANCE_PAGE
        while high - step > 0:
            probe = (await self._historical(native, compact, high - step, 1))[0]
            if _ms(probe) < lo:
                low = probe.trade_id + 1
                break
            high, found, step = high - step, probe, step * 2
        while low < high:
            mid = (low + high) // 2
            probe = (await self._historical(native, compact, mid, 1))[0]
            if _ms(probe) >= lo:
                high, found = mid, probe
            else:
                low = max(mid + 1, probe.trade_id + 1)
        return found.trade_id if _ms(found) < hi else None


class GateSource(Source):
    def _served_from(self, exc: ExchangeError, interval: str, now_ms: int) -> int | None:
        # Gate keeps a limited number of candles per interval and refuses older ranges
        # ("Candlestick too long ago. Maximum 10000 points ago are allowed"): report that
        # part as unserved and continue where its history begins.
        m = _GATE_TOO_OLD.search(str(exc))
        if m is None:
            return None
        return align_up(now_ms - int(m.group(1)) * span_ms(interval), interval) + span_ms(interval)

    async def _candle_window(self, symbol: str, interval: str, first: int, last: int,
                             now_ms: int) -> list[Candle]:
        reply = await self.client.get("publicSpotGetCandlesticks", {
            "currency_pair": to_native_symbol("gateio", symbol),
            "interval": interval_to_native("gateio", interval),
            "from": first // 1000, "to": last // 1000})
        return gateio.parse_candlesticks(reply.body, to_compact(symbol), interval, now_ms,
                                         reply.recv_ts)

    async def trades(self, symbol: str, lo: int, hi: int,
                     after_id: int | None) -> AsyncGenerator[Page, None]:
        # Gate's ids are global (not per market): resume is by time, duplicates are absorbed.
        window = 3_600_000
        cur = lo - lo % 1000
        end = -(-hi // 1000) * 1000  # from/to are whole seconds
        while cur < end:
            stop = min(cur + window, end)
            rows = await self._window(symbol, cur, stop)
            if rows is None:
                if stop - cur <= 1000:
                    yield Page([], stop, [Unserved(cur, stop, "more than 101000 trades in one "
                                                             "second: beyond Gate's page limit")])
                    cur = stop
                else:
                    window = max(1000, (stop - cur) // 2)
                continue
            yield Page(sorted((t for t in rows if lo <= _ms(t) < hi), key=_ms), min(stop, hi))
            cur = stop
            # Aim the next window at ~20 pages: few requests, far from the page cap.
            scale = GATE_TARGET_TRADES / max(len(rows), 1)
            window = int(min(max(window * min(scale, 4.0), 1000), 86_400_000))

    async def _window(self, symbol: str, start: int, stop: int) -> list[Trade] | None:
        """Every trade in ``[start, stop)`` (whole seconds), or None when it would take more
        pages than Gate serves."""
        pair, compact = to_native_symbol("gateio", symbol), to_compact(symbol)
        out: list[Trade] = []
        page = 1
        while GATE_PAGE * (page - 1) <= GATE_MAX_OFFSET:
            reply = await self.client.get("publicSpotGetTrades", {
                "currency_pair": pair, "from": start // 1000, "to": stop // 1000 - 1,
                "limit": GATE_PAGE, "page": page})
            rows = gateio.parse_trades(reply.body, compact, reply.recv_ts)
            out.extend(rows)
            if len(rows) < GATE_PAGE:
                return out
            page += 1
        return None


class HtxSource(Source):
    async def _candle_window(self, symbol: str, interval: str, first: int, last: int,
                             now_ms: int) -> list[Candle]:
        reply = await self.client.get("spotPublicGetMarketHistoryCandles", {
            "symbol": to_native_symbol("huobi", symbol),
            "period": interval_to_native("huobi", interval),
            "from": first // 1000, "to": last // 1000, "size": CANDLE_PAGE})
        return huobi.parse_history_candles(reply.body, to_compact(symbol), interval, now_ms,
                                           reply.recv_ts)

    async def trades(self, symbol: str, lo: int, hi: int,
                     after_id: int | None) -> AsyncGenerator[Page, None]:
        reply = await self.client.get("spotPublicGetMarketHistoryTrade", {
            "symbol": to_native_symbol("huobi", symbol), "size": HTX_TRADES})
        rows = huobi.parse_history_trade(reply.body, to_compact(symbol), reply.recv_ts)
        unserved = []
        if len(rows) >= HTX_TRADES:
            # Truncated: nothing older than the oldest returned trade exists over REST
            # (its own millisecond included: a sibling trade may have been cut off).
            oldest = min(_ms(t) for t in rows)
            if lo <= oldest:
                unserved.append(Unserved(lo, min(oldest + 1, hi),
                                         f"HTX serves only its latest {HTX_TRADES} trades"))
        keep = sorted((t for t in rows if lo <= _ms(t) < hi), key=_ms)
        yield Page(keep, hi, unserved)


def source_for(client: ExchangeClient, clock: Callable[[], float] = time.time) -> Source:
    kinds: dict[str, type[Source]] = {
        "binance": BinanceSource, "gateio": GateSource, "huobi": HtxSource}
    return kinds[client.exchange](client, clock)

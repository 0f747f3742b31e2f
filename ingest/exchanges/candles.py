"""Which candle updates are final: only final candles go to the sink.

Exchanges push a candle many times while its window is open. The last push is not marked
the same way everywhere (protocols.md §1.2, §2.2, §3.2):

- Binance: ``k.x`` is true on the closing push. No inference: a window whose closing push
  was missed (a disconnect) is left to the REST gap repair rather than stored from a
  possibly incomplete intermediate push.
- Gate: ``w`` is true on the closing push, but the doc warns it "may be missing", so a
  push for a *later* window of the same (pair, interval) also finalises the held one.
- HTX: no flag at all; a push with a later ``id`` finalises the held one (HTX pushes the
  closed kline immediately since 2020-11, so the held push is the window's final state).

``CandleFinalizer`` keeps, per configured (symbol, interval), the latest open push and the
open time of the last window it emitted: memory is bounded by the number of streams, and
duplicates (a replayed frame, a rotation overlap) of an emitted window are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from ingest.records import Candle

Key = tuple[str, str]  # (compact symbol, seed interval)


@dataclass
class FinalizerStats:
    updates: int = 0
    finalized: int = 0  # emitted because the exchange said so (x / w)
    inferred: int = 0  # emitted because a later window appeared
    stale: int = 0  # an update for a window already emitted or older than the held one
    unexpected: int = 0  # a (symbol, interval) nobody subscribed to
    unusable: int = 0  # inferred final but without a base volume (old Gate frames)
    dropped_open: int = 0  # open candles forgotten after a disconnect


class CandleFinalizer:
    """Feed every candle push to ``observe``; it returns the candles that are now final
    (``closed=True``), oldest first."""

    def __init__(self, keys: Iterable[Key], *, infer_from_next_window: bool) -> None:
        self._keys = frozenset(keys)
        self.infer_from_next_window = infer_from_next_window
        self._open: dict[Key, Candle] = {}
        self._emitted: dict[Key, datetime] = {}  # open time of the last final window
        self.stats = FinalizerStats()

    @property
    def held(self) -> int:
        return len(self._open)

    def observe(self, candle: Candle) -> list[Candle]:
        key = (candle.symbol, candle.interval)
        if key not in self._keys:
            self.stats.unexpected += 1
            return []
        self.stats.updates += 1
        done = self._emitted.get(key)
        if done is not None and candle.timestamp <= done:
            self.stats.stale += 1
            return []
        out: list[Candle] = []
        held = self._open.get(key)
        if held is not None:
            if candle.timestamp < held.timestamp:
                self.stats.stale += 1  # reordered: an older window's push after a newer one
                return []
            if candle.timestamp > held.timestamp:
                del self._open[key]
                if self.infer_from_next_window:
                    out.extend(self._emit_inferred(key, held))
        if candle.closed:
            self._open.pop(key, None)
            self._emitted[key] = candle.timestamp
            self.stats.finalized += 1
            out.append(candle)
        else:
            self._open[key] = candle
        return out

    def _emit_inferred(self, key: Key, held: Candle) -> list[Candle]:
        # Old Gate frames have no base volume ("a"): the parser sets volume "0" while the
        # quote volume is not zero. Storing that would be a wrong row; REST repair has it.
        if held.volume == "0" and (held.quote_volume or "0").strip("0.") != "":
            self.stats.unusable += 1
            return []
        self._emitted[key] = held.timestamp
        self.stats.inferred += 1
        return [_closed(held)]

    def forget_open(self, symbols: Iterable[str] | None = None) -> int:
        """Drop held open candles (all, or of ``symbols``) after a disconnect: updates
        were missed, so the held push may not be its window's final state."""
        wanted = None if symbols is None else set(symbols)
        drop = [k for k in self._open if wanted is None or k[0] in wanted]
        for key in drop:
            del self._open[key]
        self.stats.dropped_open += len(drop)
        return len(drop)


def _closed(candle: Candle) -> Candle:
    return msgspec.structs.replace(candle, closed=True)

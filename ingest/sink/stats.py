"""Per-table counters. Plain numbers: ``Sink.stats()`` returns them as a dict, and whoever
exports metrics (Prometheus, logs) reads that dict."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, fields
from typing import Any

# Upper bounds (seconds) of the flush-latency histogram; the last bucket is +Inf.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Latency:
    count: int = 0
    sum_s: float = 0.0
    max_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum_s += seconds
        self.max_s = max(self.max_s, seconds)
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1

    def as_dict(self) -> dict[str, Any]:
        # Cumulative counts keyed by upper bound, the Prometheus histogram shape.
        cumulative, running = {}, 0
        for bound, n in zip([*map(str, LATENCY_BUCKETS_S), "+Inf"], self.buckets, strict=True):
            running += n
            cumulative[bound] = running
        return {"flush_latency_count": self.count, "flush_latency_sum_s": round(self.sum_s, 6),
                "flush_latency_max_s": round(self.max_s, 6), "flush_latency_buckets": cumulative}


@dataclass
class TableCounters:
    """Counters only ever grow; gauges (queue, spool) are read when ``stats()`` is called.

    rows_accepted        taken by put(); rows_ignored are not among them (open candles)
    rows_written         new rows stored
    rows_updated         stored candles replaced by a corrected close (different values)
    duplicates_skipped   rows whose key was already stored or repeated within a batch
    rows_rejected        failed validation before COPY
    rows_quarantined     failed in the database on their own (isolated by halving)
    rows_spooled         written to the spool (during an outage, or at shutdown)
    rows_replayed        read back from the spool and written
    rows_dropped         lost on purpose: order books under memory pressure, spool cap,
                         corrupt spool frames; every drop is also logged
    """

    rows_accepted: int = 0
    rows_ignored: int = 0
    rows_written: int = 0
    rows_updated: int = 0
    duplicates_skipped: int = 0
    rows_rejected: int = 0
    rows_quarantined: int = 0
    rows_spooled: int = 0
    rows_replayed: int = 0
    rows_dropped: int = 0
    batches: int = 0
    merged_batches: int = 0
    retries: int = 0
    producer_waits: int = 0
    queue_bytes_peak: int = 0
    latency: Latency = field(default_factory=Latency)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)
                               if f.name != "latency"}
        out.update(self.latency.as_dict())
        return out

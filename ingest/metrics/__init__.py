"""Market-wide metrics: CoinGecko /global and the alternative.me Fear & Greed index.

    values.py    decimal text for NUMERIC(38,18), source timestamps (pure)
    parse.py     response body → MarketMetric records (pure)
    schedule.py  next_run maths and Retry-After parsing (pure)
    http.py      one guarded GET: status, content type, size cap, timeout, retries
    sources.py   what to request from each source (URL, query, key header)
    service.py   MetricsService: the per-source runner, the history load, counters
    cmd.py       `ingest metrics [--once]`
"""

from ingest.metrics.schedule import next_run
from ingest.metrics.service import JobStats, MetricsService, RunResult

__all__ = ["JobStats", "MetricsService", "RunResult", "next_run"]

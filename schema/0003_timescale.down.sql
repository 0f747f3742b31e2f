-- ingest:requires timescaledb
-- Removes what 0003 added that can be removed in place. A hypertable cannot be turned
-- back into a plain table; the tables stay hypertables until 0001/0002's down steps drop them.
DROP MATERIALIZED VIEW IF EXISTS trades_ohlcv_1m;
SELECT remove_retention_policy(t, if_exists => true)
FROM unnest(ARRAY['candlesticks', 'trades', 'order_books', 'market_metrics',
                  'portfolio_snapshots', 'trade_executions', 'audit_log',
                  'security_events']::regclass[]) AS t;
SELECT remove_compression_policy(t, if_exists => true)
FROM unnest(ARRAY['candlesticks', 'trades', 'order_books', 'market_metrics']::regclass[]) AS t;

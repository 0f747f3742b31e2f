-- ingest:requires timescaledb
-- TimescaleDB only: skipped (and recorded as skipped) on plain PostgreSQL.
-- The time-series tables become hypertables on "timestamp"; compression is configured
-- here, while retention and compression *policies* take their intervals from settings
-- and are reconciled by the bootstrap after every upgrade (ingest/db/policies.py).
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- create_default_indexes => false: 0001/0002 already create the timestamp indexes, so
-- plain PostgreSQL and TimescaleDB end up with the same index set.
SELECT create_hypertable('candlesticks', 'timestamp', chunk_time_interval => INTERVAL '7 days',
                         create_default_indexes => false, migrate_data => true, if_not_exists => true);
SELECT create_hypertable('trades', 'timestamp', chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => false, migrate_data => true, if_not_exists => true);
SELECT create_hypertable('order_books', 'timestamp', chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => false, migrate_data => true, if_not_exists => true);
SELECT create_hypertable('market_metrics', 'timestamp', chunk_time_interval => INTERVAL '90 days',
                         create_default_indexes => false, migrate_data => true, if_not_exists => true);
SELECT create_hypertable('portfolio_snapshots', 'timestamp', create_default_indexes => false,
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('trade_executions', 'timestamp', create_default_indexes => false,
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('audit_log', 'timestamp', create_default_indexes => false,
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('security_events', 'timestamp', create_default_indexes => false,
                         migrate_data => true, if_not_exists => true);

-- Market data is compressed per (exchange, symbol); every unique key column is in
-- segmentby or orderby, so ON CONFLICT keeps working on compressed chunks.
ALTER TABLE candlesticks SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'interval, timestamp DESC');
ALTER TABLE trades SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'timestamp DESC, trade_id');
ALTER TABLE order_books SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'exchange, symbol',
    timescaledb.compress_orderby = 'timestamp DESC');
ALTER TABLE market_metrics SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'metric_type',
    timescaledb.compress_orderby = 'metric_name, timestamp DESC');

-- One-minute OHLCV computed from stored trades: a check on the candle feed and a cheap
-- source for charts. Refreshed by a policy; real-time aggregation covers the newest bucket.
CREATE MATERIALIZED VIEW trades_ohlcv_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT exchange,
       symbol,
       time_bucket(INTERVAL '1 minute', timestamp) AS bucket,
       first(price, timestamp) AS open,
       max(price) AS high,
       min(price) AS low,
       last(price, timestamp) AS close,
       sum(quantity) AS volume,
       sum(quote_quantity) AS quote_volume,
       count(*) AS trades_count
FROM trades
GROUP BY exchange, symbol, bucket
WITH NO DATA;

SELECT add_continuous_aggregate_policy('trades_ohlcv_1m',
    start_offset => INTERVAL '2 hours', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute', if_not_exists => true);

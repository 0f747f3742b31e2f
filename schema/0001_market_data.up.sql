-- Market data (DSTA): candlesticks, trades, order_books, market_metrics.
-- Plain tables here; 0003 turns them into hypertables when TimescaleDB is present.
-- Every unique key includes "timestamp" because TimescaleDB requires the partitioning
-- column in every unique index (the seed's trades key (exchange, symbol, trade_id) gains it).
-- Prices and sizes are NUMERIC(38,18): exact, never float. CHECKs back the writer's validation.

CREATE TABLE candlesticks (
    exchange      TEXT           NOT NULL,
    symbol        TEXT           NOT NULL,
    interval      TEXT           NOT NULL,
    timestamp     TIMESTAMPTZ    NOT NULL,  -- window open time, UTC
    open          NUMERIC(38,18) NOT NULL CHECK (open > 0),
    high          NUMERIC(38,18) NOT NULL CHECK (high > 0),
    low           NUMERIC(38,18) NOT NULL CHECK (low > 0),
    close         NUMERIC(38,18) NOT NULL CHECK (close > 0),
    volume        NUMERIC(38,18) NOT NULL CHECK (volume >= 0),        -- base asset
    quote_volume  NUMERIC(38,18)          CHECK (quote_volume >= 0),  -- NULL where the exchange gives none
    trades_count  BIGINT                  CHECK (trades_count >= 0),  -- NULL where the exchange gives none
    CONSTRAINT candlesticks_exchange_symbol_interval_timestamp_key
        UNIQUE (exchange, symbol, interval, timestamp)
);
CREATE INDEX idx_candlesticks_timestamp ON candlesticks (timestamp DESC);

CREATE TABLE trades (
    exchange        TEXT           NOT NULL,
    symbol          TEXT           NOT NULL,
    trade_id        BIGINT         NOT NULL,  -- the exchange's own id (Binance t, Gate id, HTX tradeId)
    timestamp       TIMESTAMPTZ    NOT NULL,  -- trade time, UTC
    price           NUMERIC(38,18) NOT NULL CHECK (price > 0),
    quantity        NUMERIC(38,18) NOT NULL CHECK (quantity >= 0),
    quote_quantity  NUMERIC(38,18)          CHECK (quote_quantity >= 0),
    is_buyer_maker  BOOLEAN        NOT NULL,
    -- seed: UNIQUE (exchange, symbol, trade_id); a hypertable needs the time column too
    CONSTRAINT trades_exchange_symbol_trade_id_timestamp_key
        UNIQUE (exchange, symbol, trade_id, timestamp)
);
CREATE INDEX idx_trades_exchange_symbol_timestamp ON trades (exchange, symbol, timestamp DESC);
CREATE INDEX idx_trades_timestamp ON trades (timestamp DESC);

CREATE TABLE order_books (
    exchange        TEXT        NOT NULL,
    symbol          TEXT        NOT NULL,
    timestamp       TIMESTAMPTZ NOT NULL,
    bids            JSONB       NOT NULL,  -- [["price","qty"], ...] best first, decimal text as received
    asks            JSONB       NOT NULL,
    last_update_id  BIGINT      NOT NULL,
    CONSTRAINT order_books_exchange_symbol_timestamp_key UNIQUE (exchange, symbol, timestamp),
    CHECK (jsonb_typeof(bids) = 'array' AND jsonb_typeof(asks) = 'array')
);
CREATE INDEX idx_order_books_timestamp ON order_books (timestamp DESC);

CREATE TABLE market_metrics (
    metric_type  TEXT           NOT NULL
        CHECK (metric_type IN ('btc_dominance', 'total_market_cap', 'fear_greed_index', 'other')),
    timestamp    TIMESTAMPTZ    NOT NULL,  -- the source's own time (CoinGecko updated_at, index day)
    value        NUMERIC(38,18) NOT NULL,
    metadata     JSONB          NOT NULL DEFAULT '{}'::jsonb,
    -- fix: several 'other' metrics (named in metadata) share one timestamp, so the seed's
    -- UNIQUE (metric_type, timestamp) would make them collide; the name, derived from
    -- metadata and never fed by hand, joins the key.
    metric_name  TEXT GENERATED ALWAYS AS (COALESCE(metadata->>'name', '')) STORED,
    CONSTRAINT market_metrics_metric_type_name_timestamp_key
        UNIQUE (metric_type, metric_name, timestamp)
);
CREATE INDEX idx_market_metrics_timestamp ON market_metrics (timestamp DESC);

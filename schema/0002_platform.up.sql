-- The trading platform schema (Octopus), with the seed's defects fixed.
-- fix: uuid_generate_v4() needs uuid-ossp; gen_random_uuid() is built in (PostgreSQL 13+).
-- fix: DEFAULT ARRAY[] has no element type; '{}'::text[] does.
-- fix: hypertables (0003) need the time column in every unique key, so the ids of
--      trade_executions, audit_log and security_events are keyed (id, timestamp).

CREATE TABLE users (
    id                    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email                 VARCHAR(255) UNIQUE NOT NULL,
    password_hash         VARCHAR(255) NOT NULL,
    first_name            VARCHAR(100),
    last_name             VARCHAR(100),
    is_active             BOOLEAN DEFAULT true,
    is_verified           BOOLEAN DEFAULT false,
    roles                 TEXT[] DEFAULT ARRAY['user']::text[],
    permissions           TEXT[] DEFAULT '{}'::text[],  -- fix: was ARRAY[]
    created_at            TIMESTAMPTZ DEFAULT NOW(),
    updated_at            TIMESTAMPTZ DEFAULT NOW(),
    last_login_at         TIMESTAMPTZ,
    failed_login_attempts INTEGER DEFAULT 0,
    locked_until          TIMESTAMPTZ
);

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      UUID REFERENCES users(id) ON DELETE CASCADE,
    key_hash     VARCHAR(64) UNIQUE NOT NULL,
    name         VARCHAR(100) NOT NULL DEFAULT 'API Key',
    is_active    BOOLEAN DEFAULT true,
    permissions  TEXT[] DEFAULT '{}'::text[],  -- fix: was ARRAY[]
    last_used_at TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE portfolios (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      UUID REFERENCES users(id) ON DELETE CASCADE,
    name         VARCHAR(255) NOT NULL,
    description  TEXT,
    total_value  DECIMAL(20, 2) DEFAULT 0.00,
    cash_balance DECIMAL(20, 2) DEFAULT 0.00,
    is_active    BOOLEAN DEFAULT true,
    created_at   TIMESTAMPTZ DEFAULT NOW(),
    updated_at   TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE positions (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id   UUID REFERENCES portfolios(id) ON DELETE CASCADE,
    symbol         VARCHAR(20) NOT NULL,
    quantity       DECIMAL(20, 8) NOT NULL,
    avg_cost       DECIMAL(20, 2) NOT NULL,
    current_price  DECIMAL(20, 2),
    market_value   DECIMAL(20, 2),
    unrealized_pnl DECIMAL(20, 2),
    position_type  VARCHAR(20) DEFAULT 'long',
    created_at     TIMESTAMPTZ DEFAULT NOW(),
    updated_at     TIMESTAMPTZ DEFAULT NOW(),
    UNIQUE (portfolio_id, symbol)
);

CREATE TABLE orders (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    portfolio_id      UUID REFERENCES portfolios(id) ON DELETE CASCADE,
    symbol            VARCHAR(20) NOT NULL,
    side              VARCHAR(10) NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type        VARCHAR(20) NOT NULL,
    quantity          DECIMAL(20, 8) NOT NULL CHECK (quantity > 0),
    price             DECIMAL(20, 2),
    stop_price        DECIMAL(20, 2),
    filled_quantity   DECIMAL(20, 8) DEFAULT 0,
    avg_fill_price    DECIMAL(20, 2),
    status            VARCHAR(20) DEFAULT 'pending',
    external_order_id VARCHAR(100),
    broker            VARCHAR(50),
    commission        DECIMAL(10, 2) DEFAULT 0,
    created_at        TIMESTAMPTZ DEFAULT NOW(),
    updated_at        TIMESTAMPTZ DEFAULT NOW(),
    filled_at         TIMESTAMPTZ
);

CREATE TABLE portfolio_snapshots (
    portfolio_id       UUID NOT NULL,
    timestamp          TIMESTAMPTZ NOT NULL,
    total_value        DECIMAL(20, 2) NOT NULL,
    cash_balance       DECIMAL(20, 2) NOT NULL,
    day_change         DECIMAL(20, 2),
    day_change_percent DECIMAL(8, 4),
    positions_count    INTEGER,
    created_at         TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE trade_executions (
    id           UUID NOT NULL DEFAULT gen_random_uuid(),
    order_id     UUID REFERENCES orders(id),
    portfolio_id UUID NOT NULL,
    symbol       VARCHAR(20) NOT NULL,
    side         VARCHAR(10) NOT NULL,
    quantity     DECIMAL(20, 8) NOT NULL,
    price        DECIMAL(20, 2) NOT NULL,
    commission   DECIMAL(10, 2) DEFAULT 0,
    timestamp    TIMESTAMPTZ NOT NULL,
    broker       VARCHAR(50),
    execution_id VARCHAR(100),
    created_at   TIMESTAMPTZ DEFAULT NOW(),
    PRIMARY KEY (id, timestamp)  -- fix: was PRIMARY KEY (id)
);

CREATE TABLE audit_log (
    id            UUID NOT NULL DEFAULT gen_random_uuid(),
    user_id       UUID REFERENCES users(id),
    action        VARCHAR(100) NOT NULL,
    resource_type VARCHAR(50) NOT NULL,
    resource_id   VARCHAR(100),
    old_values    JSONB,
    new_values    JSONB,
    ip_address    INET,
    user_agent    TEXT,
    timestamp     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    session_id    VARCHAR(100),
    PRIMARY KEY (id, timestamp)  -- fix: was PRIMARY KEY (id)
);

CREATE TABLE security_events (
    id          UUID NOT NULL DEFAULT gen_random_uuid(),
    event_type  VARCHAR(50) NOT NULL,
    severity    VARCHAR(20) NOT NULL,
    user_id     UUID REFERENCES users(id),
    ip_address  INET,
    details     JSONB,
    timestamp   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    resolved_at TIMESTAMPTZ,
    resolved_by UUID REFERENCES users(id),
    PRIMARY KEY (id, timestamp)  -- fix: was PRIMARY KEY (id)
);

CREATE TABLE predictions (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    symbol             VARCHAR(20) NOT NULL,
    model_name         VARCHAR(100) NOT NULL,
    prediction_type    VARCHAR(50) NOT NULL,
    predicted_value    DECIMAL(20, 6),
    confidence_score   DECIMAL(5, 4),
    prediction_horizon VARCHAR(20),
    features           JSONB,
    created_at         TIMESTAMPTZ DEFAULT NOW(),
    target_date        TIMESTAMPTZ
);

CREATE TABLE model_performance (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    model_name      VARCHAR(100) NOT NULL,
    symbol          VARCHAR(20),
    metric_name     VARCHAR(50) NOT NULL,
    metric_value    DECIMAL(10, 6),
    evaluation_date DATE NOT NULL,
    data_period     VARCHAR(50),
    created_at      TIMESTAMPTZ DEFAULT NOW()
);

-- The seed's indexes.
CREATE INDEX idx_users_email ON users(email);
CREATE INDEX idx_users_active ON users(is_active) WHERE is_active = true;
CREATE INDEX idx_portfolios_user_id ON portfolios(user_id);
CREATE INDEX idx_portfolios_active ON portfolios(is_active) WHERE is_active = true;
CREATE INDEX idx_positions_portfolio_id ON positions(portfolio_id);
CREATE INDEX idx_positions_symbol ON positions(symbol);
CREATE INDEX idx_orders_portfolio_id ON orders(portfolio_id);
CREATE INDEX idx_orders_symbol ON orders(symbol);
CREATE INDEX idx_orders_status ON orders(status);
CREATE INDEX idx_orders_created_at ON orders(created_at);
CREATE INDEX idx_portfolio_snapshots_portfolio_time ON portfolio_snapshots(portfolio_id, timestamp DESC);
CREATE INDEX idx_portfolio_snapshots_timestamp ON portfolio_snapshots(timestamp DESC);
CREATE INDEX idx_trade_executions_portfolio_time ON trade_executions(portfolio_id, timestamp DESC);
CREATE INDEX idx_trade_executions_symbol_time ON trade_executions(symbol, timestamp DESC);
CREATE INDEX idx_trade_executions_timestamp ON trade_executions(timestamp DESC);
CREATE INDEX idx_audit_log_timestamp ON audit_log(timestamp DESC);
CREATE INDEX idx_security_events_timestamp ON security_events(timestamp DESC);

-- market_data is not a second, hand-fed copy of the candles: it is a view over
-- candlesticks with the seed's column names. The seed has no exchange or interval
-- column; both are exposed so a reader can pick one feed (e.g. interval = '1m').
-- volume is NUMERIC (crypto volumes are fractional; the seed's BIGINT would truncate).
-- vwap is the candle's quote volume over its base volume. The seed's created_at is
-- dropped: a derived row has no insertion time of its own.
CREATE VIEW market_data AS
SELECT c.symbol,
       c.timestamp,
       c.open  AS open_price,
       c.high  AS high_price,
       c.low   AS low_price,
       c.close AS close_price,
       c.volume,
       CASE WHEN c.volume > 0 THEN c.quote_volume / c.volume END AS vwap,
       c.exchange,
       c.interval
FROM candlesticks c;

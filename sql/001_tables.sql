-- The contract's tables, on plain PostgreSQL. Idempotent: run at every start.
-- Column types: decimals NUMERIC (exact, any scale), trades/sequence BIGINT,
-- counts INTEGER, everything else TEXT; the record's time is `time`.

CREATE TABLE IF NOT EXISTS crypto_prices (
    time         TIMESTAMPTZ NOT NULL,
    coin_id      TEXT        NOT NULL,
    symbol       TEXT        NOT NULL,
    exchange_id  TEXT        NOT NULL,
    usd_price    NUMERIC     NOT NULL,
    btc_price    NUMERIC,
    market_cap   NUMERIC,
    volume_24h   NUMERIC,
    change_24h   NUMERIC,
    source       TEXT        NOT NULL,
    attribution  TEXT,
    PRIMARY KEY (coin_id, exchange_id, time)
);

CREATE TABLE IF NOT EXISTS ohlcv_data (
    time         TIMESTAMPTZ NOT NULL,
    coin_id      TEXT        NOT NULL,
    symbol       TEXT        NOT NULL,
    exchange_id  TEXT        NOT NULL,
    timeframe    TEXT        NOT NULL,
    open_price   NUMERIC     NOT NULL,
    high_price   NUMERIC     NOT NULL,
    low_price    NUMERIC     NOT NULL,
    close_price  NUMERIC     NOT NULL,
    volume       NUMERIC     NOT NULL,
    trades       BIGINT,
    source       TEXT        NOT NULL,
    attribution  TEXT,
    PRIMARY KEY (coin_id, exchange_id, timeframe, time)
);

CREATE TABLE IF NOT EXISTS market_analytics (
    time                     TIMESTAMPTZ NOT NULL,
    total_market_cap         NUMERIC     NOT NULL,
    total_volume             NUMERIC     NOT NULL,
    btc_dominance            NUMERIC     NOT NULL,
    eth_dominance            NUMERIC,
    active_cryptocurrencies  INTEGER,
    active_exchanges         INTEGER,
    market_cap_change_24h    NUMERIC,
    source                   TEXT        NOT NULL,
    attribution              TEXT,
    PRIMARY KEY (source, time)
);

CREATE TABLE IF NOT EXISTS level1_quotes (
    time         TIMESTAMPTZ NOT NULL,
    exchange_id  TEXT        NOT NULL,
    symbol       TEXT        NOT NULL,
    best_bid     NUMERIC     NOT NULL,
    best_ask     NUMERIC     NOT NULL,
    bid_size     NUMERIC,
    ask_size     NUMERIC,
    sequence     BIGINT      NOT NULL DEFAULT 0,
    source       TEXT        NOT NULL,
    PRIMARY KEY (exchange_id, symbol, time, sequence)
);

-- The next offset to read per (consumer group, topic, partition), written in
-- the same transaction as the rows it covers.
CREATE TABLE IF NOT EXISTS timesink_offsets (
    consumer_group  TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    partition       INTEGER     NOT NULL,
    next_offset     BIGINT      NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- The broker's id (KIP-516) of each topic whose offsets a consumer group has
-- stored. A topic deleted and created again keeps its name but gets a new id:
-- the offsets stored for the old one then start again from 0.
CREATE TABLE IF NOT EXISTS timesink_topics (
    consumer_group  TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    topic_id        TEXT        NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic)
);

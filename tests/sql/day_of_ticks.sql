-- A day of market data per contract table (2026-11-02, UTC), as a feed
-- would send it: prices on a random walk per coin and feed, each coin with
-- the decimals it is quoted in; one-minute candles; market analytics each
-- minute; level-1 quotes each second with rising sequence numbers.
-- Deterministic (setseed); loaded straight into the tables, not through
-- the sink: what is measured is how the stored rows compress.
SELECT setseed(0.42);

WITH coins(coin_id, symbol, base, decimals, supply) AS (VALUES
    ('bitcoin', 'BTC', 97000.0, 2, 19800000.0),
    ('ethereum', 'ETH', 3400.0, 2, 120400000.0),
    ('tether', 'USDT', 1.0, 6, 140000000000.0),
    ('solana', 'SOL', 240.0, 3, 475000000.0),
    ('ripple', 'XRP', 1.4, 5, 57000000000.0),
    ('binancecoin', 'BNB', 650.0, 2, 144000000.0),
    ('dogecoin', 'DOGE', 0.39, 6, 147000000000.0),
    ('cardano', 'ADA', 1.05, 5, 35000000000.0),
    ('tron', 'TRX', 0.21, 6, 86000000000.0),
    ('avalanche-2', 'AVAX', 45.0, 3, 410000000.0),
    ('chainlink', 'LINK', 24.0, 4, 626000000.0),
    ('shiba-inu', 'SHIB', 0.000025, 9, 589000000000000.0),
    ('polkadot', 'DOT', 8.9, 4, 1500000000.0),
    ('litecoin', 'LTC', 110.0, 2, 75000000.0),
    ('uniswap', 'UNI', 14.0, 4, 600000000.0),
    ('near', 'NEAR', 6.5, 4, 1200000000.0),
    ('aptos', 'APT', 12.0, 4, 540000000.0),
    ('pepe', 'PEPE', 0.00002, 10, 420000000000000.0),
    ('stellar', 'XLM', 0.45, 6, 30000000000.0),
    ('monero', 'XMR', 190.0, 2, 18400000.0)),
feeds(exchange_id, source, attribution) AS (VALUES
    ('aggregate', 'coingecko', 'CoinGecko API'),
    ('binance', 'binance', NULL),
    ('coinbase', 'coinbase', NULL),
    ('kraken', 'kraken', NULL)),
steps AS (
    SELECT c.*, f.*, s.s, (random() - 0.5) * 0.002 AS step, random() AS jitter
      FROM coins c CROSS JOIN feeds f CROSS JOIN generate_series(0, 5759) AS s(s)),
walk AS (
    SELECT *, sum(step) OVER (PARTITION BY coin_id, exchange_id ORDER BY s) AS w FROM steps)
INSERT INTO crypto_prices (time, coin_id, symbol, exchange_id, usd_price, btc_price, market_cap,
                           volume_24h, change_24h, source, attribution)
SELECT timestamptz '2026-11-02 00:00:00+00' + s * interval '15 seconds'
           + (jitter * 1000)::int * interval '1 millisecond',
       coin_id, symbol, exchange_id,
       round((base * exp(w))::numeric, decimals),
       round((base * exp(w) / 97000.0)::numeric, 8),
       round((base * exp(w) * supply)::numeric, 2),
       round((base * supply * 0.04 * (1 + w * 10))::numeric, 2),
       round((w * 100)::numeric, 2),
       source, attribution
  FROM walk;

WITH coins(coin_id, symbol, base, decimals) AS (VALUES
    ('bitcoin', 'BTC', 97000.0, 2), ('ethereum', 'ETH', 3400.0, 2), ('solana', 'SOL', 240.0, 3),
    ('ripple', 'XRP', 1.4, 5), ('dogecoin', 'DOGE', 0.39, 6), ('cardano', 'ADA', 1.05, 5),
    ('chainlink', 'LINK', 24.0, 4), ('litecoin', 'LTC', 110.0, 2), ('polkadot', 'DOT', 8.9, 4),
    ('avalanche-2', 'AVAX', 45.0, 3)),
feeds(exchange_id) AS (VALUES ('binance'), ('coinbase'), ('kraken')),
steps AS (
    SELECT c.*, f.*, m.m, (random() - 0.5) * 0.004 AS step, random() AS up, random() AS down,
           random() AS activity
      FROM coins c CROSS JOIN feeds f CROSS JOIN generate_series(0, 1439) AS m(m)),
walk AS (
    SELECT *, sum(step) OVER w AS close_w, sum(step) OVER w - step AS open_w
      FROM steps WINDOW w AS (PARTITION BY coin_id, exchange_id ORDER BY m))
INSERT INTO ohlcv_data (time, coin_id, symbol, exchange_id, timeframe, open_price, high_price,
                        low_price, close_price, volume, trades, source, attribution)
SELECT timestamptz '2026-11-02 00:00:00+00' + m * interval '1 minute', coin_id, symbol, exchange_id,
       '1m',
       round((base * exp(open_w))::numeric, decimals),
       round((base * exp(greatest(open_w, close_w) + up * 0.001))::numeric, decimals),
       round((base * exp(least(open_w, close_w) - down * 0.001))::numeric, decimals),
       round((base * exp(close_w))::numeric, decimals),
       round((activity * 5000000 / base)::numeric, 6),
       (activity * 2000)::bigint,
       exchange_id, NULL
  FROM walk;

INSERT INTO market_analytics (time, total_market_cap, total_volume, btc_dominance, eth_dominance,
                              active_cryptocurrencies, active_exchanges, market_cap_change_24h,
                              source, attribution)
SELECT timestamptz '2026-11-02 00:00:00+00' + m * interval '1 minute',
       round((3.4e12 * (1 + w))::numeric, 2),
       round((1.2e11 * (1 + w * 3))::numeric, 2),
       round((56.3 + w * 10)::numeric, 4),
       round((12.1 - w * 5)::numeric, 4),
       17000 + m / 60, 1200 + m / 240,
       round((w * 100)::numeric, 2),
       'coingecko', 'CoinGecko API'
  FROM (SELECT m, sum((random() - 0.5) * 0.002) OVER (ORDER BY m) AS w
          FROM generate_series(0, 1439) AS m(m)) AS walk;

WITH symbols(symbol, base, decimals) AS (VALUES
    ('BTC-USD', 97000.0, 2), ('ETH-USD', 3400.0, 2), ('SOL-USD', 240.0, 3),
    ('XRP-USD', 1.4, 5), ('DOGE-USD', 0.39, 6)),
feeds(exchange_id) AS (VALUES ('binance'), ('coinbase')),
steps AS (
    SELECT y.*, f.*, s.s, (random() - 0.5) * 0.0004 AS step, random() AS spread,
           random() AS bid_size, random() AS ask_size, (random() * 40)::int AS updates
      FROM symbols y CROSS JOIN feeds f CROSS JOIN generate_series(0, 86399) AS s(s)),
walk AS (
    SELECT *, sum(step) OVER w AS mid_w, sum(updates) OVER w AS sequence
      FROM steps WINDOW w AS (PARTITION BY symbol, exchange_id ORDER BY s))
INSERT INTO level1_quotes (time, exchange_id, symbol, best_bid, best_ask, bid_size, ask_size,
                           sequence, source)
SELECT timestamptz '2026-11-02 00:00:00+00' + s * interval '1 second', exchange_id, symbol,
       round((base * exp(mid_w) * (1 - 0.00005 * (1 + spread)))::numeric, decimals),
       round((base * exp(mid_w) * (1 + 0.00005 * (1 + spread)))::numeric, decimals),
       round((bid_size * 12)::numeric, 6),
       round((ask_size * 12)::numeric, 6),
       1000000 + sequence, 'ws'
  FROM walk;

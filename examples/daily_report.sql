-- Seed 000's daily report (generateDailyReport) over the one-hour candles:
-- for coin $1 on day $2, per hour, the open, high, low and close of its
-- aggregate price feed (exchange_id 'aggregate', the feed without an
-- exchange) and how many prices came in. It returns what the seed's query
-- over crypto_prices returns, reading 24 rows a day instead of every price.
-- The day is the session's TimeZone's, as DATE(time) is in the seed.
SELECT bucket AS hour, open, high, low, close, ticks AS data_points
  FROM crypto_candles_1h
 WHERE coin_id = $1 AND exchange_id = 'aggregate'
   AND bucket >= $2::date AND bucket < $2::date + 1
 ORDER BY hour

#!/usr/bin/env bash
# make demo: the sink end to end on local services.
# DEMO_SECONDS (default 20) of load at DEMO_RATE messages/s (default 2000).
# DEMO_STREAM=crypto (default: the four contract tables) or odin (seed 004's
# token events, stored by the mapping in examples/odin.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${DEMO_SECONDS:-20}
rate=${DEMO_RATE:-2000}
stream=${DEMO_STREAM:-crypto}
case $stream in crypto | odin) ;; *) echo "DEMO_STREAM is crypto or odin, not $stream" >&2; exit 2 ;; esac
scripts/services.sh start
eval "$(scripts/services.sh env)"
db=timesink_demo
# A fresh database each run, so the final counts are this run's rows. The
# group's Kafka offsets make a rerun start after the previous run's messages.
psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
psql "$DATABASE_URL" -qc "CREATE DATABASE $db"
export DATABASE_URL="${DATABASE_URL%/*}/$db"
export TIMESINK_GROUP_ID=timesink-demo TIMESINK_PROGRESS_INTERVAL_MS=2000
echo "== building timesink (release)"
cargo build --release --quiet
bin=target/release/timesink
if [ "$stream" = odin ]; then
  echo "== creating the odin topics (examples/odin-topics.yaml)"
  $bin topics create --file examples/odin-topics.yaml
  export TIMESINK_CONFIG_FILE=examples/odin.toml
else
  echo "== creating topics from topics.yaml (+ binance, coinbase)"
  $bin topics create --exchanges binance,coinbase
fi
echo "== starting the sink (progress every 2 s)"
$bin run &
sink=$!
trap 'kill -TERM $sink 2>/dev/null || true' EXIT
if [ "$stream" = odin ]; then
  echo "== producing $((seconds * rate)) odin events at $rate/s: every type, seed 004's weights, gzip"
  $bin produce --stream odin --count $((seconds * rate)) --rate "$rate"
else
  echo "== producing $((seconds * rate)) messages at $rate/s: all four types, every encoding"
  $bin produce --count $((seconds * rate)) --rate "$rate" --exchanges binance,coinbase
fi
echo "== waiting for the sink to catch up (stored offsets unchanged for 6 s)"
stored() { psql "$DATABASE_URL" -qtAc "SELECT coalesce(sum(next_offset), 0) FROM timesink_offsets WHERE consumer_group = '$TIMESINK_GROUP_ID'"; }
deadline=$((SECONDS + 180))
last=-1
while :; do
  now=$(stored)
  [ "$now" = "$last" ] && [ "$now" != 0 ] && break
  [ $SECONDS -ge $deadline ] && { echo "the sink did not catch up within 180 s" >&2; exit 1; }
  last=$now
  sleep 6
done
echo "== stopping the sink (SIGTERM)"
kill -TERM $sink
wait $sink
trap - EXIT
echo "== rows per table"
if [ "$stream" = odin ]; then
  psql "$DATABASE_URL" -c "SELECT 'odin_trades' AS table_name, count(*) FROM odin_trades
    UNION ALL SELECT 'odin_events', count(*) FROM odin_events"
  echo "== the busiest tokens' last hour of trades"
  psql "$DATABASE_URL" -c "SELECT token_id, count(*) AS trades, sum(amount) AS volume,
      (array_agg(price ORDER BY time DESC))[1] AS last_price
    FROM odin_trades WHERE time > now() - interval '1 hour'
    GROUP BY token_id ORDER BY trades DESC LIMIT 5"
else
  psql "$DATABASE_URL" -c "SELECT 'crypto_prices' AS table_name, count(*) FROM crypto_prices
    UNION ALL SELECT 'ohlcv_data', count(*) FROM ohlcv_data
    UNION ALL SELECT 'market_analytics', count(*) FROM market_analytics
    UNION ALL SELECT 'level1_quotes', count(*) FROM level1_quotes"
  # With TimescaleDB, the candles are current at once (real-time aggregation).
  if [ "$(psql "$DATABASE_URL" -qtAc "SELECT to_regclass('crypto_candles_1m') IS NOT NULL")" = t ]; then
    echo "== the newest one-minute candles"
    psql "$DATABASE_URL" -c "SELECT bucket, coin_id, exchange_id, open, high, low, close, ticks
      FROM crypto_candles_1m ORDER BY bucket DESC, ticks DESC LIMIT 5"
  fi
fi
echo "Services keep running; 'make stop' stops them."

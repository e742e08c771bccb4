#!/usr/bin/env bash
# make demo: the sink end to end on local services.
# DEMO_SECONDS (default 20) of load at DEMO_RATE messages/s (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${DEMO_SECONDS:-20}
rate=${DEMO_RATE:-2000}
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
echo "== creating topics from topics.yaml (+ binance, coinbase)"
$bin topics create --exchanges binance,coinbase
echo "== starting the sink (progress every 2 s)"
$bin run &
sink=$!
trap 'kill -TERM $sink 2>/dev/null || true' EXIT
echo "== producing $((seconds * rate)) messages at $rate/s: all four types, every encoding"
$bin produce --count $((seconds * rate)) --rate "$rate" --exchanges binance,coinbase
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
psql "$DATABASE_URL" -c "SELECT 'crypto_prices' AS table_name, count(*) FROM crypto_prices
  UNION ALL SELECT 'ohlcv_data', count(*) FROM ohlcv_data
  UNION ALL SELECT 'market_analytics', count(*) FROM market_analytics
  UNION ALL SELECT 'level1_quotes', count(*) FROM level1_quotes"
echo "Services keep running; 'make stop' stops them."

-- Applied only where the timescaledb extension is installed (the sink checks
-- pg_available_extensions first). Idempotent: hypertables on `time`,
-- compression segmented by the key columns other than `time`, compressed
-- after an age. Retention policies stay off.

CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('crypto_prices', 'time', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('ohlcv_data', 'time', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('market_analytics', 'time', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('level1_quotes', 'time', if_not_exists => TRUE, migrate_data => TRUE);

DO $$
DECLARE
    spec RECORD;
BEGIN
    FOR spec IN SELECT * FROM (VALUES
        ('crypto_prices',    'coin_id, exchange_id',            INTERVAL '7 days'),
        ('ohlcv_data',       'coin_id, exchange_id, timeframe', INTERVAL '30 days'),
        ('market_analytics', 'source',                          INTERVAL '30 days'),
        ('level1_quotes',    'exchange_id, symbol, sequence',   INTERVAL '1 day')
    ) AS t(hypertable, segment_by, compress_after)
    LOOP
        IF NOT EXISTS (
            SELECT 1 FROM timescaledb_information.hypertables h
            WHERE h.hypertable_name = spec.hypertable
              AND h.hypertable_schema = current_schema()
              AND h.compression_enabled
        ) THEN
            EXECUTE format(
                'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
                spec.hypertable, spec.segment_by, 'time DESC');
        END IF;
        PERFORM add_compression_policy(spec.hypertable::regclass, spec.compress_after, if_not_exists => TRUE);
    END LOOP;
END
$$;

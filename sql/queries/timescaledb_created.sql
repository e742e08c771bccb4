-- Whether the TimescaleDB extension is created in this database.
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')

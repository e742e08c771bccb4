-- The hypertables of the database.
SELECT hypertable_name::text FROM timescaledb_information.hypertables

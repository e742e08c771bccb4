-- `timesink check`: the server's version, TimescaleDB available, preloaded
-- and created (its version), and whether this connection uses TLS.
SELECT current_setting('server_version'),
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
       (SELECT setting LIKE '%timescaledb%' FROM pg_settings WHERE name = 'shared_preload_libraries'),
       (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
       coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)

-- TimescaleDB: available (installed on the server), created in this
-- database, preloaded (NULL where pg_settings hides the setting from the
-- role).
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
       (SELECT setting LIKE '%timescaledb%' FROM pg_settings WHERE name = 'shared_preload_libraries')

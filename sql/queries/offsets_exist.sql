-- Whether the offsets table exists yet.
SELECT to_regclass('timesink_offsets') IS NOT NULL

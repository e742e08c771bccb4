-- Instances starting together apply the schema one after another.
SELECT pg_advisory_xact_lock(hashtext('timesink_schema'))

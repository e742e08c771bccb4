-- Each live instance's fingerprint of each table, for the group ($1): those
-- seen within the last $2 seconds.
SELECT instance, table_name, fingerprint
  FROM timesink_mappings
 WHERE consumer_group = $1 AND seen_at > now() - make_interval(secs => $2::float8)
 ORDER BY instance, table_name

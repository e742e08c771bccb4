-- This instance ($2) of the group ($1) describes these tables ($3) so ($4,
-- each table's description as canonical JSON): recorded as a fingerprint,
-- seen now. Rows of instances gone for a day are removed.
WITH gone AS (
    DELETE FROM timesink_mappings
     WHERE consumer_group = $1 AND seen_at < now() - interval '1 day'
)
INSERT INTO timesink_mappings (consumer_group, instance, table_name, fingerprint, seen_at)
SELECT $1, $2, t.name, md5(t.description), now()
  FROM unnest($3::text[], $4::text[]) AS t(name, description)
    ON CONFLICT (consumer_group, instance, table_name)
    DO UPDATE SET fingerprint = EXCLUDED.fingerprint, seen_at = EXCLUDED.seen_at

-- A hypertable's chunks, those compressed, and their bytes before and
-- after compression (NULL until a chunk is compressed). $1: its name in
-- the current schema. The stats are no row for a hypertable without chunks.
SELECT coalesce(s.total_chunks, 0)::bigint,
       coalesce(s.number_compressed_chunks, 0)::bigint,
       s.before_compression_total_bytes::bigint,
       s.after_compression_total_bytes::bigint
  FROM (SELECT 1) AS one
  LEFT JOIN hypertable_compression_stats(format('%I.%I', current_schema(), $1::text)::regclass) AS s
         ON true

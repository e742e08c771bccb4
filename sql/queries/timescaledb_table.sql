-- What the database holds of a table's TimescaleDB settings ($1: its name
-- in the current schema; $2, $3: the described order-by columns and
-- whether each is descending, to be formatted as TimescaleDB shows them).
-- Intervals in microseconds, as extract(epoch) counts them. Last, the
-- table's unique indexes and own triggers: either turns TimescaleDB's
-- direct compress off. A table not created yet has no settings (no
-- `::regclass` cast, which fails on a missing table).
WITH t AS (SELECT current_schema() AS sch, $1::text AS name)
SELECT h.hypertable_name IS NOT NULL,
       (SELECT (extract(epoch FROM d.time_interval) * 1000000)::bigint
          FROM timescaledb_information.dimensions d
         WHERE d.hypertable_schema = t.sch AND d.hypertable_name = t.name
           AND d.dimension_number = 1),
       coalesce(h.compression_enabled, false),
       s.segmentby,
       s.orderby,
       (SELECT string_agg(format('%I%s', u.col, CASE WHEN u.descending THEN ' DESC' ELSE '' END), ',')
          FROM unnest($2::text[], $3::bool[]) AS u(col, descending)),
       (SELECT (extract(epoch FROM (j.config->>'compress_after')::interval) * 1000000)::bigint
          FROM timescaledb_information.jobs j
         WHERE j.proc_name = 'policy_compression'
           AND j.hypertable_schema = t.sch AND j.hypertable_name = t.name
         LIMIT 1),
       (SELECT (extract(epoch FROM (j.config->>'drop_after')::interval) * 1000000)::bigint
          FROM timescaledb_information.jobs j
         WHERE j.proc_name = 'policy_retention'
           AND j.hypertable_schema = t.sch AND j.hypertable_name = t.name
         LIMIT 1),
       (SELECT count(*) FROM pg_index i
         WHERE i.indrelid = to_regclass(format('%I.%I', t.sch, t.name)) AND i.indisunique),
       (SELECT count(*) FROM pg_trigger g
         WHERE g.tgrelid = to_regclass(format('%I.%I', t.sch, t.name)) AND NOT g.tgisinternal)
  FROM t
  LEFT JOIN timescaledb_information.hypertables h
         ON h.hypertable_schema = t.sch AND h.hypertable_name = t.name
  LEFT JOIN timescaledb_information.hypertable_compression_settings s
         ON h.hypertable_name IS NOT NULL
        AND s.hypertable = to_regclass(format('%I.%I', t.sch, t.name))

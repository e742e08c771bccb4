-- What the database holds of an aggregate ($1: its name in the current
-- schema): whether a relation of that name exists, whether it is a
-- continuous aggregate, the sink's mark on it, real-time or not, and its
-- refresh policy (start offset, end offset, schedule; microseconds).
WITH a AS (SELECT current_schema() AS sch, $1::text AS name,
                  to_regclass(format('%I.%I', current_schema(), $1::text)) AS rel)
SELECT a.rel IS NOT NULL,
       c.view_name IS NOT NULL,
       obj_description(a.rel, 'pg_class'),
       coalesce(c.materialized_only, false),
       j.job_id IS NOT NULL,
       (extract(epoch FROM (j.config->>'start_offset')::interval) * 1000000)::bigint,
       (extract(epoch FROM (j.config->>'end_offset')::interval) * 1000000)::bigint,
       (extract(epoch FROM j.schedule_interval) * 1000000)::bigint
  FROM a
  LEFT JOIN timescaledb_information.continuous_aggregates c
         ON c.view_schema = a.sch AND c.view_name = a.name
  LEFT JOIN timescaledb_information.jobs j
         ON j.proc_name = 'policy_refresh_continuous_aggregate'
        AND j.hypertable_schema = a.sch AND j.hypertable_name = a.name

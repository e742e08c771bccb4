-- How many of the given tables (quoted names, $1) do not exist: the
-- schema is applied only when one is missing.
SELECT count(*) FROM unnest($1::text[]) AS t(name) WHERE to_regclass(name) IS NULL

-- Which of the given tables (quoted names, $1) do not exist, as given: the
-- schema is applied only when one is missing, and what it creates it sets
-- from the description.
SELECT coalesce(array_agg(name), '{}') FROM unnest($1::text[]) AS t(name) WHERE to_regclass(name) IS NULL

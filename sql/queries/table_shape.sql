-- A table's columns (name, type, NOT NULL, default) in order, each row with
-- the primary key's columns in key order (NULL without one), then whether
-- the column is generated (stored from an expression, never written). $1 is a table
-- name as the search path resolves it; no rows when there is no such table.
SELECT a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       a.atthasdef,
       (SELECT array_agg(k.attname::text ORDER BY array_position(i.indkey::int2[], k.attnum))
          FROM pg_index i
          JOIN pg_attribute k ON k.attrelid = i.indrelid AND k.attnum = ANY (i.indkey::int2[])
         WHERE i.indrelid = a.attrelid AND i.indisprimary),
       a.attgenerated <> ''
  FROM pg_attribute a
 WHERE a.attrelid = to_regclass($1)
   AND a.attnum > 0
   AND NOT a.attisdropped
 ORDER BY a.attnum

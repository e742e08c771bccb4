-- Moves the stored offsets of one topic's partitions forward, but only from
-- the value the writing instance expects ($4; NULL: no row yet). Returns the
-- partitions it advanced; a partition missing from the result was written by
-- another instance meanwhile (the row lock makes a concurrent writer wait,
-- then see the new value and not match).
-- $1 consumer group, $2 topic, $3 partitions, $4 expected next offsets, $5 new next offsets.
WITH input AS (
    SELECT * FROM unnest($3::int[], $4::bigint[], $5::bigint[]) AS i(partition, expected, next_offset)
), advanced AS (
    UPDATE timesink_offsets o
       SET next_offset = i.next_offset, updated_at = now()
      FROM input i
     WHERE o.consumer_group = $1 AND o.topic = $2 AND o.partition = i.partition
       AND i.expected IS NOT NULL AND o.next_offset = i.expected
    RETURNING o.partition
), created AS (
    INSERT INTO timesink_offsets (consumer_group, topic, partition, next_offset, updated_at)
    SELECT $1, $2, i.partition, i.next_offset, now() FROM input i WHERE i.expected IS NULL
    ON CONFLICT DO NOTHING
    RETURNING partition
)
SELECT partition FROM advanced
UNION ALL
SELECT partition FROM created

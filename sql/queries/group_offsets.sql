-- `timesink check`: per topic, the partitions with stored offsets and the
-- sum of those offsets, for consumer group $1.
SELECT topic, count(*), sum(next_offset)::bigint FROM timesink_offsets
WHERE consumer_group = $1 GROUP BY topic ORDER BY topic

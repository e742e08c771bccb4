-- The next offset to read of each of partitions $3 of topic $2, for
-- consumer group $1, where one is stored.
SELECT partition, next_offset FROM timesink_offsets
WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3)

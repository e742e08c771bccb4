-- Records the broker's id of a topic for a consumer group and, when another
-- id was recorded (the topic was deleted and created again), moves every
-- stored offset of the topic back to 0, in the same statement: the offsets
-- of the old topic mean nothing in the new one. Returns the id recorded
-- before, if any; a concurrent check of the same topic waits on the row lock
-- and then finds the new id. An empty id recorded is no id: it is replaced
-- and resets nothing.
-- $1 consumer group, $2 topic, $3 the topic's id now (never empty).
WITH before AS (
    SELECT topic_id FROM timesink_topics
     WHERE consumer_group = $1 AND topic = $2 AND topic_id <> ''
       FOR UPDATE
), recorded AS (
    INSERT INTO timesink_topics (consumer_group, topic, topic_id, updated_at)
    VALUES ($1, $2, $3, now())
    ON CONFLICT (consumer_group, topic)
    DO UPDATE SET topic_id = EXCLUDED.topic_id, updated_at = now()
       WHERE timesink_topics.topic_id <> EXCLUDED.topic_id
), reset AS (
    UPDATE timesink_offsets SET next_offset = 0, updated_at = now()
     WHERE consumer_group = $1 AND topic = $2
       AND EXISTS (SELECT 1 FROM before WHERE topic_id <> $3)
)
SELECT topic_id FROM before

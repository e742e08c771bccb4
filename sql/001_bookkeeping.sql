-- The sink's bookkeeping tables. Idempotent: run when a table is missing.
-- The data tables are created from the catalog (src/catalog/).

-- The next offset to read per (consumer group, topic, partition), written in
-- the same transaction as the rows it covers.
CREATE TABLE IF NOT EXISTS timesink_offsets (
    consumer_group  TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    partition       INTEGER     NOT NULL,
    next_offset     BIGINT      NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- The broker's id (KIP-516) of each topic whose offsets a consumer group has
-- stored. A topic deleted and created again keeps its name but gets a new id:
-- the offsets stored for the old one then start again from 0.
CREATE TABLE IF NOT EXISTS timesink_topics (
    consumer_group  TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    topic_id        TEXT        NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic)
);

-- How each running instance of a consumer group describes each table (a
-- fingerprint of the topics it reads and the rows it makes of them), seen
-- again every few seconds. Two live instances of one group that describe a
-- table differently would split its topics' rows between two mappings.
CREATE TABLE IF NOT EXISTS timesink_mappings (
    consumer_group  TEXT        NOT NULL,
    instance        TEXT        NOT NULL,
    table_name      TEXT        NOT NULL,
    fingerprint     TEXT        NOT NULL,
    seen_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, instance, table_name)
);

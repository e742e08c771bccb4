//! timesink: a Kafka/Redpanda → TimescaleDB sink for crypto market data.
//!
//! Data flows one way, one module per stage:
//!
//! consume → decode → validate → batch → write → commit
//!
//! - [`consume`]: the Kafka consumer thread; pattern subscription, partition
//!   assignment (seeking to the offsets stored in PostgreSQL, never waiting
//!   on the database for long), pause/resume for backpressure, and the Kafka
//!   commit that follows the database commit. It reads headers through
//!   `native_headers`, the one module with `unsafe` reads of librdkafka's
//!   memory; [`kafka_log`] keeps librdkafka's log to one line per change.
//! - [`catalog`]: every table the sink writes, each described once (topics,
//!   columns and where their values come from, key, rules, batch, writer
//!   and TimescaleDB settings): the four of the contract in
//!   `src/catalog/tables/*.toml`, a user's in the configuration. The SQL of
//!   a table is generated from its description.
//! - [`decode`]: headers and value bytes → records, each the values its
//!   table's description reads (JSON bare, envelope or array along the
//!   table's JSON paths; bincode in its declared layout; LZ4 frames). Pure.
//! - [`validate`]: a record → a row of its table, each column read as its
//!   type and checked against its rules, or the rule it breaks. Pure.
//! - [`batch`]: rows → one batch per topic, flushed on rows, bytes or age. Pure.
//!   A batch holds its rows as COPY sends them: [`copy_format`] encodes each
//!   row as it is validated (pure).
//! - [`write`]: a batch → one PostgreSQL transaction: the stored offsets
//!   (fenced against another instance), binary `COPY` of the rows (a staging
//!   merge only when a key already exists), rows PostgreSQL refuses found and
//!   dead-lettered. [`pg_error`] classifies what PostgreSQL raises (row,
//!   transient, too big, blocked) and holds the backoff; [`coalesce`] joins
//!   the batches that arrive during a write into the next transaction;
//!   [`budget`] bounds each table's rows in flight. [`schema`] creates the
//!   tables from the catalog and compares the live ones with it.
//! - [`dead_letter`]: invalid messages to `<topic>.dlq`, byte for byte, acknowledged
//!   before their offset is stored.
//! - [`pipeline`]: wires the stages together and runs them until shutdown.
//! - [`health`]: what `/ready` and `/status` report (lag, connections,
//!   per-topic counters), kept up to date by the stages; [`http`] serves it
//!   with `/metrics`, whose series [`telemetry`] catalogues.
//! - [`check`]: `timesink check`, the configuration tried against the
//!   broker and the database.
//! - [`topic_ids`]: the broker's topic ids (librdkafka's `DescribeTopics`),
//!   which tell a topic created again from the one its offsets were stored for.
//! - [`produce`]: the load generator behind `timesink produce`; [`topics`]:
//!   `topics.yaml` and topic creation.
//!
//! Shared vocabulary: [`config`], [`database`] (connections, TLS), [`time`]
//! (timestamps), [`decimal`] (exact decimals), [`message`] (a consumed message).

pub mod batch;
pub mod budget;
pub mod catalog;
pub mod check;
pub mod coalesce;
pub mod config;
pub mod consume;
pub mod copy_format;
pub mod database;
pub mod dead_letter;
pub mod decimal;
pub mod decode;
pub mod health;
pub mod http;
pub mod kafka_log;
pub mod message;
mod native_headers;
pub mod pg_error;
pub mod pipeline;
pub mod produce;
pub mod schema;
pub mod telemetry;
pub mod time;
pub mod topic_ids;
pub mod topics;
pub mod validate;
pub mod write;

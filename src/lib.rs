//! timesink: a Kafka/Redpanda → TimescaleDB sink for market data.
//!
//! Three places, and the vocabulary they share:
//!
//! - [`catalog`]: **what the tables are.** Every table the sink writes,
//!   described once (topics, columns and where their values come from, key,
//!   rules, batch, writer and TimescaleDB settings): the four of the
//!   contract in `src/catalog/tables/*.toml`, a user's in the configuration
//!   (`catalog::spec` is the declared form). `catalog::timescale` is what a
//!   table becomes under TimescaleDB (chunk width, compression, retention,
//!   direct compress, continuous aggregates) and what differs in the
//!   database, `catalog::interval` the intervals those name.
//!   `catalog::sql` generates each table's SQL from its description;
//!   `catalog::schema` creates the tables, brings TimescaleDB's settings to
//!   the description at every start, and compares the live tables with
//!   their descriptions.
//! - [`pipeline`]: **the running sink.** Data flows one way, one module per
//!   stage, wired together in `pipeline/mod.rs`:
//!
//!   consume → decode → validate → batch → write → commit
//!
//!   - `consume`: the Kafka consumer thread; topics picked up by the
//!     catalog's patterns, partitions assigned at the offsets stored in
//!     PostgreSQL, pause/resume for backpressure, the Kafka commit after the
//!     database's. `native_headers` holds the one `unsafe` read of
//!     librdkafka's memory.
//!   - `decode`: headers and value bytes → records, each the values its
//!     table reads (JSON bare, envelope or array; bincode in a declared
//!     layout; LZ4 frames). Pure.
//!   - `validate`: a record → a row, each column read as its type and
//!     checked against its rules, encoded for COPY (`copy_format`). Pure.
//!   - `outcome`: what became of a message — its rows, or why it is
//!     dead-lettered.
//!   - `batch`: rows → one batch per topic and writer, flushed on rows,
//!     bytes or an adaptive age. Pure.
//!   - `write`: a batch → one transaction: stored offsets (fenced), binary
//!     `COPY`, a staging merge only where a key exists, refused rows found
//!     and dead-lettered; `coalesce` joins batches that queue behind a COPY,
//!     `budget` bounds each table's rows in flight.
//!   - `dead_letter`: invalid messages to `<topic>.dlq`, byte for byte,
//!     acknowledged before their offset is stored.
//!   - `topic_watch` and `mapping_watch`: the broker's id of a topic
//!     confirmed before a commit; the group's live instances describing
//!     each table alike (`timesink_mappings`), or reported loudly.
//! - [`ops`]: **the operations surface.** `health` (what `/ready` and
//!   `/status` say), `http` (those and `/metrics`), `telemetry` (the metric
//!   series), `check` (`timesink check`), `topics` (`topics.yaml`, topic
//!   creation), `produce` (the load generator, both streams).
//!
//! Shared vocabulary: [`config`], [`message`] (a consumed message), [`time`]
//! (timestamps); private to the crate: `database` (connections, TLS),
//! `pg_error` (what PostgreSQL raises, classified: row, transient, too big,
//! blocked), `decimal` (exact decimals), `kafka_log` (librdkafka's log, one
//! line per change), `topic_ids` (a topic created again is told apart),
//! `quote` (a value quoted in a log line or reason, cut to 200 characters).
//!
//! Modules are private unless the binary, `tests/`, `benches/` or `fuzz/`
//! use them; [`pipeline`] shows only its entry points and what its stages
//! hand each other.

pub mod catalog;
pub mod ops;
pub mod pipeline;

pub mod config;
mod database;
mod decimal;
mod kafka_log;
pub mod message;
mod pg_error;
mod quote;
pub mod time;
mod topic_ids;

pub use database::Database;
pub use pg_error::describe as describe_database_error;

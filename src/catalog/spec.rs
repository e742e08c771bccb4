//! The declared form of a table: what a user writes under `[tables.<name>]`
//! in the configuration file, and what the built-in tables
//! (`src/catalog/tables/*.toml`) are written in. Read by serde, unknown keys
//! refused by name; [`super::Catalog::build`] checks the meaning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One table: where its rows come from, its columns, key and rules, and how
/// it is batched, written and kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// `false`: the table is neither created nor fed (a built-in table a
    /// deployment does not use).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Topics read into this table, by exact name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Further topics, by a regular expression that must match the whole
    /// name (`^…$`); topics created later that match are picked up while
    /// running. Its named groups (`(?<exchange>…)`) are captures a column
    /// can take (`capture:exchange`). Topics ending with the dead-letter
    /// suffix never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_pattern: Option<String>,
    /// The contract's envelope: a JSON object with a non-null `payload` is
    /// an envelope and its payload the record; its `dataType`, when
    /// present, must be this. Unset: no envelope (a `payload` field is an
    /// ordinary field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    /// Whether a JSON array of records is taken (one row per element, in
    /// order). `false`: a message is one JSON object, an array is
    /// dead-lettered.
    #[serde(default = "yes")]
    pub arrays: bool,
    /// The columns, in the table's order.
    pub columns: Vec<ColumnSpec>,
    /// The primary key's columns; a record with the key of one already
    /// stored replaces it (the later one wins). `[]`: no key, an
    /// append-only table (a record sent twice is stored twice; each Kafka
    /// message is still stored once).
    pub primary_key: Vec<String>,
    /// The time column: TimescaleDB partitions the table on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Orders between two columns a valid record keeps, each
    /// `"<column> <= <column>"` or `"<column> < <column>"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// The positional layout of a bincode value (`content-type:
    /// application/x-bincode`), field by field. Unset: bincode values are
    /// dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bincode: Option<Vec<BincodeField>>,
    /// When the table's batches are flushed.
    #[serde(default)]
    pub batch: BatchSpec,
    /// How many connections write the table at once, each its own
    /// transactions (1 to 16). A partition always goes to the same one, so
    /// its rows stay in order.
    #[serde(default = "one")]
    pub writers: usize,
    /// What the table becomes where TimescaleDB is in use.
    #[serde(default)]
    pub timescaledb: TimescaleSpec,
    /// Continuous aggregates over the table, by view name (TimescaleDB
    /// only): kept by the sink, refreshed by TimescaleDB's policies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aggregates: BTreeMap<String, AggregateSpec>,
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

/// One column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The column's name in PostgreSQL (quoted as given).
    pub name: String,
    /// Its type: `text`, `numeric`, `bigint`, `integer`, `boolean`,
    /// `double precision`, `timestamptz` or `jsonb`.
    #[serde(rename = "type")]
    pub column_type: String,
    /// Where its value comes from; a list is tried in order and the first
    /// value present (not missing, not null) is taken. `/a/b`: a JSON
    /// pointer into the record (the envelope's payload, for an envelope);
    /// `envelope:/a`: into the envelope; `key`; `header:<name>`; `topic`;
    /// `capture:<name>` (of `topic_pattern`); `partition`; `offset`;
    /// `timestamp` (the Kafka timestamp).
    #[serde(default, skip_serializing_if = "Sources::is_empty")]
    pub from: Sources,
    /// The value when no source has one. A column with a default, or
    /// required, is NOT NULL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Constant>,
    /// A record without a value here is dead-lettered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// A `timestamptz` column reads integers as epoch `s`, `ms` or `us`;
    /// unset: it reads no integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// A `timestamptz` column reads ISO-8601 strings with an offset; unset:
    /// it does when it has no `epoch`, and does not when it has one (a
    /// column that takes both forms says `epoch` and `iso8601 = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso8601: Option<bool>,
    /// The value must be greater than this (numbers; timestamps as ISO-8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<Constant>,
    /// The value must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<Constant>,
    /// The value must be less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<Constant>,
    /// The value must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<Constant>,
    /// A `timestamptz` may be at most this many milliseconds ahead of the
    /// sink's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ahead_ms: Option<u64>,
    /// The values a `text` column may take (matched exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    /// The values a `text` column may take, per topic (exact topic names;
    /// a topic not listed takes none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of_by_topic: Option<BTreeMap<String, Vec<String>>>,
    /// The JSON kind a `jsonb` value must be: `object`, `array`, `string`,
    /// `number` or `boolean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_type: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One source or several, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sources {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        match self {
            Sources::None => true,
            Sources::One(_) => false,
            Sources::Many(v) => v.is_empty(),
        }
    }

    pub fn list(&self) -> Vec<&str> {
        match self {
            Sources::None => Vec::new(),
            Sources::One(s) => vec![s.as_str()],
            Sources::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A constant as TOML writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Constant {
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
}

impl Constant {
    /// The constant as text, as a producer would send it.
    pub fn text(&self) -> String {
        match self {
            Constant::Bool(b) => b.to_string(),
            Constant::Integer(i) => i.to_string(),
            Constant::Float(f) => f.to_string(),
            Constant::Text(s) => s.clone(),
        }
    }
}

/// One field of a bincode layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BincodeField {
    /// The name columns take it by, as a JSON pointer (`/coinId`).
    pub field: String,
    /// `string`, `u64`, `i64`, `u32`, `i32`, `bool`, `f64`, `timestamp_us`
    /// (an i64 of epoch microseconds) or `timestamp_ms`, each also as
    /// `option<…>` (a one-byte tag, then the value when it is 1).
    #[serde(rename = "type")]
    pub field_type: String,
}

/// Flush rules of a table's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSpec {
    /// Flush at this many rows.
    pub max_rows: usize,
    /// Flush when the batch's messages hold this many bytes.
    pub max_bytes: usize,
    /// Flush when the oldest message has waited this many milliseconds: the
    /// linger when `batch.adaptive` is off, its upper bound when on.
    pub linger_ms: u64,
    /// The lower bound of the adaptive linger, in milliseconds.
    pub min_linger_ms: u64,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_rows: 5000,
            max_bytes: 4 * 1024 * 1024,
            linger_ms: 100,
            min_linger_ms: 1,
        }
    }
}

/// What a table becomes where TimescaleDB is in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimescaleSpec {
    /// A hypertable on the time column (needs `time`).
    pub hypertable: bool,
    /// The time each new chunk spans (a PostgreSQL interval, `1 day`);
    /// unset: TimescaleDB's default (7 days) when the hypertable is
    /// created, and whatever the table has after that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_interval: Option<String>,
    /// Chunks older than this (a PostgreSQL interval, `7 days`) are
    /// compressed; unset: no compression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress_after: Option<String>,
    /// Compression segments by these columns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segment_by: Vec<String>,
    /// Compression orders by these, each `<column>` or `<column> DESC`;
    /// unset: the time column, descending.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub order_by: Vec<String>,
    /// Chunks older than this are dropped, rows and all; unset: no
    /// retention policy on a table the sink creates (one a live table has
    /// is left to the operator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// COPY writes compressed batches straight into the chunks
    /// (TimescaleDB's `enable_direct_compress_copy`): for an append-only
    /// table (`primary_key = []`) with compression (`compress_after`).
    #[serde(skip_serializing_if = "is_false")]
    pub direct_compress: bool,
    /// The most tuples one of the sink's transactions may decompress
    /// when its rows fall into compressed chunks (late data, a replay):
    /// TimescaleDB's `max_tuples_decompressed_per_dml_transaction` is
    /// raised to this for a transaction that needs more than the server
    /// allows. A batch that needs more still is written in halves; a
    /// single row that does blocks the table. Must be above 0.
    #[serde(skip_serializing_if = "is_default_decompress_limit")]
    pub max_tuples_decompressed: u64,
}

/// The default of `timescaledb.max_tuples_decompressed`: 50 times
/// TimescaleDB's own default, about 1 GiB of the widest contract table's
/// rows left uncompressed until the compression policy runs again.
pub const MAX_TUPLES_DECOMPRESSED: u64 = 5_000_000;

fn is_default_decompress_limit(n: &u64) -> bool {
    *n == MAX_TUPLES_DECOMPRESSED
}

impl Default for TimescaleSpec {
    fn default() -> Self {
        TimescaleSpec {
            hypertable: true,
            chunk_interval: None,
            retention: None,
            direct_compress: false,
            max_tuples_decompressed: MAX_TUPLES_DECOMPRESSED,
            compress_after: None,
            segment_by: Vec::new(),
            order_by: Vec::new(),
        }
    }
}

/// A continuous aggregate: the table's rows bucketed by time and grouped.
/// Its columns are `bucket`, the `group_by` columns, then `columns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// `false`: the sink neither creates nor changes it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The width of a bucket (`1 minute`, `1 day`): `bucket` is
    /// `time_bucket` of it over the table's time column.
    pub bucket: String,
    /// The columns a row is per, besides its bucket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// The aggregated columns, in order.
    pub columns: Vec<AggregateColumnSpec>,
    /// Real-time aggregation: buckets not yet materialized are computed
    /// from the table at query time, so the newest bucket is always
    /// current. `false`: a query sees what the last refresh materialized.
    #[serde(default = "yes")]
    pub real_time: bool,
    /// The refresh policy TimescaleDB runs.
    #[serde(default)]
    pub refresh: RefreshSpec,
}

/// One aggregated column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateColumnSpec {
    /// Its name in the view.
    pub name: String,
    /// `first` (the value at the earliest time in the bucket), `last` (at
    /// the latest), `min`, `max`, `sum`, `avg` or `count` (rows, or with
    /// `of`, values present).
    #[serde(rename = "fn")]
    pub function: String,
    /// The table's column it aggregates; `count` alone needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
}

/// When TimescaleDB materializes an aggregate: every `every`, the buckets
/// between `start_offset` and `end_offset` ago that changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSpec {
    /// `false`: no refresh policy (refresh it yourself).
    pub enabled: bool,
    /// How far back a refresh looks; unset: the whole table, so rows
    /// arriving however late are materialized. Must be set, and shorter
    /// than the table's retention, where retention drops rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_offset: Option<String>,
    /// How recent a bucket a refresh leaves to real-time aggregation;
    /// unset: one bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_offset: Option<String>,
    /// How often the policy runs; unset: once a bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

impl Default for RefreshSpec {
    fn default() -> Self {
        RefreshSpec {
            enabled: true,
            start_offset: None,
            end_offset: None,
            every: None,
        }
    }
}

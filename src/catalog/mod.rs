//! The catalog: every table the sink writes, each described once.
//!
//! A table's description ([`Table`], built from the declared form in
//! [`spec`]) holds everything the sink knows of it: its name, the topics
//! that feed it (names, or a pattern with named captures), its columns
//! (name, PostgreSQL type, nullability, where each value comes from, the
//! rules it keeps), its primary key and time column, the checks between
//! columns, a bincode layout, batch and writer settings and what it becomes
//! under TimescaleDB ([`timescale`]: the hypertable, compression,
//! retention and continuous aggregates, with the intervals of
//! [`interval`]). The four tables of the contract are such descriptions
//! too, written in `src/catalog/tables/*.toml` in the form a user writes under
//! `[tables.<name>]`. The SQL that creates and writes a table is generated
//! from its description ([`sql`]); the decode and validate stages read
//! records by it. Nothing else in the sink names a table's columns.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use crate::decimal::Decimal;
use crate::time::Timestamp;

pub mod interval;
pub mod schema;
pub mod spec;
pub mod sql;
pub mod timescale;

pub use spec::TableSpec;

/// The built-in tables, in the declared form: (name, TOML).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("crypto_prices", include_str!("tables/crypto_prices.toml")),
    ("ohlcv_data", include_str!("tables/ohlcv_data.toml")),
    (
        "market_analytics",
        include_str!("tables/market_analytics.toml"),
    ),
    ("level1_quotes", include_str!("tables/level1_quotes.toml")),
];

/// The built-in tables' descriptions, parsed.
pub fn built_in() -> BTreeMap<String, TableSpec> {
    BUILT_IN
        .iter()
        .map(|(name, text)| {
            let spec: TableSpec = toml_spec(text)
                .unwrap_or_else(|e| panic!("built-in table {name} does not parse: {e}"));
            ((*name).to_owned(), spec)
        })
        .collect()
}

/// Parses one table's declared form (its own TOML document).
pub fn toml_spec(text: &str) -> Result<TableSpec, String> {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())
}

/// A table's place in the catalog: what batches, writers and metrics are
/// keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub u16);

impl TableId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A column's PostgreSQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Numeric,
    BigInt,
    Integer,
    Boolean,
    Double,
    TimestampTz,
    Jsonb,
}

impl ColumnType {
    const ALL: [ColumnType; 8] = [
        ColumnType::Text,
        ColumnType::Numeric,
        ColumnType::BigInt,
        ColumnType::Integer,
        ColumnType::Boolean,
        ColumnType::Double,
        ColumnType::TimestampTz,
        ColumnType::Jsonb,
    ];

    /// The name a description uses, and the DDL.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Numeric => "numeric",
            ColumnType::BigInt => "bigint",
            ColumnType::Integer => "integer",
            ColumnType::Boolean => "boolean",
            ColumnType::Double => "double precision",
            ColumnType::TimestampTz => "timestamptz",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// The name PostgreSQL's `format_type` gives it (what a live table shows).
    pub fn catalog_name(self) -> &'static str {
        match self {
            ColumnType::TimestampTz => "timestamp with time zone",
            other => other.name(),
        }
    }

    fn parse(text: &str) -> Option<ColumnType> {
        let text = text.trim().to_ascii_lowercase();
        let text = match text.as_str() {
            "timestamp with time zone" => "timestamptz",
            "int8" => "bigint",
            "int4" | "int" => "integer",
            "bool" => "boolean",
            "float8" | "double" => "double precision",
            other => other,
        };
        ColumnType::ALL.into_iter().find(|t| t.name() == text)
    }

    /// Whether two columns of these types can be ordered against each other.
    fn comparable(self, other: ColumnType) -> bool {
        let numeric = |t| {
            matches!(
                t,
                ColumnType::Numeric | ColumnType::BigInt | ColumnType::Integer | ColumnType::Double
            )
        };
        self == other && self != ColumnType::Jsonb || numeric(self) && numeric(other)
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A JSON pointer into the record: the value of this slot.
    Record(usize),
    /// A JSON pointer into the envelope: the value of this slot.
    Envelope(usize),
    /// The message key (UTF-8 for a text column).
    Key,
    /// The last header of this name.
    Header(String),
    /// The topic's name.
    Topic,
    /// A named capture of the table's topic pattern, by index.
    Capture(usize),
    Partition,
    Offset,
    /// The Kafka timestamp.
    Timestamp,
}

/// How a `timestamptz` column reads an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epoch {
    Seconds,
    Millis,
    Micros,
}

impl Epoch {
    /// Microseconds per unit.
    pub fn micros(self) -> i64 {
        match self {
            Epoch::Seconds => 1_000_000,
            Epoch::Millis => 1_000,
            Epoch::Micros => 1,
        }
    }
}

/// A bound of a rule, read as a value of its column's type.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub value: BoundValue,
    /// As declared, for messages.
    pub text: String,
    /// Whether the bound itself is allowed (`ge`, `le`).
    pub inclusive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BoundValue {
    /// For numeric, bigint and integer columns.
    Decimal(Decimal),
    Double(f64),
    Time(Timestamp),
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub column_type: ColumnType,
    /// NOT NULL: required, or with a default.
    pub not_null: bool,
    pub required: bool,
    pub sources: Vec<Source>,
    /// The sources as declared, for messages: `/usdPrice`, `key`, ...
    pub from: String,
    /// The value when no source has one, as text read like a sent string.
    pub default: Option<String>,
    /// A `timestamptz` reads integers as epochs of this unit (None: no
    /// integer).
    pub epoch: Option<Epoch>,
    /// A `timestamptz` reads ISO-8601 strings.
    pub iso8601: bool,
    pub lower: Option<Bound>,
    pub upper: Option<Bound>,
    /// Microseconds a time may be ahead of the sink's clock.
    pub max_ahead_micros: Option<i64>,
    pub one_of: Option<Vec<String>>,
    pub one_of_by_topic: Option<BTreeMap<String, Vec<String>>>,
    pub json_type: Option<JsonKind>,
}

impl Column {
    /// How an error names the column: `column `usd_price` (/usdPrice)`.
    pub fn label(&self) -> String {
        if self.from.is_empty() {
            format!("column `{}`", self.name)
        } else {
            format!("column `{}` ({})", self.name, self.from)
        }
    }
}

/// The kinds of JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Object,
    Array,
    String,
    Number,
    Boolean,
}

impl JsonKind {
    pub fn of(raw: &str) -> Option<JsonKind> {
        match raw.as_bytes().first()? {
            b'{' => Some(JsonKind::Object),
            b'[' => Some(JsonKind::Array),
            b'"' => Some(JsonKind::String),
            b't' | b'f' => Some(JsonKind::Boolean),
            b'n' => None,
            _ => Some(JsonKind::Number),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JsonKind::Object => "object",
            JsonKind::Array => "array",
            JsonKind::String => "string",
            JsonKind::Number => "number",
            JsonKind::Boolean => "boolean",
        }
    }
}

/// An order two columns of a valid record keep: `left <= right` (or `<`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub left: usize,
    pub right: usize,
    pub strict: bool,
}

/// The wire type of one bincode field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    String,
    U64,
    I64,
    U32,
    I32,
    Bool,
    F64,
    TimestampMicros,
    TimestampMillis,
}

/// One field of a bincode layout: the slot it fills, its type, and whether
/// it is an `Option`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutField {
    pub slot: usize,
    pub name: String,
    pub wire: WireType,
    pub optional: bool,
}

/// The JSON paths a table reads: a tree of object keys, each key leading to
/// a slot (its value is taken) and/or to deeper keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathTree {
    pub keys: Vec<(String, PathNode)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathNode {
    pub slot: Option<usize>,
    pub children: PathTree,
}

impl PathTree {
    /// The node for `key`, if any path goes through it.
    pub fn get(&self, key: &str) -> Option<&PathNode> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn insert(&mut self, tokens: &[String], slot: usize) -> Result<(), String> {
        let Some((first, rest)) = tokens.split_first() else {
            return Err("the pointer names no field".into());
        };
        let at = match self.keys.iter().position(|(k, _)| k == first) {
            Some(i) => i,
            None => {
                self.keys.push((first.clone(), PathNode::default()));
                self.keys.len() - 1
            }
        };
        let node = &mut self.keys[at].1;
        if rest.is_empty() {
            node.slot = Some(slot);
            Ok(())
        } else {
            node.children.insert(rest, slot)
        }
    }
}

/// How a table's records are read: the JSON paths of the record and of
/// the envelope, and the slots their values fill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// Paths into the record (the envelope's payload, for an envelope).
    pub record: PathTree,
    /// Paths into the envelope (its payload and dataType included).
    pub envelope: PathTree,
    /// The envelope's own slots, when the table takes envelopes.
    pub envelope_slots: Option<EnvelopeSlots>,
    /// How many slots a record fills.
    pub slots: usize,
    /// The pointer each slot was declared as (for messages).
    pub slot_names: Vec<String>,
}

/// The slots of an envelope's `payload` and `dataType`, and of a
/// `payload` found while reading an object as a bare record (which makes
/// it an envelope after all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeSlots {
    pub payload: usize,
    pub data_type: usize,
    pub probe: usize,
}

/// One table, as the sink knows it.
#[derive(Debug, Clone)]
pub struct Table {
    pub id: TableId,
    pub name: String,
    /// Topics by exact name.
    pub topics: Vec<String>,
    /// The pattern of further topics, and its named captures in order.
    pub pattern: Option<regex::Regex>,
    pub captures: Vec<String>,
    /// The envelope's `dataType`, when the table takes envelopes.
    pub envelope: Option<String>,
    /// Whether a JSON array of records is taken.
    pub arrays: bool,
    pub columns: Vec<Column>,
    /// The primary key's columns, in key order; empty for an append-only
    /// table.
    pub key: Vec<usize>,
    pub time: Option<usize>,
    pub checks: Vec<Check>,
    pub reading: Reading,
    pub bincode: Option<Vec<LayoutField>>,
    pub batch: spec::BatchSpec,
    pub writers: usize,
    pub timescaledb: timescale::Timescale,
    /// Continuous aggregates over the table (TimescaleDB only).
    pub aggregates: Vec<timescale::Aggregate>,
}

impl Table {
    /// The primary key's columns in column order (how rows are compared).
    pub fn key_in_column_order(&self) -> Vec<usize> {
        let mut key = self.key.clone();
        key.sort_unstable();
        key
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// Where a topic's messages go: its table, and the captures of the table's
/// pattern (in the table's capture order; None for a group that took no
/// part in the match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub table: TableId,
    pub captures: Vec<Option<String>>,
}

/// A description that cannot be used: the table, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `tables.{table}{key}`: {problem}")]
pub struct CatalogError {
    pub table: String,
    /// The key within the table (`.columns[2]`, or empty for the table itself).
    pub key: String,
    pub problem: String,
}

/// Every table the sink writes, in a fixed order (by name).
#[derive(Debug, Clone)]
pub struct Catalog {
    tables: Vec<Table>,
}

/// The most tables one sink writes (table ids are u16).
const MAX_TABLES: usize = 1024;
/// The most writers a table may have.
pub const MAX_WRITERS: usize = 16;

impl Catalog {
    /// Tells each table the keys under it the configuration names (see
    /// [`crate::config::Named`]): `named(table)` gives them, dotted,
    /// without `tables.<name>.`.
    pub fn name_keys(&mut self, named: impl Fn(&str) -> Vec<String>) {
        for table in &mut self.tables {
            table.timescaledb.named = named(&table.name);
        }
    }

    /// Builds the catalog from the declared tables (disabled ones left
    /// out), checking each: names, types, sources, rules, key, layout.
    /// `dead_letter_suffix` ends topics that are never read.
    pub fn build(
        specs: &BTreeMap<String, TableSpec>,
        dead_letter_suffix: &str,
    ) -> Result<Catalog, CatalogError> {
        let enabled: Vec<(&String, &TableSpec)> = specs.iter().filter(|(_, s)| s.enabled).collect();
        if enabled.len() > MAX_TABLES {
            return Err(CatalogError {
                table: String::new(),
                key: String::new(),
                problem: format!("more than {MAX_TABLES} tables"),
            });
        }
        let mut tables = Vec::with_capacity(enabled.len());
        for (i, (name, spec)) in enabled.into_iter().enumerate() {
            let id = TableId(i as u16);
            tables.push(build_table(id, name, spec, dead_letter_suffix)?);
        }
        // An aggregate is a relation beside the tables: its name is theirs too.
        let mut relations: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        for t in &tables {
            for a in &t.aggregates {
                if relations.contains(&a.name.as_str()) {
                    return Err(CatalogError {
                        table: t.name.clone(),
                        key: format!(".aggregates.{}", a.name),
                        problem: format!("`{}` already names a table or an aggregate", a.name),
                    });
                }
                relations.push(&a.name);
            }
        }
        // A topic named by two tables would need one transaction for both.
        for (i, a) in tables.iter().enumerate() {
            for b in &tables[i + 1..] {
                if let Some(topic) = a.topics.iter().find(|t| b.topics.contains(t)) {
                    return Err(CatalogError {
                        table: b.name.clone(),
                        key: ".topics".into(),
                        problem: format!("topic {topic:?} already feeds table `{}`", a.name),
                    });
                }
            }
        }
        Ok(Catalog { tables })
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    pub fn table(&self, id: TableId) -> &Table {
        &self.tables[id.index()]
    }

    pub fn by_name(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The envelope `dataType`s any table takes (to tell a wrong one from
    /// an unknown one).
    pub fn envelope_names(&self) -> Vec<&str> {
        self.tables
            .iter()
            .filter_map(|t| t.envelope.as_deref())
            .collect()
    }

    /// The table a topic feeds: one naming it exactly, else the first (by
    /// name) whose pattern matches it. Topics ending with
    /// `dead_letter_suffix` feed none.
    pub fn route(&self, topic: &str, dead_letter_suffix: &str) -> Option<Route> {
        if topic.ends_with(dead_letter_suffix) {
            return None;
        }
        if let Some(t) = self
            .tables
            .iter()
            .find(|t| t.topics.iter().any(|n| n == topic))
        {
            return Some(Route {
                table: t.id,
                captures: vec![None; t.captures.len()],
            });
        }
        self.tables.iter().find_map(|t| {
            let found = t.pattern.as_ref()?.captures(topic)?;
            Some(Route {
                table: t.id,
                captures: t
                    .captures
                    .iter()
                    .map(|name| found.name(name).map(|m| m.as_str().to_owned()))
                    .collect(),
            })
        })
    }
}

fn build_table(
    id: TableId,
    name: &str,
    spec: &TableSpec,
    dead_letter_suffix: &str,
) -> Result<Table, CatalogError> {
    let fail = |key: &str, problem: String| CatalogError {
        table: name.to_owned(),
        key: key.to_owned(),
        problem,
    };
    if let Err(problem) = check_name("table", name) {
        return Err(fail("", problem));
    }
    if name.contains('.') {
        return Err(fail(
            "",
            "a table name has no `.`: tables live in the connection's schema \
             (its search_path; `options=-csearch_path=<schema>` in database.url)"
                .into(),
        ));
    }
    if name.starts_with("timesink_") {
        return Err(fail(
            "",
            "names starting with timesink_ are the sink's bookkeeping tables".into(),
        ));
    }
    for topic in &spec.topics {
        if topic.is_empty()
            || !topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(fail(
                ".topics",
                format!("{topic:?} is not a Kafka topic name"),
            ));
        }
        if topic.ends_with(dead_letter_suffix) {
            return Err(fail(
                ".topics",
                format!(
                    "{topic:?} ends with the dead-letter suffix {dead_letter_suffix:?}; dead-letter topics are never read"
                ),
            ));
        }
    }
    let (pattern, captures) = match &spec.topic_pattern {
        None => (None, Vec::new()),
        Some(p) => {
            if !p.starts_with('^') || !p.ends_with('$') || p.ends_with("\\$") {
                return Err(fail(
                    ".topic_pattern",
                    format!(
                        "{p:?} must match whole topic names: start it with ^ and end it with $"
                    ),
                ));
            }
            let re = regex::Regex::new(p)
                .map_err(|e| fail(".topic_pattern", format!("not a regular expression: {e}")))?;
            let captures: Vec<String> = re.capture_names().flatten().map(str::to_owned).collect();
            (Some(re), captures)
        }
    };
    if spec.topics.is_empty() && pattern.is_none() {
        return Err(fail(
            "",
            "names no topic: give `topics` (names) or `topic_pattern`".into(),
        ));
    }
    if spec.columns.is_empty() {
        return Err(fail(".columns", "a table needs at least one column".into()));
    }
    if !(1..=MAX_WRITERS).contains(&spec.writers) {
        return Err(fail(
            ".writers",
            format!("must be between 1 and {MAX_WRITERS}"),
        ));
    }
    check_batch(&spec.batch).map_err(|(key, problem)| fail(&format!(".batch.{key}"), problem))?;

    let mut reading = Reading::default();
    let mut record_slots: BTreeMap<String, usize> = BTreeMap::new();
    let mut envelope_slots: BTreeMap<String, usize> = BTreeMap::new();
    let mut columns = Vec::with_capacity(spec.columns.len());
    for (i, c) in spec.columns.iter().enumerate() {
        let key = format!(".columns[{i}]");
        let column = build_column(
            c,
            spec,
            &captures,
            &mut reading,
            &mut record_slots,
            &mut envelope_slots,
        )
        .map_err(|problem| fail(&key, format!("column `{}`: {problem}", c.name)))?;
        if columns.iter().any(|x: &Column| x.name == column.name) {
            return Err(fail(&key, format!("column `{}` is declared twice", c.name)));
        }
        columns.push(column);
    }
    let find = |key: &str, column: &str| {
        columns
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| fail(key, format!("no column `{column}`")))
    };
    let mut key = Vec::new();
    for k in &spec.primary_key {
        let i = find(".primary_key", k)?;
        if !columns[i].not_null {
            return Err(fail(
                ".primary_key",
                format!("column `{k}` is in the key: make it required, or give it a default"),
            ));
        }
        if columns[i].column_type == ColumnType::Jsonb {
            return Err(fail(
                ".primary_key",
                format!("column `{k}` is jsonb, which has no key order"),
            ));
        }
        if key.contains(&i) {
            return Err(fail(".primary_key", format!("column `{k}` twice")));
        }
        key.push(i);
    }
    let time = match &spec.time {
        None => None,
        Some(t) => {
            let i = find(".time", t)?;
            if columns[i].column_type != ColumnType::TimestampTz || !columns[i].not_null {
                return Err(fail(
                    ".time",
                    format!("column `{t}` must be a required timestamptz"),
                ));
            }
            Some(i)
        }
    };
    let mut checks = Vec::new();
    for text in &spec.checks {
        let (left, strict, right) = if let Some((l, r)) = text.split_once("<=") {
            (l, false, r)
        } else if let Some((l, r)) = text.split_once('<') {
            (l, true, r)
        } else {
            return Err(fail(
                ".checks",
                format!("{text:?} is not `<column> <= <column>` or `<column> < <column>`"),
            ));
        };
        let (left, right) = (
            find(".checks", left.trim())?,
            find(".checks", right.trim())?,
        );
        if !columns[left]
            .column_type
            .comparable(columns[right].column_type)
        {
            return Err(fail(
                ".checks",
                format!(
                    "{text:?} compares a {} with a {}",
                    columns[left].column_type.name(),
                    columns[right].column_type.name()
                ),
            ));
        }
        checks.push(Check {
            left,
            right,
            strict,
        });
    }
    let bincode = match &spec.bincode {
        None => None,
        Some(fields) => Some(
            build_layout(fields, &mut reading, &mut record_slots)
                .map_err(|(i, problem)| fail(&format!(".bincode[{i}]"), problem))?,
        ),
    };
    if let Some(data_type) = &spec.envelope {
        if data_type.is_empty() {
            return Err(fail(".envelope", "names no dataType".into()));
        }
        let payload = slot(&mut reading, &mut envelope_slots, "envelope:/payload");
        let data_type_slot = slot(&mut reading, &mut envelope_slots, "envelope:/dataType");
        reading
            .envelope
            .insert(&["payload".into()], payload)
            .map_err(|e| fail(".envelope", e))?;
        reading
            .envelope
            .insert(&["dataType".into()], data_type_slot)
            .map_err(|e| fail(".envelope", e))?;
        if reading.record.get("payload").is_some() {
            return Err(fail(
                ".columns",
                "a column reads /payload, which is the envelope's: read the payload's fields as /<field>".into(),
            ));
        }
        // A bare record's `payload` tells it is an envelope after all.
        let probe = slot(&mut reading, &mut envelope_slots, "payload");
        reading
            .record
            .insert(&["payload".into()], probe)
            .map_err(|e| fail(".envelope", e))?;
        reading.envelope_slots = Some(EnvelopeSlots {
            payload,
            data_type: data_type_slot,
            probe,
        });
    } else if !envelope_slots.is_empty() {
        return Err(fail(
            ".columns",
            "a column reads `envelope:` but the table sets no `envelope`".into(),
        ));
    }
    if let Some(t) = time
        && spec.timescaledb.hypertable
        && !key.is_empty()
        && !key.contains(&t)
    {
        // TimescaleDB refuses such a hypertable (TS103): said here, not at
        // the first start.
        return Err(fail(
            ".primary_key",
            format!(
                "a hypertable's primary key includes its time column `{}`: add it, \
                 or set `timescaledb.hypertable = false`",
                columns[t].name
            ),
        ));
    }
    let timescaledb = timescale::build(&spec.timescaledb, &columns, time, !key.is_empty())
        .map_err(|(key, problem)| fail(&key, problem))?;
    let aggregates = spec
        .aggregates
        .iter()
        .filter(|(_, a)| a.enabled)
        .map(|(name, a)| timescale::build_aggregate(name, a, &columns, &timescaledb))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|(key, problem)| fail(&key, problem))?;
    Ok(Table {
        id,
        name: name.to_owned(),
        topics: spec.topics.clone(),
        pattern,
        captures,
        envelope: spec.envelope.clone(),
        arrays: spec.arrays,
        columns,
        key,
        time,
        checks,
        reading,
        bincode,
        batch: spec.batch,
        writers: spec.writers,
        timescaledb,
        aggregates,
    })
}

pub(crate) fn check_batch(b: &spec::BatchSpec) -> Result<(), (&'static str, String)> {
    if b.max_rows == 0 {
        return Err(("max_rows", "must be at least 1".into()));
    }
    if b.max_bytes == 0 {
        return Err(("max_bytes", "must be at least 1".into()));
    }
    if b.linger_ms > 60_000 {
        return Err(("linger_ms", "must be at most 60000".into()));
    }
    if b.min_linger_ms > b.linger_ms {
        return Err((
            "min_linger_ms",
            format!("must be at most linger_ms ({})", b.linger_ms),
        ));
    }
    Ok(())
}

/// The slot of a declared pointer (one per distinct pointer).
fn slot(reading: &mut Reading, slots: &mut BTreeMap<String, usize>, name: &str) -> usize {
    if let Some(&s) = slots.get(name) {
        return s;
    }
    let s = reading.slots;
    reading.slots += 1;
    reading.slot_names.push(name.to_owned());
    slots.insert(name.to_owned(), s);
    s
}

/// A name PostgreSQL keeps as written: 1 to 63 bytes (longer ones it cuts
/// without an error), no `$`, and no control character (a NUL cannot be
/// sent at all).
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("a {kind} name has 1 to 63 bytes"));
    }
    if name.contains('$') || name.chars().any(char::is_control) {
        return Err(format!(
            "a {kind} name has no `$` and no control character, got {}",
            crate::quote::quoted(name)
        ));
    }
    Ok(())
}

/// A JSON pointer's tokens (RFC 6901: `~1` is `/`, `~0` is `~`, and a `~`
/// followed by anything else is no pointer).
fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer:?} is not a JSON pointer (it starts with /)"
        ));
    };
    rest.split('/')
        .map(|t| {
            if t.is_empty() {
                return Err(format!("{pointer:?} has an empty field name"));
            }
            let mut token = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(format!(
                            "{pointer:?}: `~` is written `~0` and `/` is `~1` in a JSON pointer"
                        ));
                    }
                }
            }
            Ok(token)
        })
        .collect()
}

fn build_column(
    c: &spec::ColumnSpec,
    spec: &TableSpec,
    captures: &[String],
    reading: &mut Reading,
    record_slots: &mut BTreeMap<String, usize>,
    envelope_slots: &mut BTreeMap<String, usize>,
) -> Result<Column, String> {
    check_name("column", &c.name)?;
    let column_type = ColumnType::parse(&c.column_type).ok_or_else(|| {
        format!(
            "type {:?} is not one of text, numeric, bigint, integer, boolean, double precision, timestamptz, jsonb",
            c.column_type
        )
    })?;
    let declared = c.from.list();
    let mut sources = Vec::with_capacity(declared.len());
    for text in &declared {
        let source = if text.starts_with('/') {
            let tokens = pointer_tokens(text)?;
            let s = slot(reading, record_slots, text);
            reading.record.insert(&tokens, s)?;
            Source::Record(s)
        } else if let Some(pointer) = text.strip_prefix("envelope:") {
            if spec.envelope.is_none() {
                return Err(format!("from {text:?}: the table sets no `envelope`"));
            }
            let tokens = pointer_tokens(pointer)?;
            if tokens[0] == "payload" || tokens[0] == "dataType" && tokens.len() == 1 {
                return Err(format!(
                    "from {text:?}: read the payload's fields as /<field>"
                ));
            }
            let s = slot(reading, envelope_slots, text);
            reading.envelope.insert(&tokens, s)?;
            Source::Envelope(s)
        } else if let Some(name) = text.strip_prefix("header:") {
            if name.is_empty() {
                return Err(format!("from {text:?} names no header"));
            }
            Source::Header(name.to_owned())
        } else if let Some(name) = text.strip_prefix("capture:") {
            let i = captures.iter().position(|c| c == name).ok_or_else(|| {
                format!("from {text:?}: topic_pattern has no group named {name:?}")
            })?;
            Source::Capture(i)
        } else {
            match *text {
                "key" => Source::Key,
                "topic" => Source::Topic,
                "partition" => Source::Partition,
                "offset" => Source::Offset,
                "timestamp" => Source::Timestamp,
                other => {
                    return Err(format!(
                        "from {other:?} is not a source: a JSON pointer (/field), envelope:/field, key, header:<name>, topic, capture:<name>, partition, offset or timestamp"
                    ));
                }
            }
        };
        sources.push(source);
    }
    if sources.is_empty() && c.default.is_none() {
        return Err("has no `from` and no `default`: nothing fills it".into());
    }
    let epoch = match c.epoch.as_deref() {
        None => None,
        Some("ms") => Some(Epoch::Millis),
        Some("s") => Some(Epoch::Seconds),
        Some("us") => Some(Epoch::Micros),
        Some(other) => return Err(format!("epoch {other:?} is not one of s, ms, us")),
    };
    if (c.epoch.is_some() || c.iso8601.is_some()) && column_type != ColumnType::TimestampTz {
        return Err("`epoch` and `iso8601` apply to timestamptz columns".into());
    }
    let iso8601 = c.iso8601.unwrap_or(epoch.is_none());
    if !iso8601 && epoch.is_none() {
        return Err("`iso8601 = false` without `epoch`: the column reads no form".into());
    }
    if c.gt.is_some() && c.ge.is_some() || c.lt.is_some() && c.le.is_some() {
        return Err("give one lower bound (gt or ge) and one upper (lt or le)".into());
    }
    let bound = |rule: &str, value: &Option<spec::Constant>, inclusive: bool| {
        let Some(value) = value else {
            return Ok(None);
        };
        let text = value.text();
        let parsed = match column_type {
            ColumnType::Numeric | ColumnType::BigInt | ColumnType::Integer => Decimal::parse(&text)
                .map(BoundValue::Decimal)
                .map_err(|e| e.to_string()),
            ColumnType::Double => text
                .parse::<f64>()
                .map(BoundValue::Double)
                .map_err(|e| e.to_string()),
            ColumnType::TimestampTz => crate::time::parse_iso8601(&text).map(BoundValue::Time),
            other => Err(format!(
                "bounds apply to numbers and times, not {}",
                other.name()
            )),
        };
        parsed
            .map(|value| {
                Some(Bound {
                    value,
                    text: text.clone(),
                    inclusive,
                })
            })
            .map_err(|e| format!("{rule} = {text:?}: {e}"))
    };
    let lower = match bound("gt", &c.gt, false)? {
        Some(b) => Some(b),
        None => bound("ge", &c.ge, true)?,
    };
    let upper = match bound("lt", &c.lt, false)? {
        Some(b) => Some(b),
        None => bound("le", &c.le, true)?,
    };
    if c.max_ahead_ms.is_some() && column_type != ColumnType::TimestampTz {
        return Err("`max_ahead_ms` applies to timestamptz columns".into());
    }
    if (c.one_of.is_some() || c.one_of_by_topic.is_some()) && column_type != ColumnType::Text {
        return Err("`one_of` applies to text columns".into());
    }
    let json_type = match c.json_type.as_deref() {
        None => None,
        Some(_) if column_type != ColumnType::Jsonb => {
            return Err("`json_type` applies to jsonb columns".into());
        }
        Some(kind) => Some(
            [
                JsonKind::Object,
                JsonKind::Array,
                JsonKind::String,
                JsonKind::Number,
                JsonKind::Boolean,
            ]
            .into_iter()
            .find(|k| k.name() == kind)
            .ok_or_else(|| {
                format!("json_type {kind:?} is not one of object, array, string, number, boolean")
            })?,
        ),
    };
    let max_ahead_micros = match c.max_ahead_ms {
        None => None,
        Some(ms) => Some(
            i64::try_from(ms)
                .ok()
                .and_then(|ms| ms.checked_mul(1000))
                .ok_or("max_ahead_ms is too large")?,
        ),
    };
    let column = Column {
        name: c.name.clone(),
        column_type,
        not_null: c.required || c.default.is_some(),
        required: c.required,
        sources,
        from: declared.join(" | "),
        default: c.default.as_ref().map(spec::Constant::text),
        epoch,
        iso8601,
        lower,
        upper,
        max_ahead_micros,
        one_of: c.one_of.clone(),
        one_of_by_topic: c.one_of_by_topic.clone(),
        json_type,
    };
    if let (Some(lower), Some(upper)) = (&column.lower, &column.upper) {
        let order = compare(&lower.value, &upper.value);
        if order == Some(Ordering::Greater)
            || (order == Some(Ordering::Equal) && !(lower.inclusive && upper.inclusive))
        {
            return Err(format!(
                "the bounds leave no value: {} {} and {} {}",
                if lower.inclusive { "ge" } else { "gt" },
                lower.text,
                if upper.inclusive { "le" } else { "lt" },
                upper.text
            ));
        }
    }
    if let Some(default) = &column.default {
        check_default(&column, default)
            .map_err(|e| format!("default {}: {e}", crate::quote::quoted(default)))?;
    }
    Ok(column)
}

/// Two bound values of one column's type.
fn compare(a: &BoundValue, b: &BoundValue) -> Option<Ordering> {
    match (a, b) {
        (BoundValue::Decimal(a), BoundValue::Decimal(b)) => Some(a.cmp_value(b)),
        (BoundValue::Double(a), BoundValue::Double(b)) => a.partial_cmp(b),
        (BoundValue::Time(a), BoundValue::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// A `default` is what every message without the field stores: it must
/// read as the column's type and keep the column's rules, or each such
/// message would be dead-lettered for the configuration's fault.
fn check_default(column: &Column, text: &str) -> Result<(), String> {
    let value = match column.column_type {
        ColumnType::Text => None,
        ColumnType::Boolean => match text {
            "true" | "false" => None,
            _ => return Err("a boolean is true or false".into()),
        },
        ColumnType::Numeric => Some(BoundValue::Decimal(
            Decimal::parse(text).map_err(|e| e.to_string())?,
        )),
        ColumnType::BigInt => Some(BoundValue::Decimal(Decimal::from_i64(
            text.parse::<i64>().map_err(|_| "not a bigint")?,
        ))),
        ColumnType::Integer => Some(BoundValue::Decimal(Decimal::from_i64(i64::from(
            text.parse::<i32>().map_err(|_| "not an integer")?,
        )))),
        ColumnType::Double => Some(BoundValue::Double(
            text.parse::<f64>().map_err(|_| "not a number")?,
        )),
        ColumnType::TimestampTz => Some(BoundValue::Time(crate::time::parse_iso8601(text)?)),
        ColumnType::Jsonb => {
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|_| {
                "a jsonb default is JSON text (`\"{}\"`, `\"[]\"`, `'\"a string\"'`)".to_owned()
            })?;
            if let Some(want) = column.json_type
                && JsonKind::of(text.trim_start()) != Some(want)
            {
                return Err(format!("`json_type` wants a JSON {}", want.name()));
            }
            None
        }
    };
    if let Some(value) = &value {
        for (bound, side) in [
            (&column.lower, Ordering::Greater),
            (&column.upper, Ordering::Less),
        ] {
            let Some(bound) = bound else { continue };
            let order = compare(value, &bound.value);
            if !(order == Some(side) || (bound.inclusive && order == Some(Ordering::Equal))) {
                return Err(format!("outside the column's bound ({})", bound.text));
            }
        }
    }
    if let Some(allowed) = &column.one_of
        && !allowed.iter().any(|a| a == text)
    {
        return Err(format!("not one of {}", allowed.join(" ")));
    }
    if let Some(by_topic) = &column.one_of_by_topic
        && let Some((topic, _)) = by_topic
            .iter()
            .find(|(_, allowed)| !allowed.iter().any(|a| a == text))
    {
        return Err(format!("not one of topic {topic}'s values"));
    }
    Ok(())
}

fn build_layout(
    fields: &[spec::BincodeField],
    reading: &mut Reading,
    record_slots: &mut BTreeMap<String, usize>,
) -> Result<Vec<LayoutField>, (usize, String)> {
    let mut layout = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let ty = f.field_type.trim();
        let (optional, inner) = match ty.strip_prefix("option<").and_then(|t| t.strip_suffix('>')) {
            Some(inner) => (true, inner.trim()),
            None => (false, ty),
        };
        let wire = match inner {
            "string" => WireType::String,
            "u64" => WireType::U64,
            "i64" => WireType::I64,
            "u32" => WireType::U32,
            "i32" => WireType::I32,
            "bool" => WireType::Bool,
            "f64" => WireType::F64,
            "timestamp_us" => WireType::TimestampMicros,
            "timestamp_ms" => WireType::TimestampMillis,
            other => {
                return Err((
                    i,
                    format!(
                        "type {other:?} is not one of string, u64, i64, u32, i32, bool, f64, timestamp_us, timestamp_ms (or option<…> of one)"
                    ),
                ));
            }
        };
        pointer_tokens(&f.field).map_err(|e| (i, e))?;
        // A field no column reads is decoded and dropped: it still has
        // its place in the layout.
        let slot = slot(reading, record_slots, &f.field);
        if layout.iter().any(|l: &LayoutField| l.slot == slot) {
            return Err((i, format!("field {:?} twice", f.field)));
        }
        layout.push(LayoutField {
            slot,
            name: f.field.clone(),
            wire,
            optional,
        });
    }
    Ok(layout)
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog_of(extra: &str) -> Result<Catalog, CatalogError> {
        let mut specs = built_in();
        if !extra.is_empty() {
            specs.insert(
                "t".into(),
                toml_spec(extra).map_err(|e| CatalogError {
                    table: "t".into(),
                    key: String::new(),
                    problem: e,
                })?,
            );
        }
        Catalog::build(&specs, ".dlq")
    }

    /// The keys the README's tables of a table, a column and its
    /// `timescaledb` settings name: `(heading, keys)`.
    fn readme_keys(heading: &str) -> Vec<String> {
        let readme = include_str!("../../README.md");
        let at = readme
            .find(heading)
            .unwrap_or_else(|| panic!("README: {heading}"));
        readme[at..]
            .lines()
            .skip_while(|l| !l.starts_with("|---"))
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .flat_map(|row| {
                let first = row.split('|').nth(1).unwrap_or_default();
                first
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every key the README names for a table, a column or a table's
    /// TimescaleDB settings is one the description takes (a key it does
    /// not take would stop the sink at start).
    #[test]
    fn every_table_key_the_readme_names_is_taken() {
        let unknown = |text: &str| {
            toml_spec(text)
                .err()
                .filter(|e| e.contains("unknown field"))
        };
        let table = readme_keys("A table:");
        let column = readme_keys("A column:");
        let timescaledb = readme_keys("| `timescaledb` key |");
        assert!(table.len() >= 14 && column.len() >= 12 && timescaledb.len() >= 8);
        for key in table {
            assert_eq!(unknown(&format!("{key} = 0")), None, "table key `{key}`");
        }
        for key in column {
            let text = format!("[[columns]]\nname = \"c\"\ntype = \"text\"\n{key} = 0");
            assert_eq!(unknown(&text), None, "column key `{key}`");
        }
        for key in timescaledb {
            let text = format!("[timescaledb]\n{key} = 0");
            assert_eq!(unknown(&text), None, "timescaledb key `{key}`");
        }
        assert!(
            unknown("[timescaledb]\nretain = 0").is_some(),
            "the check can fail"
        );
    }

    /// A dotted table name would be stored literally in the connection's
    /// schema, not in the schema it seems to name: refused.
    #[test]
    fn a_dotted_table_name_is_refused() {
        let mut specs = built_in();
        specs.insert("market.ticks".into(), toml_spec(MINIMAL).expect("spec"));
        let problem = Catalog::build(&specs, ".dlq").unwrap_err().to_string();
        assert!(
            problem.contains("`tables.market.ticks`: a table name has no `.`"),
            "{problem}"
        );
    }

    fn problem(extra: &str) -> String {
        catalog_of(extra).unwrap_err().to_string()
    }

    const MINIMAL: &str = r#"
        topics = ["events"]
        primary_key = ["id"]
        columns = [{ name = "id", type = "text", from = "/id", required = true }]
    "#;

    #[test]
    fn the_built_in_tables_are_catalog_entries() {
        let c = catalog_of("").unwrap();
        let names: Vec<&str> = c.tables().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), BUILT_IN.len());
        // CONTRACT.md, "Tables": its four, whatever else is built in.
        for table in [
            "crypto_prices",
            "level1_quotes",
            "market_analytics",
            "ohlcv_data",
        ] {
            assert!(names.contains(&table), "{table} in {names:?}");
        }
        let prices = c.by_name("crypto_prices").unwrap();
        let columns: Vec<&str> = prices.columns.iter().map(|c| c.name.as_str()).collect();
        // CONTRACT.md, "Tables": the columns in order.
        assert_eq!(
            columns,
            [
                "time",
                "coin_id",
                "symbol",
                "exchange_id",
                "usd_price",
                "btc_price",
                "market_cap",
                "volume_24h",
                "change_24h",
                "source",
                "attribution"
            ]
        );
        assert_eq!(prices.key, [1, 3, 0]);
        assert_eq!(prices.key_in_column_order(), [0, 1, 3]);
        assert_eq!(prices.captures, ["exchange"]);
        assert_eq!(c.envelope_names().len(), 4);
    }

    #[test]
    fn topics_route_by_name_then_pattern_never_a_dead_letter_topic() {
        let c = catalog_of(MINIMAL).unwrap();
        let prices = c.by_name("crypto_prices").unwrap().id;
        let route = c.route("crypto-prices-binance", ".dlq").unwrap();
        assert_eq!(route.table, prices);
        assert_eq!(route.captures, [Some("binance".to_owned())]);
        assert_eq!(c.route("crypto-prices", ".dlq").unwrap().captures, [None]);
        assert_eq!(
            c.route("crypto-level1-coinbase-pro", ".dlq")
                .map(|r| r.table),
            c.by_name("level1_quotes").map(|t| t.id)
        );
        assert_eq!(c.route("crypto-prices.dlq", ".dlq"), None);
        assert_eq!(c.route("events.dlq", ".dlq"), None);
        assert_eq!(c.route("crypto-pricesx", ".dlq"), None);
        assert_eq!(
            c.route("events", ".dlq").unwrap().table,
            c.by_name("t").unwrap().id
        );
    }

    #[test]
    fn a_wrong_description_is_refused_naming_table_key_and_column() {
        for (extra, expected) in [
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "txt", from = "/id", required = true }]"#,
                "tables.t.columns[0]`: column `id`: type \"txt\" is not one of",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "id", required = true }]"#,
                "column `id`: from \"id\" is not a source",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id" }]"#,
                "tables.t.primary_key`: column `id` is in the key: make it required",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["nope"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true }]"#,
                "tables.t.primary_key`: no column `nope`",
            ),
            (
                r#"topic_pattern = "e-(?<x>.*)"
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true }]"#,
                "tables.t.topic_pattern`: \"e-(?<x>.*)\" must match whole topic names",
            ),
            (
                r#"topic_pattern = "^e-(?<x>[a-z]+)$"
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "capture:y", required = true }]"#,
                "topic_pattern has no group named \"y\"",
            ),
            (
                r#"topics = ["e.dlq"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true }]"#,
                "ends with the dead-letter suffix",
            ),
            (
                r#"topics = ["crypto-prices"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true }]"#,
                "",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   checks = ["id <= n"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "n", type = "numeric", from = "/n" }]"#,
                "\"id <= n\" compares a text with a numeric",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true, gt = 0 }]"#,
                "bounds apply to numbers and times, not text",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "envelope:/source", required = true }]"#,
                "the table sets no `envelope`",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true }]
                   bincode = [{ field = "/id", type = "varchar" }]"#,
                "tables.t.bincode[0]`: type \"varchar\" is not one of",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   writers = 17
                   columns = [{ name = "id", type = "text", from = "/id", required = true }]"#,
                "tables.t.writers`: must be between 1 and 16",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "p", type = "numeric", from = "/p", default = "n/a" }]"#,
                "tables.t.columns[1]`: column `p`: default \"n/a\": not a decimal number",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "at", type = "timestamptz", from = "/at", default = "yesterday" }]"#,
                "tables.t.columns[1]`: column `at`: default \"yesterday\": not an ISO-8601 timestamp",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "n", type = "integer", from = "/n", default = 1.5 }]"#,
                "tables.t.columns[1]`: column `n`: default \"1.5\": not an integer",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "n", type = "integer", from = "/n", default = 0, gt = 0 }]"#,
                "tables.t.columns[1]`: column `n`: default \"0\": outside the column's bound (0)",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "tf", type = "text", from = "/tf", default = "2m", one_of = ["1m", "5m"] }]"#,
                "tables.t.columns[1]`: column `tf`: default \"2m\": not one of 1m 5m",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "j", type = "jsonb", from = "/j", default = "none" }]"#,
                "tables.t.columns[1]`: column `j`: default \"none\": a jsonb default is JSON text",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "j", type = "jsonb", from = "/j", default = "[]", json_type = "object" }]"#,
                "`json_type` wants a JSON object",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "p", type = "numeric", from = "/p", gt = 10, lt = 5 }]"#,
                "tables.t.columns[1]`: column `p`: the bounds leave no value: gt 10 and lt 5",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "p", type = "double precision", from = "/p", gt = 1, le = 1 }]"#,
                "the bounds leave no value: gt 1 and le 1",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/a~2b", required = true }]"#,
                "`~` is written `~0` and `/` is `~1` in a JSON pointer",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/a~", required = true }]"#,
                "`~` is written `~0`",
            ),
            (
                "topics = [\"e\"]\nprimary_key = [\"id\"]\ncolumns = [{ name = \"i\\u0000d\", type = \"text\", from = \"/id\", required = true }]",
                "a column name has no `$` and no control character, got \"i\\0d\"",
            ),
            (
                r#"topics = ["e"]
                   time = "at"
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true },
                              { name = "at", type = "timestamptz", from = "/at", required = true }]"#,
                "tables.t.primary_key`: a hypertable's primary key includes its time column `at`",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["id"]
                   columns = [{ name = "id", type = "text", from = "/id", required = true, iso8601 = true }]"#,
                "`epoch` and `iso8601` apply to timestamptz columns",
            ),
            (
                r#"topics = ["e"]
                   primary_key = ["at"]
                   columns = [{ name = "at", type = "timestamptz", from = "/at", required = true, iso8601 = false }]"#,
                "`iso8601 = false` without `epoch`: the column reads no form",
            ),
        ] {
            if expected.is_empty() {
                // A topic the built-in table reads by pattern may be named
                // by another: the name wins (see `route`).
                assert!(catalog_of(extra).is_ok());
                continue;
            }
            let problem = problem(extra);
            assert!(
                problem.contains(expected),
                "{expected:?} not in {problem:?}"
            );
        }
        // Unknown keys are refused by name (serde).
        let e = toml_spec(&format!("{MINIMAL}\nbatchh = 1")).unwrap_err();
        assert!(e.contains("batchh"), "{e}");
    }

    /// A table with time, for the TimescaleDB keys.
    const TIMED: &str = r#"
        topics = ["e"]
        primary_key = ["id", "time"]
        time = "time"
        columns = [{ name = "id", type = "text", from = "/id", required = true },
                   { name = "time", type = "timestamptz", from = "/t", required = true },
                   { name = "p", type = "numeric", from = "/p" },
                   { name = "s", type = "text", from = "/s" }]
    "#;

    #[test]
    fn wrong_timescaledb_settings_are_refused_naming_the_key() {
        for (extra, expected) in [
            (
                "timescaledb = { compress_after = \"7 dayz\" }",
                "tables.t.timescaledb.compress_after`: \"7 dayz\": \"dayz\" is not a unit",
            ),
            (
                "timescaledb = { chunk_interval = \"1\" }",
                "tables.t.timescaledb.chunk_interval`: \"1\" is not an interval",
            ),
            (
                "[aggregates.c]\nbucket = \"1 minute\"\ncolumns = [{ name = \"x\", fn = \"median\", of = \"p\" }]",
                "tables.t.aggregates.c.columns[0]`: fn \"median\" is not first, last",
            ),
            (
                "[aggregates.c]\nbucket = \"1 minute\"\ncolumns = [{ name = \"x\", fn = \"sum\", of = \"s\" }]",
                "fn sum of `s`, a text: it takes a number",
            ),
            (
                "[aggregates.c]\nbucket = \"1 minute\"\ngroup_by = [\"nope\"]\ncolumns = [{ name = \"n\", fn = \"count\" }]",
                "tables.t.aggregates.c.group_by`: no column `nope` in the table",
            ),
            (
                "[aggregates.c]\nbucket = \"1 minute\"\ncolumns = [{ name = \"n\", fn = \"count\" }]\nrefresh = { start_offset = \"1 minute\" }",
                "the refresh window from 1 minute to 1 minute ago must span at least two buckets",
            ),
            (
                "timescaledb = { retention = \"30 days\" }\n[aggregates.c]\nbucket = \"1 minute\"\ncolumns = [{ name = \"n\", fn = \"count\" }]",
                "tables.t.aggregates.c.refresh.start_offset`: the table drops chunks older than 30 days",
            ),
            (
                "[aggregates.t]\nbucket = \"1 minute\"\ncolumns = [{ name = \"n\", fn = \"count\" }]",
                "`t` already names a table or an aggregate",
            ),
            (
                "timescaledb = { compress_after = \"1 day\", direct_compress = true }",
                "tables.t.timescaledb.direct_compress`: needs a table without a primary key",
            ),
        ] {
            let problem = problem(&format!("{TIMED}\n{extra}"));
            assert!(
                problem.contains(expected),
                "{expected:?} not in {problem:?}"
            );
        }
        let ok = "timescaledb = { retention = \"30 days\" }\n[aggregates.c]\nbucket = \"1 minute\"\ncolumns = [{ name = \"n\", fn = \"count\" }]\nrefresh = { start_offset = \"7 days\" }";
        assert!(catalog_of(&format!("{TIMED}\n{ok}")).is_ok());
    }

    #[test]
    fn paths_share_their_prefixes_and_slots() {
        let c = catalog_of(
            r#"topics = ["e"]
               primary_key = ["a"]
               columns = [
                 { name = "a", type = "text", from = "/data/a", required = true },
                 { name = "b", type = "text", from = ["/data/b", "/data/a"] },
                 { name = "d", type = "jsonb", from = "/data" },
                 { name = "k", type = "text", from = "/a~1b" },
               ]"#,
        )
        .unwrap();
        let t = c.by_name("t").unwrap();
        assert_eq!(t.reading.slots, 4);
        let data = t.reading.record.get("data").unwrap();
        assert!(data.slot.is_some());
        assert_eq!(data.children.keys.len(), 2);
        assert!(t.reading.record.get("a/b").is_some());
        assert_eq!(t.columns[1].from, "/data/b | /data/a");
    }
}

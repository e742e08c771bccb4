//! Configuration: documented defaults, an optional TOML file, then the
//! environment on top. Unknown keys are refused by name, and so is a bad value.
//!
//! Environment: `KAFKA_BROKERS`, `DATABASE_URL` and `TIMESINK_GROUP_ID` are the
//! common ones; every other key is `TIMESINK_<SECTION>__<KEY>` (for example
//! `TIMESINK_BATCH__LEVEL1__MAX_ROWS=2000`), and a librdkafka property is
//! `TIMESINK_RDKAFKA_<NAME>` with its dots written as underscores
//! (`TIMESINK_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL`). Any of them may come
//! from a file instead: `<NAME>_FILE=/run/secrets/x` (for secrets).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::catalog::spec::BatchSpec;
use crate::catalog::{Catalog, CatalogError, TableSpec};

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

/// A configuration error as the operator can act on it: the environment
/// variable it came from, or the key and the file.
fn explain(error: figment::Error, from_env: &[(String, String)]) -> String {
    let mut path = error.path.clone();
    if let figment::error::Kind::UnknownField(field, _) = &error.kind
        && path.last() != Some(field)
    {
        path.push(field.clone());
    }
    let key = path.join(".");
    // The variable that gave the key, a key within it (a value of the
    // wrong type deep down) or a key under it (`batch.level1` refused for
    // TIMESINK_BATCH__LEVEL1__MAX_ROWS).
    let within = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|r| r.starts_with('.'));
    let variable = from_env
        .iter()
        .find(|(k, _)| key == *k || within(&key, k) || within(k, &key))
        .map(|(_, name)| name);
    match (variable, &error.kind) {
        (Some(name), figment::error::Kind::UnknownField(..)) => format!(
            "environment variable {name}: `{key}` is not a configuration key ({}); \
             unset it, or name a key as TIMESINK_<SECTION>__<KEY>",
            error.kind
        ),
        (Some(name), kind) => format!("environment variable {name} (key `{key}`): {kind}"),
        (None, kind) => {
            let source = error
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!(" in {s}"))
                .unwrap_or_default();
            format!("key `{key}`{source}: {kind}")
        }
    }
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Everything `timesink run` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub database: DatabaseConfig,
    /// The tables the sink writes, by name: the four of the contract
    /// (`src/catalog/tables/*.toml`; a block of the same name changes a
    /// key of one, `enabled = false` leaves it out) and any a user
    /// declares in the same form (README, "Tables as data").
    pub tables: BTreeMap<String, TableSpec>,
    /// How batches join into transactions, and what memory they may hold.
    pub batch: BatchConfig,
    pub dead_letter: DeadLetterConfig,
    /// How long a shutdown may take, from the signal to the exit, in
    /// milliseconds: writing and committing what is batched, the last Kafka
    /// commit, leaving the group. Past it the sink exits with code 3 (what
    /// was not committed is read again on the next start).
    pub shutdown_timeout_ms: u64,
    /// The largest value a message may carry, in bytes, as sent and after
    /// LZ4 inflation; a larger one is dead-lettered (whole, as received).
    /// 4 MiB: four times Kafka's default message limit, room for arrays.
    pub max_value_bytes: usize,
    /// The most records one JSON array may carry; a longer array is
    /// dead-lettered before its elements are read.
    pub max_array_elements: usize,
    /// The most digits one decimal may hold as stored: digits sent, shifted
    /// by the exponent (`1e131071` holds 131,072). A larger one dead-letters
    /// its message before the digits are copied. PostgreSQL's `NUMERIC`
    /// takes up to 147,455; 1,000 is far above any price and keeps a message
    /// of such values small in memory.
    pub max_decimal_digits: usize,
    /// The deepest nesting of a JSON document stored in a `jsonb` column
    /// (arrays and objects within each other); a deeper one dead-letters
    /// its message. PostgreSQL's jsonb input recurses per level and fails
    /// the whole statement past its stack (near 10,000 levels with the
    /// default `max_stack_depth`); 1,000 is far below that and far above
    /// any real document.
    pub max_json_depth: usize,
    /// How often a progress line (rows/s per table, lag) is logged, in
    /// milliseconds; 0 turns it off.
    pub progress_interval_ms: u64,
    /// `text` (human-readable lines) or `json` (one object per line, for a
    /// log pipeline). Logs go to stderr; `RUST_LOG` sets the levels.
    pub log_format: LogFormat,
    /// The HTTP endpoints: `/metrics`, `/health`, `/ready`, `/status`.
    pub http: HttpConfig,
    /// How `/status` judges the lag.
    pub health: HealthConfig,
    /// The keys the configuration file and the environment name (not the
    /// built-in defaults): what the sink may change in a live table.
    #[serde(skip)]
    pub named: Named,
}

/// Dotted configuration keys (`tables.crypto_prices.timescaledb.retention`)
/// that the user's file or environment gives. A TimescaleDB setting of a
/// table that exists is changed only where its key is named: a default
/// never overrides what an operator set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named(std::collections::BTreeSet<String>);

impl Named {
    pub fn insert(&mut self, key: impl Into<String>) {
        self.0.insert(key.into());
    }

    /// Whether `key`, a key within it or a section holding it is named.
    pub fn names(&self, key: &str) -> bool {
        let within = |a: &str, b: &str| a.strip_prefix(b).is_some_and(|r| r.starts_with('.'));
        self.0
            .iter()
            .any(|k| k == key || within(k, key) || within(key, k))
    }

    /// The named keys under `prefix.`, without it.
    pub fn under(&self, prefix: &str) -> Vec<String> {
        let prefix = format!("{prefix}.");
        self.0
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// Every leaf key of `value`, under `at`.
    fn add_leaves(&mut self, at: &str, value: &figment::value::Value) {
        match value {
            figment::value::Value::Dict(_, dict) if !dict.is_empty() => {
                for (k, v) in dict {
                    let key = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    self.add_leaves(&key, v);
                }
            }
            _ => self.insert(at),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            database: DatabaseConfig::default(),
            tables: crate::catalog::built_in(),
            batch: BatchConfig::default(),
            dead_letter: DeadLetterConfig::default(),
            shutdown_timeout_ms: 30_000,
            max_value_bytes: 4 * 1024 * 1024,
            max_array_elements: 10_000,
            max_decimal_digits: crate::decimal::DEFAULT_MAX_DIGITS,
            max_json_depth: 1_000,
            progress_interval_ms: 0,
            log_format: LogFormat::Text,
            http: HttpConfig::default(),
            health: HealthConfig::default(),
            named: Named::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The HTTP server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `/metrics` (Prometheus), `/health`, `/ready` and `/status`
    /// listen (`host:port`); empty turns them off. Off by default, so that
    /// several instances (and tests) can share a host; the local stack sets it.
    pub listen: String,
}

/// Lag thresholds of the state in `/status` (total messages behind, all
/// assigned partitions together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// From this lag on, the state is `degraded`.
    pub degraded_lag_messages: i64,
    /// From this lag on, the state is `unhealthy`.
    pub unhealthy_lag_messages: i64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            degraded_lag_messages: 1_000,
            unhealthy_lag_messages: 10_000,
        }
    }
}

/// The Kafka side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port` (env `KAFKA_BROKERS`).
    pub brokers: String,
    /// The consumer group; also the `consumer_group` of `timesink_offsets`
    /// (env `TIMESINK_GROUP_ID`).
    pub group_id: String,
    /// librdkafka properties passed through as they are (TLS, SASL, tuning),
    /// to the consumer, the dead-letter producer and the admin client.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "timesink".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// The PostgreSQL side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// A libpq-style URL or key=value string (env `DATABASE_URL`).
    pub url: String,
    /// `auto`: use TimescaleDB where the extension is installed; `off`: plain
    /// tables always; `required`: refuse to start without it.
    pub timescaledb: TimescaleMode,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "postgres://postgres@localhost:5432/timesink".into(),
            timescaledb: TimescaleMode::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimescaleMode {
    Auto,
    Off,
    Required,
}

/// How batches join into transactions, and what memory they may hold.
/// Each table's own flush rules and writers are part of its description
/// (`tables.<name>.batch`, `tables.<name>.writers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Lingers follow the tables' write times within `[min_linger_ms,
    /// linger_ms]`, and batches that queue behind a transaction join the
    /// next one (up to `max_transaction_rows` / `_bytes`). Off: every batch
    /// waits its `linger_ms` and is one transaction, as in seed 002.
    pub adaptive: bool,
    /// The most rows one transaction takes when queued batches join it.
    pub max_transaction_rows: usize,
    /// The most message bytes one transaction takes when queued batches join it.
    pub max_transaction_bytes: usize,
    /// The most rows each table may hold between batching and commit
    /// (waiting, queued, being written): the bound on the sink's memory
    /// under a backlog. A table out of room holds reading up until a commit
    /// frees room; one that frees none for 0.5 s has its own partitions
    /// paused, and the other tables flow on.
    pub max_rows_in_flight: usize,
    /// The most message bytes each table may hold between batching and
    /// commit, beside the rows: a table of large rows (500 kB documents)
    /// reaches it long before its row budget. 64 MiB.
    pub max_bytes_in_flight: usize,
    /// Flush rules for single topics, by exact topic name, in place of
    /// their table's.
    pub topics: BTreeMap<String, BatchSpec>,
}

const MIB: usize = 1024 * 1024;

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            adaptive: true,
            max_transaction_rows: 20_000,
            max_transaction_bytes: 16 * MIB,
            max_rows_in_flight: 30_000,
            max_bytes_in_flight: 64 * 1024 * 1024,
            topics: BTreeMap::new(),
        }
    }
}

/// Where invalid messages go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// Appended to the source topic's name.
    pub suffix: String,
    /// Replication factor of a dead-letter topic the sink creates (3 in
    /// production, 1 on a single local broker).
    pub replication_factor: i32,
    /// How dead letters are compressed on their way to the broker: `lz4`,
    /// `zstd`, `gzip`, `snappy` or `none`. Their values are kept byte for
    /// byte; compression only lets a large one fit the topic's
    /// `max.message.bytes`.
    pub compression: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            suffix: ".dlq".into(),
            replication_factor: 1,
            compression: "lz4".into(),
        }
    }
}

/// Properties the sink sets itself; passing them through would break its guarantees.
const RESERVED_PROPERTIES: [&str; 4] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
];

/// Variables that are not configuration values: the path of the file itself.
const NOT_VALUES: [&str; 1] = ["TIMESINK_CONFIG_FILE"];

/// Whether an environment variable sets configuration.
fn is_config_variable(name: &str) -> bool {
    matches!(name, "KAFKA_BROKERS" | "DATABASE_URL")
        || (name.starts_with("TIMESINK_") && !NOT_VALUES.contains(&name))
}

/// Replaces each `<NAME>_FILE` (for a configuration variable NAME) by NAME
/// with the file's content, its trailing newline removed: how secrets
/// (`DATABASE_URL_FILE`, `TIMESINK_RDKAFKA_SASL_PASSWORD_FILE`) come from
/// mounted files rather than the environment itself.
fn with_secret_files(env: Vec<(String, String)>) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::with_capacity(env.len());
    for (name, value) in &env {
        if NOT_VALUES.contains(&name.as_str()) {
            continue;
        }
        let Some(base) = name.strip_suffix("_FILE").filter(|b| is_config_variable(b)) else {
            out.push((name.clone(), value.clone()));
            continue;
        };
        if env.iter().any(|(k, _)| k == base) {
            return Err(ConfigError::Load(format!(
                "both {base} and {name} are set; use one"
            )));
        }
        let text = std::fs::read_to_string(value)
            .map_err(|e| ConfigError::Load(format!("{name}: cannot read {value}: {e}")))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        out.push((base.to_owned(), text.to_owned()));
    }
    Ok(out)
}

impl Config {
    /// Defaults, then the file (if any), then the environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let mut named = Named::default();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
            if let Ok(value) =
                Figment::from(Toml::file_exact(path)).extract::<figment::value::Value>()
            {
                named.add_leaves("", &value);
            }
        }
        let env = with_secret_files(env.into_iter().collect())?;
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        // The nested TIMESINK_<SECTION>__<KEY> form; the three short names and
        // the librdkafka pass-through are read separately below. Each key
        // remembers its variable, for errors to name it.
        let mut from_env: Vec<(String, String)> = Vec::new();
        for (name, value) in &env {
            let Some(rest) = name.strip_prefix("TIMESINK_") else {
                continue;
            };
            if rest == "GROUP_ID" || rest.starts_with("RDKAFKA_") {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
            figment = figment.merge(Serialized::defaults(figment::util::nest(&key, value)));
            named.insert(key.clone());
            from_env.push((key, name.clone()));
        }
        let mut config: Config = figment.extract().map_err(|e| {
            let errors: Vec<String> = e.into_iter().map(|e| explain(e, &from_env)).collect();
            ConfigError::Load(errors.join("; "))
        })?;
        config.named = named;
        if let Some(v) = lookup("KAFKA_BROKERS") {
            config.kafka.brokers = v;
        }
        if let Some(v) = lookup("DATABASE_URL") {
            config.database.url = v;
        }
        if let Some(v) = lookup("TIMESINK_GROUP_ID") {
            config.kafka.group_id = v;
        }
        for (k, v) in &env {
            if let Some(name) = k.strip_prefix("TIMESINK_RDKAFKA_") {
                config
                    .kafka
                    .properties
                    .insert(name.to_ascii_lowercase().replace('_', "."), v.clone());
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the sink cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid(
                "kafka.brokers",
                "must name at least one broker (host:port)",
            ));
        }
        for broker in self.kafka.brokers.split(',') {
            let broker = broker.trim();
            let port_ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(invalid(
                    "kafka.brokers",
                    format!("{broker:?} is not host:port"),
                ));
            }
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        for key in self.kafka.properties.keys() {
            if RESERVED_PROPERTIES.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.properties.{key}"),
                    "is set by the sink itself (use kafka.brokers / kafka.group_id; commits are always manual)",
                ));
            }
        }
        if let Err(e) = self.database() {
            return Err(invalid("database.url", e.to_string()));
        }
        for (topic, l) in &self.batch.topics {
            crate::catalog::check_batch(l).map_err(|(key, problem)| {
                invalid(format!("batch.topics.{topic}.{key}"), problem)
            })?;
        }
        self.catalog()
            .map_err(|e| invalid(format!("tables.{}{}", e.table, e.key), e.problem))?;
        if self.batch.max_transaction_rows == 0 {
            return Err(invalid("batch.max_transaction_rows", "must be at least 1"));
        }
        if self.batch.max_transaction_bytes == 0 {
            return Err(invalid("batch.max_transaction_bytes", "must be at least 1"));
        }
        // Rows are taken from a semaphore in u32 counts.
        if self.batch.max_bytes_in_flight == 0 {
            return Err(invalid("batch.max_bytes_in_flight", "must be at least 1"));
        }
        if self.batch.max_rows_in_flight == 0 || self.batch.max_rows_in_flight > u32::MAX as usize {
            return Err(invalid(
                "batch.max_rows_in_flight",
                format!("must be between 1 and {}", u32::MAX),
            ));
        }
        if self.dead_letter.suffix.is_empty() || !self.dead_letter.suffix.contains('.') {
            return Err(invalid(
                "dead_letter.suffix",
                "must contain a dot, so that dead-letter topics never match the subscription",
            ));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"]
            .contains(&self.dead_letter.compression.as_str())
        {
            return Err(invalid(
                "dead_letter.compression",
                format!(
                    "{:?} is not one of none, gzip, snappy, lz4, zstd",
                    self.dead_letter.compression
                ),
            ));
        }
        if self.dead_letter.replication_factor < 1 {
            return Err(invalid(
                "dead_letter.replication_factor",
                "must be at least 1",
            ));
        }
        if self.max_value_bytes == 0 {
            return Err(invalid("max_value_bytes", "must be at least 1"));
        }
        if self.max_array_elements == 0 {
            return Err(invalid("max_array_elements", "must be at least 1"));
        }
        if self.max_json_depth == 0 {
            return Err(invalid("max_json_depth", "must be at least 1"));
        }
        if self.max_decimal_digits == 0 {
            return Err(invalid("max_decimal_digits", "must be at least 1"));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen",
                format!(
                    "{:?} is not an address such as 0.0.0.0:9464",
                    self.http.listen
                ),
            ));
        }
        if self.health.degraded_lag_messages < 1 {
            return Err(invalid(
                "health.degraded_lag_messages",
                "must be at least 1",
            ));
        }
        if self.health.unhealthy_lag_messages < self.health.degraded_lag_messages {
            return Err(invalid(
                "health.unhealthy_lag_messages",
                format!(
                    "must be at least degraded_lag_messages ({})",
                    self.health.degraded_lag_messages
                ),
            ));
        }
        Ok(())
    }

    /// The database to connect to, TLS settings included.
    pub fn database(&self) -> Result<crate::database::Database, crate::database::UrlError> {
        crate::database::Database::from_url(&self.database.url)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The tables, built from their descriptions and checked.
    /// The tables, each knowing which of its keys the configuration names.
    pub fn catalog(&self) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::build(&self.tables, &self.dead_letter.suffix)?;
        catalog.name_keys(|table| self.named.under(&format!("tables.{table}")));
        Ok(catalog)
    }

    /// The bounds on the work one message may cause.
    pub fn bounds(&self) -> crate::pipeline::decode::Bounds {
        crate::pipeline::decode::Bounds {
            value_bytes: self.max_value_bytes,
            array_elements: self.max_array_elements,
            decimal_digits: self.max_decimal_digits,
            json_depth: self.max_json_depth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    /// Every `TIMESINK_<SECTION>__<KEY>` variable the README names is a
    /// configuration key (one that is not stops the sink at start).
    #[test]
    fn every_variable_the_readme_names_is_a_key() {
        let readme = include_str!("../README.md");
        let mut variables: Vec<&str> = readme
            .match_indices("TIMESINK_")
            .map(|(at, _)| {
                let rest = &readme[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .filter(|v| v.contains("__"))
            .collect();
        variables.sort_unstable();
        variables.dedup();
        assert!(variables.len() >= 3, "{variables:?}");
        for variable in variables {
            let refused = Config::load_from(None, env(&[(variable, "1")]))
                .err()
                .map(|e| e.to_string())
                .filter(|e| e.contains("is not a configuration key"));
            assert_eq!(refused, None, "{variable}");
        }
        assert!(
            Config::load_from(None, env(&[("TIMESINK_BATCH__LEVEL1__MAX_ROWS", "1")]))
                .is_err_and(|e| e.to_string().contains("is not a configuration key")),
            "the check can fail"
        );
    }

    /// The keys the file and the environment give are named; the
    /// built-in defaults are not.
    #[test]
    fn the_keys_the_file_and_the_environment_give_are_named() {
        let f = file(
            "[tables.crypto_prices.timescaledb]\ncompress_after = \"3 days\"\n\n[tables.crypto_prices.aggregates.crypto_candles_1m.refresh]\nstart_offset = \"30 days\"\n",
        );
        let config = Config::load_from(
            Some(f.path()),
            env(&[(
                "TIMESINK_TABLES__LEVEL1_QUOTES__TIMESCALEDB__RETENTION",
                "90 days",
            )]),
        )
        .unwrap();
        let catalog = config.catalog().unwrap();
        let named = |t: &str| catalog.by_name(t).unwrap().timescaledb.named.clone();
        assert_eq!(
            named("crypto_prices"),
            [
                "aggregates.crypto_candles_1m.refresh.start_offset",
                "timescaledb.compress_after"
            ]
        );
        assert_eq!(named("level1_quotes"), ["timescaledb.retention"]);
        assert!(named("ohlcv_data").is_empty());
        assert!(
            config
                .named
                .names("tables.crypto_prices.timescaledb.compress_after")
        );
        assert!(
            !config
                .named
                .names("tables.crypto_prices.timescaledb.retention")
        );
    }

    #[test]
    fn errors_from_the_environment_name_the_variable() {
        let load = |vars: &[(&str, &str)]| {
            Config::load_from(
                None,
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .unwrap_err()
            .to_string()
        };
        // A wrapper's own variable that shares the prefix.
        let e = load(&[("TIMESINK_BIN", "/usr/local/bin/timesink")]);
        assert!(e.contains("environment variable TIMESINK_BIN"), "{e}");
        assert!(e.contains("`bin` is not a configuration key"), "{e}");
        assert!(!e.contains("src/config.rs"), "{e}");
        let e = load(&[("TIMESINK_BATCH__MAX_ROWS_IN_FLIGHTS", "5")]);
        assert!(
            e.contains("environment variable TIMESINK_BATCH__MAX_ROWS_IN_FLIGHTS"),
            "{e}"
        );
        assert!(e.contains("batch.max_rows_in_flights"), "{e}");
        let e = load(&[("TIMESINK_BATCH__MAX_ROWS_IN_FLIGHT", "many")]);
        assert!(
            e.contains(
                "environment variable TIMESINK_BATCH__MAX_ROWS_IN_FLIGHT (key `batch.max_rows_in_flight`):"
            ),
            "{e}"
        );
        assert!(e.contains("many"), "{e}");
        // From a file: the key and the file.
        let f = file("[batch]\nmax_rows_in_flight = \"many\"\n");
        let e = Config::load_from(Some(f.path()), std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `batch.max_rows_in_flight`"), "{e}");
        // The file as figment shows it (relative to the working directory).
        let name = f.path().file_name().expect("a file name").to_string_lossy();
        assert!(e.contains(&*name), "{e}");
    }

    /// The README's configuration block is every key, at its default.
    #[test]
    fn the_readme_lists_every_key_at_its_default() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").unwrap()];
        let f = file(block);
        let mut loaded = Config::load_from(Some(f.path()), env(&[])).unwrap();
        assert!(loaded.named.names("batch.max_rows_in_flight"));
        assert!(!loaded.named.names("tables"));
        loaded.named = Named::default();
        assert_eq!(loaded, Config::default());

        // Every key of the struct is written out (open maps aside; the
        // tables have a section of their own).
        fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            if let Some(map) = v.as_object() {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    if v.is_object() && !v.as_object().is_some_and(|m| m.is_empty()) {
                        keys(&path, v, out);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        let mut expected = Vec::new();
        keys(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut expected,
        );
        let written: serde_json::Value = Figment::from(Toml::string(block)).extract().unwrap();
        let mut found = Vec::new();
        keys("", &written, &mut found);
        for key in expected.into_iter().filter(|k| !k.starts_with("tables.")) {
            assert!(
                found.contains(&key),
                "README's configuration block lacks `{key}`"
            );
        }
    }

    #[test]
    fn secrets_come_from_files() {
        let url = file("postgres://sink:s3cret@db:5432/market\n");
        let password = file("sasl-pw\n");
        let c = Config::load_from(
            None,
            env(&[
                ("DATABASE_URL_FILE", url.path().to_str().unwrap()),
                (
                    "TIMESINK_RDKAFKA_SASL_PASSWORD_FILE",
                    password.path().to_str().unwrap(),
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.database.url, "postgres://sink:s3cret@db:5432/market");
        assert_eq!(c.kafka.properties["sasl.password"], "sasl-pw");

        let err = Config::load_from(
            None,
            env(&[
                ("DATABASE_URL", "postgres://a@b/c"),
                ("DATABASE_URL_FILE", url.path().to_str().unwrap()),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("both DATABASE_URL and DATABASE_URL_FILE"),
            "{err}"
        );
        let err = Config::load_from(None, env(&[("DATABASE_URL_FILE", "/nonexistent/url")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATABASE_URL_FILE: cannot read /nonexistent/url"),
            "{err}"
        );
        // The config file's own path is not a secret file.
        let cfg = file("shutdown_timeout_ms = 5\n");
        let c = Config::load_from(
            None,
            env(&[("TIMESINK_CONFIG_FILE", cfg.path().to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(c.shutdown_timeout_ms, Config::default().shutdown_timeout_ms);
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.tables["level1_quotes"].batch.max_rows, 5000);
        assert_eq!(c.tables["crypto_prices"].batch.linger_ms, 50);
        assert_eq!(c.catalog().unwrap().len(), crate::catalog::BUILT_IN.len());
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = file(
            "[kafka]\nbrokers = \"a:1\"\ngroup_id = \"g\"\n[tables.level1_quotes.batch]\nmax_rows = 5\nmax_bytes = 10\nlinger_ms = 1\n",
        );
        let c = Config::load_from(
            Some(f.path()),
            env(&[
                ("KAFKA_BROKERS", "b:2,c:3"),
                ("TIMESINK_GROUP_ID", "other"),
                ("DATABASE_URL", "postgres://u@h:1/d"),
                ("TIMESINK_TABLES__LEVEL1_QUOTES__BATCH__MAX_ROWS", "7"),
                ("TIMESINK_RDKAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "b:2,c:3");
        assert_eq!(c.kafka.group_id, "other");
        assert_eq!(c.database.url, "postgres://u@h:1/d");
        let level1 = &c.tables["level1_quotes"];
        assert_eq!(level1.batch.max_rows, 7);
        assert_eq!(level1.batch.max_bytes, 10);
        // The rest of the built-in table is as it was.
        assert_eq!(
            level1.columns,
            Config::default().tables["level1_quotes"].columns
        );
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let f = file("[kafka]\nbrokerz = \"a:1\"\n");
        let err = Config::load_from(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokerz"), "{err}");
        let err = Config::load_from(None, env(&[("TIMESINK_BATCH__NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("KAFKA_BROKERS", "nohostport", "kafka.brokers"),
            ("DATABASE_URL", "postgres://h:notaport/x", "database.url"),
            (
                "TIMESINK_TABLES__CRYPTO_PRICES__BATCH__MAX_ROWS",
                "0",
                "tables.crypto_prices.batch.max_rows",
            ),
            (
                "TIMESINK_TABLES__LEVEL1_QUOTES__BATCH__MIN_LINGER_MS",
                "11",
                "tables.level1_quotes.batch.min_linger_ms",
            ),
            (
                "TIMESINK_BATCH__MAX_TRANSACTION_ROWS",
                "0",
                "batch.max_transaction_rows",
            ),
            (
                "TIMESINK_TABLES__CRYPTO_PRICES__WRITERS",
                "0",
                "tables.crypto_prices.writers",
            ),
            (
                "TIMESINK_TABLES__LEVEL1_QUOTES__WRITERS",
                "17",
                "tables.level1_quotes.writers",
            ),
            (
                "TIMESINK_TABLES__OHLCV_DATA__TOPIC_PATTERN",
                "crypto-ohlcv",
                "tables.ohlcv_data.topic_pattern",
            ),
            ("TIMESINK_DEAD_LETTER__SUFFIX", "_dlq", "dead_letter.suffix"),
            ("TIMESINK_HTTP__LISTEN", "localhost", "http.listen"),
            (
                "TIMESINK_HEALTH__UNHEALTHY_LAG_MESSAGES",
                "10",
                "health.unhealthy_lag_messages",
            ),
            (
                "TIMESINK_RDKAFKA_ENABLE_AUTO_COMMIT",
                "true",
                "kafka.properties.enable.auto.commit",
            ),
        ];
        for (k, v, key) in cases {
            let err = Config::load_from(None, env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{k}={v}: {err}");
        }
        let err = Config::load_from(
            None,
            env(&[("TIMESINK_TABLES__CRYPTO_PRICES__BATCH__MAX_ROWS", "many")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_rows"), "{err}");
    }
}

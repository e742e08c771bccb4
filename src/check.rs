//! `timesink check`: before a deployment, does this configuration work here?
//!
//! The configuration has already loaded and passed validation (or the
//! binary stopped with the key at fault). This reaches the broker and the
//! database with it and reports what it finds: the topics each data type
//! would read, the tables, TimescaleDB, and the offsets stored for the
//! group. It changes nothing: tables missing now are created by `run`.

use std::fmt::Write as _;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::{Config, TimescaleMode};
use crate::record::DataType;
use crate::schema::SchemaError;

/// How long each endpoint may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A check that failed, naming the endpoint and the key that sets it.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("kafka.brokers ({brokers}): {problem}")]
    Kafka { brokers: String, problem: String },
    #[error("database.url ({target}): {problem}")]
    Database { target: String, problem: String },
    /// What `run` would refuse to start with.
    #[error("{0} (the sink would refuse to start)")]
    Schema(#[from] crate::schema::SchemaError),
}

/// Runs every check; the report on success, the first failure otherwise.
pub async fn run(config: &Config) -> Result<String, CheckError> {
    let mut out = String::new();
    let _ = writeln!(out, "configuration: valid");
    kafka(config, &mut out)?;
    database(config, &mut out).await?;
    Ok(out)
}

fn kafka(config: &Config, out: &mut String) -> Result<(), CheckError> {
    let fail = |problem: String| CheckError::Kafka {
        brokers: config.kafka.brokers.clone(),
        problem,
    };
    let consumer: BaseConsumer = crate::consume::consumer_config(config)
        .create()
        .map_err(|e| fail(format!("cannot create a client: {e}")))?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| fail(format!("no metadata within {TIMEOUT:?}: {e}")))?;
    let brokers: Vec<String> = metadata
        .brokers()
        .iter()
        .map(|b| format!("{} ({}:{})", b.id(), b.host(), b.port()))
        .collect();
    let _ = writeln!(out, "kafka: reached; brokers {}", brokers.join(", "));
    for t in DataType::ALL {
        let mut matched: Vec<String> = metadata
            .topics()
            .iter()
            .filter(|topic| {
                config
                    .topics
                    .classify(topic.name())
                    .is_some_and(|(d, _)| d == t)
            })
            .map(|topic| format!("{} ({} partitions)", topic.name(), topic.partitions().len()))
            .collect();
        matched.sort();
        let _ = writeln!(
            out,
            "  {} topics matching {}: {}",
            t.name(),
            config.topics.pattern(t),
            if matched.is_empty() {
                "none yet (picked up when created)".to_owned()
            } else {
                matched.join(", ")
            }
        );
    }
    Ok(())
}

async fn database(config: &Config, out: &mut String) -> Result<(), CheckError> {
    let database = config.database().map_err(|e| CheckError::Database {
        target: "?".into(),
        problem: e.to_string(),
    })?;
    let target = database.target();
    let fail = |problem: String| CheckError::Database {
        target: target.clone(),
        problem,
    };
    let client = tokio::time::timeout(TIMEOUT, database.connect())
        .await
        .map_err(|_| fail(format!("no answer within {TIMEOUT:?}")))?
        .map_err(|e| fail(crate::pg_error::describe(&e)))?;
    let query = |e: tokio_postgres::Error| fail(crate::pg_error::describe(&e));

    let row = client
        .query_one(
            "SELECT current_setting('server_version'), \
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), \
                    current_setting('shared_preload_libraries') LIKE '%timescaledb%', \
                    (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), \
                    coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await
        .map_err(query)?;
    let (version, available, preloaded, installed, tls): (
        String,
        bool,
        bool,
        Option<String>,
        bool,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let _ = writeln!(
        out,
        "database: reached {target} ({}, sslmode {:?}); PostgreSQL {version}",
        if tls { "TLS" } else { "no TLS" },
        database.mode()
    );
    let timescale = match (&installed, available, preloaded) {
        (Some(v), _, _) => format!("TimescaleDB {v} in use"),
        (None, true, true) => "TimescaleDB available (created at start)".to_owned(),
        (None, true, false) => {
            "TimescaleDB installed but not in shared_preload_libraries: plain tables".to_owned()
        }
        (None, false, _) => "no TimescaleDB: plain tables".to_owned(),
    };
    let _ = writeln!(out, "  {timescale}");
    if config.database.timescaledb == TimescaleMode::Required {
        if !available {
            return Err(SchemaError::TimescaleMissing.into());
        }
        if !preloaded {
            return Err(SchemaError::TimescaleNotPreloaded.into());
        }
    }

    let hypertables: Vec<String> = if installed.is_some() {
        client
            .query(
                "SELECT hypertable_name::text FROM timescaledb_information.hypertables",
                &[],
            )
            .await
            .map_err(query)?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    for t in DataType::ALL {
        let table = t.table();
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(query)?
            .get(0);
        let state = match (exists, hypertables.iter().any(|h| h == table)) {
            (false, _) => "missing (created at start)",
            (true, true) => "present, hypertable",
            (true, false) => "present",
        };
        let _ = writeln!(out, "  table {table}: {state}");
    }

    let offsets = client
        .query_one("SELECT to_regclass('timesink_offsets') IS NOT NULL", &[])
        .await
        .map_err(query)?
        .get::<_, bool>(0);
    if offsets {
        let rows = client
            .query(
                "SELECT topic, count(*), sum(next_offset)::bigint FROM timesink_offsets \
                 WHERE consumer_group = $1 GROUP BY topic ORDER BY topic",
                &[&config.kafka.group_id],
            )
            .await
            .map_err(query)?;
        if rows.is_empty() {
            let _ = writeln!(
                out,
                "  offsets of group {}: none stored (starts from the group's Kafka offsets, else the earliest)",
                config.kafka.group_id
            );
        }
        for row in rows {
            let (topic, partitions, total): (String, i64, i64) =
                (row.get(0), row.get(1), row.get(2));
            let _ = writeln!(
                out,
                "  offsets of group {} on {topic}: {partitions} partitions, {total} messages stored in all",
                config.kafka.group_id
            );
        }
    } else {
        let _ = writeln!(out, "  table timesink_offsets: missing (created at start)");
    }
    Ok(())
}

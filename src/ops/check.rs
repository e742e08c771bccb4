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

use crate::catalog::Catalog;
use crate::catalog::schema::SchemaError;
use crate::catalog::timescale::shown;
use crate::config::{Config, TimescaleMode};

const CHECK_SERVER_SQL: &str = include_str!("../../sql/queries/check_server.sql");
const HYPERTABLES_SQL: &str = include_str!("../../sql/queries/hypertables.sql");
const OFFSETS_EXIST_SQL: &str = include_str!("../../sql/queries/offsets_exist.sql");
const GROUP_OFFSETS_SQL: &str = include_str!("../../sql/queries/group_offsets.sql");
const TIMESCALEDB_STATS_SQL: &str = include_str!("../../sql/queries/timescaledb_stats.sql");

/// How long each endpoint may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A check that failed, naming the endpoint and the key that sets it.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("kafka.brokers ({brokers}): {problem}")]
    Kafka { brokers: String, problem: String },
    #[error("database.url ({target}): {problem}")]
    Database { target: String, problem: String },
    /// What `run` would refuse to start with.
    #[error("{0} (the sink would refuse to start)")]
    Schema(#[from] crate::catalog::schema::SchemaError),
    /// Tables `run` would report blocked until they are fixed.
    #[error("{0} (the sink reports such a table blocked until it matches)")]
    Tables(String),
}

/// Runs every check; the report on success, the first failure otherwise.
pub async fn run(config: &Config) -> Result<String, CheckError> {
    let mut report = Report::default();
    let _ = writeln!(report.head, "configuration: valid");
    let catalog = config.catalog()?;
    for t in catalog.tables() {
        report.table(&t.name);
    }
    kafka(config, &catalog, &mut report)?;
    database(config, &catalog, &mut report).await?;
    Ok(report.print())
}

/// What `check` found: the endpoints first, then each table once, with
/// everything about it (its topics, its state, TimescaleDB's view of it)
/// beneath its heading, then the group's stored offsets.
#[derive(Default)]
struct Report {
    head: String,
    /// Tables in the order first named: the catalog's, then the
    /// bookkeeping tables.
    tables: Vec<(String, TableReport)>,
    tail: String,
}

#[derive(Default)]
struct TableReport {
    /// What the heading says after the table's name.
    heading: String,
    /// The lines beneath it.
    lines: Vec<String>,
}

impl Report {
    fn table(&mut self, name: &str) -> &mut TableReport {
        let at = match self.tables.iter().position(|(n, _)| n == name) {
            Some(at) => at,
            None => {
                self.tables.push((name.to_owned(), TableReport::default()));
                self.tables.len() - 1
            }
        };
        &mut self.tables[at].1
    }

    fn print(self) -> String {
        let mut out = self.head;
        for (name, table) in self.tables {
            let _ = writeln!(out, "table {name}{}", table.heading);
            for line in table.lines {
                let _ = writeln!(out, "  {line}");
            }
        }
        out + &self.tail
    }
}

fn kafka(config: &Config, catalog: &Catalog, report: &mut Report) -> Result<(), CheckError> {
    let fail = |problem: String| CheckError::Kafka {
        brokers: config.kafka.brokers.clone(),
        problem,
    };
    let consumer: BaseConsumer = crate::pipeline::consume::consumer_config(config)
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
    let _ = writeln!(
        report.head,
        "kafka: reached; brokers {}",
        brokers.join(", ")
    );
    let suffix = &config.dead_letter.suffix;
    for t in catalog.tables() {
        let mut matched: Vec<String> = metadata
            .topics()
            .iter()
            .filter(|topic| {
                catalog
                    .route(topic.name(), suffix)
                    .is_some_and(|r| r.table == t.id)
            })
            .map(|topic| format!("{} ({} partitions)", topic.name(), topic.partitions().len()))
            .collect();
        matched.sort();
        let mut wanted: Vec<String> = t.topics.clone();
        wanted.extend(t.pattern.iter().map(|p| p.as_str().to_owned()));
        let line = format!(
            "reads {}: {}",
            wanted.join(", "),
            if matched.is_empty() {
                "no topic yet (picked up when created)".to_owned()
            } else {
                matched.join(", ")
            }
        );
        report.table(&t.name).lines.push(line);
    }
    Ok(())
}

async fn database(
    config: &Config,
    catalog: &Catalog,
    report: &mut Report,
) -> Result<(), CheckError> {
    let out = &mut report.head;
    let database = config.database().map_err(|e| CheckError::Database {
        target: "?".into(),
        problem: e.to_string(),
    })?;
    let target = database.target();
    let fail = |problem: String| CheckError::Database {
        target: target.clone(),
        problem,
    };
    let mut client = tokio::time::timeout(TIMEOUT, database.connect())
        .await
        .map_err(|_| fail(format!("no answer within {TIMEOUT:?}")))?
        .map_err(|e| fail(crate::pg_error::describe(&e)))?;
    let query = |e: tokio_postgres::Error| fail(crate::pg_error::describe(&e));

    let row = client
        .query_one(CHECK_SERVER_SQL, &[])
        .await
        .map_err(query)?;
    // shared_preload_libraries is hidden from roles without
    // pg_read_all_settings (None): an extension created says it is loaded.
    let (version, available, preloaded, installed, tls): (
        String,
        bool,
        Option<bool>,
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
        (None, true, Some(true)) => "TimescaleDB available (created at start)".to_owned(),
        (None, true, Some(false)) => {
            "TimescaleDB installed but not in shared_preload_libraries: plain tables".to_owned()
        }
        (None, true, None) => {
            "TimescaleDB installed; whether it is preloaded is hidden from this role: plain tables"
                .to_owned()
        }
        (None, false, _) => "no TimescaleDB: plain tables".to_owned(),
    };
    let _ = writeln!(out, "  {timescale}");
    if config.database.timescaledb == TimescaleMode::Required && installed.is_none() {
        match (available, preloaded) {
            (false, _) => return Err(SchemaError::TimescaleMissing.into()),
            (true, Some(false)) => return Err(SchemaError::TimescaleNotPreloaded.into()),
            (true, None) => return Err(SchemaError::TimescaleUnknown.into()),
            (true, Some(true)) => {}
        }
    }

    let hypertables: Vec<String> = if installed.is_some() {
        client
            .query(HYPERTABLES_SQL, &[])
            .await
            .map_err(query)?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    // Each table compared with what the sink writes, as `run` does.
    let shapes = crate::catalog::schema::expected_shapes(&mut client, catalog).await?;
    let mut mismatched = Vec::new();
    for (table, expected) in &shapes {
        let found = crate::catalog::schema::shape_of(&client, &crate::catalog::sql::ident(table))
            .await
            .map_err(query)?;
        let state = match &found {
            None => "missing (created at start)".to_owned(),
            Some(found) => {
                let problems = crate::catalog::schema::compare(table, expected, found);
                let kind = if hypertables.iter().any(|h| h == table) {
                    "present, hypertable"
                } else {
                    "present"
                };
                if problems.is_empty() {
                    format!("{kind}, matches what the sink writes")
                } else {
                    mismatched.extend(problems.iter().cloned());
                    format!("{kind}, DOES NOT MATCH: {}", problems.join("; "))
                }
            }
        };
        let described = match catalog.by_name(table) {
            Some(t) => format!(
                " ({} columns, primary key ({}))",
                t.columns.len(),
                t.key
                    .iter()
                    .map(|&k| t.columns[k].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        report.table(table).heading = format!("{described}: {state}");
    }
    if !mismatched.is_empty() {
        return Err(CheckError::Tables(mismatched.join("; ")));
    }
    if installed.is_some() && config.database.timescaledb != TimescaleMode::Off {
        timescaledb(&client, catalog, report).await.map_err(query)?;
    }
    let out = &mut report.tail;

    let offsets = client
        .query_one(OFFSETS_EXIST_SQL, &[])
        .await
        .map_err(query)?
        .get::<_, bool>(0);
    if offsets {
        let rows = client
            .query(GROUP_OFFSETS_SQL, &[&config.kafka.group_id])
            .await
            .map_err(query)?;
        if rows.is_empty() {
            let _ = writeln!(
                out,
                "offsets of group {}: none stored (starts from the group's Kafka offsets, else the earliest)",
                config.kafka.group_id
            );
        }
        for row in rows {
            let (topic, partitions, total): (String, i64, i64) =
                (row.get(0), row.get(1), row.get(2));
            let _ = writeln!(
                out,
                "offsets of group {} on {topic}: {partitions} partitions, {total} messages stored in all",
                config.kafka.group_id
            );
        }
    } else {
        report.table("timesink_offsets").heading = ": missing (created at start)".into();
    }
    Ok(())
}

/// What TimescaleDB holds of each table, and what the next start would
/// change to match the configuration.
async fn timescaledb(
    client: &tokio_postgres::Client,
    catalog: &Catalog,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let plans = crate::catalog::schema::timescaledb_plans(
        client,
        catalog,
        crate::catalog::schema::Step::Run,
        &[],
    )
    .await?;
    for state in plans {
        let (table, live, plan) = (&state.table, &state.live, &state.plan);
        let out = &mut report.table(table).lines;
        if live.hypertable {
            let row = client.query_one(TIMESCALEDB_STATS_SQL, &[table]).await?;
            let (chunks, compressed, before, after): (i64, i64, Option<i64>, Option<i64>) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let ratio = match (before, after) {
                (Some(b), Some(a)) if b > 0 => format!(
                    " ({} → {}, {:.0} % saved)",
                    bytes(b),
                    bytes(a),
                    100.0 * (1.0 - a as f64 / b as f64)
                ),
                _ => String::new(),
            };
            out.push(format!(
                "hypertable: {chunks} chunks, {compressed} compressed{ratio}; chunks of {}; compression {}; retention {}",
                shown(live.chunk_interval),
                match (live.compression_enabled, live.compress_after) {
                    (false, _) => "off".to_owned(),
                    (true, after) => format!(
                        "segmented by ({}), ordered by ({}), policy after {}",
                        live.segment_by.as_deref().unwrap_or(""),
                        live.order_by.as_deref().unwrap_or(""),
                        shown(after)
                    ),
                },
                shown(live.retention),
            ));
        }
        for (name, found) in &state.aggregates {
            let state = if !found.exists {
                "missing (created at start)".to_owned()
            } else {
                format!(
                    "{}, {}",
                    if found.materialized_only {
                        "materialized only"
                    } else {
                        "real time"
                    },
                    match found.refresh {
                        None => "no refresh policy".to_owned(),
                        Some((start, end, every)) => format!(
                            "refreshed every {} from {} to {} ago",
                            shown(Some(every)),
                            start.map_or("the beginning".to_owned(), |s| shown(Some(s))),
                            shown(end)
                        ),
                    }
                )
            };
            out.push(format!("aggregate {name}: {state}"));
        }
        for change in &plan.changes {
            out.push(format!(
                "differs from the configuration (changed at start): {}",
                change.what
            ));
        }
        for left in &plan.left_alone {
            out.push(format!(
                "differs from the configuration, left alone: {left}"
            ));
        }
    }
    Ok(())
}

fn bytes(n: i64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n as f64 >= MIB {
        format!("{:.1} MiB", n as f64 / MIB)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

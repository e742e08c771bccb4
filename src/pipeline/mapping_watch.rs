//! Instances of one consumer group must describe each table alike: two
//! that send one topic to different tables, or read it into other columns,
//! split its rows between two mappings without a single error. Each
//! instance records a fingerprint of each table's description in
//! `timesink_mappings` every few seconds, and compares the other live
//! instances' with its own; a difference is reported loudly: one `error`
//! line when it appears, `/status` `mapping_mismatch`, and
//! `timesink_mapping_mismatch{table}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::Database;
use crate::config::Config;
use crate::ops::health::Health;

const RECORD_SQL: &str = include_str!("../../sql/queries/record_mappings.sql");
const LIVE_SQL: &str = include_str!("../../sql/queries/live_mappings.sql");

/// How often an instance records its descriptions and compares.
const BEAT: Duration = Duration::from_secs(10);
/// An instance not seen for this long is gone.
const LIVE_FOR: Duration = Duration::from_secs(30);

/// What the watch records and compares for this instance.
pub struct Mappings {
    group: String,
    /// This process, as other instances see it.
    instance: String,
    /// Each table's description, as canonical JSON.
    tables: Vec<String>,
    descriptions: Vec<String>,
}

impl Mappings {
    /// The enabled tables' descriptions: what decides which topics a table
    /// reads and what rows it makes of them (not its batching, writers or
    /// TimescaleDB settings, which may differ between instances harmlessly).
    pub fn of(config: &Config) -> Mappings {
        let (mut tables, mut descriptions) = (Vec::new(), Vec::new());
        for (name, spec) in config.tables.iter().filter(|(_, s)| s.enabled) {
            let mut value = serde_json::to_value(spec).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                for key in ["batch", "writers", "timescaledb", "aggregates", "enabled"] {
                    object.remove(key);
                }
            }
            tables.push(name.clone());
            descriptions.push(value.to_string());
        }
        let instance = match config.kafka.properties.get("group.instance.id") {
            Some(id) => id.clone(),
            None => format!("{}:{}", host_name(), std::process::id()),
        };
        Mappings {
            group: config.kafka.group_id.clone(),
            instance,
            tables,
            descriptions,
        }
    }
}

/// The machine's name, to tell instances apart in a report.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Records and compares every [`BEAT`] until `stop`.
pub async fn run(
    mappings: Mappings,
    database: Database,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let mut client: Option<Client> = None;
    let mut said_unavailable = false;
    health.set_mapping_mismatch(&mappings.tables, BTreeMap::new());
    loop {
        if client.as_ref().is_none_or(Client::is_closed) {
            client = database.connect().await.ok();
        }
        if let Some(c) = &client {
            match beat(c, &mappings).await {
                Ok(mismatch) => {
                    said_unavailable = false;
                    report(&health, &mappings, mismatch);
                }
                Err(e) if e.code().is_some() && !said_unavailable => {
                    said_unavailable = true;
                    tracing::warn!(
                        error = %crate::pg_error::describe(&e),
                        "the instances' table descriptions cannot be compared (timesink_mappings: \
                         `timesink schema` creates it; the role needs SELECT, INSERT, UPDATE, DELETE on it)"
                    );
                }
                Err(e) => tracing::debug!(error = %crate::pg_error::describe(&e), "mapping watch"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(BEAT) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Records this instance's fingerprints; the tables other live instances
/// describe otherwise, with how.
async fn beat(
    client: &Client,
    mappings: &Mappings,
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    client
        .execute(
            RECORD_SQL,
            &[
                &mappings.group,
                &mappings.instance,
                &mappings.tables,
                &mappings.descriptions,
            ],
        )
        .await?;
    let rows = client
        .query(LIVE_SQL, &[&mappings.group, &LIVE_FOR.as_secs_f64()])
        .await?;
    let mut by_instance: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for row in rows {
        by_instance
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1), row.get(2));
    }
    let mine = by_instance.remove(&mappings.instance).unwrap_or_default();
    Ok(differences(&mine, &by_instance))
}

/// Per table, how the other instances' descriptions differ from `mine`.
fn differences(
    mine: &BTreeMap<String, String>,
    others: &BTreeMap<String, BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (instance, theirs) in others {
        let tables: std::collections::BTreeSet<&String> =
            mine.keys().chain(theirs.keys()).collect();
        for table in tables {
            let how = match (mine.get(table), theirs.get(table)) {
                (Some(a), Some(b)) if a == b => continue,
                (Some(_), Some(_)) => "describes it differently",
                (Some(_), None) => "does not write it",
                (None, Some(_)) => "writes it, this instance does not",
                (None, None) => continue,
            };
            let entry = out.entry(table.clone()).or_default();
            if !entry.is_empty() {
                entry.push_str("; ");
            }
            entry.push_str(&format!("instance {instance} {how}"));
        }
    }
    out
}

/// Reports the tables described otherwise: an `error` line when that
/// changes to a difference, an `info` line when it is gone.
fn report(health: &Health, mappings: &Mappings, mismatch: BTreeMap<String, String>) {
    let group = &mappings.group;
    let now_differs = !mismatch.is_empty();
    let described = format!("{mismatch:?}");
    if health.set_mapping_mismatch(&mappings.tables, mismatch) {
        if now_differs {
            tracing::error!(
                consumer_group = group, tables = %described,
                "another live instance of the consumer group describes tables differently: rows of their \
                 topics may be split between the two mappings; give every instance the same tables"
            );
        } else {
            tracing::info!(
                consumer_group = group,
                "the live instances describe the tables alike again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_table_and_instance() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mine = map(&[("a", "1"), ("b", "2")]);
        let others = BTreeMap::from([
            ("x".to_owned(), map(&[("a", "1"), ("b", "2")])),
            ("y".to_owned(), map(&[("a", "9"), ("c", "3")])),
        ]);
        assert_eq!(
            differences(&mine, &others),
            map(&[
                ("a", "instance y describes it differently"),
                ("b", "instance y does not write it"),
                ("c", "instance y writes it, this instance does not"),
            ])
        );
        assert!(differences(&mine, &BTreeMap::new()).is_empty());
    }
}

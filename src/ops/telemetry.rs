//! The Prometheus metrics the sink exports: one catalogue, so that the
//! exporter's help texts, the README's table, the Grafana dashboard and the
//! tests all name the same series.
//!
//! Latencies and sizes are summaries (quantiles 0, 0.5, 0.9, 0.99, 0.999 and 1
//! over a sliding window), so `{quantile="0.99"}` is a p99 without PromQL
//! arithmetic; with several instances, take the `max` across them.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// What a series is, as Prometheus types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A histogram as the sink records it, exported as a summary.
    Summary,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

/// Every metric the sink exports.
pub const METRICS: &[Metric] = &[
    metric(
        "timesink_messages_consumed_total",
        Kind::Counter,
        &["topic"],
        "Messages read from Kafka and decoded (valid or not).",
    ),
    metric(
        "timesink_rows_written_total",
        Kind::Counter,
        &["table", "topic"],
        "Rows committed to PostgreSQL.",
    ),
    metric(
        "timesink_dead_letters_total",
        Kind::Counter,
        &["topic", "reason"],
        "Messages sent to the dead-letter topic and acknowledged, by reason class: too_large, encoding, decode, validation, database.",
    ),
    metric(
        "timesink_batch_rows",
        Kind::Summary,
        &["table"],
        "Rows per batch handed to a writer.",
    ),
    metric(
        "timesink_batch_bytes",
        Kind::Summary,
        &["table"],
        "Message bytes per batch handed to a writer.",
    ),
    metric(
        "timesink_batch_linger_seconds",
        Kind::Gauge,
        &["table"],
        "How long a batch may wait for more rows now (adaptive).",
    ),
    metric(
        "timesink_copy_duration_seconds",
        Kind::Summary,
        &["table"],
        "One committed transaction: offsets, COPY (and merge), commit.",
    ),
    metric(
        "timesink_produce_to_commit_seconds",
        Kind::Summary,
        &["table"],
        "End-to-end latency: a message's event time (its Kafka timestamp) to the commit of its rows.",
    ),
    metric(
        "timesink_produce_to_poll_seconds",
        Kind::Summary,
        &["table"],
        "The part of the latency before the sink polled the message (producer and broker).",
    ),
    metric(
        "timesink_poll_to_commit_seconds",
        Kind::Summary,
        &["table"],
        "The sink's own part of the latency: polled to committed.",
    ),
    metric(
        "timesink_consumer_lag_messages",
        Kind::Gauge,
        &["topic", "partition"],
        "Messages in the partition after the last committed one (high watermark minus committed offset; before any commit, minus the offset the sink started from).",
    ),
    metric(
        "timesink_consumer_lag_seconds",
        Kind::Gauge,
        &["topic", "partition"],
        "While the partition lags: now minus the Kafka timestamp of its last committed message (before any commit since assignment, of the first message read); 0 when caught up.",
    ),
    metric(
        "timesink_assigned_partitions",
        Kind::Gauge,
        &[],
        "Partitions assigned to this instance.",
    ),
    metric(
        "timesink_rebalances_total",
        Kind::Counter,
        &["kind"],
        "Partition assignments (kind=assign) and revocations (kind=revoke).",
    ),
    metric(
        "timesink_write_retries_total",
        Kind::Counter,
        &["table"],
        "Transactions retried after a failure: transient (connection lost, server restarting) or blocked (privileges, a changed table, a read-only server).",
    ),
    metric(
        "timesink_batch_splits_total",
        Kind::Counter,
        &["table"],
        "Transactions PostgreSQL found too big for one statement (statement_timeout, 57014; 54001), written again in halves.",
    ),
    metric(
        "timesink_decompression_limit_lifted_total",
        Kind::Counter,
        &["table"],
        "Transactions into compressed chunks that needed more tuples decompressed than TimescaleDB's max_tuples_decompressed_per_dml_transaction allows (53400), written again with the limit raised to the table's timescaledb.max_tuples_decompressed (for them and the table's next 16).",
    ),
    metric(
        "timesink_offset_resets_total",
        Kind::Counter,
        &["reason"],
        "Partitions whose start was not the offset stored for them: the topic was deleted and created again (reason=recreated), or the offset lies before the log's start (before_log_start) or past its end (past_log_end). Each is logged with topic, partition and range.",
    ),
    metric(
        "timesink_dead_letter_stubs_total",
        Kind::Counter,
        &[],
        "Dead letters too large for their topic even compressed, sent as a stub without the value (logged with topic, partition, offset).",
    ),
    metric(
        "timesink_mapping_mismatch",
        Kind::Gauge,
        &["table"],
        "1 while another live instance of the consumer group describes the table differently (its topics, columns or key): rows of its topics may be split between two mappings; /status says how.",
    ),
    metric(
        "timesink_table_blocked",
        Kind::Gauge,
        &["table"],
        "1 while the table cannot go on until the operator acts (PostgreSQL refuses its writes: privileges, a missing or changed table, a read-only server; or its dead letters cannot be written); /status and /ready say why.",
    ),
    metric(
        "timesink_table_paused",
        Kind::Gauge,
        &["table"],
        "1 while the table's partitions are paused: its budget (batch.max_rows_in_flight) stayed full for 0.5 s with batches waiting (the table is refused, locked or much slower than its input); the other tables flow on.",
    ),
    metric(
        "timesink_table_pauses_total",
        Kind::Counter,
        &["table"],
        "Times the table's partitions were paused for want of room (each pause drops librdkafka's prefetch for them; a healthy drain pauses none).",
    ),
    metric(
        "timesink_backpressure_seconds",
        Kind::Gauge,
        &["table"],
        "Seconds reading has waited for room in the table's budget since the start: backpressure, the sink waiting for PostgreSQL to commit. It only grows (a gauge because it counts fractions of a second): its rate() is the share of time the database holds the sink back.",
    ),
    metric(
        "timesink_partitions_held_back",
        Kind::Gauge,
        &["reason"],
        "Assigned partitions that do not fetch now, by reason: table_out_of_room (their table's budget stayed full), pipeline_full (every partition waits for the pipeline's queue), start_unknown (their stored offsets or topic id could not be read yet). /status lists them.",
    ),
    metric(
        "timesink_consumer_paused",
        Kind::Gauge,
        &[],
        "1 while fetching is paused because the writers are behind (backpressure).",
    ),
    metric(
        "timesink_kafka_brokers_up",
        Kind::Gauge,
        &[],
        "Brokers the consumer is connected to (state UP in librdkafka's statistics).",
    ),
    metric(
        "timesink_database_up",
        Kind::Gauge,
        &[],
        "1 when the last database probe (SELECT 1 every few seconds) succeeded.",
    ),
];

/// Looks a metric up in the catalogue.
pub fn find(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

/// How often histograms are drained into their summaries.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder and describes every metric; the handle
/// renders the scrape text. Its upkeep task runs on the current runtime.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_quantiles(&[0.0, 0.5, 0.9, 0.99, 0.999, 1.0])?
        .install_recorder()?;
    for m in METRICS {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Summary => metrics::describe_histogram!(m.name, m.help),
        }
    }
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            ticker.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The README's table of metrics, one row per catalogued metric.
pub fn markdown_rows() -> String {
    METRICS
        .iter()
        .map(|m| {
            let kind = match m.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Summary => "summary",
            };
            let labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}`")).collect();
            format!(
                "| `{}` | {kind} | {} | {} |\n",
                m.name,
                labels.join(", "),
                m.help
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_metric() {
        let readme = include_str!("../../README.md");
        let rows = markdown_rows();
        assert!(
            readme.contains(&rows),
            "README.md's metrics table differs from telemetry::METRICS; it should read:\n{rows}"
        );
    }

    /// Every metric the sources set (`counter!`, `gauge!`, `histogram!`) is
    /// in the catalogue, and every catalogued one is set somewhere.
    #[test]
    fn the_catalogue_matches_the_sources() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut used = std::collections::BTreeSet::new();
        let mut files = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(dir)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        for path in files {
            if path.ends_with("telemetry.rs") {
                continue; // this test's own patterns
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for mac in ["counter!(", "gauge!(", "histogram!("] {
                for (i, _) in text.match_indices(mac) {
                    let rest = text[i + mac.len()..].trim_start();
                    if let Some(rest) = rest.strip_prefix('"') {
                        used.insert(rest[..rest.find('"').unwrap()].to_owned());
                    }
                }
            }
        }
        for name in &used {
            assert!(find(name).is_some(), "{name} is not in telemetry::METRICS");
        }
        for m in METRICS {
            assert!(
                used.contains(m.name),
                "{} is catalogued but never set",
                m.name
            );
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for m in METRICS {
            assert!(m.name.starts_with("timesink_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
            assert!(!m.help.is_empty());
        }
    }
}

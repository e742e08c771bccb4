//! What an operator asks of a running sink: is it alive, is it ready, does
//! it keep up? The stages report here; [`crate::ops::http`] answers from here.
//!
//! - **Ready**: a broker is up, the database answers its probe, and at least
//!   one partition is assigned (an instance beyond the partition count idles).
//! - **State** (`/status`): `unhealthy` when the database or every broker is
//!   unreachable, or the lag reaches `health.unhealthy_lag_messages`;
//!   `degraded` from `health.degraded_lag_messages`; else `healthy`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::database::Database;

/// How often the database is probed, and how long a probe may take.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The counters of one topic, kept by the stages that move its messages.
#[derive(Debug)]
pub struct TopicCounters {
    pub consumed: AtomicU64,
    pub rows_written: AtomicU64,
    pub dead_letters: AtomicU64,
    /// `timesink_messages_consumed_total` of this topic, looked up once:
    /// it is counted per message.
    pub consumed_metric: metrics::Counter,
}

/// The lag of one assigned partition.
#[derive(Debug, Clone, Copy, Default)]
struct PartitionLag {
    messages: i64,
    seconds: f64,
    /// Where the sink started reading it: what lag is measured from until
    /// an offset is committed.
    start: Option<i64>,
}

/// What librdkafka's statistics say of one partition's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// The log's end (high watermark).
    pub high: i64,
    /// The group's committed offset, once there is one.
    pub committed: Option<i64>,
}

/// How long after the start an unknown broker or database state counts as
/// up: librdkafka's first statistics come after `statistics.interval.ms`
/// (5 s), and the state must not read `unhealthy` while the sink starts
/// normally. Past it, unknown counts as down.
pub const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// Shared by the stages and the HTTP endpoints.
#[derive(Debug)]
pub struct Health {
    thresholds: HealthConfig,
    started: Instant,
    /// Brokers in state UP at the last statistics report; -1 before the first.
    kafka_brokers_up: AtomicI64,
    database_up: AtomicBool,
    /// Whether the database has been probed once.
    database_probed: AtomicBool,
    /// Tables that cannot go on until something outside the sink changes,
    /// with the reason.
    blocked: Mutex<BTreeMap<String, String>>,
    /// Assigned partitions that do not fetch now, with the reason.
    held_back: Mutex<Vec<HeldBack>>,
    /// Tables another live instance describes differently, and how.
    mapping_mismatch: Mutex<BTreeMap<String, String>>,
    topics: Mutex<BTreeMap<Arc<str>, Arc<TopicCounters>>>,
    /// Assigned partitions and their lag.
    partitions: Mutex<BTreeMap<(Arc<str>, i32), PartitionLag>>,
    /// Per assigned partition, the Kafka timestamp that lag in seconds is
    /// measured from: the last committed message's, or, before any commit
    /// since the assignment, the first message read (so a database that
    /// never answers still shows the lag growing).
    lag_reference: Mutex<BTreeMap<(Arc<str>, i32), i64>>,
}

/// The labels of a per-partition series.
fn partition_labels(topic: &str, partition: i32) -> [(&'static str, String); 2] {
    [
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ]
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters and maps stay consistent across a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `healthy`, `degraded` or `unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Healthy,
    Degraded,
    Unhealthy,
}

/// Judges the state from the lag and the connections.
pub fn judge(lag: i64, brokers_up: bool, database_up: bool, thresholds: &HealthConfig) -> State {
    if !brokers_up || !database_up || lag >= thresholds.unhealthy_lag_messages {
        State::Unhealthy
    } else if lag >= thresholds.degraded_lag_messages {
        State::Degraded
    } else {
        State::Healthy
    }
}

/// The body of `/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub state: State,
    pub ready: bool,
    /// Why it is not ready (empty when it is).
    pub not_ready: Vec<&'static str>,
    pub lag_messages: i64,
    pub lag_seconds: f64,
    pub degraded_lag_messages: i64,
    pub unhealthy_lag_messages: i64,
    pub kafka_brokers_up: i64,
    pub database_up: bool,
    pub assigned_partitions: usize,
    pub uptime_seconds: u64,
    /// Tables that cannot go on until the operator acts, with the reason.
    pub blocked: BTreeMap<String, String>,
    /// Assigned partitions that do not fetch now, and why.
    pub held_back: Vec<HeldBack>,
    /// Tables another live instance of the group describes differently,
    /// with how: rows of their topics may be split between two mappings.
    pub mapping_mismatch: BTreeMap<String, String>,
    pub topics: BTreeMap<String, TopicStatus>,
}

/// An assigned partition that does not fetch now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldBack {
    pub topic: String,
    pub partition: i32,
    /// Why, one of [`HeldBack::REASONS`].
    pub reason: &'static str,
}

impl HeldBack {
    /// Its table has no room for more rows (a slow or refused table).
    pub const TABLE_OUT_OF_ROOM: &'static str = "table_out_of_room";
    /// The pipeline's queue stayed full: every partition waits.
    pub const PIPELINE_FULL: &'static str = "pipeline_full";
    /// Where to start is not known yet (the stored offsets or the topic's
    /// id could not be read): it waits until they are.
    pub const START_UNKNOWN: &'static str = "start_unknown";
    pub const REASONS: [&'static str; 3] = [
        Self::TABLE_OUT_OF_ROOM,
        Self::PIPELINE_FULL,
        Self::START_UNKNOWN,
    ];
}

/// One topic in `/status`.
#[derive(Debug, Default, Serialize)]
pub struct TopicStatus {
    pub messages_consumed: u64,
    pub rows_written: u64,
    pub dead_letters: u64,
    pub assigned_partitions: usize,
    pub lag_messages: i64,
    pub lag_seconds: f64,
}

impl Health {
    pub fn new(thresholds: HealthConfig) -> Health {
        Health {
            thresholds,
            started: Instant::now(),
            kafka_brokers_up: AtomicI64::new(-1),
            database_up: AtomicBool::new(false),
            database_probed: AtomicBool::new(false),
            blocked: Mutex::new(BTreeMap::new()),
            held_back: Mutex::new(Vec::new()),
            mapping_mismatch: Mutex::new(BTreeMap::new()),
            topics: Mutex::new(BTreeMap::new()),
            partitions: Mutex::new(BTreeMap::new()),
            lag_reference: Mutex::new(BTreeMap::new()),
        }
    }

    /// The counters of a topic, created on first use.
    pub fn topic(&self, topic: &Arc<str>) -> Arc<TopicCounters> {
        lock(&self.topics)
            .entry(topic.clone())
            .or_insert_with(|| {
                Arc::new(TopicCounters {
                    consumed: AtomicU64::new(0),
                    rows_written: AtomicU64::new(0),
                    dead_letters: AtomicU64::new(0),
                    consumed_metric: metrics::counter!(
                        "timesink_messages_consumed_total", "topic" => topic.to_string()
                    ),
                })
            })
            .clone()
    }

    /// A partition is read from `start` (when known); `high` is the log's
    /// end then: the lag is known from the first second, before librdkafka's
    /// statistics and before anything is committed.
    pub fn assigned(
        &self,
        topic: &Arc<str>,
        partition: i32,
        start: Option<i64>,
        high: Option<i64>,
    ) {
        lock(&self.lag_reference).remove(&(topic.clone(), partition));
        let messages = match (start, high) {
            (Some(start), Some(high)) => (high - start).max(0),
            _ => 0,
        };
        let mut partitions = lock(&self.partitions);
        partitions.insert(
            (topic.clone(), partition),
            PartitionLag {
                messages,
                seconds: 0.0,
                start,
            },
        );
        metrics::gauge!("timesink_assigned_partitions").set(partitions.len() as f64);
        let labels = partition_labels(topic, partition);
        metrics::gauge!("timesink_consumer_lag_messages", &labels).set(messages as f64);
        metrics::gauge!("timesink_consumer_lag_seconds", &labels).set(0.0);
    }

    /// A partition left this instance: its lag is now another's to report.
    pub fn revoked(&self, topic: &Arc<str>, partition: i32) {
        lock(&self.lag_reference).remove(&(topic.clone(), partition));
        let mut partitions = lock(&self.partitions);
        partitions.remove(&(topic.clone(), partition));
        metrics::gauge!("timesink_assigned_partitions").set(partitions.len() as f64);
        let labels = partition_labels(topic, partition);
        metrics::gauge!("timesink_consumer_lag_messages", &labels).set(0.0);
        metrics::gauge!("timesink_consumer_lag_seconds", &labels).set(0.0);
    }

    /// Rows and offsets of a topic committed.
    pub fn committed(&self, topic: &Arc<str>, rows: u64, timestamps: &[(i32, i64)]) {
        self.topic(topic).rows_written.fetch_add(rows, Relaxed);
        let mut reference = lock(&self.lag_reference);
        for &(partition, ts) in timestamps {
            reference.insert((topic.clone(), partition), ts);
        }
    }

    /// The first message read from a partition since its assignment: lag
    /// is measured from it until something is committed.
    pub fn first_read(&self, topic: &Arc<str>, partition: i32, timestamp_ms: i64) {
        lock(&self.lag_reference)
            .entry((topic.clone(), partition))
            .or_insert(timestamp_ms);
    }

    pub fn dead_lettered(&self, topic: &Arc<str>, n: u64) {
        self.topic(topic).dead_letters.fetch_add(n, Relaxed);
    }

    /// librdkafka's statistics: brokers up, and per assigned partition the
    /// messages after the committed offset, or before any commit, after
    /// where the sink started reading.
    pub fn kafka_statistics(&self, brokers_up: i64, offsets: &[Offsets<'_>], now_ms: i64) {
        self.kafka_brokers_up.store(brokers_up, Relaxed);
        metrics::gauge!("timesink_kafka_brokers_up").set(brokers_up as f64);
        let reference = lock(&self.lag_reference);
        let mut partitions = lock(&self.partitions);
        for ((topic, partition), lag) in partitions.iter_mut() {
            let Some(o) = offsets
                .iter()
                .find(|o| o.topic == &**topic && o.partition == *partition)
            else {
                continue;
            };
            let Some(base) = o.committed.or(lag.start) else {
                continue;
            };
            let messages = (o.high - base).max(0);
            let seconds = match reference.get(&(topic.clone(), *partition)) {
                Some(&ts) if messages > 0 => ((now_ms - ts).max(0) as f64) / 1000.0,
                _ => 0.0,
            };
            *lag = PartitionLag {
                messages,
                seconds,
                start: lag.start,
            };
            let labels = partition_labels(topic, *partition);
            metrics::gauge!("timesink_consumer_lag_messages", &labels).set(messages as f64);
            metrics::gauge!("timesink_consumer_lag_seconds", &labels).set(seconds);
        }
    }

    /// Reports `table` blocked with `reason`, or no longer (None); true
    /// when that changes whether it is blocked (to be logged once).
    pub fn set_blocked(&self, table: &str, reason: Option<String>) -> bool {
        let mut blocked = lock(&self.blocked);
        let changed = match reason {
            Some(reason) => blocked.insert(table.to_owned(), reason).is_none(),
            None => blocked.remove(table).is_some(),
        };
        let value = if blocked.contains_key(table) {
            1.0
        } else {
            0.0
        };
        metrics::gauge!("timesink_table_blocked", "table" => table.to_owned()).set(value);
        changed
    }

    /// The assigned partitions that do not fetch now, replacing the last
    /// report; the gauge counts them by reason.
    pub fn set_held_back(&self, held_back: Vec<HeldBack>) {
        for reason in HeldBack::REASONS {
            let n = held_back.iter().filter(|h| h.reason == reason).count();
            metrics::gauge!("timesink_partitions_held_back", "reason" => reason).set(n as f64);
        }
        *lock(&self.held_back) = held_back;
    }

    /// The tables other live instances of the group describe differently,
    /// of this instance's `tables` and theirs, replacing the last report;
    /// true when it changed (to be logged).
    pub fn set_mapping_mismatch(
        &self,
        tables: &[String],
        mismatch: BTreeMap<String, String>,
    ) -> bool {
        let mut current = lock(&self.mapping_mismatch);
        let named: std::collections::BTreeSet<&String> = tables
            .iter()
            .chain(current.keys())
            .chain(mismatch.keys())
            .collect();
        for table in named {
            let value = if mismatch.contains_key(table) {
                1.0
            } else {
                0.0
            };
            metrics::gauge!("timesink_mapping_mismatch", "table" => table.clone()).set(value);
        }
        let changed = *current != mismatch;
        *current = mismatch;
        changed
    }

    /// Whether `table` is reported blocked.
    pub fn is_blocked(&self, table: &str) -> bool {
        lock(&self.blocked).contains_key(table)
    }

    pub fn set_database_up(&self, up: bool) {
        self.database_up.store(up, Relaxed);
        self.database_probed.store(true, Relaxed);
        metrics::gauge!("timesink_database_up").set(if up { 1.0 } else { 0.0 });
    }

    /// The whole picture, for `/status` and `/ready`.
    pub fn status(&self) -> Status {
        let mut topics: BTreeMap<String, TopicStatus> = lock(&self.topics)
            .iter()
            .map(|(name, c)| {
                (
                    name.to_string(),
                    TopicStatus {
                        messages_consumed: c.consumed.load(Relaxed),
                        rows_written: c.rows_written.load(Relaxed),
                        dead_letters: c.dead_letters.load(Relaxed),
                        ..TopicStatus::default()
                    },
                )
            })
            .collect();
        let partitions = lock(&self.partitions);
        let (mut lag_messages, mut lag_seconds) = (0, 0.0f64);
        for ((topic, _), lag) in partitions.iter() {
            let t = topics.entry(topic.to_string()).or_default();
            t.assigned_partitions += 1;
            t.lag_messages += lag.messages;
            t.lag_seconds = t.lag_seconds.max(lag.seconds);
            lag_messages += lag.messages;
            lag_seconds = lag_seconds.max(lag.seconds);
        }
        let brokers = self.kafka_brokers_up.load(Relaxed);
        // Unknown is up while the sink starts (see STARTUP_GRACE).
        let starting = self.started.elapsed() < STARTUP_GRACE;
        let brokers_up = brokers > 0 || (brokers < 0 && starting);
        let database_up =
            self.database_up.load(Relaxed) || (!self.database_probed.load(Relaxed) && starting);
        let mut not_ready = Vec::new();
        if !brokers_up {
            not_ready.push("no Kafka broker is up");
        }
        if !database_up {
            not_ready.push("the database does not answer");
        }
        if partitions.is_empty() {
            not_ready.push("no partition is assigned");
        }
        let blocked: BTreeMap<String, String> = lock(&self.blocked)
            .iter()
            .map(|(t, r)| ((*t).to_owned(), r.clone()))
            .collect();
        if !blocked.is_empty() {
            not_ready.push("a table is blocked (see blocked)");
        }
        let mut state = judge(lag_messages, brokers_up, database_up, &self.thresholds);
        if !blocked.is_empty() {
            state = State::Unhealthy;
        }
        let mapping_mismatch = lock(&self.mapping_mismatch).clone();
        if !mapping_mismatch.is_empty() && state == State::Healthy {
            state = State::Degraded;
        }
        Status {
            state,
            blocked,
            mapping_mismatch,
            held_back: lock(&self.held_back).clone(),
            ready: not_ready.is_empty(),
            not_ready,
            lag_messages,
            lag_seconds,
            degraded_lag_messages: self.thresholds.degraded_lag_messages,
            unhealthy_lag_messages: self.thresholds.unhealthy_lag_messages,
            kafka_brokers_up: brokers.max(0),
            database_up,
            assigned_partitions: partitions.len(),
            uptime_seconds: self.started.elapsed().as_secs(),
            topics,
        }
    }
}

/// Probes the database every few seconds until `shutdown`, keeping one
/// connection (opened again after a failure).
pub async fn probe_database(health: Arc<Health>, database: Database, shutdown: CancellationToken) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let kept = client.take().filter(|c| !c.is_closed());
        let probe = async {
            let c = match kept {
                Some(c) => c,
                None => database.connect().await?,
            };
            c.simple_query("SELECT 1").await?;
            Ok::<_, tokio_postgres::Error>(c)
        };
        // A failed or slow probe drops its connection: the next one opens anew.
        let result = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(result) => result.map_err(|e| crate::pg_error::describe(&e)),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        let up = result.is_ok();
        // One line per change of state, with the endpoint.
        let was = (health.database_probed.load(Relaxed)).then(|| health.database_up.load(Relaxed));
        match (&result, was) {
            // Unreachable from the start is said by the schema step.
            (Err(e), Some(true)) => {
                tracing::error!(database = %database.target(), error = %e, "database unreachable; retrying (one line until it answers)")
            }
            (Ok(_), Some(false)) => {
                tracing::info!(database = %database.target(), "database reachable again")
            }
            _ => {}
        }
        client = result.ok();
        health.set_database_up(up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> HealthConfig {
        HealthConfig {
            degraded_lag_messages: 1_000,
            unhealthy_lag_messages: 10_000,
        }
    }

    #[test]
    fn state_follows_the_lag_thresholds() {
        let t = thresholds();
        assert_eq!(judge(0, true, true, &t), State::Healthy);
        assert_eq!(judge(999, true, true, &t), State::Healthy);
        assert_eq!(judge(1_000, true, true, &t), State::Degraded);
        assert_eq!(judge(9_999, true, true, &t), State::Degraded);
        assert_eq!(judge(10_000, true, true, &t), State::Unhealthy);
    }

    #[test]
    fn an_unreachable_database_or_broker_is_unhealthy() {
        let t = thresholds();
        assert_eq!(judge(0, false, true, &t), State::Unhealthy);
        assert_eq!(judge(0, true, false, &t), State::Unhealthy);
    }

    fn offsets(committed: [Option<i64>; 2]) -> [Offsets<'static>; 2] {
        [
            Offsets {
                topic: "crypto-prices",
                partition: 0,
                high: 1_700,
                committed: committed[0],
            },
            Offsets {
                topic: "crypto-prices",
                partition: 1,
                high: 600,
                committed: committed[1],
            },
        ]
    }

    #[test]
    fn status_sums_lag_per_topic_and_names_what_is_missing() {
        let h = Health::new(thresholds());
        // Starting: nothing is known of the broker and the database yet.
        let status = h.status();
        assert_eq!(status.not_ready, ["no partition is assigned"]);
        assert_eq!(status.state, State::Healthy);

        let topic: Arc<str> = "crypto-prices".into();
        // Lag is known at the assignment: from the start to the log's end.
        h.assigned(&topic, 0, Some(1_000), Some(1_500));
        h.assigned(&topic, 1, Some(0), Some(600));
        assert_eq!(h.status().lag_messages, 1_100);
        h.set_database_up(true);
        h.committed(&topic, 10, &[(0, 1_000)]);
        // Before a commit, from the start; after one, from the commit.
        h.kafka_statistics(1, &offsets([None, None]), 4_000);
        assert_eq!(h.status().lag_messages, 700 + 600);
        h.kafka_statistics(1, &offsets([Some(1_000), None]), 4_000);
        // Partition 1 has committed and read nothing: no age to measure.
        assert_eq!(lock(&h.partitions)[&(topic.clone(), 1)].seconds, 0.0);
        h.first_read(&topic, 1, 500);
        h.first_read(&topic, 1, 900); // only the first counts
        h.kafka_statistics(1, &offsets([Some(1_000), None]), 4_000);
        let status = h.status();
        assert!(status.ready, "{:?}", status.not_ready);
        assert_eq!(status.lag_messages, 1_300);
        assert_eq!(status.state, State::Degraded);
        let t = &status.topics["crypto-prices"];
        assert_eq!((t.rows_written, t.assigned_partitions), (10, 2));
        // Partition 0 committed a message stamped 1 s, 3 s ago; partition 1
        // has committed nothing, but read a message stamped 0.5 s.
        assert_eq!(t.lag_seconds, 3.5);

        h.revoked(&topic, 0);
        h.revoked(&topic, 1);
        assert_eq!(h.status().lag_messages, 0);
        assert!(!h.status().ready);
        // A blocked table: unhealthy and not ready, named with its reason;
        // each change reported once.
        h.assigned(&topic, 0, Some(0), Some(0));
        assert!(h.set_blocked("crypto_prices", Some("no dead-letter topic".into())));
        assert!(!h.set_blocked("crypto_prices", Some("no dead-letter topic".into())));
        let status = h.status();
        assert_eq!(status.state, State::Unhealthy);
        assert!(!status.ready);
        assert_eq!(status.blocked["crypto_prices"], "no dead-letter topic");
        assert!(h.set_blocked("crypto_prices", None));
        assert!(!h.set_blocked("crypto_prices", None));
        assert!(h.status().ready);
        h.revoked(&topic, 0);
        // A broker reported down is down, grace or not.
        h.kafka_statistics(0, &[], 4_000);
        assert_eq!(h.status().state, State::Unhealthy);
    }
}

//! Consume stage: the Kafka consumer, on a thread of its own.
//!
//! librdkafka calls back into this thread for every rebalance. On assignment
//! the stored offsets are read from PostgreSQL and each partition starts from
//! its `next_offset`; where none is stored, from the group's committed Kafka
//! offset; where neither exists, where `auto.offset.reset` says (earliest
//! unless configured). Every assignment
//! gets a fresh *epoch*, and each message travels with the epoch it was read
//! under, so that the pipeline can tell a stale message from a current one.
//!
//! Backpressure: when the pipeline's queue is full the thread pauses its
//! partitions and keeps polling, so the group membership stays alive.
//! Commits are manual only: the Kafka commit of an offset follows its
//! database commit ([`Command::Commit`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext};
use tokio::runtime::Handle;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::database::Database;
use crate::kafka_log::Link;
use crate::message::SourceMessage;
use crate::ops::health::{Health, HeldBack, Offsets};
use crate::pg_error::Backoff;
use crate::pipeline::native_headers::NativeHeaders;

/// How long the pipeline's queue may stay full before fetching pauses. Up
/// to then the thread waits for room without polling, so this also bounds
/// how long a rebalance callback or commit waits.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// Messages per [`Event::Messages`] at most.
const CHUNK: usize = 256;
/// Bytes of message values per [`Event::Messages`] past which it goes out:
/// with the pipeline's queue of chunks, what is read ahead of the tables'
/// budgets stays a few tens of MiB even when messages are large.
const CHUNK_BYTES: usize = 1024 * 1024;
/// One wait for room in the pipeline's queue, between rounds of commands.
const ROOM_WAIT: Duration = Duration::from_millis(50);

/// What the consumer thread tells the pipeline, in order.
#[derive(Debug)]
pub enum Event {
    /// Messages in the order read, each with the assignment `epoch` of its
    /// partition it was read under. Sent in chunks: one wake-up of the
    /// pipeline per chunk, not per message.
    Messages(Vec<(SourceMessage, u64)>),
    /// Partitions now read from these positions.
    Assigned(Vec<Assignment>),
    /// Partitions no longer this instance's.
    Revoked(Vec<(Arc<str>, i32)>),
    /// Fetching has stopped for shutdown: no message follows.
    Stopped,
}

/// One partition's start under a new epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub topic: Arc<str>,
    pub partition: i32,
    pub epoch: u64,
    /// The `next_offset` stored in PostgreSQL, if any.
    pub stored: Option<i64>,
    /// Where reading starts (checked against the log), when known.
    pub start: Option<i64>,
    /// The log's end at the assignment, when known: with `start`, the lag
    /// before anything is committed.
    pub high: Option<i64>,
    /// The topic's id as the broker gave it for this start, if it gives one.
    pub topic_id: Option<Arc<str>>,
}

/// What the rest of the sink asks of the consumer thread.
#[derive(Debug)]
pub enum Command {
    /// These offsets are durable in PostgreSQL: commit them to Kafka too.
    Commit {
        topic: Arc<str>,
        offsets: Vec<(i32, i64)>,
    },
    /// Another instance wrote this partition: read its stored offset again and seek there.
    Resync { topic: Arc<str>, partition: i32 },
    /// Their table is out of room: stop fetching these partitions until [`Command::Resume`].
    Pause(Vec<(Arc<str>, i32)>),
    /// Their table has room again.
    Resume(Vec<(Arc<str>, i32)>),
    /// Commit what is pending, leave the group and end the thread.
    Close,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("creating the Kafka consumer: {0}")]
    Create(#[source] KafkaError),
    #[error("subscribing to {pattern}: {source}")]
    Subscribe {
        pattern: String,
        #[source]
        source: KafkaError,
    },
    #[error("starting the consumer thread: {0}")]
    Thread(#[source] std::io::Error),
}

const CHECK_TOPIC_ID_SQL: &str = include_str!("../../sql/queries/check_topic_id.sql");
const STORED_OFFSETS_SQL: &str = include_str!("../../sql/queries/stored_offsets.sql");

/// Reads stored offsets from PostgreSQL, for the rebalance callback.
struct OffsetStore {
    runtime: Handle,
    database: Database,
    group: String,
    client: Option<tokio_postgres::Client>,
}

/// What PostgreSQL holds for some partitions of a topic.
#[derive(Debug, Default)]
struct Stored {
    /// The stored `next_offset` of each partition that has one.
    offsets: HashMap<i32, i64>,
    /// The topic's id recorded before, when it differs from the broker's:
    /// the topic was deleted and created again, and its stored offsets were
    /// moved back to 0 in the same transaction.
    recreated_from: Option<String>,
    /// The broker's id is the one recorded with the offsets: they were
    /// stored for this very log.
    same_topic: bool,
}

impl OffsetStore {
    /// The stored offsets of `partitions` of `topic`; with the topic's id
    /// from the broker, first checked against the id recorded for it (see
    /// `sql/queries/check_topic_id.sql`).
    ///
    /// Waits at most `wait`: it runs on the consumer thread (in a rebalance
    /// callback, or between polls), which must keep polling to stay in the
    /// group whatever the database does.
    fn lookup(
        &mut self,
        topic: &str,
        partitions: &[i32],
        topic_id: Option<&str>,
        wait: Duration,
    ) -> Result<Stored, LookupError> {
        let runtime = self.runtime.clone();
        // The timer is made inside the runtime: this is the consumer thread.
        let found = runtime.block_on(async {
            tokio::time::timeout(wait, self.query(topic, partitions, topic_id)).await
        });
        match found {
            Ok(found) => found.map_err(|(table, source)| LookupError::Database { table, source }),
            Err(_) => {
                self.client = None;
                Err(LookupError::TimedOut(wait))
            }
        }
    }

    async fn query(
        &mut self,
        topic: &str,
        partitions: &[i32],
        topic_id: Option<&str>,
    ) -> Result<Stored, (&'static str, tokio_postgres::Error)> {
        const OFFSETS: &str = "timesink_offsets";
        const TOPICS: &str = "timesink_topics";
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => self.client.insert(client),
            _ => {
                let client = self.database.connect().await.map_err(|e| (OFFSETS, e))?;
                self.client.insert(client)
            }
        };
        let found = async {
            let tx = client.transaction().await.map_err(|e| (OFFSETS, e))?;
            let mut before = None;
            if let Some(id) = topic_id {
                before = tx
                    .query_opt(CHECK_TOPIC_ID_SQL, &[&self.group, &topic, &id])
                    .await
                    .map_err(|e| (TOPICS, e))?
                    .map(|r| r.get::<_, String>(0));
            }
            let rows = tx
                .query(STORED_OFFSETS_SQL, &[&self.group, &topic, &partitions])
                .await
                .map_err(|e| (OFFSETS, e))?;
            tx.commit().await.map_err(|e| (OFFSETS, e))?;
            Ok(Stored {
                offsets: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
                same_topic: before.is_some() && before.as_deref() == topic_id,
                recreated_from: before.filter(|before| Some(before.as_str()) != topic_id),
            })
        }
        .await;
        if found.is_err() {
            self.client = None;
        }
        found
    }
}

/// Why stored offsets could not be read.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("{table}: {}", crate::pg_error::describe(.source))]
    Database {
        /// The bookkeeping table the failed statement was about.
        table: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL did not answer within {0:?}")]
    TimedOut(Duration),
}

impl LookupError {
    /// The bookkeeping table and why, when only the operator can cure it
    /// (privileges, a table missing or changed): the sink then reports the
    /// table blocked, naming the grant it needs.
    fn blocked(&self) -> Option<(&'static str, String)> {
        match self {
            LookupError::Database { table, source }
                if crate::pg_error::classify(source) == crate::pg_error::Class::Blocked =>
            {
                Some((
                    table,
                    format!(
                        "{}: the sink reads and records where each partition starts here; it needs SELECT, INSERT and UPDATE on {table}",
                        crate::pg_error::describe(source)
                    ),
                ))
            }
            _ => None,
        }
    }
}

/// The sink's bookkeeping tables, as `/status` names them when blocked.
const BOOKKEEPING: [&str; 2] = ["timesink_offsets", "timesink_topics"];

/// How long a rebalance callback waits for the stored offsets before it
/// leaves the partitions paused for the consumer loop to start later.
const ASSIGN_LOOKUP_WAIT: Duration = Duration::from_secs(2);
/// How long each later try waits, between polls.
const RETRY_LOOKUP_WAIT: Duration = Duration::from_secs(1);
/// How long the look-ups of one assignment may take in all (topic ids,
/// stored offsets, Kafka commits, offset ranges): with leaders offline
/// each waits its own timeout, and many topics would add up to minutes in
/// the rebalance callback. Topics not reached wait for their start, paused,
/// and are started by the consumer loop.
const ASSIGN_BUDGET: Duration = Duration::from_secs(8);
/// The same for one round of starting waiting partitions between polls.
const RESYNC_BUDGET: Duration = Duration::from_secs(2);

/// A time limit shared by a series of look-ups: each waits at most its own
/// timeout and what is left.
#[derive(Debug, Clone, Copy)]
struct Budget {
    until: Instant,
}

impl Budget {
    fn new(total: Duration) -> Budget {
        Budget {
            until: Instant::now() + total,
        }
    }

    /// How long the next look-up may wait: `own`, or less when less is left.
    fn wait(&self, own: Duration) -> Duration {
        own.min(self.until.saturating_duration_since(Instant::now()))
    }

    /// Whether too little is left for another look-up.
    fn spent(&self) -> bool {
        self.wait(Duration::MAX) < Duration::from_millis(100)
    }
}

/// The consumer's context: rebalance handling and statistics.
pub struct SinkContext {
    events: Sender<Event>,
    store: Mutex<OffsetStore>,
    /// The current epoch of each assigned partition, with the offset it
    /// started at when known.
    epochs: Mutex<HashMap<(Arc<str>, i32), Started>>,
    next_epoch: AtomicU64,
    /// Bumped whenever `epochs` changes, so the consumer loop may keep the
    /// epoch of the partition it is reading without a lookup per message.
    epochs_changed: AtomicU64,
    /// Set when the sink is stopping: callbacks must not block on the pipeline any more.
    stopping: AtomicBool,
    /// Where librdkafka's statistics (brokers up, lag) go.
    health: Arc<Health>,
    /// Interned topic names.
    topics: Mutex<HashMap<String, Arc<str>>>,
    /// Where a partition with no stored offset and no Kafka commit starts
    /// (`auto.offset.reset`); None leaves it to librdkafka.
    reset: Option<Candidate>,
    /// The broker's id of each topic as last read (None: the broker gives
    /// it none), for seeing it change; a topic missing has not been read.
    topic_ids: Mutex<HashMap<Arc<str>, Option<String>>>,
    /// Whether reading topic ids last failed (said once per change).
    ids_unanswered: AtomicBool,
    /// Partitions whose fetch position librdkafka's statistics showed past
    /// the log's end: checked against the log by the consumer loop.
    suspects: Mutex<Vec<(Arc<str>, i32)>>,
    /// Which partitions are paused, and why.
    pauses: Mutex<Pauses>,
    /// Whether the brokers are out of reach, said once per change.
    link: Link,
    /// Partitions assigned while their stored offsets could not be read:
    /// paused, with no epoch, until the consumer loop reads them.
    pending: Mutex<HashSet<(Arc<str>, i32)>>,
    /// Whether reading stored offsets last failed (said once per change).
    store_down: AtomicBool,
    /// Set when which partitions wait, or why, may have changed: the
    /// consumer loop then reports them to `/status`.
    held_back_changed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every value guarded here stays consistent across a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SinkContext {
    fn topic(&self, name: &str) -> Arc<str> {
        let mut topics = lock(&self.topics);
        if let Some(t) = topics.get(name) {
            return t.clone();
        }
        let t: Arc<str> = name.into();
        topics.insert(name.to_owned(), t.clone());
        t
    }

    /// Gives a partition a new epoch (assigned, or moved to its stored
    /// offset) starting at `start` when known.
    fn new_epoch(&self, topic: &Arc<str>, partition: i32, start: Option<i64>) -> u64 {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        lock(&self.epochs).insert((topic.clone(), partition), Started { epoch, start });
        self.epochs_changed.fetch_add(1, Ordering::Relaxed);
        epoch
    }

    fn revoke(&self, partitions: &[(Arc<str>, i32)]) {
        let mut epochs = lock(&self.epochs);
        for key in partitions {
            epochs.remove(key);
        }
        self.epochs_changed.fetch_add(1, Ordering::Relaxed);
        lock(&self.pauses).forget(partitions);
        let mut pending = lock(&self.pending);
        for key in partitions {
            pending.remove(key);
        }
        self.held_back_changed.store(true, Ordering::Relaxed);
    }

    /// Whether a partition is this instance's now: started, or waiting for
    /// its start.
    fn is_assigned(&self, partition: &(Arc<str>, i32)) -> bool {
        lock(&self.epochs).contains_key(partition) || lock(&self.pending).contains(partition)
    }

    /// Why an assigned partition waits instead of fetching, if it does.
    fn hold_reason(&self, partition: &(Arc<str>, i32)) -> Option<&'static str> {
        if lock(&self.pending).contains(partition) {
            return Some(HeldBack::START_UNKNOWN);
        }
        lock(&self.pauses).reason(partition)
    }

    /// Makes each of `partitions`, just assigned or started, fetch or wait
    /// as the sink tracks it. librdkafka keeps an application's pause on a
    /// partition across unassign and assign (librdkafka #1849): a partition
    /// paused under an earlier assignment would otherwise never fetch again.
    fn settle(&self, consumer: &BaseConsumer<Self>, partitions: &[(Arc<str>, i32)]) {
        let (wait, fetch): (Vec<_>, Vec<_>) = partitions
            .iter()
            .cloned()
            .partition(|p| self.hold_reason(p).is_some());
        if !fetch.is_empty() {
            let _ = consumer.resume(&partition_list(&fetch));
        }
        if !wait.is_empty() {
            let _ = consumer.pause(&partition_list(&wait));
        }
        self.held_back_changed.store(true, Ordering::Relaxed);
    }

    /// Reports the partitions that wait, and why, to `/status` when that
    /// may have changed.
    fn report_held_back(&self) {
        if !self.held_back_changed.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut assigned: Vec<(Arc<str>, i32)> = lock(&self.epochs).keys().cloned().collect();
        assigned.extend(lock(&self.pending).iter().cloned());
        assigned.sort();
        assigned.dedup();
        let held_back = assigned
            .into_iter()
            .filter_map(|p| {
                self.hold_reason(&p).map(|reason| HeldBack {
                    topic: p.0.to_string(),
                    partition: p.1,
                    reason,
                })
            })
            .collect();
        self.health.set_held_back(held_back);
    }

    /// Reads stored offsets within `wait`; a failure is logged once per
    /// change (then at debug level), a success after one once too.
    fn stored_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        topic_id: Option<&str>,
        wait: Duration,
    ) -> Option<Stored> {
        match lock(&self.store).lookup(topic, partitions, topic_id, wait) {
            Ok(stored) => {
                if self.store_down.swap(false, Ordering::Relaxed) {
                    tracing::info!("stored offsets readable again: waiting partitions start");
                }
                for table in BOOKKEEPING {
                    if self.health.set_blocked(table, None) {
                        tracing::info!(table, "bookkeeping table usable again");
                    }
                }
                Some(stored)
            }
            Err(e) => {
                if let Some((table, reason)) = e.blocked() {
                    // Loud, like a writer's table: /ready and /status say
                    // which table and what grant, until it heals.
                    if self.health.set_blocked(table, Some(reason.clone())) {
                        tracing::error!(table, topic, %reason, "bookkeeping table refused: its partitions wait, paused, until it is usable");
                    }
                    self.store_down.store(true, Ordering::Relaxed);
                    return None;
                }
                if !self.store_down.swap(true, Ordering::Relaxed) {
                    tracing::error!(topic, error = %e, "reading stored offsets failed: these partitions wait, paused, and are tried again while the group is kept");
                } else {
                    tracing::debug!(topic, error = %e, "reading stored offsets failed again");
                }
                None
            }
        }
    }

    fn epoch_of(&self, topic: &Arc<str>, partition: i32) -> Option<u64> {
        self.started(topic, partition).map(|s| s.epoch)
    }

    fn started(&self, topic: &Arc<str>, partition: i32) -> Option<Started> {
        lock(&self.epochs).get(&(topic.clone(), partition)).copied()
    }

    /// A partition's offsets went back under one epoch: its log changed
    /// under the sink (the topic deleted and created again, or the log
    /// truncated) and librdkafka moved the position by itself. Nothing more
    /// of the topic is read until its id and the partitions' ranges are
    /// checked: every assigned partition of the topic waits for its start
    /// again ([`resync`]), with the topic's id read anew. So the id change
    /// is recorded (and the stored offsets reset) before any row of the new
    /// log is written under the old one's offsets.
    fn log_went_back(
        &self,
        consumer: &BaseConsumer<Self>,
        topic: &Arc<str>,
        partition: i32,
        (expected, offset): (i64, i64),
    ) {
        tracing::warn!(
            %topic, partition, expected, offset,
            "the partition's offsets went back: its log changed under the sink; the topic's id and its partitions' ranges are checked before more of it is read"
        );
        let partitions: Vec<(Arc<str>, i32)> = {
            let mut epochs = lock(&self.epochs);
            let of_topic: Vec<_> = epochs.keys().filter(|(t, _)| t == topic).cloned().collect();
            for key in &of_topic {
                epochs.remove(key);
            }
            of_topic
        };
        self.epochs_changed.fetch_add(1, Ordering::Relaxed);
        lock(&self.topic_ids).remove(topic);
        lock(&self.pending).extend(partitions.iter().cloned());
        self.settle(consumer, &partitions);
    }

    fn send_event(&self, event: Event) {
        if self.stopping.load(Ordering::Relaxed) {
            let _ = self.events.try_send(event);
        } else {
            let _ = self.events.blocking_send(event);
        }
    }

    /// Sets each partition's start and gives it a new epoch. The start is
    /// the stored offset; where none is stored, the group's Kafka commit or
    /// `auto.offset.reset`; either way checked against the partition's log
    /// (see [`checked_start`]), and a topic created again since its offsets
    /// were stored starts from its beginning.
    fn prepare_assignment(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Vec<Assignment> {
        let mut by_topic: HashMap<String, Vec<i32>> = HashMap::new();
        for e in tpl.elements() {
            by_topic
                .entry(e.topic().to_owned())
                .or_default()
                .push(e.partition());
        }
        let budget = Budget::new(ASSIGN_BUDGET);
        let names: Vec<&str> = by_topic.keys().map(String::as_str).collect();
        let ids = self.read_topic_ids(consumer, &names, budget.wait(KAFKA_LOOKUP_TIMEOUT));
        let mut assigned = Vec::new();
        let mut unanswered = false;
        for (topic, partitions) in &by_topic {
            let name = self.topic(topic);
            // A test holds the assignment here to take the database or the
            // broker away under it.
            fail::fail_point!("assign-lookup");
            if budget.spent() {
                if !unanswered {
                    tracing::warn!(took = ?ASSIGN_BUDGET, "the assignment's look-ups took their time limit: the partitions not reached wait, paused, and start once their start is known");
                }
                unanswered = true;
                lock(&self.pending).extend(partitions.iter().map(|&p| (name.clone(), p)));
                continue;
            }
            // Without the broker's word on the topic's id its start is not
            // known: the offsets stored may belong to a topic since deleted.
            // After one topic's lookup failed the others wait too: the
            // callback waits for the database once at most.
            let id = ids.as_ref().map(|ids| ids.get(topic.as_str()).cloned());
            let stored = match &id {
                Some(id) if !unanswered => self.stored_offsets(
                    topic,
                    partitions,
                    id.as_deref(),
                    budget.wait(ASSIGN_LOOKUP_WAIT),
                ),
                _ => None,
            };
            let Some(stored) = stored else {
                unanswered |= id.is_some();
                // Assigned, but paused with no epoch until their start is
                // known: the callback returns, the consumer keeps polling.
                lock(&self.pending).extend(partitions.iter().map(|&p| (name.clone(), p)));
                continue;
            };
            let id = id.flatten();
            let topic_id: Option<Arc<str>> = id.as_deref().map(Arc::from);
            if let Some(before) = &stored.recreated_from {
                report_recreated(topic, before, id.as_deref().unwrap_or_default());
            }
            let candidates = self.candidates(consumer, topic, partitions, &stored, budget);
            let ranges = log_ranges(consumer, topic, partitions, budget);
            for (&p, range) in partitions.iter().zip(ranges) {
                let start = self.start_of(&name, p, candidates.get(&p).copied(), range, &stored);
                if let Some(offset) = start.seek {
                    set_start(tpl, topic, p, offset);
                }
                let epoch = self.new_epoch(&name, p, start.at);
                assigned.push(Assignment {
                    topic: name.clone(),
                    partition: p,
                    epoch,
                    stored: stored.offsets.get(&p).copied(),
                    start: start.at,
                    high: start.high,
                    topic_id: topic_id.clone(),
                });
            }
        }
        assigned
    }

    /// The ids the broker gives `topics` now, each remembered as the
    /// topic's id (a topic the broker gives no id, e.g. one before KIP-516,
    /// is missing: its offsets are checked against the log's range only).
    /// None when the broker did not answer (logged once per change): the
    /// partitions of these topics wait until it does.
    fn read_topic_ids(
        &self,
        consumer: &BaseConsumer<Self>,
        topics: &[&str],
        wait: Duration,
    ) -> Option<HashMap<String, String>> {
        match crate::topic_ids::describe(consumer.client(), topics, wait) {
            Ok(ids) => {
                let mut known = lock(&self.topic_ids);
                for topic in topics {
                    known.insert(self.topic(topic), ids.get(*topic).cloned());
                }
                if self.ids_unanswered.swap(false, Ordering::Relaxed) {
                    tracing::info!("topic ids readable again: waiting partitions start");
                }
                Some(ids)
            }
            Err(e) => {
                if !self.ids_unanswered.swap(true, Ordering::Relaxed) {
                    tracing::warn!(topics = ?topics, error = %e, "reading topic ids failed: these partitions wait, paused, until the broker answers (a topic created again is told by its id)");
                } else {
                    tracing::debug!(error = %e, "reading topic ids failed again");
                }
                None
            }
        }
    }

    /// Each partition's start before the log is checked: its stored offset;
    /// where none is stored, the group's Kafka commit, else the reset
    /// position (`auto.offset.reset`). A topic created again starts at its
    /// beginning: Kafka commits of the old one mean nothing either. Missing:
    /// the Kafka commits could not be read; librdkafka then reads them itself.
    fn candidates(
        &self,
        consumer: &BaseConsumer<Self>,
        topic: &str,
        partitions: &[i32],
        stored: &Stored,
        budget: Budget,
    ) -> HashMap<i32, Candidate> {
        let mut candidates: HashMap<i32, Candidate> = stored
            .offsets
            .iter()
            .map(|(&p, &o)| (p, Candidate::At(o)))
            .collect();
        let unstored: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !stored.offsets.contains_key(p))
            .collect();
        if unstored.is_empty() {
            return candidates;
        }
        if stored.recreated_from.is_some() {
            candidates.extend(unstored.iter().map(|&p| (p, Candidate::Beginning)));
            return candidates;
        }
        let mut lookup = TopicPartitionList::new();
        for &p in &unstored {
            lookup.add_partition(topic, p);
        }
        // Looked up here, not left to librdkafka: for a partition without a
        // commit it waits 100 ms before it looks up the reset position (a
        // fixed backoff in its offset reset), a tenth of a second off every
        // fresh start.
        let committed = match consumer.committed_offsets(lookup, budget.wait(KAFKA_LOOKUP_TIMEOUT))
        {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!(topic, error = %e, "reading the group's Kafka commits failed; librdkafka reads them itself");
                return candidates;
            }
        };
        for e in committed.elements() {
            let candidate = match (e.error(), e.offset()) {
                (Ok(()), Offset::Offset(o)) => Some(Candidate::At(o)),
                (Ok(()), Offset::Invalid) => self.reset,
                _ => None,
            };
            if let Some(c) = candidate {
                candidates.insert(e.partition(), c);
            }
        }
        candidates
    }

    /// Where a partition starts: `candidate` checked against the log's
    /// `range` (see [`log_ranges`]) and what is `stored` of its topic. The
    /// range could not be read (logged): the candidate as it is, unchecked.
    fn start_of(
        &self,
        topic: &Arc<str>,
        partition: i32,
        candidate: Option<Candidate>,
        range: Result<(i64, i64), KafkaError>,
        stored: &Stored,
    ) -> PartitionStart {
        let range = match range {
            Ok(range) => range,
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "reading the partition's offset range failed; its start is not checked");
                return PartitionStart {
                    seek: candidate.map(Candidate::offset),
                    at: match candidate {
                        Some(Candidate::At(o)) => Some(o),
                        _ => None,
                    },
                    high: None,
                };
            }
        };
        let Some(candidate) = candidate else {
            return PartitionStart {
                seek: None,
                at: None,
                high: Some(range.1),
            };
        };
        let (at, outside) = checked_start(candidate, range, stored.same_topic);
        if let Some(OutOfRange { offset, low, high }) = outside {
            let (reason, what) = if offset < low {
                ("before_log_start", "reading from the log's start")
            } else if at == high {
                (
                    "past_log_end",
                    "the topic's id is unchanged, so everything below the end was read (a truncated log): reading from the log's end",
                )
            } else {
                (
                    "past_log_end",
                    "the log may be another (no topic id confirms it): reading from the log's start",
                )
            };
            tracing::warn!(
                %topic, partition, offset, low, high, reading_from = at,
                "the offset to start from is outside the partition's log ({reason}); {what}"
            );
            metrics::counter!("timesink_offset_resets_total", "reason" => reason).increment(1);
        }
        PartitionStart {
            seek: Some(Offset::Offset(at)),
            at: Some(at),
            high: Some(range.1),
        }
    }
}

/// Lookups of partition ranges in flight at once.
const RANGE_LOOKUPS: usize = 8;

/// Each partition's `[low, high]` offsets, in the order of `partitions`.
/// Each is two requests to the partition's leader: they go out several at a
/// time, so that an assignment of many partitions does not wait for each in
/// turn.
fn log_ranges<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    budget: Budget,
) -> Vec<Result<(i64, i64), KafkaError>> {
    let per_thread = partitions.len().div_ceil(RANGE_LOOKUPS).max(1);
    std::thread::scope(|scope| {
        let lookups: Vec<_> = partitions
            .chunks(per_thread)
            .map(|chunk| {
                let lookup = scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&p| {
                            consumer.fetch_watermarks(topic, p, budget.wait(KAFKA_LOOKUP_TIMEOUT))
                        })
                        .collect::<Vec<_>>()
                });
                (chunk.len(), lookup)
            })
            .collect();
        lookups
            .into_iter()
            .flat_map(|(n, lookup)| {
                // A lookup thread that panicked leaves its partitions unchecked.
                lookup
                    .join()
                    .unwrap_or_else(|_| vec![Err(KafkaError::NoMessageReceived); n])
            })
            .collect()
    })
}

/// Logs and counts a topic found created again since its offsets were stored.
fn report_recreated(topic: &str, before: &str, now: &str) {
    tracing::warn!(
        topic,
        id_before = before,
        id_now = now,
        "the topic was deleted and created again since its offsets were stored: they are reset and it is read from its start"
    );
    metrics::counter!("timesink_offset_resets_total", "reason" => "recreated").increment(1);
}

/// A partition's start before it is checked against the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    /// An offset: stored in PostgreSQL, or the group's Kafka commit.
    At(i64),
    /// The log's start or end (`auto.offset.reset`).
    Beginning,
    End,
}

impl Candidate {
    fn offset(self) -> Offset {
        match self {
            Candidate::At(o) => Offset::Offset(o),
            Candidate::Beginning => Offset::Beginning,
            Candidate::End => Offset::End,
        }
    }
}

/// Where a partition starts, as far as known.
struct PartitionStart {
    /// What librdkafka is told; None leaves it to librdkafka.
    seek: Option<Offset>,
    /// The offset reading starts at.
    at: Option<i64>,
    /// The log's end when the start was chosen.
    high: Option<i64>,
}

/// A start outside its partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OutOfRange {
    offset: i64,
    low: i64,
    high: i64,
}

/// The offset to start from, given a candidate, the log's `[low, high]`
/// and whether the topic's id is the one recorded with the stored offsets.
/// An offset outside the log is never used. One before its start was
/// deleted (retention): the log's start. One past its end belongs to a log
/// that was truncated (an unclean leader election) or replaced (a topic
/// created again): where the unchanged id says it is the same log,
/// everything below its end was read, so the end; otherwise the earliest
/// offset the sink can prove it has not seen, the log's start.
fn checked_start(
    candidate: Candidate,
    (low, high): (i64, i64),
    same_topic: bool,
) -> (i64, Option<OutOfRange>) {
    match candidate {
        Candidate::At(offset) if offset < low => (low, Some(OutOfRange { offset, low, high })),
        Candidate::At(offset) if offset > high => {
            let at = if same_topic { high } else { low };
            (at, Some(OutOfRange { offset, low, high }))
        }
        Candidate::At(offset) => (offset, None),
        Candidate::Beginning => (low, None),
        Candidate::End => (high, None),
    }
}

/// How long a seek of a partition starting again may wait.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the rebalance callback waits for each answer of the broker
/// (Kafka commits, topic ids, a partition's offset range).
const KAFKA_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

fn set_start(tpl: &mut TopicPartitionList, topic: &str, partition: i32, start: Offset) {
    if let Err(e) = tpl.set_partition_offset(topic, partition, start) {
        tracing::error!(topic, partition, error = %e, "could not set the start offset");
    }
}

/// The start of a partition with neither a stored offset nor a Kafka
/// commit, from librdkafka's `auto.offset.reset`; None for `error` (or a
/// value librdkafka will refuse), which is left to librdkafka.
fn reset_position(auto_offset_reset: Option<&str>) -> Option<Candidate> {
    match auto_offset_reset? {
        "smallest" | "earliest" | "beginning" => Some(Candidate::Beginning),
        "largest" | "latest" | "end" => Some(Candidate::End),
        _ => None,
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka_log::log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.link.error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        // Brokers learned from metadata: not the bootstrap entries (no node
        // id) nor the logical group coordinator (a second view of one).
        let brokers_up = statistics
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0 && b.source == "learned" && b.state == "UP")
            .count() as i64;
        let partitions: Vec<Offsets<'_>> = statistics
            .topics
            .iter()
            .flat_map(|(name, t)| {
                t.partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.hi_offset >= 0)
                    .map(move |p| Offsets {
                        topic: name.as_str(),
                        partition: p.partition,
                        high: p.hi_offset,
                        committed: (p.committed_offset >= 0).then_some(p.committed_offset),
                    })
            })
            .collect();
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.health
            .kafka_statistics(brokers_up, &partitions, now_ms);
        if brokers_up > 0 {
            self.link.reachable();
        }
        // A fetch position past the log's end: the log was truncated or
        // replaced (a broker that does not answer "offset out of range"
        // would leave the partition reading nothing for ever).
        let past_end: Vec<(Arc<str>, i32)> = statistics
            .topics
            .iter()
            .flat_map(|(name, t)| {
                t.partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.hi_offset >= 0 && p.next_offset > p.hi_offset)
                    .map(move |p| (name.as_str(), p.partition))
            })
            .filter_map(|(name, p)| {
                let topic = self.topic(name);
                self.epoch_of(&topic, p).map(|_| (topic, p))
            })
            .collect();
        lock(&self.suspects).extend(past_end);
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let started = Instant::now();
                tracing::info!(
                    partitions = tpl.count(),
                    "partitions being assigned: reading where each starts"
                );
                let assigned = self.prepare_assignment(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "partition assignment failed");
                }
                // Those whose start is not known yet wait; the others fetch,
                // whatever an earlier assignment left.
                let partitions: Vec<(Arc<str>, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (self.topic(e.topic()), e.partition()))
                    .collect();
                self.settle(consumer, &partitions);
                tracing::info!(
                    partitions = assigned.len(),
                    waiting = lock(&self.pending).len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    protocol = if cooperative { "cooperative" } else { "eager" },
                    "partitions assigned"
                );
                metrics::counter!("timesink_rebalances_total", "kind" => "assign").increment(1);
                self.send_event(Event::Assigned(assigned));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<(Arc<str>, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (self.topic(e.topic()), e.partition()))
                    .collect();
                self.revoke(&revoked);
                tracing::info!(
                    partitions = revoked.len(),
                    lost = consumer.assignment_lost(),
                    protocol = if cooperative { "cooperative" } else { "eager" },
                    "partitions revoked"
                );
                metrics::counter!("timesink_rebalances_total", "kind" => "revoke").increment(1);
                self.send_event(Event::Revoked(revoked));
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "partition revocation failed");
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}

/// A running consumer thread.
pub struct ConsumerHandle {
    /// Set to make the thread stop fetching (it then sends [`Event::Stopped`]).
    pub stop: Arc<AtomicBool>,
    pub thread: JoinHandle<()>,
}

/// The librdkafka settings of the consumer.
pub fn consumer_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    // Defaults the user may change…
    client
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("topic.metadata.refresh.interval.ms", "5000")
        // A member that died (SIGKILL, a lost host) holds its partitions
        // until its session times out: 10 s rather than librdkafka's 45, so
        // a restarted instance flows again within 15 s. With a stable
        // `group.instance.id` (static membership) it takes them back at once.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .set("statistics.interval.ms", "5000")
        // A fetch answers after this long at the latest, even with little
        // data: low latency matters more here than fewer fetch requests.
        .set("fetch.wait.max.ms", "100")
        // When the prefetch queue is over its bounds, librdkafka waits this
        // long before fetching that partition again (default 1000 ms). A
        // second-long pause caps a drain at ~150k msg/s here, so ask again soon.
        .set("fetch.queue.backoff.ms", "10")
        // Memory: the prefetch queue and the fetch buffers behind it. 8 MiB
        // of messages is ~40 ms of a full-speed drain, refetched in 10 ms.
        .set("queued.max.messages.kbytes", "8192")
        .set("max.partition.fetch.bytes", "262144");
    for (k, v) in &config.kafka.properties {
        client.set(k, v);
    }
    // …and what the sink's guarantees rest on.
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    client
}

/// Starts the consumer thread: subscribes to each table's topics (names,
/// and patterns) and forwards messages and rebalances as [`Event`]s.
pub fn start(
    config: &Config,
    catalog: Arc<Catalog>,
    runtime: Handle,
    events: Sender<Event>,
    commands: Receiver<Command>,
    health: Arc<Health>,
    database: &Database,
) -> Result<ConsumerHandle, ConsumeError> {
    let stop = Arc::new(AtomicBool::new(false));
    let client = consumer_config(config);
    let context = SinkContext {
        reset: reset_position(client.get("auto.offset.reset")),
        events,
        store: Mutex::new(OffsetStore {
            runtime: runtime.clone(),
            database: database.clone(),
            group: config.kafka.group_id.clone(),
            client: None,
        }),
        epochs: Mutex::new(HashMap::new()),
        epochs_changed: AtomicU64::new(0),
        next_epoch: AtomicU64::new(1),
        stopping: AtomicBool::new(false),
        health,
        topics: Mutex::new(HashMap::new()),
        topic_ids: Mutex::new(HashMap::new()),
        suspects: Mutex::new(Vec::new()),
        pauses: Mutex::new(Pauses::default()),
        link: Link::new(&config.kafka.brokers, "consumer"),
        pending: Mutex::new(HashSet::new()),
        store_down: AtomicBool::new(false),
        ids_unanswered: AtomicBool::new(false),
        held_back_changed: AtomicBool::new(true),
    };
    let consumer: BaseConsumer<SinkContext> = client
        .create_with_context(context)
        .map_err(ConsumeError::Create)?;
    let mut subscription = Subscription {
        catalog,
        dead_letter_suffix: config.dead_letter.suffix.clone(),
        topics: Vec::new(),
        next_check: Instant::now(),
    };
    subscription.refresh(&consumer, SUBSCRIBE_TIMEOUT)?;
    tracing::info!(topics = ?subscription.topics, group = %config.kafka.group_id, "subscribed");
    let thread_stop = stop.clone();
    let thread_runtime = runtime.clone();
    let thread = std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || {
            run(
                consumer,
                thread_runtime,
                commands,
                &thread_stop,
                subscription,
            )
        })
        .map_err(ConsumeError::Thread)?;
    Ok(ConsumerHandle { stop, thread })
}

fn owned(
    topic: Arc<str>,
    m: &rdkafka::message::BorrowedMessage<'_>,
    polled_ms: i64,
) -> SourceMessage {
    let mut message = SourceMessage::new(
        topic,
        m.partition(),
        m.offset(),
        m.key(),
        m.payload(),
        NativeHeaders::of(m),
    );
    message.timestamp_ms = m.timestamp().to_millis();
    message.polled_ms = polled_ms;
    message
}

/// The partition the consumer loop is reading, with its interned topic and
/// epoch: messages come in runs from one partition, and two locked lookups
/// per message showed in profiles.
///
/// It also keeps the next offset expected of each partition under its
/// epoch: within one epoch offsets only grow, so one that goes back means
/// the log changed under the sink.
#[derive(Default)]
struct Reading {
    last: Option<Current>,
    /// `SinkContext::epochs_changed` when `last` was looked up.
    seen: u64,
    /// The epoch and next offset expected of the partitions read before
    /// the current one.
    next: HashMap<(Arc<str>, i32), (u64, i64)>,
}

/// The partition the consumer loop is reading.
struct Current {
    topic: Arc<str>,
    partition: i32,
    epoch: Option<u64>,
    /// The lowest offset its next message may have under this epoch.
    next: i64,
}

/// An epoch, and the offset it started at when known.
#[derive(Debug, Clone, Copy)]
struct Started {
    epoch: u64,
    start: Option<i64>,
}

impl Reading {
    fn of(
        &mut self,
        context: &SinkContext,
        topic: &str,
        partition: i32,
    ) -> (Arc<str>, Option<u64>) {
        let changed = context.epochs_changed.load(Ordering::Relaxed);
        match &self.last {
            Some(c) if self.seen == changed && c.partition == partition && *c.topic == *topic => {
                (c.topic.clone(), c.epoch)
            }
            _ => {
                if let Some(Current {
                    topic,
                    partition,
                    epoch: Some(epoch),
                    next,
                }) = self.last.take()
                {
                    self.next.insert((topic, partition), (epoch, next));
                }
                let t = context.topic(topic);
                let started = context.started(&t, partition);
                let next = match (started, self.next.get(&(t.clone(), partition))) {
                    (Some(s), Some(&(epoch, next))) if epoch == s.epoch => next,
                    (Some(s), _) => s.start.unwrap_or(i64::MIN),
                    (None, _) => i64::MIN,
                };
                let epoch = started.map(|s| s.epoch);
                self.last = Some(Current {
                    topic: t.clone(),
                    partition,
                    epoch,
                    next,
                });
                self.seen = changed;
                (t, epoch)
            }
        }
    }

    /// Takes `offset` as read from the current partition: the offset
    /// expected instead when it went back.
    fn advance(&mut self, offset: i64) -> Result<(), i64> {
        let Some(current) = self.last.as_mut() else {
            return Ok(());
        };
        if offset < current.next {
            return Err(current.next);
        }
        current.next = offset + 1;
        Ok(())
    }
}

/// Which partitions fetch. Every partition pauses while the pipeline's
/// queue stays full; the partitions of a table out of room pause while the
/// pipeline holds them back ([`Command::Pause`]), whatever the queue does.
#[derive(Debug, Default)]
struct Pauses {
    /// Every partition is paused: the pipeline's queue stayed full.
    all: bool,
    /// Partitions paused for their table.
    held_back: HashSet<(Arc<str>, i32)>,
}

impl Pauses {
    /// The pipeline's queue stayed full: true when every partition is to
    /// pause now (it was not yet).
    fn pause_all(&mut self) -> bool {
        !std::mem::replace(&mut self.all, true)
    }

    /// The pipeline's queue has room: the partitions of `assignment` to
    /// resume (all but those held back), or None when not paused.
    fn resume_all(&mut self, assignment: Vec<(Arc<str>, i32)>) -> Option<Vec<(Arc<str>, i32)>> {
        if !std::mem::replace(&mut self.all, false) {
            return None;
        }
        Some(
            assignment
                .into_iter()
                .filter(|p| !self.held_back.contains(p))
                .collect(),
        )
    }

    /// Holds partitions back: those to pause now.
    fn hold_back(&mut self, partitions: Vec<(Arc<str>, i32)>) -> Vec<(Arc<str>, i32)> {
        partitions
            .into_iter()
            .filter(|p| self.held_back.insert(p.clone()))
            .collect()
    }

    /// Lets partitions fetch again: those to resume now (none while every
    /// partition is paused; `resume_all` takes them along then).
    fn release(&mut self, partitions: Vec<(Arc<str>, i32)>) -> Vec<(Arc<str>, i32)> {
        let released: Vec<_> = partitions
            .into_iter()
            .filter(|p| self.held_back.remove(p))
            .collect();
        if self.all { Vec::new() } else { released }
    }

    /// Why a partition may not fetch now, if it may not.
    fn reason(&self, partition: &(Arc<str>, i32)) -> Option<&'static str> {
        if self.held_back.contains(partition) {
            Some(HeldBack::TABLE_OUT_OF_ROOM)
        } else if self.all {
            Some(HeldBack::PIPELINE_FULL)
        } else {
            None
        }
    }

    /// Partitions no longer assigned: a later assignment starts unpaused.
    fn forget(&mut self, partitions: &[(Arc<str>, i32)]) {
        for p in partitions {
            self.held_back.remove(p);
        }
    }
}

fn partition_list(partitions: &[(Arc<str>, i32)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

fn assigned_partitions(consumer: &BaseConsumer<SinkContext>) -> Vec<(Arc<str>, i32)> {
    let context = consumer.context();
    consumer
        .assignment()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| (context.topic(e.topic()), e.partition()))
                .collect()
        })
        .unwrap_or_default()
}

/// The consumer thread's loop.
fn run(
    consumer: BaseConsumer<SinkContext>,
    runtime: Handle,
    commands: Receiver<Command>,
    stop: &AtomicBool,
    mut subscription: Subscription,
) {
    let context = consumer.context().clone();
    // Since when the pipeline's queue has been full without a break.
    let mut full_since: Option<Instant> = None;
    // Messages read while the pipeline's queue was full, in order.
    let mut held: VecDeque<Event> = VecDeque::new();
    // Messages read since the last chunk went out.
    let mut chunk: Vec<(SourceMessage, u64)> = Vec::with_capacity(CHUNK);
    let mut chunk_bytes = 0usize;
    // When the chunk's first message was polled (epoch ms).
    let mut chunk_polled_ms = 0;
    let mut paused = false;
    metrics::gauge!("timesink_consumer_paused").set(0.0);
    let mut stopped = false;
    let mut resyncs: Vec<(Arc<str>, i32)> = Vec::new();
    let mut resync_at = Instant::now();
    let mut resync_backoff = Backoff::new();
    let mut reading = Reading::default();
    let mut next_log_check = Instant::now() + LOG_CHECK_INTERVAL;
    loop {
        // Commands first: commits must not wait behind fetching.
        let mut pending = TopicPartitionList::new();
        let mut close = false;
        loop {
            match commands.try_recv() {
                Ok(Command::Commit { topic, offsets }) => {
                    for (p, next) in offsets {
                        if context.epoch_of(&topic, p).is_some() {
                            let _ = pending.add_partition_offset(&topic, p, Offset::Offset(next));
                        }
                    }
                }
                Ok(Command::Resync { topic, partition }) => {
                    // The topic's id is read again before the partition
                    // starts: a writer refuses a batch whose topic was
                    // replaced under it, and the new id must be recorded
                    // (and the stored offsets reset) first.
                    lock(&context.topic_ids).remove(&topic);
                    resyncs.push((topic, partition));
                }
                Ok(Command::Pause(mut partitions)) => {
                    // One revoked since the pipeline sent this is not held
                    // back: its next assignment starts fetching.
                    partitions.retain(|p| context.is_assigned(p));
                    let now = lock(&context.pauses).hold_back(partitions);
                    if !now.is_empty() {
                        let _ = consumer.pause(&partition_list(&now));
                    }
                    context.held_back_changed.store(true, Ordering::Relaxed);
                }
                Ok(Command::Resume(partitions)) => {
                    let now = lock(&context.pauses).release(partitions);
                    if !now.is_empty() {
                        let _ = consumer.resume(&partition_list(&now));
                    }
                    context.held_back_changed.store(true, Ordering::Relaxed);
                }
                Ok(Command::Close) | Err(TryRecvError::Disconnected) => {
                    close = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if pending.count() > 0 {
            let mode = if close {
                CommitMode::Sync
            } else {
                CommitMode::Async
            };
            if let Err(e) = consumer.commit(&pending, mode) {
                tracing::warn!(error = %e, "Kafka commit failed (the offsets are safe in PostgreSQL)");
            }
        }
        if close {
            break;
        }
        context.report_held_back();
        if !stopped
            && Instant::now() >= subscription.next_check
            && let Err(e) = subscription.refresh(&consumer, SUBSCRIBE_TIMEOUT)
        {
            tracing::warn!(error = %e, "could not change the subscription; trying again");
        }
        if !stopped && Instant::now() >= next_log_check {
            next_log_check = Instant::now() + LOG_CHECK_INTERVAL;
            resyncs.extend(changed_logs(&consumer, &context));
        }
        {
            let pending = lock(&context.pending);
            let new: Vec<_> = pending
                .iter()
                .filter(|p| !resyncs.contains(p))
                .cloned()
                .collect();
            resyncs.extend(new);
        }
        if !resyncs.is_empty() && !stopped && Instant::now() >= resync_at {
            resyncs = resync(&consumer, &context, std::mem::take(&mut resyncs));
            // Failed lookups are tried again on a capped backoff: each
            // waits up to a second between polls.
            resync_at = if resyncs.is_empty() {
                resync_backoff = Backoff::new();
                Instant::now()
            } else {
                Instant::now() + resync_backoff.step()
            };
        }

        if stop.load(Ordering::Relaxed) && !stopped {
            context.stopping.store(true, Ordering::Relaxed);
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.pause(&assignment);
            }
            // Messages already read are part of what the pipeline writes.
            if !chunk.is_empty() {
                held.push_back(Event::Messages(std::mem::take(&mut chunk)));
            }
            for event in held.drain(..) {
                let _ = context.events.blocking_send(event);
            }
            let _ = context.events.blocking_send(Event::Stopped);
            stopped = true;
        }
        if stopped {
            // Keep serving the group and the commits until Close.
            let _ = consumer.poll(Duration::from_millis(50));
            continue;
        }

        // Hand held messages over first, in order.
        while let Some(event) = held.pop_front() {
            match context.events.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    held.push_front(event);
                    break;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        if let Some(event) = held.pop_front() {
            let since = *full_since.get_or_insert_with(Instant::now);
            if !paused && since.elapsed() < PAUSE_AFTER {
                // Wait for room a moment without polling: librdkafka's
                // prefetch stays (bounded by queued.max.messages.kbytes),
                // where a pause would drop it and make the next resume wait
                // for the broker. Then round again: commands come first.
                let room = runtime.block_on(async {
                    tokio::time::timeout(ROOM_WAIT, context.events.reserve()).await
                });
                match room {
                    Ok(Ok(permit)) => permit.send(event),
                    Ok(Err(_)) => return, // the pipeline is gone
                    Err(_) => held.push_front(event),
                }
                continue;
            }
            held.push_front(event);
            if !paused {
                if lock(&context.pauses).pause_all()
                    && let Ok(assignment) = consumer.assignment()
                {
                    let _ = consumer.pause(&assignment);
                }
                paused = true;
                context.held_back_changed.store(true, Ordering::Relaxed);
                tracing::debug!("pipeline full for a while: fetching paused, polling goes on");
                metrics::gauge!("timesink_consumer_paused").set(1.0);
            }
        } else {
            full_since = None;
            if paused && context.events.capacity() * 2 >= context.events.max_capacity() {
                // Resume only once half the queue is free: each pause drops
                // librdkafka's prefetched messages, so flapping between pause
                // and resume would refetch (and wait for) them over and over.
                let mut assignment = assigned_partitions(&consumer);
                // Partitions still waiting for their start stay paused.
                assignment.retain(|p| !lock(&context.pending).contains(p));
                if let Some(resume) = lock(&context.pauses).resume_all(assignment) {
                    let _ = consumer.resume(&partition_list(&resume));
                }
                paused = false;
                context.held_back_changed.store(true, Ordering::Relaxed);
                tracing::debug!("pipeline has room: fetching resumed");
                metrics::gauge!("timesink_consumer_paused").set(0.0);
            }
        }

        // With a chunk open, only what librdkafka already holds is taken:
        // the chunk goes out as soon as nothing more is at hand.
        let timeout = if !chunk.is_empty() {
            Duration::ZERO
        } else if paused {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(timeout) {
            Some(Ok(m)) => {
                // The clock is read once per chunk: its messages were all
                // at hand together (a read per message showed in profiles).
                if chunk.is_empty() {
                    chunk_polled_ms = chrono::Utc::now().timestamp_millis();
                }
                let (topic, epoch) = reading.of(&context, m.topic(), m.partition());
                if let Some(epoch) = epoch {
                    match reading.advance(m.offset()) {
                        Ok(()) => {
                            chunk_bytes += m.payload_len() + m.key_len();
                            chunk.push((owned(topic, &m, chunk_polled_ms), epoch));
                        }
                        Err(expected) => {
                            let at = (m.partition(), (expected, m.offset()));
                            drop(m);
                            context.log_went_back(&consumer, &topic, at.0, at.1);
                            continue;
                        }
                    }
                }
                if chunk.len() >= CHUNK || chunk_bytes >= CHUNK_BYTES {
                    held.push_back(Event::Messages(std::mem::take(&mut chunk)));
                    chunk_bytes = 0;
                }
            }
            // Brokers out of reach are reported once, by SinkContext::error.
            Some(Err(e)) if crate::kafka_log::is_unreachable(&e) => {
                tracing::debug!(error = %e, "Kafka consumer error")
            }
            Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error"),
            None if !chunk.is_empty() => {
                held.push_back(Event::Messages(std::mem::take(&mut chunk)));
                chunk_bytes = 0;
            }
            None => {}
        }
    }
    context.stopping.store(true, Ordering::Relaxed);
    consumer.unsubscribe();
    drop(consumer);
}

/// Reads the stored offsets of partitions again and starts them there
/// under a new epoch, checked against the log as an assignment does: those
/// fenced by another instance, those whose log changed, and those assigned
/// while the offsets could not be read (paused until now). Each lookup waits
/// at most [`RETRY_LOOKUP_WAIT`]. Returns the partitions to try again.
fn resync(
    consumer: &BaseConsumer<SinkContext>,
    context: &SinkContext,
    partitions: Vec<(Arc<str>, i32)>,
) -> Vec<(Arc<str>, i32)> {
    let mut retry = Vec::new();
    // One lookup per topic; after one that fails, none more this round
    // (each may wait a second between polls).
    let mut by_topic: Vec<(Arc<str>, Vec<i32>)> = Vec::new();
    for (topic, partition) in partitions {
        let waiting = lock(&context.pending).contains(&(topic.clone(), partition));
        if !waiting && context.epoch_of(&topic, partition).is_none() {
            continue; // no longer ours
        }
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, ps)) => ps.push(partition),
            None => by_topic.push((topic, vec![partition])),
        }
    }
    let mut failed = false;
    let budget = Budget::new(RESYNC_BUDGET);
    for (topic, partitions) in by_topic {
        failed |= budget.spent();
        // The topic's id is read first where it is not known yet: the
        // offsets are checked against it before anything is read.
        let known = lock(&context.topic_ids).get(&topic).cloned();
        let id = match known {
            Some(id) => Some(id),
            None if failed => None,
            None => context
                .read_topic_ids(consumer, &[&topic], budget.wait(RETRY_LOOKUP_WAIT))
                .map(|ids| ids.get(&*topic).cloned()),
        };
        let stored = match &id {
            Some(id) if !failed => context.stored_offsets(
                &topic,
                &partitions,
                id.as_deref(),
                budget.wait(RETRY_LOOKUP_WAIT),
            ),
            _ => None,
        };
        let Some(stored) = stored else {
            failed = true;
            retry.extend(partitions.into_iter().map(|p| (topic.clone(), p)));
            continue;
        };
        if let Some(before) = &stored.recreated_from {
            let now = id.flatten().unwrap_or_default();
            report_recreated(&topic, before, &now);
        }
        retry.extend(start_again(
            consumer,
            context,
            &topic,
            &partitions,
            &stored,
            budget,
        ));
    }
    retry
}

/// Starts partitions of `topic` again from their `stored` offsets (checked
/// against the log) under a new epoch; returns those whose seek failed.
fn start_again(
    consumer: &BaseConsumer<SinkContext>,
    context: &SinkContext,
    topic: &Arc<str>,
    partitions: &[i32],
    stored: &Stored,
    budget: Budget,
) -> Vec<(Arc<str>, i32)> {
    let mut retry = Vec::new();
    let topic_id: Option<Arc<str>> = lock(&context.topic_ids)
        .get(topic)
        .cloned()
        .flatten()
        .map(Arc::from);
    let candidates = context.candidates(consumer, topic, partitions, stored, budget);
    let ranges = log_ranges(consumer, topic, partitions, budget);
    for (&partition, range) in partitions.iter().zip(ranges) {
        let key = (topic.clone(), partition);
        let waiting = lock(&context.pending).contains(&key);
        let topic = topic.clone();
        let start = context.start_of(
            &topic,
            partition,
            candidates.get(&partition).copied(),
            range,
            stored,
        );
        let seek = start.seek.unwrap_or(Offset::Beginning);
        if let Err(e) = consumer.seek(&topic, partition, seek, budget.wait(SEEK_TIMEOUT)) {
            tracing::debug!(%topic, partition, error = %e, "seek failed; trying again");
            retry.push(key);
            continue;
        }
        let epoch = context.new_epoch(&topic, partition, start.at);
        if waiting {
            lock(&context.pending).remove(&key);
            context.settle(consumer, std::slice::from_ref(&key));
            tracing::info!(%topic, partition, offset = ?seek, "stored offset read: the partition starts");
        } else {
            tracing::info!(%topic, partition, offset = ?seek, "re-read the stored offset and moved there");
        }
        context.send_event(Event::Assigned(vec![Assignment {
            topic,
            partition,
            epoch,
            stored: stored.offsets.get(&partition).copied(),
            start: start.at,
            high: start.high,
            topic_id: topic_id.clone(),
        }]));
    }
    retry
}

/// How often the assigned topics' logs are checked while running, and how
/// long the broker may take to answer each check.
/// How often the broker's topics are listed for new ones a table takes.
const SUBSCRIPTION_INTERVAL: Duration = Duration::from_secs(3);
/// How long one listing may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The topics the consumer is subscribed to: every topic on the broker that
/// a table takes (by name or pattern, [`Catalog::route`]), listed again
/// every few seconds so that a topic created while running is picked up.
/// The sink matches the patterns itself (librdkafka's own regular
/// expressions know neither named groups nor lookahead), so a dead-letter
/// topic is never read whatever a pattern says.
struct Subscription {
    catalog: Arc<Catalog>,
    dead_letter_suffix: String,
    /// Sorted; empty while no topic exists yet.
    topics: Vec<String>,
    next_check: Instant,
}

impl Subscription {
    /// Lists the broker's topics and subscribes to those the tables take,
    /// when they changed. A broker that does not answer leaves the
    /// subscription as it is.
    fn refresh(
        &mut self,
        consumer: &BaseConsumer<SinkContext>,
        timeout: Duration,
    ) -> Result<(), ConsumeError> {
        self.next_check = Instant::now() + SUBSCRIPTION_INTERVAL;
        let Ok(metadata) = consumer.fetch_metadata(None, timeout) else {
            return Ok(());
        };
        let mut topics: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|name| self.catalog.route(name, &self.dead_letter_suffix).is_some())
            .map(str::to_owned)
            .collect();
        topics.sort();
        if topics == self.topics {
            return Ok(());
        }
        if topics.is_empty() {
            consumer.unsubscribe();
        } else {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&names)
                .map_err(|source| ConsumeError::Subscribe {
                    pattern: topics.join(", "),
                    source,
                })?;
        }
        if !self.topics.is_empty() {
            tracing::info!(topics = ?topics, "subscription changed");
        }
        self.topics = topics;
        Ok(())
    }
}

const LOG_CHECK_INTERVAL: Duration = Duration::from_secs(10);
const LOG_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The assigned partitions whose log changed under the sink, to be read
/// again from a checked start ([`resync`]): every partition of a topic whose
/// id changed (deleted and created again: its stored offsets are reset on
/// the way), and each partition that librdkafka's statistics showed reading
/// past the log's end, if the broker confirms it.
fn changed_logs(
    consumer: &BaseConsumer<SinkContext>,
    context: &SinkContext,
) -> Vec<(Arc<str>, i32)> {
    let assigned: Vec<(Arc<str>, i32)> = lock(&context.epochs).keys().cloned().collect();
    let mut changed = Vec::new();
    let mut topics: Vec<&str> = assigned.iter().map(|(t, _)| &**t).collect();
    topics.sort_unstable();
    topics.dedup();
    // A failure was logged at the assignment; here it would repeat every
    // check. The wait is short: the consumer loop (commits, fetching) waits
    // with it, and the next check comes in 10 s.
    let ids = crate::topic_ids::describe(consumer.client(), &topics, LOG_CHECK_TIMEOUT)
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "reading topic ids failed");
            HashMap::new()
        });
    for (topic, id) in &ids {
        // An id read for the first time (the broker gave none before) is
        // recorded too, and checked against the one stored.
        let known = lock(&context.topic_ids)
            .get(topic.as_str())
            .cloned()
            .flatten();
        if known.as_ref() == Some(id) {
            continue;
        }
        // Recorded (and the stored offsets reset) before anything is read
        // again. A failure is logged there; the next check tries again.
        let Some(stored) = context.stored_offsets(topic, &[], Some(id), RETRY_LOOKUP_WAIT) else {
            continue;
        };
        if let Some(before) = &stored.recreated_from {
            report_recreated(topic, before, id);
        }
        let name = context.topic(topic);
        lock(&context.topic_ids).insert(name, Some(id.clone()));
        // A partition reads another log than it started on.
        if stored.recreated_from.is_some() || known.is_some() {
            changed.extend(assigned.iter().filter(|(t, _)| **t == **topic).cloned());
        }
    }
    let suspects = std::mem::take(&mut *lock(&context.suspects));
    for (topic, partition) in suspects {
        if changed.contains(&(topic.clone(), partition)) {
            continue;
        }
        let position = consumer.position().ok().and_then(|positions| {
            match positions.find_partition(&topic, partition)?.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }
        });
        let range = consumer.fetch_watermarks(&topic, partition, LOG_CHECK_TIMEOUT);
        if let (Some(position), Ok((_, high))) = (position, range)
            && position > high
        {
            tracing::warn!(%topic, partition, position, high, "reading past the partition's end: its log changed; checking the stored offset against it");
            changed.push((topic, partition));
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_positions_follow_librdkafka_names() {
        for name in ["smallest", "earliest", "beginning"] {
            assert_eq!(reset_position(Some(name)), Some(Candidate::Beginning));
        }
        for name in ["largest", "latest", "end"] {
            assert_eq!(reset_position(Some(name)), Some(Candidate::End));
        }
        // `error` (and anything else) stays librdkafka's to handle.
        assert_eq!(reset_position(Some("error")), None);
        assert_eq!(reset_position(None), None);
        let default = consumer_config(&Config::default());
        assert_eq!(
            reset_position(default.get("auto.offset.reset")),
            Some(Candidate::Beginning)
        );
    }

    fn parts(names: &[(&str, i32)]) -> Vec<(Arc<str>, i32)> {
        names.iter().map(|&(t, p)| (Arc::from(t), p)).collect()
    }

    #[test]
    fn a_full_queue_pauses_all_and_held_back_partitions_stay_paused_after() {
        let mut p = Pauses::default();
        let all = parts(&[("a", 0), ("a", 1), ("b", 0)]);
        // Table of "a" out of room: its partitions pause, once.
        assert_eq!(
            p.hold_back(parts(&[("a", 0), ("a", 1)])),
            parts(&[("a", 0), ("a", 1)])
        );
        assert_eq!(p.hold_back(parts(&[("a", 0)])), parts(&[]));
        assert_eq!(
            p.reason(&(Arc::from("a"), 0)),
            Some(HeldBack::TABLE_OUT_OF_ROOM)
        );
        // The queue fills: everything pauses; when it drains, only "b" resumes.
        assert!(p.pause_all());
        assert!(!p.pause_all());
        assert_eq!(
            p.reason(&(Arc::from("b"), 0)),
            Some(HeldBack::PIPELINE_FULL)
        );
        // Released while all are paused: nothing to resume yet...
        assert_eq!(p.release(parts(&[("a", 1)])), parts(&[]));
        // ...resume_all takes it along, but not "a" 0, still held back.
        assert_eq!(
            p.resume_all(all.clone()),
            Some(parts(&[("a", 1), ("b", 0)]))
        );
        assert_eq!(p.resume_all(all), None, "not paused");
        assert_eq!(p.release(parts(&[("a", 0)])), parts(&[("a", 0)]));
        assert_eq!(p.reason(&(Arc::from("a"), 0)), None);
    }

    #[test]
    fn a_revoked_partition_is_forgotten_so_its_next_assignment_fetches() {
        let mut p = Pauses::default();
        p.hold_back(parts(&[("a", 0)]));
        p.forget(&parts(&[("a", 0)]));
        assert_eq!(p.reason(&(Arc::from("a"), 0)), None);
        assert!(p.pause_all());
        assert_eq!(p.resume_all(parts(&[("a", 0)])), Some(parts(&[("a", 0)])));
    }

    #[test]
    fn a_start_outside_the_log_is_the_log_start() {
        let range = (10, 20);
        let checked_start = |c, r| checked_start(c, r, false);
        assert_eq!(checked_start(Candidate::At(15), range), (15, None));
        assert_eq!(checked_start(Candidate::At(10), range), (10, None));
        assert_eq!(checked_start(Candidate::At(20), range), (20, None));
        let before = OutOfRange {
            offset: 9,
            low: 10,
            high: 20,
        };
        assert_eq!(checked_start(Candidate::At(9), range), (10, Some(before)));
        let past = OutOfRange {
            offset: 1_005,
            ..before
        };
        assert_eq!(checked_start(Candidate::At(1_005), range), (10, Some(past)));
        assert_eq!(checked_start(Candidate::Beginning, range), (10, None));
        assert_eq!(checked_start(Candidate::End, range), (20, None));
    }

    #[test]
    fn past_the_end_of_the_same_log_is_its_end() {
        // The recorded id matches the broker's: the log was truncated, and
        // everything below its end was read before.
        let past = OutOfRange {
            offset: 1_005,
            low: 10,
            high: 20,
        };
        assert_eq!(
            checked_start(Candidate::At(1_005), (10, 20), true),
            (20, Some(past))
        );
        // Before the log's start is its start either way.
        assert_eq!(
            checked_start(Candidate::At(3), (10, 20), true),
            (10, Some(OutOfRange { offset: 3, ..past }))
        );
        assert_eq!(checked_start(Candidate::At(15), (10, 20), true), (15, None));
    }

    /// TLS and SASL are librdkafka properties: this build of librdkafka takes
    /// SASL_SSL with SCRAM and PLAIN (it refuses them when built without OpenSSL).
    #[test]
    fn tls_and_sasl_are_configuration() {
        let password = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(password.path(), "s3cret\n").unwrap();
        for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] {
            let config = Config::load_from(
                None,
                [
                    ("TIMESINK_RDKAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
                    ("TIMESINK_RDKAFKA_SASL_MECHANISM", mechanism),
                    ("TIMESINK_RDKAFKA_SASL_USERNAME", "sink"),
                    (
                        "TIMESINK_RDKAFKA_SASL_PASSWORD_FILE",
                        password.path().to_str().unwrap(),
                    ),
                    (
                        "TIMESINK_RDKAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
                        "https",
                    ),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            )
            .unwrap();
            let client = consumer_config(&config)
                .get("sasl.password")
                .map(str::to_owned);
            assert_eq!(client.as_deref(), Some("s3cret"));
            let consumer: Result<BaseConsumer, _> = consumer_config(&config).create();
            assert!(consumer.is_ok(), "{mechanism}: {:?}", consumer.err());
        }
    }
}

//! Write stage: one batch → one PostgreSQL transaction.
//!
//! In the transaction, in this order:
//! 1. the stored offsets of the batch's partitions move forward, but only from
//!    the value this instance expects (a fence: if another instance wrote the
//!    partition meanwhile, this batch's part of it is dropped and re-read);
//! 2. the rows go in by binary `COPY` straight into the table; only when a key
//!    is already there does the batch take the merge path (staging table +
//!    `INSERT … ON CONFLICT DO UPDATE`), so the later record wins;
//! 3. a row PostgreSQL refuses is found by halving the batch under savepoints;
//!    its message is dead-lettered (acknowledged before `COMMIT`) and the rest lands.
//!
//! Dead letters from validation are acknowledged before the transaction starts.
//! Every error is classified once, by [`classify`] (`pg_error`): a row
//! error dead-letters the row; a batch too big for one statement is written
//! in halves; anything else is retried with capped exponential backoff on a
//! fresh connection, and what only the operator can cure reports the table
//! blocked until it heals.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::{Client, CopyInSink, Statement, ToStatement};
use tokio_util::sync::CancellationToken;

use crate::catalog::schema::{self, Shape};
use crate::catalog::{Table, sql};
use crate::database::Database;
use crate::ops::health::Health;
use crate::pg_error::{Backoff, Class, classify, describe};
use crate::pipeline::batch::Batch;
use crate::pipeline::budget::Cost;
use crate::pipeline::copy_format::{EncodedRows, KeyColumn, latest_per_key, stream_all};
use crate::pipeline::dead_letter::{DeadLetter, DeadLetters};
use crate::pipeline::outcome::{Outcome, RejectClass, Rejection};
use crate::pipeline::topic_watch::{Origin, Replaced, TopicWatch};

const FENCE_SQL: &str = include_str!("../../sql/queries/advance_offsets.sql");

/// What the stored offset of a partition must be before a batch, and becomes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub partition: i32,
    /// The `next_offset` this instance last stored or read; `None` when no row exists yet.
    pub expected: Option<i64>,
    /// The offset after the batch's last message of this partition.
    pub next: i64,
    /// The assignment this batch was read under (see `consume`).
    pub epoch: u64,
    /// The topic's id when that assignment started, where the broker gives
    /// one: the batch commits only while the broker still gives it (see
    /// `topic_watch`).
    pub topic_id: Option<Arc<str>>,
}

/// A batch handed to a writer, with the fences of its partitions. Batches
/// that queue up while the writer is busy join the next flush, so under a
/// backlog transactions grow; their rows, encoded by the router, stay where
/// they are (one run per batch).
#[derive(Debug)]
pub struct Flush {
    pub batch: Batch,
    pub fences: Vec<Fence>,
    /// What this flush holds of its table's budget (rows and bytes in
    /// flight), given back to the router once it is written.
    pub held: Cost,
}

impl Flush {
    /// Whether `later` continues this flush: the same topic, and in every
    /// partition they share, the same assignment and `later` starting where
    /// this one ends.
    fn continued_by(&self, later: &Flush) -> bool {
        later.batch.topic == self.batch.topic
            && later.fences.iter().all(|l| {
                self.fences
                    .iter()
                    .find(|f| f.partition == l.partition)
                    .is_none_or(|f| f.epoch == l.epoch && l.expected == Some(f.next))
            })
    }

    /// Adds `later` to this flush when it continues it; otherwise hands it back.
    pub fn coalesce(&mut self, later: Flush) -> Result<(), Box<Flush>> {
        if !self.continued_by(&later) {
            return Err(Box::new(later));
        }
        self.append(later);
        Ok(())
    }

    /// Adds `later`, which continues this flush.
    fn append(&mut self, later: Flush) {
        for l in later.fences {
            match self.fences.iter_mut().find(|f| f.partition == l.partition) {
                Some(f) => f.next = l.next,
                None => self.fences.push(l),
            }
        }
        self.batch.append(later.batch);
        self.held += later.held;
    }

    /// Splits the flush into two halves of its messages, in order, each
    /// with its own fences: the first ends where the second begins.
    pub fn split(mut self) -> (Flush, Flush) {
        let later = self.batch.split_off(self.batch.entries.len() / 2);
        let mut second = Vec::new();
        for fence in &mut self.fences {
            let (first, then) = (
                self.batch.spans.get(&fence.partition),
                later.spans.get(&fence.partition),
            );
            match (first, then) {
                (Some(first), Some(_)) => {
                    let middle = first.last + 1;
                    second.push(Fence {
                        expected: Some(middle),
                        ..fence.clone()
                    });
                    fence.next = middle;
                }
                (None, Some(_)) => second.push(fence.clone()),
                _ => {}
            }
        }
        self.fences
            .retain(|f| self.batch.spans.contains_key(&f.partition));
        let later = Flush {
            batch: later,
            fences: second,
            // What the whole held stays with the first half: the writer
            // gives it back once the whole is written.
            held: Cost::default(),
        };
        (self, later)
    }

    /// Whether batches may still join: fewer than `rows` rows and `bytes`
    /// message bytes so far.
    pub fn has_room(&self, rows: usize, bytes: usize) -> bool {
        self.batch.rows < rows && self.batch.bytes < bytes
    }
}

/// A batch's rows for the careful path: for each key the later row,
/// skipping the entries PostgreSQL refused, copied into one buffer.
#[derive(Debug)]
struct Encoded {
    /// Per row, the index of the entry it came from (to dead-letter it).
    owners: Vec<usize>,
    rows: EncodedRows,
}

impl Encoded {
    fn new(batch: &Batch, rejected: &BTreeMap<usize, String>, key: &[KeyColumn]) -> Encoded {
        let (owners, rows) = rows_to_write(batch, rejected, key);
        Encoded {
            rows: EncodedRows::from_rows(rows.iter().copied()),
            owners,
        }
    }
}

/// What became of a flush.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub topic: Option<Arc<str>>,
    /// Partitions whose offsets were committed, with their new next offset.
    pub committed: Vec<(i32, i64)>,
    /// Partitions another instance had moved on: not written, to be re-read.
    pub fenced: Vec<Fence>,
    pub rows: usize,
    /// The class of each message dead-lettered (and acknowledged) on the way.
    pub dead_letters: Vec<RejectClass>,
    /// The Kafka timestamp of the last message committed per partition.
    pub committed_timestamps: Vec<(i32, i64)>,
}

impl Report {
    /// Adds a committed flush (or part of one): its partitions' new next
    /// offsets and last timestamps replace any from an earlier part.
    fn committed(&mut self, flush: &Flush, rows: usize, rejected: usize) {
        self.rows += rows;
        self.dead_letters
            .extend(std::iter::repeat_n(RejectClass::Database, rejected));
        for f in &flush.fences {
            self.committed.retain(|&(p, _)| p != f.partition);
            self.committed.push((f.partition, f.next));
        }
        for (&p, span) in &flush.batch.spans {
            if let Some(t) = span.last_timestamp_ms {
                self.committed_timestamps.retain(|&(q, _)| q != p);
                self.committed_timestamps.push((p, t));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("{}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    DeadLetter(#[from] crate::pipeline::dead_letter::DeadLetterError),
    #[error("the batch fails as a whole but no single row does: {0}")]
    NoCulprit(String),
    /// The live table differs from what the sink writes.
    #[error("{0}")]
    Mismatch(String),
    /// PostgreSQL refuses every row the same way, a row it took before
    /// included: the table's doing (a trigger, a constraint), not the rows'.
    #[error("{0}")]
    Refused(String),
}

impl AttemptError {
    /// The SQLSTATE PostgreSQL sent, if it sent one.
    fn sqlstate(&self) -> Option<&str> {
        match self {
            AttemptError::Db(e) => e.code().map(tokio_postgres::error::SqlState::code),
            _ => None,
        }
    }

    /// Whether the connection failed (no SQLSTATE): the database is out of reach.
    fn is_connection(&self) -> bool {
        matches!(self, AttemptError::Db(e) if e.code().is_none())
    }

    /// What to do about it ([`classify`]); a dead letter that cannot be
    /// written, or a batch no row of which is to blame, needs the operator.
    fn class(&self) -> Class {
        match self {
            AttemptError::Db(e) => classify(e),
            AttemptError::DeadLetter(_)
            | AttemptError::NoCulprit(_)
            | AttemptError::Mismatch(_)
            | AttemptError::Refused(_) => Class::Blocked,
        }
    }
}

enum Attempt {
    Committed {
        rows: usize,
        rejected: usize,
    },
    Fenced(Vec<i32>),
    /// The topic was deleted and created again under the flush: nothing
    /// committed.
    Replaced(Replaced),
}

/// Writes the batches of one table, on its own connection.
pub struct Writer {
    table: Arc<str>,
    /// The primary key's columns, in column order: which rows repeat a key.
    key: Vec<KeyColumn>,
    statements: sql::Statements,
    database: Database,
    group_id: String,
    dead_letters: Arc<DeadLetters>,
    /// Where the table is reported blocked while its dead letters cannot be written.
    health: Arc<Health>,
    /// The open connection and its prepared statements; dropped after any
    /// error, so a broken connection is never reused.
    client: Option<Connection>,
    /// Batches left to write by the merge path straight away: set after a
    /// COPY met keys already stored (a re-read after a crash, producers
    /// repeating keys), so such batches do not pay a failed COPY each.
    merge_next: u32,
    /// Transactions left to run with TimescaleDB's decompression limit
    /// lifted: set when a batch into compressed chunks met it (late data
    /// comes in runs, so the next batches would meet it too).
    lift_next: u32,
    /// `BEGIN` with the decompression limit raised to the table's
    /// `timescaledb.max_tuples_decompressed`.
    begin_lifted: String,
    /// The table as the sink writes it (its catalog DDL), to compare
    /// the live one with; None when unknown.
    expected: Option<Shape>,
    /// COPY writes compressed batches (`timescaledb.direct_compress`).
    direct_compress: bool,
    /// Whether the live table was compared and found writable since the
    /// last error that only the operator can cure.
    verified: bool,
    /// Confirms that a flush's topic was not replaced under it.
    topic_watch: Arc<TopicWatch>,
    /// The last row the table took, encoded: written again (and rolled
    /// back) when a batch's rows are refused, to tell a table that refuses
    /// every row from rows that break its rules.
    last_good: Option<Vec<u8>>,
}

/// An open connection and the statements prepared on it once, so that a
/// transaction sends them without a round trip to parse them.
struct Connection {
    client: Client,
    /// Moves the stored offsets (`sql/queries/advance_offsets.sql`).
    fence: Statement,
    /// The table's binary `COPY … FROM STDIN`.
    copy: Statement,
}

/// 54001: a statement too complex — for PostgreSQL's jsonb input, a
/// document nested past its stack (`max_stack_depth`).
const STATEMENT_TOO_COMPLEX: &str = "54001";

/// How many batches go by the merge path after a COPY met an existing key,
/// before a plain COPY is tried again.
const MERGE_STREAK: u32 = 16;

/// A session whose COPY writes compressed batches straight into the
/// chunks. TimescaleDB keeps the rows a COPY sends in memory to sort them
/// into batches, up to its `direct_compress_copy_tuple_sort_limit`.
const DIRECT_COMPRESS: &str = "SET timescaledb.enable_direct_compress_copy = on";

/// How many transactions run with the decompression limit lifted after a
/// batch met it.
const LIFT_STREAK: u32 = 16;

/// A transaction's start when rows for compressed chunks may decompress
/// more tuples than TimescaleDB allows one transaction by default. That
/// limit guards ad-hoc statements against decompressing a table by
/// mistake; late rows and replays must land. Splitting the batch first
/// would not bound it (what a row decompresses depends on the compressed
/// batches it falls in, not on how many rows go together) and would cost
/// a transaction per part: raising it for the transaction lands the batch
/// at once. It is raised to a finite `limit`, since the decompressed rows
/// stay uncompressed on disk until the compression policy compresses
/// their chunk again.
fn begin_lifted(limit: u64) -> String {
    format!("BEGIN; SET LOCAL timescaledb.max_tuples_decompressed_per_dml_transaction = {limit}")
}

impl Writer {
    pub fn new(
        table: &Table,
        database: Database,
        group_id: String,
        dead_letters: Arc<DeadLetters>,
        health: Arc<Health>,
        expected: Option<Shape>,
        topic_watch: Arc<TopicWatch>,
    ) -> Writer {
        Writer {
            table: Arc::from(table.name.as_str()),
            key: KeyColumn::of(table),
            statements: sql::statements(table),
            database,
            group_id,
            dead_letters,
            health,
            client: None,
            merge_next: 0,
            lift_next: 0,
            begin_lifted: begin_lifted(table.timescaledb.max_tuples_decompressed),
            expected,
            direct_compress: table.timescaledb.direct_compress,
            verified: false,
            topic_watch,
            last_good: None,
        }
    }

    /// Writes a flush, retrying transient failures until it is committed or
    /// fenced, or until `stop` is cancelled (then `None`: nothing committed).
    pub async fn write(&mut self, flush: Flush, stop: &CancellationToken) -> Option<Report> {
        let mut report = Report {
            topic: Some(flush.batch.topic.clone()),
            ..Report::default()
        };
        let mut backoff = Backoff::new();
        // Asked now, answered while the rows go out: whether the topic is
        // still the one the partitions started on.
        let polled_ms = flush
            .batch
            .entries
            .iter()
            .map(|e| e.message.polled_ms)
            .max()
            .unwrap_or(0);
        let mut origin = Origin::ask(
            &self.topic_watch,
            &flush.batch.topic,
            &flush.fences,
            polled_ms,
        );

        // Dead letters from decoding and validation: acknowledged first.
        let invalid: Vec<(Rejection, usize)> = flush
            .batch
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match &e.outcome {
                Outcome::DeadLetter(rejection) => Some((rejection.clone(), i)),
                Outcome::Rows(_) => None,
            })
            .collect();
        if !invalid.is_empty() {
            loop {
                let letters: Vec<DeadLetter<'_>> = invalid
                    .iter()
                    .map(|(rejection, i)| DeadLetter {
                        message: &flush.batch.entries[*i].message,
                        reason: &rejection.reason,
                    })
                    .collect();
                match self.dead_letters.send_all(&letters).await {
                    Ok(()) => {
                        if self.health.set_blocked(&self.table, None) {
                            tracing::info!(
                                table = %self.table,
                                "dead letters acknowledged: the table is no longer blocked"
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        let delay = backoff.step();
                        // Logged once when the table becomes blocked, then
                        // at debug level per retry.
                        let reason = format!("dead letters cannot be written: {e}");
                        if self.health.set_blocked(&self.table, Some(reason)) {
                            tracing::error!(table = %self.table, error = %e, "table blocked: its dead letters are not acknowledged, so its source offsets stay put; retrying");
                        } else {
                            tracing::debug!(table = %self.table, error = %e, retry_in = ?delay, "dead letters not acknowledged");
                        }
                        if sleep_or_stop(delay, stop).await {
                            return None;
                        }
                    }
                }
            }
            report
                .dead_letters
                .extend(invalid.iter().map(|(r, _)| r.class));
            backoff = Backoff::new();
        }

        // The flush, or its parts once PostgreSQL found it too big for one
        // statement: written in order, each in a transaction of its own.
        let mut parts = std::collections::VecDeque::from([flush]);
        // Whether this flush has failed before (a transient failure is
        // logged once per flush, then at debug level).
        let mut failed = false;
        // The reason PostgreSQL cannot take the next part, a single message,
        // in any statement: it goes to the dead letters.
        let mut refuse: Option<String> = None;
        while let Some(mut part) = parts.pop_front() {
            let started = Instant::now();
            let attempt = match refuse.take() {
                Some(reason) => self.attempt_refused(&mut part, reason, &mut origin).await,
                None => self.attempt(&mut part, &mut origin).await,
            };
            match attempt {
                Ok(Attempt::Committed { rows, rejected }) => {
                    metrics::histogram!("timesink_copy_duration_seconds", "table" => self.table.to_string())
                        .record(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        table = %self.table,
                        rows,
                        took = ?started.elapsed(),
                        "batch committed"
                    );
                    if self.health.set_blocked(&self.table, None) {
                        tracing::info!(
                            table = %self.table,
                            "table no longer blocked: writes go through again"
                        );
                    } else if failed {
                        tracing::info!(table = %self.table, "write went through after retrying");
                    }
                    failed = false;
                    backoff = Backoff::new();
                    self.lift_next = self.lift_next.saturating_sub(1);
                    report.committed(&part, rows, rejected);
                    // Recording each message's latency and freeing the batch
                    // take a tenth of a write: both happen off the writer's path.
                    let (table, now_ms) =
                        (self.table.clone(), chrono::Utc::now().timestamp_millis());
                    tokio::task::spawn_blocking(move || record_latency(table, part, now_ms));
                }
                Ok(Attempt::Replaced(Replaced { started, now })) => {
                    tracing::warn!(
                        topic = %part.batch.topic, id_started = %started, id_now = %now,
                        "the topic was deleted and created again while this batch was read: nothing of it is committed, and its partitions start again from a checked start"
                    );
                    for p in std::iter::once(part).chain(parts.drain(..)) {
                        report.fenced.extend(p.fences);
                    }
                }
                Ok(Attempt::Fenced(partitions)) => {
                    tracing::info!(
                        topic = %part.batch.topic, ?partitions,
                        "partitions were written by another instance; dropping this instance's batch for them"
                    );
                    report.fenced.extend(
                        part.fences
                            .iter()
                            .filter(|f| partitions.contains(&f.partition))
                            .cloned(),
                    );
                    for p in std::iter::once(&mut part).chain(parts.iter_mut()) {
                        p.fences.retain(|f| !partitions.contains(&f.partition));
                        p.batch.remove_partitions(&partitions);
                    }
                    parts.retain(|p| !p.fences.is_empty());
                    if !part.fences.is_empty() {
                        parts.push_front(part);
                    }
                }
                Err(e) => {
                    self.client = None;
                    let class = e.class();
                    if class == Class::TooBig
                        && part.batch.entries.len() == 1
                        && e.sqlstate() == Some(STATEMENT_TOO_COMPLEX)
                    {
                        // No smaller batch gets one message through: it is
                        // the message's doing (a document nested past the
                        // server's stack), as a row PostgreSQL refuses.
                        refuse = Some(format!(
                            "PostgreSQL rejected a row of {}: {e} (one message is more than a statement can hold)",
                            self.table
                        ));
                        parts.push_front(part);
                        continue;
                    }
                    if class == Class::TooBig && part.batch.entries.len() > 1 {
                        let (first, second) = part.split();
                        tracing::info!(
                            table = %self.table, error = %e,
                            rows = first.batch.rows + second.batch.rows,
                            "PostgreSQL found the batch too big for one statement; writing it in halves"
                        );
                        metrics::counter!("timesink_batch_splits_total", "table" => self.table.to_string())
                            .increment(1);
                        parts.push_front(second);
                        parts.push_front(first);
                        continue;
                    }
                    if class == Class::Decompression
                        && self.lift_next > 0
                        && part.batch.entries.len() > 1
                    {
                        // Over the raised limit too: fewer rows fall into
                        // fewer compressed batches.
                        let (first, second) = part.split();
                        tracing::info!(
                            table = %self.table, error = %e,
                            rows = first.batch.rows + second.batch.rows,
                            "rows for compressed chunks need more tuples decompressed than the table's \
                             timescaledb.max_tuples_decompressed; writing them in halves"
                        );
                        metrics::counter!("timesink_batch_splits_total", "table" => self.table.to_string())
                            .increment(1);
                        self.lift_next = self.lift_next.max(2);
                        parts.push_front(second);
                        parts.push_front(first);
                        continue;
                    }
                    if class == Class::Decompression && self.lift_next == 0 {
                        tracing::info!(
                            table = %self.table, error = %e, rows = part.batch.rows,
                            "rows for compressed chunks need more tuples decompressed than TimescaleDB allows a transaction; \
                             writing them again with the limit lifted for this and the next {LIFT_STREAK} transactions"
                        );
                        metrics::counter!("timesink_decompression_limit_lifted_total", "table" => self.table.to_string())
                            .increment(1);
                        self.lift_next = LIFT_STREAK + 1;
                        parts.push_front(part);
                        continue;
                    }
                    parts.push_front(part);
                    if class == Class::Blocked {
                        // The next try compares the live table first, so
                        // that a changed table is named as such.
                        self.verified = false;
                    }
                    let delay = backoff.step();
                    metrics::counter!("timesink_write_retries_total", "table" => self.table.to_string())
                        .increment(1);
                    self.report_failure(class, &e, delay, failed);
                    failed = true;
                    if sleep_or_stop(delay, stop).await {
                        return None;
                    }
                }
            }
        }
        Some(report)
    }

    /// Logs a failed write, and reports the table blocked when only the
    /// operator can cure it: one line when that state changes, then at
    /// debug level per retry.
    fn report_failure(&self, class: Class, error: &AttemptError, delay: Duration, failed: bool) {
        // A row error or a conflict that reaches here was not isolated:
        // retrying it would be retrying in silence.
        let blocked = matches!(
            class,
            Class::Blocked | Class::TooBig | Class::Decompression | Class::Row | Class::Conflict
        );
        if blocked {
            let reason = if class == Class::Decompression {
                format!(
                    "{error}; a single row needs more tuples decompressed than the table's \
                     `timescaledb.max_tuples_decompressed` allows: raise it in the table's description"
                )
            } else {
                error.to_string()
            };
            if self.health.set_blocked(&self.table, Some(reason.clone())) {
                tracing::error!(
                    table = %self.table, error = %reason,
                    "table blocked: PostgreSQL refuses its writes until the operator acts \
                     (nothing is skipped: its offsets stay put); re-checking every few seconds"
                );
                return;
            }
        } else if !failed && !error.is_connection() {
            // A lost connection is the database probe's to report, once.
            tracing::warn!(table = %self.table, %error, retry_in = ?delay, "write failed; retrying");
            return;
        }
        tracing::debug!(table = %self.table, %error, class = class.label(), retry_in = ?delay, "write failed again");
    }

    /// Connects ahead of the first batch (while the consumer joins its
    /// group), so that the first write does not wait for the connection,
    /// its staging table and its prepared statement. A failure here is
    /// only logged: the first write connects again.
    pub async fn warm_up(&mut self) {
        if let Err(e) = self.connect().await {
            tracing::debug!(table = %self.table, error = %describe(&e), "connecting ahead failed");
            self.client = None;
        }
    }

    async fn connect(&mut self) -> Result<&Client, tokio_postgres::Error> {
        if self.client.as_ref().is_none_or(|c| c.client.is_closed()) {
            let client = self.database.connect().await?;
            // The staging table is created outside any transaction, so no
            // rollback can undo it while this connection lives.
            client.batch_execute(&self.statements.create_stage).await?;
            if self.direct_compress {
                client.batch_execute(DIRECT_COMPRESS).await?;
            }
            let (fence, copy) = tokio::try_join!(
                client.prepare(FENCE_SQL),
                client.prepare(&self.statements.copy)
            )?;
            self.client = Some(Connection {
                client,
                fence,
                copy,
            });
        }
        Ok(self.client_ref())
    }

    /// One try at a flush. The first goes straight: `BEGIN` and the fence in
    /// one round trip, the COPY, `COMMIT`. If PostgreSQL refuses the COPY
    /// (a key already there, a bad row), that transaction is rolled back and
    /// the flush is tried again carefully: under savepoints, with the merge
    /// path and the search for refused rows.
    async fn attempt(
        &mut self,
        flush: &mut Flush,
        origin: &mut Origin,
    ) -> Result<Attempt, AttemptError> {
        self.connect().await?;
        if !self.verified {
            self.verify().await?;
        }
        if self.merge_next > 0 {
            self.merge_next -= 1;
            return self.attempt_carefully(flush, true, origin).await;
        }
        // Every row as the router encoded it, in order. No row is dropped
        // for a later one of the same key: if the batch repeats a key,
        // PostgreSQL refuses the COPY and the careful path keeps the later row.
        flush.batch.seal();
        let stream = stream_all(&flush.batch.encoded);
        let rows = flush.batch.rows;
        let Connection { client, copy, .. } =
            self.client.as_ref().expect("connected during an attempt");
        // The COPY goes out with BEGIN and the fence: one round trip before
        // the rows flow, where each waited for the one before.
        let (fenced, sink) = self.begin(flush, client.copy_in::<_, Bytes>(copy)).await?;
        if let Some(fenced) = fenced {
            drop(sink); // aborts the COPY, and with it the transaction
            client.batch_execute("ROLLBACK").await?;
            return Ok(Attempt::Fenced(fenced));
        }
        let copied = async {
            futures::pin_mut!(sink);
            feed_rows(sink.as_mut(), stream).await?;
            fail::fail_point!("commit-before", |_| std::process::abort());
            // The broker's word on the topic, asked while the rows went
            // out. Replaced: the sink is dropped unfinished, which aborts
            // the COPY and the transaction.
            if let Some(replaced) = origin.replaced().await {
                return Ok(Err(replaced.clone()));
            }
            sink.finish().await.map(Ok)
        };
        // COMMIT goes out right behind the end of the COPY, not a round trip
        // later. It cannot commit a failed COPY: the error aborts the
        // transaction, and PostgreSQL answers that COMMIT with a rollback.
        let (copied, committed) = tokio::join!(copied, client.batch_execute("COMMIT"));
        match copied {
            Ok(Ok(_)) => match committed {
                Ok(()) => {}
                // A constraint checked at COMMIT (DEFERRABLE) refused a row:
                // the careful path checks each at its own statement.
                Err(e) if refuses_a_row(&e) => {
                    return self.attempt_carefully(flush, false, origin).await;
                }
                Err(e) => return Err(e.into()),
            },
            Ok(Err(replaced)) => {
                committed?; // the rollback
                return Ok(Attempt::Replaced(replaced));
            }
            // Only a row's error or a key already there is for the careful
            // path to sort out; anything else fails the whole attempt.
            Err(e) if !matches!(classify(&e), Class::Row | Class::Conflict) => {
                return Err(e.into());
            }
            Err(e) => {
                committed?; // the rollback; an error here ends the connection
                let conflict = classify(&e) == Class::Conflict;
                if conflict {
                    self.merge_next = MERGE_STREAK;
                }
                return self.attempt_carefully(flush, conflict, origin).await;
            }
        }
        self.last_good = flush.batch.last_row().map(<[u8]>::to_vec);
        Ok(Attempt::Committed { rows, rejected: 0 })
    }

    /// `BEGIN`, the fence and `then` (the transaction's next statement),
    /// sent together; the fenced partitions, if any, and what `then` gave.
    async fn begin<T>(
        &self,
        flush: &Flush,
        then: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<(Option<Vec<i32>>, T), tokio_postgres::Error> {
        let Connection { client, fence, .. } =
            self.client.as_ref().expect("connected during an attempt");
        let begin = if self.lift_next > 0 {
            self.begin_lifted.as_str()
        } else {
            "BEGIN"
        };
        let (_, fenced, then) = tokio::try_join!(
            client.batch_execute(begin),
            advance_offsets(
                client,
                fence,
                &self.group_id,
                &flush.batch.topic,
                &flush.fences
            ),
            then,
        )?;
        Ok(((!fenced.is_empty()).then_some(fenced), then))
    }

    /// A flush of one message PostgreSQL cannot take: its offsets are
    /// committed and the message dead-lettered with `reason`.
    async fn attempt_refused(
        &mut self,
        flush: &mut Flush,
        reason: String,
        origin: &mut Origin,
    ) -> Result<Attempt, AttemptError> {
        self.connect().await?;
        let refused = (0..flush.batch.entries.len()).map(|i| (i, reason.clone()));
        self.attempt_carefully_with(flush, false, origin, refused.collect())
            .await
    }

    /// A flush in a transaction of savepoints: the merge path when a key is
    /// already there (`merge`: straight away), and rows PostgreSQL refuses
    /// found and dead-lettered.
    async fn attempt_carefully(
        &mut self,
        flush: &mut Flush,
        merge: bool,
        origin: &mut Origin,
    ) -> Result<Attempt, AttemptError> {
        self.attempt_carefully_with(flush, merge, origin, BTreeMap::new())
            .await
    }

    /// [`Writer::attempt_carefully`], with entries `rejected` already.
    async fn attempt_carefully_with(
        &mut self,
        flush: &mut Flush,
        merge: bool,
        origin: &mut Origin,
        mut rejected: BTreeMap<usize, String>,
    ) -> Result<Attempt, AttemptError> {
        // Deferred constraints are checked at each statement, so that the
        // row that breaks one is found like any other.
        let immediate = self
            .client_ref()
            .batch_execute("SET CONSTRAINTS ALL IMMEDIATE");
        if let (Some(fenced), ()) = self.begin(flush, immediate).await? {
            self.client_ref().batch_execute("ROLLBACK").await?;
            return Ok(Attempt::Fenced(fenced));
        }
        let rows = loop {
            let Encoded {
                owners,
                rows: encoded,
            } = &Encoded::new(&flush.batch, &rejected, &self.key);
            self.client_ref().batch_execute("SAVEPOINT batch").await?;
            match self.copy_range(encoded, 0..encoded.len(), merge).await {
                Ok(()) => {
                    if let Some(row) = encoded.last_row() {
                        self.last_good = Some(row.to_vec());
                    }
                    break encoded.len();
                }
                Err(e) if !refuses_a_row(&e) => return Err(e.into()),
                Err(first) => {
                    self.client_ref()
                        .batch_execute("ROLLBACK TO SAVEPOINT batch")
                        .await?;
                    // A table changed under the sink (a column's type, a
                    // NOT NULL added) refuses every row: that is the
                    // operator's to fix, not a dead letter per message.
                    self.verify().await?;
                    self.refuses_what_it_took(&first).await?;
                    let culprits = self.find_rejected(encoded, merge).await?;
                    let culprits = self.refused_again(encoded, merge, culprits).await?;
                    if culprits.is_empty() {
                        return Err(AttemptError::NoCulprit(describe(&first)));
                    }
                    if self.last_good.is_none() {
                        refuses_every_row(&self.table, owners, &culprits)?;
                    }
                    for (row, error) in culprits {
                        let reason = format!(
                            "PostgreSQL rejected a row of {}: {}",
                            self.table,
                            describe(&error)
                        );
                        rejected.entry(owners[row]).or_insert(reason);
                    }
                    self.client_ref()
                        .batch_execute("ROLLBACK TO SAVEPOINT batch")
                        .await?;
                }
            }
        };
        if !rejected.is_empty() {
            let letters: Vec<DeadLetter<'_>> = rejected
                .iter()
                .map(|(i, reason)| DeadLetter {
                    message: &flush.batch.entries[*i].message,
                    reason,
                })
                .collect();
            for (i, reason) in &rejected {
                let m = &flush.batch.entries[*i].message;
                tracing::warn!(topic = %m.topic, partition = m.partition, offset = m.offset, %reason, "dead-lettering a row PostgreSQL refuses");
            }
            self.dead_letters.send_all(&letters).await?;
        }
        fail::fail_point!("commit-before", |_| std::process::abort());
        if let Some(replaced) = origin.replaced().await {
            self.client_ref().batch_execute("ROLLBACK").await?;
            return Ok(Attempt::Replaced(replaced.clone()));
        }
        match self.client_ref().batch_execute("COMMIT").await {
            Ok(()) => {}
            // Every constraint was checked at its statement: one that still
            // fails at COMMIT is no row's to answer for.
            Err(e) if refuses_a_row(&e) => {
                return Err(AttemptError::NoCulprit(describe(&e)));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Attempt::Committed {
            rows,
            rejected: rejected.len(),
        })
    }

    /// Whether the table refuses a row it took before the way it refused
    /// this batch (`first`): then it refuses every row — a trigger raising,
    /// a constraint no row meets, a referenced table emptied — and the
    /// table is blocked for the operator, not its rows dead-lettered. The
    /// row is written in a savepoint rolled back either way.
    async fn refuses_what_it_took(
        &mut self,
        first: &tokio_postgres::Error,
    ) -> Result<(), AttemptError> {
        let Some(canary) = self.last_good.clone() else {
            return Ok(());
        };
        let rows = EncodedRows::from_rows(std::iter::once(canary.as_slice()));
        self.client_ref().batch_execute("SAVEPOINT probe").await?;
        let probed = self.copy_range(&rows, 0..1, false).await;
        self.client_ref()
            .batch_execute("ROLLBACK TO SAVEPOINT probe")
            .await?;
        match probed {
            Ok(()) => Ok(()),
            Err(e) if !refuses_a_row(&e) => Err(e.into()),
            Err(e) if same_refusal(&e, first) => Err(AttemptError::Refused(format!(
                "PostgreSQL refuses every row of table {}, a row it took before included: {} \
                 (a trigger, a constraint or a reference the rows cannot meet; the table is \
                 re-checked until it takes rows again)",
                self.table,
                describe(&e)
            ))),
            Err(_) => Ok(()),
        }
    }

    /// Compares the live table with what the sink writes.
    async fn verify(&mut self) -> Result<(), AttemptError> {
        if let Some(expected) = &self.expected {
            let client = &self
                .client
                .as_ref()
                .expect("connected before verifying")
                .client;
            if let Some(reason) = schema::check_table(client, &self.table, expected).await? {
                return Err(AttemptError::Mismatch(reason));
            }
        }
        self.verified = true;
        Ok(())
    }

    /// Whether the table is reported blocked.
    pub fn is_blocked(&self) -> bool {
        self.health.is_blocked(&self.table)
    }

    /// Re-checks a blocked table with nothing to write: a table found
    /// changed at start heals once the operator fixes it, traffic or not.
    pub async fn recheck(&mut self) {
        let checked = async {
            self.connect().await?;
            self.verify().await
        };
        match checked.await {
            Ok(()) => {
                if self.health.set_blocked(&self.table, None) {
                    tracing::info!(
                        table = %self.table,
                        "table no longer blocked: it matches what the sink writes"
                    );
                }
            }
            Err(e) => {
                self.client = None;
                tracing::debug!(table = %self.table, error = %e, "table still blocked");
                if let AttemptError::Mismatch(reason) = e {
                    self.health.set_blocked(&self.table, Some(reason));
                }
            }
        }
    }

    fn client_ref(&self) -> &Client {
        &self
            .client
            .as_ref()
            .expect("connected during an attempt")
            .client
    }

    /// Writes rows `range`: COPY into the table, or, if a key is already
    /// there (or `merge`), the merge path. Leaves the transaction as before
    /// on error.
    async fn copy_range(
        &mut self,
        rows: &EncodedRows,
        range: std::ops::Range<usize>,
        merge: bool,
    ) -> Result<(), tokio_postgres::Error> {
        let data = rows.stream(range);
        let client = self.client_ref();
        client.batch_execute("SAVEPOINT copy").await?;
        if merge {
            return self.merge(data).await;
        }
        let copy = &self
            .client
            .as_ref()
            .expect("connected during an attempt")
            .copy;
        match copy_in(client, copy, data.clone()).await {
            Ok(()) => return client.batch_execute("RELEASE SAVEPOINT copy").await,
            Err(e) if classify(&e) != Class::Conflict => {
                if classify(&e) == Class::Row {
                    client.batch_execute("ROLLBACK TO SAVEPOINT copy").await?;
                }
                return Err(e);
            }
            Err(_) => client.batch_execute("ROLLBACK TO SAVEPOINT copy").await?,
        }
        self.merge(data).await
    }

    /// The merge path, inside savepoint `copy`: the rows into the staging
    /// table, then `INSERT … ON CONFLICT DO UPDATE`. Releases the savepoint,
    /// or on a row error rolls back to it.
    async fn merge(&self, data: [Bytes; 3]) -> Result<(), tokio_postgres::Error> {
        let client = self.client_ref();
        let merged = async {
            client.batch_execute(&self.statements.clear_stage).await?;
            copy_in(client, &self.statements.copy_stage, data).await?;
            client.batch_execute(&self.statements.merge).await
        }
        .await;
        match merged {
            Ok(()) => client.batch_execute("RELEASE SAVEPOINT copy").await,
            Err(e) => {
                if refuses_a_row(&e) {
                    client.batch_execute("ROLLBACK TO SAVEPOINT copy").await?;
                }
                Err(e)
            }
        }
    }

    /// The `culprits` PostgreSQL refuses a second time: a row refused
    /// while the table changed under the search (a trigger dropped, a
    /// lock's statement timeout) is not the row's doing, and is written
    /// again with the rest instead of dead-lettered.
    async fn refused_again(
        &mut self,
        rows: &EncodedRows,
        merge: bool,
        culprits: Vec<(usize, tokio_postgres::Error)>,
    ) -> Result<Vec<(usize, tokio_postgres::Error)>, tokio_postgres::Error> {
        let mut confirmed = Vec::with_capacity(culprits.len());
        for (row, _) in culprits {
            match self.copy_range(rows, row..row + 1, merge).await {
                Ok(()) => {}
                Err(e) if refuses_a_row(&e) => confirmed.push((row, e)),
                Err(e) => return Err(e),
            }
        }
        Ok(confirmed)
    }

    /// Finds the rows PostgreSQL refuses by halving: a run that fails is split
    /// until single rows remain. Costs about 2·k·log2(n) COPYs for k bad rows.
    async fn find_rejected(
        &mut self,
        rows: &EncodedRows,
        merge: bool,
    ) -> Result<Vec<(usize, tokio_postgres::Error)>, tokio_postgres::Error> {
        let mut culprits = Vec::new();
        let mut pending: Vec<std::ops::Range<usize>> = Vec::new();
        pending.push(0..rows.len());
        while let Some(range) = pending.pop() {
            match self.copy_range(rows, range.clone(), merge).await {
                Ok(()) => {}
                Err(e) if !refuses_a_row(&e) => return Err(e),
                Err(e) if range.len() == 1 => culprits.push((range.start, e)),
                Err(_) => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
        }
        Ok(culprits)
    }
}

/// Whether PostgreSQL refused a row (its values, or a constraint the sink
/// does not own: a unique index besides the primary key meets a key the
/// merge path cannot replace).
fn refuses_a_row(e: &tokio_postgres::Error) -> bool {
    matches!(classify(e), Class::Row | Class::Conflict)
}

/// Whether two refusals are the same: one SQLSTATE, one constraint.
fn same_refusal(a: &tokio_postgres::Error, b: &tokio_postgres::Error) -> bool {
    match (a.as_db_error(), b.as_db_error()) {
        (Some(a), Some(b)) => a.code() == b.code() && a.constraint() == b.constraint(),
        _ => false,
    }
}

/// Without a row the table took before to tell by: every row of several
/// messages refused one way is taken as the table refusing them all.
fn refuses_every_row(
    table: &str,
    owners: &[usize],
    culprits: &[(usize, tokio_postgres::Error)],
) -> Result<(), AttemptError> {
    let messages: std::collections::BTreeSet<usize> = owners.iter().copied().collect();
    let (_, first) = &culprits[0];
    if culprits.len() == owners.len()
        && messages.len() > 1
        && culprits.iter().all(|(_, e)| same_refusal(e, first))
    {
        return Err(AttemptError::Refused(format!(
            "PostgreSQL refuses every row of table {table}, the same way for {} messages: {} \
             (a trigger, a constraint or a reference the rows cannot meet; the table is \
             re-checked until it takes rows again)",
            messages.len(),
            describe(first)
        )));
    }
    Ok(())
}

/// The rows to write: for each key the later row, skipping rejected entries.
/// Returns, per row, the index of the entry it came from.
fn rows_to_write<'b>(
    batch: &'b Batch,
    rejected: &BTreeMap<usize, String>,
    key: &[KeyColumn],
) -> (Vec<usize>, Vec<&'b [u8]>) {
    let mut owners = Vec::with_capacity(batch.rows);
    let mut rows = Vec::with_capacity(batch.rows);
    for (owner, row) in batch.row_owners().zip(batch.encoded_rows()) {
        if !rejected.contains_key(&owner) {
            owners.push(owner);
            rows.push(row);
        }
    }
    let keep = latest_per_key(key, &rows);
    if keep.len() == rows.len() {
        return (owners, rows);
    }
    (
        keep.iter().map(|&k| owners[k]).collect(),
        keep.iter().map(|&k| rows[k]).collect(),
    )
}

/// Sends a COPY stream (header, runs of rows, trailer) as it is: no copy of
/// the rows.
async fn copy_in<T: ?Sized + ToStatement>(
    client: &Client,
    statement: &T,
    data: impl IntoIterator<Item = Bytes>,
) -> Result<(), tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    futures::pin_mut!(sink);
    feed_rows(sink.as_mut(), data).await?;
    sink.finish().await.map(|_| ())
}

/// Feeds a COPY stream into a started COPY, without finishing it.
async fn feed_rows(
    mut sink: Pin<&mut CopyInSink<Bytes>>,
    data: impl IntoIterator<Item = Bytes>,
) -> Result<(), tokio_postgres::Error> {
    let mut data = data.into_iter();
    if let Some(header) = data.next() {
        sink.feed(header).await?;
    }
    // With the crash points compiled in, the first rows go in two sends, so
    // that one can sit in the middle of a COPY.
    #[cfg(feature = "failpoints")]
    if let Some(rows) = data.next() {
        let half = rows.len() / 2;
        sink.send(rows.slice(..half)).await?;
        fail::fail_point!("copy-mid", |_| std::process::abort());
        sink.feed(rows.slice(half..)).await?;
    }
    for piece in data {
        sink.feed(piece).await?;
    }
    Ok(())
}

/// Moves the stored offsets forward from their expected values; returns the
/// partitions whose stored offset was not what this instance expected.
async fn advance_offsets(
    client: &Client,
    statement: &Statement,
    group: &str,
    topic: &str,
    fences: &[Fence],
) -> Result<Vec<i32>, tokio_postgres::Error> {
    let partitions: Vec<i32> = fences.iter().map(|f| f.partition).collect();
    let expected: Vec<Option<i64>> = fences.iter().map(|f| f.expected).collect();
    let next: Vec<i64> = fences.iter().map(|f| f.next).collect();
    let advanced = client
        .query(statement, &[&group, &topic, &partitions, &expected, &next])
        .await?;
    let advanced: Vec<i32> = advanced.iter().map(|r| r.get(0)).collect();
    Ok(partitions
        .into_iter()
        .filter(|p| !advanced.contains(p))
        .collect())
}

/// Records, for each message of a flush committed at `now_ms`, the time
/// from its Kafka timestamp (the producer's, or the broker's with
/// LogAppendTime) to the commit; then frees the flush.
fn record_latency(table: Arc<str>, flush: Flush, now_ms: i64) {
    // End to end; the part before the sink polled the message (producer and
    // broker); the sink's own part.
    let table = table.to_string();
    let total = metrics::histogram!("timesink_produce_to_commit_seconds", "table" => table.clone());
    let before = metrics::histogram!("timesink_produce_to_poll_seconds", "table" => table.clone());
    let own = metrics::histogram!("timesink_poll_to_commit_seconds", "table" => table);
    let secs = |ms: i64| ms as f64 / 1000.0;
    for entry in &flush.batch.entries {
        let polled = entry.message.polled_ms;
        if let Some(t) = entry.message.timestamp_ms.filter(|&t| t > 0 && t <= now_ms) {
            total.record(secs(now_ms - t));
            before.record(secs(polled.max(t) - t));
        }
        own.record(secs((now_ms - polled).max(0)));
    }
}

/// Sleeps, or returns true at once when `stop` is cancelled.
async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flush(topic: &str, spans: &[(i32, i64, i64, u64)]) -> Flush {
        let topic: Arc<str> = topic.into();
        let mut batch = crate::pipeline::batch::Batch::empty(topic, crate::catalog::TableId(3));
        let mut fences = Vec::new();
        for &(partition, first, last, epoch) in spans {
            batch.spans.insert(
                partition,
                crate::pipeline::batch::Span {
                    first,
                    last,
                    last_timestamp_ms: None,
                },
            );
            fences.push(Fence {
                partition,
                expected: Some(first),
                next: last + 1,
                epoch,
                topic_id: None,
            });
        }
        Flush {
            batch,
            fences,
            held: Cost::default(),
        }
    }

    #[test]
    fn coalesces_only_a_continuation() {
        let mut a = flush("t", &[(0, 0, 9, 1), (1, 5, 6, 1)]);
        // Continues partition 0, adds partition 2.
        a.coalesce(flush("t", &[(0, 10, 19, 1), (2, 0, 3, 1)]))
            .expect("a continuation");
        let fence = |f: &Flush, p: i32| {
            let x = f.fences.iter().find(|x| x.partition == p).unwrap();
            (x.expected, x.next)
        };
        assert_eq!(fence(&a, 0), (Some(0), 20));
        assert_eq!(fence(&a, 1), (Some(5), 7));
        assert_eq!(fence(&a, 2), (Some(0), 4));
        assert_eq!(a.batch.spans[&0].last, 19);
        // A gap, another assignment, or another topic: handed back.
        assert!(a.coalesce(flush("t", &[(0, 21, 22, 1)])).is_err());
        assert!(a.coalesce(flush("t", &[(0, 20, 22, 2)])).is_err());
        assert!(a.coalesce(flush("u", &[(0, 20, 22, 1)])).is_err());
        assert_eq!(fence(&a, 0), (Some(0), 20));
    }

    /// A flush of one partition whose entries hold one Level1 row each,
    /// with sequence numbers `offsets`.
    fn flush_of_rows(offsets: std::ops::Range<i64>) -> Flush {
        use crate::message::SourceMessage;
        use crate::pipeline::batch::{Entry, Span};
        use crate::pipeline::copy_format::RowBuffer;
        let mut f = flush("t", &[(0, offsets.start, offsets.end - 1, 1)]);
        let mut rows = RowBuffer::default();
        for offset in offsets {
            rows.push(&crate::pipeline::copy_format::test_quote(
                offset, offset, "src",
            ));
            f.batch.entries.push(Entry {
                message: SourceMessage::new(
                    f.batch.topic.clone(),
                    0,
                    offset,
                    None,
                    Some(&[b'x'; 10]),
                    crate::message::NO_HEADERS,
                ),
                outcome: Outcome::Rows(1),
            });
            f.batch.rows += 1;
            f.batch.bytes += 10;
        }
        f.batch.encoded.push(rows.freeze());
        f.batch.spans.insert(
            0,
            Span {
                first: f.fences[0].expected.unwrap_or(0),
                last: f.fences[0].next - 1,
                last_timestamp_ms: None,
            },
        );
        f
    }

    #[test]
    fn joined_batches_are_one_copy_of_every_row_in_order() {
        let mut joined = flush_of_rows(0..2);
        joined
            .coalesce(flush_of_rows(2..5))
            .expect("a continuation");
        // Not a continuation: handed back, nothing added.
        assert!(joined.coalesce(flush_of_rows(7..8)).is_err());
        let parts = &joined.batch.encoded;
        assert_eq!(
            parts.iter().map(EncodedRows::len).collect::<Vec<_>>(),
            [2, 3]
        );
        let whole = flush_of_rows(0..5);
        assert_eq!(
            stream_all(parts).concat(),
            stream_all(&whole.batch.encoded).concat()
        );
        assert!(joined.has_room(6, 1000));
        assert!(!joined.has_room(5, 1000));
        assert!(!joined.has_room(6, 50));
    }

    #[test]
    fn the_careful_path_keeps_the_later_row_of_a_key_and_skips_refused_entries() {
        let mut flush = flush_of_rows(0..4);
        // Entry 3 repeats the key of entry 1 (same time and sequence).
        let mut again = crate::pipeline::copy_format::RowBuffer::default();
        again.push(&crate::pipeline::copy_format::test_quote(1, 1, "later"));
        let mut rows: Vec<&[u8]> = flush.batch.encoded[0].rows().take(3).collect();
        rows.extend(again.rows());
        flush.batch.encoded = vec![EncodedRows::from_rows(rows)];
        let (owners, rows) = rows_to_write(
            &flush.batch,
            &BTreeMap::new(),
            &crate::pipeline::copy_format::test_quote_key(),
        );
        assert_eq!(owners, [0, 2, 3]);
        assert_eq!(rows[2], again.rows().next().unwrap());
        let refused = BTreeMap::from([(2, "refused".to_owned())]);
        let (owners, _) = rows_to_write(
            &flush.batch,
            &refused,
            &crate::pipeline::copy_format::test_quote_key(),
        );
        assert_eq!(owners, [0, 3]);
        // Partitions fenced off take their rows with them.
        flush.batch.remove_partitions(&[0]);
        assert_eq!(
            (flush.batch.rows, flush.batch.encoded_rows().count()),
            (0, 0)
        );
    }

    #[test]
    fn a_split_flush_is_two_halves_whose_fences_meet() {
        let mut joined = flush_of_rows(0..2);
        joined
            .coalesce(flush_of_rows(2..5))
            .expect("a continuation");
        let (mut first, mut second) = joined.split();
        assert_eq!(
            (first.batch.entries.len(), second.batch.entries.len()),
            (2, 3)
        );
        assert_eq!((first.batch.rows, second.batch.rows), (2, 3));
        assert_eq!(first.fences[0].expected, Some(0));
        assert_eq!(first.fences[0].next, 2);
        assert_eq!(second.fences[0].expected, Some(2));
        assert_eq!(second.fences[0].next, 5);
        assert_eq!(second.batch.spans[&0].first, 2);
        // The two halves' rows are the whole's, in order.
        first.batch.seal();
        second.batch.seal();
        let halves = [
            stream_all(&first.batch.encoded),
            stream_all(&second.batch.encoded),
        ];
        let rows = |s: &[bytes::Bytes]| s[1..s.len() - 1].concat();
        assert_eq!(
            [rows(&halves[0]), rows(&halves[1])].concat(),
            rows(&stream_all(&flush_of_rows(0..5).batch.encoded))
        );
        // A partition only in the second half keeps its fence there only.
        let mut two = flush_of_rows(0..1);
        let mut other = flush_of_rows(0..1);
        for e in &mut other.batch.entries {
            e.message.partition = 1;
        }
        other.fences[0].partition = 1;
        other.batch.spans = [(1, other.batch.spans[&0])].into();
        two.coalesce(other).expect("another partition joins");
        let (a, b) = two.split();
        assert_eq!(
            a.fences.iter().map(|f| f.partition).collect::<Vec<_>>(),
            [0]
        );
        assert_eq!(
            b.fences.iter().map(|f| f.partition).collect::<Vec<_>>(),
            [1]
        );
    }
}

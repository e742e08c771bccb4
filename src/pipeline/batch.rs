//! Batch stage: decoded messages → one batch per topic, flushed on rows,
//! bytes or age, whichever comes first.
//!
//! A table may have several writers (`tables.<name>.writers`); a partition always
//! goes to the same one, so a topic has a batch open per writer.
//!
//! The age (linger) adapts: a table's batches wait about twice as long as
//! its recent transactions took (times the topics sharing its writer), within
//! the configured `[min_linger, linger]`. A fast database gets small batches
//! at once (low latency); a slow one, or a busy writer, larger and fewer (the
//! writer keeps up). With a fixed linger the configured one is used as is.
//!
//! Pure: the caller passes the current instant and the observed write times in. A batch keeps every message
//! it covers, the invalid ones too, because a dead letter repeats the original
//! bytes and the stored offset must move past it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::TableId;
use crate::catalog::spec::BatchSpec;
use crate::message::SourceMessage;
use crate::pipeline::copy_format::{EncodedRows, RowBuffer};
use crate::pipeline::outcome::Outcome;

/// When a topic's batch is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Flush once the batch holds this many rows.
    pub max_rows: usize,
    /// Flush once the messages of the batch hold this many bytes.
    pub max_bytes: usize,
    /// Flush once the oldest message of the batch has waited this long; the
    /// upper bound of an adaptive linger.
    pub linger: Duration,
    /// The lower bound of an adaptive linger.
    pub min_linger: Duration,
}

impl From<&BatchSpec> for Limits {
    fn from(b: &BatchSpec) -> Limits {
        Limits {
            max_rows: b.max_rows,
            max_bytes: b.max_bytes,
            linger: Duration::from_millis(b.linger_ms),
            min_linger: Duration::from_millis(b.min_linger_ms),
        }
    }
}

/// The share of its time a table's writer is meant to spend in transactions:
/// the rest is headroom for bursts. Adaptive lingers aim at it.
const TARGET_BUSY: f64 = 0.5;
/// The weight of the newest write time in the running average.
const WRITE_TIME_WEIGHT: f64 = 0.2;
/// Longer write times (an outage, retries) count as this long, so that the
/// average comes back within a few transactions once the database does.
const WRITE_TIME_CAP: Duration = Duration::from_secs(10);

/// One message and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub message: SourceMessage,
    pub outcome: Outcome,
}

/// The offsets of one partition that a batch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: i64,
    pub last: i64,
    /// The Kafka timestamp of the message at `last`: once committed, how
    /// far behind the partition's lag in seconds is measured from.
    pub last_timestamp_ms: Option<i64>,
}

/// Messages of one topic, ready to be written together.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub topic: Arc<str>,
    pub table: TableId,
    /// Which of its table's writers takes it: every partition of the batch
    /// belongs to that one.
    pub writer: usize,
    pub entries: Vec<Entry>,
    /// Per partition, the first and last offset in this batch.
    pub spans: BTreeMap<i32, Span>,
    pub rows: usize,
    pub bytes: usize,
    /// When the first message entered the batch.
    pub opened: Instant,
    /// The rows, encoded for COPY, in entry order: runs sealed so far (a
    /// batch that joined others holds one per batch) ...
    pub encoded: Vec<EncodedRows>,
    /// ... then the rows added since.
    building: RowBuffer,
}

impl Batch {
    /// An empty batch opened now.
    #[cfg(test)]
    pub fn empty(topic: Arc<str>, table: TableId) -> Batch {
        Batch::new(topic, table, 0, Instant::now())
    }

    fn new(topic: Arc<str>, table: TableId, writer: usize, now: Instant) -> Batch {
        Batch {
            topic,
            table,
            writer,
            entries: Vec::new(),
            spans: BTreeMap::new(),
            rows: 0,
            bytes: 0,
            opened: now,
            encoded: Vec::new(),
            building: RowBuffer::default(),
        }
    }

    /// Adds a message and the rows it validated into (taken from `rows`).
    fn push(&mut self, entry: Entry, rows: &mut RowBuffer) {
        self.building.append(rows);
        cover(&mut self.spans, &entry.message);
        if let Outcome::Rows(n) = entry.outcome {
            self.rows += n;
        }
        self.bytes += entry.message.size();
        self.entries.push(entry);
    }

    fn is_full(&self, limits: &Limits) -> bool {
        self.rows >= limits.max_rows || self.bytes >= limits.max_bytes
    }

    /// Appends a later batch of the same topic (its offsets follow this
    /// one's in every partition). The writer uses it to coalesce batches
    /// that queued up behind a COPY.
    pub fn append(&mut self, mut later: Batch) {
        debug_assert_eq!(self.topic, later.topic);
        debug_assert_eq!(self.writer, later.writer);
        self.seal();
        later.seal();
        self.encoded.append(&mut later.encoded);
        for (partition, span) in later.spans {
            self.spans
                .entry(partition)
                .and_modify(|s| {
                    s.first = s.first.min(span.first);
                    if span.last > s.last {
                        s.last = span.last;
                        s.last_timestamp_ms = span.last_timestamp_ms;
                    }
                })
                .or_insert(span);
        }
        self.rows += later.rows;
        self.bytes += later.bytes;
        self.opened = self.opened.min(later.opened);
        self.entries.extend(later.entries);
    }

    /// Ends the run of rows being added: every row is in `encoded` after.
    pub fn seal(&mut self) {
        if !self.building.is_empty() {
            self.encoded
                .push(std::mem::take(&mut self.building).freeze());
        }
    }

    /// Each row's encoding, in entry order.
    pub fn encoded_rows(&self) -> impl Iterator<Item = &[u8]> {
        self.encoded
            .iter()
            .flat_map(EncodedRows::rows)
            .chain(self.building.rows())
    }

    /// The last row encoded, without walking the others.
    pub fn last_row(&self) -> Option<&[u8]> {
        self.building
            .last_row()
            .or_else(|| self.encoded.iter().rev().find_map(EncodedRows::last_row))
    }

    /// Per row, the index of the entry it came from, in order.
    pub fn row_owners(&self) -> impl Iterator<Item = usize> {
        self.entries
            .iter()
            .enumerate()
            .flat_map(|(i, e)| match e.outcome {
                Outcome::Rows(n) => std::iter::repeat_n(i, n),
                Outcome::DeadLetter(_) => std::iter::repeat_n(i, 0),
            })
    }

    /// Removes every message of the given partitions (revoked, or taken by
    /// another instance), and its rows.
    pub fn remove_partitions(&mut self, partitions: &[i32]) {
        let dropped = |e: &Entry| partitions.contains(&e.message.partition);
        let mut kept = RowBuffer::default();
        for (owner, row) in self.row_owners().zip(self.encoded_rows()) {
            if !dropped(&self.entries[owner]) {
                kept.push_encoded(row);
            }
        }
        self.encoded.clear();
        self.building = kept;
        self.entries.retain(|e| !dropped(e));
        for p in partitions {
            self.spans.remove(p);
        }
        self.rows = self.building.len();
        self.bytes = self.entries.iter().map(|e| e.message.size()).sum();
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Splits off the entries from `at` on, with their rows, into a batch
    /// of their own (for a batch PostgreSQL finds too big for one statement).
    pub fn split_off(&mut self, at: usize) -> Batch {
        let mut later = Batch::new(self.topic.clone(), self.table, self.writer, self.opened);
        let mut kept = RowBuffer::default();
        for (owner, row) in self.row_owners().zip(self.encoded_rows()) {
            if owner < at {
                kept.push_encoded(row);
            } else {
                later.building.push_encoded(row);
            }
        }
        self.encoded.clear();
        self.building = kept;
        later.entries = self.entries.split_off(at.min(self.entries.len()));
        self.recount();
        later.recount();
        later
    }

    /// Recomputes spans, rows and bytes from the entries and rows held.
    fn recount(&mut self) {
        self.spans.clear();
        for e in &self.entries {
            cover(&mut self.spans, &e.message);
        }
        self.rows = self.encoded.iter().map(EncodedRows::len).sum::<usize>() + self.building.len();
        self.bytes = self.entries.iter().map(|e| e.message.size()).sum();
    }
}

/// Widens the span of a message's partition to take the message in.
fn cover(spans: &mut BTreeMap<i32, Span>, m: &SourceMessage) {
    spans
        .entry(m.partition)
        .and_modify(|s| {
            s.first = s.first.min(m.offset);
            if m.offset > s.last {
                s.last = m.offset;
                s.last_timestamp_ms = m.timestamp_ms;
            }
        })
        .or_insert(Span {
            first: m.offset,
            last: m.offset,
            last_timestamp_ms: m.timestamp_ms,
        });
}

/// An open batch and when it is due.
#[derive(Debug)]
struct Open {
    batch: Batch,
    limits: Limits,
    deadline: Instant,
}

/// The open batches, one per topic and writer.
#[derive(Debug, Default)]
pub struct Batcher {
    open: HashMap<(Arc<str>, usize), Open>,
    /// Whether lingers adapt to the write times (else the configured linger).
    adaptive: bool,
    /// How many writers each table has (by table id): which one a
    /// partition's batches go to.
    writers: Vec<usize>,
    /// Per table, the running average of its transactions' durations, in
    /// seconds: what an adaptive linger follows.
    write_secs: HashMap<TableId, f64>,
    /// Per topic and writer, the messages and row bytes of its last batch:
    /// a new batch is sized from the start (its buffers not grown and
    /// copied on the way, every batch again).
    last_size: HashMap<(Arc<str>, usize), (usize, usize)>,
}

impl Batcher {
    pub fn new(adaptive: bool, writers: Vec<usize>) -> Batcher {
        Batcher {
            adaptive,
            writers,
            ..Batcher::default()
        }
    }

    /// The writer of a table that takes a partition's batches.
    pub fn writer(&self, table: TableId, partition: i32) -> usize {
        let count = self.writers.get(table.index()).copied().unwrap_or(1);
        partition.unsigned_abs() as usize % count.max(1)
    }

    /// One of a table's writers finished a transaction that took `took`.
    pub fn observe_write(&mut self, table: TableId, took: Duration) {
        let took = took.min(WRITE_TIME_CAP).as_secs_f64();
        let mean = self.write_secs.entry(table).or_insert(took);
        *mean += WRITE_TIME_WEIGHT * (took - *mean);
    }

    /// The linger of a batch of this table for this writer opened now:
    /// fixed, or long enough that the writer is busy about `TARGET_BUSY` of
    /// the time. The topics with a batch open for the writer share it, so
    /// each waits for all of them.
    pub fn linger(&self, table: TableId, writer: usize, limits: &Limits) -> Duration {
        if !self.adaptive {
            return limits.linger;
        }
        let sharing = 1 + self
            .open
            .values()
            .filter(|o| o.batch.table == table && o.batch.writer == writer)
            .count();
        let write = self.write_secs.get(&table).copied().unwrap_or(0.0);
        let linger = Duration::from_secs_f64(write * sharing as f64 / TARGET_BUSY);
        linger
            .min(limits.linger)
            .max(limits.min_linger.min(limits.linger))
    }

    /// Adds a message, and the rows it validated into (taken from `rows`),
    /// to its topic's batch for its partition's writer; returns the batch if
    /// it is now full.
    pub fn push(
        &mut self,
        table: TableId,
        entry: Entry,
        rows: &mut RowBuffer,
        limits: Limits,
        now: Instant,
    ) -> Option<Batch> {
        let writer = self.writer(table, entry.message.partition);
        let key = (entry.message.topic.clone(), writer);
        if let Some(open) = self.open.get_mut(&key) {
            open.batch.push(entry, rows);
            return if open.batch.is_full(&open.limits) {
                self.close(&key)
            } else {
                None
            };
        }
        // A new batch: its deadline is set now, from the current linger.
        let mut batch = Batch::new(key.0.clone(), table, writer, now);
        if let Some(&(messages, bytes)) = self.last_size.get(&key) {
            batch.entries.reserve(messages);
            batch.building.reserve(bytes.min(limits.max_bytes));
        }
        batch.push(entry, rows);
        if batch.is_full(&limits) {
            return Some(batch);
        }
        let deadline = now + self.linger(table, writer, &limits);
        self.open.insert(
            key,
            Open {
                batch,
                limits,
                deadline,
            },
        );
        None
    }

    /// The earliest instant at which an open batch reaches its linger.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|o| o.deadline).min()
    }

    /// Takes the batches whose linger has passed.
    pub fn take_due(&mut self, now: Instant) -> Vec<Batch> {
        let due: Vec<(Arc<str>, usize)> = self
            .open
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(key, _)| key.clone())
            .collect();
        due.iter().filter_map(|key| self.close(key)).collect()
    }

    /// Takes an open batch, noting its size for the next one.
    fn close(&mut self, key: &(Arc<str>, usize)) -> Option<Batch> {
        let batch = self.open.remove(key)?.batch;
        self.last_size
            .insert(key.clone(), (batch.entries.len(), batch.building.bytes()));
        Some(batch)
    }

    /// Takes every open batch (at shutdown).
    pub fn take_all(&mut self) -> Vec<Batch> {
        self.open.drain().map(|(_, o)| o.batch).collect()
    }

    /// Drops what is buffered for these partitions of a topic.
    pub fn drop_partitions(&mut self, topic: &str, partitions: &[i32]) {
        self.open.retain(|(t, _), open| {
            if &**t == topic {
                open.batch.remove_partitions(partitions);
            }
            !open.batch.is_empty()
        });
    }

    /// Rows buffered in all open batches.
    pub fn buffered_rows(&self) -> usize {
        self.open.values().map(|o| o.batch.rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::outcome::{RejectClass, Rejection};

    fn message(topic: &Arc<str>, partition: i32, offset: i64, len: usize) -> SourceMessage {
        let mut m = SourceMessage::new(
            topic.clone(),
            partition,
            offset,
            None,
            Some(&vec![b'x'; len]),
            crate::message::NO_HEADERS,
        );
        m.timestamp_ms = Some(1_000 + offset);
        m
    }

    fn rows(n: usize) -> Outcome {
        Outcome::Rows(n)
    }

    /// The rows an entry of `rows(n)` validated into.
    fn quotes(n: usize) -> RowBuffer {
        let mut buffer = RowBuffer::default();
        for i in 0..n {
            buffer.push(&crate::pipeline::copy_format::test_quote(1, i as i64, "s"));
        }
        buffer
    }

    const LIMITS: Limits = Limits {
        max_rows: 3,
        max_bytes: 1000,
        linger: Duration::from_millis(10),
        min_linger: Duration::from_millis(1),
    };

    #[test]
    fn flushes_on_rows() {
        let t: Arc<str> = "crypto-level1".into();
        let mut b = Batcher::new(false, vec![1; 4]);
        let now = Instant::now();
        for offset in 0..2 {
            let e = Entry {
                message: message(&t, 0, offset, 1),
                outcome: rows(1),
            };
            assert!(b.push(TableId(3), e, &mut quotes(1), LIMITS, now).is_none());
        }
        // A dead letter adds no row.
        let e = Entry {
            message: message(&t, 1, 7, 1),
            outcome: Outcome::DeadLetter(Rejection::new(RejectClass::Decode, "bad")),
        };
        assert!(
            b.push(TableId(3), e, &mut RowBuffer::default(), LIMITS, now)
                .is_none()
        );
        let e = Entry {
            message: message(&t, 0, 2, 1),
            outcome: rows(1),
        };
        let batch = b
            .push(TableId(3), e, &mut quotes(1), LIMITS, now)
            .expect("full at 3 rows");
        assert_eq!(batch.rows, 3);
        assert_eq!(batch.encoded_rows().count(), 3);
        assert_eq!(batch.row_owners().collect::<Vec<_>>(), [0, 1, 3]);
        let span = |first, last| Span {
            first,
            last,
            last_timestamp_ms: Some(1_000 + last),
        };
        assert_eq!(batch.spans[&0], span(0, 2));
        assert_eq!(batch.spans[&1], span(7, 7));
        assert_eq!(b.buffered_rows(), 0);
    }

    #[test]
    fn flushes_on_bytes_and_on_age() {
        let t: Arc<str> = "crypto-prices".into();
        let mut b = Batcher::new(false, vec![1; 4]);
        let now = Instant::now();
        let e = Entry {
            message: message(&t, 0, 0, 2000),
            outcome: rows(1),
        };
        assert!(
            b.push(TableId(0), e, &mut quotes(1), LIMITS, now).is_some(),
            "over max_bytes"
        );

        let e = Entry {
            message: message(&t, 0, 1, 1),
            outcome: rows(1),
        };
        assert!(b.push(TableId(0), e, &mut quotes(1), LIMITS, now).is_none());
        assert_eq!(b.next_deadline(), Some(now + LIMITS.linger));
        assert!(b.take_due(now + Duration::from_millis(9)).is_empty());
        let due = b.take_due(now + LIMITS.linger);
        assert_eq!(due.len(), 1);
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn batches_are_per_topic_and_partitions_can_be_dropped() {
        let (a, c): (Arc<str>, Arc<str>) = ("crypto-prices".into(), "crypto-prices-binance".into());
        let mut b = Batcher::new(false, vec![1; 4]);
        let now = Instant::now();
        b.push(
            TableId(0),
            Entry {
                message: message(&a, 0, 0, 1),
                outcome: rows(1),
            },
            &mut quotes(1),
            LIMITS,
            now,
        );
        b.push(
            TableId(0),
            Entry {
                message: message(&a, 1, 0, 1),
                outcome: rows(1),
            },
            &mut quotes(1),
            LIMITS,
            now,
        );
        b.push(
            TableId(0),
            Entry {
                message: message(&c, 0, 0, 1),
                outcome: rows(1),
            },
            &mut quotes(1),
            LIMITS,
            now,
        );
        b.drop_partitions("crypto-prices", &[1]);
        let mut all = b.take_all();
        all.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].rows, 1);
        assert_eq!(all[0].spans.keys().copied().collect::<Vec<_>>(), [0]);
        // The dropped message's rows went with it.
        assert_eq!(all[0].encoded_rows().count(), 1);
        assert_eq!(all[1].encoded_rows().count(), 1);
    }

    #[test]
    fn a_table_with_two_writers_has_a_batch_per_writer_and_a_partition_keeps_its_writer() {
        let t: Arc<str> = "crypto-prices".into();
        let mut b = Batcher::new(true, vec![2, 1, 1, 1]);
        let now = Instant::now();
        let push = |b: &mut Batcher, partition, offset| {
            b.push(
                TableId(0),
                Entry {
                    message: message(&t, partition, offset, 1),
                    outcome: rows(1),
                },
                &mut quotes(1),
                LIMITS,
                now,
            )
        };
        assert!(push(&mut b, 0, 0).is_none());
        assert!(push(&mut b, 1, 0).is_none());
        // Partition 2 joins partition 0's batch: it fills at 3 rows while
        // the other writer's batch still holds one.
        assert!(push(&mut b, 2, 0).is_none());
        let full = push(&mut b, 0, 1).expect("writer 0's batch is full");
        assert_eq!(full.writer, 0);
        assert_eq!(full.spans.keys().copied().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(b.buffered_rows(), 1);
        assert_eq!(b.writer(TableId(0), 3), 1);
        // Other tables keep one writer.
        assert_eq!(b.writer(TableId(3), 3), 0);

        // Each writer's lingers count only the batches waiting for it:
        // writer 0 has none open (twice 4 ms), writer 1 one (twice that,
        // capped at the 10 ms linger).
        b.observe_write(TableId(0), Duration::from_millis(4));
        let linger = |b: &Batcher, w| b.linger(TableId(0), w, &LIMITS);
        assert_eq!(linger(&b, 0), Duration::from_millis(8));
        assert_eq!(linger(&b, 1), Duration::from_millis(10));

        // Dropping a partition reaches the batch of its writer.
        assert!(push(&mut b, 3, 0).is_none());
        b.drop_partitions("crypto-prices", &[1]);
        let all = b.take_all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].writer, 1);
        assert_eq!(all[0].spans.keys().copied().collect::<Vec<_>>(), [3]);
        assert_eq!(all[0].encoded_rows().count(), 1);
    }

    #[test]
    fn adaptive_linger_follows_write_times_within_bounds() {
        let limits = Limits {
            max_rows: 1000,
            max_bytes: 1 << 20,
            linger: Duration::from_millis(50),
            min_linger: Duration::from_millis(1),
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut b = Batcher::new(true, vec![1; 4]);
        // Nothing written yet: as soon as allowed.
        assert_eq!(b.linger(TableId(0), 0, &limits), limits.min_linger);
        // Writes of 4 ms: batches wait twice that, the writer half busy.
        b.observe_write(TableId(0), Duration::from_millis(4));
        assert!((ms(b.linger(TableId(0), 0, &limits)) - 8.0).abs() < 0.01);
        // Another table's writes do not count.
        assert_eq!(b.linger(TableId(3), 0, &limits), limits.min_linger);
        // Slower writes lengthen it, up to the bound.
        for _ in 0..50 {
            b.observe_write(TableId(0), Duration::from_millis(20));
        }
        assert!((ms(b.linger(TableId(0), 0, &limits)) - 40.0).abs() < 0.1);
        b.observe_write(TableId(0), Duration::from_secs(3600));
        assert_eq!(b.linger(TableId(0), 0, &limits), limits.linger);
        // An outage counts as 10 s at most: the average comes back within
        // a few dozen transactions.
        for _ in 0..40 {
            b.observe_write(TableId(0), Duration::from_millis(2));
        }
        assert!(ms(b.linger(TableId(0), 0, &limits)) < 5.0);

        // Two topics of a table with batches open share its writer: the
        // second waits for both.
        let (p, q): (Arc<str>, Arc<str>) = ("crypto-prices".into(), "crypto-prices-x".into());
        let now = Instant::now();
        let entry = |topic: &Arc<str>| Entry {
            message: message(topic, 0, 0, 1),
            outcome: rows(1),
        };
        let one = b.linger(TableId(0), 0, &limits);
        b.push(TableId(0), entry(&p), &mut quotes(1), limits, now);
        assert_eq!(b.next_deadline(), Some(now + one));
        b.push(TableId(0), entry(&q), &mut quotes(1), limits, now);
        let two = b.linger(TableId(0), 0, &limits);
        assert!(two > one);

        // Fixed: the configured linger, whatever the write times.
        let mut fixed = Batcher::new(false, vec![1; 4]);
        fixed.observe_write(TableId(0), Duration::from_millis(4));
        assert_eq!(fixed.linger(TableId(0), 0, &limits), limits.linger);
    }
}

//! Batch stage: decoded messages → one batch per topic, flushed on rows,
//! bytes or age, whichever comes first.
//!
//! Pure: the caller passes the current instant in. A batch keeps every message
//! it covers, the invalid ones too, because a dead letter repeats the original
//! bytes and the stored offset must move past it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::message::SourceMessage;
use crate::record::{DataType, Row};

/// When a topic's batch is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Flush once the batch holds this many rows.
    pub max_rows: usize,
    /// Flush once the messages of the batch hold this many bytes.
    pub max_bytes: usize,
    /// Flush once the oldest message of the batch has waited this long.
    pub linger: Duration,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The message decoded and validated into these rows (an array may hold several, or none).
    Rows(Vec<Row>),
    /// The message goes to the dead-letter topic with this reason.
    DeadLetter(String),
}

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
}

/// Messages of one topic, ready to be written together.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub topic: Arc<str>,
    pub data_type: DataType,
    pub entries: Vec<Entry>,
    /// Per partition, the first and last offset in this batch.
    pub spans: BTreeMap<i32, Span>,
    pub rows: usize,
    pub bytes: usize,
    /// When the first message entered the batch.
    pub opened: Instant,
}

impl Batch {
    /// An empty batch opened now.
    pub fn empty(topic: Arc<str>, data_type: DataType) -> Batch {
        Batch::new(topic, data_type, Instant::now())
    }

    fn new(topic: Arc<str>, data_type: DataType, now: Instant) -> Batch {
        Batch {
            topic,
            data_type,
            entries: Vec::new(),
            spans: BTreeMap::new(),
            rows: 0,
            bytes: 0,
            opened: now,
        }
    }

    fn push(&mut self, entry: Entry) {
        let m = &entry.message;
        self.spans
            .entry(m.partition)
            .and_modify(|s| {
                s.first = s.first.min(m.offset);
                s.last = s.last.max(m.offset);
            })
            .or_insert(Span {
                first: m.offset,
                last: m.offset,
            });
        if let Outcome::Rows(rows) = &entry.outcome {
            self.rows += rows.len();
        }
        self.bytes += m.size();
        self.entries.push(entry);
    }

    fn is_full(&self, limits: &Limits) -> bool {
        self.rows >= limits.max_rows || self.bytes >= limits.max_bytes
    }

    /// Appends a later batch of the same topic (its offsets follow this
    /// one's in every partition). The writer uses it to coalesce batches
    /// that queued up behind a COPY.
    pub fn append(&mut self, later: Batch) {
        debug_assert_eq!(self.topic, later.topic);
        for (partition, span) in later.spans {
            self.spans
                .entry(partition)
                .and_modify(|s| {
                    s.first = s.first.min(span.first);
                    s.last = s.last.max(span.last);
                })
                .or_insert(span);
        }
        self.rows += later.rows;
        self.bytes += later.bytes;
        self.opened = self.opened.min(later.opened);
        self.entries.extend(later.entries);
    }

    /// Removes every message of the given partitions (revoked, or taken by another instance).
    pub fn remove_partitions(&mut self, partitions: &[i32]) {
        self.entries
            .retain(|e| !partitions.contains(&e.message.partition));
        for p in partitions {
            self.spans.remove(p);
        }
        self.rows = self
            .entries
            .iter()
            .map(|e| match &e.outcome {
                Outcome::Rows(rows) => rows.len(),
                Outcome::DeadLetter(_) => 0,
            })
            .sum();
        self.bytes = self.entries.iter().map(|e| e.message.size()).sum();
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// The open batches, one per topic.
#[derive(Debug, Default)]
pub struct Batcher {
    open: HashMap<Arc<str>, (Batch, Limits)>,
}

impl Batcher {
    pub fn new() -> Batcher {
        Batcher::default()
    }

    /// Adds a message to its topic's batch; returns the batch if it is now full.
    pub fn push(
        &mut self,
        data_type: DataType,
        entry: Entry,
        limits: Limits,
        now: Instant,
    ) -> Option<Batch> {
        let topic = entry.message.topic.clone();
        let (batch, _) = self
            .open
            .entry(topic.clone())
            .or_insert_with(|| (Batch::new(topic.clone(), data_type, now), limits));
        batch.push(entry);
        if batch.is_full(&limits) {
            self.open.remove(&topic).map(|(b, _)| b)
        } else {
            None
        }
    }

    /// The earliest instant at which an open batch reaches its linger.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|(b, l)| b.opened + l.linger).min()
    }

    /// Takes the batches whose linger has passed.
    pub fn take_due(&mut self, now: Instant) -> Vec<Batch> {
        let due: Vec<Arc<str>> = self
            .open
            .iter()
            .filter(|(_, (b, l))| b.opened + l.linger <= now)
            .map(|(t, _)| t.clone())
            .collect();
        due.iter()
            .filter_map(|t| self.open.remove(t))
            .map(|(b, _)| b)
            .collect()
    }

    /// Takes every open batch (at shutdown).
    pub fn take_all(&mut self) -> Vec<Batch> {
        self.open.drain().map(|(_, (b, _))| b).collect()
    }

    /// Drops what is buffered for these partitions of a topic.
    pub fn drop_partitions(&mut self, topic: &str, partitions: &[i32]) {
        if let Some((batch, _)) = self.open.get_mut(topic) {
            batch.remove_partitions(partitions);
            if batch.is_empty() {
                self.open.remove(topic);
            }
        }
    }

    /// Rows buffered in all open batches.
    pub fn buffered_rows(&self) -> usize {
        self.open.values().map(|(b, _)| b.rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &Arc<str>, partition: i32, offset: i64, len: usize) -> SourceMessage {
        SourceMessage {
            topic: topic.clone(),
            partition,
            offset,
            key: None,
            value: Some(vec![b'x'; len]),
            headers: vec![],
            timestamp_ms: None,
        }
    }

    fn rows(n: usize) -> Outcome {
        use crate::decimal::Decimal;
        use crate::record::{Level1Row, Timestamp};
        let row = Row::Level1(Level1Row {
            time: Timestamp(1),
            exchange_id: "e".into(),
            symbol: "s".into(),
            best_bid: Decimal::from_i64(1),
            best_ask: Decimal::from_i64(1),
            bid_size: None,
            ask_size: None,
            sequence: 0,
            source: "s".into(),
        });
        Outcome::Rows(vec![row; n])
    }

    const LIMITS: Limits = Limits {
        max_rows: 3,
        max_bytes: 1000,
        linger: Duration::from_millis(10),
    };

    #[test]
    fn flushes_on_rows() {
        let t: Arc<str> = "crypto-level1".into();
        let mut b = Batcher::new();
        let now = Instant::now();
        for offset in 0..2 {
            let e = Entry {
                message: message(&t, 0, offset, 1),
                outcome: rows(1),
            };
            assert!(b.push(DataType::Level1, e, LIMITS, now).is_none());
        }
        // A dead letter adds no row.
        let e = Entry {
            message: message(&t, 1, 7, 1),
            outcome: Outcome::DeadLetter("bad".into()),
        };
        assert!(b.push(DataType::Level1, e, LIMITS, now).is_none());
        let e = Entry {
            message: message(&t, 0, 2, 1),
            outcome: rows(1),
        };
        let batch = b
            .push(DataType::Level1, e, LIMITS, now)
            .expect("full at 3 rows");
        assert_eq!(batch.rows, 3);
        assert_eq!(batch.spans[&0], Span { first: 0, last: 2 });
        assert_eq!(batch.spans[&1], Span { first: 7, last: 7 });
        assert_eq!(b.buffered_rows(), 0);
    }

    #[test]
    fn flushes_on_bytes_and_on_age() {
        let t: Arc<str> = "crypto-prices".into();
        let mut b = Batcher::new();
        let now = Instant::now();
        let e = Entry {
            message: message(&t, 0, 0, 2000),
            outcome: rows(1),
        };
        assert!(
            b.push(DataType::Price, e, LIMITS, now).is_some(),
            "over max_bytes"
        );

        let e = Entry {
            message: message(&t, 0, 1, 1),
            outcome: rows(1),
        };
        assert!(b.push(DataType::Price, e, LIMITS, now).is_none());
        assert_eq!(b.next_deadline(), Some(now + LIMITS.linger));
        assert!(b.take_due(now + Duration::from_millis(9)).is_empty());
        let due = b.take_due(now + LIMITS.linger);
        assert_eq!(due.len(), 1);
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn batches_are_per_topic_and_partitions_can_be_dropped() {
        let (a, c): (Arc<str>, Arc<str>) = ("crypto-prices".into(), "crypto-prices-binance".into());
        let mut b = Batcher::new();
        let now = Instant::now();
        b.push(
            DataType::Price,
            Entry {
                message: message(&a, 0, 0, 1),
                outcome: rows(1),
            },
            LIMITS,
            now,
        );
        b.push(
            DataType::Price,
            Entry {
                message: message(&a, 1, 0, 1),
                outcome: rows(1),
            },
            LIMITS,
            now,
        );
        b.push(
            DataType::Price,
            Entry {
                message: message(&c, 0, 0, 1),
                outcome: rows(1),
            },
            LIMITS,
            now,
        );
        b.drop_partitions("crypto-prices", &[1]);
        let mut all = b.take_all();
        all.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].rows, 1);
        assert_eq!(all[0].spans.keys().copied().collect::<Vec<_>>(), [0]);
    }
}

//! What a table's writer takes next: while PostgreSQL takes one
//! transaction, the batches that arrive join the next one, so under a
//! backlog transactions grow (up to `batch.max_transaction_rows` and
//! `_bytes`) and with none each batch goes alone as soon as it is due.
//!
//! A batch that does not continue the next transaction (another topic of
//! the table, another assignment of a partition) is carried: it starts the
//! one after, and nothing more is taken until then, so order holds.

use crate::pipeline::write::Flush;

/// The writer's flushes between its queue and PostgreSQL.
#[derive(Debug)]
pub struct Coalescer {
    /// The next transaction, growing while the current one is written.
    next: Option<Flush>,
    /// A flush that could not join `next`: it starts the one after.
    carried: Option<Flush>,
    /// The queue is closed: nothing more arrives.
    closed: bool,
    /// How large `next` may grow: rows, message bytes (0: no joining).
    max_rows: usize,
    max_bytes: usize,
}

impl Coalescer {
    pub fn new(max_rows: usize, max_bytes: usize) -> Coalescer {
        Coalescer {
            next: None,
            carried: None,
            closed: false,
            max_rows,
            max_bytes,
        }
    }

    /// The flush to write now, if one is ready without waiting.
    pub fn take(&mut self) -> Option<Flush> {
        let current = self.next.take().or_else(|| self.carried.take())?;
        // What was carried starts the next transaction.
        self.next = self.carried.take();
        Some(current)
    }

    /// Whether a batch arriving now may be taken in: nothing is carried
    /// and the next transaction has room.
    pub fn wants_more(&self) -> bool {
        !self.closed
            && self.carried.is_none()
            && self
                .next
                .as_ref()
                .is_none_or(|f| f.has_room(self.max_rows, self.max_bytes))
    }

    /// What the queue gave while the current transaction was written: a
    /// flush, or None when it closed.
    pub fn offer(&mut self, flush: Option<Flush>) {
        match (flush, &mut self.next) {
            (None, _) => self.closed = true,
            (Some(flush), None) => self.next = Some(flush),
            (Some(flush), Some(next)) => {
                if let Err(flush) = next.coalesce(flush) {
                    self.carried = Some(*flush);
                }
            }
        }
    }

    /// Whether the queue closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::batch::{Batch, Span};
    use crate::pipeline::write::Fence;
    use std::sync::Arc;

    /// A flush of `topic` partition 0 covering offsets `first..=last`, with
    /// `rows` rows, read under `epoch`.
    fn flush(topic: &str, first: i64, last: i64, rows: usize, epoch: u64) -> Flush {
        let mut batch = Batch::empty(Arc::from(topic), crate::catalog::TableId(3));
        batch.spans.insert(
            0,
            Span {
                first,
                last,
                last_timestamp_ms: None,
            },
        );
        batch.rows = rows;
        Flush {
            batch,
            fences: vec![Fence {
                partition: 0,
                expected: Some(first),
                next: last + 1,
                epoch,
                topic_id: None,
            }],
            held: crate::pipeline::budget::Cost::new(rows, 0),
        }
    }

    fn span(f: &Flush) -> (i64, i64) {
        let s = f.batch.spans[&0];
        (s.first, s.last)
    }

    #[test]
    fn batches_arriving_during_a_write_join_the_next_transaction() {
        let mut c = Coalescer::new(100, 1 << 20);
        assert!(c.take().is_none());
        c.offer(Some(flush("t", 0, 9, 10, 1)));
        let current = c.take().expect("the first goes alone");
        assert_eq!(span(&current), (0, 9));
        // While it is written, two more arrive: one transaction.
        c.offer(Some(flush("t", 10, 19, 10, 1)));
        assert!(c.wants_more());
        c.offer(Some(flush("t", 20, 29, 10, 1)));
        let next = c.take().expect("joined");
        assert_eq!(span(&next), (10, 29));
        assert_eq!((next.batch.rows, next.held.rows), (20, 20));
        assert!(c.take().is_none());
    }

    #[test]
    fn a_full_next_transaction_takes_nothing_more() {
        let mut c = Coalescer::new(15, 1 << 20);
        c.offer(Some(flush("t", 0, 9, 10, 1)));
        assert!(c.wants_more());
        c.offer(Some(flush("t", 10, 19, 10, 1)));
        assert!(!c.wants_more(), "20 rows of 15: full");
        // Joining off: every batch alone.
        let mut alone = Coalescer::new(0, 0);
        alone.offer(Some(flush("t", 0, 9, 10, 1)));
        assert!(!alone.wants_more());
    }

    #[test]
    fn a_batch_that_does_not_continue_is_carried_and_starts_the_one_after() {
        let mut c = Coalescer::new(100, 1 << 20);
        c.offer(Some(flush("t", 0, 9, 10, 1)));
        // Another topic of the table: not a continuation.
        c.offer(Some(flush("u", 0, 4, 5, 1)));
        assert!(!c.wants_more(), "nothing overtakes the carried batch");
        let first = c.take().expect("next");
        assert_eq!(&*first.batch.topic, "t");
        let second = c.take().expect("the carried one");
        assert_eq!(&*second.batch.topic, "u");
        // A new assignment (epoch) of the same partition is carried too.
        c.offer(Some(flush("t", 10, 19, 10, 1)));
        c.offer(Some(flush("t", 20, 29, 10, 2)));
        assert_eq!(span(&c.take().expect("epoch 1")), (10, 19));
        assert_eq!(c.take().expect("epoch 2").fences[0].epoch, 2);
    }

    #[test]
    fn a_closed_queue_is_remembered_and_what_is_held_still_goes() {
        let mut c = Coalescer::new(100, 1 << 20);
        c.offer(Some(flush("t", 0, 9, 10, 1)));
        c.offer(None);
        assert!(c.is_closed());
        assert!(!c.wants_more());
        assert!(c.take().is_some());
        assert!(c.take().is_none());
    }
}

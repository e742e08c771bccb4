//! The row budget of one table: how many rows may be between batching and
//! commit (`batch.max_rows_in_flight`), and the batches waiting for room.
//!
//! Each table has its own, so a table PostgreSQL is slow to take, or
//! refuses, fills only its own: its batches wait here, its partitions are
//! paused (the router asks the consumer), and every other table flows on.
//! The router never waits for room; memory stays bounded by the budgets
//! plus what was already read when a table's partitions paused.

use std::collections::VecDeque;

/// A table's budget and its queue of batches (`T`) waiting for room, in order.
#[derive(Debug)]
pub struct TableBudget<T> {
    limit: usize,
    used: usize,
    /// Batches not yet handed to a writer, in the order they must be
    /// written, each with its rows.
    waiting: VecDeque<(usize, T)>,
    /// Whether the table's partitions are paused.
    paused: bool,
}

/// Whether a table's partitions should be paused or resumed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetching {
    Pause,
    Resume,
}

impl<T> TableBudget<T> {
    pub fn new(limit: usize) -> TableBudget<T> {
        TableBudget {
            limit: limit.max(1),
            used: 0,
            waiting: VecDeque::new(),
            paused: false,
        }
    }

    /// Queues a batch of `rows` rows behind those already waiting.
    pub fn push(&mut self, rows: usize, item: T) {
        self.waiting.push_back((rows, item));
    }

    /// The next waiting batch if it fits now, with the rows of budget it
    /// takes (a batch larger than the whole budget takes all of it, once
    /// nothing else is in flight).
    pub fn admit(&mut self) -> Option<(usize, T)> {
        let &(rows, _) = self.waiting.front()?;
        let take = rows.clamp(1, self.limit);
        if self.used + take > self.limit {
            return None;
        }
        self.used += take;
        self.waiting.pop_front().map(|(_, item)| (take, item))
    }

    /// Puts back a batch `admit` handed out that could not be delivered
    /// (its writer's queue was full): first in line again.
    pub fn put_back(&mut self, taken: usize, item: T) {
        self.used -= taken.min(self.used);
        self.waiting.push_front((taken, item));
    }

    /// A writer committed (or dropped) batches that held `rows` of budget.
    pub fn release(&mut self, rows: usize) {
        self.used -= rows.min(self.used);
    }

    /// Whether the table's partitions should change: paused while batches
    /// wait; resumed once none waits and half the budget is free, so that
    /// fetching does not flap (each pause drops librdkafka's prefetch).
    pub fn fetching(&mut self) -> Option<Fetching> {
        if !self.paused && !self.waiting.is_empty() {
            self.paused = true;
            return Some(Fetching::Pause);
        }
        if self.paused && self.waiting.is_empty() && self.used * 2 <= self.limit {
            self.paused = false;
            return Some(Fetching::Resume);
        }
        None
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether nothing waits and nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.used == 0
    }

    /// The rows in flight and waiting.
    pub fn rows(&self) -> usize {
        self.used + self.waiting.iter().map(|(rows, _)| rows).sum::<usize>()
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_wait_in_order_for_room_and_pause_fetching_meanwhile() {
        let mut b = TableBudget::new(100);
        b.push(60, "a");
        assert_eq!(b.admit(), Some((60, "a")));
        assert_eq!(b.fetching(), None);
        b.push(60, "b");
        b.push(10, "c");
        // "b" does not fit, and "c" may not overtake it.
        assert_eq!(b.admit(), None);
        assert_eq!(b.fetching(), Some(Fetching::Pause));
        assert_eq!(b.fetching(), None, "said once");
        b.release(60);
        assert_eq!(b.admit(), Some((60, "b")));
        assert_eq!(b.admit(), Some((10, "c")));
        // 70 of 100 in flight: nothing waits, but resume waits for half free.
        assert_eq!(b.fetching(), None);
        b.release(60);
        assert_eq!(b.fetching(), Some(Fetching::Resume));
        b.release(10);
        assert!(b.is_idle());
    }

    #[test]
    fn a_batch_over_the_whole_budget_goes_alone() {
        let mut b = TableBudget::new(100);
        b.push(5, 1);
        b.push(500, 2);
        assert_eq!(b.admit(), Some((5, 1)));
        assert_eq!(b.admit(), None);
        b.release(5);
        assert_eq!(b.admit(), Some((100, 2)));
        // An empty batch (all dead letters) still takes a row's worth.
        b.push(0, 3);
        assert_eq!(b.admit(), None);
        b.release(100);
        assert_eq!(b.admit(), Some((1, 3)));
    }

    #[test]
    fn a_batch_put_back_is_first_again_and_gives_its_rows_back() {
        let mut b = TableBudget::new(10);
        b.push(4, "a");
        b.push(4, "b");
        let (taken, a) = b.admit().unwrap();
        b.put_back(taken, a);
        assert_eq!(b.waiting(), 2);
        assert_eq!(b.admit(), Some((4, "a")));
        assert_eq!(b.admit(), Some((4, "b")));
        assert!(!b.is_paused());
    }
}

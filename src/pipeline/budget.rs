//! The budget of one table: how many rows, and how many bytes of
//! messages, may be between batching and commit (`batch.max_rows_in_flight`,
//! `batch.max_bytes_in_flight`), and the batches waiting for room. Rows
//! bound the common case; bytes bound a table of large rows (500 kB
//! documents), which would hold gigabytes within a row budget.
//!
//! Each table has its own, so that memory stays bounded per table. A table
//! out of room first *holds up* the router: it stops reading until a
//! commit of that table frees room, which is ordinary backpressure and
//! costs nothing, since librdkafka's prefetch stays where it is. Only a
//! table that frees no room within [`PAUSE_AFTER`] (refused, locked, or much
//! slower than its input) has its partitions paused, so that the router
//! reads on and every other table flows; they resume once nothing waits
//! and half the budget is free. A pause is kept for that case because it
//! has a price: librdkafka drops the partitions' prefetched messages and
//! fetches them again on resume, and the table's writers run dry
//! meanwhile, so a pause at every fill would leave them idle at every one
//! (the README's Benchmark section has what that costs a drain).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a table out of room may hold up the router before its
/// partitions are paused. Longer than a transaction of a healthy drain
/// takes (the room a commit frees comes sooner), shorter than the consumer
/// thread's own wait for room before it pauses every partition
/// (`consume::PAUSE_AFTER`, 1 s), so that a stuck table is set aside
/// before it stops the others.
pub const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// What a batch takes of a budget: its rows and its messages' bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub rows: usize,
    pub bytes: usize,
}

impl Cost {
    pub fn new(rows: usize, bytes: usize) -> Cost {
        Cost { rows, bytes }
    }

    fn fits_within(self, limit: Cost) -> bool {
        self.rows <= limit.rows && self.bytes <= limit.bytes
    }

    fn saturating_sub(self, other: Cost) -> Cost {
        Cost::new(
            self.rows.saturating_sub(other.rows),
            self.bytes.saturating_sub(other.bytes),
        )
    }
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, other: Cost) -> Cost {
        Cost::new(self.rows + other.rows, self.bytes + other.bytes)
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, other: Cost) {
        *self = *self + other;
    }
}

/// A table's budget and its queue of batches (`T`) waiting for room.
#[derive(Debug)]
pub struct TableBudget<T> {
    limit: Cost,
    used: Cost,
    /// Batches not yet handed to a writer, in the order they must be
    /// written, each with what it costs.
    waiting: VecDeque<(Cost, T)>,
    /// Since when batches have been waiting, while not paused.
    full_since: Option<Instant>,
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
    pub fn new(limit: Cost) -> TableBudget<T> {
        TableBudget {
            limit: Cost::new(limit.rows.max(1), limit.bytes.max(1)),
            used: Cost::default(),
            waiting: VecDeque::new(),
            full_since: None,
            paused: false,
        }
    }

    /// Queues a batch costing `cost` behind those already waiting.
    pub fn push(&mut self, cost: Cost, item: T) {
        self.waiting.push_back((cost, item));
    }

    /// The next waiting batch if it fits now, with the budget it takes (a
    /// batch larger than the whole budget takes all of it, once nothing
    /// else is in flight; an empty one a row's worth).
    pub fn admit(&mut self) -> Option<(Cost, T)> {
        let &(cost, _) = self.waiting.front()?;
        let take = Cost::new(
            cost.rows.clamp(1, self.limit.rows),
            cost.bytes.min(self.limit.bytes),
        );
        if !(self.used + take).fits_within(self.limit) {
            return None;
        }
        self.used += take;
        self.waiting.pop_front().map(|(_, item)| (take, item))
    }

    /// Puts back a batch `admit` handed out that could not be delivered
    /// (its writer's queue was full): first in line again.
    pub fn put_back(&mut self, taken: Cost, item: T) {
        self.used = self.used.saturating_sub(taken);
        self.waiting.push_front((taken, item));
    }

    /// A writer committed (or dropped) batches that held `cost` of budget.
    pub fn release(&mut self, cost: Cost) {
        self.used = self.used.saturating_sub(cost);
    }

    /// Whether the table's partitions should change at `now`: paused once
    /// batches have waited [`PAUSE_AFTER`]; resumed once none waits and
    /// half the budget is free, so that fetching does not flap.
    pub fn fetching(&mut self, now: Instant) -> Option<Fetching> {
        if self.waiting.is_empty() {
            self.full_since = None;
        } else if !self.paused {
            let since = *self.full_since.get_or_insert(now);
            if now.duration_since(since) >= PAUSE_AFTER {
                self.paused = true;
                self.full_since = None;
                return Some(Fetching::Pause);
            }
        }
        if self.paused
            && self.waiting.is_empty()
            && self.used.rows * 2 <= self.limit.rows
            && self.used.bytes * 2 <= self.limit.bytes
        {
            self.paused = false;
            return Some(Fetching::Resume);
        }
        None
    }

    /// Whether the router must wait for this table's room before it reads
    /// on: batches wait and its partitions still fetch.
    pub fn holds_up(&self) -> bool {
        !self.paused && !self.waiting.is_empty()
    }

    /// When the table's partitions are due to pause if no room comes.
    pub fn pause_due(&self) -> Option<Instant> {
        self.full_since
            .filter(|_| self.holds_up())
            .map(|since| since + PAUSE_AFTER)
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether nothing waits and nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.used == Cost::default()
    }

    /// The rows in flight and waiting.
    pub fn rows(&self) -> usize {
        self.used.rows + self.waiting.iter().map(|(c, _)| c.rows).sum::<usize>()
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cost in rows alone.
    fn rows(n: usize) -> Cost {
        Cost::new(n, 0)
    }

    /// A budget of `n` rows and bytes enough.
    fn of_rows(n: usize) -> Cost {
        Cost::new(n, 1 << 40)
    }

    #[test]
    fn batches_wait_in_order_for_room_holding_up_the_router_not_pausing() {
        let t0 = Instant::now();
        let mut b = TableBudget::new(of_rows(100));
        b.push(rows(60), "a");
        assert_eq!(b.admit(), Some((rows(60), "a")));
        assert_eq!(b.fetching(t0), None);
        assert!(!b.holds_up());
        b.push(rows(60), "b");
        b.push(rows(10), "c");
        // "b" does not fit, and "c" may not overtake it: the router waits.
        assert_eq!(b.admit(), None);
        assert_eq!(b.fetching(t0), None, "a commit is due sooner than a pause");
        assert!(b.holds_up());
        assert_eq!(b.pause_due(), Some(t0 + PAUSE_AFTER));
        // The commit comes within the grace: room, and nothing was paused.
        b.release(rows(60));
        assert_eq!(b.admit(), Some((rows(60), "b")));
        assert_eq!(b.admit(), Some((rows(10), "c")));
        assert_eq!(b.fetching(t0 + PAUSE_AFTER / 2), None);
        assert!(!b.holds_up());
        assert_eq!(b.pause_due(), None);
        // Waiting again later starts a new grace.
        b.push(rows(60), "d");
        assert_eq!(b.admit(), None);
        let t1 = t0 + PAUSE_AFTER * 3;
        assert_eq!(b.fetching(t1), None);
        assert_eq!(b.pause_due(), Some(t1 + PAUSE_AFTER));
        assert!(!b.is_paused());
    }

    #[test]
    fn a_table_without_room_for_the_grace_pauses_and_resumes_at_half_free() {
        let t0 = Instant::now();
        let mut b = TableBudget::new(of_rows(100));
        b.push(rows(80), "a");
        assert_eq!(b.admit(), Some((rows(80), "a")));
        b.push(rows(30), "b");
        assert_eq!(b.admit(), None);
        assert_eq!(b.fetching(t0), None);
        assert_eq!(b.fetching(t0 + PAUSE_AFTER), Some(Fetching::Pause));
        assert_eq!(b.fetching(t0 + PAUSE_AFTER), None, "said once");
        // Paused, it no longer holds up the router: the others read on.
        assert!(!b.holds_up());
        assert_eq!(b.pause_due(), None);
        b.release(rows(80));
        assert_eq!(b.admit(), Some((rows(30), "b")));
        // 30 of 100 in flight, nothing waits: half is free.
        assert_eq!(b.fetching(t0 + PAUSE_AFTER * 2), Some(Fetching::Resume));
        b.release(rows(30));
        assert!(b.is_idle());
    }

    #[test]
    fn resume_waits_for_half_the_budget() {
        let t0 = Instant::now();
        let mut b = TableBudget::new(of_rows(100));
        b.push(rows(90), 1);
        assert!(b.admit().is_some());
        b.push(rows(20), 2);
        assert_eq!(b.admit(), None);
        assert_eq!(b.fetching(t0), None);
        assert_eq!(b.fetching(t0 + PAUSE_AFTER), Some(Fetching::Pause));
        b.release(rows(40));
        assert_eq!(b.admit(), Some((rows(20), 2)));
        // 70 in flight: nothing waits, but resume waits for half free.
        assert_eq!(b.fetching(t0 + PAUSE_AFTER), None);
        b.release(rows(20));
        assert_eq!(b.fetching(t0 + PAUSE_AFTER), Some(Fetching::Resume));
    }

    #[test]
    fn a_batch_over_the_whole_budget_goes_alone() {
        let mut b = TableBudget::new(of_rows(100));
        b.push(rows(5), 1);
        b.push(rows(500), 2);
        assert_eq!(b.admit(), Some((rows(5), 1)));
        assert_eq!(b.admit(), None);
        b.release(rows(5));
        assert_eq!(b.admit(), Some((rows(100), 2)));
        // An empty batch (all dead letters) still takes a row's worth.
        b.push(rows(0), 3);
        assert_eq!(b.admit(), None);
        b.release(rows(100));
        assert_eq!(b.admit(), Some((rows(1), 3)));
    }

    /// Bytes bound a table of large rows: few rows, many bytes.
    #[test]
    fn bytes_bound_what_rows_do_not() {
        let mut b = TableBudget::new(Cost::new(30_000, 1_000_000));
        b.push(Cost::new(2, 600_000), "a");
        b.push(Cost::new(2, 600_000), "b");
        assert_eq!(b.admit(), Some((Cost::new(2, 600_000), "a")));
        assert_eq!(b.admit(), None, "4 rows, but 1.2 MB of 1 MB");
        b.release(Cost::new(2, 600_000));
        assert_eq!(b.admit(), Some((Cost::new(2, 600_000), "b")));
        // A batch over the whole byte budget goes alone.
        b.push(Cost::new(1, 5_000_000), "c");
        assert_eq!(b.admit(), None);
        b.release(Cost::new(2, 600_000));
        assert_eq!(b.admit(), Some((Cost::new(1, 1_000_000), "c")));
    }

    #[test]
    fn a_batch_put_back_is_first_again_and_gives_its_rows_back() {
        let mut b = TableBudget::new(of_rows(10));
        b.push(rows(4), "a");
        b.push(rows(4), "b");
        let (taken, a) = b.admit().unwrap();
        b.put_back(taken, a);
        assert_eq!(b.waiting(), 2);
        assert_eq!(b.admit(), Some((rows(4), "a")));
        assert_eq!(b.admit(), Some((rows(4), "b")));
        assert!(!b.is_paused());
    }
}

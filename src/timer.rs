//! Every per-pair deadline (connect, idle, half-close) in one min-heap.
//!
//! The heap holds at most a couple of entries per pair. Traffic that pushes a deadline later does not touch
//! the heap: when the old entry fires, the reactor asks the pair for its real deadline and re-arms. Only a
//! deadline that moves earlier pushes a new entry; the superseded one is recognised and skipped when it
//! pops. The reactor sleeps until the earliest entry, or forever when the heap is empty, so an idle process
//! makes no periodic wakeups.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// One armed deadline: when, and which pair (slot plus generation, so a reused slot is not confused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub at: Instant,
    pub slot: usize,
    pub generation: u32,
}

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Arms a deadline.
    pub fn push(&mut self, entry: Entry) {
        self.heap.push(Reverse(entry));
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(entry)| entry.at)
    }

    /// Removes and returns one entry due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(entry)) if entry.at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    /// Entries armed (for tests and metrics).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no deadline is armed: the reactor may block without a timeout.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn test_pops_in_deadline_order_and_only_when_due() {
        let start = Instant::now();
        let mut timers = Timers::new();
        for (slot, ms) in [(0, 30), (1, 10), (2, 20)] {
            timers.push(Entry {
                at: start + Duration::from_millis(ms),
                slot,
                generation: 0,
            });
        }
        assert_eq!(
            timers.next_deadline(),
            Some(start + Duration::from_millis(10))
        );
        assert_eq!(timers.pop_due(start), None);
        let due: Vec<usize> =
            std::iter::from_fn(|| timers.pop_due(start + Duration::from_millis(25)))
                .map(|entry| entry.slot)
                .collect();
        assert_eq!(due, vec![1, 2]);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn test_empty_means_no_timeout() {
        assert_eq!(Timers::new().next_deadline(), None);
        assert!(Timers::new().is_empty());
    }
}

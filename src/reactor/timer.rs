//! Every per-pair deadline (connect, idle, half-close) in one ordered set.
//!
//! The set holds at most one entry per pair. Traffic that pushes a deadline later does not touch it: when
//! the old entry fires, the reactor asks the pair for its real deadline and re-arms. A deadline that
//! moves earlier replaces the entry (cancel, then push). A pair that no longer has any deadline (a
//! connect that succeeded, with no idle timeout) has its entry cancelled outright, and so does a pair
//! that closes: a stale entry would wake an idle process once for nothing.
//! The reactor sleeps until the earliest entry, or forever when the set is empty, so an idle process
//! makes no wakeups at all. (An ordered set rather than a binary heap because of that cancel.)

use std::collections::BTreeSet;
use std::time::Instant;

/// One armed deadline: when, and which pair (slot plus generation, so a reused slot is not confused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    pub(super) at: Instant,
    pub(super) slot: usize,
    pub(super) generation: u32,
}

/// Deadlines, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    set: BTreeSet<Entry>,
}

impl Timers {
    pub(super) fn new() -> Timers {
        Timers::default()
    }

    /// Arms a deadline.
    pub(super) fn push(&mut self, entry: Entry) {
        self.set.insert(entry);
    }

    /// Disarms a deadline armed earlier.
    pub(super) fn cancel(&mut self, entry: &Entry) {
        self.set.remove(entry);
    }

    /// The earliest armed deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.set.first().map(|entry| entry.at)
    }

    /// Removes and returns one entry due at `now`, earliest first.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Entry> {
        match self.set.first() {
            Some(entry) if entry.at <= now => self.set.pop_first(),
            _ => None,
        }
    }

    /// Entries armed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no deadline is armed.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.set.is_empty()
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
    fn test_cancelled_entry_never_fires() {
        let start = Instant::now();
        let mut timers = Timers::new();
        let entry = Entry {
            at: start,
            slot: 4,
            generation: 9,
        };
        timers.push(entry);
        timers.cancel(&entry);
        assert_eq!(timers.pop_due(start + Duration::from_secs(1)), None);
        assert!(timers.is_empty());
    }

    #[test]
    fn test_empty_means_no_timeout() {
        assert_eq!(Timers::new().next_deadline(), None);
        assert!(Timers::new().is_empty());
    }
}

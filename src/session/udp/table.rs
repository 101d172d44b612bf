//! A UDP route's sessions, one per client address: pure bookkeeping, no sockets.
//!
//! UDP has no connection to end a session, so a session ends when nothing has crossed it either way
//! for the idle timeout, or when the table is full and a new client needs its room. Both pick the
//! same victim: the least recently used session. So the table keeps one order only, recency, as an
//! intrusive doubly linked list through the slab's entries: touching a session (a datagram either way)
//! moves it to the back in O(1) without allocating, the front is both the next to expire and the one
//! evicted, and the route needs one timer, the front's deadline, instead of one per session or per
//! datagram.
//!
//! Slots are the slab's: stable while the session lives, reused after it, and never above the most
//! sessions ever open at once (at most the limit), so a slot fits the poller token the socket side
//! makes of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slab::Slab;

/// One session and its place in the recency list.
#[derive(Debug)]
struct Entry<S> {
    client: SocketAddr,
    /// Last datagram either way.
    last: Instant,
    /// Towards the least recently used.
    prev: Option<usize>,
    /// Towards the most recently used.
    next: Option<usize>,
    session: S,
}

/// Sessions by client address, in recency order, at most `limit` of them.
#[derive(Debug)]
pub(crate) struct Table<S> {
    entries: Slab<Entry<S>>,
    by_client: HashMap<SocketAddr, usize>,
    /// Least recently used: the next to expire, the first evicted.
    front: Option<usize>,
    /// Most recently used.
    back: Option<usize>,
    limit: usize,
    idle: Duration,
}

/// A session taken out of the table, with its client's address.
pub(crate) type Removed<S> = (SocketAddr, S);

impl<S> Table<S> {
    /// An empty table of at most `limit` sessions (at least 1), each closed after `idle` without traffic.
    pub(crate) fn new(limit: usize, idle: Duration) -> Table<S> {
        Table {
            entries: Slab::new(),
            by_client: HashMap::new(),
            front: None,
            back: None,
            limit: limit.max(1),
            idle,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The slot of `client`'s session.
    pub(crate) fn find(&self, client: &SocketAddr) -> Option<usize> {
        self.by_client.get(client).copied()
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut S> {
        self.entries.get_mut(slot).map(|entry| &mut entry.session)
    }

    /// The client address of the session in `slot`.
    pub(crate) fn client(&self, slot: usize) -> Option<SocketAddr> {
        self.entries.get(slot).map(|entry| entry.client)
    }

    /// A datagram crossed the session in `slot` at `now`: it becomes the most recently used.
    pub(crate) fn touch(&mut self, slot: usize, now: Instant) {
        if !self.entries.contains(slot) {
            return;
        }
        self.unlink(slot);
        self.link_back(slot);
        if let Some(entry) = self.entries.get_mut(slot) {
            entry.last = entry.last.max(now);
        }
    }

    /// Adds `client`'s session (the caller found none) as the most recently used, and returns its slot.
    /// When the table is full, the least recently used session makes room and is returned with it.
    pub(crate) fn insert(
        &mut self,
        client: SocketAddr,
        session: S,
        now: Instant,
    ) -> (usize, Option<Removed<S>>) {
        let evicted = if self.entries.len() >= self.limit {
            self.front.and_then(|slot| self.remove(slot))
        } else {
            None
        };
        let slot = self.entries.insert(Entry {
            client,
            last: now,
            prev: None,
            next: None,
            session,
        });
        self.by_client.insert(client, slot);
        self.link_back(slot);
        (slot, evicted)
    }

    /// Takes the session in `slot` out of the table.
    pub(crate) fn remove(&mut self, slot: usize) -> Option<Removed<S>> {
        if !self.entries.contains(slot) {
            return None;
        }
        self.unlink(slot);
        let entry = self.entries.remove(slot);
        self.by_client.remove(&entry.client);
        Some((entry.client, entry.session))
    }

    /// When the least recently used session expires, if there is one.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.front
            .and_then(|slot| self.entries.get(slot))
            .map(|entry| entry.last + self.idle)
    }

    /// Takes out the least recently used session if it has been idle for the timeout at `now`; call
    /// until `None` to expire every idle session (they are in deadline order).
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Removed<S>> {
        let due = self.next_deadline().is_some_and(|deadline| deadline <= now);
        if due {
            self.front.and_then(|slot| self.remove(slot))
        } else {
            None
        }
    }

    /// Every session's slot, least recently used first.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.entries.len());
        let mut at = self.front;
        while let Some(slot) = at {
            out.push(slot);
            at = self.entries.get(slot).and_then(|entry| entry.next);
        }
        out
    }

    /// Detaches `slot` from the recency list, joining its neighbours.
    fn unlink(&mut self, slot: usize) {
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let (prev, next) = (entry.prev.take(), entry.next.take());
        match prev.and_then(|p| self.entries.get_mut(p)) {
            Some(before) => before.next = next,
            None => self.front = next,
        }
        match next.and_then(|n| self.entries.get_mut(n)) {
            Some(after) => after.prev = prev,
            None => self.back = prev,
        }
    }

    /// Appends a detached `slot` at the most recently used end.
    fn link_back(&mut self, slot: usize) {
        let old_back = self.back;
        if let Some(entry) = self.entries.get_mut(slot) {
            entry.prev = old_back;
            entry.next = None;
        }
        match old_back.and_then(|b| self.entries.get_mut(b)) {
            Some(before) => before.next = Some(slot),
            None => self.front = Some(slot),
        }
        self.back = Some(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn test_sessions_are_found_by_client() {
        let now = Instant::now();
        let mut table = Table::new(4, IDLE);
        let (a, _) = table.insert(addr(1), "a", now);
        let (b, _) = table.insert(addr(2), "b", now);
        assert_eq!(table.find(&addr(1)), Some(a));
        assert_eq!(table.find(&addr(2)), Some(b));
        assert_eq!(table.find(&addr(3)), None);
        assert_eq!(table.get_mut(b).copied(), Some("b"));
        assert_eq!(table.client(a), Some(addr(1)));
        assert_eq!(table.remove(a), Some((addr(1), "a")));
        assert_eq!(table.find(&addr(1)), None);
        assert_eq!(table.slots(), vec![b]);
    }

    #[test]
    fn test_full_table_evicts_the_least_recently_used() {
        let now = Instant::now();
        let mut table = Table::new(3, IDLE);
        let (first, _) = table.insert(addr(1), 1, now);
        let (second, _) = table.insert(addr(2), 2, now);
        table.insert(addr(3), 3, now);
        // 1 is used again, so 2 is now the least recently used.
        table.touch(first, now + Duration::from_secs(1));
        let (_, evicted) = table.insert(addr(4), 4, now + Duration::from_secs(2));
        assert_eq!(evicted, Some((addr(2), 2)));
        assert_eq!(table.len(), 3);
        assert_eq!(table.find(&addr(2)), None);
        assert!(table.get_mut(second).is_some(), "the slot was reused for 4");
        assert_eq!(table.find(&addr(4)), Some(second));
    }

    #[test]
    fn test_idle_sessions_expire_in_order() {
        let start = Instant::now();
        let mut table = Table::new(8, IDLE);
        let (a, _) = table.insert(addr(1), 'a', start);
        table.insert(addr(2), 'b', start + Duration::from_secs(10));
        table.insert(addr(3), 'c', start + Duration::from_secs(20));
        table.touch(a, start + Duration::from_secs(30));
        assert_eq!(table.next_deadline(), Some(start + Duration::from_secs(70)));
        assert_eq!(table.expire(start + Duration::from_secs(69)), None);
        let later = start + Duration::from_secs(85);
        assert_eq!(table.expire(later), Some((addr(2), 'b')));
        assert_eq!(table.expire(later), Some((addr(3), 'c')));
        assert_eq!(table.expire(later), None, "a was touched at 30s");
        assert_eq!(table.next_deadline(), Some(start + Duration::from_secs(90)));
        assert_eq!(
            table.expire(start + Duration::from_secs(90)),
            Some((addr(1), 'a'))
        );
        assert!(table.is_empty());
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn test_touch_never_moves_time_back() {
        let start = Instant::now();
        let mut table = Table::new(2, IDLE);
        let (a, _) = table.insert(addr(1), (), start + Duration::from_secs(5));
        table.touch(a, start);
        assert_eq!(table.next_deadline(), Some(start + Duration::from_secs(65)));
    }

    /// The recency list against a plain model, over a long mixed sequence: same order, same victims.
    #[test]
    fn test_recency_list_matches_a_model() {
        let start = Instant::now();
        let mut table = Table::new(5, IDLE);
        let mut model: Vec<u16> = Vec::new();
        let mut seed = 12345u32;
        for step in 0..2000u64 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let port = (seed >> 16) as u16 % 9;
            let now = start + Duration::from_millis(step);
            match table.find(&addr(port)) {
                Some(slot) if seed % 7 == 0 => {
                    assert_eq!(table.remove(slot).map(|r| r.1), Some(port));
                    model.retain(|p| *p != port);
                }
                Some(slot) => {
                    table.touch(slot, now);
                    model.retain(|p| *p != port);
                    model.push(port);
                }
                None => {
                    let (_, evicted) = table.insert(addr(port), port, now);
                    if model.len() == 5 {
                        assert_eq!(evicted.map(|e| e.1), Some(model.remove(0)));
                    } else {
                        assert!(evicted.is_none());
                    }
                    model.push(port);
                }
            }
            let order: Vec<u16> = table
                .slots()
                .into_iter()
                .filter_map(|slot| table.get_mut(slot).copied())
                .collect();
            assert_eq!(order, model);
            assert!(table.slots().iter().all(|slot| *slot < 5));
        }
    }
}

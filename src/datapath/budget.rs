//! The process's descriptor budget: how many pairs (and pipes) RLIMIT_NOFILE leaves room for, shared by
//! every route and every `--threads` reactor.
//!
//! A pair holds two fds (client and upstream) and a `--splice` pipe two more. Past RLIMIT_NOFILE accept(2)
//! or socket(2) fails with EMFILE, and a client accepted whose upstream socket cannot be made is reset.
//! So the process counts its fds in *slots* of two: `(nofile - reserve) / 2` of them, where the reserve
//! covers every fd that is not a pair's or a pipe's ([`reserve`]). A pair takes a slot before accept(2);
//! with none free its listener is left undrained, and the client waits in the backlog until a pair
//! closes. A pipe takes a slot only when a direction wants one, from the slots no pair holds; a direction
//! that finds none (or finds clients waiting for a slot) carries on through its ring. Idle pairs hold no
//! pipe, so the default limit is the whole budget in every splice mode, not a share of it kept back
//! for pipes.
//!
//! One atomic counter is shared by the reactors rather than a fixed share each: a reactor's load is
//! whatever it happened to accept (and its pipes go with its bulk streams), so a fixed share would leave
//! slots unused on a quiet reactor while a busy one refuses pipes or clients. The price is that a slot freed by one reactor is noticed by another only when it
//! next looks: a reactor stopped at the budget retries every [`SHARED_RETRY`], and spare pipes live at
//! most [`SPARE_CHECK`], since a reactor that holds them may have no event to wake it when another
//! reactor's clients wait for their slots.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The formula of the default connection limit, in words, for the help text; the arithmetic is
/// [`pairs_for`] and [`reserve`] (a test checks that the two agree).
macro_rules! formula {
    () => {
        "(RLIMIT_NOFILE - reserve) / 2 pairs, shared by all routes and --threads; reserve = 32 + 4 x (threads - 1) + prewarm x threads"
    };
}

/// `--max-connections`'s help text, which states the default's formula.
pub const MAX_CONNECTIONS_HELP: &str = concat!(
    "Most connections of the route open at once, inside the process's fd budget [default: the whole budget, ",
    formula!(),
    "]"
);

/// Fds the process holds besides pairs and pipes, for one reactor: stdin, stdout, stderr; the reactor's
/// epoll fd, signal pipe (two) and resolver waker; listeners; the metrics listener and the scrapes it
/// serves; health probes in flight; the resolver's and the CONNECT lookup threads' files and sockets
/// (resolv.conf, a UDP socket each); a reload's file and new listeners; a failover's new upstream socket
/// before the old one closes. A forwarder with one listener and `--metrics` holds 8 at rest.
const RESERVED_FDS: u64 = 32;
/// Each reactor past the first: its epoll fd, signal pipe and waker (its listeners are in the 32).
const FDS_PER_EXTRA_REACTOR: u64 = 4;
/// Most slots: 2^20 pairs (the token space holds fewer pairs than that anyway).
const MAX_SLOTS: u64 = 1 << 20;

/// How long a reactor stopped at a shared budget waits before it looks again (a slot freed by another
/// reactor sends it no event).
pub(crate) const SHARED_RETRY: Duration = Duration::from_millis(20);

/// With a budget shared by several reactors, how long a spare pipe may wait for reuse before it is
/// closed: another reactor's clients may wait for its slot, and nothing would wake its holder.
pub(crate) const SPARE_CHECK: Duration = Duration::from_millis(100);

/// Fds kept out of the budget for `threads` reactors that each keep `prewarm` warm upstream connections.
pub fn reserve(threads: u64, prewarm: u64) -> u64 {
    RESERVED_FDS + FDS_PER_EXTRA_REACTOR * threads.saturating_sub(1) + prewarm * threads
}

/// Slots of two fds in a budget of `nofile` descriptors less `reserve`: the most pairs open at once,
/// and the default connection limit. Never 0, so that a tiny limit still serves one client at a time.
pub fn pairs_for(nofile: u64, reserve: u64) -> usize {
    (nofile.saturating_sub(reserve) / 2).clamp(1, MAX_SLOTS) as usize
}

/// The shared counter. Cloning shares it.
#[derive(Debug, Clone)]
pub struct FdBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Slots in all.
    slots: usize,
    /// Slots held by pairs and pipes (open or spare).
    used: AtomicUsize,
    /// A listener was left undrained for want of a slot, and no pair has been admitted since: pipes
    /// give their slots back rather than wait as spares, and no new pipe takes one.
    wanted: AtomicBool,
}

impl Default for FdBudget {
    /// A budget that never runs out, for a reactor run without `main` (tests, benches).
    fn default() -> FdBudget {
        FdBudget::new(usize::MAX)
    }
}

impl FdBudget {
    /// A budget of `slots` slots, none used.
    pub fn new(slots: usize) -> FdBudget {
        FdBudget {
            inner: Arc::new(Inner {
                slots,
                used: AtomicUsize::new(0),
                wanted: AtomicBool::new(false),
            }),
        }
    }

    /// Slots in all.
    pub fn slots(&self) -> usize {
        self.inner.slots
    }

    /// Slots held now.
    pub(super) fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// A slot for a new pair, or `None` when all are held; then the budget is marked wanted until a
    /// pair gets one.
    pub(crate) fn take_for_pair(&self) -> Option<Slot> {
        let slot = self.take();
        self.inner.wanted.store(slot.is_none(), Ordering::Relaxed);
        slot
    }

    /// A slot for a pipe: only when one is free and no client waits for it.
    pub(super) fn take_for_pipe(&self) -> Option<Slot> {
        if self.is_wanted() {
            return None;
        }
        self.take()
    }

    /// Clients wait in a backlog for a slot: spare pipes should give theirs back.
    pub(crate) fn is_wanted(&self) -> bool {
        self.inner.wanted.load(Ordering::Relaxed)
    }

    /// At least one slot is free.
    pub(crate) fn has_room(&self) -> bool {
        self.used() < self.inner.slots
    }

    fn take(&self) -> Option<Slot> {
        let slots = self.inner.slots;
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < slots).then_some(used + 1)
            })
            .ok()
            .map(|_| Slot {
                budget: Some(self.clone()),
            })
    }

    /// Gives back a slot that [`Slot::keep`] handed over.
    pub(crate) fn give_kept(&self) {
        self.release();
    }

    fn release(&self) {
        let _ = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_sub(1)
            });
    }
}

/// One slot held; dropping it gives it back.
#[derive(Debug)]
pub(crate) struct Slot {
    /// `None` once kept.
    budget: Option<FdBudget>,
}

impl Slot {
    /// Hands the slot over to a holder that gives it back with [`FdBudget::give_kept`] (the reactor,
    /// for every pair in its slab).
    pub(crate) fn keep(mut self) {
        self.budget = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            budget.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_reserve_counts_reactors_and_warm_connections() {
        assert_eq!(reserve(1, 0), 32);
        assert_eq!(reserve(2, 0), 36);
        assert_eq!(reserve(16, 0), 92);
        assert_eq!(reserve(2, 10), 56);
    }

    #[test]
    fn test_formula_states_the_reserve_in_force() {
        let terms = format!("reserve = {RESERVED_FDS} + {FDS_PER_EXTRA_REACTOR} x (threads - 1)");
        assert!(formula!().contains(&terms), "{}", formula!());
        assert!(MAX_CONNECTIONS_HELP.contains(formula!()));
    }

    #[test]
    fn test_pairs_for_is_half_the_fds_left() {
        assert_eq!(pairs_for(1024, reserve(1, 0)), 496);
        assert_eq!(pairs_for(20_000, reserve(1, 0)), 9_984);
        assert_eq!(pairs_for(1024, reserve(16, 0)), 466);
        // An odd fd left over makes no slot.
        assert_eq!(pairs_for(101, 32), 34);
        assert_eq!(pairs_for(10, 32), 1);
        assert_eq!(pairs_for(u64::MAX, 32), 1 << 20);
    }

    #[test]
    fn test_budget_full_refuses_then_frees_on_drop() {
        let budget = FdBudget::new(2);
        let first = budget.take_for_pair().expect("slot");
        let second = budget.take_for_pair().expect("slot");
        assert!(budget.take_for_pair().is_none());
        assert!(!budget.has_room());
        drop(first);
        assert_eq!(budget.used(), 1);
        let third = budget.take_for_pair().expect("a slot was freed");
        drop((second, third));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn test_kept_slot_stays_held_until_given_back() {
        let budget = FdBudget::new(1);
        budget.take_for_pair().expect("slot").keep();
        assert_eq!(budget.used(), 1);
        assert!(budget.take_for_pair().is_none());
        budget.give_kept();
        assert_eq!(budget.used(), 0);
        budget.give_kept();
        assert_eq!(budget.used(), 0, "never below zero");
    }

    #[test]
    fn test_pipes_yield_to_waiting_clients() {
        let budget = FdBudget::new(2);
        let pipe = budget.take_for_pipe().expect("a free slot");
        let pair = budget.take_for_pair().expect("slot");
        assert!(budget.take_for_pair().is_none(), "full");
        assert!(budget.is_wanted());
        drop(pipe);
        assert!(
            budget.take_for_pipe().is_none(),
            "a client waits for that slot"
        );
        let waiting = budget.take_for_pair().expect("the freed slot");
        assert!(!budget.is_wanted());
        drop((pair, waiting));
        assert!(budget.take_for_pipe().is_some());
    }

    #[test]
    fn test_reactors_racing_never_pass_the_budget() {
        let budget = FdBudget::new(3);
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut most = 0;
                    for _ in 0..10_000 {
                        let held: Vec<Slot> =
                            (0..2).filter_map(|_| budget.take_for_pair()).collect();
                        most = most.max(budget.used());
                        drop(held);
                    }
                    most
                })
            })
            .collect();
        for racer in racers {
            assert!(racer.join().expect("racer") <= 3);
        }
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn test_budget_is_shared_by_clones() {
        let budget = FdBudget::new(1);
        let other = budget.clone();
        let held = budget.take_for_pair().expect("slot");
        assert!(other.take_for_pair().is_none());
        drop(held);
        assert!(other.take_for_pair().is_some());
    }
}

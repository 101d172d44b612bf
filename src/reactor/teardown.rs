//! Tearing a pair down, in one place: storage back to the pools, RST where the cause calls for it, the
//! endpoint's lease back (`session::connect::release`), one debug line and one `--access-log` line,
//! and the fd budget slot last. Also what a close may free: a drained route, a large slab, spare
//! `--splice` pipes.

use log::{debug, info, log};
use slab::Slab;

use super::Reactor;
use crate::close::Cause;
use crate::datapath::budget;
use crate::reactor::timer::Entry;
use crate::session::connect;
use crate::session::pair::Pair;
use crate::upstream::route::Lease;
use crate::wire::proxy_protocol::Reason;

/// Pair slots kept allocated once every pair has closed (see `release_pair_slots`): enough for
/// everyday churn to reuse them without growing the slab again.
const PAIR_SLOTS_KEPT: usize = 1024;

impl Reactor {
    /// A client is closed over its PROXY header: counted by reason, and logged at info, rate-limited.
    /// Info, not warning: the fault is the client's (or a scanner's), not the operator's to fix; and
    /// rate-limited, because a hostile client can open thousands of such connections a second and must
    /// not turn the log into the bottleneck. The counter has every one of them.
    fn proxy_header_rejected(&mut self, pair: &Pair, reason: Reason) {
        self.metrics.proxy_header_rejects[reason] += 1;
        if let Some(held_back) = self.proxy_header_log.allow(self.now) {
            let more = match held_back {
                0 => String::new(),
                n => format!(" ({n} more since the last such line)"),
            };
            info!(
                "conn={} client={} closed: {} (PROXY header rejected, reason={}){more}",
                pair.id,
                pair.client_addr,
                reason.message(),
                reason.label()
            );
        }
    }

    /// Tears a pair down: storage back to the pool, RST where the cause calls for it, one log line.
    /// Dropping the sockets closes them, which removes them from epoll/kqueue without a deregister call
    /// (we never dup these fds, so the close is the last reference).
    pub(super) fn close_pair(&mut self, slot: usize, cause: Cause) {
        self.account(slot);
        let Some(mut pair) = self.pairs.try_remove(slot) else {
            return;
        };
        if let Some(at) = pair.armed {
            self.timers.cancel(&Entry {
                at,
                slot,
                generation: pair.id,
            });
        }
        self.metrics.closes[cause] += 1;
        if let Some(reason) = pair.proxy_header_rejection() {
            self.proxy_header_rejected(&pair, reason);
        }
        if let Some(reason) = pair.sni_rejected {
            self.metrics.sni_rejects[reason] += 1;
        }
        // A timeout can fire while a stalled reader leaves bytes in a ring: those peers must see an
        // abort, not a FIN after a stream that silently lost its tail.
        if cause.resets() || pair.holds_undelivered() {
            pair.client.reset_on_close();
            if let Some(upstream) = pair.upstream() {
                upstream.reset_on_close();
            }
        }
        let mut record = None;
        if let Some(route) = self.routes.get_mut(pair.route) {
            if self.siblings.access_log.is_some() {
                record = Some(pair.access_record(&route.config.name, cause, self.now));
            }
            if pair.awaits_route {
                // Refused before its ClientHello chose a route: a pair of the route holding the socket.
                route.counts.paired();
            }
            route
                .counts
                .closed(cause, self.now.duration_since(pair.started));
            let endpoint = pair.lease().map(Lease::slot);
            if let Some(upstream) = endpoint.and_then(|slot| route.upstream_counts(slot)) {
                upstream.closed(cause);
            }
            pair.release(&mut route.shared(&mut self.metrics));
            route.pairs -= 1;
            if log::log_enabled!(log::Level::Debug) {
                let (c2u, u2c) = pair.bytes();
                let (reads, writes) = pair.syscalls();
                debug!(
                    "closed conn={} client={} route={} upstream={} cause={cause} c2u={c2u} u2c={u2c} duration={}ms reads={reads} writes={writes}",
                    pair.id,
                    pair.client_addr,
                    route.config.name,
                    pair.lease().map_or("-", |lease| route.endpoint_label(lease.slot())),
                    self.now.duration_since(pair.started).as_millis()
                );
            }
            connect::release(route, &mut pair, self.now);
        }
        if let Some(record) = record {
            self.log_access(record);
        }
        self.remove_if_drained(pair.route);
        if self.pairs.is_empty() {
            self.shed_spare_pipes();
            self.release_pair_slots();
        }
        if let Some(drain) = self.drain.as_mut() {
            drain.note_closed(cause);
        }
        // Every pair in the slab holds a slot of the fd budget (`open_pair`): given back once its
        // sockets are closed, last, so that whoever sees them closed also sees the slab released.
        drop(pair);
        self.siblings.budget.give_kept();
    }

    /// Drops a route that a reload removed once its last pair is gone.
    pub(super) fn remove_if_drained(&mut self, key: usize) {
        if self
            .routes
            .get(key)
            .is_some_and(|route| route.draining && route.pairs == 0)
        {
            let route = self.routes.remove(key);
            log!(
                self.process_level(),
                "route {}: drained, removed",
                route.config.name
            );
        }
    }

    /// A slab never shrinks: after a peak of N pairs it keeps N slots (a `Pair` is about half a KiB)
    /// resident after they have all closed. When the last pair goes, a large slab is handed back to the
    /// allocator, so RSS returns to where it started. Keys restart from 0, which tokens survive: each
    /// carries its pair's generation, not only the slot.
    fn release_pair_slots(&mut self) {
        if self.pairs.capacity() > PAIR_SLOTS_KEPT {
            self.pairs = Slab::with_capacity(PAIR_SLOTS_KEPT);
        }
    }

    /// Spare `--splice` pipes cost two fds each: give them back when fds run out or nothing runs.
    pub(super) fn shed_spare_pipes(&mut self) {
        for (_, route) in self.routes.iter_mut() {
            if let Some(pipes) = route.pipes.as_mut() {
                pipes.clear();
            }
        }
    }

    /// With `--threads`, spare pipes live at most [`budget::SPARE_CHECK`]: another reactor's clients may
    /// wait for their slots, and nothing would wake this reactor to give them back. The first turn that
    /// finds spares arms the deadline; the turn at or past it closes every spare. An idle reactor thus
    /// wakes once after its last pipe went spare, then sleeps.
    pub(super) fn expire_spare_pipes(&mut self) {
        if self.config.threads == 1 {
            return;
        }
        match self.spares_expire_at {
            Some(at) if at <= self.now => {
                self.shed_spare_pipes();
                self.spares_expire_at = None;
            }
            Some(_) => {}
            None => {
                let holds_spares = self
                    .routes
                    .iter()
                    .any(|(_, route)| route.pipes.as_ref().is_some_and(|pipes| pipes.spare() > 0));
                if holds_spares {
                    self.spares_expire_at = Some(self.now + budget::SPARE_CHECK);
                }
            }
        }
    }
}

//! DNS re-resolution of host-name upstreams, every `resolve_interval`, and the waker that brings answers
//! (and reloaded files) back from the resolver thread, and CONNECT destinations' addresses back from the
//! lookup threads ([`Reactor::on_looked`]).
//!
//! `getaddrinfo` blocks, so the names go to the resolver thread ([`Worker`](super::worker::Worker)); it wakes the loop through a
//! `mio::Waker` under `token::WAKER`. One edge may stand for several answers, so [`Reactor::on_waker`]
//! drains every answer queued. A route has at most one job in flight (`Route::resolving`), and answers
//! carry the route's uid: a reload may have replaced the route in between. They also carry the number of
//! reloads applied when they were asked (`reload_epoch`): a reload resolves its names afresh, so an answer
//! to an older question is dropped, or a `getaddrinfo` that began before the reload and ended after it
//! would put the pre-reload address back (with `--threads`, a follower receives reloads straight from
//! reactor 0, ahead of its own resolver's queue). What an answer does to the upstream's endpoints (new
//! addresses added, dropped ones retired, a failure held then marked down) is `endpoint::Upstreams`'s
//! business; new connects follow it, live pairs keep the socket they have, and warm connections to a
//! retired endpoint are closed.

use std::net::SocketAddr;

use super::Reactor;
use crate::config::{self, UpstreamAddresses};
use crate::reactor::worker::{Answer, Job};
use crate::session::connect::Step;

impl Reactor {
    /// Sends the host-name upstreams of every route whose `resolve_interval` has come round to the
    /// resolver thread (one job per route at a time).
    pub(super) fn start_resolves(&mut self) {
        let now = self.now;
        let Some(worker) = self.worker.as_ref() else {
            return;
        };
        for (key, route) in self.routes.iter_mut() {
            let (Some(at), Some(interval)) = (route.next_resolve, route.config.resolve_interval)
            else {
                continue;
            };
            if route.draining || at > now {
                continue;
            }
            route.next_resolve = Some(now + interval);
            if route.resolving {
                continue;
            }
            let names: Vec<(usize, String)> = route
                .upstreams
                .list()
                .iter()
                .enumerate()
                .filter(|(_, upstream)| config::is_host_name(&upstream.name))
                .map(|(index, upstream)| (index, upstream.name.clone()))
                .collect();
            route.resolving = !names.is_empty()
                && worker.submit(Job::Resolve {
                    route: key,
                    uid: route.uid,
                    epoch: self.reload_epoch,
                    names,
                });
        }
    }

    /// The resolver thread has answers.
    pub(super) fn on_waker(&mut self) {
        let answers: Vec<Answer> = match self.worker.as_ref() {
            Some(worker) => worker.answers().collect(),
            None => return,
        };
        for answer in answers {
            match answer {
                Answer::Resolved {
                    route,
                    uid,
                    epoch,
                    addrs,
                } => self.apply_resolution(route, uid, epoch, addrs),
                Answer::Reloaded(result) => match *result {
                    Ok(config) => self.reload(config, Vec::new()),
                    Err(err) => self.reload_rejected(err.message()),
                },
                Answer::Looked { pair, id, addrs } => self.on_looked(pair, id, addrs),
                Answer::Follow(applied) => {
                    // `--threads`: apply what reactor 0 applied, accepting from the listeners it bound.
                    let (config, listeners) = *applied;
                    self.reload(config, listeners);
                }
                Answer::Ask(ask) => self.on_admin_ask(*ask),
                Answer::Part { ticket, part } => self.on_admin_part(ticket, *part),
            }
        }
    }

    /// A CONNECT destination's addresses came back. The pair may be gone (its client left, or its deadline
    /// answered 504) and its slot may hold another pair since: the id and the phase tell, as a token's
    /// generation does. The rest is the connect path's (`session::connect`).
    fn on_looked(&mut self, slot: usize, id: u32, addrs: Result<Vec<SocketAddr>, String>) {
        self.metrics.lookups += 1;
        let awaited = self
            .pairs
            .get(slot)
            .is_some_and(|pair| pair.id == id && pair.awaits_address());
        if awaited {
            self.advance_connect(slot, Step::Looked(addrs));
        }
    }

    /// New addresses apply to new connections; live pairs keep the socket they have.
    fn apply_resolution(
        &mut self,
        key: usize,
        uid: u64,
        epoch: u64,
        addrs: Vec<(usize, UpstreamAddresses)>,
    ) {
        let now = self.now;
        let Some(route) = self.routes.get_mut(key).filter(|route| route.uid == uid) else {
            return;
        };
        route.resolving = false;
        if epoch != self.reload_epoch {
            return; // asked before a reload that resolved these names afresh
        }
        for (index, lookup) in addrs {
            route.resolved(index, lookup, now);
        }
        self.forget_retired_warm(key);
    }

    /// Closes the warm connections of route `key` to endpoints that are no longer live: a retired
    /// endpoint takes no new client. Checked by address too: one lookup batch can free a slot (an
    /// address dropped, no pair on it) and give it to another upstream's new address before this runs.
    pub(super) fn forget_retired_warm(&mut self, key: usize) {
        let (Some(warm), Some(route)) = (self.warm.as_mut(), self.routes.get(key)) else {
            return;
        };
        warm.forget_endpoints(route.uid, |slot, addr| {
            route
                .upstreams
                .get(slot)
                .is_some_and(|e| e.is_live() && e.addr == *addr)
        });
    }
}

//! The reactor's side of `Type=notify` ([`crate::service::notify`]): reactor 0 speaks for the process.
//! It says `READY=1` when it starts running (every reactor of `--threads` was built, so every listener
//! is bound, before the first one runs), `RELOADING=1` when a SIGHUP reload begins and `READY=1` with the
//! verdict, `STOPPING=1` when a shutdown begins, and after each loop turn the watchdog ping and
//! `STATUS=` that are due.
//!
//! With `--threads`, the live connections are the sum of the metrics board, which every reactor
//! publishes each turn; reactor 0 reads it when it wakes, so the status may lag while reactor 0 itself
//! has nothing to do (it is not woken for the others' pairs: that would cost every pair a cross-thread
//! wakeup).
//!
//! Socket activation ([`crate::service::activation`]) reaches the reactor as the listeners of reactor 0,
//! built by [`activated_listeners`]; the others of `--threads` share them as they share bound ones. So
//! do the sockets a predecessor hands over at a binary upgrade ([`crate::service::upgrade`]).

use std::net::SocketAddr;
use std::time::Instant;

use log::info;
use socket2::SockRef;

use super::Reactor;
use crate::config::RouteConfig;
use crate::datapath::net;
use crate::service::activation::{self, Passed};
use crate::service::notify::Notifier;
use crate::upstream::route::Listener;

impl Reactor {
    /// Makes this reactor (reactor 0) the one that notifies the service manager.
    pub fn notify_to(&mut self, notifier: Notifier) {
        self.notifier = Some(notifier);
    }

    /// Connections open in the whole process, as far as this reactor knows.
    fn live_pairs(&self) -> usize {
        match self.siblings.board.as_ref() {
            Some(board) => usize::try_from(board.pairs_open()).unwrap_or(usize::MAX),
            None => self.pairs.len(),
        }
    }

    /// `READY=1`: at start, and when a reload has been applied or rejected.
    pub(super) fn notify_ready(&mut self) {
        let live = self.live_pairs();
        let now = self.now;
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.ready(live, now);
        }
    }

    /// `RELOADING=1`, unless a shutdown has begun (systemd is then waiting for the process to exit).
    pub(super) fn notify_reloading(&mut self) {
        if self.drain.is_some() {
            return;
        }
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.reloading();
        }
    }

    pub(super) fn notify_stopping(&mut self) {
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.stopping();
        }
    }

    /// When the notifier next has something to send: `None` without a watchdog or a held-back status.
    pub(super) fn notify_deadline(&self) -> Option<Instant> {
        self.notifier.as_ref().and_then(Notifier::deadline)
    }

    /// After each turn: the watchdog ping and the status, when due.
    pub(super) fn tend_notifier(&mut self) {
        if self.notifier.is_none() {
            return;
        }
        let live = self.live_pairs();
        let now = self.now;
        if let Some(notifier) = self.notifier.as_mut() {
            notifier.tend(live, now);
        }
    }
}

/// Socket activation's listeners for reactor 0: for each route, in listen order, the passed socket
/// [`activation::plan`] gives a listen address, or one bound now. Errors name the socket that matches
/// no route, or the address that cannot be bound.
pub fn activated_listeners(
    passed: Vec<Passed>,
    routes: &[RouteConfig],
) -> Result<Vec<Vec<Listener>>, String> {
    // Routes sharing an address (SNI routing) share its socket: the first one holds it.
    let bound: Vec<Vec<SocketAddr>> = (0..routes.len())
        .map(|index| crate::config::bound_addresses(routes, index))
        .collect();
    let shapes: Vec<(&str, &[SocketAddr])> = routes
        .iter()
        .zip(&bound)
        .map(|(route, bound)| (route.name.as_str(), bound.as_slice()))
        .collect();
    let found: Vec<(&str, SocketAddr)> =
        passed.iter().map(|p| (p.name.as_str(), p.local)).collect();
    let plan = activation::plan(&found, &shapes).map_err(|at| {
        let p = &passed[at];
        format!(
            "{} {} (name {:?}, bound to {}) matches no route: no route is named {:?} \
             and none listens on {} (or they have sockets already)",
            source(p).0,
            p.fd,
            p.name,
            p.local,
            p.name,
            p.local
        )
    })?;
    let mut passed: Vec<Option<Passed>> = passed.into_iter().map(Some).collect();
    routes
        .iter()
        .zip(plan)
        .zip(&bound)
        .map(|((route, slots), bound)| {
            bound
                .iter()
                .zip(slots)
                .map(|(addr, slot)| match slot.and_then(|at| passed[at].take()) {
                    Some(p) => {
                        // The route's TCP_NODELAY, for accepted sockets to inherit; the backlog is the
                        // socket unit's (`Backlog=`).
                        net::pass_nodelay_on(&SockRef::from(&p.socket), route.nodelay)
                            .map_err(|err| format!("{} {}: {err}", source(&p).0, p.fd))?;
                        info!(
                            "route {}: {addr} is {} {} (name {:?}, bound to {})",
                            route.name,
                            source(&p).1,
                            p.fd,
                            p.name,
                            p.local
                        );
                        Listener::adopt(*addr, p.socket)
                    }
                    None => Listener::bind(*addr, route),
                })
                .collect()
        })
        .collect()
}

/// How messages name where a socket came from: (noun, adjective).
fn source(p: &Passed) -> (&'static str, &'static str) {
    if p.handed_over {
        ("upgrade fd", "handed-over fd")
    } else {
        ("socket-activation fd", "socket-activated fd")
    }
}

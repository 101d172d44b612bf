//! Accepting: after every batch, from each listener whose cached "ready" bit is set, until WouldBlock or
//! a stop of our own: the route's `max_connections`, the process's fd budget, fd exhaustion (a short
//! pause), or the per-turn cap. After such a stop the bit stays set, since the kernel sends no new edge
//! for connections already queued: the loop comes back by itself (a pair closing, the backoff timer, the
//! next turn); at `max_connections` it stays set only while a client is really queued (`note_limit`).
//! Each accepted client is first checked against the route's `client_allow`/`client_deny` and
//! per-client limits (unless `accept_proxy` defers that to the header's address, or an SNI listener to
//! the route the client's ClientHello chooses), and reset if refused;
//! the rest are handed to the connect path (`session::connect`) with their fd budget slot in hand. A
//! route stuck at `max_connections` for `queue_timeout` has its queued clients accepted and reset
//! (`flush_queue`; docs/operations.md says exactly what is timed).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use log::{debug, warn};
use mio::net::TcpStream;

use super::Reactor;
use crate::datapath::budget::{self, Slot};
use crate::datapath::net;
use crate::datapath::stream::Conn;
use crate::observe::metric_kinds::{ClientReject, Label};
use crate::upstream::route::Route;

/// Most connections accepted from one listener in one loop turn, so a connection flood cannot starve
/// established pairs.
const ACCEPT_BUDGET: usize = 256;

/// The address a Unix client's pair carries: it has no IP address (`accept_one`).
const UNIX_CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// One of a route's listening sockets, by kind and index.
#[derive(Debug, Clone, Copy)]
enum Listening {
    Tcp(usize),
    Unix(usize),
}

/// How long accepting pauses after EMFILE/ENFILE: long enough to cost no CPU, short enough to resume fast.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Reactor {
    /// The after-batch accept phase: metrics scrapes, every ready listener, then the warm pool's refill
    /// (new slots are only handed out here, after every event of the batch has been dispatched).
    pub(super) fn accept_ready(&mut self) {
        self.accept_scrapes();
        self.accept_admin();
        if self.budget_retry_at.is_some_and(|at| at <= self.now) {
            self.budget_retry_at = None;
        }
        if self.siblings.budget.is_wanted() {
            // Clients wait for a slot, perhaps in another reactor's backlog: spares must not hold them.
            self.shed_spare_pipes();
        }
        let ready: Vec<(usize, Listening)> = self
            .routes
            .iter()
            .flat_map(|(key, route)| {
                let unix = route.unix_listeners.iter().map(|l| l.ready);
                let tcp = route.listeners.iter().map(|l| l.ready);
                unix.enumerate()
                    .filter(|(_, ready)| *ready)
                    .map(move |(index, _)| (key, Listening::Unix(index)))
                    .chain(
                        tcp.enumerate()
                            .filter(|(_, ready)| *ready)
                            .map(move |(index, _)| (key, Listening::Tcp(index))),
                    )
            })
            .collect();
        let overdue: Vec<usize> = self
            .routes
            .iter()
            .filter(|_| self.accept_paused_until.is_none())
            .filter(|(_, route)| route.queue_deadline().is_some_and(|at| at <= self.now))
            .map(|(key, _)| key)
            .collect();
        for route in overdue {
            self.flush_queue(route);
        }
        for (route, listening) in ready {
            self.accept_from(route, listening);
        }
        self.expire_spare_pipes();
        self.refill_warm();
    }

    /// Accepts until WouldBlock, the route's connection limit, the fd budget, fd exhaustion or the
    /// per-turn cap. Each client is accepted with a budget slot in hand, which its pair keeps.
    fn accept_from(&mut self, route: usize, listening: Listening) {
        // An SNI listener's clients send a ClientHello first.
        let greeting = match listening {
            Listening::Tcp(index) => self
                .routes
                .get(route)
                .and_then(|route| route.listeners.get(index))
                .and_then(|listener| listener.greeting.clone()),
            Listening::Unix(_) => None,
        };
        for _ in 0..ACCEPT_BUDGET {
            if !self.can_accept(route, listening) {
                self.note_limit(route);
                return;
            }
            let Some(slot) = self.take_pair_slot() else {
                self.note_budget_full(route);
                return;
            };
            match self.accept_one(route, listening) {
                None => return,
                Some(Ok((conn, addr))) => {
                    self.metrics.accepts += 1;
                    if let Some(route) = self.routes.get(route) {
                        route.counts.accepted(1);
                    }
                    let key = match &conn {
                        // Asked of the route the ClientHello chooses (`session::connect`).
                        Conn::Tcp(_) if greeting.is_some() => Some(None),
                        Conn::Tcp(stream) => self.admit(route, stream, addr),
                        // No IP address: no `client_allow`/`client_deny` nor per-client limit applies.
                        Conn::Unix(_) => Some(None),
                    };
                    if let Some(key) = key {
                        self.open_pair(route, conn, addr, key, slot, greeting.clone());
                    }
                }
                Some(Err(err)) if err.kind() == io::ErrorKind::WouldBlock => {}
                Some(Err(err)) if net::is_passing_accept_error(&err) => {}
                Some(Err(err)) => self.pause_accepting(&err),
            }
        }
    }

    /// One `accept(2)` on a route's listener; WouldBlock clears its ready bit. A Unix client has no IP
    /// address: its pair names it `0.0.0.0:0` in logs and balances it as that (`source-hash` sends every
    /// Unix client to one upstream), and a PROXY header sent for it is v1 `UNKNOWN` or v2 `UNSPEC`
    /// (docs/unix-sockets.md). `None` when the route or listener is gone.
    fn accept_one(
        &mut self,
        route: usize,
        listening: Listening,
    ) -> Option<io::Result<(Conn, SocketAddr)>> {
        let route = self.routes.get_mut(route)?;
        // Accepting again: the next stop, at either limit, is counted (and timed).
        route.at_limit = false;
        route.full_since = None;
        let (accepted, ready) = match listening {
            Listening::Tcp(index) => {
                let listener = route.listeners.get_mut(index)?;
                let accepted = listener.socket.accept();
                let accepted = accepted.map(|(stream, addr)| (Conn::Tcp(stream), addr));
                (accepted, &mut listener.ready)
            }
            Listening::Unix(index) => {
                let listener = route.unix_listeners.get_mut(index)?;
                let accepted = listener.socket.accept();
                let accepted = accepted.map(|(stream, _)| (Conn::Unix(stream), UNIX_CLIENT));
                (accepted, &mut listener.ready)
            }
        };
        if accepted
            .as_ref()
            .is_err_and(|err| err.kind() == io::ErrorKind::WouldBlock)
        {
            *ready = false;
        }
        Some(accepted)
    }

    /// The route's `client_allow`/`client_deny` and per-client limits, on the peer's address (with
    /// `accept_proxy` they wait for the header's: `session::connect`). `None`: the client is reset
    /// (linger 0, then dropped) and counted; else admitted, perhaps under a key of the client table.
    fn admit(
        &mut self,
        key: usize,
        stream: &TcpStream,
        addr: SocketAddr,
    ) -> Option<Option<IpAddr>> {
        let route = self.routes.get_mut(key)?;
        if route.config.accept_proxy {
            return Some(None);
        }
        match route.admit_client(addr.ip(), self.now) {
            Ok(client_key) => Some(client_key),
            Err(why) => {
                self.metrics
                    .client_rejects
                    .count(&route.config.name, why, 1);
                debug!(
                    "client={addr} route={} reset at accept: {}",
                    route.config.name,
                    why.value()
                );
                net::set_reset_on_close(stream);
                self.log_turned_away(key, addr, why.value());
                None
            }
        }
    }

    fn can_accept(&self, route: usize, listening: Listening) -> bool {
        self.accept_paused_until.is_none()
            && self.routes.get(route).is_some_and(|route| {
                let ready = match listening {
                    Listening::Tcp(index) => route.listeners.get(index).map(|l| l.ready),
                    Listening::Unix(index) => route.unix_listeners.get(index).map(|l| l.ready),
                };
                route.below_limit() && ready == Some(true)
            })
    }

    /// A slot of the fd budget for a new pair. When none is free and this reactor holds spare pipes, they
    /// are closed and the slot taken from what they gave back.
    fn take_pair_slot(&mut self) -> Option<Slot> {
        self.siblings.budget.take_for_pair().or_else(|| {
            self.shed_spare_pipes();
            self.siblings.budget.take_for_pair()
        })
    }

    /// Accepting stopped at the process's fd budget with a listener of route `key` still ready: its
    /// clients wait in the backlog. A pair or pipe closing in this reactor frees a slot that the same
    /// turn's accept phase uses; one freed by another reactor is found by looking again shortly.
    fn note_budget_full(&mut self, key: usize) {
        if self.config.threads > 1 && self.budget_retry_at.is_none() {
            self.budget_retry_at = Some(self.now + budget::SHARED_RETRY);
        }
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        if !route.at_limit {
            route.at_limit = true;
            self.metrics.accept_pauses_limit += 1;
            debug!(
                "route {}: the process's fd budget of {} pairs is in use: clients wait in the backlog",
                route.config.name,
                self.siblings.budget.slots()
            );
        }
    }

    /// Counts a route's stop at its `max_connections` once, when it starts.
    fn note_limit(&mut self, key: usize) {
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        if !route.below_limit() {
            // A ready bit left from the accept that filled the route may be stale: only a client really
            // queued starts the stop (and `queue_timeout`'s clock). Cleared, the bit comes back with the
            // next client's edge.
            for listener in route.listeners.iter_mut().filter(|l| l.ready) {
                listener.ready = net::has_queued(&listener.socket);
            }
            for listener in route.unix_listeners.iter_mut().filter(|l| l.ready) {
                listener.ready = net::has_queued(&listener.socket);
            }
        }
        let at_limit = !route.below_limit() && route.any_listener_ready();
        if at_limit && !route.at_limit {
            route.full_since = Some(self.now);
            self.metrics.accept_pauses_limit += 1;
            if let Some(held_back) = route.limit_warning.allow(self.now) {
                warn!(
                    "route {}: at its connection limit ({} open, max_connections {}); {} clients waiting in the backlog{}",
                    route.config.name,
                    route.pairs,
                    route.config.max_connections,
                    waiting(route),
                    more_since(held_back)
                );
            }
        }
        route.at_limit = at_limit;
        if !at_limit {
            route.full_since = None;
        }
    }

    /// `queue_timeout`: route `key` has been at `max_connections` that long without taking one queued
    /// client, so the clients queued on its ready listeners are accepted and reset (at most
    /// `ACCEPT_BUDGET` per listener and turn; the rest next turn). Then the clock is off until the
    /// next client queues behind the limit.
    fn flush_queue(&mut self, key: usize) {
        let mut flushed = 0u64;
        let mut exhausted = None;
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        // Their addresses, for the access log (a Unix client's is `UNIX_CLIENT`).
        let mut clients = Vec::new();
        for listener in route.listeners.iter_mut().filter(|l| l.ready) {
            let socket = &listener.socket;
            let accept = || {
                socket.accept().map(|(stream, addr)| {
                    net::set_reset_on_close(&stream);
                    clients.push(addr);
                })
            };
            flushed += reset_queued(accept, &mut listener.ready, &mut exhausted);
            if exhausted.is_some() {
                break;
            }
        }
        // A Unix client is accepted and closed: no linger to set, it sees the close at once.
        for listener in route.unix_listeners.iter_mut().filter(|l| l.ready) {
            if exhausted.is_some() {
                break;
            }
            let socket = &listener.socket;
            let accept = || socket.accept().map(|_| clients.push(UNIX_CLIENT));
            flushed += reset_queued(accept, &mut listener.ready, &mut exhausted);
        }
        if !route.any_listener_ready() {
            route.at_limit = false;
            route.full_since = None;
        }
        if flushed > 0 {
            debug!(
                "route {}: {flushed} queued clients reset after --queue-timeout at --max-connections ({})",
                route.config.name, route.config.max_connections
            );
        }
        self.metrics.accepts += flushed;
        if flushed > 0 {
            route.counts.accepted(flushed);
            self.metrics.client_rejects.count(
                &route.config.name,
                ClientReject::QueueTimeout,
                flushed,
            );
        }
        for client in clients {
            self.log_turned_away(key, client, ClientReject::QueueTimeout.value());
        }
        if let Some(err) = exhausted {
            self.pause_accepting(&err);
        }
    }

    /// Stops accepting for a short while after fd (or memory) exhaustion. Retrying at once would spin:
    /// the queued connection stays queued and the listener stays readable.
    pub(super) fn pause_accepting(&mut self, err: &io::Error) {
        self.accept_paused_until = Some(self.now + ACCEPT_BACKOFF);
        self.metrics.accept_pauses_exhausted += 1;
        self.shed_spare_pipes();
        if let Some(suppressed) = self.exhaustion_warning.allow(self.now) {
            let kind = if net::is_resource_exhaustion(err) {
                "out of resources"
            } else {
                "unexpected error"
            };
            warn!(
                "accept failed ({kind}): {err}; pausing accepts for {}ms, {} pairs open ({suppressed} similar warnings suppressed)",
                ACCEPT_BACKOFF.as_millis(),
                self.pairs.len()
            );
        }
    }

    /// Accepts queued scrapes, unless accepting is paused: the metrics listener runs out of fds like any
    /// other, and then waits out the same pause (its edge kept) instead of spinning or losing the scrape.
    /// Errors of its own it waits out alone (`MetricsServer::accept`).
    fn accept_scrapes(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        let now = self.now;
        let mut failed = None;
        self.with_metrics_server(|server, registry| failed = server.accept(registry, now));
        if let Some(err) = failed {
            self.pause_accepting(&err);
        }
    }

    pub(super) fn any_accept_ready(&self) -> bool {
        self.accept_paused_until.is_none()
            && (self.siblings.budget.has_room()
                && self
                    .routes
                    .iter()
                    .any(|(_, route)| route.below_limit() && route.any_listener_ready())
                || self
                    .metrics_server
                    .as_ref()
                    .is_some_and(|server| server.is_ready(self.now))
                || self
                    .admin
                    .as_ref()
                    .is_some_and(|server| server.is_ready(self.now)))
    }
}

/// Accepts and drops (`accept` sets up the reset) up to `ACCEPT_BUDGET` clients queued on one listener
/// (`flush_queue`); WouldBlock clears its `ready` bit, any other error but a transient one is kept in
/// `exhausted` and stops. The count flushed.
fn reset_queued(
    mut accept: impl FnMut() -> io::Result<()>,
    ready: &mut bool,
    exhausted: &mut Option<io::Error>,
) -> u64 {
    let mut flushed = 0;
    for _ in 0..ACCEPT_BUDGET {
        match accept() {
            Ok(()) => flushed += 1,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                *ready = false;
                break;
            }
            Err(err) if net::is_passing_accept_error(&err) => {}
            Err(err) => {
                *exhausted = Some(err);
                break;
            }
        }
    }
    flushed
}

/// The clients waiting in a route's listen backlogs: the kernel's count for a TCP listener, at least one
/// for a Unix listener with a connection queued.
fn waiting(route: &Route) -> String {
    let tcp = route.listeners.iter().map(|l| net::queued(&l.socket));
    let unix = route
        .unix_listeners
        .iter()
        .map(|l| net::has_queued(&l.socket));
    let unix = unix.filter(|&queued| queued).count() as u64;
    match tcp.sum::<Option<u32>>() {
        Some(tcp) if unix == 0 => (u64::from(tcp)).to_string(),
        Some(tcp) => format!("at least {}", u64::from(tcp) + unix),
        None => "some".to_string(),
    }
}

/// ` (N more since the last such line)` for a throttled line that held N back, or nothing.
fn more_since(held_back: u64) -> String {
    match held_back {
        0 => String::new(),
        n => format!(" ({n} more since the last such line)"),
    }
}

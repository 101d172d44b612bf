//! A UDP route at work: its client-facing socket, its session table, and the datagrams between them.
//!
//! Each session owns an upstream socket of its own, bound to an ephemeral port and *connected* to the
//! session's upstream: the kernel then delivers the upstream's replies to that socket only (so they go
//! back to the right client with no lookup), filters out datagrams from anyone else, and reports an ICMP
//! port unreachable as ECONNREFUSED on it, which counts as a failure of that upstream (passive health,
//! as a refused TCP connect does); the session then drops its socket and picks another upstream on the
//! client's next datagram.
//!
//! Every socket is registered once, edge-triggered, for reads only: a UDP send never waits for room,
//! it drops. So a run reads until WouldBlock (or a batch shorter than asked for, which proves the queue
//! was emptied: a datagram arriving later raises a new edge), at most [`DATAGRAM_BUDGET`] datagrams per wakeup (then the
//! reactor queues it to go on later, like a pair that used up its byte budget, so one flood cannot
//! starve the other sockets), and every datagram it cannot send at once (the socket would block) is
//! dropped and counted: UDP semantics, and memory that never grows with load. Replies are copied into
//! the route's [`Outbox`] and leave together, each to its client, in one `sendmmsg` when it is full
//! and at the end of the loop turn (`flush`).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::Instant;

use log::{debug, warn};
use mio::net::UdpSocket;
use mio::{Interest, Registry};

use crate::config::{RouteConfig, UpstreamAddr};
use crate::datapath::budget::{FdBudget, Slot};
use crate::observe::metric_kinds::UdpDrop;
use crate::observe::metrics::Metrics;
use crate::session::udp::batch::{self, Batch, Outbox, BATCH};
use crate::session::udp::table::{Removed, Table};
use crate::throttle::Throttle;
use crate::token::{self, MAX_UDP_SESSIONS};
use crate::upstream::endpoint::Tried;
use crate::upstream::health::Evidence;
use crate::upstream::route::{Lease, Route};
use crate::way::Way;

/// Datagrams one socket may move per wakeup before it yields to the rest of the loop.
pub(crate) const DATAGRAM_BUDGET: usize = 16 * BATCH;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// The socket said WouldBlock (or is gone): the next edge brings it back.
    Drained,
    /// It used its budget with datagrams possibly left: run it again before sleeping.
    Yielded,
}

/// What the reactor lends a run.
pub(crate) struct Io<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) metrics: &'a mut Metrics,
    pub(crate) now: Instant,
}

/// A session's upstream socket and what it holds.
#[derive(Debug)]
struct Link {
    socket: UdpSocket,
    lease: Lease,
    /// Its place in the process's fd budget, given back when the link is dropped.
    _slot: Slot,
}

/// One client address's session.
#[derive(Debug, Default)]
struct Session {
    /// `None` before the first datagram is sent, and after the upstream refused one.
    link: Option<Link>,
    /// Endpoints this session has used: a refused one is not picked again until all have been.
    tried: Tried,
}

/// A UDP route: a socket clients send to, and a session per client.
#[derive(Debug)]
pub(crate) struct UdpRoute {
    /// Upstreams, balancer and health, as a TCP route has them (its TCP listeners stay empty).
    pub(crate) route: Route,
    socket: UdpSocket,
    local: SocketAddr,
    /// This route's slot among the reactor's UDP routes: the high bits of its tokens.
    index: usize,
    table: Table<Session>,
    batch: Batch,
    /// Replies for the clients, sent together at the end of the loop turn (or when full).
    outbox: Outbox,
    budget: FdBudget,
    /// A session that could not get a socket (fd budget, EMFILE) or an upstream is logged rarely.
    shortage_warning: Throttle,
}

impl UdpRoute {
    /// Binds `config`'s listen address as UDP route `index`; its sessions draw sockets from `budget`.
    pub(crate) fn bind(
        index: usize,
        uid: u64,
        config: RouteConfig,
        budget: FdBudget,
        now: Instant,
    ) -> Result<UdpRoute, String> {
        let addr = config
            .listen
            .first()
            .copied()
            .ok_or_else(|| format!("udp route {} has no listen address", config.name))?;
        let socket = UdpSocket::bind(addr)
            .map_err(|err| format!("cannot bind udp://{addr} (route {}): {err}", config.name))?;
        let local = socket.local_addr().unwrap_or(addr);
        let limit = config.udp_max_sessions.min(MAX_UDP_SESSIONS);
        let table = Table::new(limit, config.udp_idle_timeout);
        Ok(UdpRoute {
            route: Route::new(uid, config, Vec::new(), None, (now, None)),
            socket,
            local,
            index,
            table,
            batch: Batch::new(),
            outbox: Outbox::new(),
            budget,
            shortage_warning: Throttle::new(std::time::Duration::from_secs(5)),
        })
    }

    /// Registers the client-facing socket, edge-triggered, for reads.
    pub(crate) fn register(&mut self, registry: &Registry) -> io::Result<()> {
        let token = token::udp_token(self.index, None);
        registry.register(&mut self.socket, token, Interest::READABLE)
    }

    /// The address clients send to.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sessions open.
    pub(crate) fn sessions(&self) -> usize {
        self.table.len()
    }

    /// When the least recently used session expires.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.table.next_deadline()
    }

    /// Closes every session idle for the timeout.
    pub(crate) fn expire(&mut self, io: &mut Io<'_>) {
        while let Some(removed) = self.table.expire(io.now) {
            io.metrics.udp_sessions_expired += 1;
            close(removed, &mut self.route, io.registry);
        }
    }

    /// The start line: `listening on udp://ADDR route=NAME upstreams=... settings`.
    pub(crate) fn start_line(&self) -> String {
        let upstreams: Vec<&str> = self
            .route
            .config
            .upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        format!(
            "listening on udp://{} route={} upstreams={}{}",
            self.local,
            self.route.name(),
            upstreams.join(","),
            crate::config::settings::start_line(&self.route.config)
        )
    }

    /// Client datagrams: read in batches until WouldBlock or the budget, each sent on its client's
    /// session (made on its first datagram).
    pub(crate) fn on_client_readable(&mut self, io: &mut Io<'_>) -> Run {
        let mut moved = 0;
        while moved < DATAGRAM_BUDGET {
            match self.batch.recv(&self.socket, BATCH) {
                Ok(count) => {
                    self.forward_batch(count, io);
                    moved += count;
                    if count < BATCH {
                        // A short batch emptied the queue: a datagram that arrives from now on
                        // brings a new edge, so the read that would say WouldBlock is saved.
                        return Run::Drained;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Run::Drained,
                Err(err) => {
                    // An unconnected socket reports no peer's errors; whatever this is, reading on
                    // would only repeat it, and the next datagram brings a new edge.
                    warn!("udp://{} (route {}): {err}", self.local, self.route.name());
                    return Run::Drained;
                }
            }
        }
        Run::Yielded
    }

    /// Upstream replies on session `slot`'s socket: read in batches, sent to its client in batches.
    pub(crate) fn on_upstream_readable(&mut self, slot: usize, io: &mut Io<'_>) -> Run {
        let Some(client) = self.table.client(slot) else {
            return Run::Drained;
        };
        let mut moved = 0;
        while moved < DATAGRAM_BUDGET {
            let Some(link) = self.table.get_mut(slot).and_then(|s| s.link.as_ref()) else {
                return Run::Drained;
            };
            let endpoint = link.lease.slot();
            match self.batch.recv(&link.socket, BATCH) {
                Ok(count) => {
                    moved += count;
                    self.table.touch(slot, io.now);
                    self.route.connect_succeeded(endpoint, io.now);
                    self.reply(client, count, io.metrics);
                    if count < BATCH {
                        return Run::Drained; // as for the client side: the queue was emptied
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Run::Drained,
                Err(err) => {
                    let cause = match err.kind() {
                        io::ErrorKind::ConnectionRefused => UdpDrop::Refused,
                        _ => UdpDrop::Error,
                    };
                    io.metrics.udp_drops[cause] += 1;
                    debug!(
                        "udp route {}: upstream {} of client {client}: {err}",
                        self.route.name(),
                        self.route.endpoint_label(endpoint)
                    );
                    self.unlink(slot, io);
                    return Run::Drained;
                }
            }
        }
        Run::Yielded
    }

    /// Queues the first `count` datagrams of the batch for `client`, flushing the outbox when full.
    fn reply(&mut self, client: SocketAddr, count: usize, metrics: &mut Metrics) {
        for index in 0..count {
            let (datagram, _) = self.batch.get(index);
            if self.outbox.push(datagram, client) {
                self.flush(metrics);
            }
        }
    }

    /// Sends the queued replies, each to its client, from the route's socket.
    pub(crate) fn flush(&mut self, metrics: &mut Metrics) {
        if self.outbox.is_empty() {
            return;
        }
        let flushed = self.outbox.flush(&self.socket);
        metrics.udp_datagrams[Way::UpstreamToClient] += flushed.sent;
        metrics.udp_bytes[Way::UpstreamToClient] += flushed.bytes;
        if let Some(err) = flushed.error {
            let cause = match err.kind() {
                io::ErrorKind::WouldBlock => UdpDrop::ClientBusy,
                _ => UdpDrop::Error,
            };
            metrics.udp_drops[cause] += flushed.dropped;
        }
    }

    /// Forwards a received batch, one run of consecutive datagrams from the same client at a time (one
    /// `sendmmsg` each).
    fn forward_batch(&mut self, count: usize, io: &mut Io<'_>) {
        let mut start = 0;
        while start < count {
            let peer = self.batch.get(start).1;
            let mut end = start + 1;
            while end < count && self.batch.get(end).1 == peer {
                end += 1;
            }
            if let Some(client) = peer {
                self.forward_run(client, start..end, io);
            }
            start = end;
        }
    }

    /// Sends datagrams `run` of the batch, all from `client`, on its session.
    fn forward_run(&mut self, client: SocketAddr, run: Range<usize>, io: &mut Io<'_>) {
        let slot = self.session_of(client, io);
        self.table.touch(slot, io.now);
        if let Err(cause) = self.link(slot, client, io) {
            io.metrics.udp_drops[cause] += run.len() as u64;
            if let Some(suppressed) = self.shortage_warning.allow(io.now) {
                warn!(
                    "udp route {}: dropping datagrams of client {client}: {} ({suppressed} similar warnings suppressed)",
                    self.route.name(),
                    match cause {
                        UdpDrop::NoUpstream => "no upstream to send to",
                        _ => "no socket for its session (fd budget or limit)",
                    }
                );
            }
            return;
        }
        let mut datagrams: [&[u8]; BATCH] = [&[]; BATCH];
        let len = run.len().min(BATCH);
        for (datagram, index) in datagrams.iter_mut().zip(run) {
            *datagram = self.batch.get(index).0;
        }
        let datagrams = &datagrams[..len];
        let Some(link) = self.table.get_mut(slot).and_then(|s| s.link.as_ref()) else {
            return;
        };
        let (sent, error) = batch::send(&link.socket, datagrams, &[]);
        count_sent(io.metrics, Way::ClientToUpstream, &datagrams[..sent]);
        let Some(err) = error else {
            return;
        };
        let cause = match err.kind() {
            io::ErrorKind::WouldBlock => UdpDrop::UpstreamBusy,
            io::ErrorKind::ConnectionRefused => UdpDrop::Refused,
            _ => UdpDrop::Error,
        };
        io.metrics.udp_drops[cause] += (len - sent) as u64;
        if cause != UdpDrop::UpstreamBusy {
            self.unlink(slot, io);
        }
    }

    /// The slot of `client`'s session, made if it has none (evicting the least recently used one when
    /// the table is full).
    fn session_of(&mut self, client: SocketAddr, io: &mut Io<'_>) -> usize {
        if let Some(slot) = self.table.find(&client) {
            return slot;
        }
        let (slot, evicted) = self.table.insert(client, Session::default(), io.now);
        io.metrics.udp_sessions_created += 1;
        if let Some(removed) = evicted {
            io.metrics.udp_sessions_evicted += 1;
            close(removed, &mut self.route, io.registry);
        }
        slot
    }

    /// Gives session `slot` an upstream socket if it has none: an endpoint it has not been refused by
    /// (all of them again once every one has), a slot of the fd budget, a connected socket.
    fn link(&mut self, slot: usize, client: SocketAddr, io: &mut Io<'_>) -> Result<(), UdpDrop> {
        let token = token::udp_token(self.index, Some(slot));
        let UdpRoute {
            route,
            table,
            budget,
            ..
        } = self;
        let Some(session) = table.get_mut(slot) else {
            return Err(UdpDrop::Error);
        };
        if session.link.is_some() {
            return Ok(());
        }
        let leased = route
            .lease(client.ip(), &mut session.tried, io.now)
            .or_else(|| {
                session.tried = Tried::default();
                route.lease(client.ip(), &mut session.tried, io.now)
            });
        // A udp route's upstreams are all `udp://HOST:PORT` (`config::check_protocol`): IP addresses.
        let Some((lease, UpstreamAddr::Inet(addr))) = leased else {
            if let Some((lease, _)) = leased {
                route.give_back(lease);
            }
            return Err(UdpDrop::NoUpstream);
        };
        let Some(fd_slot) = budget.take_for_pair() else {
            route.give_back(lease);
            return Err(UdpDrop::NoSocket);
        };
        match connected_socket(addr, io.registry, token) {
            Ok(socket) => {
                session.link = Some(Link {
                    socket,
                    lease,
                    _slot: fd_slot,
                });
                Ok(())
            }
            Err(err) => {
                debug!("udp route {}: no socket to {addr}: {err}", route.name());
                route.give_back(lease);
                Err(UdpDrop::NoSocket)
            }
        }
    }

    /// Session `slot`'s upstream refused (or failed) a datagram: a failure of that endpoint for passive
    /// health, and the session lets go of it; its next datagram picks another.
    fn unlink(&mut self, slot: usize, io: &mut Io<'_>) {
        let Some(link) = self.table.get_mut(slot).and_then(|s| s.link.take()) else {
            return;
        };
        self.route
            .connect_failed(link.lease.slot(), io.now, Evidence::Connect);
        close_link(link, &mut self.route, io.registry);
    }
}

/// Counts datagrams sent one way.
fn count_sent(metrics: &mut Metrics, way: Way, sent: &[&[u8]]) {
    metrics.udp_datagrams[way] += sent.len() as u64;
    metrics.udp_bytes[way] += sent.iter().map(|d| d.len() as u64).sum::<u64>();
}

/// A socket on an ephemeral port of `addr`'s family, connected to `addr`, registered as `token`.
fn connected_socket(
    addr: SocketAddr,
    registry: &Registry,
    token: mio::Token,
) -> io::Result<UdpSocket> {
    let any = match addr {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let mut socket = UdpSocket::bind(any)?;
    socket.connect(addr)?;
    registry.register(&mut socket, token, Interest::READABLE)?;
    Ok(socket)
}

/// Ends a session taken out of the table.
fn close((_, session): Removed<Session>, route: &mut Route, registry: &Registry) {
    if let Some(link) = session.link {
        close_link(link, route, registry);
    }
}

/// Closes a session's socket and gives its endpoint back.
fn close_link(mut link: Link, route: &mut Route, registry: &Registry) {
    // Closing the socket removes it from epoll anyway; deregistering first keeps mio's contract.
    let _ = registry.deregister(&mut link.socket);
    route.give_back(link.lease);
}

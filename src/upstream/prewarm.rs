//! `--prewarm N`: upstream connections opened ahead of the clients that will use them, so a new client
//! skips the connect handshake.
//!
//! This is the articles' connection pool, made safe for a byte-stream forwarder: a pooled connection
//! is one that has *never carried a client's bytes*. It is handed to exactly one client and then belongs
//! to that pair; it never comes back. Reusing a connection another client used would splice two
//! clients' streams into one conversation with the upstream.
//!
//! A warm connection that the upstream closes or resets while it waits (an idle timeout on the server,
//! a restart) is noticed through its edge-triggered events, discarded and replaced. Bytes the upstream
//! sends unprompted (a banner, as SMTP or SSH do) stay queued in the socket and reach the client that
//! takes it, exactly as they would on a fresh connection. Like the metrics server, this module is handed
//! the `Registry` for its own sockets.

use std::io;
use std::time::{Duration, Instant};

use log::debug;
use mio::{Interest, Registry};
use slab::Slab;

use crate::config::UpstreamAddr;
use crate::datapath::net::{ConnectState, StreamOptions};
use crate::datapath::stream::{Conn, Socket};
use crate::token::{self, MAX_WARM};

/// First pause after a failed warm connect; it doubles up to [`MAX_BACKOFF`] while failures continue.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One pre-opened upstream connection.
#[derive(Debug)]
struct Warm {
    /// TCP, or a Unix stream to a `unix:` upstream.
    stream: Conn,
    /// The connect has been confirmed (peer_addr / take_error), not just started.
    connected: bool,
    /// While connecting: when to give up (the route's connect timeout). A blackholed upstream would
    /// otherwise hold the socket for the kernel's whole SYN retry schedule (about two minutes).
    give_up_at: Instant,
    /// The route it was opened for (its uid, which a reload never reuses) and the upstream's index
    /// there (an endpoint slot): a client takes only a connection to the endpoint its route's balancer
    /// picked for it.
    route: u64,
    upstream: usize,
    /// Where it connects: a slot freed by a re-resolution may hold another address by the time the
    /// pool is told ([`WarmPool::forget_endpoints`]).
    addr: UpstreamAddr,
}

/// The pool of warm upstream connections, for every route.
#[derive(Debug)]
pub(crate) struct WarmPool {
    /// How many connections (connected or connecting) to keep per route.
    target: usize,
    conns: Slab<Warm>,
    /// No refill before this, after a failed connect: a down upstream must not be hammered.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Spreads a route's warm connections over its upstreams, round-robin.
    cursor: usize,
}

impl WarmPool {
    /// A pool that keeps `target` connections per route (at most [`MAX_WARM`] in all).
    pub(crate) fn new(target: usize) -> WarmPool {
        WarmPool {
            target,
            conns: Slab::new(),
            retry_at: None,
            backoff: FIRST_BACKOFF,
            cursor: 0,
        }
    }

    /// The next moment the pool needs the loop: a backoff that ends, or a connect that times out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let connects = self
            .conns
            .iter()
            .filter(|(_, warm)| !warm.connected)
            .map(|(_, warm)| warm.give_up_at)
            .min();
        self.retry_at.into_iter().chain(connects).min()
    }

    /// Gives up on connects past their timeout (as on a refused connect: discard, back off).
    pub(crate) fn expire_connects(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, warm)| !warm.connected && warm.give_up_at <= now)
            .map(|(slot, _)| slot)
            .collect();
        for &slot in &late {
            self.conns.remove(slot);
        }
        if !late.is_empty() {
            // One backoff step per turn, however many connects ran out together.
            let err = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            self.back_off(now, &err);
        }
    }

    /// Forgets a backoff whose time has come. The reactor sleeps until `retry_at`; one left in the past
    /// (the backoff ran out while no route had an upstream up to connect to) would make every
    /// `epoll_wait` return at once: a busy loop.
    pub(crate) fn expire_backoff(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
        }
    }

    /// Connections confirmed and waiting for a client.
    #[cfg(test)]
    fn ready(&self) -> usize {
        self.conns.iter().filter(|(_, warm)| warm.connected).count()
    }

    /// Starts connects until route `route` has `target` connections, spread over `upstreams` (the
    /// indices and addresses of the ones that are up), unless the pool is backing off. Each may take
    /// `connect_timeout`.
    pub(crate) fn refill(
        &mut self,
        registry: &Registry,
        route: u64,
        upstreams: &[(usize, UpstreamAddr)],
        (options, connect_timeout): (StreamOptions, Duration),
        now: Instant,
    ) {
        self.expire_backoff(now);
        if upstreams.is_empty() || self.retry_at.is_some() {
            return;
        }
        let mut held = self.conns.iter().filter(|(_, w)| w.route == route).count();
        while held < self.target && self.conns.len() < MAX_WARM {
            self.cursor = self.cursor.wrapping_add(1);
            let (upstream, addr) = &upstreams[self.cursor % upstreams.len()];
            let entry = self.conns.vacant_entry();
            let started = Conn::connect(addr, options).and_then(|mut stream| {
                let both = Interest::READABLE | Interest::WRITABLE;
                registry.register(&mut stream, token::warm_token(entry.key()), both)?;
                Ok(stream)
            });
            match started {
                Ok(stream) => {
                    entry.insert(Warm {
                        stream,
                        connected: false,
                        give_up_at: now + connect_timeout,
                        route,
                        upstream: *upstream,
                        addr: addr.clone(),
                    });
                    held += 1;
                }
                Err(err) => return self.back_off(now, &err),
            }
        }
    }

    /// Handles an event on warm connection `slot` (`hung_up`: it carried read-closed or error):
    /// confirms a connect, or notices that the upstream gave up on a waiting connection.
    pub(crate) fn on_event(&mut self, slot: usize, hung_up: bool, now: Instant) {
        let Some(warm) = self.conns.get_mut(slot) else {
            return; // taken by a client or discarded earlier in this batch
        };
        if !warm.connected {
            match warm.stream.connect_result() {
                ConnectState::Pending => return,
                ConnectState::Connected => warm.connected = true,
                ConnectState::Failed(err) => {
                    self.conns.remove(slot);
                    return self.back_off(now, &err);
                }
            }
        }
        // The event's read-closed/error bit is what catches a FIN that follows a greeting: a peek
        // would see the greeting and call the connection open.
        if hung_up || !still_open(&warm.stream) {
            // An upstream that accepts and hangs up at once (a balancer in front of a dead backend, a
            // server at its limit) would otherwise be reconnected to on every turn: back off as for a
            // failed connect.
            self.conns.remove(slot);
            let closed = io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the upstream while waiting",
            );
            self.back_off(now, &closed);
        }
    }

    /// Hands a confirmed connection to upstream `upstream` of route `route` to a client, for good. The
    /// caller re-registers it under the pair's token.
    pub(crate) fn take(&mut self, route: u64, upstream: usize) -> Option<Conn> {
        let slot = self.conns.iter().find_map(|(slot, warm)| {
            (warm.connected && warm.route == route && warm.upstream == upstream).then_some(slot)
        })?;
        // A connection that reached a client proves the upstream healthy: the next failure starts the
        // backoff afresh. (A mere connect does not: some upstreams accept and hang up at once.)
        self.backoff = FIRST_BACKOFF;
        Some(self.conns.remove(slot).stream)
    }

    /// Closes route `route`'s connections that `live` says no to, asked with their endpoint slot and
    /// address: an endpoint retired by a re-resolution takes no new client, and its slot, once freed,
    /// may already hold another address (of any upstream of the route) when the pool is told.
    pub(crate) fn forget_endpoints(
        &mut self,
        route: u64,
        live: impl Fn(usize, &UpstreamAddr) -> bool,
    ) {
        self.conns
            .retain(|_, warm| warm.route != route || live(warm.upstream, &warm.addr));
    }

    /// Closes the connections of a route that a reload removed or replaced.
    pub(crate) fn forget_route(&mut self, route: u64) {
        self.conns.retain(|_, warm| warm.route != route);
    }

    fn back_off(&mut self, now: Instant, err: &io::Error) {
        debug!(
            "warm upstream connect failed: {err}; next try in {}ms",
            self.backoff.as_millis()
        );
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// A waiting connection is still usable unless a peek finds EOF or an error. Data waiting is fine: it
/// is the upstream's greeting and belongs to whoever takes the connection.
fn still_open(stream: &Conn) -> bool {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe) {
        Ok(0) => false,
        Ok(_) => true,
        Err(err) => err.kind() == io::ErrorKind::WouldBlock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    fn options() -> StreamOptions {
        StreamOptions {
            nodelay: true,
            keepalive: None,
        }
    }

    /// Runs the poll loop until `done` holds or 5 s pass.
    fn pump_until(poll: &mut Poll, pool: &mut WarmPool, done: impl Fn(&WarmPool) -> bool) {
        let mut events = Events::with_capacity(64);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done(pool) {
            assert!(Instant::now() < deadline, "pool never reached the state");
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .expect("poll");
            for event in events.iter() {
                let slot = event.token().0 - token::warm_token(0).0;
                let hung_up = event.is_read_closed() || event.is_error();
                pool.on_event(slot, hung_up, Instant::now());
            }
        }
    }

    #[test]
    fn test_fills_to_target_and_hands_each_connection_out_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut poll = Poll::new().expect("poll");
        let mut pool = WarmPool::new(3);
        pool.refill(
            poll.registry(),
            7,
            &[(0, addr.into())],
            (options(), Duration::from_secs(5)),
            Instant::now(),
        );
        pump_until(&mut poll, &mut pool, |pool| pool.ready() == 3);
        assert!(
            pool.take(8, 0).is_none(),
            "another route's connections are not handed out"
        );
        assert!(
            pool.take(7, 1).is_none(),
            "nor connections to another upstream"
        );
        let first = pool.take(7, 0).expect("a warm connection");
        assert_eq!(pool.ready(), 2, "taken connections leave the pool for good");
        assert!(matches!(first.connect_result(), ConnectState::Connected));
        pool.forget_route(7);
        assert_eq!(pool.ready(), 0);
    }

    #[test]
    fn test_connection_closed_by_upstream_is_discarded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut poll = Poll::new().expect("poll");
        let mut pool = WarmPool::new(1);
        pool.refill(
            poll.registry(),
            1,
            &[(0, addr.into())],
            (options(), Duration::from_secs(5)),
            Instant::now(),
        );
        pump_until(&mut poll, &mut pool, |pool| pool.ready() == 1);
        let (server_side, _) = listener.accept().expect("accept");
        drop(server_side);
        pump_until(&mut poll, &mut pool, |pool| pool.conns.is_empty());
    }

    #[test]
    fn test_refused_upstream_backs_off() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let mut poll = Poll::new().expect("poll");
        let mut pool = WarmPool::new(2);
        pool.refill(
            poll.registry(),
            1,
            &[(0, addr.into())],
            (options(), Duration::from_secs(5)),
            Instant::now(),
        );
        pump_until(&mut poll, &mut pool, |pool| pool.retry_at.is_some());
        assert_eq!(pool.ready(), 0);
    }
}

//! The connect path over loopback sockets: failover and its lease accounting, CONNECT destinations'
//! addresses, lookups.

use std::io::Read;
use std::time::Duration;

use mio::Poll;

use super::*;
use crate::config::UpstreamConfig;
use crate::datapath::readiness::Event;
use crate::session::pair::tests::{looking_up, run_event};
use crate::session::pair::Phase;
use crate::upstream::route::tests::route as route_config;

/// A lookup queue that takes every name.
#[derive(Default)]
struct Queue {
    asked: Vec<String>,
}

impl Lookups for Queue {
    fn look_up(
        &mut self,
        _: usize,
        _: u32,
        host_port: String,
        _: Instant,
    ) -> Result<(), &'static str> {
        self.asked.push(host_port);
        Ok(())
    }
}

/// What the reactor would lend: a poller, one route over `upstreams`, counters.
struct Harness {
    poll: Poll,
    route: Route,
    metrics: Metrics,
    warning: Throttle,
    lookups: Queue,
}

impl Harness {
    fn new(upstreams: &[SocketAddr], attempts: usize) -> Harness {
        let mut config = route_config(None, &["127.0.0.1:0"]);
        if !upstreams.is_empty() {
            config.upstreams = upstreams
                .iter()
                .map(|addr| UpstreamConfig {
                    name: addr.to_string(),
                    addrs: Ok(vec![(*addr).into()]),
                    weight: 1,
                })
                .collect();
        }
        config.connect_attempts = attempts;
        let now = Instant::now();
        Harness {
            poll: Poll::new().expect("poll"),
            route: Route::new(1, config, Vec::new(), None, (now, None)),
            metrics: Metrics::default(),
            warning: Throttle::new(Duration::from_secs(10)),
            lookups: Queue::default(),
        }
    }

    fn cx(&mut self, now: Instant) -> Context<'_> {
        Context {
            registry: self.poll.registry(),
            route: &mut self.route,
            route_key: 0,
            metrics: &mut self.metrics,
            warm: None,
            lookups: Some(&mut self.lookups),
            lookup_warning: &mut self.warning,
            now,
            exhausted: None,
            access_log: None,
        }
    }

    fn advance(&mut self, pair: &mut Pair, step: Step, now: Instant) -> Outcome {
        advance(&mut self.cx(now), 0, pair, step)
    }

    /// A client accepted on the route, as the reactor hands it over.
    fn open(&mut self, id: u32, now: Instant) -> (Pair, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, addr) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("nonblocking");
        let accepted = mio::net::TcpStream::from_std(accepted);
        let pair = open(
            &mut self.cx(now),
            (0, id),
            (Conn::Tcp(accepted), addr),
            None,
            Splice::Off,
        )
        .expect("a pair");
        (pair, client)
    }

    /// Endpoint `slot`'s live-connection count and failed connects.
    fn endpoint(&self, slot: usize) -> (usize, u64) {
        let endpoint = self.route.upstreams.get(slot).expect("endpoint");
        (endpoint.active, endpoint.connect_failures)
    }

    /// Every endpoint's `active` is the number of `pairs` holding a lease on it: none forgotten, none
    /// given back twice.
    fn assert_leases(&self, pairs: &[&Pair]) {
        for (slot, endpoint) in self.route.upstreams.live() {
            let held = pairs
                .iter()
                .filter(|pair| pair.lease().is_some_and(|lease| lease.slot() == slot))
                .count();
            assert_eq!(endpoint.active, held, "endpoint {}", endpoint.label);
        }
    }
}

/// A loopback address nothing listens on (its listener is gone): a connect to it is refused.
fn refusing_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Reads what the client was answered (the pair closes its end after the status is written).
fn answer_to(client: &mut std::net::TcpStream) -> String {
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    client.read_to_string(&mut answer).expect("read");
    answer
}

/// Feeds the pair upstream error events until its refused connect is seen (loopback answers a SYN
/// to a closed port with an RST at once, but the non-blocking connect reports it a moment later).
fn refused(pair: &mut Pair, now: Instant) -> Outcome {
    let failed = Event {
        writable: true,
        error: true,
        ..Event::default()
    };
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let outcome = run_event(pair, Side::Upstream, failed, now);
        if outcome != Outcome::Open || Instant::now() > give_up {
            return outcome;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`looking_up`], and the lookup found two addresses nothing listens on: the pair is connecting to
/// the first. Returns the second too.
fn connecting_to_first_of_two(
    harness: &mut Harness,
    now: Instant,
) -> (Pair, std::net::TcpStream, SocketAddr) {
    let (mut pair, client) = looking_up(now);
    let (first, second) = (refusing_address(), refusing_address());
    let outcome = harness.advance(&mut pair, Step::Looked(Ok(vec![first, second])), now);
    assert_eq!(outcome, Outcome::Open);
    assert_eq!(pair.phase(), Phase::Connecting);
    assert!(pair.upstream().is_some() && pair.lease().is_none());
    (pair, client, second)
}

/// A route client whose connect is refused fails over to an endpoint it has not tried, and is closed
/// when `connect_attempts` are spent. Each failure counts once against its endpoint, and each endpoint
/// is given back exactly once: a second pair holds the endpoint the first fails over to, so a double
/// give-back shows as well as a forgotten one.
#[test]
fn test_connecting_refused_fails_over_and_gives_each_endpoint_back_once() {
    let now = Instant::now();
    let mut harness = Harness::new(&[refusing_address(), refusing_address()], 2);
    let (mut first, _client1) = harness.open(1, now);
    let (mut second, _client2) = harness.open(2, now);
    let (a, b) = (
        first.lease().expect("leased").slot(),
        second.lease().expect("leased").slot(),
    );
    assert_ne!(a, b, "round robin spreads the two clients");
    harness.assert_leases(&[&first, &second]);
    let outcome = refused(&mut first, now);
    assert_eq!(outcome, Outcome::ConnectFailed(Cause::ConnectRefused));
    assert_eq!(
        harness.advance(&mut first, Step::Failed(Cause::ConnectRefused), now),
        Outcome::Open
    );
    assert_eq!(
        first.lease().map(Lease::slot),
        Some(b),
        "failed over to the untried endpoint"
    );
    assert_eq!(harness.metrics.failovers, 1);
    assert_eq!(harness.endpoint(a), (0, 1));
    harness.assert_leases(&[&first, &second]);
    let outcome = refused(&mut first, now);
    assert_eq!(
        harness.advance(&mut first, Step::Failed(Cause::ConnectRefused), now),
        Outcome::Close(Cause::ConnectRefused),
        "{outcome:?}: two attempts spent"
    );
    assert!(first.lease().is_none() && first.upstream().is_none());
    assert_eq!(harness.endpoint(b), (1, 1));
    harness.assert_leases(&[&second]);
    release(&mut harness.route, &mut first, now);
    release(&mut harness.route, &mut second, now);
    harness.assert_leases(&[]);
    assert_eq!(harness.endpoint(b), (0, 1));
}

/// An established pair holds its endpoint until it closes, and gives it back once: a second close
/// of the same pair gives nothing back (the other pair on it still counts).
#[test]
fn test_established_close_gives_the_endpoint_back_once() {
    let now = Instant::now();
    let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut harness = Harness::new(&[live.local_addr().expect("addr")], 1);
    let (mut first, _client1) = harness.open(1, now);
    let (mut second, _client2) = harness.open(2, now);
    live.accept().expect("accept");
    let connected = Event {
        writable: true,
        ..Event::default()
    };
    assert_eq!(
        run_event(&mut first, Side::Upstream, connected, now),
        Outcome::Connected
    );
    assert_eq!(
        harness.advance(&mut first, Step::Connected, now),
        Outcome::Open
    );
    assert_eq!(first.phase(), Phase::Established);
    let slot = first.lease().expect("held while established").slot();
    assert_eq!(harness.endpoint(slot), (2, 0));
    release(&mut harness.route, &mut first, now);
    harness.assert_leases(&[&second]);
    release(&mut harness.route, &mut first, now);
    assert_eq!(harness.endpoint(slot), (1, 0));
    release(&mut harness.route, &mut second, now);
    harness.assert_leases(&[]);
}

/// A CONNECT to a host name is handed to the lookup threads, and the pair waits without a socket.
#[test]
fn test_greeted_named_is_looked_up() {
    let now = Instant::now();
    let mut harness = Harness::new(&[], 1);
    let (mut pair, _client) = looking_up(now);
    let step = Step::Greeted(Target::Named("localhost:80".into()));
    assert_eq!(harness.advance(&mut pair, step, now), Outcome::Open);
    assert_eq!(harness.lookups.asked, ["localhost:80"]);
    assert!(pair.awaits_address());
    assert!(pair.upstream().is_none());
}

/// The lookup runs under the connect deadline: an answer that comes past it is the deadline's, 504,
/// and the pair no longer waits for an address, so a later answer would be dropped as stale.
#[test]
fn test_looked_past_the_connect_deadline_is_504() {
    let now = Instant::now();
    let mut harness = Harness::new(&[], 1);
    let (mut pair, mut client) = looking_up(now);
    let late = now + harness.route.deadlines.connect;
    let step = Step::Looked(Ok(vec![refusing_address()]));
    harness.advance(&mut pair, step, late);
    assert!(!pair.awaits_address());
    assert_eq!(pair.phase(), Phase::Refusing);
    let answer = answer_to(&mut client);
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
}

/// A name with several addresses: a refused connect moves on to the next address, in the resolver's
/// order, and the client is answered 502 only when none is left.
#[test]
fn test_destination_refused_moves_on_to_the_next_address() {
    let now = Instant::now();
    let mut harness = Harness::new(&[], 1);
    let (mut pair, mut client, second) = connecting_to_first_of_two(&mut harness, now);
    let outcome = refused(&mut pair, now);
    assert_eq!(outcome, Outcome::ConnectFailed(Cause::ConnectRefused));
    assert_eq!(
        harness.advance(&mut pair, Step::Failed(Cause::ConnectRefused), now),
        Outcome::Open
    );
    assert_eq!(pair.phase(), Phase::Connecting);
    assert!(pair.upstream().is_some(), "connecting to {second}");
    assert_eq!(harness.metrics.failovers, 1);
    refused(&mut pair, now);
    harness.advance(&mut pair, Step::Failed(Cause::ConnectRefused), now);
    assert_eq!(pair.phase(), Phase::Refusing);
    let answer = answer_to(&mut client);
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
}

/// The next address after a refused one is connected to like the first: the client's tunnel opens.
#[test]
fn test_destination_next_address_can_connect() {
    let now = Instant::now();
    let mut harness = Harness::new(&[], 1);
    let (mut pair, _client) = looking_up(now);
    let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let live_addr = live.local_addr().expect("addr");
    let step = Step::Looked(Ok(vec![refusing_address(), live_addr]));
    harness.advance(&mut pair, step, now);
    refused(&mut pair, now);
    harness.advance(&mut pair, Step::Failed(Cause::ConnectRefused), now);
    live.accept().expect("accept");
    let connected = Event {
        writable: true,
        ..Event::default()
    };
    assert_eq!(
        run_event(&mut pair, Side::Upstream, connected, now),
        Outcome::Connected
    );
    harness.advance(&mut pair, Step::Connected, now);
    assert_eq!(pair.phase(), Phase::Established);
}

/// A destination address that times out gives way to the next, which has a connect timeout of its
/// own; past the last one's, the client gets 504.
#[test]
fn test_destination_timed_out_gives_way_to_the_next_then_504() {
    let now = Instant::now();
    let mut harness = Harness::new(&[], 1);
    let (mut pair, mut client, second) = connecting_to_first_of_two(&mut harness, now);
    let limits = harness.route.deadlines;
    let first_deadline = now + limits.connect;
    let outcome = pair.expire(Cause::ConnectTimeout, first_deadline);
    assert_eq!(outcome, Outcome::ConnectFailed(Cause::ConnectTimeout));
    let step = Step::Failed(Cause::ConnectTimeout);
    harness.advance(&mut pair, step, first_deadline);
    assert!(pair.upstream().is_some(), "connecting to {second}");
    assert_eq!(
        pair.deadline(&limits),
        Some((first_deadline + limits.connect, Cause::ConnectTimeout))
    );
    let step = Step::Failed(Cause::ConnectTimeout);
    harness.advance(&mut pair, step, first_deadline + limits.connect);
    assert_eq!(pair.phase(), Phase::Refusing);
    let answer = answer_to(&mut client);
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
}

/// A lookup that found nothing, or failed, is answered 502 without a connect.
#[test]
fn test_destination_without_addresses_is_502() {
    for addrs in [
        Ok(Vec::new()),
        Err("cannot resolve x:1: no address".to_string()),
    ] {
        let now = Instant::now();
        let mut harness = Harness::new(&[], 1);
        let (mut pair, mut client) = looking_up(now);
        assert_eq!(
            harness.advance(&mut pair, Step::Looked(addrs), now),
            Outcome::Open
        );
        assert_eq!(pair.phase(), Phase::Refusing);
        let answer = answer_to(&mut client);
        assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    }
}

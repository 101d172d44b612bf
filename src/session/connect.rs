//! Getting a pair its upstream, the whole way: pick (or look up), connect, time out, fail over, establish
//! or give up. The reactor calls in with a [`Context`] (what this needs of it, borrowed for one call) at
//! the moments the connect moves, and acts on the [`Outcome`] it gets back (keep, close, yield):
//!
//! | call / step                     | what happens here                                              |
//! |---------------------------------|----------------------------------------------------------------|
//! | [`open`] (a client accepted)    | a greeting route: register the client, wait for the greeting; else the first attempt, a `--prewarm` connection first, and a client with nothing to try is reset at once |
//! | `Step::Greeted(target)`         | the route's upstreams, one address, or (a host name) a lookup  |
//! | `Step::Looked(addrs)`           | the destination's addresses become the candidates; 504 past the deadline |
//! | `Step::Failed(cause)`           | the attempt's failure counts against its endpoint; the next candidate, or give up |
//! | `Step::Connected`               | the success counts for its endpoint; the pair is established   |
//!
//! Which candidate comes next, and when to give up, is [`crate::session::attempt`]'s one policy. Each
//! attempt's socket is registered here under the pair's upstream token, and each attempt to a route
//! endpoint holds a [`Lease`] on it from the pick until the attempt fails or the pair closes; both end in
//! `give_back` below, the only place a lease ends, and with it the endpoint's `active` count.
//! Successes and failures reach the route's passive health from here, explicitly, as they happen.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry};
use socket2::SockRef;

use crate::close::Cause;
use crate::config::Splice;
use crate::datapath::net;
use crate::observe::metrics::Metrics;
use crate::session::attempt::{Failed, GiveUp, Next, Plan};
use crate::session::pair::{Outcome, Pair};
use crate::throttle::Throttle;
use crate::token::{PairToken, Side};
use crate::upstream::endpoint::Tried;
use crate::upstream::prewarm::WarmPool;
use crate::upstream::route::{Lease, Route};
use crate::wire::greeting::{Greeting, Target};

/// The lookup threads, as far as a CONNECT to a host name needs them.
pub(crate) trait Lookups {
    /// Queues a lookup of `host_port` for the pair in slab slot `slot` whose id is `id`; `until` is its
    /// connect deadline, past which nobody waits for the answer. `Err` says why it was not queued.
    fn look_up(
        &mut self,
        slot: usize,
        id: u32,
        host_port: String,
        until: Instant,
    ) -> Result<(), &'static str>;
}

/// What the connect path borrows from the reactor for one call.
pub(crate) struct Context<'a> {
    /// To register each attempt's socket under the pair's upstream token.
    pub registry: &'a Registry,
    /// The pair's route, and its slab slot.
    pub route: &'a mut Route,
    pub route_key: usize,
    pub metrics: &'a mut Metrics,
    /// `--prewarm` connections, taken only for a client's first attempt at accept.
    pub warm: Option<&'a mut WarmPool>,
    /// The lookup threads, if they exist.
    pub lookups: Option<&'a mut dyn Lookups>,
    /// Lookups that could not be queued are warned about at most this often.
    pub lookup_warning: &'a mut Throttle,
    pub now: Instant,
    /// Set when a connect failed for want of fds or memory: the reactor pauses accepting.
    pub exhausted: Option<io::Error>,
}

/// A moment in a pair's connect, reported by the reactor.
#[derive(Debug)]
pub(crate) enum Step {
    /// Its greeting is complete and names this target.
    Greeted(Target),
    /// The lookup of its CONNECT destination answered (the reactor dropped stale answers).
    Looked(Result<Vec<SocketAddr>, String>),
    /// The attempt's connect completed.
    Connected,
    /// The attempt failed with this cause (refused, error, or its connect timeout).
    Failed(Cause),
}

/// A connect the policy chose and the kernel accepted to start.
struct Started {
    stream: TcpStream,
    lease: Option<Lease>,
    /// A `--prewarm` connection, already established.
    prewarmed: bool,
    addr: SocketAddr,
    /// The failure of the attempt before this one, if this is a retry.
    after: Option<Cause>,
}

/// A client accepted on `cx.route`: the pair to put in slab slot `slot` with id `id`, or `None` when the
/// client was dropped (or reset: nothing to connect to) here.
pub(crate) fn open(
    cx: &mut Context<'_>,
    (slot, id): (usize, u32),
    (client, client_addr): (TcpStream, SocketAddr),
    splice: Splice,
) -> Option<Pair> {
    if let Err(err) = net::apply_accepted_options(&SockRef::from(&client), cx.route.options) {
        debug!("client={client_addr} dropped: cannot set socket options: {err}");
        return None;
    }
    let send_proxy = cx.route.config.send_proxy;
    if let Some(rules) = cx.route.greeting.clone() {
        let mut client = client;
        if let Err(err) = cx
            .registry
            .register(&mut client, token(slot, Side::Client, id), both())
        {
            warn!("client={client_addr} dropped: cannot register with the poller: {err}");
            return None;
        }
        let greeting = Greeting::new(rules);
        let pair = Pair::greeting(
            id,
            (client, client_addr),
            cx.route_key,
            greeting,
            cx.now,
            splice,
        );
        return Some(pair.with_send_proxy(send_proxy));
    }
    let mut plan = Plan::Upstreams {
        tried: Tried::default(),
    };
    let started = match start(cx, &mut plan, client_addr.ip(), None, true) {
        Ok(started) => started,
        Err((give_up, failed)) => {
            refuse_client(cx, &client, client_addr, give_up, failed);
            return None;
        }
    };
    if cx.warm.is_some() {
        let metrics = &mut *cx.metrics;
        *(if started.prewarmed {
            &mut metrics.warm_hits
        } else {
            &mut metrics.warm_misses
        }) += 1;
    }
    let upstream = (started.stream, started.lease);
    let pair = Pair::new(
        id,
        (client, client_addr),
        upstream,
        cx.route_key,
        plan,
        cx.now,
        splice,
    );
    let pair = if started.prewarmed {
        pair.with_warm_upstream()
    } else {
        pair
    };
    let mut pair = pair.with_send_proxy(send_proxy);
    // Register once for both directions, edge-triggered. Interest changes afterwards only to mute a
    // socket whose direction is blocked (`Pair::registration_change`). A warm upstream is already
    // registered under its pool token and moves to the pair's.
    let registry = cx.registry;
    let registered = registry
        .register(&mut pair.client, token(slot, Side::Client, id), both())
        .and_then(|()| {
            let upstream_token = token(slot, Side::Upstream, id);
            match pair.socket_mut(Side::Upstream) {
                Some(upstream) if started.prewarmed => {
                    registry.reregister(upstream, upstream_token, both())
                }
                Some(upstream) => registry.register(upstream, upstream_token, both()),
                None => Ok(()),
            }
        });
    if let Err(err) = registered {
        // Dropping the pair closes both fds, which also removes them from epoll.
        give_back(cx.route, pair.drop_upstream(), None, cx.now);
        warn!("client={client_addr} dropped: cannot register with the poller: {err}");
        return None;
    }
    Some(pair)
}

/// Moves the connect of the pair in slab slot `slot` on by `step`. The outcome is never a connect
/// outcome again: `Open` (an attempt under way, a lookup queued, or an established pair waiting),
/// `Yield`, or `Close`.
pub(crate) fn advance(cx: &mut Context<'_>, slot: usize, pair: &mut Pair, step: Step) -> Outcome {
    match step {
        Step::Greeted(Target::Balanced) => {
            pair.set_plan(Plan::Upstreams {
                tried: Tried::default(),
            });
            attempt(cx, slot, pair, None)
        }
        Step::Greeted(Target::Direct(addr)) => {
            pair.set_plan(Plan::destination(vec![addr]));
            attempt(cx, slot, pair, None)
        }
        Step::Greeted(Target::Named(host_port)) => look_up(cx, slot, pair, host_port),
        Step::Looked(addrs) => looked(cx, slot, pair, addrs),
        Step::Connected => {
            if let Some(lease) = pair.lease() {
                cx.route.connect_succeeded(lease.slot(), cx.now);
            }
            let budget = cx.route.pair_budget;
            let mut shared = cx.route.shared(cx.metrics);
            pair.establish(&mut shared, budget, cx.now)
        }
        Step::Failed(cause) => {
            let lease = pair.drop_upstream();
            let from = lease.as_ref().map(Lease::slot);
            let failed = Failed::InFlight(cause);
            give_back(cx.route, lease, Some(&failed), cx.now);
            attempt(cx, slot, pair, Some((failed, from)))
        }
    }
}

/// A pair closes: the endpoint it held is given back.
pub(crate) fn release(route: &mut Route, pair: &mut Pair, now: Instant) {
    give_back(route, pair.take_lease(), None, now);
}

/// The one place a lease ends: after a failed attempt (which first counts against the endpoint's
/// health, unless the failure was ours: out of fds or memory), or when its pair closes.
fn give_back(route: &mut Route, lease: Option<Lease>, failed: Option<&Failed>, now: Instant) {
    let Some(lease) = lease else {
        return;
    };
    if failed.is_some_and(|failed| !failed.exhausted()) {
        route.connect_failed(lease.slot(), now);
    }
    route.give_back(lease);
}

/// The next attempt, or giving up: starts the connect the policy picks, registers it under the pair's
/// upstream token, and leaves the pair `Connecting` under that attempt's own deadline.
/// `failed`: the attempt before, and the endpoint it was to (for the log line).
fn attempt(
    cx: &mut Context<'_>,
    slot: usize,
    pair: &mut Pair,
    failed: Option<(Failed, Option<usize>)>,
) -> Outcome {
    let (failed, from) = failed.map_or((None, None), |(failed, from)| (Some(failed), from));
    let client = pair.client_addr.ip();
    let Some(plan) = pair.plan_mut() else {
        return Outcome::Close(Cause::ConnectError); // not connecting: nothing to attempt
    };
    let mut started = match start(cx, plan, client, failed, false) {
        Ok(started) => started,
        Err((give_up, failed)) => return give_up_on(cx, pair, give_up, failed),
    };
    let upstream_token = token(slot, Side::Upstream, pair.id);
    if let Err(err) = cx
        .registry
        .register(&mut started.stream, upstream_token, both())
    {
        warn!(
            "conn={} cannot register an upstream connect: {err}",
            pair.id
        );
        give_back(cx.route, started.lease, None, cx.now);
        return Outcome::Close(Cause::ConnectError);
    }
    if let Some(why) = started.after {
        cx.metrics.failovers += 1;
        let attempts = pair.plan_mut().map_or(0, |plan| plan.attempts());
        match started.lease.as_ref() {
            Some(lease) => debug!(
                "conn={} route={} upstream={} {why}: failing over to upstream={} (attempt {})",
                pair.id,
                cx.route.name(),
                from.map_or("-", |slot| cx.route.endpoint_label(slot)),
                cx.route.endpoint_label(lease.slot()),
                attempts
            ),
            None => debug!(
                "conn={} CONNECT destination failed ({why}): trying its next address {}",
                pair.id, started.addr
            ),
        }
    }
    pair.begin_connect(started.stream, started.lease, cx.now);
    Outcome::Open
}

/// Asks the policy for candidates until a connect starts or it gives up; a connect that fails at once
/// is a failed attempt like any other. `warm`: a route candidate may be a `--prewarm` connection.
fn start(
    cx: &mut Context<'_>,
    plan: &mut Plan,
    client: IpAddr,
    mut failed: Option<Failed>,
    warm: bool,
) -> Result<Started, (GiveUp, Option<Failed>)> {
    loop {
        let (addr, lease) = match plan.next(failed.as_ref(), cx.route, client, cx.now) {
            Next::Try { addr, lease } => (addr, lease),
            Next::GiveUp(give_up) => return Err((give_up, failed)),
        };
        let uid = cx.route.uid;
        let prewarmed = match (warm, lease.as_ref(), cx.warm.as_deref_mut()) {
            (true, Some(lease), Some(pool)) => pool.take(uid, lease.slot()),
            _ => None,
        };
        let started = match prewarmed {
            Some(stream) => Ok((stream, true)),
            None => net::start_connect(addr, cx.route.options).map(|stream| (stream, false)),
        };
        match started {
            Ok((stream, prewarmed)) => {
                return Ok(Started {
                    stream,
                    lease,
                    prewarmed,
                    addr,
                    after: failed.as_ref().map(Failed::cause),
                })
            }
            Err(err) => {
                debug!("cannot start a connect to {addr}: {err}");
                let failure = Failed::Start(err);
                give_back(cx.route, lease, Some(&failure), cx.now);
                failed = Some(failure);
            }
        }
    }
}

/// No candidate left: a route client is closed (the reactor resets it), a CONNECT client answered.
fn give_up_on(
    cx: &mut Context<'_>,
    pair: &mut Pair,
    give_up: GiveUp,
    failed: Option<Failed>,
) -> Outcome {
    note_exhaustion(cx, failed);
    match give_up {
        GiveUp::Close(cause) => Outcome::Close(cause),
        GiveUp::Refuse(status) => {
            debug!(
                "conn={} CONNECT destination failed: {}",
                pair.id,
                status.code()
            );
            pair.refuse(status, cx.now)
        }
    }
}

/// A CONNECT destination named by host goes to the lookup threads; the pair waits for the answer in
/// `Connecting` without a socket, under its connect deadline, which the job carries so that a lookup
/// thread skips a name nobody waits for any more. Not queued: 502.
fn look_up(cx: &mut Context<'_>, slot: usize, pair: &mut Pair, host_port: String) -> Outcome {
    pair.begin_lookup(cx.now);
    let until = pair
        .deadline(&cx.route.deadlines)
        .map_or(cx.now, |(at, _)| at);
    let queued = match cx.lookups.as_deref_mut() {
        Some(lookups) => lookups.look_up(slot, pair.id, host_port, until),
        None => Err("no lookup thread"),
    };
    let Err(why) = queued else {
        return Outcome::Open;
    };
    debug!("conn={} CONNECT to a host name: {why}", pair.id);
    if let Some(suppressed) = cx.lookup_warning.allow(cx.now) {
        warn!(
            "CONNECT to host names answered 502: {why} ({suppressed} more since the last warning)"
        );
    }
    attempt(cx, slot, pair, None)
}

/// The CONNECT destination's lookup answered. One that comes with the deadline (answers are handled
/// before timers in a turn; a lookup thread skips a name whose deadline passed) is the deadline's: 504,
/// as the timer would have answered. Otherwise its addresses are the candidates; none is 502.
fn looked(
    cx: &mut Context<'_>,
    slot: usize,
    pair: &mut Pair,
    addrs: Result<Vec<SocketAddr>, String>,
) -> Outcome {
    let late = pair
        .deadline(&cx.route.deadlines)
        .is_some_and(|(at, _)| at <= cx.now);
    if late {
        return advance(cx, slot, pair, Step::Failed(Cause::ConnectTimeout));
    }
    let addrs = addrs.unwrap_or_else(|err| {
        debug!("conn={} CONNECT destination: {err}", pair.id);
        Vec::new()
    });
    pair.set_plan(Plan::destination(addrs));
    attempt(cx, slot, pair, None)
}

/// A client with nothing to connect to at accept: reset at once, counted and logged as a closed pair.
fn refuse_client(
    cx: &mut Context<'_>,
    client: &TcpStream,
    client_addr: SocketAddr,
    give_up: GiveUp,
    failed: Option<Failed>,
) {
    let cause = match give_up {
        GiveUp::Close(cause) => cause,
        GiveUp::Refuse(_) => Cause::ConnectError,
    };
    let error = match (&failed, cause) {
        (Some(Failed::Start(err)), _) => err.to_string(),
        (_, Cause::Unresolved) => "no upstream resolves".to_string(),
        _ => "no upstream left to try".to_string(),
    };
    note_exhaustion(cx, failed);
    net::set_reset_on_close(client);
    cx.metrics.closes[cause] += 1;
    debug!(
        "closed conn=- client={client_addr} route={} upstream=- cause={cause} c2u=0 u2c=0 duration=0ms error=\"{error}\"",
        cx.route.name()
    );
}

/// Out of fds or memory: accepting more clients now would only fail the same way.
fn note_exhaustion(cx: &mut Context<'_>, failed: Option<Failed>) {
    if let Some(Failed::Start(err)) = failed {
        if net::is_resource_exhaustion(&err) {
            cx.exhausted = Some(err);
        }
    }
}

fn both() -> Interest {
    Interest::READABLE | Interest::WRITABLE
}

fn token(slot: usize, side: Side, generation: u32) -> mio::Token {
    PairToken {
        slot,
        side,
        generation,
    }
    .encode()
}

#[cfg(test)]
mod tests {
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
                        addrs: Ok(vec![*addr]),
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
            }
        }

        fn advance(&mut self, pair: &mut Pair, step: Step, now: Instant) -> Outcome {
            advance(&mut self.cx(now), 0, pair, step)
        }

        /// A client accepted on the route, as the reactor hands it over.
        fn open(&mut self, id: u32, now: Instant) -> (Pair, std::net::TcpStream) {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let client = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            let (accepted, addr) = listener.accept().expect("accept");
            accepted.set_nonblocking(true).expect("nonblocking");
            let accepted = TcpStream::from_std(accepted);
            let pair =
                open(&mut self.cx(now), (0, id), (accepted, addr), Splice::Off).expect("a pair");
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
}

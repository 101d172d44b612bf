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
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Interest, Registry};
use socket2::SockRef;

use crate::close::Cause;
use crate::config::{Splice, UpstreamAddr};
use crate::datapath::net;
use crate::datapath::stream::Conn;
use crate::observe::access_log::writer::AccessLog;
use crate::observe::access_log::Record;
use crate::observe::metric_kinds::Label;
use crate::observe::metrics::Metrics;
use crate::session::attempt::{Failed, GiveUp, Next, Plan};
use crate::session::pair::{Outcome, Pair};
use crate::throttle::Throttle;
use crate::token::{PairToken, Side};
use crate::upstream::endpoint::Tried;
use crate::upstream::health::Evidence;
use crate::upstream::prewarm::WarmPool;
use crate::upstream::route::{Lease, Route};
use crate::wire::greeting::{Greeting, Rules, Target};

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
    pub(crate) registry: &'a Registry,
    /// The pair's route, and its slab slot.
    pub(crate) route: &'a mut Route,
    pub(crate) route_key: usize,
    pub(crate) metrics: &'a mut Metrics,
    /// `--prewarm` connections, taken only for a client's first attempt at accept.
    pub(crate) warm: Option<&'a mut WarmPool>,
    /// The lookup threads, if they exist.
    pub(crate) lookups: Option<&'a mut dyn Lookups>,
    /// Lookups that could not be queued are warned about at most this often.
    pub(crate) lookup_warning: &'a mut Throttle,
    pub(crate) now: Instant,
    /// Set when a connect failed for want of fds or memory: the reactor pauses accepting.
    pub(crate) exhausted: Option<io::Error>,
    /// `--access-log`: a client reset at accept with nothing to connect to gets its line here.
    pub(crate) access_log: Option<&'a AccessLog>,
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
    stream: Conn,
    lease: Option<Lease>,
    /// A `--prewarm` connection, already established.
    prewarmed: bool,
    addr: UpstreamAddr,
    /// The failure of the caller's attempt before this one, if this is a retry of it (attempts that
    /// failed to start inside [`start`] are counted and logged there).
    after: Option<Cause>,
}

/// A client accepted on `cx.route`: the pair to put in slab slot `slot` with id `id`, or `None` when the
/// client was dropped (or reset: nothing to connect to) here. `greeting`: what its listener expects
/// first when that is not the route's (an SNI listener's ClientHello).
pub(crate) fn open(
    cx: &mut Context<'_>,
    (slot, id): (usize, u32),
    (client, client_addr): (Conn, SocketAddr),
    greeting: Option<Arc<Rules>>,
    splice: Splice,
) -> Option<Pair> {
    if let Some(tcp) = client.tcp() {
        if let Err(err) = net::apply_accepted_options(&SockRef::from(tcp), cx.route.options) {
            debug!("client={client_addr} dropped: cannot set socket options: {err}");
            return None;
        }
    }
    let send_proxy = cx.route.config.send_proxy;
    if let Some(rules) = greeting.or_else(|| cx.route.greeting.clone()) {
        let mut client = client;
        if let Err(err) = cx
            .registry
            .register(&mut client, token(slot, Side::Client, id), both())
        {
            warn!("client={client_addr} dropped: cannot register with the poller: {err}");
            return None;
        }
        let awaits_route = rules.sni.is_some();
        let greeting = Greeting::new(rules);
        let mut pair = Pair::greeting(
            id,
            (client, client_addr),
            cx.route_key,
            greeting,
            cx.now,
            splice,
        );
        pair.awaits_route = awaits_route;
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
    let upstream = (started.stream, started.addr, started.lease);
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
    if matches!(step, Step::Greeted(_)) {
        if let Err(outcome) = admit_greeted(cx, pair) {
            return outcome;
        }
    }
    match step {
        // A ClientHello's route: the reactor has moved the pair there already.
        Step::Greeted(Target::Balanced | Target::Routed(_)) => {
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
            if let Some(started) = pair.attempt_started() {
                (cx.route.counts).connected(cx.now.saturating_duration_since(started));
            }
            if let Some(lease) = pair.lease() {
                cx.route.connect_succeeded(lease.slot(), cx.now);
                if let Some(upstream) = cx.route.upstream_counts(lease.slot()) {
                    upstream.connected();
                }
            }
            let budget = cx.route.pair_budget;
            let mut shared = cx.route.shared(cx.metrics);
            pair.establish(&mut shared, budget, cx.now)
        }
        Step::Failed(cause) => {
            cx.route.counts.connect_failed();
            let lease = pair.drop_upstream();
            let from = lease.as_ref().map(Lease::slot);
            log_failure(cx, pair, from, cause);
            let failed = Failed::InFlight(cause);
            give_back(cx.route, lease, Some(&failed), cx.now);
            attempt(cx, slot, pair, Some((failed, from)))
        }
    }
}

/// A refused or timed-out upstream connect, at info, at most once a second per route (with how many
/// were held back): the operator sees which upstream fails and for whom, without a flood when one is
/// down under load. Other failures are the host's (no route, fds) and are logged where they arise.
fn log_failure(cx: &mut Context<'_>, pair: &Pair, endpoint: Option<usize>, cause: Cause) {
    let what = match cause {
        Cause::ConnectRefused => "refused",
        Cause::ConnectTimeout => "timed out",
        _ => return,
    };
    let Some(held_back) = cx.route.connect_failure_log.allow(cx.now) else {
        return;
    };
    let more = match held_back {
        0 => String::new(),
        n => format!(" ({n} more since the last such line)"),
    };
    // A CONNECT destination is no endpoint of the route: its address is the pair's.
    let upstream = match endpoint {
        Some(slot) => cx.route.endpoint_label(slot).to_string(),
        None => pair
            .upstream_addr()
            .map_or_else(|| "-".to_string(), ToString::to_string),
    };
    info!(
        "route {}: upstream connect {what}: upstream={upstream} client={} conn={}{more}",
        cx.route.name(),
        pair.client_addr,
        pair.id
    );
}

/// A pair closes: the endpoint it held is given back.
pub(crate) fn release(route: &mut Route, pair: &mut Pair, now: Instant) {
    give_back(route, pair.take_lease(), None, now);
    if let Some(key) = pair.client_key.take() {
        route.release_client(key, now);
    }
}

/// With `accept_proxy`, the per-client checks wait for the address the header carries, and with SNI
/// routing for the route the ClientHello chooses: this is where they happen. A client refused is
/// reset (and counted by why).
fn admit_greeted(cx: &mut Context<'_>, pair: &mut Pair) -> Result<(), Outcome> {
    if !cx.route.config.accept_proxy && !cx.route.config.sni.is_set() {
        return Ok(());
    }
    match cx.route.admit_client(pair.client_addr.ip(), cx.now) {
        Ok(key) => {
            pair.client_key = key;
            Ok(())
        }
        Err(why) => {
            cx.metrics
                .client_rejects
                .count(&cx.route.config.name, why, 1);
            debug!(
                "conn={} client={} route={} reset: {}",
                pair.id,
                pair.client_addr,
                cx.route.config.name,
                why.value()
            );
            pair.client.reset_on_close();
            pair.note_limit(why.value());
            Err(Outcome::Close(Cause::Rejected))
        }
    }
}

/// The one place a lease ends: after a failed attempt (which first counts against the endpoint's
/// health, unless the failure was ours: out of fds or memory), or when its pair closes.
fn give_back(route: &mut Route, lease: Option<Lease>, failed: Option<&Failed>, now: Instant) {
    let Some(lease) = lease else {
        return;
    };
    if failed.is_some_and(|failed| !failed.exhausted()) {
        route.connect_failed(lease.slot(), now, Evidence::Connect);
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
        cx.route.counts.failed_over();
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
    pair.begin_connect((started.stream, started.addr), started.lease, cx.now);
    Outcome::Open
}

/// Asks the policy for candidates until a connect starts or it gives up; a connect that fails at once
/// (always so for a Unix upstream: a missing file, nobody listening) is a failed attempt like any
/// other, and the next candidate a failover. `warm`: a route candidate may be a `--prewarm` connection.
fn start(
    cx: &mut Context<'_>,
    plan: &mut Plan,
    client: IpAddr,
    mut failed: Option<Failed>,
    warm: bool,
) -> Result<Started, (GiveUp, Option<Failed>)> {
    let after = failed.as_ref().map(Failed::cause);
    // An attempt that failed to start here: where it went.
    let mut failed_here: Option<UpstreamAddr> = None;
    loop {
        let (addr, lease) = match plan.next(failed.as_ref(), cx.route, client, cx.now) {
            Next::Try { addr, lease } => (addr, lease),
            Next::GiveUp(give_up) => return Err((give_up, failed)),
        };
        if let (Some(from), Some(why)) = (failed_here.take(), failed.as_ref()) {
            cx.metrics.failovers += 1;
            cx.route.counts.failed_over();
            debug!(
                "route={} upstream={from} {}: failing over to upstream={addr}",
                cx.route.name(),
                why.cause()
            );
        }
        let uid = cx.route.uid;
        let prewarmed = match (warm, lease.as_ref(), cx.warm.as_deref_mut()) {
            (true, Some(lease), Some(pool)) => pool.take(uid, lease.slot()),
            _ => None,
        };
        let started = match prewarmed {
            Some(stream) => Ok((stream, true)),
            None => Conn::connect(&addr, cx.route.options).map(|stream| (stream, false)),
        };
        match started {
            Ok((stream, prewarmed)) => {
                return Ok(Started {
                    stream,
                    lease,
                    prewarmed,
                    addr,
                    after,
                })
            }
            Err(err) => {
                debug!("cannot start a connect to {addr}: {err}");
                cx.route.counts.connect_failed();
                let failure = Failed::Start(err);
                give_back(cx.route, lease, Some(&failure), cx.now);
                failed = Some(failure);
                failed_here = Some(addr);
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
    client: &Conn,
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
    client.reset_on_close();
    cx.metrics.closes[cause] += 1;
    if let Some(log) = cx.access_log {
        let record = Record::turned_away(cx.route.name(), client_addr, cause.as_str());
        if !log.offer(record) {
            cx.metrics.access_log_dropped += 1;
        }
    }
    cx.route.counts.closed(cause, Duration::ZERO);
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
mod tests;

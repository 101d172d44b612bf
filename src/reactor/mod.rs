//! The event loop: one `Poll`, a slab of routes (each with its listeners), the signal pipe, a slab of pairs,
//! health probes, the resolver's waker, and the timer heap.
//!
//! Only this module touches `Poll`, `Registry` and the `Slab`s. One turn of the loop:
//!
//! 1. `epoll_wait`, with a timeout: zero if work is queued (a pair that used up its byte budget, a
//!    listener we stopped draining early), else until the earliest deadline, else forever — an idle
//!    forwarder makes no periodic wakeups.
//! 2. Dispatch every event: OR it into the pair's cached readiness and run the pair at once. An event of a
//!    pair torn down earlier in the same batch finds its slot empty (slots are handed out only after the
//!    batch); the generation in the token is the second line of defence (see token.rs).
//! 3. Re-run the pairs that yielded, fire due timers (pair deadlines, probe timeouts, probe and resolution
//!    rounds), accept, and check whether a shutdown is complete.
//!
//! Accepting is done after the batch and only while a listener's cached "ready" bit is set. When we stop
//! accepting for a reason of our own (a route's connection limit, EMFILE, the per-turn accept cap) that bit
//! stays set: the kernel will not send another edge for connections already queued, so the loop must come
//! back by itself — when a pair closes, when the backoff timer fires, or on the next turn.
//!
//! Failover: a pair whose upstream connect fails (refused, error, or its connect deadline) while still in
//! `Connecting` gets a new upstream socket from its route ([`Route::connect`]), registered under the same
//! token, until the route's `connect_attempts` are used up. Reload (SIGHUP) swaps routes without cutting a
//! pair: see `Reactor::reload` (in `reload.rs`).
//!
//! This file is the loop, the pairs, accepting, failover and shutdown. The rest adds `impl Reactor` blocks
//! in submodules, so `Poll`, the `Registry` and the slabs stay inside this module tree:
//! - `reload`: SIGHUP reload, route matching, listener hand-over, draining routes;
//! - `probes`: active health probes;
//! - `lookups`: DNS re-resolution, CONNECT lookups' answers, and the worker threads' waker;
//! - `report`: per-turn counters, the stats line, `--metrics` scrapes, `--trace` lines.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use socket2::SockRef;

use crate::close::Cause;
use crate::config::file::Defaults;
use crate::config::{Config, Mode};
use crate::datapath::budget::{self, FdBudget, Slot};
use crate::datapath::net;
use crate::datapath::readiness::Event;
use crate::datapath::stream::Socket;
use crate::observe::metrics::{Metrics, MetricsBoard, StatsTicker};
use crate::reactor::scrape::MetricsServer;
use crate::reactor::timer::{Entry, Timers};
use crate::reactor::worker::{Inbox, Lookup, NotQueued, Worker};
use crate::service::notify::Notifier;
use crate::session::pair::{Outcome, Pair, Phase, NO_UPSTREAM};
use crate::throttle::Throttle;
use crate::token::{self, PairToken, Side, Target, GENERATION_MASK, MAX_SLOT};
use crate::upstream::endpoint::Tried;
use crate::upstream::prewarm::WarmPool;
use crate::upstream::route::{Listener, NoUpstream, Route};
use crate::wire::greeting::{Greeting, Target as ConnectTarget};
use crate::wire::proxy_protocol::Reason;

pub mod fdlimit;
mod lookups;
mod probes;
mod reload;
mod report;
pub mod scrape;
mod systemd;
pub use systemd::activated_listeners;
pub mod timer;
pub mod worker;

use probes::Probe;
use report::trace_event;

/// Most connections accepted from one listener in one loop turn, so a connection flood cannot starve
/// established pairs.
const ACCEPT_BUDGET: usize = 256;
/// Pair slots kept allocated once every pair has closed (see `release_pair_slots`): enough for
/// everyday churn to reuse them without growing the slab again.
const PAIR_SLOTS_KEPT: usize = 1024;

/// How long accepting pauses after EMFILE/ENFILE: long enough to cost no CPU, short enough to resume fast.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Events fetched per `epoll_wait`.
const EVENTS_CAPACITY: usize = 1024;
/// At most one line per this long about clients closed over their PROXY header (per reactor).
const PROXY_HEADER_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every pair finished (or was cut at the shutdown deadline).
    Graceful,
    /// A second signal asked to stop at once.
    Forced,
}

/// Progress of a graceful shutdown.
#[derive(Debug)]
struct Drain {
    deadline: Instant,
    /// Pairs that ended on their own after the signal.
    drained: usize,
    /// Pairs closed by the shutdown itself.
    cut: usize,
    /// A second signal arrived.
    forced: bool,
}

/// Where a reactor stands among the `--threads` reactors.
#[derive(Debug, Clone, Default)]
pub struct Siblings {
    /// This reactor's number; reactor 0 serves `--metrics` and leads reloads.
    pub index: usize,
    /// Where every reactor publishes its counters; `None` with a single reactor.
    pub board: Option<Arc<MetricsBoard>>,
    /// The other reactors' inboxes: reactor 0 reads a reloaded file once and hands the result
    /// to them (see `reload`), so all apply the same configuration and bind the same ports.
    pub followers: Arc<Mutex<Vec<Inbox>>>,
    /// The process's fd budget, shared by every reactor's pairs and pipes; unlimited by default.
    pub budget: FdBudget,
}

impl Siblings {
    /// The only reactor of the process.
    pub fn alone() -> Siblings {
        Siblings::default()
    }
}

/// The single-threaded forwarder.
pub struct Reactor {
    poll: Poll,
    events: Events,
    /// Routes by slot: pairs and listener tokens name them by slot.
    routes: Slab<Route>,
    /// Uid of the next route.
    next_route_uid: u64,
    /// Accepting is paused after fd exhaustion until then.
    accept_paused_until: Option<Instant>,
    /// Stopped at an fd budget shared with other reactors: look again then, since a slot another
    /// reactor frees sends this one no event.
    budget_retry_at: Option<Instant>,
    /// With `--threads`, when the spare pipes are closed (`expire_spare_pipes`).
    spares_expire_at: Option<Instant>,
    signals: Signals,
    pairs: Slab<Pair>,
    /// Health probes in flight.
    probes: Slab<Probe>,
    /// The threads for blocking work, when there is a file to reload, a host name to re-resolve, or a
    /// connect-mode route whose clients may name hosts.
    worker: Option<Worker>,
    /// Counters, lent to pairs while they run.
    metrics: Metrics,
    /// The `--metrics` endpoint.
    metrics_server: Option<MetricsServer>,
    /// The `--stats-interval` log line.
    stats: Option<StatsTicker>,
    /// `--prewarm` upstream connections.
    warm: Option<WarmPool>,
    siblings: Siblings,
    /// Reloads applied so far; re-resolution answers asked for before the latest are dropped.
    reload_epoch: u64,
    timers: Timers,
    /// The configuration in force: the one started with, or the last one a reload accepted.
    config: Config,
    /// What a reloaded file falls back on.
    defaults: Defaults,
    /// Id (and token generation) of the next pair.
    next_id: u32,
    /// Pairs that yielded with work left: run again before the loop sleeps.
    yielded: Vec<(usize, u32)>,
    drain: Option<Drain>,
    exhaustion_warning: Throttle,
    /// CONNECT lookups that could not be queued (a full queue, no lookup thread).
    lookup_warning: Throttle,
    /// Clients closed over their PROXY header: one info line per interval, the metric counts them all.
    proxy_header_log: Throttle,
    /// Time of the current loop turn, read once after `epoll_wait`.
    now: Instant,
    /// `Type=notify`: reactor 0's line to the service manager (`systemd`).
    notifier: Option<Notifier>,
}

impl Reactor {
    /// Binds every route's listeners and sets up polling. Errors are start failures for `main` to report.
    /// `shared` gives, route by route, the first reactor's listeners (its [`Self::share_listeners`]) for
    /// a `--threads` sibling to accept from instead of binding; empty for the first reactor, which binds
    /// the configured addresses.
    pub fn new(
        config: Config,
        defaults: Defaults,
        siblings: Siblings,
        shared: Vec<Vec<Listener>>,
    ) -> Result<Reactor, String> {
        let poll = Poll::new().map_err(|err| format!("cannot create the poller: {err}"))?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|err| format!("cannot install signal handlers: {err}"))?;
        let registry = poll.registry();
        registry
            .register(&mut signals, token::SIGNALS, Interest::READABLE)
            .map_err(|err| format!("cannot register with the poller: {err}"))?;
        let metrics_server = config
            .metrics
            .filter(|_| siblings.index == 0)
            .map(|addr| {
                MetricsServer::bind(addr, registry)
                    .map_err(|err| format!("cannot listen for metrics on {addr}: {err}"))
            })
            .transpose()?;
        // A config file may bring a connect-mode route at any reload; a connect-mode route looks up the
        // host names its clients ask for.
        let needs_worker = config.file.is_some()
            || config
                .routes
                .iter()
                .any(|r| r.resolve_interval.is_some() || r.mode == Mode::Connect);
        let worker = if needs_worker {
            let waker = Waker::new(registry, token::WAKER)
                .map_err(|err| format!("cannot create the resolver's waker: {err}"))?;
            Some(
                Worker::spawn(waker)
                    .map_err(|err| format!("cannot start the resolver thread: {err}"))?,
            )
        } else {
            None
        };
        if siblings.index != 0 {
            if let (Some(worker), Ok(mut followers)) = (worker.as_ref(), siblings.followers.lock())
            {
                followers.push(worker.inbox());
            }
        }
        let now = Instant::now();
        let mut reactor = Reactor {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            routes: Slab::new(),
            next_route_uid: 1,
            accept_paused_until: None,
            budget_retry_at: None,
            spares_expire_at: None,
            signals,
            pairs: Slab::new(),
            probes: Slab::new(),
            worker,
            metrics: Metrics::default(),
            metrics_server,
            stats: config
                .stats_interval
                .map(|interval| StatsTicker::new(interval, now)),
            siblings,
            reload_epoch: 0,
            warm: (config.prewarm > 0).then(|| WarmPool::new(config.prewarm)),
            timers: Timers::new(),
            config: config.clone(),
            defaults,
            next_id: 1,
            yielded: Vec::new(),
            drain: None,
            exhaustion_warning: Throttle::new(Duration::from_secs(5)),
            lookup_warning: Throttle::new(Duration::from_secs(10)),
            proxy_header_log: Throttle::new(PROXY_HEADER_LOG_INTERVAL),
            now,
            notifier: None,
        };
        let mut shared = shared.into_iter();
        for route in config.routes {
            // `shared` is also how socket-activated listeners reach reactor 0 ([`activated_listeners`]).
            let listeners = match (reactor.siblings.index, shared.next()) {
                (_, Some(listeners)) if listeners.len() == route.listen.len() => listeners,
                (0, None) => route
                    .listen
                    .iter()
                    .map(|addr| Listener::bind(*addr, &route))
                    .collect::<Result<Vec<_>, _>>()?,
                (index, _) => {
                    return Err(format!(
                        "reactor {index}: no listeners handed on for route {}",
                        route.name
                    ))
                }
            };
            reactor.insert_route(route, listeners, None)?;
        }
        Ok(reactor)
    }

    /// This reactor's listeners, route by route, each under a new descriptor, for another `--threads`
    /// reactor to accept from: all reactors of the process drain the same sockets, and no other
    /// process can join them as it could join a SO_REUSEPORT group (see [`net::bind_listener`]).
    pub fn share_listeners(&self) -> Result<Vec<Vec<Listener>>, String> {
        self.routes
            .iter()
            .map(|(_, route)| route.listeners.iter().map(Listener::share).collect())
            .collect()
    }

    /// One `listening on ADDR route=...` line per listener, the first route's first listener first.
    pub fn start_lines(&self) -> Vec<String> {
        self.routes
            .iter()
            .flat_map(|(_, route)| {
                (0..route.listeners.len()).filter_map(|index| route.describe_listener(index))
            })
            .collect()
    }

    /// The address the metrics endpoint is bound to, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server
            .as_ref()
            .and_then(|server| server.local_addr().ok())
    }

    /// Runs until a signal-initiated shutdown completes.
    pub fn run(mut self) -> io::Result<Exit> {
        self.refill_warm();
        self.notify_ready();
        loop {
            let timeout = self.poll_timeout();
            if let Err(err) = self.poll.poll(&mut self.events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            self.now = Instant::now();
            let work_before = self.metrics.work_done();
            let events = self.dispatch_events();
            self.run_yielded();
            self.fire_timers();
            self.accept_ready();
            self.count_turn(events, work_before);
            self.tend_notifier();
            if let Some(exit) = self.finished() {
                return Ok(exit);
            }
        }
    }

    /// Zero when work is queued; else until the nearest deadline; else `None` (block indefinitely).
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.yielded.is_empty() || self.any_accept_ready() {
            return Some(Duration::ZERO);
        }
        let rounds = self
            .routes
            .iter()
            .filter(|(_, route)| !route.draining)
            .flat_map(|(_, route)| [route.next_probe, route.next_resolve])
            .flatten()
            .min();
        [
            self.timers.next_deadline(),
            self.accept_paused_until,
            self.budget_retry_at,
            self.spares_expire_at,
            self.drain.as_ref().map(|drain| drain.deadline),
            self.notify_deadline(),
            self.stats.as_ref().map(|stats| stats.next),
            rounds,
            self.probes.iter().map(|(_, probe)| probe.deadline).min(),
            self.warm.as_ref().and_then(WarmPool::next_deadline),
            self.metrics_server
                .as_ref()
                .and_then(MetricsServer::retry_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Handles one `epoll_wait` batch; returns how many events it held.
    fn dispatch_events(&mut self) -> usize {
        // Events is moved out for the batch so handlers can borrow `self` mutably; the empty stand-in
        // allocates nothing.
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let mut count = 0;
        for event in events.iter() {
            count += 1;
            let target = Target::of(event.token());
            if log::log_enabled!(log::Level::Trace) {
                trace_event(target, Event::from(event));
            }
            match target {
                Target::Listener { route, index } => self.on_listener_event(route, index),
                Target::Signals => self.on_signals(),
                Target::Metrics => self.with_metrics_server(|server, _| server.on_listener_event()),
                Target::Waker => self.on_waker(),
                Target::Scrape(slot) => self.on_scrape_event(slot),
                Target::Probe(slot) => self.on_probe_event(slot),
                Target::Warm(slot) => {
                    if let Some(warm) = self.warm.as_mut() {
                        let hung_up = event.is_read_closed() || event.is_error();
                        warm.on_event(slot, hung_up, self.now);
                    }
                }
                Target::Pair(pair) => self.on_pair_event(pair, Event::from(event)),
            }
        }
        self.events = events;
        count
    }

    /// Notes a listener's edge; accepts happen after the batch. An event for a token whose listener moved
    /// or closed during a reload earlier in the batch at worst marks a listener ready that is not: its
    /// next accept says WouldBlock and clears the bit.
    fn on_listener_event(&mut self, route: usize, index: usize) {
        if let Some(listener) = self
            .routes
            .get_mut(route)
            .and_then(|route| route.listeners.get_mut(index))
        {
            listener.ready = true;
        }
    }

    fn on_pair_event(&mut self, token: PairToken, event: Event) {
        let PairToken { slot, side, .. } = token;
        let Some(pair) = live_pair(&mut self.pairs, token) else {
            return; // a stale token
        };
        let Some(route) = self.routes.get_mut(pair.route) else {
            return; // cannot happen: a route outlives its pairs
        };
        let connecting = pair.phase() == Phase::Connecting;
        let budget = route.pair_budget;
        let mut shared = route.shared(&mut self.metrics);
        let outcome = pair.on_event(side, event, &mut shared, budget, self.now);
        if connecting && pair.phase() == Phase::Established {
            route.connect_succeeded(pair.endpoint, self.now);
        }
        self.settle(slot, outcome);
    }

    /// Acts on a pair's outcome: keep it (re-arming its timer), queue it to run again, fail over to
    /// another upstream, or tear it down.
    fn settle(&mut self, slot: usize, outcome: Outcome) {
        if matches!(outcome, Outcome::Open | Outcome::Yield) && !self.sync_read_interest(slot) {
            return;
        }
        match outcome {
            Outcome::Open => self.arm_timer(slot),
            Outcome::Yield => {
                self.metrics.budget_yields += 1;
                if let Some(pair) = self.pairs.get(slot) {
                    self.yielded.push((slot, pair.id));
                }
                self.arm_timer(slot);
            }
            Outcome::Close(cause) if cause.is_connect_failure() => self.failover(slot, cause),
            Outcome::Close(cause) => self.close_pair(slot, cause),
            Outcome::Connect(target) => self.connect_greeted(slot, target),
            Outcome::NextAddress(addr) => {
                self.metrics.failovers += 1;
                self.start_upstream(slot, Some(addr));
            }
        }
    }

    /// Registers a pair's sockets with or without read and write interest, as the pair asks
    /// ([`Pair::registration_change`] explains why). False when the pair is gone: if the poller refuses,
    /// the pair is closed, since a socket left muted would never be read again.
    fn sync_read_interest(&mut self, slot: usize) -> bool {
        let Some(pair) = self.pairs.get_mut(slot) else {
            return false;
        };
        let Some(route) = self.routes.get(pair.route) else {
            return true;
        };
        for side in [Side::Client, Side::Upstream] {
            let Some(wanted) = pair.registration_change(side, &route.pool) else {
                continue;
            };
            let current = pair.registration(side);
            let interest = match (wanted.reads, wanted.writes) {
                (true, true) => Interest::READABLE | Interest::WRITABLE,
                (true, false) => Interest::READABLE,
                (false, _) => Interest::WRITABLE,
            };
            let (id, token) = (pair.id, token_of(slot, side, pair.id));
            let Some(socket) = pair.socket_mut(side) else {
                continue;
            };
            if let Err(err) = self.poll.registry().reregister(socket, token, interest) {
                warn!("conn={id} cannot change the interest of its {side:?} socket: {err}");
                self.close_pair(slot, Cause::PollerError);
                return false;
            }
            pair.note_registration(side, wanted);
            let metrics = &mut self.metrics;
            match (current.reads, wanted.reads) {
                (true, false) => metrics.read_pauses += 1,
                (false, true) => metrics.read_resumes += 1,
                _ => {}
            }
            match (current.writes, wanted.writes) {
                (true, false) => metrics.write_drops += 1,
                (false, true) => metrics.write_rearms += 1,
                _ => {}
            }
        }
        true
    }

    /// A pair's greeting is done: connect it to an upstream of its route or to its CONNECT destination,
    /// which is looked up first when it names a host.
    fn connect_greeted(&mut self, slot: usize, target: ConnectTarget) {
        match target {
            ConnectTarget::Balanced => self.start_upstream(slot, None),
            ConnectTarget::Direct(addr) => self.start_upstream(slot, Some(addr)),
            ConnectTarget::Named(host_port) => self.look_up(slot, host_port),
        }
    }

    /// A CONNECT destination named by host goes to the lookup threads; the pair waits for the answer
    /// ([`Reactor::on_looked`]) in `Connecting` without a socket, under its connect deadline, which the
    /// job carries so that a lookup thread skips a name nobody waits for any more.
    fn look_up(&mut self, slot: usize, host_port: String) {
        let now = self.now;
        let Some(pair) = self.pairs.get_mut(slot) else {
            return;
        };
        let Some(route) = self.routes.get(pair.route) else {
            return;
        };
        pair.begin_lookup(now);
        let job = Lookup {
            pair: slot,
            id: pair.id,
            host_port,
            until: pair.deadline(&route.deadlines).map_or(now, |(at, _)| at),
        };
        let queued = match self.worker.as_mut() {
            Some(worker) => worker.lookup(job),
            None => Err(NotQueued::NoThreads),
        };
        let outcome = match queued {
            Ok(()) => Outcome::Open,
            Err(why) => {
                debug!("conn={} CONNECT to a host name: {}", pair.id, why.reason());
                if let Some(suppressed) = self.lookup_warning.allow(now) {
                    warn!(
                        "CONNECT to host names answered 502: {} ({suppressed} more since the last warning)",
                        why.reason()
                    );
                }
                pair.cannot_connect(now)
            }
        };
        self.settle(slot, outcome);
    }

    /// Starts the upstream connect, to the CONNECT `destination` or else to an upstream of the route
    /// (balanced by the client address, which a PROXY header may have replaced), and registers the socket
    /// under the pair's upstream token. A CONNECT destination's next address comes here too, after the
    /// pair dropped the failed socket ([`Outcome::NextAddress`]). A connect to a CONNECT destination that
    /// fails at once (no route, a firewall's EPERM, no local port) moves on to its next address as well;
    /// running out of fds does not, since the next connect would fail the same way.
    fn start_upstream(&mut self, slot: usize, destination: Option<SocketAddr>) {
        let now = self.now;
        let Some(pair) = self.pairs.get_mut(slot) else {
            return;
        };
        let Some(route) = self.routes.get_mut(pair.route) else {
            return;
        };
        let started = match destination {
            None => route
                .connect(pair.client_addr.ip(), Tried::default(), now, |_| None)
                .map(|(stream, index, tried, _)| (stream, index, tried))
                .map_err(|failure| (failure.unresolved, failure.error)),
            Some(addr) => net::start_connect(addr, route.options)
                .map(|stream| (stream, NO_UPSTREAM, Tried::default()))
                .map_err(|err| (false, err)),
        };
        let (mut stream, index, tried) = match started {
            Ok(started) => started,
            Err((unresolved, err)) => {
                debug!("conn={} cannot start the upstream connect: {err}", pair.id);
                let exhausted = net::is_resource_exhaustion(&err);
                let outcome = if destination.is_some() && !exhausted {
                    pair.destination_unreachable(&err, now)
                } else if unresolved {
                    Outcome::Close(Cause::Unresolved)
                } else {
                    // Not a failover case: no upstream of the route was tried.
                    pair.cannot_connect(now)
                };
                if exhausted {
                    // Out of fds: accepting more clients now would only fail the same way.
                    self.pause_accepting(&err);
                }
                return match outcome {
                    Outcome::Close(cause) => self.close_pair(slot, cause),
                    outcome => self.settle(slot, outcome),
                };
            }
        };
        let token = token_of(slot, Side::Upstream, pair.id);
        let both = Interest::READABLE | Interest::WRITABLE;
        if let Err(err) = self.poll.registry().register(&mut stream, token, both) {
            route.release(index);
            warn!(
                "conn={} cannot register an upstream connect: {err}",
                pair.id
            );
            return self.close_pair(slot, Cause::ConnectError);
        }
        pair.begin_connect(stream, index, tried, now);
        self.arm_timer(slot);
    }

    fn run_yielded(&mut self) {
        let queued = std::mem::take(&mut self.yielded);
        for (slot, id) in queued {
            let Some(pair) = self.pairs.get_mut(slot).filter(|pair| pair.id == id) else {
                continue;
            };
            let Some(route) = self.routes.get_mut(pair.route) else {
                continue;
            };
            let budget = route.pair_budget;
            let mut shared = route.shared(&mut self.metrics);
            let outcome = pair.run(&mut shared, budget, self.now);
            self.settle(slot, outcome);
        }
    }

    /// Makes sure the pair's next deadline is in the set, and is its only entry there. Later deadlines
    /// (traffic extending an idle timeout, a failover starting a new connect attempt) are not pushed: the
    /// armed entry fires first and re-arms then. An earlier one replaces the armed entry.
    fn arm_timer(&mut self, slot: usize) {
        let Some(pair) = self.pairs.get_mut(slot) else {
            return;
        };
        let Some(route) = self.routes.get(pair.route) else {
            return;
        };
        let Some((at, _)) = pair.deadline(&route.deadlines) else {
            // No deadline any more (the connect succeeded and there is no idle timeout): an entry left
            // armed would wake the loop once for nothing.
            if let Some(at) = pair.armed.take() {
                self.timers.cancel(&Entry {
                    at,
                    slot,
                    generation: pair.id,
                });
            }
            return;
        };
        if pair.armed.is_none_or(|armed| at < armed) {
            // The later entry it replaces goes: left in the set it would wake the loop once for
            // nothing, and outlive the pair (close_pair cancels only the armed one).
            if let Some(old) = pair.armed.replace(at) {
                self.timers.cancel(&Entry {
                    at: old,
                    slot,
                    generation: pair.id,
                });
            }
            self.timers.push(Entry {
                at,
                slot,
                generation: pair.id,
            });
        }
    }

    fn fire_timers(&mut self) {
        while let Some(entry) = self.timers.pop_due(self.now) {
            let Some(pair) = self.pairs.get_mut(entry.slot) else {
                continue;
            };
            if pair.id != entry.generation || pair.armed != Some(entry.at) {
                continue; // the pair is gone, or an earlier deadline superseded this entry
            }
            pair.armed = None;
            let Some(route) = self.routes.get(pair.route) else {
                continue;
            };
            match pair.deadline(&route.deadlines) {
                Some((at, cause)) if at <= self.now => {
                    let outcome = pair.expire(cause, self.now);
                    self.settle(entry.slot, outcome)
                }
                _ => self.arm_timer(entry.slot),
            }
        }
        if self
            .accept_paused_until
            .is_some_and(|until| until <= self.now)
        {
            self.accept_paused_until = None;
        }
        if self
            .drain
            .as_ref()
            .is_some_and(|drain| drain.deadline <= self.now)
        {
            self.cut_all();
        }
        self.expire_probes();
        self.start_probes();
        self.start_resolves();
    }

    fn any_accept_ready(&self) -> bool {
        self.accept_paused_until.is_none()
            && (self.siblings.budget.has_room()
                && self.routes.iter().any(|(_, route)| {
                    route.below_limit() && route.listeners.iter().any(|listener| listener.ready)
                })
                || self
                    .metrics_server
                    .as_ref()
                    .is_some_and(|server| server.is_ready(self.now)))
    }

    /// With `--threads`, spare pipes live at most [`budget::SPARE_CHECK`]: another reactor's clients may
    /// wait for their slots, and nothing would wake this reactor to give them back. The first turn that
    /// finds spares arms the deadline; the turn at or past it closes every spare. An idle reactor thus
    /// wakes once after its last pipe went spare, then sleeps.
    fn expire_spare_pipes(&mut self) {
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

    fn can_accept(&self, route: usize, index: usize) -> bool {
        self.accept_paused_until.is_none()
            && self.routes.get(route).is_some_and(|route| {
                route.below_limit()
                    && route
                        .listeners
                        .get(index)
                        .is_some_and(|listener| listener.ready)
            })
    }

    /// The after-batch accept phase: metrics scrapes, every ready listener, then the warm pool's refill
    /// (new slots are only handed out here, after every event of the batch has been dispatched).
    fn accept_ready(&mut self) {
        self.accept_scrapes();
        if self.budget_retry_at.is_some_and(|at| at <= self.now) {
            self.budget_retry_at = None;
        }
        if self.siblings.budget.is_wanted() {
            // Clients wait for a slot, perhaps in another reactor's backlog: spares must not hold them.
            self.shed_spare_pipes();
        }
        let ready: Vec<(usize, usize)> = self
            .routes
            .iter()
            .flat_map(|(key, route)| {
                route
                    .listeners
                    .iter()
                    .enumerate()
                    .filter(|(_, listener)| listener.ready)
                    .map(move |(index, _)| (key, index))
            })
            .collect();
        for (route, index) in ready {
            self.accept_from(route, index);
        }
        self.expire_spare_pipes();
        self.refill_warm();
    }

    /// Accepts until WouldBlock, the route's connection limit, the fd budget, fd exhaustion or the
    /// per-turn cap. Each client is accepted with a budget slot in hand, which its pair keeps.
    fn accept_from(&mut self, route: usize, index: usize) {
        for _ in 0..ACCEPT_BUDGET {
            if !self.can_accept(route, index) {
                self.note_limit(route);
                return;
            }
            let Some(slot) = self.take_pair_slot() else {
                self.note_budget_full(route);
                return;
            };
            let Some(listener) = self.routes.get_mut(route).and_then(|route| {
                // Accepting again: the next stop, at either limit, is counted.
                route.at_limit = false;
                route.listeners.get_mut(index)
            }) else {
                return;
            };
            match listener.socket.accept() {
                Ok((stream, addr)) => {
                    self.metrics.accepts += 1;
                    self.open_pair(route, stream, addr, slot);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => listener.ready = false,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(err) => self.pause_accepting(&err),
            }
        }
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
        let at_limit = !route.below_limit() && route.listeners.iter().any(|l| l.ready);
        if at_limit && !route.at_limit {
            self.metrics.accept_pauses_limit += 1;
            debug!(
                "route {} at --max-connections ({}): clients wait in the backlog",
                route.config.name, route.config.max_connections
            );
        }
        route.at_limit = at_limit;
    }

    /// Stops accepting for a short while after fd (or memory) exhaustion. Retrying at once would spin:
    /// the queued connection stays queued and the listener stays readable.
    fn pause_accepting(&mut self, err: &io::Error) {
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

    /// Starts the upstream connect for a new client of route `key` and registers both sockets. The pair
    /// keeps `fd_slot` (given back by `close_pair`); a client dropped or refused here gives it back at
    /// once.
    fn open_pair(&mut self, key: usize, client: TcpStream, client_addr: SocketAddr, fd_slot: Slot) {
        let now = self.now;
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        if let Err(err) = net::apply_accepted_options(&SockRef::from(&client), route.options) {
            debug!("client={client_addr} dropped: cannot set socket options: {err}");
            return;
        }
        if let Some(rules) = route.greeting.clone() {
            let greeting = Greeting::new(rules);
            return self.open_greeting_pair(key, client, client_addr, greeting, fd_slot);
        }
        let uid = route.uid;
        let warm = &mut self.warm;
        let connect = route.connect(client_addr.ip(), Tried::default(), now, |index| {
            warm.as_mut().and_then(|pool| pool.take(uid, index))
        });
        let (upstream, index, tried, prewarmed) = match connect {
            Ok(connect) => connect,
            Err(failure) => return self.refuse_client(key, client, client_addr, failure),
        };
        if warm.is_some() {
            let metrics = &mut self.metrics;
            *(if prewarmed {
                &mut metrics.warm_hits
            } else {
                &mut metrics.warm_misses
            }) += 1;
        }
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % GENERATION_MASK;
        let entry = self.pairs.vacant_entry();
        let slot = entry.key();
        if slot > MAX_SLOT {
            route.release(index);
            warn!("client={client_addr} dropped: no token space left");
            return;
        }
        let pair = Pair::new(
            id,
            (client, client_addr),
            (upstream, index),
            key,
            tried,
            now,
            self.config.splice,
        );
        let pair = if prewarmed {
            pair.with_warm_upstream()
        } else {
            pair
        };
        let mut pair = pair.with_send_proxy(route.config.send_proxy);
        // Register once for both directions, edge-triggered. Interest changes afterwards only to mute a
        // socket whose direction is blocked (`sync_read_interest`). A warm upstream is already
        // registered under its pool token and moves to the pair's.
        let both = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let upstream_token = token_of(slot, Side::Upstream, id);
        let registered = registry
            .register(&mut pair.client, token_of(slot, Side::Client, id), both)
            .and_then(|()| match (prewarmed, pair.upstream.as_mut()) {
                (true, Some(upstream)) => registry.reregister(upstream, upstream_token, both),
                (false, Some(upstream)) => registry.register(upstream, upstream_token, both),
                (_, None) => Ok(()),
            });
        if let Err(err) = registered {
            // Nothing was inserted; dropping the pair closes both fds, which also removes them from epoll.
            route.release(index);
            warn!("client={client_addr} dropped: cannot register with the poller: {err}");
            return;
        }
        entry.insert(pair);
        fd_slot.keep();
        route.pairs += 1;
        self.metrics.pairs_total += 1;
        self.arm_timer(slot);
    }

    /// A client that must greet first (`--accept-proxy`, `--mode connect`): only its socket is registered;
    /// the upstream connect starts when the pair returns [`Outcome::Connect`].
    fn open_greeting_pair(
        &mut self,
        key: usize,
        mut client: TcpStream,
        client_addr: SocketAddr,
        greeting: Greeting,
        fd_slot: Slot,
    ) {
        let Some(route) = self.routes.get_mut(key) else {
            return;
        };
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % GENERATION_MASK;
        let entry = self.pairs.vacant_entry();
        let slot = entry.key();
        if slot > MAX_SLOT {
            warn!("client={client_addr} dropped: no token space left");
            return;
        }
        let both = Interest::READABLE | Interest::WRITABLE;
        let token = token_of(slot, Side::Client, id);
        if let Err(err) = self.poll.registry().register(&mut client, token, both) {
            warn!("client={client_addr} dropped: cannot register with the poller: {err}");
            return;
        }
        let pair = Pair::greeting(
            id,
            (client, client_addr),
            key,
            greeting,
            self.now,
            self.config.splice,
        );
        entry.insert(pair.with_send_proxy(route.config.send_proxy));
        fd_slot.keep();
        route.pairs += 1;
        self.metrics.pairs_total += 1;
        self.arm_timer(slot);
    }

    /// Tops the `--prewarm` pool up for every accepting route, over the upstreams that are up.
    fn refill_warm(&mut self) {
        let Some(warm) = self.warm.as_mut() else {
            return;
        };
        warm.expire_connects(self.now);
        warm.expire_backoff(self.now);
        // Routes whose clients greet first connect after the greeting, never to a warm connection.
        let warmable = |route: &Route| !route.draining && route.greeting.is_none();
        for (_, route) in self.routes.iter().filter(|(_, route)| warmable(route)) {
            let up: Vec<(usize, SocketAddr)> = route
                .upstreams
                .live()
                .filter(|(_, endpoint)| endpoint.health.is_up())
                .map(|(slot, endpoint)| (slot, endpoint.addr))
                .collect();
            warm.refill(
                self.poll.registry(),
                route.uid,
                &up,
                (route.options, route.deadlines.connect),
                self.now,
            );
        }
    }

    /// No upstream connect could even be started (every socket call failed, or nothing was left to try):
    /// reset the client.
    fn refuse_client(
        &mut self,
        key: usize,
        client: TcpStream,
        client_addr: SocketAddr,
        failure: NoUpstream,
    ) {
        let err = &failure.error;
        let cause = failure.cause();
        if net::is_resource_exhaustion(err) {
            self.pause_accepting(err);
        }
        net::set_reset_on_close(&client);
        self.metrics.closes[cause] += 1;
        let route = self.routes.get(key);
        let upstream = route
            .zip(failure.last)
            .map_or("-", |(route, slot)| route.endpoint_label(slot));
        debug!(
            "closed conn=- client={client_addr} route={} upstream={upstream} cause={cause} c2u=0 u2c=0 duration=0ms error=\"{err}\"",
            route.map_or("-", Route::name)
        );
    }

    /// A pair's upstream connect failed (refused, error, or its deadline). The failure counts against
    /// that upstream's health; then the route is asked for an upstream this client has not tried yet,
    /// within its `connect_attempts`. The new socket is registered under the pair's upstream token (see
    /// [`Pair::retry`] for why an event of the closed one cannot pass for the new one's). With nothing left to try, the pair
    /// is closed and the client reset, as with a single upstream.
    fn failover(&mut self, slot: usize, cause: Cause) {
        let now = self.now;
        let Some(pair) = self.pairs.get_mut(slot) else {
            return;
        };
        let Some(route) = self.routes.get_mut(pair.route) else {
            return;
        };
        let failed = pair.endpoint;
        route.connect_failed(failed, now);
        // A failover never takes a warm connection: the pool's are for clients not yet connecting.
        let next = route.connect(pair.client_addr.ip(), pair.tried.clone(), now, |_| None);
        let (mut stream, index, tried) =
            match next.map(|(stream, index, tried, _)| (stream, index, tried)) {
                Ok(next) => next,
                Err(failure) => {
                    if net::is_resource_exhaustion(&failure.error) {
                        self.pause_accepting(&failure.error);
                    }
                    return self.close_pair(slot, cause);
                }
            };
        let token = token_of(slot, Side::Upstream, pair.id);
        let both = Interest::READABLE | Interest::WRITABLE;
        if let Err(err) = self.poll.registry().register(&mut stream, token, both) {
            route.release(index);
            warn!("conn={} cannot register a failover connect: {err}", pair.id);
            return self.close_pair(slot, cause);
        }
        debug!(
            "conn={} route={} upstream={} {cause}: failing over to upstream={} (attempt {})",
            pair.id,
            route.config.name,
            route.endpoint_label(failed),
            route.endpoint_label(index),
            tried.count()
        );
        route.release(failed);
        pair.retry(stream, index, tried, now);
        self.metrics.failovers += 1;
        self.arm_timer(slot);
    }

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
    fn close_pair(&mut self, slot: usize, cause: Cause) {
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
        // A timeout can fire while a stalled reader leaves bytes in a ring: those peers must see an
        // abort, not a FIN after a stream that silently lost its tail.
        if cause.resets() || pair.holds_undelivered() {
            net::set_reset_on_close(&pair.client);
            if let Some(upstream) = pair.upstream.as_ref() {
                net::set_reset_on_close(upstream);
            }
        }
        if let Some(route) = self.routes.get_mut(pair.route) {
            pair.release(&mut route.shared(&mut self.metrics));
            route.pairs -= 1;
            route.release(pair.endpoint);
            if log::log_enabled!(log::Level::Debug) {
                let (c2u, u2c) = pair.bytes();
                let (reads, writes) = pair.syscalls();
                debug!(
                    "closed conn={} client={} route={} upstream={} cause={cause} c2u={c2u} u2c={u2c} duration={}ms reads={reads} writes={writes}",
                    pair.id,
                    pair.client_addr,
                    route.config.name,
                    route.endpoint_label(pair.endpoint),
                    self.now.duration_since(pair.started).as_millis()
                );
            }
        }
        self.remove_if_drained(pair.route);
        if self.pairs.is_empty() {
            self.shed_spare_pipes();
            self.release_pair_slots();
        }
        if let Some(drain) = self.drain.as_mut() {
            if cause == Cause::Shutdown {
                drain.cut += 1;
            } else {
                drain.drained += 1;
            }
        }
        // Every pair in the slab holds a slot of the fd budget (`open_pair`): given back once its
        // sockets are closed, last, so that whoever sees them closed also sees the slab released.
        drop(pair);
        self.siblings.budget.give_kept();
    }

    /// Drops a route that a reload removed once its last pair is gone.
    fn remove_if_drained(&mut self, key: usize) {
        if self
            .routes
            .get(key)
            .is_some_and(|route| route.draining && route.pairs == 0)
        {
            let route = self.routes.remove(key);
            info!("route {}: drained, removed", route.config.name);
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
    fn shed_spare_pipes(&mut self) {
        for (_, route) in self.routes.iter_mut() {
            if let Some(pipes) = route.pipes.as_mut() {
                pipes.clear();
            }
        }
    }

    fn on_signals(&mut self) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
            if signal == SIGHUP {
                self.request_reload();
                continue;
            }
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            match self.drain.as_mut() {
                Some(drain) => {
                    info!(
                        "second signal ({name}): closing {} pairs now",
                        self.pairs.len()
                    );
                    drain.forced = true;
                }
                None => self.begin_shutdown(name),
            }
        }
    }

    /// Stops accepting (closing the listeners refuses new clients) and lets live pairs finish.
    fn begin_shutdown(&mut self, signal: &str) {
        let registry = self.poll.registry();
        for (_, route) in self.routes.iter_mut() {
            for mut listener in route.listeners.drain(..) {
                // A `--threads` sibling's descriptor keeps the socket open, and with it this poller's
                // registration: deregistered first, so that its clients wake only the sibling. Failure
                // means it was not registered.
                let _ = registry.deregister(&mut listener.socket);
            }
        }
        self.warm = None;
        self.notify_stopping();
        info!(
            "{signal}: shutting down, stopped accepting; waiting up to {}ms for {} live pairs",
            self.config.shutdown_timeout.as_millis(),
            self.pairs.len()
        );
        self.drain = Some(Drain {
            deadline: self.now + self.config.shutdown_timeout,
            drained: 0,
            cut: 0,
            forced: false,
        });
    }

    /// Closes every remaining pair with RST: their transfers did not complete.
    fn cut_all(&mut self) {
        let slots: Vec<usize> = self.pairs.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close_pair(slot, Cause::Shutdown);
        }
    }

    /// `Some` once a shutdown has nothing left to wait for.
    fn finished(&mut self) -> Option<Exit> {
        let forced = self.drain.as_ref()?.forced;
        if forced {
            self.cut_all();
        }
        if !self.pairs.is_empty() {
            return None;
        }
        let drain = self.drain.as_ref()?;
        info!(
            "shutdown complete: drained={} cut={}",
            drain.drained, drain.cut
        );
        Some(if forced { Exit::Forced } else { Exit::Graceful })
    }
}

fn token_of(slot: usize, side: Side, generation: u32) -> Token {
    PairToken {
        slot,
        side,
        generation,
    }
    .encode()
}

/// The pair an event's token names, if it still does. A token is stale when its slot was freed earlier
/// in the batch, or freed and reused since the token was issued: the slot's pair then has another
/// generation (token.rs). Both happen when a pair closes while the kernel still has its events queued.
fn live_pair<S: Socket>(pairs: &mut Slab<Pair<S>>, token: PairToken) -> Option<&mut Pair<S>> {
    pairs
        .get_mut(token.slot)
        .filter(|pair| pair.id == token.generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Splice;
    use crate::datapath::stream::script::Scripted;

    fn pair(id: u32) -> Pair<Scripted> {
        let (client, upstream) = (Scripted::default(), Scripted::default());
        let addr = SocketAddr::from(([127, 0, 0, 1], 40000));
        let now = Instant::now();
        Pair::new(
            id,
            (client, addr),
            (upstream, 0),
            0,
            Tried::default(),
            now,
            Splice::Off,
        )
    }

    fn token(slot: usize, generation: u32) -> PairToken {
        PairToken {
            slot,
            side: Side::Client,
            generation,
        }
    }

    #[test]
    fn test_live_pair_takes_its_own_token() {
        let mut pairs = Slab::new();
        let slot = pairs.insert(pair(7));
        let found = live_pair(&mut pairs, token(slot, 7)).map(|pair| pair.id);
        assert_eq!(found, Some(7));
    }

    /// An event for a slot freed earlier in the batch is dropped.
    #[test]
    fn test_freed_slot_drops_the_event() {
        let mut pairs = Slab::new();
        let slot = pairs.insert(pair(7));
        pairs.remove(slot);
        assert!(live_pair(&mut pairs, token(slot, 7)).is_none());
    }

    /// The slot is reused by a new pair within the batch: the old pair's events do not reach it.
    #[test]
    fn test_reused_slot_drops_the_old_generation() {
        let mut pairs = Slab::new();
        let slot = pairs.insert(pair(7));
        pairs.remove(slot);
        assert_eq!(pairs.insert(pair(8)), slot, "slab reuses the slot");
        assert!(live_pair(&mut pairs, token(slot, 7)).is_none());
        let found = live_pair(&mut pairs, token(slot, 8)).map(|pair| pair.id);
        assert_eq!(found, Some(8));
    }
}

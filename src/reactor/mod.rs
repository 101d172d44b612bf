//! The event loop: one `Poll`, a slab of routes (each with its listeners), the signal pipe, a slab of pairs,
//! health probes, the resolver's waker, and the timer heap.
//!
//! Only this module tree owns `Poll` and the `Slab`s; the `Registry` is lent for one call to modules that
//! register sockets of their own (`session::connect`, `upstream::prewarm`). One turn of the loop:
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
//! Getting a pair its upstream (pick, connect, fail over, look up a CONNECT destination, establish or
//! give up) is `session::connect`'s: the reactor lends it a `Context` at each step and acts on the
//! outcome. Reload (SIGHUP) swaps routes without cutting a pair (`reload.rs`).
//!
//! This file is the loop, event dispatch, acting on a pair's outcome, and the pairs' timers; the rest
//! are `impl Reactor` blocks in submodules, so `Poll` and the slabs stay in this module tree:
//! - `accept`: the after-batch accept phase, its limits and the EMFILE pause;
//! - `connecting`: handing a new client and each step of its connect to `session::connect`, the
//!   `--prewarm` refill, the lookup threads as the connect path sees them;
//! - `teardown`: closing a pair (and its access log line), and what a close frees (a drained route,
//!   slab capacity, spare pipes);
//! - `access_log`: offering lines to the `--access-log` writer, and SIGUSR1;
//! - `shutdown`: signals, graceful shutdown and its deadline;
//! - `reload`: SIGHUP reload, route matching, listener hand-over, draining routes;
//! - `probes`: active health probes;
//! - `lookups`: DNS re-resolution, CONNECT lookups' answers, and the worker threads' waker;
//! - `report`: per-turn counters, the stats line, `--metrics` scrapes, `--trace` lines.
//! - `exchange`: the small HTTP servers beside the routes (`scrape` for `--metrics`, `admin`).
//! - `admin`: the `--admin` API (reactor 0), which puts each request to every reactor.
//! - `systemd`: `Type=notify` notices (reactor 0) and socket-activated listeners.
//! - `upgrade`: `--upgrade-socket` (reactor 0): handing the listening sockets to a successor.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::warn;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::close::Cause;
use crate::config::file::Defaults;
use crate::config::{Config, Mode, Protocol};
use crate::datapath::budget::FdBudget;
use crate::datapath::readiness::Event;
use crate::datapath::stream::Socket;
use crate::observe::access_log::writer::AccessLog;
use crate::observe::metrics::{Metrics, MetricsBoard, StatsTicker};
use crate::observe::routed::RouteBoard;
use crate::reactor::scrape::MetricsServer;
use crate::reactor::timer::{Entry, Timers};
use crate::reactor::worker::{Inbox, Worker};
use crate::service::activation::Passed;
use crate::service::notify::Notifier;
use crate::service::upgrade::PassedUnix;
use crate::session::connect::Step;
use crate::session::pair::diagnosis::{self, Limits};
use crate::session::pair::{Outcome, Pair};
use crate::session::udp::forward::UdpRoute;
use crate::throttle::Throttle;
use crate::token::{self, Owner, PairToken, Side};
use crate::upstream::clients::ClientTables;
use crate::upstream::prewarm::WarmPool;
use crate::upstream::route::{Listener, Route};
use crate::wire::greeting::Target;

mod accept;
mod access_log;
mod admin;
mod connecting;
mod exchange;
pub mod fdlimit;
mod lookups;
mod probes;
mod reload;
mod report;
mod scrape;
mod shutdown;
mod sni;
mod systemd;
mod teardown;
mod timer;
mod udp;
mod upgrade;
pub mod worker;

pub use systemd::activated_listeners;

use admin::AdminServer;
use probes::Probe;
use report::trace_event;
use shutdown::Drain;
pub use shutdown::Stopped;
use upgrade::UpgradeServer;

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

/// Where a reactor stands among the `--threads` reactors.
#[derive(Debug, Clone, Default)]
pub struct Siblings {
    /// This reactor's number; reactor 0 serves `--metrics` and leads reloads.
    pub index: usize,
    /// Where every reactor publishes its counters; `None` with a single reactor.
    pub board: Option<Arc<MetricsBoard>>,
    /// Every route's figures by route and upstream, shared by every reactor (one alone included).
    pub routes: Arc<RouteBoard>,
    /// The reactors done shutting down: the last one logs the process's end, once.
    pub stopped: Arc<Mutex<Stopped>>,
    /// The other reactors' inboxes: reactor 0 reads a reloaded file once and hands the result
    /// to them (see `reload`), so all apply the same configuration and bind the same ports.
    pub followers: Arc<Mutex<Vec<Inbox>>>,
    /// The process's fd budget, shared by every reactor's pairs and pipes; unlimited by default.
    pub budget: FdBudget,
    /// `--access-log`: the one writer thread's queue, which every reactor offers its lines to.
    pub access_log: Option<AccessLog>,
    /// The routes' per-client tables, shared by every reactor (`upstream::clients`).
    pub clients: ClientTables,
}

/// Listening sockets a reactor takes instead of binding.
#[derive(Debug, Default)]
pub struct Inherited {
    /// TCP, route by route: the first reactor's listeners (its [`Reactor::share_listeners`]) for a
    /// `--threads` sibling to accept from; for the first reactor, the sockets systemd or a predecessor
    /// passed, placed by [`activated_listeners`] (empty: it binds the configured addresses).
    pub tcp: Vec<Vec<Listener>>,
    /// Unix stream listeners a predecessor handed over (binary upgrade; the first reactor only): each
    /// serves the route listening at its address instead of a new bind.
    pub unix: Vec<PassedUnix>,
    /// The TCP `--admin` listener a predecessor handed over (the first reactor only; a Unix one comes
    /// in `unix` and is found by its path).
    pub admin: Option<Passed>,
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
    /// The `--admin` endpoint (reactor 0).
    admin: Option<AdminServer>,
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
    /// `--upgrade-socket`: reactor 0's line to a successor (`upgrade`).
    upgrade: Option<UpgradeServer>,
    /// UDP routes (reactor 0 only), by the slot their tokens carry.
    udp: Slab<UdpRoute>,
    /// UDP sockets that used their budget: run again before the loop sleeps.
    udp_yielded: Vec<(usize, Option<usize>)>,
}

impl Reactor {
    /// Binds every route's listeners and sets up polling. Errors are start failures for `main` to report.
    /// `inherited` gives the listening sockets to take instead of binding ([`Inherited`]).
    pub fn new(
        config: Config,
        defaults: Defaults,
        siblings: Siblings,
        inherited: Inherited,
    ) -> Result<Reactor, String> {
        let poll = Poll::new().map_err(|err| format!("cannot create the poller: {err}"))?;
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
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
        // With --admin, reactors put admin requests to each other through their inboxes (`admin`).
        let needs_worker = config.file.is_some()
            || config.admin.is_some()
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
            admin: None,
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
            upgrade: None,
            udp: Slab::new(),
            udp_yielded: Vec::new(),
        };
        let mut handed_unix = upgrade::adopt_unix(inherited.unix);
        reactor.bind_admin(inherited.admin, &mut handed_unix)?;
        let mut shared = inherited.tcp.into_iter();
        for (index, route) in config.routes.iter().enumerate() {
            let route = route.clone();
            // Routes sharing an address (SNI routing) share its socket: the first one holds it.
            let bound = crate::config::bound_addresses(&config.routes, index);
            if route.protocol == Protocol::Udp {
                if reactor.siblings.index == 0 {
                    reactor.bind_udp(route)?;
                }
                continue;
            }
            // `shared` is also how socket-activated listeners reach reactor 0 ([`activated_listeners`]).
            let listeners = match (reactor.siblings.index, shared.next()) {
                (_, Some(listeners)) if listeners.len() == bound.len() => listeners,
                (0, None) => bound
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
            reactor.insert_route(route, listeners, None, &mut handed_unix)?;
        }
        upgrade::close_unwanted(handed_unix);
        reactor.assign_sni();
        Ok(reactor)
    }

    /// This reactor's listeners, route by route, each under a new descriptor, for another `--threads`
    /// reactor to accept from: all reactors of the process drain the same sockets, and no other
    /// process can join them as it could join a SO_REUSEPORT group (see [`crate::datapath::net::bind_listener`]).
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
                (0..route.listener_count())
                    .filter_map(|index| route.describe_listener(index))
                    .chain(route.describe_shared())
            })
            .chain(self.udp_start_lines())
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
            self.run_udp_yielded();
            self.flush_udp();
            self.fire_timers();
            self.expire_udp();
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
        if !self.yielded.is_empty() || !self.udp_yielded.is_empty() || self.any_accept_ready() {
            return Some(Duration::ZERO);
        }
        let rounds = self
            .routes
            .iter()
            .filter(|(_, route)| !route.draining)
            .flat_map(|(_, route)| [route.next_probe, route.next_resolve, route.queue_deadline()])
            .flatten()
            .min();
        [
            self.timers.next_deadline(),
            self.accept_paused_until,
            self.budget_retry_at,
            self.spares_expire_at,
            self.drain.as_ref().map(|drain| drain.deadline),
            self.notify_deadline(),
            self.upgrade.as_ref().and_then(UpgradeServer::deadline),
            self.stats.as_ref().map(|stats| stats.next),
            rounds,
            self.probes.iter().map(|(_, probe)| probe.deadline).min(),
            self.warm.as_ref().and_then(WarmPool::next_deadline),
            self.metrics_server
                .as_ref()
                .and_then(MetricsServer::retry_deadline),
            self.admin.as_ref().and_then(AdminServer::deadline),
            self.udp_deadline(),
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
            let owner = Owner::of(event.token());
            if log::log_enabled!(log::Level::Trace) {
                trace_event(owner, Event::from(event));
            }
            match owner {
                Owner::Listener { route, index } => self.on_listener_event(route, index),
                Owner::UnixListener { route, index } => self.on_unix_listener_event(route, index),
                Owner::Signals => self.on_signals(),
                Owner::Metrics => self.with_metrics_server(|server, _| server.on_listener_event()),
                Owner::Waker => self.on_waker(),
                Owner::Upgrade => self.on_upgrade_listener(),
                Owner::Successor => self.on_successor_event(),
                Owner::Scrape(slot) => self.on_scrape_event(slot),
                Owner::Admin => self.on_admin_listener_event(),
                Owner::AdminExchange(slot) => self.on_admin_event(slot),
                Owner::Probe(slot) => self.on_probe_event(slot),
                Owner::Warm(slot) => {
                    if let Some(warm) = self.warm.as_mut() {
                        let hung_up = event.is_read_closed() || event.is_error();
                        warm.on_event(slot, hung_up, self.now);
                    }
                }
                Owner::Pair(pair) => self.on_pair_event(pair, Event::from(event)),
                Owner::Udp { route, session } => self.run_udp(route, session),
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

    /// [`Reactor::on_listener_event`] for a Unix listener.
    fn on_unix_listener_event(&mut self, route: usize, index: usize) {
        if let Some(listener) = self
            .routes
            .get_mut(route)
            .and_then(|route| route.unix_listeners.get_mut(index))
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
        let budget = route.pair_budget;
        let mut shared = route.shared(&mut self.metrics);
        let outcome = pair.on_event(side, event, &mut shared, budget, self.now);
        self.settle(slot, outcome);
    }

    /// Acts on a pair's outcome: keep it (re-arming its timer), queue it to run again, fail over to
    /// another upstream, or tear it down.
    fn settle(&mut self, slot: usize, outcome: Outcome) {
        self.account(slot);
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
            Outcome::Close(cause) => self.close_pair(slot, cause),
            Outcome::Connect(target) => {
                if let Target::Routed(routed) = &target {
                    if !self.route_by_hello(slot, routed) {
                        return;
                    }
                }
                self.advance_connect(slot, Step::Greeted(target))
            }
            Outcome::Connected => self.advance_connect(slot, Step::Connected),
            Outcome::ConnectFailed(cause) => self.advance_connect(slot, Step::Failed(cause)),
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
                    diagnosis::log_expiry(pair, &Limits::of(route), cause, self.now);
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
        self.upgrade_due();
        self.expire_admin();
        self.expire_probes();
        self.start_probes();
        self.start_resolves();
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
    use crate::session::attempt::Plan;
    use crate::upstream::endpoint::Tried;

    fn pair(id: u32) -> Pair<Scripted> {
        let (client, upstream) = (Scripted::default(), Scripted::default());
        let addr = SocketAddr::from(([127, 0, 0, 1], 40000));
        let now = Instant::now();
        Pair::new(
            id,
            (client, addr),
            (upstream, addr.into(), None),
            0,
            Plan::Upstreams {
                tried: Tried::default(),
            },
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

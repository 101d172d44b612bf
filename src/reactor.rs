//! The event loop: one `Poll`, the listener, the signal pipe, a slab of pairs, and the timer heap.
//!
//! Only this module touches `Poll`, `Registry` and the `Slab`. One turn of the loop:
//!
//! 1. `epoll_wait`, with a timeout: zero if work is queued (a pair that used up its byte budget, a
//!    listener we stopped draining early), else until the earliest deadline, else forever — an idle
//!    forwarder makes no periodic wakeups.
//! 2. Dispatch every event: OR it into the pair's cached readiness and run the pair at once. Tokens carry a
//!    generation, so events of a pair torn down earlier in the same batch are recognised and dropped.
//! 3. Re-run the pairs that yielded, fire due timers, accept, and check whether a shutdown is complete.
//!
//! Accepting is done after the batch and only while the cached "listener ready" bit is set. When we stop
//! accepting for a reason of our own (connection limit, EMFILE, the per-turn accept cap) that bit stays
//! set: the kernel will not send another edge for connections already queued, so the loop must come back
//! by itself — when a pair closes, when the backoff timer fires, or on the next turn.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use socket2::SockRef;

use crate::config::Config;
use crate::metrics::{MetricsBoard, StatsTicker};
use crate::net::{self, StreamOptions};
use crate::pair::{Cause, Deadlines, Outcome, Pair};
use crate::prewarm::WarmPool;
use crate::pump::Shared;
use crate::readiness::Event;
use crate::ring::BufPool;
use crate::scrape::MetricsServer;
use crate::splice::PipePool;
use crate::throttle::Throttle;
use crate::timer::{Entry, Timers};
use crate::token::{self, PairToken, Side, Target, GENERATION_MASK, MAX_SLOT};

/// Most connections accepted in one loop turn, so a connection flood cannot starve established pairs.
const ACCEPT_BUDGET: usize = 256;
/// How long accepting pauses after EMFILE/ENFILE: long enough to cost no CPU, short enough to resume fast.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Events fetched per `epoll_wait`.
const EVENTS_CAPACITY: usize = 1024;
/// Empty pipes kept for `--splice` (each costs two fds, so the pool stays small).
const MAX_SPARE_PIPES: usize = 32;
/// Floor of the per-wakeup byte budget of one pair.
const MIN_PAIR_BUDGET: usize = 1 << 20;

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
#[derive(Debug, Clone)]
pub struct Siblings {
    /// This reactor's number; reactor 0 serves `--metrics`.
    pub index: usize,
    /// Where every reactor publishes its counters; `None` with a single reactor.
    pub board: Option<Arc<MetricsBoard>>,
}

impl Siblings {
    /// The only reactor of the process.
    pub fn alone() -> Siblings {
        Siblings {
            index: 0,
            board: None,
        }
    }
}

/// The single-threaded forwarder.
pub struct Reactor {
    poll: Poll,
    events: Events,
    /// `None` once a shutdown has begun (dropping it closes the socket, refusing new clients).
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    /// The listener had an edge that no accept has yet drained to WouldBlock.
    listener_ready: bool,
    /// Accepting is paused after fd exhaustion until then.
    accept_paused_until: Option<Instant>,
    /// Stopped at `--max-connections` with the listener still ready (counted once per stop).
    at_limit: bool,
    signals: Signals,
    pairs: Slab<Pair>,
    /// Buffer pool and counters, lent to pairs while they run.
    shared: Shared,
    /// The `--metrics` endpoint.
    metrics_server: Option<MetricsServer>,
    /// The `--stats-interval` log line.
    stats: Option<StatsTicker>,
    /// `--prewarm` upstream connections.
    warm: Option<WarmPool>,
    siblings: Siblings,
    timers: Timers,
    config: Config,
    deadlines: Deadlines,
    options: StreamOptions,
    /// Bytes one pair may read per wakeup before it must yield.
    pair_budget: usize,
    /// Id (and token generation) of the next pair.
    next_id: u32,
    /// Pairs that yielded with work left: run again before the loop sleeps.
    yielded: Vec<(usize, u32)>,
    drain: Option<Drain>,
    exhaustion_warning: Throttle,
    /// Time of the current loop turn, read once after `epoll_wait`.
    now: Instant,
}

impl Reactor {
    /// Binds the listener and sets up polling. Errors are start failures for `main` to report.
    pub fn new(config: Config, siblings: Siblings) -> Result<Reactor, String> {
        let mut listener = net::bind_listener(config.listen, config.backlog, config.threads > 1)
            .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
        let local_addr = listener
            .local_addr()
            .map_err(|err| format!("cannot read the listener's address: {err}"))?;
        let poll = Poll::new().map_err(|err| format!("cannot create the poller: {err}"))?;
        let mut signals = Signals::new([SIGTERM, SIGINT])
            .map_err(|err| format!("cannot install signal handlers: {err}"))?;
        let registry = poll.registry();
        registry
            .register(&mut listener, token::LISTENER, Interest::READABLE)
            .and_then(|()| registry.register(&mut signals, token::SIGNALS, Interest::READABLE))
            .map_err(|err| format!("cannot register with the poller: {err}"))?;
        let metrics_server = config
            .metrics
            .filter(|_| siblings.index == 0)
            .map(|addr| {
                MetricsServer::bind(addr, registry)
                    .map_err(|err| format!("cannot listen for metrics on {addr}: {err}"))
            })
            .transpose()?;
        let now = Instant::now();
        let deadlines = Deadlines {
            connect: config.connect_timeout,
            idle: config.idle_timeout,
            fin: config.fin_timeout,
        };
        let options = StreamOptions {
            nodelay: config.nodelay,
            keepalive: config.keepalive,
        };
        Ok(Reactor {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            listener: Some(listener),
            local_addr,
            listener_ready: false,
            accept_paused_until: None,
            at_limit: false,
            signals,
            pairs: Slab::new(),
            shared: Shared::new(
                BufPool::new(config.buffer_size),
                config
                    .splice
                    .then(|| PipePool::new(config.buffer_size, MAX_SPARE_PIPES)),
            ),
            metrics_server,
            stats: config
                .stats_interval
                .map(|interval| StatsTicker::new(interval, now)),
            siblings,
            warm: (config.prewarm > 0).then(|| WarmPool::new(config.prewarm)),
            timers: Timers::new(),
            pair_budget: (4 * config.buffer_size).max(MIN_PAIR_BUDGET),
            deadlines,
            options,
            config,
            next_id: 1,
            yielded: Vec::new(),
            drain: None,
            exhaustion_warning: Throttle::new(Duration::from_secs(5)),
            now,
        })
    }

    /// The address the listener is bound to (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        loop {
            let timeout = self.poll_timeout();
            if let Err(err) = self.poll.poll(&mut self.events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            self.now = Instant::now();
            let work_before = self.shared.metrics.work_done();
            let events = self.dispatch_events();
            self.run_yielded();
            self.fire_timers();
            self.accept_ready();
            self.count_turn(events, work_before);
            if let Some(exit) = self.finished() {
                return Ok(exit);
            }
        }
    }

    /// Zero when work is queued; else until the nearest deadline; else `None` (block indefinitely).
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.yielded.is_empty() || self.can_accept() {
            return Some(Duration::ZERO);
        }
        [
            self.timers.next_deadline(),
            self.accept_paused_until,
            self.drain.as_ref().map(|drain| drain.deadline),
            self.stats.as_ref().map(|stats| stats.next),
            self.warm.as_ref().and_then(WarmPool::retry_at),
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
                Target::Listener => self.listener_ready = true,
                Target::Signals => self.on_signals(),
                Target::Metrics => self.with_metrics_server(|server, _| server.on_listener_event()),
                Target::Scrape(slot) => self.on_scrape_event(slot),
                Target::Warm(slot) => {
                    if let Some(warm) = self.warm.as_mut() {
                        warm.on_event(slot, self.now);
                    }
                }
                Target::Pair(pair) => self.on_pair_event(pair, Event::from(event)),
            }
        }
        self.events = events;
        count
    }

    /// Counts one loop turn: a turn whose events led to no work at all was a spurious wakeup.
    fn count_turn(&mut self, events: usize, work_before: u64) {
        let metrics = &mut self.shared.metrics;
        metrics.polls += 1;
        metrics.events += events as u64;
        metrics.events_per_poll.record(events as u64);
        if events > 0 && metrics.work_done() == work_before {
            metrics.spurious_wakeups += 1;
        }
        if let Some(board) = self.siblings.board.as_ref() {
            board.publish(self.siblings.index, metrics, self.pairs.len());
        }
        if let Some(stats) = self.stats.as_mut().filter(|stats| stats.next <= self.now) {
            info!(
                "{}",
                stats.report(
                    self.siblings.index,
                    &self.shared.metrics,
                    self.pairs.len(),
                    self.now
                )
            );
        }
    }

    fn with_metrics_server(&mut self, act: impl FnOnce(&mut MetricsServer, &mio::Registry)) {
        if let Some(server) = self.metrics_server.as_mut() {
            act(server, self.poll.registry());
        }
    }

    fn on_scrape_event(&mut self, slot: usize) {
        let Some(server) = self.metrics_server.as_mut() else {
            return;
        };
        let (metrics, open) = (&mut self.shared.metrics, self.pairs.len());
        let board = self.siblings.board.as_deref();
        let finished = server.on_scrape_event(slot, || {
            let mut body = String::with_capacity(8192);
            match board {
                Some(board) => {
                    board.publish(0, metrics, open);
                    let (total, open) = board.total();
                    total.render(open, &mut body);
                }
                None => metrics.render(open, &mut body),
            }
            body
        });
        if finished {
            metrics.scrapes += 1;
        }
    }

    fn on_pair_event(&mut self, token: PairToken, event: Event) {
        let PairToken {
            slot,
            side,
            generation,
        } = token;
        let Some(pair) = self.pairs.get_mut(slot) else {
            return; // the slot was freed earlier in this batch
        };
        if pair.id != generation {
            return; // a stale event for a pair that no longer exists; the slot was reused
        }
        let outcome = pair.on_event(side, event, &mut self.shared, self.pair_budget, self.now);
        self.settle(slot, outcome);
    }

    /// Acts on a pair's outcome: keep it (re-arming its timer), queue it to run again, or tear it down.
    fn settle(&mut self, slot: usize, outcome: Outcome) {
        match outcome {
            Outcome::Open => self.arm_timer(slot),
            Outcome::Yield => {
                self.shared.metrics.budget_yields += 1;
                if let Some(pair) = self.pairs.get(slot) {
                    self.yielded.push((slot, pair.id));
                }
                self.arm_timer(slot);
            }
            Outcome::Close(cause) => self.close_pair(slot, cause),
        }
    }

    fn run_yielded(&mut self) {
        let queued = std::mem::take(&mut self.yielded);
        for (slot, id) in queued {
            let Some(pair) = self.pairs.get_mut(slot).filter(|pair| pair.id == id) else {
                continue;
            };
            let outcome = pair.run(&mut self.shared, self.pair_budget, self.now);
            self.settle(slot, outcome);
        }
    }

    /// Makes sure the pair's next deadline is in the heap. Later deadlines (traffic extending an idle
    /// timeout) are not pushed: the armed entry fires first and re-arms then.
    fn arm_timer(&mut self, slot: usize) {
        let Some(pair) = self.pairs.get_mut(slot) else {
            return;
        };
        let Some((at, _)) = pair.deadline(&self.deadlines) else {
            return;
        };
        if pair.armed.is_none_or(|armed| at < armed) {
            pair.armed = Some(at);
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
            match pair.deadline(&self.deadlines) {
                Some((at, cause)) if at <= self.now => self.close_pair(entry.slot, cause),
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
    }

    fn can_accept(&self) -> bool {
        self.listener.is_some()
            && self.listener_ready
            && self.accept_paused_until.is_none()
            && self.pairs.len() < self.config.max_connections
    }

    /// The after-batch accept phase: metrics scrapes, clients, then the warm pool's refill (new
    /// slots are only handed out here, after every event of the batch has been dispatched).
    fn accept_ready(&mut self) {
        let now = self.now;
        self.with_metrics_server(|server, registry| server.accept(registry, now));
        self.accept_clients();
        self.refill_warm();
    }

    /// Accepts until WouldBlock, the connection limit, fd exhaustion or the per-turn cap.
    fn accept_clients(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            if !self.can_accept() {
                self.note_limit();
                return;
            }
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    self.shared.metrics.accepts += 1;
                    self.open_pair(stream, addr);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.listener_ready = false,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(err) => self.pause_accepting(&err),
            }
        }
    }

    /// Counts a stop at `--max-connections` once, when it starts.
    fn note_limit(&mut self) {
        let at_limit = self.listener_ready && self.pairs.len() >= self.config.max_connections;
        if at_limit && !self.at_limit {
            self.shared.metrics.accept_pauses_limit += 1;
            debug!(
                "at --max-connections ({}): clients wait in the backlog",
                self.config.max_connections
            );
        }
        self.at_limit = at_limit;
    }

    /// Stops accepting for a short while after fd (or memory) exhaustion. Retrying at once would spin:
    /// the queued connection stays queued and the listener stays readable.
    fn pause_accepting(&mut self, err: &io::Error) {
        self.accept_paused_until = Some(self.now + ACCEPT_BACKOFF);
        self.shared.metrics.accept_pauses_exhausted += 1;
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

    /// Starts the upstream connect for a new client and registers both sockets.
    fn open_pair(&mut self, client: TcpStream, client_addr: SocketAddr) {
        if let Err(err) = net::apply_options(&SockRef::from(&client), self.options) {
            debug!("client={client_addr} dropped: cannot set socket options: {err}");
            return;
        }
        let warm = self.warm.as_mut().and_then(WarmPool::take);
        let prewarmed = warm.is_some();
        if self.warm.is_some() {
            let metrics = &mut self.shared.metrics;
            *(if prewarmed {
                &mut metrics.warm_hits
            } else {
                &mut metrics.warm_misses
            }) += 1;
        }
        let upstream = match warm.map_or_else(
            || net::start_connect(self.config.upstream, self.options),
            Ok,
        ) {
            Ok(upstream) => upstream,
            Err(err) => return self.refuse_client(client, client_addr, &err),
        };
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % GENERATION_MASK;
        let entry = self.pairs.vacant_entry();
        let slot = entry.key();
        if slot > MAX_SLOT {
            warn!("client={client_addr} dropped: no token space left");
            return;
        }
        let (now, splice) = (self.now, self.config.splice);
        let mut pair = if prewarmed {
            Pair::with_warm_upstream(id, client, client_addr, upstream, now, splice)
        } else {
            Pair::new(id, client, client_addr, upstream, now, splice)
        };
        // Register once for both directions, edge-triggered; interest is never changed afterwards. A
        // warm upstream is already registered under its pool token and moves to the pair's.
        let both = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let upstream_token = token_of(slot, Side::Upstream, id);
        let registered = registry
            .register(&mut pair.client, token_of(slot, Side::Client, id), both)
            .and_then(|()| match prewarmed {
                true => registry.reregister(&mut pair.upstream, upstream_token, both),
                false => registry.register(&mut pair.upstream, upstream_token, both),
            });
        if let Err(err) = registered {
            // Nothing was inserted; dropping the pair closes both fds, which also removes them from epoll.
            warn!("client={client_addr} dropped: cannot register with the poller: {err}");
            return;
        }
        entry.insert(pair);
        self.shared.metrics.pairs_total += 1;
        self.arm_timer(slot);
        if prewarmed {
            // Run it now: the client's first bytes may already be queued, and no edge will repeat them.
            let outcome = self
                .pairs
                .get_mut(slot)
                .map(|pair| pair.run(&mut self.shared, self.pair_budget, self.now));
            if let Some(outcome) = outcome {
                self.settle(slot, outcome);
            }
        }
    }

    /// Tops the `--prewarm` pool up to its target (after it handed connections out or lost some).
    fn refill_warm(&mut self) {
        if let Some(warm) = self.warm.as_mut() {
            warm.refill(
                self.poll.registry(),
                self.config.upstream,
                self.options,
                self.now,
            );
        }
    }

    /// The upstream socket could not even be created or the connect failed at once: reset the client.
    fn refuse_client(&mut self, client: TcpStream, client_addr: SocketAddr, err: &io::Error) {
        let cause = match err.kind() {
            io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
            _ => Cause::ConnectError,
        };
        if net::is_resource_exhaustion(err) {
            self.pause_accepting(err);
        }
        net::set_reset_on_close(&client);
        self.shared.metrics.closes[cause as usize] += 1;
        debug!("closed conn=- client={client_addr} cause={cause} c2u=0 u2c=0 duration=0ms error=\"{err}\"");
    }

    /// Tears a pair down: storage back to the pool, RST where the cause calls for it, one log line.
    /// Dropping the sockets closes them, which removes them from epoll/kqueue without a deregister call
    /// (we never dup these fds, so the close is the last reference).
    fn close_pair(&mut self, slot: usize, cause: Cause) {
        let Some(mut pair) = self.pairs.try_remove(slot) else {
            return;
        };
        pair.release(&mut self.shared);
        self.shared.metrics.closes[cause as usize] += 1;
        if cause.resets() {
            net::set_reset_on_close(&pair.client);
            net::set_reset_on_close(&pair.upstream);
        }
        if log::log_enabled!(log::Level::Debug) {
            let (c2u, u2c) = pair.bytes();
            let (reads, writes) = pair.syscalls();
            debug!(
                "closed conn={} client={} cause={cause} c2u={c2u} u2c={u2c} duration={}ms reads={reads} writes={writes}",
                pair.id,
                pair.client_addr,
                self.now.duration_since(pair.started).as_millis()
            );
        }
        if self.pairs.is_empty() {
            self.shed_spare_pipes();
        }
        if let Some(drain) = self.drain.as_mut() {
            if cause == Cause::Shutdown {
                drain.cut += 1;
            } else {
                drain.drained += 1;
            }
        }
    }

    /// Spare `--splice` pipes cost two fds each: give them back when fds run out or nothing runs.
    fn shed_spare_pipes(&mut self) {
        if let Some(pipes) = self.shared.pipes.as_mut() {
            pipes.clear();
        }
    }

    fn on_signals(&mut self) {
        let received: Vec<i32> = self.signals.pending().collect();
        for signal in received {
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

    /// Stops accepting (closing the listener refuses new clients) and lets live pairs finish.
    fn begin_shutdown(&mut self, signal: &str) {
        self.listener = None;
        self.listener_ready = false;
        self.warm = None;
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

/// `--trace`: one line per readiness event, naming the connection and side.
fn trace_event(target: Target, event: Event) {
    let flags = [
        (event.readable, "readable"),
        (event.writable, "writable"),
        (event.read_closed, "read-closed"),
        (event.write_closed, "write-closed"),
        (event.error, "error"),
    ];
    let names: Vec<&str> = flags
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, name)| *name)
        .collect();
    match target {
        Target::Pair(pair) => trace!(
            "event conn={} side={:?} slot={} {}",
            pair.generation,
            pair.side,
            pair.slot,
            names.join("|")
        ),
        other => trace!("event {other:?} {}", names.join("|")),
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

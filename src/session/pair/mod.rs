//! A connection pair: the accepted client socket, the upstream socket, and one [`Direction`] each way.
//!
//! The pair owns its lifecycle but never touches `Poll` or the slab: every handler returns an `Outcome`,
//! and the reactor alone tears a pair down. The lifecycle is two phases, after an optional greeting:
//!
//! | phase        | event                                      | result                                  |
//! |--------------|--------------------------------------------|-----------------------------------------|
//! | `Greeting`   | client bytes complete a PROXY/CONNECT head | `Outcome::Connect`; then `Connecting`  |
//! | `Greeting`   | a refused CONNECT, or its header timeout   | `Refusing`: write the status, then close |
//! | `Greeting`   | a bad PROXY header, or its header timeout  | close (rejected / header-timeout)        |
//! | `Greeting`   | a ClientHello a route takes (SNI)          | `Outcome::Connect(Routed)`: the reactor moves the pair to that route; then `Connecting` |
//! | `Greeting`   | a ClientHello no route takes, no default   | `Refusing`: the `unrecognized_name` alert, then close |
//! | `Greeting`   | not a ClientHello, its timeout, client gone | close (rejected / header-timeout / client-abort), nothing sent |
//! | `Refusing`   | status written, client FIN or 2s linger    | close (rejected)                        |
//! | `Connecting` | upstream writable edge, or `peer_addr` ok  | `Outcome::Connected`: `session::connect` establishes it |
//! | `Connecting` | upstream event, `take_error` has an error  | `Outcome::ConnectFailed`: next candidate (`Connecting`), or give up |
//! | `Connecting` | deadline (connect timeout, or a lookup's)  | `Outcome::ConnectFailed(connect-timeout)`: likewise |
//! | `Connecting` | client FIN with nothing sent, or RST       | close both at once (client-abort)       |
//! | `Connecting` | client FIN after sending data              | wait: the data is delivered once up     |
//! | `Established`| both directions `Closed`                   | close (client-fin / upstream-fin)       |
//! | `Established`| a read/write error on one side             | RST on both (client-/upstream-reset)    |
//! | `Established`| idle or half-closed past its deadline      | close (idle-timeout / fin-timeout)      |
//! | `Established`| older than its route's lifetime            | close (max-duration)                    |
//!
//! Each phase holds what only it needs (`Stage`): `Greeting` the greeting's buffer, `Refusing` the status
//! being written (`session::refusal`), `Connecting` the attempt's socket (none during a lookup),
//! the lease on its endpoint, the connect plan and when the attempt began, `Established` the upstream
//! socket and its lease. Every phase change goes through `Pair::set_stage`, which traces `from => to`.
//!
//! `Connecting` is entered by `session::connect` (which owns getting the pair its upstream: the retry
//! policy, registration, the route's health and lease) through [`Pair::begin_connect`] for each attempt,
//! or [`Pair::begin_lookup`] while a CONNECT host name is looked up (no socket yet). Giving up closes a
//! route client with RST, or answers a CONNECT client 502/504 (`Refusing`).
//!
//! During `Connecting` nothing is read from the client: its bytes wait in the kernel (which is cheaper
//! than holding them in a ring), and the client's cached readiness keeps the promise that they are there.
//! That is also what makes retrying safe: no byte has gone upstream, so when a connect fails the pair
//! may be given a new upstream socket and the client never knows.
//!
//! A greeting ([`crate::wire::greeting`]) is the exception: its bytes must be read to know where to connect.
//! They are read into the greeting's bounded buffer, never past its bound, and whatever followed the
//! header is queued as the c2u direction's preamble, so it goes upstream first, before any byte the pump
//! reads later (as does a `--send-proxy` header). A CONNECT destination is not one of the route's
//! upstreams: it never fails over to them; its addresses are its candidates instead.
//!
//! Seen from outside (the admin API, docs/admin.md): [`Pair::view`] copies what an operator asks about
//! the pair into a [`PairView`] (`view`); `diagnosis` says in one sentence why it is not moving; and
//! every handler writes what happened into the pair's flight recorder (`recorder`), a fixed ring of
//! its last 32 events: readiness edges, phase changes (in `Pair::set_stage`), connect attempts,
//! interest changes, faults, deadlines and the close. Each direction's last move is kept too
//! (`moved`), which is what tells which side stopped reading.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::config::UpstreamAddr;
use crate::datapath::stream::Conn;
use log::debug;

use crate::close::Cause;
use crate::config::Splice;
use crate::observe::metric_kinds::SniReject;
use crate::session::attempt::{connect_failure_cause, Plan};
use crate::upstream::route::{Deadlines, Lease};
use crate::wire::connect_request::Status;
use crate::wire::greeting::{Greeting, Target};
use crate::wire::proxy_protocol::{Reason, Version};

use crate::datapath::net::ConnectState;
use crate::datapath::pump::{Direction, End, Fault, Shared};
use crate::datapath::readiness::{Event, Readiness};
use crate::datapath::ring::BufPool;
use crate::datapath::stream::Socket;
use crate::observe::access_log::Details;
use crate::session::interest::{is_redundant_write_edge, AfterRun, Input, Interest, Registration};
use crate::token::Side;
use crate::way::Way;

mod access;
pub(crate) mod diagnosis;
mod greeting;
mod phase;
pub(crate) mod recorder;
mod stage;
pub(crate) mod view;

pub(super) use phase::Phase;
use recorder::{Change, Happening, Recorder};
use stage::{Connecting, Established, Stage};
pub(crate) use view::PairView;

/// What the reactor must do with a pair after a handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Waiting for the kernel.
    Open,
    /// Its byte budget ran out with work left: run it again before sleeping.
    Yield,
    /// Tear it down.
    Close(Cause),
    /// Its greeting is complete: start the upstream connect to this target (`session::connect`).
    Connect(Target),
    /// Its upstream connect completed: `session::connect` reports it to the route and establishes it.
    Connected,
    /// Its upstream connect failed (refused, error, or its deadline): `session::connect` tries the next
    /// candidate or gives up.
    ConnectFailed(Cause),
}

/// How many pump rounds one wakeup may run before the loop guard steps in. Each round moves bytes,
/// changes a state or clears a readiness bit, so reaching this means something is wrong.
const MAX_ROUNDS: usize = 10_000;
/// A client connection and its upstream, over sockets of type `S` (`mio::net::TcpStream` in the
/// reactor; a scripted stream in unit tests, [`crate::datapath::stream`]).
#[derive(Debug)]
pub(crate) struct Pair<S: Socket = Conn> {
    /// Connection id for logs; also the generation in this pair's tokens.
    pub(crate) id: u32,
    pub(crate) client: S,
    /// The client's address: the peer's, or the one a PROXY header carried (`--accept-proxy`).
    pub(crate) client_addr: SocketAddr,
    /// Slab slot of the route that accepted the client (it outlives the pair, draining if removed).
    pub(crate) route: usize,
    client_ready: Readiness,
    upstream_ready: Readiness,
    /// How the client's / upstream's socket is registered with the poller ([`crate::session::interest`]).
    client_interest: Interest,
    upstream_interest: Interest,
    /// client -> upstream.
    c2u: Direction,
    /// upstream -> client.
    u2c: Direction,
    /// The phase, with what it holds: the upstream socket, the lease on its endpoint, the greeting...
    stage: Stage<S>,
    /// The side whose FIN came first, which names a clean close.
    first_fin: Option<Side>,
    pub(crate) started: Instant,
    /// Last time each direction moved bytes (or a FIN), c2u then u2c: the later one is the pair's last
    /// activity, which idle and fin timeouts count from; each alone says which side has stopped.
    moved: [Instant; 2],
    /// The flight recorder: the pair's last few events, for the admin API.
    recorder: Recorder,
    /// The deadline currently armed in the reactor's timer heap for this pair.
    pub(crate) armed: Option<Instant>,
    /// `--send-proxy`: put a PROXY header first in the upstream stream.
    send_proxy: Option<Version>,
    /// Bytes (c2u, u2c) already added to its route's and upstream's series (`unaccounted`).
    accounted: (u64, u64),
    /// The key its route's per-client table counts it under, if the route has per-client limits:
    /// given back when the pair closes (`connect::release`).
    pub(crate) client_key: Option<IpAddr>,
    /// What the access log says of this pair beyond what every pair has (a PROXY header's addresses,
    /// a CONNECT target, the limit that turned it away); boxed, and `None` for most pairs.
    details: Option<Box<Details>>,
    /// The server name of the ClientHello that chose its route (SNI routing; `None` for a hello
    /// without one, an ECH hello, or no SNI listener): what an access log prints.
    pub(crate) sni: Option<Box<str>>,
    /// Why the ClientHello it was to send was refused, if so: the reactor counts it as it closes.
    pub(crate) sni_rejected: Option<SniReject>,
    /// Accepted on an SNI listener and not yet moved to the route its ClientHello chooses: its
    /// route's per-route counts (`observe::routed`) wait for that, or for its close.
    pub(crate) awaits_route: bool,
}

impl<S: Socket> Pair<S> {
    /// A pair whose upstream connect (to the leased endpoint of route `route`) has just been started.
    pub(crate) fn new(
        id: u32,
        (client, client_addr): (S, SocketAddr),
        (upstream, addr, lease): (S, UpstreamAddr, Option<Lease>),
        route: usize,
        plan: Plan,
        now: Instant,
        splice: Splice,
    ) -> Pair<S> {
        let connecting = Connecting::attempt((upstream, addr), lease, plan, now);
        Pair::with_stage(
            id,
            (client, client_addr),
            route,
            Stage::Connecting(connecting),
            now,
            splice,
        )
    }

    fn with_stage(
        id: u32,
        (client, client_addr): (S, SocketAddr),
        route: usize,
        stage: Stage<S>,
        now: Instant,
        splice: Splice,
    ) -> Pair<S> {
        Pair {
            id,
            client,
            client_addr,
            route,
            client_ready: Readiness::default(),
            upstream_ready: Readiness::default(),
            client_interest: Interest::default(),
            upstream_interest: Interest::default(),
            c2u: Direction::new(Way::ClientToUpstream, splice),
            u2c: Direction::new(Way::UpstreamToClient, splice),
            recorder: Recorder::new(stage.phase()),
            stage,
            first_fin: None,
            started: now,
            moved: [now; 2],
            armed: None,
            send_proxy: None,
            accounted: (0, 0),
            client_key: None,
            details: None,
            sni: None,
            sni_rejected: None,
            awaits_route: false,
        }
    }

    /// A pair that must first read a greeting from its client; its upstream connect starts once the
    /// greeting says where to (the pair returns `Outcome::Connect`).
    pub(super) fn greeting(
        id: u32,
        (client, client_addr): (S, SocketAddr),
        route: usize,
        greeting: Greeting,
        now: Instant,
        splice: Splice,
    ) -> Pair<S> {
        let stage = Stage::Greeting(Box::new(greeting));
        Pair::with_stage(id, (client, client_addr), route, stage, now, splice)
    }

    /// The route endpoint the pair holds, if any.
    pub(crate) fn lease(&self) -> Option<&Lease> {
        self.stage.lease()
    }

    pub(super) fn phase(&self) -> Phase {
        self.stage.phase()
    }

    /// Bytes forwarded client -> upstream and upstream -> client.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.c2u.counters().bytes, self.u2c.counters().bytes)
    }

    /// Bytes (c2u, u2c) forwarded since the last call: what the route's and upstream's series have not
    /// counted yet. The reactor asks after every run, so a long transfer counts as it goes.
    pub(crate) fn unaccounted(&mut self) -> (u64, u64) {
        let (c2u, u2c) = self.bytes();
        let (done_c2u, done_u2c) = std::mem::replace(&mut self.accounted, (c2u, u2c));
        (c2u - done_c2u, u2c - done_u2c)
    }

    /// When the current upstream connect attempt started, while one is under way (a socket, not a
    /// lookup).
    pub(crate) fn attempt_started(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Connecting(connecting) if connecting.socket.is_some() => Some(connecting.since),
            _ => None,
        }
    }

    /// Read and write syscalls made for this pair.
    pub(crate) fn syscalls(&self) -> (u64, u64) {
        let (a, b) = (self.c2u.counters(), self.u2c.counters());
        (a.reads + b.reads, a.writes + b.writes)
    }

    /// Handles one readiness event on `side`, then runs the pumps.
    pub(crate) fn on_event(
        &mut self,
        side: Side,
        event: Event,
        shared: &mut Shared<'_>,
        budget: usize,
        now: Instant,
    ) -> Outcome {
        let edge = Happening::Edge(side, event.into());
        self.recorder.record(self.started, now, edge);
        let outcome = self.dispatch(side, event, shared, budget, now);
        self.recorded(outcome, now)
    }

    /// [`Pair::on_event`] once the event is recorded.
    fn dispatch(
        &mut self,
        side: Side,
        event: Event,
        shared: &mut Shared<'_>,
        budget: usize,
        now: Instant,
    ) -> Outcome {
        if event.readable && self.reads_blocked(side, shared.pool) {
            self.interest_mut(side).on(Input::WastedReadEdge);
        }
        let established = self.phase() == Phase::Established;
        if is_redundant_write_edge(event, established, self.ready(side).writable) {
            self.interest_mut(side).on(Input::WastedWriteEdge);
        }
        match side {
            Side::Client => self.client_ready.merge(event),
            Side::Upstream => self.upstream_ready.merge(event),
        }
        match self.phase() {
            Phase::Greeting if side == Side::Client => {
                if event.read_closed || event.error {
                    // A FIN or RST may come without EPOLLIN: the read below is what finds out which.
                    self.client_ready.readable = true;
                }
                self.read_greeting(now)
            }
            Phase::Greeting => Outcome::Open,
            Phase::Refusing => self.write_refusal(),
            Phase::Connecting => self.on_connecting_event(side, event),
            Phase::Established => self.pump(shared, budget, now),
        }
    }

    /// Records an outcome that ends the pair or its connect attempt, and hands it on.
    fn recorded(&mut self, outcome: Outcome, now: Instant) -> Outcome {
        let what = match outcome {
            Outcome::Close(cause) => Happening::Closing(cause),
            Outcome::ConnectFailed(cause) => Happening::ConnectFailed(cause),
            _ => return outcome,
        };
        self.recorder.record(self.started, now, what);
        outcome
    }

    /// The pair's deadline passed with `cause`: what to do about it. A greeting that timed out is
    /// answered 408 in connect mode; a connect that timed out goes to `session::connect`'s retry policy;
    /// everything else closes.
    pub(crate) fn expire(&mut self, cause: Cause, now: Instant) -> Outcome {
        self.recorder
            .record(self.started, now, Happening::Expired(cause));
        let outcome = self.expire_stage(cause, now);
        self.recorded(outcome, now)
    }

    fn expire_stage(&mut self, cause: Cause, now: Instant) -> Outcome {
        match &mut self.stage {
            Stage::Greeting(greeting) => {
                // Still waiting for the PROXY header or the ClientHello: counted (and logged) by the
                // reactor as it closes.
                greeting.give_up(Reason::Timeout);
                if greeting.reading_hello() {
                    self.sni_rejected = Some(SniReject::Timeout);
                }
                if !greeting.answers() {
                    return Outcome::Close(cause);
                }
                debug!(
                    "conn={} client={} greeting timed out: 408",
                    self.id, self.client_addr
                );
                self.refuse(Status::RequestTimeout, now)
            }
            Stage::Connecting(_) => Outcome::ConnectFailed(cause),
            _ => Outcome::Close(cause),
        }
    }

    fn on_connecting_event(&mut self, side: Side, event: Event) -> Outcome {
        if side == Side::Client {
            let hung_up = event.read_closed || event.error;
            return if hung_up {
                self.check_client_left()
            } else {
                Outcome::Open
            };
        }
        // No socket yet: the CONNECT destination's address is being looked up.
        let Some(upstream) = self.upstream() else {
            return Outcome::Open;
        };
        if event.proves_connected() {
            return Outcome::Connected;
        }
        match upstream.connect_result() {
            ConnectState::Pending => Outcome::Open,
            ConnectState::Failed(err) => {
                debug!("conn={} upstream connect failed: {err}", self.id);
                Outcome::ConnectFailed(connect_failure_cause(&err))
            }
            ConnectState::Connected => Outcome::Connected,
        }
    }

    /// The client hung up while the upstream connect is pending. A FIN after data is a half-close that
    /// expects an answer, so the pair waits; a FIN with nothing sent, or a reset, means the client is gone
    /// and both sockets are freed now rather than when the connect resolves.
    fn check_client_left(&mut self) -> Outcome {
        let pipelined = matches!(&self.stage, Stage::Connecting(c) if c.client_pipelined);
        let mut probe = [0u8; 1];
        match self.client.peek(&mut probe) {
            // Bytes pipelined after a greeting were read already: their FIN is a half-close.
            Ok(0) if pipelined => Outcome::Open,
            Ok(0) => Outcome::Close(Cause::ClientAbort),
            Ok(_) => Outcome::Open,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Outcome::Open,
            Err(_) => Outcome::Close(Cause::ClientAbort),
        }
    }

    /// Pumps both directions until neither can move, the budget is spent, or the pair is finished.
    pub(crate) fn run(&mut self, shared: &mut Shared<'_>, budget: usize, now: Instant) -> Outcome {
        let outcome = self.pump(shared, budget, now);
        self.recorded(outcome, now)
    }

    /// [`Pair::run`], for callers that record its outcome themselves.
    fn pump(&mut self, shared: &mut Shared<'_>, budget: usize, now: Instant) -> Outcome {
        match self.phase() {
            Phase::Established => {}
            Phase::Refusing => return self.write_refusal(),
            _ => return Outcome::Open,
        }
        let mut budget = budget;
        for _ in 0..MAX_ROUNDS {
            let moved = match self.pump_both(shared, &mut budget) {
                Ok(moved) => moved,
                Err(faulty) => {
                    self.recorder
                        .record(self.started, now, Happening::Fault(faulty));
                    return Outcome::Close(reset_cause(faulty));
                }
            };
            for (when, moved) in self.moved.iter_mut().zip(moved) {
                if moved {
                    *when = now;
                }
            }
            let progressed = moved.contains(&true);
            if progressed {
                self.note_first_fin();
            }
            if self.c2u.is_closed() && self.u2c.is_closed() {
                return Outcome::Close(match self.first_fin {
                    Some(Side::Upstream) => Cause::UpstreamFin,
                    _ => Cause::ClientFin,
                });
            }
            if !progressed {
                return if budget == 0 && self.has_work(shared.pool) {
                    Outcome::Yield
                } else {
                    Outcome::Open
                };
            }
        }
        shared.metrics.loop_guard_trips += 1;
        log::warn!(
            "conn={} loop guard: still busy after {MAX_ROUNDS} rounds, yielding",
            self.id
        );
        Outcome::Yield
    }

    /// One round: each direction moves what it can. Says which moved (c2u, u2c), or which socket failed.
    fn pump_both(
        &mut self,
        shared: &mut Shared<'_>,
        budget: &mut usize,
    ) -> Result<[bool; 2], Side> {
        let id = self.id;
        let Stage::Established(Established {
            socket: upstream, ..
        }) = &mut self.stage
        else {
            return Ok([false; 2]);
        };
        let forward = self
            .c2u
            .pump(
                id,
                End {
                    stream: &mut self.client,
                    ready: &mut self.client_ready,
                },
                End {
                    stream: &mut *upstream,
                    ready: &mut self.upstream_ready,
                },
                shared,
                budget,
                self.u2c.is_closed(),
            )
            .map_err(|fault| faulty_side(fault, Side::Client))?;
        let backward = self
            .u2c
            .pump(
                id,
                End {
                    stream: &mut *upstream,
                    ready: &mut self.upstream_ready,
                },
                End {
                    stream: &mut self.client,
                    ready: &mut self.client_ready,
                },
                shared,
                budget,
                self.c2u.is_closed(),
            )
            .map_err(|fault| faulty_side(fault, Side::Upstream))?;
        Ok([forward, backward])
    }

    /// Whether the direction reading `side`'s socket is blocked with data waiting in it
    /// ([`Direction::reads_blocked`]). Only an established pair pumps, so only its directions block.
    fn reads_blocked(&self, side: Side, pool: &BufPool) -> bool {
        let (direction, ready) = self.reader_of(side);
        self.phase() == Phase::Established && direction.reads_blocked(ready, pool)
    }

    /// The direction that reads `side`'s socket, and that socket's cached readiness.
    fn reader_of(&self, side: Side) -> (&Direction, &Readiness) {
        match side {
            Side::Client => (&self.c2u, &self.client_ready),
            Side::Upstream => (&self.u2c, &self.upstream_ready),
        }
    }

    fn ready(&self, side: Side) -> &Readiness {
        match side {
            Side::Client => &self.client_ready,
            Side::Upstream => &self.upstream_ready,
        }
    }

    fn interest_mut(&mut self, side: Side) -> &mut Interest {
        match side {
            Side::Client => &mut self.client_interest,
            Side::Upstream => &mut self.upstream_interest,
        }
    }

    /// How `side`'s socket is registered now.
    pub(crate) fn registration(&self, side: Side) -> Registration {
        match side {
            Side::Client => self.client_interest.registration(),
            Side::Upstream => self.upstream_interest.registration(),
        }
    }

    /// The registration `side`'s socket should have now, when it differs from the current one
    /// ([`crate::session::interest`] explains when and why). Called by the reactor after every run of
    /// the pair; the reactor applies it and reports it back with [`Pair::note_registration`].
    pub(crate) fn registration_change(
        &mut self,
        side: Side,
        pool: &BufPool,
    ) -> Option<Registration> {
        let (direction, ready) = self.reader_of(side);
        let after = AfterRun {
            reads_blocked: self.reads_blocked(side, pool),
            awaits_readable: direction.awaits_readable(ready),
            writable: ready.writable,
        };
        self.interest_mut(side).on(Input::Ran(after))
    }

    /// The reactor registered `side`'s socket as [`Pair::registration_change`] asked.
    pub(crate) fn note_registration(&mut self, side: Side, registration: Registration) {
        let before = self.registration(side);
        self.interest_mut(side).on(Input::Registered(registration));
        let change = Change::new(before, registration);
        self.recorder
            .record_after(Happening::Interest(side, change));
    }

    /// The socket on `side`, if the pair has one.
    pub(crate) fn socket_mut(&mut self, side: Side) -> Option<&mut S> {
        match side {
            Side::Client => Some(&mut self.client),
            Side::Upstream => match &mut self.stage {
                Stage::Connecting(connecting) => connecting.socket.as_mut(),
                Stage::Established(established) => Some(&mut established.socket),
                Stage::Greeting(_) | Stage::Refusing(_) => None,
            },
        }
    }

    fn has_work(&self, pool: &BufPool) -> bool {
        self.c2u
            .has_work(&self.client_ready, &self.upstream_ready, pool)
            || self
                .u2c
                .has_work(&self.upstream_ready, &self.client_ready, pool)
    }

    fn note_first_fin(&mut self) {
        if self.first_fin.is_none() {
            if self.c2u.saw_eof() {
                self.first_fin = Some(Side::Client);
            } else if self.u2c.saw_eof() {
                self.first_fin = Some(Side::Upstream);
            }
        }
    }

    /// Last time bytes (or a FIN) moved either way.
    fn last_activity(&self) -> Instant {
        self.moved[0].max(self.moved[1])
    }

    /// True once either side has sent FIN: the state FIN_WAIT2/CLOSE_WAIT pile up in. Counted from the
    /// FIN, not from passing it on: a direction still draining bytes its reader will not take (a zero
    /// window) would otherwise keep the pair with no deadline at all.
    fn half_closed(&self) -> bool {
        self.c2u.saw_eof() || self.u2c.saw_eof()
    }

    /// The next moment this pair must be looked at, and what it would mean then.
    pub(crate) fn deadline(&self, limits: &Deadlines) -> Option<(Instant, Cause)> {
        match &self.stage {
            Stage::Greeting(_) => {
                return Some((self.started + limits.header, Cause::HeaderTimeout))
            }
            Stage::Refusing(refusal) => return Some((refusal.until, Cause::Rejected)),
            Stage::Connecting(connecting) => {
                return Some((connecting.since + limits.connect, Cause::ConnectTimeout))
            }
            Stage::Established(_) => {}
        }
        let idle = limits
            .idle
            .map(|idle| (self.last_activity() + idle, Cause::IdleTimeout));
        let fin = self
            .half_closed()
            .then(|| (self.last_activity() + limits.fin, Cause::FinTimeout));
        let lifetime = limits
            .lifetime
            .map(|lifetime| (self.started + lifetime, Cause::MaxDuration));
        [fin, idle, lifetime]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// True while either direction holds bytes not yet delivered. Closing such a pair with a FIN would
    /// let the peer take a truncated stream for a complete one, so the reactor resets it instead. Before
    /// `Established` no stream has begun: a queued preamble (a `--send-proxy` header for a client that
    /// left while connecting) truncates nothing.
    pub(crate) fn holds_undelivered(&self) -> bool {
        self.phase() == Phase::Established
            && (self.c2u.undelivered() > 0 || self.u2c.undelivered() > 0)
    }

    /// Returns ring storage and pipes to their pools before the pair is dropped.
    pub(crate) fn release(&mut self, shared: &mut Shared<'_>) {
        self.c2u.release(shared);
        self.u2c.release(shared);
    }
}

/// The close cause of a pair one of whose sockets failed.
fn reset_cause(faulty: Side) -> Cause {
    match faulty {
        Side::Client => Cause::ClientReset,
        Side::Upstream => Cause::UpstreamReset,
    }
}

/// The socket a pump fault came from. `pumped_from` is the source side of the direction.
fn faulty_side(fault: Fault, pumped_from: Side) -> Side {
    match fault {
        Fault::Src => pumped_from,
        Fault::Dst => pumped_from.other(),
    }
}

#[cfg(test)]
pub(crate) mod tests;

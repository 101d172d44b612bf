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

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, info, trace};
use mio::net::TcpStream;

use crate::close::Cause;
use crate::config::Splice;
use crate::session::attempt::{connect_failure_cause, Plan};
use crate::upstream::route::{Deadlines, Lease};
use crate::wire::connect_request::Status;
use crate::wire::greeting::{Greeting, Target, Verdict};
use crate::wire::proxy_protocol::{self, Reason, Version};

use crate::datapath::net::ConnectState;
use crate::datapath::pump::{Direction, End, Fault, Shared};
use crate::datapath::readiness::{Event, Readiness};
use crate::datapath::ring::BufPool;
use crate::datapath::stream::Socket;
use crate::session::interest::{is_redundant_write_edge, AfterRun, Input, Interest, Registration};
use crate::session::refusal::{Progress, Refusal};
use crate::token::Side;
use crate::way::Way;

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

/// The name of a pair's phase ([`Pair::phase`]); what each phase holds is in `Stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the client's PROXY header or CONNECT head; there is no upstream socket yet.
    Greeting,
    /// Writing an error status to the client (connect mode), then closing.
    Refusing,
    Connecting,
    Established,
}

/// A pair's phase and what only that phase needs. Every change goes through `Pair::set_stage`.
#[derive(Debug)]
enum Stage<S> {
    /// What has arrived of the PROXY header / CONNECT head. Boxed: only a greeting route's pairs have
    /// one, and only until it is read, while its ~128 bytes inline would sit in every pair. Kept after
    /// a rejection, for the reactor to count the reason as it closes the pair.
    Greeting(Box<Greeting>),
    /// The error status being written; no upstream socket.
    Refusing(Refusal),
    Connecting(Connecting<S>),
    Established(Established<S>),
}

/// An upstream connect under way ([`crate::session::connect`] drives it).
#[derive(Debug)]
struct Connecting<S> {
    /// The current attempt's socket; `None` while a CONNECT host name is looked up.
    socket: Option<S>,
    /// The route endpoint the attempt is to; `None` for a CONNECT destination.
    lease: Option<Lease>,
    /// Where the attempts go ([`crate::session::attempt`]).
    plan: Plan,
    /// When the current attempt (or lookup) began: each has its own connect timeout.
    since: Instant,
    /// The client pipelined bytes after its greeting (they wait in the c2u preamble). A PROXY header we
    /// queued ourselves is in that preamble too, so its length cannot tell whether the client sent data.
    client_pipelined: bool,
}

/// A connected upstream.
#[derive(Debug)]
struct Established<S> {
    socket: S,
    /// The route endpoint it is connected to, held until the pair closes; `None` for a CONNECT
    /// destination.
    lease: Option<Lease>,
}

impl<S> Stage<S> {
    fn phase(&self) -> Phase {
        match self {
            Stage::Greeting(_) => Phase::Greeting,
            Stage::Refusing(_) => Phase::Refusing,
            Stage::Connecting(_) => Phase::Connecting,
            Stage::Established(_) => Phase::Established,
        }
    }

    /// The route endpoint this stage holds, if any.
    fn lease(&self) -> Option<&Lease> {
        match self {
            Stage::Connecting(connecting) => connecting.lease.as_ref(),
            Stage::Established(established) => established.lease.as_ref(),
            Stage::Greeting(_) | Stage::Refusing(_) => None,
        }
    }
}

/// How many pump rounds one wakeup may run before the loop guard steps in. Each round moves bytes,
/// changes a state or clears a readiness bit, so reaching this means something is wrong.
const MAX_ROUNDS: usize = 10_000;
/// A client connection and its upstream, over sockets of type `S` (`mio::net::TcpStream` in the
/// reactor; a scripted stream in unit tests, [`crate::datapath::stream`]).
#[derive(Debug)]
pub struct Pair<S: Socket = TcpStream> {
    /// Connection id for logs; also the generation in this pair's tokens.
    pub id: u32,
    pub client: S,
    /// The client's address: the peer's, or the one a PROXY header carried (`--accept-proxy`).
    pub client_addr: SocketAddr,
    /// Slab slot of the route that accepted the client (it outlives the pair, draining if removed).
    pub route: usize,
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
    pub started: Instant,
    /// Last time bytes moved either way (idle and fin timeouts count from here).
    last_activity: Instant,
    /// The deadline currently armed in the reactor's timer heap for this pair.
    pub armed: Option<Instant>,
    /// `--send-proxy`: put a PROXY header first in the upstream stream.
    send_proxy: Option<Version>,
}

impl<S: Socket> Pair<S> {
    /// A pair whose upstream connect (to the leased endpoint of route `route`) has just been started.
    pub(crate) fn new(
        id: u32,
        (client, client_addr): (S, SocketAddr),
        (upstream, lease): (S, Option<Lease>),
        route: usize,
        plan: Plan,
        now: Instant,
        splice: Splice,
    ) -> Pair<S> {
        let connecting = Connecting {
            socket: Some(upstream),
            lease,
            plan,
            since: now,
            client_pipelined: false,
        };
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
            stage,
            first_fin: None,
            started: now,
            last_activity: now,
            armed: None,
            send_proxy: None,
        }
    }

    /// A pair that must first read a greeting from its client; its upstream connect starts once the
    /// greeting says where to (the pair returns `Outcome::Connect`).
    pub fn greeting(
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

    /// `--send-proxy`: the upstream stream starts with a PROXY header naming the client. A pair without
    /// a greeting queues it now; one with a greeting when the greeting (which may carry the client's
    /// address) is done.
    pub fn with_send_proxy(mut self, version: Option<Version>) -> Pair<S> {
        self.send_proxy = version;
        if self.phase() != Phase::Greeting {
            self.push_proxy_header(None, &[]);
        }
        self
    }

    /// Queues the PROXY header: from the client's address to `destination` (the one a received header
    /// carried) or else the address the client connected to, with the `tlvs` carried from the client's
    /// own header (`--send-proxy-tlvs`).
    fn push_proxy_header(&mut self, destination: Option<SocketAddr>, tlvs: &[u8]) {
        let Some(version) = self.send_proxy else {
            return;
        };
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let destination = destination
            .or_else(|| self.client.local_addr().ok())
            .unwrap_or(unspecified);
        let header = proxy_protocol::encode_with_tlvs(version, self.client_addr, destination, tlvs);
        self.c2u.push_preamble(&header);
    }

    /// Marks the upstream as an already established `--prewarm` connection: the pair starts
    /// `Established`, with both upstream readiness bits set so the first run finds out for itself what
    /// the socket holds (a greeting the upstream already sent, say).
    pub fn with_warm_upstream(mut self) -> Pair<S> {
        if let Stage::Connecting(connecting) = &mut self.stage {
            if let Some(socket) = connecting.socket.take() {
                let lease = connecting.lease.take();
                self.set_stage(Stage::Established(Established { socket, lease }));
            }
        }
        self.upstream_ready = Readiness {
            readable: true,
            writable: true,
            read_closed: false,
            failed: false,
        };
        self
    }

    /// A connect attempt has started (`session::connect`): to the leased endpoint, or to a CONNECT
    /// destination's address (no lease). The pair is `Connecting` under this attempt's own connect
    /// deadline. A socket of an earlier attempt was dropped first (`Pair::drop_upstream`), which closed
    /// it and so removed it from epoll; the new one is registered under the same token. Under epoll no
    /// edge of the old socket can reach the new one: epoll reports a file at most once per `epoll_wait`,
    /// so the event that brought the failure was the old socket's last, and a connect timeout fires after
    /// the batch. That is what lets the new socket's clean writable edge prove its connect
    /// ([`Event::proves_connected`]). kqueue reports a socket's read and write filters as two events, so
    /// there a stale one can arrive; it is harmless because there no event proves a connect: each makes
    /// the pair ask the kernel about the new socket. Its readiness starts afresh below.
    pub fn begin_connect(&mut self, upstream: S, lease: Option<Lease>, now: Instant) {
        self.upstream_ready = Readiness::default();
        match &mut self.stage {
            Stage::Connecting(connecting) => {
                trace!("conn={} Connecting => Connecting (new attempt)", self.id);
                connecting.socket = Some(upstream);
                connecting.lease = lease;
                connecting.since = now;
            }
            _ => {
                // Not reached: `session::connect` starts attempts only for a `Connecting` pair.
                let plan = Plan::Upstreams {
                    tried: Default::default(),
                };
                self.set_stage(Stage::Connecting(Connecting {
                    socket: Some(upstream),
                    lease,
                    plan,
                    since: now,
                    client_pipelined: false,
                }));
            }
        }
    }

    /// A CONNECT to a host name, about to be looked up: the pair waits in `Connecting` with no upstream
    /// socket, under the connect deadline (504 if the name takes too long), until the answer starts the
    /// connect or fails it.
    pub fn begin_lookup(&mut self, now: Instant) {
        if let Stage::Connecting(connecting) = &mut self.stage {
            connecting.since = now;
            connecting.plan = Plan::Lookup;
        }
    }

    /// Whether the pair is waiting for its CONNECT destination's address: a lookup answer for any other
    /// pair, or for this one after its deadline answered 504, is stale.
    pub fn awaits_address(&self) -> bool {
        matches!(&self.stage, Stage::Connecting(c) if c.socket.is_none() && matches!(c.plan, Plan::Lookup))
    }

    /// The connect plan of a `Connecting` pair (`session::connect` sets and follows it).
    pub(crate) fn plan_mut(&mut self) -> Option<&mut Plan> {
        match &mut self.stage {
            Stage::Connecting(connecting) => Some(&mut connecting.plan),
            _ => None,
        }
    }

    /// Where a `Connecting` pair's attempts go from now on.
    pub(crate) fn set_plan(&mut self, next: Plan) {
        if let Some(plan) = self.plan_mut() {
            *plan = next;
        }
    }

    /// Closes the upstream socket of a failed attempt (which also removes it from epoll) and hands back
    /// the lease it held, for `session::connect` to give back.
    pub(crate) fn drop_upstream(&mut self) -> Option<Lease> {
        match &mut self.stage {
            Stage::Connecting(connecting) => {
                connecting.socket = None;
                connecting.lease.take()
            }
            _ => None,
        }
    }

    /// The lease a closing pair holds, for `session::connect` to give back.
    pub(crate) fn take_lease(&mut self) -> Option<Lease> {
        match &mut self.stage {
            Stage::Connecting(connecting) => connecting.lease.take(),
            Stage::Established(established) => established.lease.take(),
            Stage::Greeting(_) | Stage::Refusing(_) => None,
        }
    }

    /// The route endpoint the pair holds, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.stage.lease()
    }

    /// The upstream socket, if the pair has one.
    pub fn upstream(&self) -> Option<&S> {
        match &self.stage {
            Stage::Connecting(connecting) => connecting.socket.as_ref(),
            Stage::Established(established) => Some(&established.socket),
            Stage::Greeting(_) | Stage::Refusing(_) => None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.stage.phase()
    }

    /// Bytes forwarded client -> upstream and upstream -> client.
    pub fn bytes(&self) -> (u64, u64) {
        (self.c2u.counters().bytes, self.u2c.counters().bytes)
    }

    /// Read and write syscalls made for this pair.
    pub fn syscalls(&self) -> (u64, u64) {
        let (a, b) = (self.c2u.counters(), self.u2c.counters());
        (a.reads + b.reads, a.writes + b.writes)
    }

    /// The one way a pair changes phase; returns the stage it leaves, whose data the caller may take.
    fn set_stage(&mut self, next: Stage<S>) -> Stage<S> {
        trace!("conn={} {:?} => {:?}", self.id, self.phase(), next.phase());
        debug_assert!(
            self.stage.lease().is_none() || matches!(next, Stage::Established(_)),
            "a lease is handed over or given back, never dropped with its stage"
        );
        std::mem::replace(&mut self.stage, next)
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
            Phase::Established => self.run(shared, budget, now),
        }
    }

    /// Reads the client's greeting, never more than its stage's bound: bytes after the greeting stay in
    /// the kernel for the pump (the readable bit stays set, so it will read them).
    fn read_greeting(&mut self, now: Instant) -> Outcome {
        let mut chunk = [0u8; 4096];
        loop {
            let Stage::Greeting(greeting) = &mut self.stage else {
                return Outcome::Open;
            };
            let room = greeting.room().min(chunk.len());
            if !self.client_ready.readable {
                return Outcome::Open;
            }
            if room == 0 {
                // Cannot happen: each parser decides before its bound is reached.
                return self.conclude(Verdict::Drop("greeting too long".into()), now);
            }
            match self.client.read(&mut chunk[..room]) {
                Ok(0) => {
                    greeting.give_up(Reason::ClientClosed);
                    return Outcome::Close(Cause::ClientAbort);
                }
                Ok(n) => {
                    greeting.extend(&chunk[..n]);
                    match greeting.advance() {
                        Verdict::More => {}
                        verdict => return self.conclude(verdict, now),
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.client_ready.readable = false;
                    return Outcome::Open;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    greeting.give_up(Reason::ClientClosed);
                    return Outcome::Close(Cause::ClientReset);
                }
            }
        }
    }

    /// Acts on a finished greeting: connect, answer with an error, or drop.
    fn conclude(&mut self, verdict: Verdict, now: Instant) -> Outcome {
        match verdict {
            Verdict::More => Outcome::Open,
            Verdict::Ready { target, leftover } => {
                let connecting = Connecting {
                    socket: None,
                    lease: None,
                    plan: Plan::Upstreams {
                        tried: Default::default(),
                    },
                    since: now,
                    client_pipelined: !leftover.is_empty(),
                };
                let Stage::Greeting(greeting) = self.set_stage(Stage::Connecting(connecting))
                else {
                    return Outcome::Open;
                };
                if let Some(source) = greeting.source {
                    debug!(
                        "conn={} PROXY header: client={source} (peer {})",
                        self.id, self.client_addr
                    );
                    self.client_addr = source;
                }
                self.push_proxy_header(greeting.destination, &greeting.carried_tlvs);
                self.c2u.push_preamble(&leftover);
                if target != Target::Balanced {
                    debug!(
                        "conn={} client={} CONNECT {target}",
                        self.id, self.client_addr
                    );
                    self.u2c.push_preamble(Status::Established.response());
                }
                // A hang-up that came with the head was reported once, while the greeting was read, and
                // edge-triggered epoll will not report it again: act on it now, as `Connecting` acts on a
                // later one, before any connect or lookup is spent on a client that is gone.
                if self.client_ready.read_closed || self.client_ready.failed {
                    if let outcome @ Outcome::Close(_) = self.check_client_left() {
                        return outcome;
                    }
                }
                Outcome::Connect(target)
            }
            Verdict::Answer(status, why) => {
                debug!(
                    "conn={} client={} CONNECT refused: {} ({why})",
                    self.id,
                    self.client_addr,
                    status.code()
                );
                self.refuse(status, now)
            }
            // The greeting stays, for the reactor to count and log the reason as it closes the pair: no
            // upstream exists yet, so nothing reaches one.
            Verdict::BadProxyHeader(_) => Outcome::Close(Cause::Rejected),
            Verdict::Drop(why) => {
                info!("conn={} client={} closed: {why}", self.id, self.client_addr);
                Outcome::Close(Cause::Rejected)
            }
        }
    }

    /// Why this pair's PROXY header failed (`edgefwd_proxy_header_rejected_total{reason}`), if it did:
    /// refused by the parser, timed out, or the client left before it ended.
    pub fn proxy_header_rejection(&self) -> Option<Reason> {
        match &self.stage {
            Stage::Greeting(greeting) => greeting.refused(),
            Stage::Refusing(refusal) => refusal.rejected,
            Stage::Connecting(_) | Stage::Established(_) => None,
        }
    }

    /// Starts answering the client with an error status; whatever was queued for either side is
    /// dropped, and so is the upstream socket if there is one. A PROXY header that was rejected first
    /// (timed out) stays on record for the reactor.
    pub(crate) fn refuse(&mut self, status: Status, now: Instant) -> Outcome {
        self.c2u.drop_preamble();
        self.u2c.drop_preamble();
        let rejected = self.proxy_header_rejection();
        self.set_stage(Stage::Refusing(Refusal::new(status, now, rejected)));
        self.write_refusal()
    }

    /// Writes the status, then waits for the client's FIN ([`Refusal::write`]).
    fn write_refusal(&mut self) -> Outcome {
        let Stage::Refusing(refusal) = &mut self.stage else {
            return Outcome::Close(Cause::Rejected);
        };
        match refusal.write(&mut self.client) {
            Progress::Waiting => Outcome::Open,
            Progress::Yield => Outcome::Yield,
            Progress::Done => Outcome::Close(Cause::Rejected),
        }
    }

    /// The pair's deadline passed with `cause`: what to do about it. A greeting that timed out is
    /// answered 408 in connect mode; a connect that timed out goes to `session::connect`'s retry policy;
    /// everything else closes.
    pub(crate) fn expire(&mut self, cause: Cause, now: Instant) -> Outcome {
        match &mut self.stage {
            Stage::Greeting(greeting) => {
                // Still waiting for the PROXY header: counted (and logged) by the reactor as it closes.
                greeting.give_up(Reason::Timeout);
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

    /// The connect completed (and `session::connect` has told the route): forward.
    pub(crate) fn establish(
        &mut self,
        shared: &mut Shared<'_>,
        budget: usize,
        now: Instant,
    ) -> Outcome {
        let Stage::Connecting(connecting) = &mut self.stage else {
            return self.run(shared, budget, now);
        };
        let Some(socket) = connecting.socket.take() else {
            return Outcome::Open;
        };
        let lease = connecting.lease.take();
        shared.metrics.connects_ok += 1;
        self.set_stage(Stage::Established(Established { socket, lease }));
        // The connect completed with an edge we just consumed; the socket is writable.
        self.upstream_ready.writable = true;
        self.run(shared, budget, now)
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
        match self.phase() {
            Phase::Established => {}
            Phase::Refusing => return self.write_refusal(),
            _ => return Outcome::Open,
        }
        let mut budget = budget;
        for _ in 0..MAX_ROUNDS {
            let progressed = match self.pump_both(shared, &mut budget) {
                Ok(progressed) => progressed,
                Err(cause) => return Outcome::Close(cause),
            };
            if progressed {
                self.last_activity = now;
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

    /// One round: each direction moves what it can.
    fn pump_both(&mut self, shared: &mut Shared<'_>, budget: &mut usize) -> Result<bool, Cause> {
        let id = self.id;
        let Stage::Established(Established {
            socket: upstream, ..
        }) = &mut self.stage
        else {
            return Ok(false);
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
            .map_err(|fault| fault_cause(fault, Side::Client))?;
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
            .map_err(|fault| fault_cause(fault, Side::Upstream))?;
        Ok(forward || backward)
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
    pub fn registration(&self, side: Side) -> Registration {
        match side {
            Side::Client => self.client_interest.registration(),
            Side::Upstream => self.upstream_interest.registration(),
        }
    }

    /// The registration `side`'s socket should have now, when it differs from the current one
    /// ([`crate::session::interest`] explains when and why). Called by the reactor after every run of
    /// the pair; the reactor applies it and reports it back with [`Pair::note_registration`].
    pub fn registration_change(&mut self, side: Side, pool: &BufPool) -> Option<Registration> {
        let (direction, ready) = self.reader_of(side);
        let after = AfterRun {
            reads_blocked: self.reads_blocked(side, pool),
            awaits_readable: direction.awaits_readable(ready),
            writable: ready.writable,
        };
        self.interest_mut(side).on(Input::Ran(after))
    }

    /// The reactor registered `side`'s socket as [`Pair::registration_change`] asked.
    pub fn note_registration(&mut self, side: Side, registration: Registration) {
        self.interest_mut(side).on(Input::Registered(registration));
    }

    /// The socket on `side`, if the pair has one.
    pub fn socket_mut(&mut self, side: Side) -> Option<&mut S> {
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
            .map(|idle| (self.last_activity + idle, Cause::IdleTimeout));
        let fin = self
            .half_closed()
            .then(|| (self.last_activity + limits.fin, Cause::FinTimeout));
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
    pub fn holds_undelivered(&self) -> bool {
        self.phase() == Phase::Established
            && (self.c2u.undelivered() > 0 || self.u2c.undelivered() > 0)
    }

    /// Returns ring storage and pipes to their pools before the pair is dropped.
    pub fn release(&mut self, shared: &mut Shared<'_>) {
        self.c2u.release(shared);
        self.u2c.release(shared);
    }
}

/// Names a pump fault by the socket it came from. `pumped_from` is the source side of the direction.
fn fault_cause(fault: Fault, pumped_from: Side) -> Cause {
    let faulty = match fault {
        Fault::Src(_) => pumped_from,
        Fault::Dst(_) => pumped_from.other(),
    };
    match faulty {
        Side::Client => Cause::ClientReset,
        Side::Upstream => Cause::UpstreamReset,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::observe::metrics::Metrics;
    use crate::wire::allow::AllowList;
    use crate::wire::greeting::{ConnectRules, Rules};
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    pub(crate) const LIMITS: Deadlines = Deadlines {
        connect: Duration::from_secs(5),
        header: Duration::from_secs(10),
        idle: None,
        fin: Duration::from_secs(60),
        lifetime: None,
    };

    /// A CONNECT greeting that allows `localhost:*` and nothing else.
    fn connect_greeting() -> Greeting {
        Greeting::new(Arc::new(Rules {
            accept_proxy: false,
            carry_tlvs: Default::default(),
            connect: Some(ConnectRules {
                allow: AllowList::new(vec!["localhost:*".parse().expect("rule")]),
                credentials: None,
            }),
        }))
    }

    /// A connect-mode pair over real loopback sockets whose client has sent `CONNECT localhost:80`, then
    /// `body`, and its FIN with them if `fin`; with what the pair made of that one event, and the
    /// client's end.
    pub(crate) fn greeted(
        now: Instant,
        fin: bool,
        body: &[u8],
    ) -> (Pair, Outcome, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, addr) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("nonblocking");
        let stream = TcpStream::from_std(accepted);
        let mut pair = Pair::greeting(1, (stream, addr), 0, connect_greeting(), now, Splice::Off);
        let head = [&b"CONNECT localhost:80 HTTP/1.1\r\n\r\n"[..], body].concat();
        client.write_all(&head).expect("write");
        if fin {
            client
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
        }
        let head = Event {
            readable: true,
            read_closed: fin,
            ..Event::default()
        };
        let outcome = run_event(&mut pair, Side::Client, head, now);
        (pair, outcome, client)
    }

    /// [`greeted`], and the reactor has handed the name to the lookup threads.
    pub(crate) fn looking_up(now: Instant) -> (Pair, std::net::TcpStream) {
        let (mut pair, outcome, client) = greeted(now, false, b"");
        assert_eq!(
            outcome,
            Outcome::Connect(Target::Named("localhost:80".into()))
        );
        pair.begin_lookup(now);
        assert!(pair.awaits_address());
        (pair, client)
    }

    /// A FIN that came with the head was reported once, while the greeting was read: no lookup (or
    /// connect) begins for a client that is gone.
    #[test]
    fn test_a_client_gone_with_its_head_is_not_looked_up() {
        let (_pair, outcome, _client) = greeted(Instant::now(), true, b"");
        assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
    }

    /// A FIN after bytes pipelined behind the head is a half-close of an upload that wants its answer:
    /// the lookup goes ahead.
    #[test]
    fn test_a_half_closed_upload_is_still_looked_up() {
        let (_pair, outcome, _client) = greeted(Instant::now(), true, b"upload");
        assert_eq!(
            outcome,
            Outcome::Connect(Target::Named("localhost:80".into()))
        );
    }

    pub(crate) fn run_event<S: Socket>(
        pair: &mut Pair<S>,
        side: Side,
        event: Event,
        now: Instant,
    ) -> Outcome {
        let (mut pool, mut metrics) = (BufPool::new(1024), Metrics::default());
        let mut shared = Shared {
            pool: &mut pool,
            pipes: None,
            metrics: &mut metrics,
        };
        pair.on_event(side, event, &mut shared, 1 << 20, now)
    }

    /// A client that leaves while its destination is looked up frees the pair at once, not when the
    /// answer comes.
    #[test]
    fn test_a_client_that_leaves_during_the_lookup_is_closed() {
        let now = Instant::now();
        let (mut pair, client) = looking_up(now);
        client.shutdown(std::net::Shutdown::Both).expect("shutdown");
        drop(client);
        let hung_up = Event {
            readable: true,
            read_closed: true,
            ..Event::default()
        };
        let outcome = run_event(&mut pair, Side::Client, hung_up, now);
        assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
    }

    /// An established pair's lifetime counts from its accept, not from its last byte, and wins over a
    /// later idle deadline; without one the pair has no deadline at all.
    #[test]
    fn test_established_lifetime_deadline() {
        let now = Instant::now();
        let (mut pair, _client) = looking_up(now);
        let live = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = TcpStream::connect(live.local_addr().expect("addr")).expect("connect");
        pair.begin_connect(stream, None, now);
        live.accept().expect("accept");
        let later = now + Duration::from_secs(5);
        let connected = Event {
            writable: true,
            ..Event::default()
        };
        assert_eq!(
            run_event(&mut pair, Side::Upstream, connected, later),
            Outcome::Connected
        );
        let (mut pool, mut metrics) = (BufPool::new(1024), Metrics::default());
        let mut shared = Shared {
            pool: &mut pool,
            pipes: None,
            metrics: &mut metrics,
        };
        pair.establish(&mut shared, 1 << 20, later);
        assert_eq!(pair.phase(), Phase::Established);
        assert_eq!(pair.deadline(&LIMITS), None);
        let limits = Deadlines {
            idle: Some(Duration::from_secs(60)),
            lifetime: Some(Duration::from_secs(30)),
            ..LIMITS
        };
        assert_eq!(
            pair.deadline(&limits),
            Some((now + Duration::from_secs(30), Cause::MaxDuration))
        );
        assert!(
            !Cause::MaxDuration.resets(),
            "a policy close, like idle-timeout"
        );
    }

    #[test]
    fn test_fault_cause_names_the_faulty_socket() {
        let err = || io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            fault_cause(Fault::Src(err()), Side::Client),
            Cause::ClientReset
        );
        assert_eq!(
            fault_cause(Fault::Dst(err()), Side::Client),
            Cause::UpstreamReset
        );
        assert_eq!(
            fault_cause(Fault::Src(err()), Side::Upstream),
            Cause::UpstreamReset
        );
        assert_eq!(
            fault_cause(Fault::Dst(err()), Side::Upstream),
            Cause::ClientReset
        );
    }

    #[test]
    fn test_clean_ends_do_not_reset() {
        assert!(!Cause::ClientFin.resets());
        assert!(!Cause::UpstreamFin.resets());
        assert!(Cause::UpstreamReset.resets());
        assert!(Cause::ConnectRefused.resets());
        assert!(Cause::Shutdown.resets());
    }

    /// Pairs over scripted streams ([`Scripted`]): each phase x event of the header's table, with every
    /// syscall's answer chosen by the test.
    mod scripted {
        use super::*;
        use crate::datapath::stream::script::{Connect, Incoming, Outgoing, Scripted};
        use crate::session::interest::Registration;
        use crate::upstream::endpoint::Tried;

        /// The ring size of these tests' pools.
        const RING: usize = 1024;
        const CLIENT_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);

        fn readable() -> Event {
            Event {
                readable: true,
                ..Event::default()
            }
        }

        fn writable() -> Event {
            Event {
                writable: true,
                ..Event::default()
            }
        }

        /// A FIN: EPOLLIN | EPOLLRDHUP.
        fn fin() -> Event {
            Event {
                readable: true,
                read_closed: true,
                ..Event::default()
            }
        }

        /// What the reactor lends a pair while it runs; kept across events, as a route's pool is.
        struct Loop {
            pool: BufPool,
            metrics: Metrics,
            now: Instant,
        }

        impl Loop {
            fn new() -> Loop {
                Loop {
                    pool: BufPool::new(RING),
                    metrics: Metrics::default(),
                    now: Instant::now(),
                }
            }

            fn event(&mut self, pair: &mut Pair<Scripted>, side: Side, event: Event) -> Outcome {
                let mut shared = Shared {
                    pool: &mut self.pool,
                    pipes: None,
                    metrics: &mut self.metrics,
                };
                pair.on_event(side, event, &mut shared, 1 << 20, self.now)
            }

            /// `Outcome::Connected` handed back, as `session::connect` does once the route knows.
            fn establish(&mut self, pair: &mut Pair<Scripted>) -> Outcome {
                let mut shared = Shared {
                    pool: &mut self.pool,
                    pipes: None,
                    metrics: &mut self.metrics,
                };
                pair.establish(&mut shared, 1 << 20, self.now)
            }

            /// The registration the reactor would give `side`'s socket after the run, applied.
            fn settle(&mut self, pair: &mut Pair<Scripted>, side: Side) -> Option<Registration> {
                let wanted = pair.registration_change(side, &self.pool);
                if let Some(registration) = wanted {
                    pair.note_registration(side, registration);
                }
                wanted
            }
        }

        /// A pair whose connect has just been started, and handles on its client and upstream streams.
        fn connecting(now: Instant) -> (Pair<Scripted>, Scripted, Scripted) {
            let (client, upstream) = (Scripted::default(), Scripted::default());
            upstream.set_connect(Connect::Pending);
            let pair = Pair::new(
                1,
                (client.clone(), CLIENT_ADDR.into()),
                (upstream.clone(), None),
                0,
                Plan::Upstreams {
                    tried: Tried::default(),
                },
                now,
                Splice::Off,
            );
            (pair, client, upstream)
        }

        /// [`connecting`], the client's first EPOLLOUT edge (a fresh socket's, on registration) has
        /// come, and the upstream's connect has completed.
        fn established(lp: &mut Loop) -> (Pair<Scripted>, Scripted, Scripted) {
            let (mut pair, client, upstream) = connecting(lp.now);
            assert_eq!(lp.event(&mut pair, Side::Client, writable()), Outcome::Open);
            upstream.set_connect(Connect::Connected);
            assert_eq!(
                lp.event(&mut pair, Side::Upstream, readable()),
                Outcome::Connected
            );
            assert_eq!(lp.establish(&mut pair), Outcome::Open);
            assert_eq!(pair.phase(), Phase::Established);
            (pair, client, upstream)
        }

        /// A connect-mode pair waiting for its client's CONNECT head.
        fn greeting(now: Instant) -> (Pair<Scripted>, Scripted) {
            let client = Scripted::default();
            let pair = Pair::greeting(
                1,
                (client.clone(), CLIENT_ADDR.into()),
                0,
                connect_greeting(),
                now,
                Splice::Off,
            );
            (pair, client)
        }

        /// A head split across two edges: the first part is read to WouldBlock and kept, the second
        /// completes it.
        #[test]
        fn test_greeting_head_split_across_reads() {
            let mut lp = Loop::new();
            let (mut pair, client) = greeting(lp.now);
            client.data(b"CONNECT local");
            assert_eq!(lp.event(&mut pair, Side::Client, readable()), Outcome::Open);
            assert_eq!(client.reads(), 2, "read on to WouldBlock");
            assert!(!pair.client_ready.readable);
            client.data(b"host:80 HTTP/1.1\r\n").data(b"\r\n");
            let outcome = lp.event(&mut pair, Side::Client, readable());
            assert_eq!(
                outcome,
                Outcome::Connect(Target::Named("localhost:80".into()))
            );
        }

        /// What followed the head in the same read is queued as the c2u preamble, to go upstream
        /// before anything the pump reads later.
        #[test]
        fn test_greeting_pipelined_bytes_go_upstream_first() {
            let mut lp = Loop::new();
            let (mut pair, client) = greeting(lp.now);
            client.data(b"CONNECT localhost:80 HTTP/1.1\r\n\r\nhello");
            let outcome = lp.event(&mut pair, Side::Client, readable());
            assert!(matches!(outcome, Outcome::Connect(_)), "{outcome:?}");
            assert_eq!(pair.c2u.undelivered(), 5);
            assert!(matches!(&pair.stage, Stage::Connecting(c) if c.client_pipelined));
        }

        #[test]
        fn test_greeting_eof_is_client_abort() {
            let mut lp = Loop::new();
            let (mut pair, client) = greeting(lp.now);
            client.data(b"CONNECT loc").incoming([Incoming::Eof]);
            let outcome = lp.event(&mut pair, Side::Client, fin());
            assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
        }

        /// An RST may come as EPOLLERR alone: the greeting reads anyway, and the read names it.
        #[test]
        fn test_greeting_reset_is_client_reset() {
            let mut lp = Loop::new();
            let (mut pair, client) = greeting(lp.now);
            client.incoming([Incoming::Fail(io::ErrorKind::ConnectionReset)]);
            let error = Event {
                error: true,
                ..Event::default()
            };
            let outcome = lp.event(&mut pair, Side::Client, error);
            assert_eq!(outcome, Outcome::Close(Cause::ClientReset));
        }

        /// A refused CONNECT: the status is written, then `shutdown(Write)`, then the client's bytes are
        /// discarded until its FIN, which closes the pair.
        #[test]
        fn test_refusing_writes_status_then_closes_on_client_fin() {
            let mut lp = Loop::new();
            let (mut pair, client) = greeting(lp.now);
            client.data(b"CONNECT example.com:80 HTTP/1.1\r\n\r\n");
            client.room(usize::MAX);
            assert_eq!(lp.event(&mut pair, Side::Client, readable()), Outcome::Open);
            assert_eq!(pair.phase(), Phase::Refusing);
            let answer = client.written();
            assert!(answer.starts_with(b"HTTP/1.1 403 "), "{answer:?}");
            assert_eq!(client.shutdowns(), 1);
            client.data(b"ignored").incoming([Incoming::Eof]);
            let outcome = lp.event(&mut pair, Side::Client, fin());
            assert_eq!(outcome, Outcome::Close(Cause::Rejected));
        }

        /// A client FIN with nothing sent while the upstream connects: the client is gone, both sockets
        /// are freed now.
        #[test]
        fn test_connecting_client_fin_with_nothing_sent_aborts() {
            let mut lp = Loop::new();
            let (mut pair, client, _upstream) = connecting(lp.now);
            client.incoming([Incoming::Eof]);
            let outcome = lp.event(&mut pair, Side::Client, fin());
            assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
            assert_eq!(client.reads(), 0, "peeked, never read");
        }

        /// A FIN behind bytes the client sent is a half-close that wants its answer: the pair waits,
        /// and the bytes stay in the kernel until the upstream is up.
        #[test]
        fn test_connecting_client_fin_after_data_waits() {
            let mut lp = Loop::new();
            let (mut pair, client, upstream) = connecting(lp.now);
            client
                .data(b"GET / HTTP/1.0\r\n\r\n")
                .incoming([Incoming::Eof]);
            assert_eq!(lp.event(&mut pair, Side::Client, fin()), Outcome::Open);
            assert_eq!(pair.phase(), Phase::Connecting);
            assert_eq!(client.reads(), 0);

            upstream.set_connect(Connect::Connected);
            upstream.room(usize::MAX);
            let outcome = lp.event(&mut pair, Side::Upstream, writable());
            assert_eq!(outcome, Outcome::Connected);
            lp.establish(&mut pair);
            assert_eq!(upstream.written(), b"GET / HTTP/1.0\r\n\r\n");
            assert_eq!(upstream.shutdowns(), 1, "the half-close passed on");
        }

        /// A reset client while connecting: gone too.
        #[test]
        fn test_connecting_client_reset_aborts() {
            let mut lp = Loop::new();
            let (mut pair, client, _upstream) = connecting(lp.now);
            client.incoming([Incoming::Fail(io::ErrorKind::ConnectionReset)]);
            let error = Event {
                error: true,
                ..Event::default()
            };
            let outcome = lp.event(&mut pair, Side::Client, error);
            assert_eq!(outcome, Outcome::Close(Cause::ClientAbort));
        }

        /// Under epoll a clean writable edge proves the connect: the kernel is not asked (here it would
        /// say "pending").
        #[cfg(any(target_os = "linux", target_os = "android"))]
        #[test]
        fn test_connecting_writable_edge_proves_connected() {
            let mut lp = Loop::new();
            let (mut pair, _client, _upstream) = connecting(lp.now);
            assert_eq!(
                lp.event(&mut pair, Side::Upstream, writable()),
                Outcome::Connected
            );
            assert_eq!(pair.phase(), Phase::Connecting, "until the route is told");
            assert_eq!(lp.establish(&mut pair), Outcome::Open);
            assert_eq!(pair.phase(), Phase::Established);
            assert!(pair.upstream_ready.writable);
            assert_eq!(lp.metrics.connects_ok, 1);
        }

        /// Any other upstream event is settled by asking the kernel: pending, failed or connected.
        #[test]
        fn test_connecting_upstream_event_asks_the_kernel() {
            let mut lp = Loop::new();
            let (mut pair, _client, upstream) = connecting(lp.now);
            assert_eq!(
                lp.event(&mut pair, Side::Upstream, readable()),
                Outcome::Open
            );
            assert_eq!(pair.phase(), Phase::Connecting, "still pending");

            upstream.set_connect(Connect::Failed(io::ErrorKind::ConnectionRefused));
            let refused = Event {
                writable: true,
                error: true,
                ..Event::default()
            };
            let outcome = lp.event(&mut pair, Side::Upstream, refused);
            assert_eq!(outcome, Outcome::ConnectFailed(Cause::ConnectRefused));
        }

        #[test]
        fn test_connecting_deadline_is_connect_timeout() {
            let now = Instant::now();
            let (mut pair, _client, _upstream) = connecting(now);
            let deadline = pair.deadline(&LIMITS);
            assert_eq!(
                deadline,
                Some((now + LIMITS.connect, Cause::ConnectTimeout))
            );
            let outcome = pair.expire(Cause::ConnectTimeout, now + LIMITS.connect);
            assert_eq!(outcome, Outcome::ConnectFailed(Cause::ConnectTimeout));
        }

        /// Both FINs: each direction drains and passes its FIN on; the first side to finish names the
        /// close, and the last FIN is left to the close.
        #[test]
        fn test_established_both_fins_close_named_by_the_first() {
            for first in [Side::Client, Side::Upstream] {
                let mut lp = Loop::new();
                let (mut pair, client, upstream) = established(&mut lp);
                let (a, b) = match first {
                    Side::Client => (&client, &upstream),
                    Side::Upstream => (&upstream, &client),
                };
                a.data(b"bye").incoming([Incoming::Eof]);
                b.room(usize::MAX);
                assert_eq!(lp.event(&mut pair, first, fin()), Outcome::Open);
                assert_eq!(b.written(), b"bye");
                assert_eq!(b.shutdowns(), 1, "FIN passed on");

                b.incoming([Incoming::Eof]);
                let outcome = lp.event(&mut pair, first.other(), fin());
                let cause = match first {
                    Side::Client => Cause::ClientFin,
                    Side::Upstream => Cause::UpstreamFin,
                };
                assert_eq!(outcome, Outcome::Close(cause));
                assert_eq!(a.shutdowns(), 0, "the last FIN is the close's");
                assert!(!cause.resets());
            }
        }

        /// A reset on either side closes the pair with a cause that resets both.
        #[test]
        fn test_established_reset_on_one_side_resets_both() {
            for (side, cause) in [
                (Side::Client, Cause::ClientReset),
                (Side::Upstream, Cause::UpstreamReset),
            ] {
                let mut lp = Loop::new();
                let (mut pair, client, upstream) = established(&mut lp);
                let reset = [Incoming::Fail(io::ErrorKind::ConnectionReset)];
                match side {
                    Side::Client => client.incoming(reset),
                    Side::Upstream => upstream.incoming(reset),
                };
                let outcome = lp.event(&mut pair, side, readable());
                assert_eq!(outcome, Outcome::Close(cause));
                assert!(cause.resets());
            }
        }

        /// A write error is the writing side's peer's fault: EPIPE writing to the client is a
        /// client reset, whoever sent the bytes.
        #[test]
        fn test_established_write_error_names_the_written_socket() {
            let mut lp = Loop::new();
            let (mut pair, client, upstream) = established(&mut lp);
            upstream.data(b"answer");
            client.outgoing([Outgoing::Fail(io::ErrorKind::BrokenPipe)]);
            let outcome = lp.event(&mut pair, Side::Upstream, readable());
            assert_eq!(outcome, Outcome::Close(Cause::ClientReset));
        }

        /// Backpressure: a client that takes nothing fills the u2c ring; the upstream's next EPOLLIN
        /// edge is wasted, so its socket is muted; once the client takes everything and a read finds the
        /// upstream drained, read interest comes back.
        #[test]
        fn test_established_backpressure_mutes_reads_then_unmutes() {
            let mut lp = Loop::new();
            let (mut pair, client, upstream) = established(&mut lp);
            upstream.data(&[5; 3 * RING]);
            let before = upstream.reads();
            assert_eq!(
                lp.event(&mut pair, Side::Upstream, readable()),
                Outcome::Open
            );
            assert_eq!(upstream.reads(), before + 1, "the ring is full");
            assert_eq!(
                lp.settle(&mut pair, Side::Upstream),
                None,
                "no edge wasted yet"
            );

            lp.event(&mut pair, Side::Upstream, readable());
            assert_eq!(upstream.reads(), before + 1, "no read into a full ring");
            let muted = Registration {
                reads: false,
                writes: true,
            };
            assert_eq!(lp.settle(&mut pair, Side::Upstream), Some(muted));

            client.room(usize::MAX).room(usize::MAX).room(usize::MAX);
            lp.event(&mut pair, Side::Client, writable());
            assert_eq!(
                client.written().len(),
                3 * RING,
                "resumed without an upstream edge"
            );
            let both = Registration {
                reads: true,
                writes: true,
            };
            assert_eq!(lp.settle(&mut pair, Side::Upstream), Some(both));
        }

        /// A pair's own EPOLLOUT edge that says nothing new drops the socket's write interest; a write
        /// that finds the socket full brings it back.
        #[test]
        fn test_established_redundant_writable_edge_drops_write_interest() {
            let mut lp = Loop::new();
            let (mut pair, client, upstream) = established(&mut lp);
            lp.event(&mut pair, Side::Client, writable());
            let reads_only = Registration {
                reads: true,
                writes: false,
            };
            assert_eq!(lp.settle(&mut pair, Side::Client), Some(reads_only));

            upstream.data(b"more than the client takes");
            client.room(4);
            lp.event(&mut pair, Side::Upstream, readable());
            assert!(!pair.client_ready.writable, "a short write");
            let both = Registration {
                reads: true,
                writes: true,
            };
            assert_eq!(lp.settle(&mut pair, Side::Client), Some(both));
        }
    }
}

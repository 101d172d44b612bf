//! A pair's phases and what each holds (`Stage`), and the pair's methods that move it between them:
//! every change goes through [`Pair::set_stage`]'s one `trace!` line. A lease on a route endpoint lives in
//! `Connecting` and `Established` only, and leaves them only through `take_lease` / `drop_upstream`
//! (for `session::connect` to give back) or by moving into `Established`.

use crate::config::UpstreamAddr;
use std::time::{Duration, Instant};

use log::trace;

use super::phase::Phase;
use super::recorder::Happening;
use super::{Outcome, Pair};
use crate::datapath::pump::Shared;
use crate::datapath::readiness::Readiness;
use crate::datapath::stream::Socket;
use crate::session::attempt::Plan;
use crate::session::refusal::Refusal;
use crate::upstream::route::Lease;
use crate::wire::greeting::Greeting;

/// A pair's phase and what only that phase needs. Every change goes through `Pair::set_stage`.
#[derive(Debug)]
pub(super) enum Stage<S> {
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
pub(super) struct Connecting<S> {
    /// The current attempt's socket; `None` while a CONNECT host name is looked up.
    pub(super) socket: Option<S>,
    /// The address of the current attempt, or of the last one once it failed (for the access log's
    /// `upstream`); `None` before the first.
    pub(super) addr: Option<UpstreamAddr>,
    /// The route endpoint the attempt is to; `None` for a CONNECT destination.
    pub(super) lease: Option<Lease>,
    /// Where the attempts go ([`crate::session::attempt`]).
    pub(super) plan: Plan,
    /// When the current attempt (or lookup) began: each has its own connect timeout.
    pub(super) since: Instant,
    /// The client pipelined bytes after its greeting (they wait in the c2u preamble). A PROXY header we
    /// queued ourselves is in that preamble too, so its length cannot tell whether the client sent data.
    pub(super) client_pipelined: bool,
}

impl<S> Connecting<S> {
    /// An attempt over `upstream` to `addr` that began at `now`, from a pair with no greeting (so no
    /// pipelined bytes behind one).
    pub(super) fn attempt(
        (upstream, addr): (S, UpstreamAddr),
        lease: Option<Lease>,
        plan: Plan,
        now: Instant,
    ) -> Connecting<S> {
        Connecting {
            socket: Some(upstream),
            addr: Some(addr),
            lease,
            plan,
            since: now,
            client_pipelined: false,
        }
    }
}

/// A connected upstream.
#[derive(Debug)]
pub(super) struct Established<S> {
    pub(super) socket: S,
    /// The address it is connected to.
    pub(super) addr: UpstreamAddr,
    /// When the connect completed (the pair's accept, for a `--prewarm` connection).
    pub(super) since: Instant,
    /// The route endpoint it is connected to, held until the pair closes; `None` for a CONNECT
    /// destination.
    lease: Option<Lease>,
}

impl<S> Stage<S> {
    pub(super) fn phase(&self) -> Phase {
        match self {
            Stage::Greeting(_) => Phase::Greeting,
            Stage::Refusing(_) => Phase::Refusing,
            Stage::Connecting(_) => Phase::Connecting,
            Stage::Established(_) => Phase::Established,
        }
    }

    /// The route endpoint this stage holds, if any.
    pub(super) fn lease(&self) -> Option<&Lease> {
        match self {
            Stage::Connecting(connecting) => connecting.lease.as_ref(),
            Stage::Established(established) => established.lease.as_ref(),
            Stage::Greeting(_) | Stage::Refusing(_) => None,
        }
    }
}

impl<S: Socket> Pair<S> {
    /// A connect attempt has started (`session::connect`): to the leased endpoint, or to a CONNECT
    /// destination's address (no lease). The pair is `Connecting` under this attempt's own connect
    /// deadline. A socket of an earlier attempt was dropped first (`Pair::drop_upstream`), which closed
    /// it and so removed it from epoll; the new one is registered under the same token. Under epoll no
    /// edge of the old socket can reach the new one: epoll reports a file at most once per `epoll_wait`,
    /// so the event that brought the failure was the old socket's last, and a connect timeout fires after
    /// the batch. That is what lets the new socket's clean writable edge prove its connect
    /// ([`crate::datapath::readiness::Event::proves_connected`]). kqueue reports a socket's read and write filters as two events, so
    /// there a stale one can arrive; it is harmless because there no event proves a connect: each makes
    /// the pair ask the kernel about the new socket. Its readiness starts afresh below.
    pub(crate) fn begin_connect(
        &mut self,
        (upstream, addr): (S, UpstreamAddr),
        lease: Option<Lease>,
        now: Instant,
    ) {
        self.upstream_ready = Readiness::default();
        match &mut self.stage {
            Stage::Connecting(connecting) => {
                trace!("conn={} Connecting => Connecting (new attempt)", self.id);
                connecting.socket = Some(upstream);
                connecting.addr = Some(addr);
                connecting.lease = lease;
                connecting.since = now;
                let attempt = u8::try_from(connecting.plan.attempts()).unwrap_or(u8::MAX);
                self.recorder
                    .record(self.started, now, Happening::Attempt(attempt));
            }
            _ => {
                // Not reached: `session::connect` starts attempts only for a `Connecting` pair.
                let plan = Plan::Upstreams {
                    tried: Default::default(),
                };
                let connecting = Connecting::attempt((upstream, addr), lease, plan, now);
                self.set_stage(Stage::Connecting(connecting), now);
            }
        }
    }

    /// A CONNECT to a host name, about to be looked up: the pair waits in `Connecting` with no upstream
    /// socket, under the connect deadline (504 if the name takes too long), until the answer starts the
    /// connect or fails it.
    pub(crate) fn begin_lookup(&mut self, now: Instant) {
        if let Stage::Connecting(connecting) = &mut self.stage {
            connecting.since = now;
            connecting.plan = Plan::Lookup;
            self.recorder.record(self.started, now, Happening::Lookup);
        }
    }

    /// Whether the pair is waiting for its CONNECT destination's address: a lookup answer for any other
    /// pair, or for this one after its deadline answered 504, is stale.
    pub(crate) fn awaits_address(&self) -> bool {
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

    /// The upstream address connected to, or the last one tried; `None` if no attempt started.
    pub(crate) fn upstream_addr(&self) -> Option<&UpstreamAddr> {
        match &self.stage {
            Stage::Connecting(connecting) => connecting.addr.as_ref(),
            Stage::Established(established) => Some(&established.addr),
            Stage::Greeting(_) | Stage::Refusing(_) => None,
        }
    }

    /// How long the upstream connect took from the accept; `None` unless it completed.
    pub(crate) fn connect_time(&self) -> Option<Duration> {
        match &self.stage {
            Stage::Established(established) => Some(established.since.duration_since(self.started)),
            _ => None,
        }
    }

    /// The upstream socket, if the pair has one.
    pub(crate) fn upstream(&self) -> Option<&S> {
        match &self.stage {
            Stage::Connecting(connecting) => connecting.socket.as_ref(),
            Stage::Established(established) => Some(&established.socket),
            Stage::Greeting(_) | Stage::Refusing(_) => None,
        }
    }

    /// The one way a pair changes phase; returns the stage it leaves, whose data the caller may take.
    /// The change is traced and goes in the flight recorder.
    pub(super) fn set_stage(&mut self, next: Stage<S>, now: Instant) -> Stage<S> {
        trace!("conn={} {:?} => {:?}", self.id, self.phase(), next.phase());
        let change = Happening::Stage(self.phase(), next.phase());
        self.recorder.record(self.started, now, change);
        debug_assert!(
            self.stage.lease().is_none() || matches!(next, Stage::Established(_)),
            "a lease is handed over or given back, never dropped with its stage"
        );
        std::mem::replace(&mut self.stage, next)
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
        // Both or neither: an attempt sets its socket and address together, a lookup neither. Checked
        // before either is taken, so a half-set stage never drops the socket.
        if connecting.socket.is_none() || connecting.addr.is_none() {
            return Outcome::Open;
        }
        let (Some(socket), Some(addr)) = (connecting.socket.take(), connecting.addr.take()) else {
            return Outcome::Open;
        };
        let lease = connecting.lease.take();
        shared.metrics.connects_ok += 1;
        let established = Established {
            socket,
            addr,
            since: now,
            lease,
        };
        self.set_stage(Stage::Established(established), now);
        // The connect completed with an edge we just consumed; the socket is writable.
        self.upstream_ready.writable = true;
        self.run(shared, budget, now)
    }

    /// Marks the upstream as an already established `--prewarm` connection: the pair starts
    /// `Established`, with both upstream readiness bits set so the first run finds out for itself what
    /// the socket holds (a greeting the upstream already sent, say).
    pub(crate) fn with_warm_upstream(mut self) -> Pair<S> {
        if let Stage::Connecting(connecting) = &mut self.stage {
            if let (Some(socket), Some(addr)) = (connecting.socket.take(), connecting.addr.take()) {
                let lease = connecting.lease.take();
                let established = Established {
                    socket,
                    addr,
                    since: self.started,
                    lease,
                };
                // Made established: its accept is now.
                self.set_stage(Stage::Established(established), self.started);
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
}

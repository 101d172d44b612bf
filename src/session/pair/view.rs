//! A pair seen from outside: [`PairView`], a plain copy of what an operator asks about one live
//! connection (the admin API's Connection object, docs/admin.md), taken in one call without a syscall.
//!
//! The view carries two kinds of fields. Those the API shows are serialized under the API's names
//! (docs/admin.md); the route's name and the process-wide id are the reactor's to add (`conn` and
//! `route` here are the pair's own id and its route's slot). The others are what the diagnosis needs
//! besides (`super::diagnosis`): what the phase waits for, and when each direction last moved.
//!
//! `stuck` ([`PairView::is_stuck`]) is one rule with no setting, so `?stuck=1` needs nothing but the
//! view: a pair is stuck when
//! - a direction holds bytes and has not moved for [`STUCK_AFTER`] (its receiver is not reading), or
//! - it is half-closed and nothing has moved either way for [`STUCK_AFTER`] (the FIN_WAIT2 /
//!   CLOSE_WAIT pile-up), or
//! - its greeting, or its current connect attempt (or lookup), has taken [`SLOW_SETUP`]: half the
//!   default connect timeout, and far longer than a healthy connect or PROXY header takes anywhere.
//!
//! An idle pair holding nothing is not stuck: a quiet keep-alive connection is normal.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use super::recorder::EventView;
use super::stage::Stage;
use super::{Pair, Phase};
use crate::datapath::stream::Socket;
use crate::session::attempt::Plan;
use crate::session::interest::Registration;
use crate::token::Side;

/// How long a direction may hold bytes without moving, or a half-closed pair sit idle, before it is
/// stuck.
pub(crate) const STUCK_AFTER: Duration = Duration::from_secs(5);
/// How long a greeting or a connect attempt may take before it is stuck.
pub(crate) const SLOW_SETUP: Duration = Duration::from_millis(2500);

/// What the pair's phase is waiting for, with its progress. Serialized as the phase's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Reading the client's `what` (a PROXY header, a CONNECT head): `read` bytes of at most `bound`.
    Greeting {
        what: &'static str,
        read: usize,
        bound: usize,
    },
    /// Writing an error status to the client, then closing.
    Refusing,
    /// Looking up a CONNECT destination's name, for `for_ms`.
    Lookup {
        for_ms: u64,
    },
    /// Waiting for an upstream connect: attempt `attempt` of the route's upstreams (0 for a CONNECT
    /// destination), started `for_ms` ago.
    Connecting {
        attempt: usize,
        for_ms: u64,
    },
    Established,
}

impl Step {
    pub(crate) fn phase(self) -> Phase {
        match self {
            Step::Greeting { .. } => Phase::Greeting,
            Step::Refusing => Phase::Refusing,
            Step::Lookup { .. } | Step::Connecting { .. } => Phase::Connecting,
            Step::Established => Phase::Established,
        }
    }
}

impl Serialize for Step {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serializer.serialize_str(self.phase().name())
    }
}

/// Which path a direction's bytes take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Path {
    /// Through the direction's ring, in user space.
    Ring,
    /// Through a pipe (`--splice`), never entering user space.
    Splice,
}

impl Path {
    /// Where held bytes wait, in the diagnosis's words.
    pub(crate) fn buffer(self) -> &'static str {
        match self {
            Path::Ring => "ring",
            Path::Splice => "pipe",
        }
    }
}

/// How a socket is registered with the poller: `"r"`, `"w"`, `"rw"`, or `"-"` when the side has no
/// socket (the upstream during a greeting, a lookup or a refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watch(pub(crate) Option<Registration>);

impl Watch {
    /// Registered, but not for reads: the direction reading this socket is muted by backpressure.
    pub(crate) fn reads_muted(self) -> bool {
        self.0.is_some_and(|registration| !registration.reads)
    }

    fn as_str(self) -> &'static str {
        match self
            .0
            .map(|registration| (registration.reads, registration.writes))
        {
            Some((true, true)) => "rw",
            Some((true, false)) => "r",
            Some((false, true)) => "w",
            // Never neither (`session::interest`); no socket at all.
            Some((false, false)) | None => "-",
        }
    }
}

impl Serialize for Watch {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One live pair, as the admin API shows it (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PairView {
    /// The pair's id within its reactor (`conn=` in logs); the reactor makes the process-wide `id`.
    #[serde(skip)]
    pub(crate) conn: u32,
    /// The slab slot of the pair's route; the reactor names it.
    #[serde(skip)]
    pub(crate) route: usize,
    /// The real client (after a PROXY header).
    pub(crate) client: SocketAddr,
    /// The upstream connected or being connected to (the last one tried between attempts); `None`
    /// before the first attempt (a greeting, a CONNECT lookup).
    pub(crate) upstream: Option<String>,
    pub(crate) phase: Step,
    pub(crate) age_ms: u64,
    /// Since bytes last moved either way.
    pub(crate) idle_ms: u64,
    /// Bytes forwarded each way.
    pub(crate) c2u_bytes: u64,
    pub(crate) u2c_bytes: u64,
    /// Bytes waiting now in each direction (ring or pipe, a queued preamble included).
    pub(crate) c2u_held: u64,
    pub(crate) u2c_held: u64,
    pub(crate) c2u_path: Path,
    pub(crate) u2c_path: Path,
    pub(crate) client_interest: Watch,
    pub(crate) upstream_interest: Watch,
    /// The side's FIN has come (seen by the poller, or read).
    pub(crate) client_read_closed: bool,
    /// The side has been sent our FIN (or it is left to the close, for the last direction).
    pub(crate) client_write_closed: bool,
    pub(crate) upstream_read_closed: bool,
    pub(crate) upstream_write_closed: bool,
    /// [`PairView::is_stuck`].
    pub(crate) stuck: bool,
    /// Since each direction last moved bytes or a FIN (since the accept if never).
    #[serde(skip)]
    pub(crate) c2u_still_ms: u64,
    #[serde(skip)]
    pub(crate) u2c_still_ms: u64,
}

/// Milliseconds from `then` to `now`, 0 if `then` is later.
fn millis(then: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX)
}

impl PairView {
    /// The rule of the module docs.
    pub(crate) fn is_stuck(&self) -> bool {
        let stuck_after = STUCK_AFTER.as_millis() as u64;
        let slow_setup = SLOW_SETUP.as_millis() as u64;
        let held_still = (self.c2u_held > 0 && self.c2u_still_ms >= stuck_after)
            || (self.u2c_held > 0 && self.u2c_still_ms >= stuck_after);
        let half_closed = self.client_read_closed || self.upstream_read_closed;
        match self.phase {
            Step::Greeting { .. } => self.age_ms >= slow_setup,
            Step::Lookup { for_ms } | Step::Connecting { for_ms, .. } => for_ms >= slow_setup,
            Step::Refusing => false,
            Step::Established => held_still || (half_closed && self.idle_ms >= stuck_after),
        }
    }
}

impl<S: Socket> Pair<S> {
    /// The pair as the admin API shows it, at `now`.
    pub(crate) fn view(&self, now: Instant) -> PairView {
        let (c2u, u2c) = (&self.c2u, &self.u2c);
        let path = |splices| if splices { Path::Splice } else { Path::Ring };
        let mut view = PairView {
            conn: self.id,
            route: self.route,
            client: self.client_addr,
            upstream: self.upstream_addr().map(ToString::to_string),
            phase: self.step(now),
            age_ms: millis(self.started, now),
            idle_ms: millis(self.last_activity(), now),
            c2u_bytes: c2u.counters().bytes,
            u2c_bytes: u2c.counters().bytes,
            c2u_held: c2u.undelivered() as u64,
            u2c_held: u2c.undelivered() as u64,
            c2u_path: path(c2u.splices()),
            u2c_path: path(u2c.splices()),
            client_interest: self.watch(Side::Client),
            upstream_interest: self.watch(Side::Upstream),
            client_read_closed: self.client_ready.read_closed || c2u.saw_eof(),
            client_write_closed: u2c.is_closed(),
            upstream_read_closed: self.upstream_ready.read_closed || u2c.saw_eof(),
            upstream_write_closed: c2u.is_closed(),
            stuck: false,
            c2u_still_ms: millis(self.moved[0], now),
            u2c_still_ms: millis(self.moved[1], now),
        };
        view.stuck = view.is_stuck();
        view
    }

    /// The flight recorder's entries in words, oldest first.
    pub(crate) fn events(&self) -> Vec<EventView> {
        self.recorder.events()
    }

    fn step(&self, now: Instant) -> Step {
        match &self.stage {
            Stage::Greeting(greeting) => {
                let (what, read, bound) = greeting.progress();
                Step::Greeting { what, read, bound }
            }
            Stage::Refusing(_) => Step::Refusing,
            Stage::Connecting(connecting) => {
                let for_ms = millis(connecting.since, now);
                match (&connecting.plan, &connecting.socket) {
                    (Plan::Lookup, None) => Step::Lookup { for_ms },
                    (plan, _) => Step::Connecting {
                        attempt: plan.attempts(),
                        for_ms,
                    },
                }
            }
            Stage::Established(_) => Step::Established,
        }
    }

    /// How `side`'s socket is registered, if the pair has one there.
    fn watch(&self, side: Side) -> Watch {
        let registered = match side {
            Side::Client => true,
            Side::Upstream => self.upstream().is_some(),
        };
        Watch(registered.then(|| self.registration(side)))
    }
}

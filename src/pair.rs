//! A connection pair: the accepted client socket, the upstream socket, and one [`Direction`] each way.
//!
//! The pair owns its lifecycle but never touches `Poll` or the slab: every handler returns an [`Outcome`],
//! and the reactor alone tears a pair down. The lifecycle is two phases:
//!
//! | phase        | event                                      | result                                  |
//! |--------------|--------------------------------------------|-----------------------------------------|
//! | `Connecting` | upstream event, `peer_addr` ok             | `Established`; pump whatever is ready   |
//! | `Connecting` | upstream event, `take_error` has an error  | failover, or close with RST to client   |
//! | `Connecting` | client FIN with nothing sent, or RST       | close both at once (client-abort)       |
//! | `Connecting` | client FIN after sending data              | wait: the data is delivered once up     |
//! | `Connecting` | deadline                                   | failover, or close (connect-timeout)    |
//! | `Established`| both directions `Closed`                   | close (client-fin / upstream-fin)       |
//! | `Established`| a read/write error on one side             | RST on both (client-/upstream-reset)    |
//! | `Established`| idle or half-closed past its deadline      | close (idle-timeout / fin-timeout)      |
//!
//! During `Connecting` nothing is read from the client: its bytes wait in the kernel (which is cheaper
//! than holding them in a ring), and the client's cached readiness keeps the promise that they are there.
//! That is also what makes failover safe: no byte has gone upstream, so when a connect fails the reactor
//! may give the pair a new upstream socket ([`Pair::retry`]) and the client never knows.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::trace;
use mio::net::TcpStream;

use crate::metrics::Way;
use crate::net::{self, ConnectState};
use crate::pump::{Direction, End, Fault, Shared};
use crate::readiness::{Event, Readiness};
use crate::ring::BufPool;
use crate::token::Side;

/// Why a pair ended; printed in the close line as `cause=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    ClientFin,
    UpstreamFin,
    ClientReset,
    UpstreamReset,
    ConnectRefused,
    ConnectTimeout,
    ConnectError,
    ClientAbort,
    IdleTimeout,
    FinTimeout,
    Shutdown,
}

impl Cause {
    /// Every cause, in the order of their discriminants (indexes of per-cause counters).
    pub const ALL: [Cause; 11] = [
        Cause::ClientFin,
        Cause::UpstreamFin,
        Cause::ClientReset,
        Cause::UpstreamReset,
        Cause::ConnectRefused,
        Cause::ConnectTimeout,
        Cause::ConnectError,
        Cause::ClientAbort,
        Cause::IdleTimeout,
        Cause::FinTimeout,
        Cause::Shutdown,
    ];

    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ClientFin => "client-fin",
            Cause::UpstreamFin => "upstream-fin",
            Cause::ClientReset => "client-reset",
            Cause::UpstreamReset => "upstream-reset",
            Cause::ConnectRefused => "connect-refused",
            Cause::ConnectTimeout => "connect-timeout",
            Cause::ConnectError => "connect-error",
            Cause::ClientAbort => "client-abort",
            Cause::IdleTimeout => "idle-timeout",
            Cause::FinTimeout => "fin-timeout",
            Cause::Shutdown => "shutdown",
        }
    }

    /// A failed upstream connect: the causes that let a pair fail over to another upstream.
    pub fn is_connect_failure(self) -> bool {
        matches!(
            self,
            Cause::ConnectRefused | Cause::ConnectTimeout | Cause::ConnectError
        )
    }

    /// Whether the surviving side(s) must see an abort (RST) rather than a FIN that would read as a clean
    /// end of stream.
    pub fn resets(self) -> bool {
        !matches!(
            self,
            Cause::ClientFin
                | Cause::UpstreamFin
                | Cause::ClientAbort
                | Cause::IdleTimeout
                | Cause::FinTimeout
        )
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the reactor must do with a pair after a handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Waiting for the kernel.
    Open,
    /// Its byte budget ran out with work left: run it again before sleeping.
    Yield,
    /// Tear it down.
    Close(Cause),
}

/// The pair's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Established,
}

/// The timeouts a pair checks itself against.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub connect: Duration,
    pub idle: Option<Duration>,
    pub fin: Duration,
}

/// How many pump rounds one wakeup may run before the loop guard steps in. Each round moves bytes,
/// changes a state or clears a readiness bit, so reaching this means something is wrong.
const MAX_ROUNDS: usize = 10_000;

/// A client connection and its upstream.
#[derive(Debug)]
pub struct Pair {
    /// Connection id for logs; also the generation in this pair's tokens.
    pub id: u32,
    pub client: TcpStream,
    pub upstream: TcpStream,
    pub client_addr: SocketAddr,
    /// Slab slot of the route that accepted the client (it outlives the pair, draining if removed).
    pub route: usize,
    /// Index, in that route, of the upstream `upstream` connects to.
    pub upstream_index: usize,
    /// Upstreams tried for this client (the current one included), as a bit mask of indices: a failover
    /// never repeats one, and its population count is the number of attempts made.
    pub tried: u64,
    client_ready: Readiness,
    upstream_ready: Readiness,
    /// client -> upstream.
    c2u: Direction,
    /// upstream -> client.
    u2c: Direction,
    phase: Phase,
    /// The side whose FIN came first, which names a clean close.
    first_fin: Option<Side>,
    pub started: Instant,
    /// When the current connect attempt began (each attempt has its own connect timeout).
    attempt_started: Instant,
    /// Last time bytes moved either way (idle and fin timeouts count from here).
    last_activity: Instant,
    /// The deadline currently armed in the reactor's timer heap for this pair.
    pub armed: Option<Instant>,
}

impl Pair {
    /// A pair whose upstream connect (to upstream `upstream_index` of route `route`) has just been started.
    pub fn new(
        id: u32,
        (client, client_addr): (TcpStream, SocketAddr),
        (upstream, upstream_index): (TcpStream, usize),
        route: usize,
        tried: u64,
        now: Instant,
        zero_copy: bool,
    ) -> Pair {
        Pair {
            id,
            client,
            upstream,
            client_addr,
            route,
            upstream_index,
            tried,
            client_ready: Readiness::default(),
            upstream_ready: Readiness::default(),
            c2u: Direction::new(Way::ClientToUpstream, zero_copy),
            u2c: Direction::new(Way::UpstreamToClient, zero_copy),
            phase: Phase::Connecting,
            first_fin: None,
            started: now,
            attempt_started: now,
            last_activity: now,
            armed: None,
        }
    }

    /// Marks the upstream as an already established `--prewarm` connection: the pair starts
    /// `Established`, with both upstream readiness bits set so the first run finds out for itself what
    /// the socket holds (a greeting the upstream already sent, say).
    pub fn with_warm_upstream(mut self) -> Pair {
        self.phase = Phase::Established;
        self.upstream_ready = Readiness {
            readable: true,
            writable: true,
            read_closed: false,
        };
        self
    }

    pub fn phase(&self) -> Phase {
        self.phase
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

    /// Failover: the connect to the current upstream failed, so a new connect (already started, to
    /// upstream `index`) replaces it. Dropping the old socket closes it, which also removes it from epoll.
    /// Events for it that are still in the current batch carry the same token and land here; they are
    /// harmless because in `Connecting` an upstream event only triggers [`net::connect_result`] on the new
    /// socket, which asks the kernel (`take_error`, `peer_addr`) rather than trusting the event, and the
    /// readiness bits they set are reset below or re-proven by a syscall before they are relied on.
    pub fn retry(&mut self, upstream: TcpStream, index: usize, tried: u64, now: Instant) {
        debug_assert_eq!(self.phase, Phase::Connecting);
        trace!(
            "conn={} Connecting => Connecting (failover to upstream #{index})",
            self.id
        );
        self.upstream = upstream;
        self.upstream_index = index;
        self.upstream_ready = Readiness::default();
        self.tried = tried;
        self.attempt_started = now;
    }

    fn set_phase(&mut self, next: Phase) {
        trace!("conn={} {:?} => {:?}", self.id, self.phase, next);
        self.phase = next;
    }

    /// Handles one readiness event on `side`, then runs the pumps.
    pub fn on_event(
        &mut self,
        side: Side,
        event: Event,
        shared: &mut Shared<'_>,
        budget: usize,
        now: Instant,
    ) -> Outcome {
        match side {
            Side::Client => self.client_ready.merge(event),
            Side::Upstream => self.upstream_ready.merge(event),
        }
        match self.phase {
            Phase::Connecting => self.on_connecting_event(side, event, shared, budget, now),
            Phase::Established => self.run(shared, budget, now),
        }
    }

    fn on_connecting_event(
        &mut self,
        side: Side,
        event: Event,
        shared: &mut Shared<'_>,
        budget: usize,
        now: Instant,
    ) -> Outcome {
        match side {
            Side::Client if event.read_closed || event.error => self.check_client_left(),
            Side::Client => Outcome::Open,
            Side::Upstream => match net::connect_result(&self.upstream) {
                ConnectState::Pending => Outcome::Open,
                ConnectState::Failed(err) => Outcome::Close(connect_failure_cause(&err)),
                ConnectState::Connected => {
                    shared.metrics.connects_ok += 1;
                    self.set_phase(Phase::Established);
                    // The connect completed with an edge we just consumed; the socket is writable.
                    self.upstream_ready.writable = true;
                    self.run(shared, budget, now)
                }
            },
        }
    }

    /// The client hung up while the upstream connect is pending. A FIN after data is a half-close that
    /// expects an answer, so the pair waits; a FIN with nothing sent, or a reset, means the client is gone
    /// and both sockets are freed now rather than when the connect resolves.
    fn check_client_left(&mut self) -> Outcome {
        let mut probe = [0u8; 1];
        match self.client.peek(&mut probe) {
            Ok(0) => Outcome::Close(Cause::ClientAbort),
            Ok(_) => Outcome::Open,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Outcome::Open,
            Err(_) => Outcome::Close(Cause::ClientAbort),
        }
    }

    /// Pumps both directions until neither can move, the budget is spent, or the pair is finished.
    pub fn run(&mut self, shared: &mut Shared<'_>, budget: usize, now: Instant) -> Outcome {
        if self.phase != Phase::Established {
            return Outcome::Open;
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
        let forward = self
            .c2u
            .pump(
                id,
                End {
                    stream: &mut self.client,
                    ready: &mut self.client_ready,
                },
                End {
                    stream: &mut self.upstream,
                    ready: &mut self.upstream_ready,
                },
                shared,
                budget,
            )
            .map_err(|fault| fault_cause(fault, Side::Client))?;
        let backward = self
            .u2c
            .pump(
                id,
                End {
                    stream: &mut self.upstream,
                    ready: &mut self.upstream_ready,
                },
                End {
                    stream: &mut self.client,
                    ready: &mut self.client_ready,
                },
                shared,
                budget,
            )
            .map_err(|fault| fault_cause(fault, Side::Upstream))?;
        Ok(forward || backward)
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

    /// True when exactly one direction has finished: the state FIN_WAIT2/CLOSE_WAIT pile up in.
    fn half_closed(&self) -> bool {
        self.c2u.is_closed() != self.u2c.is_closed()
    }

    /// The next moment this pair must be looked at, and what it would mean then.
    pub fn deadline(&self, limits: &Deadlines) -> Option<(Instant, Cause)> {
        if self.phase == Phase::Connecting {
            return Some((self.attempt_started + limits.connect, Cause::ConnectTimeout));
        }
        let idle = limits
            .idle
            .map(|idle| (self.last_activity + idle, Cause::IdleTimeout));
        let fin = self
            .half_closed()
            .then(|| (self.last_activity + limits.fin, Cause::FinTimeout));
        match (idle, fin) {
            (Some(a), Some(b)) => Some(if b.0 <= a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// True while either direction holds bytes not yet delivered. Closing such a pair with a FIN would
    /// let the peer take a truncated stream for a complete one, so the reactor resets it instead.
    pub fn holds_undelivered(&self) -> bool {
        self.c2u.held() > 0 || self.u2c.held() > 0
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

/// Names a failed connect.
fn connect_failure_cause(err: &io::Error) -> Cause {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
        io::ErrorKind::TimedOut => Cause::ConnectTimeout,
        _ => Cause::ConnectError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn test_connect_failure_causes() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(connect_failure_cause(&refused), Cause::ConnectRefused);
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(connect_failure_cause(&timeout), Cause::ConnectTimeout);
    }
}

//! Why a pair is not moving, in one plain sentence: a pure function of its [`PairView`] and its route's
//! [`Limits`], for `GET /connections/ID` (docs/admin.md lists every sentence and what it means).
//!
//! The sentence is made of clauses joined by `; `, most telling first:
//! - before forwarding, what the phase waits for and how long of how long: the greeting's bytes
//!   against its bound and the header timeout, the connect attempt against the route's attempts and
//!   connect timeout, or a CONNECT destination's lookup;
//! - once established, each direction holding bytes names its receiver as the one not reading, for
//!   how long, how much it holds and where, and whether the sender's reads are muted (backpressure);
//!   a half-closed pair says who sent its FIN and whether the other side still sends, against the fin
//!   timeout; a pair with none of that is idle, against the idle timeout.

use std::time::{Duration, Instant};

use log::debug;

use super::view::{Step, Watch};
use super::{Pair, PairView};
use crate::close::Cause;
use crate::datapath::stream::Socket;
use crate::upstream::route::{Deadlines, Route};

/// What the diagnosis measures a pair against: its route's timeouts and connect attempts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) deadlines: Deadlines,
    pub(crate) connect_attempts: usize,
}

impl Limits {
    pub(crate) fn of(route: &Route) -> Limits {
        Limits {
            deadlines: route.deadlines,
            connect_attempts: route.config.connect_attempts,
        }
    }
}

/// The sentence (see the module docs).
pub(crate) fn diagnose(view: &PairView, limits: &Limits) -> String {
    let deadlines = &limits.deadlines;
    match view.phase {
        Step::Greeting { what, read, bound } => format!(
            "greeting: {read} of up to {bound} bytes of a {what} read, {} of {} header timeout",
            seconds(view.age_ms),
            limit(deadlines.header)
        ),
        Step::Refusing => {
            String::from("refusing the client: writing its error status, then closing")
        }
        Step::Lookup { for_ms } => format!(
            "looking up the CONNECT destination, {} of {}",
            seconds(for_ms),
            limit(deadlines.connect)
        ),
        Step::Connecting { attempt: 0, for_ms } => format!(
            "waiting for the CONNECT destination's connect, {} of {}",
            seconds(for_ms),
            limit(deadlines.connect)
        ),
        Step::Connecting { attempt, for_ms } => format!(
            "waiting for upstream connect, attempt {attempt} of {}, {} of {}",
            limits.connect_attempts,
            seconds(for_ms),
            limit(deadlines.connect)
        ),
        Step::Established => established(view, deadlines).join("; "),
    }
}

/// Logs at debug level why a pair whose deadline passed (`cause`) was not moving, with its flight
/// recorder: the story of a timeout, without an admin request.
pub(crate) fn log_expiry<S: Socket>(pair: &Pair<S>, limits: &Limits, cause: Cause, now: Instant) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let events: Vec<String> = pair
        .events()
        .iter()
        .map(|event| format!("{:.1}ms {}", event.at_ms, event.event))
        .collect();
    debug!(
        "conn={} {cause}: {}; events: {}",
        pair.id,
        diagnose(&pair.view(now), limits),
        events.join(", ")
    );
}

/// One direction of an established pair, as the diagnosis names it.
struct Flow {
    /// Who sends it, who should read it.
    from: &'static str,
    to: &'static str,
    held: u64,
    still_ms: u64,
    buffer: &'static str,
    /// The sender's registration (muted reads are backpressure).
    from_watch: Watch,
    /// The sender's FIN has come.
    from_closed: bool,
}

fn established(view: &PairView, deadlines: &Deadlines) -> Vec<String> {
    let c2u = Flow {
        from: "client",
        to: "upstream",
        held: view.c2u_held,
        still_ms: view.c2u_still_ms,
        buffer: view.c2u_path.buffer(),
        from_watch: view.client_interest,
        from_closed: view.client_read_closed,
    };
    let u2c = Flow {
        from: "upstream",
        to: "client",
        held: view.u2c_held,
        still_ms: view.u2c_still_ms,
        buffer: view.u2c_path.buffer(),
        from_watch: view.upstream_interest,
        from_closed: view.upstream_read_closed,
    };
    let mut clauses: Vec<String> = [&c2u, &u2c].into_iter().filter_map(held).collect();
    match (c2u.from_closed, u2c.from_closed) {
        (true, true) => clauses.push(String::from("both sides half-closed; flushing")),
        (true, false) => clauses.push(half_closed(&c2u, &u2c, view.idle_ms, deadlines.fin)),
        (false, true) => clauses.push(half_closed(&u2c, &c2u, view.idle_ms, deadlines.fin)),
        (false, false) if clauses.is_empty() => clauses.push(idle(view.idle_ms, deadlines.idle)),
        (false, false) => {}
    }
    clauses
}

/// "upstream has not read for 12.4 s; 64 KiB held in upstream-bound ring; client reads muted
/// (backpressure)", for a flow holding bytes.
fn held(flow: &Flow) -> Option<String> {
    if flow.held == 0 {
        return None;
    }
    let mut clause = format!(
        "{} has not read for {}; {} held in {}-bound {}",
        flow.to,
        seconds(flow.still_ms),
        bytes(flow.held),
        flow.to,
        flow.buffer
    );
    if flow.from_watch.reads_muted() {
        clause.push_str(&format!("; {} reads muted (backpressure)", flow.from));
    }
    Some(clause)
}

/// "client half-closed 3.1 s ago; upstream still sending; idle 0.2 s of 60 s fin timeout": `closed`
/// sent its FIN, `open` has not. The FIN is as old as the closed flow's last move (reading it was that
/// move); the open side still sends if its flow moved since.
fn half_closed(closed: &Flow, open: &Flow, idle_ms: u64, fin: Duration) -> String {
    let sending = if open.still_ms < closed.still_ms {
        "still sending"
    } else {
        "silent since"
    };
    format!(
        "{} half-closed {} ago; {} {sending}; idle {} of {} fin timeout",
        closed.from,
        seconds(closed.still_ms),
        open.from,
        seconds(idle_ms),
        limit(fin)
    )
}

/// "idle for 40.0 s of 60 s idle timeout; nothing held".
fn idle(idle_ms: u64, timeout: Option<Duration>) -> String {
    match timeout {
        Some(timeout) => format!(
            "idle for {} of {} idle timeout; nothing held",
            seconds(idle_ms),
            limit(timeout)
        ),
        None => format!(
            "idle for {} (no idle timeout); nothing held",
            seconds(idle_ms)
        ),
    }
}

/// A measured time: "12.4 s".
fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// A configured time, as it would be written: "5 s", "2.5 s", "500 ms".
fn limit(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// "1 byte", "700 bytes", "64 KiB", "1.5 KiB", "2 MiB".
fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    let scaled = |unit: u64, name: &str| {
        if n % unit == 0 {
            format!("{} {name}", n / unit)
        } else {
            format!("{:.1} {name}", n as f64 / unit as f64)
        }
    };
    match n {
        1 => String::from("1 byte"),
        n if n < KIB => format!("{n} bytes"),
        n if n < MIB => scaled(KIB, "KiB"),
        _ => scaled(MIB, "MiB"),
    }
}

#[cfg(test)]
mod tests;

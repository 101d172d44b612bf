//! The flight recorder: the last [`CAPACITY`] things that happened to a pair (readiness edges, phase
//! changes, connect attempts, interest changes, faults, deadlines and the close), with when, so an
//! operator looking at a stuck pair sees how it got there (`GET /connections/ID`'s `events`).
//!
//! It is always on, so it must cost next to nothing: a fixed array of small `Copy` entries inside the
//! pair (8 bytes each, 256 bytes in all), written in place, oldest overwritten first. Nothing is
//! allocated, formatted or logged when an entry is written; words are made only when someone asks
//! ([`Recorder::events`]). An entry's time is the offset from the pair's accept in whole milliseconds
//! (`u32`: 49.7 days, after which it saturates) plus 1/256ths of a millisecond (~4 µs). Offsets are kept
//! monotonic: a caller's `now` older than the last entry's (a loop's `now` taken before the pair was
//! made) is recorded at the last entry's time.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use super::phase::Phase;
use crate::close::Cause;
use crate::datapath::readiness::Event;
use crate::session::interest::Registration;
use crate::token::Side;

/// How many entries a pair keeps.
pub(crate) const CAPACITY: usize = 32;

/// What happened. Each payload is a byte or two, so an entry stays 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Happening {
    /// The pair was made, in this phase (a greeting, or an upstream connect already started).
    Accepted(Phase),
    /// A readiness event from the poller on one socket.
    Edge(Side, Edge),
    /// A phase change (`Pair::set_stage`).
    Stage(Phase, Phase),
    /// An upstream connect attempt started (its number among the route's upstreams; 0 for a CONNECT
    /// destination's address).
    Attempt(u8),
    /// A CONNECT destination's name is being looked up.
    Lookup,
    /// A socket's registration changed ([`crate::session::interest`]).
    Interest(Side, Change),
    /// A read or write on this socket failed: the pair resets both.
    Fault(Side),
    /// The pair's deadline passed, meaning this.
    Expired(Cause),
    /// The upstream connect failed with this (`session::connect` retries or gives up).
    ConnectFailed(Cause),
    /// The pair asked the reactor to close it, for this.
    Closing(Cause),
}

/// The flags of a readiness event, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edge(u8);

impl Edge {
    const NAMES: [&'static str; 5] = [
        "readable",
        "writable",
        "read-closed",
        "write-closed",
        "error",
    ];
}

impl From<Event> for Edge {
    fn from(event: Event) -> Edge {
        let bits = [
            event.readable,
            event.writable,
            event.read_closed,
            event.write_closed,
            event.error,
        ];
        Edge(
            bits.iter()
                .enumerate()
                .fold(0, |acc, (i, &set)| acc | (u8::from(set) << i)),
        )
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Edge::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, name)| *name);
        match names.next() {
            Some(first) => f.write_str(first)?,
            None => return f.write_str("no flags"),
        }
        names.try_for_each(|name| write!(f, "+{name}"))
    }
}

/// A socket's registration before and after a change, as four bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change(u8);

impl Change {
    pub(crate) fn new(before: Registration, after: Registration) -> Change {
        let bits = [before.reads, before.writes, after.reads, after.writes];
        Change(
            bits.iter()
                .enumerate()
                .fold(0, |acc, (i, &set)| acc | (u8::from(set) << i)),
        )
    }

    fn bit(self, i: u8) -> bool {
        self.0 & (1 << i) != 0
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (reads, writes) = ((self.bit(0), self.bit(2)), (self.bit(1), self.bit(3)));
        let words = [
            match reads {
                (true, false) => Some("reads muted"),
                (false, true) => Some("reads unmuted"),
                _ => None,
            },
            match writes {
                (true, false) => Some("writes dropped"),
                (false, true) => Some("writes re-armed"),
                _ => None,
            },
        ];
        let mut words = words.into_iter().flatten();
        match words.next() {
            Some(first) => f.write_str(first)?,
            None => return f.write_str("registration unchanged"),
        }
        words.try_for_each(|word| write!(f, ", {word}"))
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Upstream => "upstream",
    }
}

impl fmt::Display for Happening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Happening::Accepted(phase) => write!(f, "accepted ({})", phase.name()),
            Happening::Edge(side, edge) => write!(f, "{} {edge}", side_name(side)),
            Happening::Stage(from, to) => write!(f, "{} => {}", from.name(), to.name()),
            Happening::Attempt(0) => f.write_str("connect started to the CONNECT destination"),
            Happening::Attempt(n) => write!(f, "connect attempt {n} started"),
            Happening::Lookup => f.write_str("looking up the CONNECT destination"),
            Happening::Interest(side, change) => write!(f, "{} {change}", side_name(side)),
            Happening::Fault(side) => write!(f, "{} socket failed", side_name(side)),
            Happening::Expired(cause) => write!(f, "deadline passed: {cause}"),
            Happening::ConnectFailed(cause) => write!(f, "connect failed: {cause}"),
            Happening::Closing(cause) => write!(f, "closing: {cause}"),
        }
    }
}

/// When, as an offset from the accept: whole milliseconds, and 1/256ths of the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Stamp {
    ms: u32,
    frac: u8,
}

impl Stamp {
    fn since(started: Instant, now: Instant) -> Stamp {
        let offset = now.saturating_duration_since(started);
        let ms = u32::try_from(offset.as_millis()).unwrap_or(u32::MAX);
        let within = offset.subsec_nanos() % 1_000_000;
        // < 256 since within < 1_000_000.
        let frac = (u64::from(within) * 256 / 1_000_000) as u8;
        Stamp { ms, frac }
    }

    /// In milliseconds, rounded to the microsecond (the JSON need not show 1/256ths).
    fn millis(self) -> f64 {
        let exact = f64::from(self.ms) + f64::from(self.frac) / 256.0;
        (exact * 1000.0).round() / 1000.0
    }
}

/// One recorded happening. The stamp's two fields are inline: a `Stamp` field would be padded to 8
/// bytes, and the entry to 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    ms: u32,
    frac: u8,
    what: Happening,
}

impl Entry {
    fn new(at: Stamp, what: Happening) -> Entry {
        Entry {
            ms: at.ms,
            frac: at.frac,
            what,
        }
    }

    fn at(&self) -> Stamp {
        Stamp {
            ms: self.ms,
            frac: self.frac,
        }
    }
}

/// One entry in words, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct EventView {
    /// Milliseconds since the pair was accepted, to ~4 µs.
    pub(crate) at_ms: f64,
    pub(crate) event: String,
}

/// The last [`CAPACITY`] happenings of one pair (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    entries: [Entry; CAPACITY],
    /// Where the next entry goes.
    next: u8,
    /// How many entries are in use (at most [`CAPACITY`]).
    len: u8,
}

impl Recorder {
    /// A recorder whose first entry is the pair's accept.
    pub(crate) fn new(phase: Phase) -> Recorder {
        let first = Entry::new(Stamp::default(), Happening::Accepted(phase));
        Recorder {
            entries: [first; CAPACITY],
            next: 1,
            len: 1,
        }
    }

    /// Records `what` at `now` (`started` is the pair's accept).
    pub(crate) fn record(&mut self, started: Instant, now: Instant, what: Happening) {
        let at = Stamp::since(started, now).max(self.last().at());
        self.push(Entry::new(at, what));
    }

    /// Records `what` at the time of the latest entry: for what follows a run in the same turn of the
    /// loop (the reactor registers a socket right after the run that asked for it).
    pub(crate) fn record_after(&mut self, what: Happening) {
        let at = self.last().at();
        self.push(Entry::new(at, what));
    }

    fn push(&mut self, entry: Entry) {
        self.entries[usize::from(self.next)] = entry;
        self.next = (self.next + 1) % CAPACITY as u8;
        self.len = (self.len + 1).min(CAPACITY as u8);
    }

    fn last(&self) -> Entry {
        let last = (usize::from(self.next) + CAPACITY - 1) % CAPACITY;
        self.entries[last]
    }

    /// The entries, oldest first.
    fn entries(&self) -> impl Iterator<Item = &Entry> {
        let len = usize::from(self.len);
        let oldest = (usize::from(self.next) + CAPACITY - len) % CAPACITY;
        (0..len).map(move |i| &self.entries[(oldest + i) % CAPACITY])
    }

    /// The happenings, oldest first.
    #[cfg(test)]
    pub(crate) fn happenings(&self) -> impl Iterator<Item = Happening> + '_ {
        self.entries().map(|entry| entry.what)
    }

    /// The entries in words, oldest first.
    pub(crate) fn events(&self) -> Vec<EventView> {
        self.entries()
            .map(|entry| EventView {
                at_ms: entry.at().millis(),
                event: entry.what.to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

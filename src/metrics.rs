//! What the reactor did, in plain integers: no locks, no atomics, because one thread owns them all.
//!
//! The counters are the raw material of docs/epoll.md: how many `epoll_wait` calls, how many events each
//! returned, how many reads ended in WouldBlock versus a full ring versus EOF, how many bytes a syscall
//! moved. They are exported in the Prometheus text format ([`Metrics::render`]) by the `--metrics`
//! responder and summarised by `--stats-interval`.

use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::pair::Cause;
use crate::proxy_protocol::Reason;

/// A histogram with power-of-two upper bounds: 1, 2, 4, ... 2^(BUCKETS-2), then +Inf.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: [u64; Histogram::BUCKETS],
    sum: u64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: [0; Histogram::BUCKETS],
            sum: 0,
            count: 0,
        }
    }
}

impl Histogram {
    const BUCKETS: usize = 22;

    /// Counts one observation.
    pub fn record(&mut self, value: u64) {
        // Bucket i holds values in (2^(i-1), 2^i]; bucket 0 holds 0 and 1.
        let bucket = if value <= 1 {
            0
        } else {
            (u64::BITS - (value - 1).leading_zeros()) as usize
        };
        self.buckets[bucket.min(Self::BUCKETS - 1)] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Adds another histogram's observations to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count;
            if i == Self::BUCKETS - 1 {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            } else {
                let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", 1u64 << i);
            }
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

/// Which way bytes flow, as an index into per-direction counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    ClientToUpstream = 0,
    UpstreamToClient = 1,
}

impl Way {
    /// The short name used in logs and labels.
    pub fn label(self) -> &'static str {
        match self {
            Way::ClientToUpstream => "c2u",
            Way::UpstreamToClient => "u2c",
        }
    }
}

/// Syscall-level counters, updated by the pumps.
#[derive(Debug, Default, Clone)]
pub struct IoStats {
    /// read/readv calls.
    pub reads: u64,
    /// Reads that returned WouldBlock (the kernel queue was already empty).
    pub reads_would_block: u64,
    /// Reads that returned 0 (FIN).
    pub reads_eof: u64,
    /// Pump runs that ended with a readable socket left unread because the ring (or pipe) was full:
    /// backpressure stalls.
    pub reads_ring_full: u64,
    /// Reads that returned less than the room offered: the kernel queue was emptied, the usual way a
    /// read loop ends without a WouldBlock.
    pub reads_short: u64,
    /// write/writev calls.
    pub writes: u64,
    /// Writes that returned WouldBlock.
    pub writes_would_block: u64,
    /// Writes that took fewer bytes than offered (the send buffer filled).
    pub writes_short: u64,
    /// Bytes forwarded, by [`Way`].
    pub bytes: [u64; 2],
    /// Bytes per successful read.
    pub read_sizes: Histogram,
    /// Bytes per successful write.
    pub write_sizes: Histogram,
}

impl IoStats {
    /// Adds another reactor's counters to these.
    pub fn merge(&mut self, other: &IoStats) {
        self.reads += other.reads;
        self.reads_would_block += other.reads_would_block;
        self.reads_eof += other.reads_eof;
        self.reads_ring_full += other.reads_ring_full;
        self.reads_short += other.reads_short;
        self.writes += other.writes;
        self.writes_would_block += other.writes_would_block;
        self.writes_short += other.writes_short;
        self.bytes[0] += other.bytes[0];
        self.bytes[1] += other.bytes[1];
        self.read_sizes.merge(&other.read_sizes);
        self.write_sizes.merge(&other.write_sizes);
    }
}

/// Every counter the reactor keeps.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub io: IoStats,
    /// `epoll_wait` (or kevent) calls that returned.
    pub polls: u64,
    /// Events they returned.
    pub events: u64,
    /// Events returned per `epoll_wait`.
    pub events_per_poll: Histogram,
    /// Loop turns that moved no byte and changed no state (woken for nothing).
    pub spurious_wakeups: u64,
    /// Connections accepted.
    pub accepts: u64,
    /// Times accepting stopped at `--max-connections` with clients still queued.
    pub accept_pauses_limit: u64,
    /// Times accepting paused after EMFILE/ENFILE/ENOBUFS/ENOMEM.
    pub accept_pauses_exhausted: u64,
    /// Upstream connects that completed.
    pub connects_ok: u64,
    /// Answers from the lookup threads for CONNECT destinations named by host (addresses and failures).
    pub lookups: u64,
    /// Pairs opened since start.
    pub pairs_total: u64,
    /// Failed upstream connects followed by another try: a route's next upstream, or a CONNECT
    /// destination's next address.
    pub failovers: u64,
    /// Pairs closed, by [`Cause`] (connect failures are counted here too).
    pub closes: [u64; Cause::ALL.len()],
    /// Clients closed over their PROXY header (`--accept-proxy`), by [`Reason`]: refused by the parser,
    /// timed out, or gone before it ended.
    pub proxy_header_rejects: [u64; Reason::ALL.len()],
    /// Pair runs that used up their byte budget with work left and were re-queued.
    pub budget_yields: u64,
    /// Pair runs stopped by the loop guard (a bug if ever non-zero).
    pub loop_guard_trips: u64,
    /// Metrics scrapes answered or abandoned.
    pub scrapes: u64,
    /// SIGHUP reloads applied.
    pub reloads_ok: u64,
    /// SIGHUP reloads rejected (the file was invalid or a new listener could not bind).
    pub reloads_rejected: u64,
    /// Directions that wanted to splice but fell back to the ring for good (splice refused).
    pub splice_fallbacks: u64,
    /// Times a socket was registered without read interest because the direction reading it was blocked
    /// (backpressure): EPOLLIN edges would only have woken the loop for nothing.
    pub read_pauses: u64,
    /// Times a muted socket was registered for reads again, a read having found it drained. Pauses minus
    /// resumes is how many sockets are muted now, or were when their pair closed.
    pub read_resumes: u64,
    /// Times a socket known to be writable was registered without write interest, a redundant EPOLLOUT
    /// edge having woken the loop for nothing.
    pub write_drops: u64,
    /// Times such a socket was registered for writes again, a write having found it full.
    pub write_rearms: u64,
    /// Times a direction wanted a pipe and none was to be had (the route's pipe limit, EMFILE); it
    /// carried on through its ring.
    pub pipe_shortages: u64,
    /// Directions that `--splice auto` moved from the ring to a pipe (a read filled the ring).
    pub splice_switches: u64,
    /// Clients given a `--prewarm` connection.
    pub warm_hits: u64,
    /// Clients that found the warm pool empty and waited for a connect.
    pub warm_misses: u64,
}

/// What `/metrics` shows of one endpoint (or one unresolved upstream) of one route.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamRow<'a> {
    pub route: &'a str,
    pub upstream: &'a str,
    pub up: bool,
    pub active: usize,
    pub connect_failures: u64,
}

/// The per-upstream series, labelled `route` and `upstream`.
pub fn render_upstreams<'a>(rows: impl Iterator<Item = UpstreamRow<'a>> + Clone, out: &mut String) {
    type Field = fn(&UpstreamRow<'_>) -> u64;
    let series: [(&str, &str, &str, Field); 3] = [
        (
            "edgefwd_upstream_up",
            "gauge",
            "1 if the upstream endpoint (an address of it) is up, 0 if health checking marked it down or its name does not resolve",
            |row| u64::from(row.up),
        ),
        (
            "edgefwd_upstream_active",
            "gauge",
            "connections open or connecting to the upstream endpoint",
            |row| row.active as u64,
        ),
        (
            "edgefwd_upstream_connect_failures_total",
            "counter",
            "connects and probes to the upstream endpoint that failed",
            |row| row.connect_failures,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for row in rows.clone() {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",upstream=\"{}\"}} {}",
                escape_label(row.route),
                escape_label(row.upstream),
                value(&row)
            );
        }
    }
}

/// Escapes a label value as the exposition format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Adds another reactor's counters to these (`--threads`: one exposition for all reactors).
    pub fn merge(&mut self, other: &Metrics) {
        self.io.merge(&other.io);
        self.polls += other.polls;
        self.events += other.events;
        self.events_per_poll.merge(&other.events_per_poll);
        self.spurious_wakeups += other.spurious_wakeups;
        self.accepts += other.accepts;
        self.accept_pauses_limit += other.accept_pauses_limit;
        self.accept_pauses_exhausted += other.accept_pauses_exhausted;
        self.connects_ok += other.connects_ok;
        self.lookups += other.lookups;
        self.pairs_total += other.pairs_total;
        for (mine, theirs) in self.closes.iter_mut().zip(other.closes) {
            *mine += theirs;
        }
        for (mine, theirs) in self
            .proxy_header_rejects
            .iter_mut()
            .zip(other.proxy_header_rejects)
        {
            *mine += theirs;
        }
        self.budget_yields += other.budget_yields;
        self.read_pauses += other.read_pauses;
        self.read_resumes += other.read_resumes;
        self.write_drops += other.write_drops;
        self.write_rearms += other.write_rearms;
        self.loop_guard_trips += other.loop_guard_trips;
        self.scrapes += other.scrapes;
        self.splice_fallbacks += other.splice_fallbacks;
        self.pipe_shortages += other.pipe_shortages;
        self.splice_switches += other.splice_switches;
        self.warm_hits += other.warm_hits;
        self.warm_misses += other.warm_misses;
        self.reloads_ok += other.reloads_ok;
        self.reloads_rejected += other.reloads_rejected;
        self.failovers += other.failovers;
    }

    /// A figure that changes whenever the reactor did something useful; equal before and after a turn
    /// means the turn was spurious.
    pub fn work_done(&self) -> u64 {
        self.io.bytes[0]
            + self.io.bytes[1]
            + self.io.read_sizes.sum()
            + self.io.reads_eof
            + self.accepts
            + self.connects_ok
            + self.lookups
            + self.scrapes
            + self.closes.iter().sum::<u64>()
    }

    /// Pairs closed for `cause`.
    pub fn closed(&self, cause: Cause) -> u64 {
        self.closes[cause as usize]
    }

    /// Clients closed over their PROXY header for `reason`.
    pub fn proxy_header_rejected(&self, reason: Reason) -> u64 {
        self.proxy_header_rejects[reason as usize]
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter.
    pub fn render(&self, pairs_open: usize, out: &mut String) {
        let counters: [(&str, &str, u64); 30] = [
            ("polls", "epoll_wait calls", self.polls),
            (
                "events",
                "readiness events returned by epoll_wait",
                self.events,
            ),
            (
                "spurious_wakeups",
                "loop turns that found nothing to do",
                self.spurious_wakeups,
            ),
            ("reads", "read syscalls", self.io.reads),
            (
                "reads_would_block",
                "reads that returned WouldBlock",
                self.io.reads_would_block,
            ),
            ("reads_eof", "reads that returned EOF", self.io.reads_eof),
            (
                "reads_ring_full",
                "pump runs stalled on a full ring with the socket still readable",
                self.io.reads_ring_full,
            ),
            (
                "reads_short",
                "reads that returned less than the room offered (queue drained)",
                self.io.reads_short,
            ),
            ("writes", "write syscalls", self.io.writes),
            (
                "writes_would_block",
                "writes that returned WouldBlock",
                self.io.writes_would_block,
            ),
            (
                "writes_short",
                "writes that took fewer bytes than offered",
                self.io.writes_short,
            ),
            ("accepts", "connections accepted", self.accepts),
            (
                "accept_pauses_limit",
                "accepting stopped at --max-connections",
                self.accept_pauses_limit,
            ),
            (
                "accept_pauses_exhausted",
                "accepting paused after EMFILE/ENFILE",
                self.accept_pauses_exhausted,
            ),
            (
                "connects_ok",
                "upstream connects that completed",
                self.connects_ok,
            ),
            (
                "lookups",
                "answers from the CONNECT lookup threads (failures and skipped names included)",
                self.lookups,
            ),
            ("pairs", "connection pairs opened", self.pairs_total),
            (
                "failovers",
                "failed upstream connects retried on another upstream, or on another address of a CONNECT destination",
                self.failovers,
            ),
            (
                "budget_yields",
                "pair runs re-queued after using their byte budget",
                self.budget_yields,
            ),
            (
                "loop_guard_trips",
                "pair runs stopped by the loop guard",
                self.loop_guard_trips,
            ),
            ("scrapes", "metrics scrapes served", self.scrapes),
            (
                "read_pauses",
                "times a blocked direction stopped read events on its socket (backpressure)",
                self.read_pauses,
            ),
            (
                "read_resumes",
                "times a muted socket was registered for reads again (a read found it drained)",
                self.read_resumes,
            ),
            (
                "write_drops",
                "times a writable socket stopped write events after a redundant EPOLLOUT edge",
                self.write_drops,
            ),
            (
                "write_rearms",
                "times a socket was registered for writes again (a write found it full)",
                self.write_rearms,
            ),
            (
                "splice_fallbacks",
                "directions that fell back from splice to the ring for good",
                self.splice_fallbacks,
            ),
            (
                "pipe_shortages",
                "times a direction found no pipe (pipe limit, EMFILE) and used its ring",
                self.pipe_shortages,
            ),
            (
                "splice_switches",
                "directions --splice auto moved from the ring to a pipe",
                self.splice_switches,
            ),
            (
                "warm_hits",
                "clients given a prewarmed upstream connection",
                self.warm_hits,
            ),
            (
                "warm_misses",
                "clients that found the prewarm pool empty",
                self.warm_misses,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP edgefwd_{name}_total {help}\n# TYPE edgefwd_{name}_total counter\nedgefwd_{name}_total {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgefwd_bytes_total bytes forwarded\n# TYPE edgefwd_bytes_total counter"
        );
        for way in [Way::ClientToUpstream, Way::UpstreamToClient] {
            let _ = writeln!(
                out,
                "edgefwd_bytes_total{{direction=\"{}\"}} {}",
                way.label(),
                self.io.bytes[way as usize]
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgefwd_closes_total connection pairs closed, by cause\n# TYPE edgefwd_closes_total counter"
        );
        for cause in Cause::ALL {
            let _ = writeln!(
                out,
                "edgefwd_closes_total{{cause=\"{cause}\"}} {}",
                self.closed(cause)
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgefwd_proxy_header_rejected_total clients closed over their PROXY header (--accept-proxy), by reason\n# TYPE edgefwd_proxy_header_rejected_total counter"
        );
        for reason in Reason::ALL {
            let _ = writeln!(
                out,
                "edgefwd_proxy_header_rejected_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.proxy_header_rejected(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP edgefwd_reloads_total SIGHUP reloads, by result\n# TYPE edgefwd_reloads_total counter\nedgefwd_reloads_total{{result=\"ok\"}} {}\nedgefwd_reloads_total{{result=\"rejected\"}} {}",
            self.reloads_ok, self.reloads_rejected
        );
        let _ = writeln!(
            out,
            "# HELP edgefwd_pairs_open connection pairs open now\n# TYPE edgefwd_pairs_open gauge\nedgefwd_pairs_open {pairs_open}"
        );
        self.events_per_poll.render(
            out,
            "edgefwd_events_per_poll",
            "events returned by one epoll_wait",
        );
        self.io
            .read_sizes
            .render(out, "edgefwd_read_bytes", "bytes moved by one read syscall");
        self.io.write_sizes.render(
            out,
            "edgefwd_write_bytes",
            "bytes moved by one write syscall",
        );
    }
}

/// Where the reactors of `--threads N` publish their counters for the one that serves `--metrics`.
///
/// Each reactor copies its counters into its own slot at the end of every loop turn (an uncontended
/// lock and a memcpy of a few hundred bytes, next to a syscall); the serving reactor sums the slots.
/// Nothing is shared on the hot path itself.
#[derive(Debug)]
pub struct MetricsBoard {
    slots: Vec<Mutex<(Metrics, usize)>>,
}

impl MetricsBoard {
    /// A board for `reactors` reactors.
    pub fn new(reactors: usize) -> MetricsBoard {
        MetricsBoard {
            slots: (0..reactors)
                .map(|_| Mutex::new((Metrics::default(), 0)))
                .collect(),
        }
    }

    /// Reactor `index` publishes its counters and open pair count.
    pub fn publish(&self, index: usize, metrics: &Metrics, pairs_open: usize) {
        if let Some(slot) = self.slots.get(index) {
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.0.clone_from(metrics);
            slot.1 = pairs_open;
        }
    }

    /// The sum over every reactor, and the total of open pairs.
    pub fn total(&self) -> (Metrics, usize) {
        let mut total = Metrics::default();
        let mut open = 0;
        for slot in &self.slots {
            let slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            total.merge(&slot.0);
            open += slot.1;
        }
        (total, open)
    }
}

/// `--stats-interval`: one log line of deltas per interval.
#[derive(Debug)]
pub struct StatsTicker {
    interval: Duration,
    /// When the next line is due.
    pub next: Instant,
    /// The counters as of the last line.
    last: Metrics,
}

impl StatsTicker {
    pub fn new(interval: Duration, now: Instant) -> StatsTicker {
        StatsTicker {
            interval,
            next: now + interval,
            last: Metrics::default(),
        }
    }

    /// The line for the interval that ended at `now`, and the start of the next interval.
    pub fn report(
        &mut self,
        reactor: usize,
        current: &Metrics,
        pairs_open: usize,
        now: Instant,
    ) -> String {
        let (new, old) = (current, &self.last);
        let polls = new.polls - old.polls;
        let events = new.events - old.events;
        let per_poll = if polls == 0 {
            0.0
        } else {
            events as f64 / polls as f64
        };
        let line = format!(
            "stats: reactor={reactor} open={pairs_open} accepts=+{} closes=+{} polls=+{polls} events=+{events} events/poll={per_poll:.1} spurious=+{} reads=+{} writes=+{} c2u=+{} u2c=+{}",
            new.accepts - old.accepts,
            new.closes.iter().sum::<u64>() - old.closes.iter().sum::<u64>(),
            new.spurious_wakeups - old.spurious_wakeups,
            new.io.reads - old.io.reads,
            new.io.writes - old.io.writes,
            new.io.bytes[0] - old.io.bytes[0],
            new.io.bytes[1] - old.io.bytes[1],
        );
        self.last = current.clone();
        self.next = now + self.interval;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn that only brings CONNECT lookup answers did work: it is not a spurious wakeup.
    #[test]
    fn test_a_lookup_answer_is_work() {
        let mut metrics = Metrics::default();
        let before = metrics.work_done();
        metrics.lookups += 1;
        assert_ne!(metrics.work_done(), before);
    }

    #[test]
    fn test_histogram_buckets_are_power_of_two_upper_bounds() {
        let mut histogram = Histogram::default();
        for value in [0, 1, 2, 3, 4, 5, 1 << 40] {
            histogram.record(value);
        }
        assert_eq!(histogram.buckets[0], 2, "0 and 1");
        assert_eq!(histogram.buckets[1], 1, "2");
        assert_eq!(histogram.buckets[2], 2, "3 and 4");
        assert_eq!(histogram.buckets[3], 1, "5");
        assert_eq!(histogram.buckets[Histogram::BUCKETS - 1], 1, "overflow");
        assert_eq!(histogram.count(), 7);
    }

    #[test]
    fn test_board_sums_reactors() {
        let board = MetricsBoard::new(2);
        let mut one = Metrics {
            accepts: 3,
            ..Metrics::default()
        };
        one.io.read_sizes.record(100);
        let two = Metrics {
            accepts: 4,
            polls: 1,
            ..Metrics::default()
        };
        board.publish(0, &one, 5);
        board.publish(1, &two, 6);
        let (total, open) = board.total();
        assert_eq!((total.accepts, total.polls, open), (7, 1, 11));
        assert_eq!(total.io.read_sizes.sum(), 100);
        one.accepts = 10;
        board.publish(0, &one, 0);
        assert_eq!(board.total().0.accepts, 14, "a publish replaces, not adds");
    }

    #[test]
    fn test_stats_line_reports_deltas() {
        let start = Instant::now();
        let mut ticker = StatsTicker::new(Duration::from_secs(1), start);
        let mut metrics = Metrics {
            polls: 10,
            events: 25,
            ..Metrics::default()
        };
        metrics.io.bytes = [100, 7];
        let first = ticker.report(0, &metrics, 3, start + Duration::from_secs(1));
        assert!(
            first.contains("open=3 ") && first.contains("polls=+10 "),
            "{first}"
        );
        assert!(
            first.contains("events/poll=2.5 ") && first.contains("c2u=+100 "),
            "{first}"
        );
        metrics.polls = 12;
        let second = ticker.report(0, &metrics, 3, start + Duration::from_secs(2));
        assert!(
            second.contains("polls=+2 ") && second.contains("c2u=+0 "),
            "{second}"
        );
        assert_eq!(ticker.next, start + Duration::from_secs(3));
    }

    #[test]
    fn test_upstream_series_are_labelled() {
        let rows = [
            UpstreamRow {
                route: "web",
                upstream: "10.0.0.1:80",
                up: true,
                active: 2,
                connect_failures: 0,
            },
            UpstreamRow {
                route: "we\"b",
                upstream: "b:80",
                up: false,
                active: 0,
                connect_failures: 7,
            },
        ];
        let mut out = String::new();
        render_upstreams(rows.iter().copied(), &mut out);
        assert!(out.contains("edgefwd_upstream_up{route=\"web\",upstream=\"10.0.0.1:80\"} 1\n"));
        assert!(out.contains("edgefwd_upstream_active{route=\"web\",upstream=\"10.0.0.1:80\"} 2\n"));
        assert!(out.contains(
            "edgefwd_upstream_connect_failures_total{route=\"we\\\"b\",upstream=\"b:80\"} 7\n"
        ));
    }

    /// Every reason is a series from the start (0 until it happens), and `--threads` reactors add up.
    #[test]
    fn test_proxy_header_rejects_by_reason_merged() {
        let mut one = Metrics::default();
        one.proxy_header_rejects[Reason::TlvOverrun as usize] = 2;
        let mut other = Metrics::default();
        other.proxy_header_rejects[Reason::TlvOverrun as usize] = 3;
        other.proxy_header_rejects[Reason::Timeout as usize] = 1;
        one.merge(&other);
        let mut out = String::new();
        one.render(0, &mut out);
        let name = "edgefwd_proxy_header_rejected_total";
        assert!(out.contains(&format!("{name}{{reason=\"tlv-overrun\"}} 5\n")));
        assert!(out.contains(&format!("{name}{{reason=\"timeout\"}} 1\n")));
        assert!(out.contains(&format!("{name}{{reason=\"crc32c\"}} 0\n")));
        let series = out.lines().filter(|line| line.starts_with(name)).count();
        assert_eq!(series, Reason::ALL.len());
    }

    #[test]
    fn test_render_is_prometheus_text() {
        let mut metrics = Metrics {
            polls: 3,
            ..Metrics::default()
        };
        metrics.closes[Cause::UpstreamReset as usize] = 2;
        metrics.events_per_poll.record(5);
        let mut out = String::new();
        metrics.render(4, &mut out);
        assert!(out.contains("# TYPE edgefwd_polls_total counter\nedgefwd_polls_total 3\n"));
        assert!(out.contains("edgefwd_closes_total{cause=\"upstream-reset\"} 2\n"));
        assert!(out.contains("edgefwd_pairs_open 4\n"));
        assert!(out.contains("edgefwd_reloads_total{result=\"rejected\"} 0\n"));
        assert!(out.contains("edgefwd_events_per_poll_bucket{le=\"8\"} 1\n"));
        assert!(out.contains("edgefwd_events_per_poll_bucket{le=\"+Inf\"} 1\n"));
        for line in out.lines() {
            let ok = line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || line
                    .rsplit_once(' ')
                    .is_some_and(|(name, value)| !name.is_empty() && value.parse::<u64>().is_ok());
            assert!(ok, "not exposition format: {line}");
        }
    }
}

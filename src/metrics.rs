//! What the reactor did, in plain integers: no locks, no atomics, because one thread owns them all.
//!
//! The counters are the raw material of docs/epoll.md: how many `epoll_wait` calls, how many events each
//! returned, how many reads ended in WouldBlock versus a full ring versus EOF, how many bytes a syscall
//! moved. They are exported in the Prometheus text format ([`Metrics::render`]) by the `--metrics`
//! responder and summarised by `--stats-interval`.

use std::fmt::Write;
use std::time::{Duration, Instant};

use crate::pair::Cause;

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
    /// Times a direction stopped reading a readable socket because its ring was full (backpressure).
    pub reads_ring_full: u64,
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
    /// Pairs opened since start.
    pub pairs_total: u64,
    /// Pairs closed, by [`Cause`] (connect failures are counted here too).
    pub closes: [u64; Cause::ALL.len()],
    /// Pair runs that used up their byte budget with work left and were re-queued.
    pub budget_yields: u64,
    /// Pair runs stopped by the loop guard (a bug if ever non-zero).
    pub loop_guard_trips: u64,
    /// Metrics scrapes answered or abandoned.
    pub scrapes: u64,
    /// Directions that wanted to splice but fell back to the ring.
    pub splice_fallbacks: u64,
}

impl Metrics {
    /// A figure that changes whenever the reactor did something useful; equal before and after a turn
    /// means the turn was spurious.
    pub fn work_done(&self) -> u64 {
        self.io.bytes[0]
            + self.io.bytes[1]
            + self.io.reads_eof
            + self.accepts
            + self.connects_ok
            + self.scrapes
            + self.closes.iter().sum::<u64>()
    }

    /// Pairs closed for `cause`.
    pub fn closed(&self, cause: Cause) -> u64 {
        self.closes[cause as usize]
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter.
    pub fn render(&self, pairs_open: usize, out: &mut String) {
        let counters: [(&str, &str, u64); 19] = [
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
                "reads skipped because the ring was full",
                self.io.reads_ring_full,
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
            ("pairs", "connection pairs opened", self.pairs_total),
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
                "splice_fallbacks",
                "directions that fell back from splice to the ring",
                self.splice_fallbacks,
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
    pub fn report(&mut self, current: &Metrics, pairs_open: usize, now: Instant) -> String {
        let (new, old) = (current, &self.last);
        let polls = new.polls - old.polls;
        let events = new.events - old.events;
        let per_poll = if polls == 0 {
            0.0
        } else {
            events as f64 / polls as f64
        };
        let line = format!(
            "stats: open={pairs_open} accepts=+{} closes=+{} polls=+{polls} events=+{events} events/poll={per_poll:.1} spurious=+{} reads=+{} writes=+{} c2u=+{} u2c=+{}",
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
    fn test_stats_line_reports_deltas() {
        let start = Instant::now();
        let mut ticker = StatsTicker::new(Duration::from_secs(1), start);
        let mut metrics = Metrics {
            polls: 10,
            events: 25,
            ..Metrics::default()
        };
        metrics.io.bytes = [100, 7];
        let first = ticker.report(&metrics, 3, start + Duration::from_secs(1));
        assert!(
            first.contains("open=3 ") && first.contains("polls=+10 "),
            "{first}"
        );
        assert!(
            first.contains("events/poll=2.5 ") && first.contains("c2u=+100 "),
            "{first}"
        );
        metrics.polls = 12;
        let second = ticker.report(&metrics, 3, start + Duration::from_secs(2));
        assert!(
            second.contains("polls=+2 ") && second.contains("c2u=+0 "),
            "{second}"
        );
        assert_eq!(ticker.next, start + Duration::from_secs(3));
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

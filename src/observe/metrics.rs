//! What the reactor did, in plain integers: no locks, no atomics, because one thread owns them all.
//!
//! The counters are the raw material of docs/epoll.md: how many `epoll_wait` calls, how many events each
//! returned, how many reads ended in WouldBlock versus a full ring versus EOF, how many bytes a syscall
//! moved. They are exported in the Prometheus text format (`Metrics::render`) by the `--metrics`
//! responder and summarised by `--stats-interval`.
//!
//! # One declaration per metric
//!
//! Every metric is one row of the `metrics!` table below: its field, its kind, its Prometheus name and
//! help, and its key on the `--stats-interval` line if it has one. The `Metrics` struct, the merge of
//! `--threads` reactors, the exposition and the stats line are all generated from that table, so a metric
//! cannot be rendered and not merged (which would silently undercount with `--threads`). The kind is the
//! field's type, and the type says how reactors merge it (`Metric`, in `metric_kinds`); every kind today sums, because each
//! reactor counts only its own clients. The per-upstream rows (`render_upstreams`) are the exception:
//! they describe the routes, which every reactor holds alike, so they are reactor 0's view, not a sum.
//!
//! To add a metric: add a row (a doc comment, `field: Kind = "edgefwd_name", "help"`), count it where it
//! happens (`metrics.field += 1`), and add its lines to the pinned list in tests/metrics.rs.

use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::close::Cause;
use crate::observe::metric_kinds::{
    escape_label, family, ByLabel, ByRoute, ClientReject, Counter, Gauge, Histogram, Metric,
    Reload, SniReject, UdpDrop,
};
use crate::way::Way;
use crate::wire::proxy_protocol::Reason;
use crate::wire::sni::Via;

/// Declares the metrics: one row per metric, from which the [`Metrics`] struct, its merge, its Prometheus
/// rendering, its stats line (and, for tests, a filler of every field) are generated.
///
/// A row is `field: Kind = "prometheus_name", "help"`, optionally followed by `, line "key"` to put it on
/// the `--stats-interval` line (`"{label}"` as the key writes one entry per label value).
macro_rules! metrics {
    ($(
        $(#[$doc:meta])*
        $field:ident: $kind:ty = $name:literal, $help:literal $(, line $line:literal)?;
    )*) => {
        /// Every figure a reactor keeps: one field per row of the [`metrics!`] table.
        #[derive(Debug, Default, Clone)]
        pub(crate) struct Metrics {
            $($(#[$doc])* pub(crate) $field: $kind,)*
        }

        impl Metrics {
            /// Adds another reactor's figures to these (`--threads`: one exposition for all reactors).
            pub(super) fn merge(&mut self, other: &Metrics) {
                $(Metric::add(&mut self.$field, &other.$field);)*
            }

            /// The Prometheus text exposition (format 0.0.4) of every metric, in the table's order.
            pub(crate) fn render(&self, out: &mut String) {
                $(family(out, $name, $help, &self.$field);)*
            }

            /// The `--stats-interval` entries: the change since `last` (a gauge: its value now).
            fn line(&self, last: &Metrics, out: &mut String) {
                $($(Metric::line(&self.$field, &last.$field, $line, out);)?)*
            }

            /// Sets every figure of every metric to a distinct non-zero value, counting from `next`.
            #[cfg(test)]
            fn fill(&mut self, next: &mut u64) {
                $(Metric::fill(&mut self.$field, next);)*
            }
        }
    };
}

metrics! {
    // Clients and their pairs.
    /// Pairs open now; the reactor sets it before it publishes or renders.
    pairs_open: Gauge = "edgefwd_pairs_open", "connection pairs open now", line "open";
    /// Connections accepted.
    accepts: Counter = "edgefwd_accepts_total", "connections accepted", line "accepts";
    /// Times accepting stopped at `--max-connections` or at the process's fd budget with clients still
    /// queued.
    accept_pauses_limit: Counter = "edgefwd_accept_pauses_limit_total",
        "accepting stopped at --max-connections or the fd budget";
    /// Times accepting paused after EMFILE/ENFILE/ENOBUFS/ENOMEM.
    accept_pauses_exhausted: Counter = "edgefwd_accept_pauses_exhausted_total",
        "accepting paused after EMFILE/ENFILE";
    /// Pairs opened since start.
    pairs_total: Counter = "edgefwd_pairs_total", "connection pairs opened";
    /// Upstream connects that completed.
    connects_ok: Counter = "edgefwd_connects_ok_total", "upstream connects that completed";
    /// Failed upstream connects followed by another try: a route's next upstream, or a CONNECT
    /// destination's next address.
    failovers: Counter = "edgefwd_failovers_total",
        "failed upstream connects retried on another upstream, or on another address of a CONNECT destination";
    /// Answers from the lookup threads for CONNECT destinations named by host (addresses and failures).
    lookups: Counter = "edgefwd_lookups_total",
        "answers from the CONNECT lookup threads (failures and skipped names included)";
    /// Clients given a `--prewarm` connection.
    warm_hits: Counter = "edgefwd_warm_hits_total", "clients given a prewarmed upstream connection";
    /// Clients that found the warm pool empty and waited for a connect.
    warm_misses: Counter = "edgefwd_warm_misses_total", "clients that found the prewarm pool empty";
    /// Pairs closed, by [`Cause`] (connect failures are counted here too).
    closes: ByLabel<Cause> = "edgefwd_closes_total", "connection pairs closed, by cause",
        line "closes";
    /// Clients closed over their PROXY header (`--accept-proxy`), by [`Reason`]: refused by the parser,
    /// timed out, or gone before it ended.
    proxy_header_rejects: ByLabel<Reason> = "edgefwd_proxy_header_rejected_total",
        "clients closed over their PROXY header (--accept-proxy), by reason";
    /// Clients reset as they arrived, by route and [`ClientReject`]: `client_allow`/`client_deny`, a
    /// per-client limit, a full per-client table, or `queue_timeout`. A route's series appear with its
    /// first such client.
    client_rejects: ByRoute<ClientReject> = "edgefwd_client_rejects_total",
        "clients reset at arrival by client_allow/client_deny, a per-client limit or queue_timeout, by route and limit";
    /// Clients of an SNI listener routed by their ClientHello, by route and [`Via`] (by name, or as
    /// the default). A route's series appear with its first client.
    sni_routed: ByRoute<Via> = "edgefwd_sni_routed_total",
        "clients routed by the server name of their TLS ClientHello, by route and how (name or default)";
    /// Clients of an SNI listener closed before reaching a route, by [`SniReject`].
    sni_rejects: ByLabel<SniReject> = "edgefwd_sni_rejected_total",
        "clients of an SNI listener closed before a route took them, by reason";
    /// `--access-log` lines dropped: the writer thread's queue was full (a slow disk, a stalled pipe).
    access_log_dropped: Counter = "edgefwd_access_log_dropped_total",
        "access log lines dropped because the writer's queue was full";

    // The loop.
    /// `epoll_wait` (or kevent) calls that returned.
    polls: Counter = "edgefwd_polls_total", "epoll_wait calls", line "polls";
    /// Events they returned.
    events: Counter = "edgefwd_events_total", "readiness events returned by epoll_wait",
        line "events";
    /// Events returned per `epoll_wait`.
    events_per_poll: Histogram = "edgefwd_events_per_poll", "events returned by one epoll_wait",
        line "events/poll";
    /// Loop turns that moved no byte and changed no state (woken for nothing).
    spurious_wakeups: Counter = "edgefwd_spurious_wakeups_total",
        "loop turns that found nothing to do", line "spurious";
    /// Pair runs that used up their byte budget with work left and were re-queued.
    budget_yields: Counter = "edgefwd_budget_yields_total",
        "pair runs re-queued after using their byte budget";
    /// Pair runs stopped by the loop guard (a bug if ever non-zero).
    loop_guard_trips: Counter = "edgefwd_loop_guard_trips_total",
        "pair runs stopped by the loop guard";
    /// Times a socket was registered without read interest because the direction reading it was blocked
    /// (backpressure): EPOLLIN edges would only have woken the loop for nothing.
    read_pauses: Counter = "edgefwd_read_pauses_total",
        "times a blocked direction stopped read events on its socket (backpressure)";
    /// Times a muted socket was registered for reads again, a read having found it drained. Pauses minus
    /// resumes is how many sockets are muted now, or were when their pair closed.
    read_resumes: Counter = "edgefwd_read_resumes_total",
        "times a muted socket was registered for reads again (a read found it drained)";
    /// Times a socket known to be writable was registered without write interest, a redundant EPOLLOUT
    /// edge having woken the loop for nothing.
    write_drops: Counter = "edgefwd_write_drops_total",
        "times a writable socket stopped write events after a redundant EPOLLOUT edge";
    /// Times such a socket was registered for writes again: a write found it full, or its reads were
    /// muted (backpressure), and a socket is never registered for neither.
    write_rearms: Counter = "edgefwd_write_rearms_total",
        "times a socket was registered for writes again (a write found it full, or its reads were muted)";
    /// Metrics scrapes answered or abandoned.
    scrapes: Counter = "edgefwd_scrapes_total", "metrics scrapes served";
    /// SIGHUP reloads, applied or rejected (the file was invalid or a new listener could not bind).
    reloads: ByLabel<Reload> = "edgefwd_reloads_total", "SIGHUP reloads, by result";

    // Syscalls, counted by the pumps.
    /// read/readv calls.
    reads: Counter = "edgefwd_reads_total", "read syscalls", line "reads";
    /// Reads that returned WouldBlock (the kernel queue was already empty).
    reads_would_block: Counter = "edgefwd_reads_would_block_total", "reads that returned WouldBlock";
    /// Reads that returned 0 (FIN).
    reads_eof: Counter = "edgefwd_reads_eof_total", "reads that returned EOF";
    /// Pump runs that ended with a readable socket left unread because the ring (or pipe) was full:
    /// backpressure stalls.
    reads_ring_full: Counter = "edgefwd_reads_ring_full_total",
        "pump runs stalled on a full ring with the socket still readable";
    /// Reads that returned less than the room offered: the kernel queue was emptied, the usual way a
    /// read loop ends without a WouldBlock.
    reads_short: Counter = "edgefwd_reads_short_total",
        "reads that returned less than the room offered (queue drained)";
    /// write/writev calls.
    writes: Counter = "edgefwd_writes_total", "write syscalls", line "writes";
    /// Writes that returned WouldBlock.
    writes_would_block: Counter = "edgefwd_writes_would_block_total",
        "writes that returned WouldBlock";
    /// Writes that took fewer bytes than offered (the send buffer filled).
    writes_short: Counter = "edgefwd_writes_short_total", "writes that took fewer bytes than offered";
    /// Bytes forwarded, by [`Way`].
    bytes: ByLabel<Way> = "edgefwd_bytes_total", "bytes forwarded", line "{label}";
    /// Bytes per successful read.
    read_sizes: Histogram = "edgefwd_read_bytes", "bytes moved by one read syscall";
    /// Bytes per successful write.
    write_sizes: Histogram = "edgefwd_write_bytes", "bytes moved by one write syscall";
    /// Directions that wanted to splice but fell back to the ring for good (splice refused).
    splice_fallbacks: Counter = "edgefwd_splice_fallbacks_total",
        "directions that fell back from splice to the ring for good";
    /// Times a direction wanted a pipe and none was to be had (no slot in the fd budget, EMFILE); it
    /// carried on through its ring.
    pipe_shortages: Counter = "edgefwd_pipe_shortages_total",
        "times a direction found no pipe (fd budget, EMFILE) and used its ring";
    /// Directions that `--splice auto` moved from the ring to a pipe (a read filled the ring).
    splice_switches: Counter = "edgefwd_splice_switches_total",
        "directions --splice auto moved from the ring to a pipe";

    // UDP routes (docs/udp.md).
    /// UDP sessions open now; the reactor sets it before it publishes or renders.
    udp_sessions_open: Gauge = "edgefwd_udp_sessions_open", "UDP sessions open now";
    /// UDP sessions opened: a datagram from a client address with none.
    udp_sessions_created: Counter = "edgefwd_udp_sessions_created_total",
        "UDP sessions opened (a datagram from a new client address)";
    /// UDP sessions closed to make room at `udp_max_sessions` (the least recently used).
    udp_sessions_evicted: Counter = "edgefwd_udp_sessions_evicted_total",
        "UDP sessions closed for a new one at udp_max_sessions (least recently used first)";
    /// UDP sessions closed after `udp_idle_timeout` without a datagram either way.
    udp_sessions_expired: Counter = "edgefwd_udp_sessions_expired_total",
        "UDP sessions closed after udp_idle_timeout without a datagram";
    /// UDP datagrams forwarded, by [`Way`].
    udp_datagrams: ByLabel<Way> = "edgefwd_udp_datagrams_total", "UDP datagrams forwarded";
    /// UDP payload bytes forwarded, by [`Way`].
    udp_bytes: ByLabel<Way> = "edgefwd_udp_bytes_total", "UDP payload bytes forwarded";
    /// UDP datagrams dropped, by [`UdpDrop`].
    udp_drops: ByLabel<UdpDrop> = "edgefwd_udp_drops_total", "UDP datagrams dropped, by cause";
}

impl Metrics {
    /// A figure that changes whenever the reactor did something useful; equal before and after a turn
    /// means the turn was spurious.
    pub(crate) fn work_done(&self) -> u64 {
        self.bytes.total()
            + self.read_sizes.sum()
            + self.reads_eof
            + self.accepts
            + self.connects_ok
            + self.lookups
            + self.scrapes
            + self.closes.total()
            + self.udp_datagrams.total()
            + self.udp_drops.total()
    }
}

/// What `/metrics` shows of one endpoint (or one unresolved upstream) of one route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamRow<'a> {
    pub(crate) route: &'a str,
    pub(crate) upstream: &'a str,
    pub(crate) up: bool,
    pub(crate) active: usize,
    pub(crate) connect_failures: u64,
}

/// The per-upstream series, labelled `route` and `upstream`, one row of the table below per metric. They
/// are read from the routes when a scrape is answered, not counted: with `--threads` they are reactor 0's
/// view of health and load (every reactor holds the same routes), never a sum.
pub(crate) fn render_upstreams<'a>(
    rows: impl Iterator<Item = UpstreamRow<'a>> + Clone,
    out: &mut String,
) {
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

/// Where the reactors of `--threads N` publish their counters for the one that serves `--metrics`.
///
/// Each reactor copies its counters into its own slot at the end of every loop turn (an uncontended
/// lock and a memcpy of a few hundred bytes, next to a syscall); the serving reactor sums the slots.
/// Nothing is shared on the hot path itself.
#[derive(Debug)]
pub struct MetricsBoard {
    slots: Vec<Mutex<Metrics>>,
}

impl MetricsBoard {
    /// A board for `reactors` reactors.
    pub fn new(reactors: usize) -> MetricsBoard {
        MetricsBoard {
            slots: (0..reactors)
                .map(|_| Mutex::new(Metrics::default()))
                .collect(),
        }
    }

    /// Reactor `index` publishes its counters (its open pairs set in them).
    pub(crate) fn publish(&self, index: usize, metrics: &Metrics) {
        if let Some(slot) = self.slots.get(index) {
            slot.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone_from(metrics);
        }
    }

    /// The pairs open in every reactor, as last published: what `total` would say, without copying
    /// every counter (`Type=notify` asks after every turn of reactor 0).
    pub(crate) fn pairs_open(&self) -> u64 {
        self.slots
            .iter()
            .map(|slot| {
                slot.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pairs_open
                    .get()
            })
            .sum()
    }

    /// The sum over every reactor.
    pub(crate) fn total(&self) -> Metrics {
        let mut total = Metrics::default();
        for slot in &self.slots {
            total.merge(&slot.lock().unwrap_or_else(PoisonError::into_inner));
        }
        total
    }
}

/// `--stats-interval`: one log line of deltas per interval.
#[derive(Debug)]
pub(crate) struct StatsTicker {
    interval: Duration,
    /// When the next line is due.
    pub(crate) next: Instant,
    /// The counters as of the last line.
    last: Metrics,
}

impl StatsTicker {
    pub(crate) fn new(interval: Duration, now: Instant) -> StatsTicker {
        StatsTicker {
            interval,
            next: now + interval,
            last: Metrics::default(),
        }
    }

    /// The line for the interval that ended at `now` (the metrics with a `line` key in the table, in its
    /// order), and the start of the next interval.
    pub(crate) fn report(&mut self, reactor: usize, current: &Metrics, now: Instant) -> String {
        let mut line = format!("stats: reactor={reactor}");
        current.line(&self.last, &mut line);
        self.last.clone_from(current);
        self.next = now + self.interval;
        line
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A turn that only brings CONNECT lookup answers did work: it is not a spurious wakeup.
    #[test]
    fn test_a_lookup_answer_is_work() {
        let mut metrics = Metrics::default();
        let before = metrics.work_done();
        metrics.lookups += 1;
        assert_ne!(metrics.work_done(), before);
    }

    /// Every sample of an exposition, by name and labels.
    fn samples(metrics: &Metrics) -> BTreeMap<String, u64> {
        let mut out = String::new();
        metrics.render(&mut out);
        out.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (name, value) = line.rsplit_once(' ').expect("name and value");
                (name.to_string(), value.parse().expect("integer sample"))
            })
            .collect()
    }

    /// `--threads`: for every metric of the table, the board's total is the sum of what the reactors
    /// published. Each reactor's every figure is set, to values distinct from the other's, by the filler
    /// generated from the same table as the merge, so no metric can be left out of either.
    #[test]
    fn test_board_total_is_the_sum_of_every_reactor_for_every_metric() {
        let (mut one, mut two) = (Metrics::default(), Metrics::default());
        one.fill(&mut 0);
        two.fill(&mut 1000);
        let board = MetricsBoard::new(2);
        board.publish(0, &one);
        board.publish(1, &two);
        assert_eq!(
            board.pairs_open(),
            board.total().pairs_open.get(),
            "pairs_open is the total's"
        );
        let (one, two, total) = (samples(&one), samples(&two), samples(&board.total()));
        assert_eq!(total.len(), one.len());
        for (series, value) in &total {
            let (a, b) = (one[series], two[series]);
            assert!(a > 0 && b > a, "{series} not filled: {a} {b}");
            assert_eq!(*value, a + b, "{series}");
        }
    }

    #[test]
    fn test_a_publish_replaces_the_reactors_figures() {
        let board = MetricsBoard::new(2);
        let mut one = Metrics {
            accepts: 3,
            ..Metrics::default()
        };
        board.publish(0, &one);
        board.publish(1, &one);
        one.accepts = 10;
        board.publish(0, &one);
        assert_eq!(board.total().accepts, 13, "a publish replaces, not adds");
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
        metrics.pairs_open.set(3);
        metrics.bytes[Way::ClientToUpstream] = 100;
        metrics.bytes[Way::UpstreamToClient] = 7;
        metrics.closes[Cause::ClientFin] = 2;
        metrics.closes[Cause::Shutdown] = 1;
        for events in [2, 2, 2, 2, 2, 3, 3, 3, 3, 3] {
            metrics.events_per_poll.record(events);
        }
        let first = ticker.report(0, &metrics, start + Duration::from_secs(1));
        assert_eq!(
            first,
            "stats: reactor=0 open=3 accepts=+0 closes=+3 polls=+10 events=+25 events/poll=2.5 \
             spurious=+0 reads=+0 writes=+0 c2u=+100 u2c=+7"
        );
        metrics.polls = 12;
        metrics.events_per_poll.record(4);
        let second = ticker.report(0, &metrics, start + Duration::from_secs(2));
        assert!(
            second.contains(" polls=+2 ") && second.contains(" c2u=+0 "),
            "{second}"
        );
        assert!(second.contains(" events/poll=4.0 "), "{second}");
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
        one.proxy_header_rejects[Reason::TlvOverrun] = 2;
        let mut other = Metrics::default();
        other.proxy_header_rejects[Reason::TlvOverrun] = 3;
        other.proxy_header_rejects[Reason::Timeout] = 1;
        one.merge(&other);
        let mut out = String::new();
        one.render(&mut out);
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
        metrics.pairs_open.set(4);
        metrics.closes[Cause::UpstreamReset] = 2;
        metrics.events_per_poll.record(5);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains("# TYPE edgefwd_polls_total counter\nedgefwd_polls_total 3\n"));
        assert!(out.contains("edgefwd_closes_total{cause=\"upstream-reset\"} 2\n"));
        assert!(out.contains("# TYPE edgefwd_pairs_open gauge\nedgefwd_pairs_open 4\n"));
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

//! The figures an operator asks of one route or one upstream: traffic each way, accepts, pairs,
//! connects, failovers and closes by cause, and the histograms of connect time and connection
//! duration, each labelled `route` (and `upstream`).
//!
//! # Why not rows of the `metrics!` table
//!
//! The table's figures are plain integers that each reactor copies to the [`MetricsBoard`] after every
//! loop turn. Per-route figures would make that copy grow with the routes (a route's histograms alone
//! are some forty integers), every turn of every reactor, for a scrape every few seconds. Here instead
//! every route name has one [`RouteEntry`] per process, shared by the reactors, holding one block of
//! counters per reactor: a reactor only ever writes its own block (a relaxed load and store, no lock,
//! no contended cache line), and the reactor that answers a scrape reads them all. Nothing is copied
//! per turn.
//!
//! # Bounded
//!
//! Labels are route names and the upstream endpoints the configuration names (`Endpoint::label`), never
//! a client's anything, and a CONNECT destination is counted on its route only. A route handle is
//! taken by name when the route is made, so a route a reload replaces and its successor count into the
//! same series; a route (or endpoint) no reactor holds any more stops appearing at the next scrape.
//!
//! [`MetricsBoard`]: crate::observe::metrics::MetricsBoard

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::close::Cause;
use crate::observe::metric_kinds::escape_label;
use crate::way::Way;

/// A count written by one thread only (its reactor) and read by any: a relaxed load and store, which
/// compile to plain moves, since no other thread ever writes it.
#[derive(Debug, Default)]
struct Tally(AtomicU64);

impl Tally {
    fn add(&self, n: u64) {
        self.0.store(self.get().wrapping_add(n), Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of `edgefwd_upstream_connect_seconds`, in microseconds: 250 µs (loopback) to 10 s.
const CONNECT_BOUNDS: &[u64] = &[
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds of `edgefwd_connection_duration_seconds`, in microseconds: 1 ms to a day.
const DURATION_BOUNDS: &[u64] = &[
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    60_000_000,
    300_000_000,
    3_600_000_000,
    86_400_000_000,
];

/// Most bounds of any histogram here (+Inf is one more bucket).
const MAX_BOUNDS: usize = 15;

/// A histogram of durations, in seconds as Prometheus wants them, kept in microseconds.
#[derive(Debug, Default)]
struct Seconds {
    /// Observations per bucket, not cumulative; bucket `bounds.len()` is +Inf.
    buckets: [Tally; MAX_BOUNDS + 1],
    sum_micros: Tally,
    count: Tally,
}

impl Seconds {
    fn record(&self, bounds: &[u64], elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = bounds.partition_point(|&bound| bound < micros);
        self.buckets[bucket].add(1);
        self.sum_micros.add(micros);
        self.count.add(1);
    }
}

/// One reactor's figures for one route.
#[derive(Debug, Default)]
struct RouteCells {
    accepts: Tally,
    pairs: Tally,
    connects_ok: Tally,
    connect_failures: Tally,
    failovers: Tally,
    bytes: [Tally; Way::ALL.len()],
    closes: [Tally; Cause::ALL.len()],
    connect_seconds: Seconds,
    duration_seconds: Seconds,
}

/// One reactor's figures for one upstream endpoint of one route.
#[derive(Debug, Default)]
struct UpstreamCells {
    connects_ok: Tally,
    bytes: [Tally; Way::ALL.len()],
    closes: [Tally; Cause::ALL.len()],
}

/// One route name's figures: a block per reactor, and its upstreams' by endpoint label.
#[derive(Debug)]
struct RouteEntry {
    reactors: Box<[RouteCells]>,
    upstreams: Mutex<BTreeMap<String, Arc<[UpstreamCells]>>>,
}

impl RouteEntry {
    fn new(reactors: usize) -> RouteEntry {
        RouteEntry {
            reactors: (0..reactors.max(1))
                .map(|_| RouteCells::default())
                .collect(),
            upstreams: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Every route's figures, for the whole process: made once, shared by the reactors.
#[derive(Debug)]
pub struct RouteBoard {
    reactors: usize,
    routes: Mutex<BTreeMap<String, Arc<RouteEntry>>>,
}

impl RouteBoard {
    /// A board for `reactors` reactors.
    pub fn new(reactors: usize) -> RouteBoard {
        RouteBoard {
            reactors: reactors.max(1),
            routes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Reactor `reactor`'s handle on route `name`'s figures (the same series for every route of that
    /// name, a reload's successor included).
    pub(crate) fn route(&self, name: &str, reactor: usize) -> RouteCounts {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = routes
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(RouteEntry::new(self.reactors)));
        RouteCounts {
            entry: Arc::clone(entry),
            reactor: reactor.min(self.reactors - 1),
        }
    }

    /// The Prometheus text of every route (and upstream) some reactor still holds, summed over the
    /// reactors; the others are forgotten here.
    pub(crate) fn render(&self, out: &mut String) {
        let routes: Vec<(String, Arc<RouteEntry>)> = {
            let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            routes.retain(|_, entry| Arc::strong_count(entry) > 1);
            routes
                .iter()
                .map(|(name, entry)| (name.clone(), Arc::clone(entry)))
                .collect()
        };
        let upstreams: Vec<(&str, String, Arc<[UpstreamCells]>)> = routes
            .iter()
            .flat_map(|(route, entry)| {
                let mut held = entry
                    .upstreams
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                held.retain(|_, cells| Arc::strong_count(cells) > 1);
                held.iter()
                    .map(|(label, cells)| (route.as_str(), label.clone(), Arc::clone(cells)))
                    .collect::<Vec<_>>()
            })
            .collect();
        render_routes(&routes, out);
        render_upstreams(&upstreams, out);
    }
}

impl Default for RouteBoard {
    /// A board for one reactor.
    fn default() -> RouteBoard {
        RouteBoard::new(1)
    }
}

/// A reactor's handle on one route's figures; counting through it writes that reactor's block only.
#[derive(Debug, Clone)]
pub(crate) struct RouteCounts {
    entry: Arc<RouteEntry>,
    reactor: usize,
}

impl Default for RouteCounts {
    /// A handle on no board (a UDP route, a unit test): counts go nowhere anyone reads.
    fn default() -> RouteCounts {
        RouteCounts {
            entry: Arc::new(RouteEntry::new(1)),
            reactor: 0,
        }
    }
}

impl RouteCounts {
    fn cells(&self) -> &RouteCells {
        &self.entry.reactors[self.reactor]
    }

    /// The handle of this route's endpoint labelled `label`.
    pub(crate) fn upstream(&self, label: &str) -> UpstreamCounts {
        let mut upstreams = self
            .entry
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let reactors = self.entry.reactors.len();
        let cells = upstreams
            .entry(label.to_string())
            .or_insert_with(|| (0..reactors).map(|_| UpstreamCells::default()).collect());
        UpstreamCounts {
            cells: Arc::clone(cells),
            reactor: self.reactor,
        }
    }

    /// A client accepted.
    pub(crate) fn accepted(&self, n: u64) {
        self.cells().accepts.add(n);
    }

    /// A pair opened.
    pub(crate) fn paired(&self) {
        self.cells().pairs.add(1);
    }

    /// An upstream connect completed, `elapsed` after its attempt started.
    pub(crate) fn connected(&self, elapsed: Duration) {
        let cells = self.cells();
        cells.connects_ok.add(1);
        cells.connect_seconds.record(CONNECT_BOUNDS, elapsed);
    }

    /// An upstream connect attempt failed (refused, timed out, or could not start).
    pub(crate) fn connect_failed(&self) {
        self.cells().connect_failures.add(1);
    }

    /// A failed connect was retried on another upstream or address.
    pub(crate) fn failed_over(&self) {
        self.cells().failovers.add(1);
    }

    /// Bytes forwarded `way`.
    pub(crate) fn forwarded(&self, way: Way, n: u64) {
        self.cells().bytes[way as usize].add(n);
    }

    /// A pair (or a client refused at accept) closed for `cause`, `lived` after its accept.
    pub(crate) fn closed(&self, cause: Cause, lived: Duration) {
        let cells = self.cells();
        cells.closes[cause as usize].add(1);
        cells.duration_seconds.record(DURATION_BOUNDS, lived);
    }
}

/// A reactor's handle on one upstream endpoint's figures.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamCounts {
    cells: Arc<[UpstreamCells]>,
    reactor: usize,
}

impl UpstreamCounts {
    fn cells(&self) -> &UpstreamCells {
        &self.cells[self.reactor]
    }

    /// A connect to it completed.
    pub(crate) fn connected(&self) {
        self.cells().connects_ok.add(1);
    }

    /// Bytes forwarded `way` with it.
    pub(crate) fn forwarded(&self, way: Way, n: u64) {
        self.cells().bytes[way as usize].add(n);
    }

    /// A pair connected to it closed for `cause`.
    pub(crate) fn closed(&self, cause: Cause) {
        self.cells().closes[cause as usize].add(1);
    }
}

/// Sums one figure over every reactor's block.
fn sum<C>(blocks: &[C], figure: impl Fn(&C) -> &Tally) -> u64 {
    blocks.iter().map(|block| figure(block).get()).sum()
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A plain counter family, one series per route.
type RouteFigure = fn(&RouteCells) -> &Tally;

fn render_routes(routes: &[(String, Arc<RouteEntry>)], out: &mut String) {
    let counters: [(&str, &str, RouteFigure); 5] = [
        (
            "edgefwd_route_accepts_total",
            "connections accepted, by route",
            |c| &c.accepts,
        ),
        (
            "edgefwd_route_pairs_total",
            "connection pairs opened, by route",
            |c| &c.pairs,
        ),
        (
            "edgefwd_route_connects_ok_total",
            "upstream connects that completed, by route",
            |c| &c.connects_ok,
        ),
        (
            "edgefwd_route_connect_failures_total",
            "upstream connect attempts that failed (refused, timed out, or not started), by route",
            |c| &c.connect_failures,
        ),
        (
            "edgefwd_route_failovers_total",
            "failed upstream connects retried on another upstream or address, by route",
            |c| &c.failovers,
        ),
    ];
    for (name, help, figure) in counters {
        header(out, name, "counter", help);
        for (route, entry) in routes {
            let value = sum(&entry.reactors, figure);
            let _ = writeln!(out, "{name}{{route=\"{}\"}} {value}", escape_label(route));
        }
    }
    let name = "edgefwd_route_bytes_total";
    header(
        out,
        name,
        "counter",
        "bytes forwarded, by route and direction",
    );
    for (route, entry) in routes {
        for way in Way::ALL {
            let value = sum(&entry.reactors, |c| &c.bytes[way as usize]);
            let (route, way) = (escape_label(route), way.label());
            let _ = writeln!(
                out,
                "{name}{{route=\"{route}\",direction=\"{way}\"}} {value}"
            );
        }
    }
    let name = "edgefwd_route_closes_total";
    header(
        out,
        name,
        "counter",
        "connection pairs closed, by route and cause",
    );
    for (route, entry) in routes {
        for cause in Cause::ALL {
            let value = sum(&entry.reactors, |c| &c.closes[cause as usize]);
            let (route, cause) = (escape_label(route), cause.as_str());
            let _ = writeln!(out, "{name}{{route=\"{route}\",cause=\"{cause}\"}} {value}");
        }
    }
    type Histogram = fn(&RouteCells) -> &Seconds;
    let histograms: [(&str, &str, &[u64], Histogram); 2] = [
        (
            "edgefwd_upstream_connect_seconds",
            "time from the start of an upstream connect attempt to its completion, by route",
            CONNECT_BOUNDS,
            |c| &c.connect_seconds,
        ),
        (
            "edgefwd_connection_duration_seconds",
            "time from accept to close of a connection pair, by route",
            DURATION_BOUNDS,
            |c| &c.duration_seconds,
        ),
    ];
    for (name, help, bounds, histogram) in histograms {
        header(out, name, "histogram", help);
        for (route, entry) in routes {
            let label = format!("route=\"{}\"", escape_label(route));
            let blocks = &entry.reactors;
            let mut cumulative = 0;
            for (i, bound) in bounds.iter().enumerate() {
                cumulative += sum(blocks, |c| &histogram(c).buckets[i]);
                let le = *bound as f64 / 1e6;
                let _ = writeln!(out, "{name}_bucket{{{label},le=\"{le}\"}} {cumulative}");
            }
            cumulative += sum(blocks, |c| &histogram(c).buckets[bounds.len()]);
            let seconds = sum(blocks, |c| &histogram(c).sum_micros) as f64 / 1e6;
            let count = sum(blocks, |c| &histogram(c).count);
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {cumulative}");
            let _ = writeln!(out, "{name}_sum{{{label}}} {seconds}");
            let _ = writeln!(out, "{name}_count{{{label}}} {count}");
        }
    }
}

fn render_upstreams(upstreams: &[(&str, String, Arc<[UpstreamCells]>)], out: &mut String) {
    let labels = |route: &str, upstream: &str| {
        format!(
            "route=\"{}\",upstream=\"{}\"",
            escape_label(route),
            escape_label(upstream)
        )
    };
    let name = "edgefwd_upstream_connects_ok_total";
    header(
        out,
        name,
        "counter",
        "connects to the upstream endpoint that completed",
    );
    for (route, upstream, cells) in upstreams {
        let value = sum(cells, |c| &c.connects_ok);
        let _ = writeln!(out, "{name}{{{}}} {value}", labels(route, upstream));
    }
    let name = "edgefwd_upstream_bytes_total";
    header(
        out,
        name,
        "counter",
        "bytes forwarded with the upstream endpoint, by direction",
    );
    for (route, upstream, cells) in upstreams {
        for way in Way::ALL {
            let value = sum(cells, |c| &c.bytes[way as usize]);
            let (labels, way) = (labels(route, upstream), way.label());
            let _ = writeln!(out, "{name}{{{labels},direction=\"{way}\"}} {value}");
        }
    }
    let name = "edgefwd_upstream_closes_total";
    header(
        out,
        name,
        "counter",
        "connection pairs closed while connected or connecting to the upstream endpoint, by cause",
    );
    for (route, upstream, cells) in upstreams {
        for cause in Cause::ALL {
            let value = sum(cells, |c| &c.closes[cause as usize]);
            let (labels, cause) = (labels(route, upstream), cause.as_str());
            let _ = writeln!(out, "{name}{{{labels},cause=\"{cause}\"}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(board: &RouteBoard) -> String {
        let mut out = String::new();
        board.render(&mut out);
        out
    }

    /// `--threads`: each reactor counts in its own block; a scrape sums them, and a route replaced by a
    /// reload (a second handle by the same name) counts into the same series.
    #[test]
    fn test_reactors_counts_are_summed_by_route() {
        let board = RouteBoard::new(2);
        let (zero, one) = (board.route("web", 0), board.route("web", 1));
        let successor = board.route("web", 1);
        zero.forwarded(Way::ClientToUpstream, 10);
        one.forwarded(Way::ClientToUpstream, 5);
        successor.forwarded(Way::UpstreamToClient, 7);
        zero.closed(Cause::ClientFin, Duration::from_millis(5));
        one.closed(Cause::ClientFin, Duration::from_secs(2));
        zero.upstream("127.0.0.1:1")
            .forwarded(Way::ClientToUpstream, 3);
        let held = one.upstream("127.0.0.1:1");
        held.forwarded(Way::ClientToUpstream, 4);
        let out = rendered(&board);
        for line in [
            "edgefwd_route_bytes_total{route=\"web\",direction=\"c2u\"} 15\n",
            "edgefwd_route_bytes_total{route=\"web\",direction=\"u2c\"} 7\n",
            "edgefwd_route_closes_total{route=\"web\",cause=\"client-fin\"} 2\n",
            "edgefwd_connection_duration_seconds_bucket{route=\"web\",le=\"0.01\"} 1\n",
            "edgefwd_connection_duration_seconds_bucket{route=\"web\",le=\"1\"} 1\n",
            "edgefwd_connection_duration_seconds_bucket{route=\"web\",le=\"10\"} 2\n",
            "edgefwd_connection_duration_seconds_bucket{route=\"web\",le=\"+Inf\"} 2\n",
            "edgefwd_connection_duration_seconds_sum{route=\"web\"} 2.005\n",
            "edgefwd_connection_duration_seconds_count{route=\"web\"} 2\n",
            "edgefwd_upstream_bytes_total{route=\"web\",upstream=\"127.0.0.1:1\",direction=\"c2u\"} 7\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
    }

    /// A route (or endpoint) no reactor holds any more stops appearing; one still held does not.
    #[test]
    fn test_a_route_nobody_holds_stops_appearing() {
        let board = RouteBoard::new(1);
        let kept = board.route("kept", 0);
        let gone = board.route("gone", 0);
        let upstream = kept.upstream("a:1");
        drop(kept.upstream("b:1"));
        assert!(rendered(&board).contains("route=\"gone\""));
        drop(gone);
        let out = rendered(&board);
        assert!(!out.contains("route=\"gone\""), "{out}");
        assert!(out.contains("edgefwd_route_pairs_total{route=\"kept\"} 0\n"));
        assert!(out.contains("upstream=\"a:1\""), "{out}");
        assert!(!out.contains("upstream=\"b:1\""), "{out}");
        drop(upstream);
    }

    /// Connect times land in the first bucket whose bound they do not exceed (a bound is inclusive).
    #[test]
    fn test_connect_seconds_buckets() {
        let board = RouteBoard::new(1);
        let route = board.route("r", 0);
        route.connected(Duration::from_micros(250));
        route.connected(Duration::from_micros(251));
        route.connected(Duration::from_secs(11));
        let out = rendered(&board);
        let name = "edgefwd_upstream_connect_seconds";
        for line in [
            format!("{name}_bucket{{route=\"r\",le=\"0.00025\"}} 1\n"),
            format!("{name}_bucket{{route=\"r\",le=\"0.0005\"}} 2\n"),
            format!("{name}_bucket{{route=\"r\",le=\"10\"}} 2\n"),
            format!("{name}_bucket{{route=\"r\",le=\"+Inf\"}} 3\n"),
            format!("{name}_count{{route=\"r\"}} 3\n"),
            "edgefwd_route_connects_ok_total{route=\"r\"} 3\n".to_string(),
        ] {
            assert!(out.contains(&line), "{line} missing from\n{out}");
        }
        assert!(CONNECT_BOUNDS.len() <= MAX_BOUNDS && DURATION_BOUNDS.len() <= MAX_BOUNDS);
    }
}

//! The kinds of metric a row of the `metrics!` table in [`crate::observe::metrics`] can have: how each stores its
//! figures, sums them over the reactors of `--threads`, writes them in the Prometheus text format and
//! sums them up on the `--stats-interval` line.
//!
//! | kind | merged over reactors | exposition |
//! |---|---|---|
//! | `Counter` (a plain `u64`) | sum | `name value` |
//! | `Gauge` | sum: each reactor holds its share | `name value` |
//! | `ByLabel<L>` | sum, label value by label value | one series per value of `L`, 0 until it happens |
//! | `Histogram` | sum, bucket by bucket | `_bucket{le}`, `_sum`, `_count` |
//! | `ByRoute<L>` | sum, route name by route name, then label value by label value | one series per route (from its first count) and value of `L` |

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use crate::close::Cause;
use crate::way::Way;
use crate::wire::proxy_protocol::Reason;
use crate::wire::sni::Via;
use crate::wire::tls_hello;

/// Writes one metric family: its `# HELP` and `# TYPE` lines, then its samples.
pub(super) fn family<M: Metric>(out: &mut String, name: &str, help: &str, metric: &M) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", M::KIND);
    metric.samples(name, out);
}

/// A kind of metric: how its figures are stored, merged over reactors and written out.
pub(crate) trait Metric {
    /// The exposition's `# TYPE`.
    const KIND: &'static str;
    /// Adds another reactor's figures to these.
    fn add(&mut self, other: &Self);
    /// Writes the sample lines of the family `name`.
    fn samples(&self, name: &str, out: &mut String);
    /// Writes ` key=...` on the stats line: what changed since `last`.
    fn line(&self, last: &Self, key: &str, out: &mut String);
    /// Sets every figure to a distinct non-zero value, counting from `next`.
    #[cfg(test)]
    fn fill(&mut self, next: &mut u64);
}

#[cfg(test)]
fn take(next: &mut u64) -> u64 {
    *next += 1;
    *next
}

/// A count that only grows, summed over reactors. A plain `u64`, so that counting reads `+= 1`.
pub(crate) type Counter = u64;

impl Metric for Counter {
    const KIND: &'static str = "counter";

    fn add(&mut self, other: &Self) {
        *self += other;
    }

    fn samples(&self, name: &str, out: &mut String) {
        let _ = writeln!(out, "{name} {self}");
    }

    fn line(&self, last: &Self, key: &str, out: &mut String) {
        let _ = write!(out, " {key}=+{}", self - last);
    }

    #[cfg(test)]
    fn fill(&mut self, next: &mut u64) {
        *self = take(next);
    }
}

/// A value that goes up and down (pairs open now), summed over reactors: each holds its own share.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Gauge(u64);

impl Gauge {
    pub(crate) fn set(&mut self, value: usize) {
        self.0 = value as u64;
    }

    pub(crate) fn get(&self) -> u64 {
        self.0
    }
}

impl Metric for Gauge {
    const KIND: &'static str = "gauge";

    fn add(&mut self, other: &Self) {
        self.0 += other.0;
    }

    fn samples(&self, name: &str, out: &mut String) {
        let _ = writeln!(out, "{name} {}", self.0);
    }

    fn line(&self, _last: &Self, key: &str, out: &mut String) {
        let _ = write!(out, " {key}={}", self.0);
    }

    #[cfg(test)]
    fn fill(&mut self, next: &mut u64) {
        self.0 = take(next);
    }
}

/// The values of a label, in the order of their discriminants.
pub(crate) trait Label: Copy + 'static {
    /// The label's name in the exposition.
    const NAME: &'static str;
    /// Every value, `ALL[i].index() == i`.
    const ALL: &'static [Self];
    /// One count per value: `[u64; ALL.len()]`.
    type Counts: AsRef<[u64]> + AsMut<[u64]> + Default + Clone + fmt::Debug;
    fn index(self) -> usize;
    /// The value in the exposition and on the stats line.
    fn value(self) -> &'static str;
}

impl Label for Way {
    const NAME: &'static str = "direction";
    const ALL: &'static [Way] = &Way::ALL;
    type Counts = [u64; Way::ALL.len()];
    fn index(self) -> usize {
        self as usize
    }
    fn value(self) -> &'static str {
        self.label()
    }
}

impl Label for Cause {
    const NAME: &'static str = "cause";
    const ALL: &'static [Cause] = &Cause::ALL;
    type Counts = [u64; Cause::ALL.len()];
    fn index(self) -> usize {
        self as usize
    }
    fn value(self) -> &'static str {
        self.as_str()
    }
}

impl Label for Reason {
    const NAME: &'static str = "reason";
    const ALL: &'static [Reason] = &Reason::ALL;
    type Counts = [u64; Reason::ALL.len()];
    fn index(self) -> usize {
        self as usize
    }
    fn value(self) -> &'static str {
        self.label()
    }
}

/// Why a client was reset as it arrived: the `limit` of `edgefwd_client_rejects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientReject {
    /// `client_allow` / `client_deny` kept it out.
    Denied = 0,
    /// `max_conns_per_client`.
    MaxConns,
    /// `conn_rate_per_client`.
    Rate,
    /// The route's per-client table was full of clients still counted.
    TableFull,
    /// It waited in the backlog of a route at `max_connections` past `queue_timeout`.
    QueueTimeout,
}

impl Label for ClientReject {
    const NAME: &'static str = "limit";
    const ALL: &'static [ClientReject] = &[
        ClientReject::Denied,
        ClientReject::MaxConns,
        ClientReject::Rate,
        ClientReject::TableFull,
        ClientReject::QueueTimeout,
    ];
    type Counts = [u64; 5];
    fn index(self) -> usize {
        self as usize
    }
    fn value(self) -> &'static str {
        match self {
            ClientReject::Denied => "acl",
            ClientReject::MaxConns => "max-conns",
            ClientReject::Rate => "rate",
            ClientReject::TableFull => "table-full",
            ClientReject::QueueTimeout => "queue-timeout",
        }
    }
}

/// Why a client of an SNI listener was closed before it reached a route: the `reason` of
/// `edgefwd_sni_rejected_total` (docs/tls-sni.md). Its first bytes broke a rule of the ClientHello
/// reader, or the hello named no route (`no-route`, answered with the `unrecognized_name` alert), its
/// route was at `max_connections` (`route-full`), the hello did not come within `header_timeout`
/// (`timeout`), or the client left before it ended (`client-closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SniReject {
    Hello(tls_hello::Reason),
    NoRoute,
    RouteFull,
    Timeout,
    ClientClosed,
}

/// How many reasons the ClientHello reader has: [`SniReject`]'s own come after them.
const HELLO_REASONS: usize = tls_hello::Reason::ALL.len();

impl SniReject {
    /// Every value, the reader's reasons in their order first.
    const ALL: [SniReject; HELLO_REASONS + 4] = {
        let mut all = [SniReject::NoRoute; HELLO_REASONS + 4];
        let mut at = 0;
        while at < HELLO_REASONS {
            all[at] = SniReject::Hello(tls_hello::Reason::ALL[at]);
            at += 1;
        }
        all[HELLO_REASONS + 1] = SniReject::RouteFull;
        all[HELLO_REASONS + 2] = SniReject::Timeout;
        all[HELLO_REASONS + 3] = SniReject::ClientClosed;
        all
    };
}

impl Label for SniReject {
    const NAME: &'static str = "reason";
    const ALL: &'static [SniReject] = &SniReject::ALL;
    type Counts = [u64; HELLO_REASONS + 4];
    fn index(self) -> usize {
        match self {
            SniReject::Hello(reason) => reason as usize,
            SniReject::NoRoute => HELLO_REASONS,
            SniReject::RouteFull => HELLO_REASONS + 1,
            SniReject::Timeout => HELLO_REASONS + 2,
            SniReject::ClientClosed => HELLO_REASONS + 3,
        }
    }
    fn value(self) -> &'static str {
        match self {
            SniReject::Hello(reason) => reason.label(),
            SniReject::NoRoute => "no-route",
            SniReject::RouteFull => "route-full",
            SniReject::Timeout => "timeout",
            SniReject::ClientClosed => "client-closed",
        }
    }
}

/// How a ClientHello found its route: the `by` label of `edgefwd_sni_routed_total`.
impl Label for Via {
    const NAME: &'static str = "by";
    const ALL: &'static [Via] = &[Via::Name, Via::Default];
    type Counts = [u64; 2];
    fn index(self) -> usize {
        self as usize
    }
    fn value(self) -> &'static str {
        match self {
            Via::Name => "name",
            Via::Default => "default",
        }
    }
}

/// How a SIGHUP reload ended: the `result` of `edgefwd_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reload {
    Applied = 0,
    Rejected = 1,
}

impl Label for Reload {
    const NAME: &'static str = "result";
    const ALL: &'static [Reload] = &[Reload::Applied, Reload::Rejected];
    type Counts = [u64; 2];
    fn index(self) -> usize {
        self as usize
    }
    fn value(self) -> &'static str {
        match self {
            Reload::Applied => "ok",
            Reload::Rejected => "rejected",
        }
    }
}

/// Why a UDP datagram was dropped: the `cause` of `edgefwd_udp_drops_total` (docs/udp.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpDrop {
    /// The session's upstream socket would block (its send buffer is full).
    UpstreamBusy = 0,
    /// The client-facing socket would block.
    ClientBusy = 1,
    /// The upstream answered with ICMP port unreachable (ECONNREFUSED): the datagram before it was lost.
    Refused = 2,
    /// No upstream endpoint to send to (none resolves).
    NoUpstream = 3,
    /// No socket for a new session: the fd budget, EMFILE, or bind/connect failed.
    NoSocket = 4,
    /// Any other send error.
    Error = 5,
}

impl Label for UdpDrop {
    const NAME: &'static str = "cause";
    const ALL: &'static [UdpDrop] = &[
        UdpDrop::UpstreamBusy,
        UdpDrop::ClientBusy,
        UdpDrop::Refused,
        UdpDrop::NoUpstream,
        UdpDrop::NoSocket,
        UdpDrop::Error,
    ];
    type Counts = [u64; 6];
    fn index(self) -> usize {
        self as usize
    }
    fn value(self) -> &'static str {
        match self {
            UdpDrop::UpstreamBusy => "upstream_would_block",
            UdpDrop::ClientBusy => "client_would_block",
            UdpDrop::Refused => "upstream_refused",
            UdpDrop::NoUpstream => "no_upstream",
            UdpDrop::NoSocket => "no_socket",
            UdpDrop::Error => "send_error",
        }
    }
}

/// Counters by label value, one series each (0 until it happens), summed over reactors value by value.
/// Indexed by the label: `metrics.closes[cause] += 1`.
pub(crate) struct ByLabel<L: Label> {
    counts: L::Counts,
    label: PhantomData<L>,
}

impl<L: Label> ByLabel<L> {
    /// The sum over every label value.
    pub(super) fn total(&self) -> u64 {
        self.counts.as_ref().iter().sum()
    }
}

impl<L: Label> Default for ByLabel<L> {
    fn default() -> Self {
        ByLabel {
            counts: L::Counts::default(),
            label: PhantomData,
        }
    }
}

impl<L: Label> Clone for ByLabel<L> {
    fn clone(&self) -> Self {
        ByLabel {
            counts: self.counts.clone(),
            label: PhantomData,
        }
    }
}

impl<L: Label> fmt::Debug for ByLabel<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.counts.fmt(f)
    }
}

impl<L: Label> Index<L> for ByLabel<L> {
    type Output = u64;
    fn index(&self, label: L) -> &u64 {
        &self.counts.as_ref()[label.index()]
    }
}

impl<L: Label> IndexMut<L> for ByLabel<L> {
    fn index_mut(&mut self, label: L) -> &mut u64 {
        &mut self.counts.as_mut()[label.index()]
    }
}

impl<L: Label> Metric for ByLabel<L> {
    const KIND: &'static str = "counter";

    fn add(&mut self, other: &Self) {
        for &label in L::ALL {
            self[label] += other[label];
        }
    }

    fn samples(&self, name: &str, out: &mut String) {
        for &label in L::ALL {
            let _ = writeln!(
                out,
                "{name}{{{}=\"{}\"}} {}",
                L::NAME,
                label.value(),
                self[label]
            );
        }
    }

    /// The total, or with the key `{label}` one entry per label value (`c2u=+10 u2c=+20`).
    fn line(&self, last: &Self, key: &str, out: &mut String) {
        if key == "{label}" {
            for &label in L::ALL {
                let _ = write!(out, " {}=+{}", label.value(), self[label] - last[label]);
            }
        } else {
            let _ = write!(out, " {key}=+{}", self.total() - last.total());
        }
    }

    #[cfg(test)]
    fn fill(&mut self, next: &mut u64) {
        for &label in L::ALL {
            self[label] = take(next);
        }
    }
}

/// Counters by route name and label value: `metrics.client_rejects.count("web", why)`. Bounded like the
/// routes (names are the config's, never a client's); a route's series appear with its first count, and
/// a route replaced by a reload goes on counting under its name.
#[derive(Debug)]
pub(crate) struct ByRoute<L: Label> {
    routes: BTreeMap<String, ByLabel<L>>,
}

impl<L: Label> Default for ByRoute<L> {
    fn default() -> Self {
        ByRoute {
            routes: BTreeMap::new(),
        }
    }
}

impl<L: Label> Clone for ByRoute<L> {
    fn clone(&self) -> Self {
        ByRoute {
            routes: self.routes.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.routes.clone_from(&source.routes);
    }
}

impl<L: Label> ByRoute<L> {
    /// Counts `n` of `label` for route `route`.
    pub(crate) fn count(&mut self, route: &str, label: L, n: u64) {
        match self.routes.get_mut(route) {
            Some(counts) => counts[label] += n,
            None => {
                let mut counts = ByLabel::default();
                counts[label] += n;
                self.routes.insert(route.to_string(), counts);
            }
        }
    }

    /// Route `route`'s count of `label`.
    #[cfg(test)]
    pub(crate) fn get(&self, route: &str, label: L) -> u64 {
        self.routes.get(route).map_or(0, |counts| counts[label])
    }
}

impl<L: Label> Metric for ByRoute<L> {
    const KIND: &'static str = "counter";

    fn add(&mut self, other: &Self) {
        for (route, counts) in &other.routes {
            self.routes.entry(route.clone()).or_default().add(counts);
        }
    }

    fn samples(&self, name: &str, out: &mut String) {
        for (route, counts) in &self.routes {
            for &label in L::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{}\",{}=\"{}\"}} {}",
                    escape_label(route),
                    L::NAME,
                    label.value(),
                    counts[label]
                );
            }
        }
    }

    fn line(&self, last: &Self, key: &str, out: &mut String) {
        let total = |of: &Self| of.routes.values().map(ByLabel::total).sum::<u64>();
        let _ = write!(out, " {key}=+{}", total(self) - total(last));
    }

    #[cfg(test)]
    fn fill(&mut self, next: &mut u64) {
        let mut counts = ByLabel::default();
        counts.fill(next);
        self.routes.insert("filled".to_string(), counts);
    }
}

/// Escapes a label value as the exposition format requires.
pub(crate) fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A histogram with power-of-two upper bounds: 1, 2, 4, ... 2^(BUCKETS-2), then +Inf. Summed over
/// reactors bucket by bucket.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
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
    pub(crate) fn record(&mut self, value: u64) {
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

    /// Sum of observations.
    pub(super) fn sum(&self) -> u64 {
        self.sum
    }
}

impl Metric for Histogram {
    const KIND: &'static str = "histogram";

    fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    fn samples(&self, name: &str, out: &mut String) {
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

    /// The mean of the observations since `last`, to one decimal (0.0 if none).
    fn line(&self, last: &Self, key: &str, out: &mut String) {
        let (sum, count) = (self.sum - last.sum, self.count - last.count);
        let mean = if count == 0 {
            0.0
        } else {
            sum as f64 / count as f64
        };
        let _ = write!(out, " {key}={mean:.1}");
    }

    #[cfg(test)]
    fn fill(&mut self, next: &mut u64) {
        for bucket in &mut self.buckets {
            *bucket = take(next);
        }
        self.sum = take(next);
        self.count = take(next);
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
        assert_eq!(histogram.count, 7);
    }

    /// Per-route counters: merged route by route, every label value written for a route once it counts,
    /// the route name escaped.
    #[test]
    fn test_by_route_merges_and_renders_per_route() {
        let mut one = ByRoute::<ClientReject>::default();
        one.count("web", ClientReject::Rate, 2);
        let mut two = ByRoute::<ClientReject>::default();
        two.count("web", ClientReject::Rate, 1);
        two.count("d\"b", ClientReject::Denied, 1);
        one.add(&two);
        assert_eq!(one.get("web", ClientReject::Rate), 3);
        assert_eq!(one.get("d\"b", ClientReject::Denied), 1);
        assert_eq!(one.get("other", ClientReject::Denied), 0);
        let mut out = String::new();
        one.samples("x", &mut out);
        assert!(out.contains("x{route=\"web\",limit=\"rate\"} 3\n"), "{out}");
        assert!(out.contains("x{route=\"web\",limit=\"acl\"} 0\n"), "{out}");
        assert!(
            out.contains("x{route=\"d\\\"b\",limit=\"acl\"} 1\n"),
            "{out}"
        );
        assert_eq!(out.lines().count(), 2 * ClientReject::ALL.len());
    }

    /// Each label's `ALL` is in the order of its indexes, which the counts are kept by.
    #[test]
    fn test_labels_index_in_order() {
        fn check<L: Label>() {
            for (i, label) in L::ALL.iter().enumerate() {
                assert_eq!(label.index(), i, "{}={}", L::NAME, label.value());
            }
            assert_eq!(
                L::Counts::default().as_ref().len(),
                L::ALL.len(),
                "{}",
                L::NAME
            );
        }
        check::<Way>();
        check::<ClientReject>();
        check::<Cause>();
        check::<Reason>();
        check::<Reload>();
        check::<SniReject>();
        check::<Via>();
        let labels: std::collections::HashSet<_> =
            SniReject::ALL.iter().map(|r| r.value()).collect();
        assert_eq!(labels.len(), SniReject::ALL.len(), "SNI reasons unique");
    }
}

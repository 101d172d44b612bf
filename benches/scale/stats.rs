//! The arithmetic behind every figure of the scale benchmark: repeats reduced to a median with
//! its spread, memory per idle pair, CPU and counters per request, and the decimal counts (`1k`, `100k`) the
//! options take. Pure functions, unit-tested in `tests/scale_harness.rs`.

use std::collections::HashMap;

use crate::util::{fail, median, BenchResult};

/// Repeats of one figure: the median reported, and the lowest and highest run beside it, because
/// on a shared machine a single run says little and the spread says how much to trust the median.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Runs that gave a finite value (a failed or skipped run gives NaN and is left out).
    pub runs: usize,
}

impl Spread {
    /// The median, min and max of the finite values; all NaN (and `runs` 0) when there are none.
    pub fn of(values: &[f64]) -> Spread {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let mut sorted = finite.clone();
        sorted.sort_by(f64::total_cmp);
        Spread {
            median: median(&mut sorted.clone()),
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            runs: finite.len(),
        }
    }

    /// `median (min-max)` with `fmt` for each number; the range is left out for a single run.
    pub fn show(&self, fmt: impl Fn(f64) -> String) -> String {
        if self.runs == 0 {
            return "n/a".to_string();
        }
        if self.runs == 1 {
            return fmt(self.median);
        }
        format!("{} ({}–{})", fmt(self.median), fmt(self.min), fmt(self.max))
    }
}

/// Memory an idle pair costs the forwarder: its RSS growth while the pairs were opened, divided
/// among them. Signed, because RSS can also shrink (freed pages) and hiding that would flatter the
/// figure; None for the N = 0 baseline, where there is nothing to divide.
pub fn bytes_per_pair(rss_before: u64, rss_after: u64, pairs: usize) -> Option<f64> {
    if pairs == 0 {
        return None;
    }
    Some((rss_after as f64 - rss_before as f64) / pairs as f64)
}

/// CPU seconds spent over a window, per request served in it, in microseconds; NaN when no request
/// finished (a stalled run must not read as free).
pub fn cpu_us_per_request(cpu_s: f64, requests: u64) -> f64 {
    if requests == 0 {
        return f64::NAN;
    }
    cpu_s * 1e6 / requests as f64
}

/// Parses a count like `1000`, `1k`, `10k`, `100k`, `1m`: decimal multiples, because these are
/// numbers of connections, not sizes in bytes.
pub fn parse_count(text: &str) -> BenchResult<usize> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, mult) = match t.strip_suffix('k') {
        Some(d) => (d, 1_000),
        None => match t.strip_suffix('m') {
            Some(d) => (d, 1_000_000),
            None => (t.as_str(), 1),
        },
    };
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
    {
        Some(n) => Ok(n),
        None => fail(format!(
            "bad count {text:?}: expected e.g. 0, 500, 10k, 100k"
        )),
    }
}

/// `100000` as `100k`, `1500` as `1.5k`, for table rows and chart labels.
pub fn count_label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 100_000 == 0 => trim_zero(n as f64 / 1e6, "M"),
        n if n >= 1_000 && n % 100 == 0 => trim_zero(n as f64 / 1e3, "k"),
        n => n.to_string(),
    }
}

fn trim_zero(v: f64, suffix: &str) -> String {
    let s = format!("{v:.1}");
    format!("{}{suffix}", s.strip_suffix(".0").unwrap_or(&s))
}

/// How many listeners (and as many backends) spread `conns` connections so that none of them holds
/// more than `per_destination`: every loopback connection to one address and port needs its own
/// ephemeral source port, and there are only `ip_local_port_range` of those per destination.
pub fn destinations_for(conns: usize, per_destination: usize) -> usize {
    conns.div_ceil(per_destination.max(1)).max(1)
}

/// edgefwd's counters from a /metrics exposition: `edgefwd_polls_total 12` as `("polls", 12)`.
/// Labelled series (`{cause="..."}`) and other metric types are left out.
pub fn parse_counters(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix("edgefwd_")?.split_once("_total ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// `counter` grown from `before` to `after`, per request (NaN without requests or the counter).
pub fn counter_per_request(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    counter: &str,
    requests: u64,
) -> f64 {
    match (before.get(counter), after.get(counter)) {
        (Some(b), Some(a)) if requests > 0 => a.saturating_sub(*b) as f64 / requests as f64,
        _ => f64::NAN,
    }
}

/// The largest count, rounded down to a hundred, of which `per` fds each fit in `nofile` fds with
/// `headroom` kept free: the `max` size of the options.
pub fn largest_fitting(nofile: u64, headroom: u64, per: u64) -> usize {
    let n = nofile.saturating_sub(headroom) / per.max(1);
    (n / 100 * 100) as usize
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/scale.rs
mod tests {
    use super::*;

    #[test]
    fn test_spread_is_median_and_range_of_finite_runs() {
        let s = Spread::of(&[5.0, 1.0, f64::NAN, 3.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (3.0, 1.0, 5.0, 3));
        let even = Spread::of(&[4.0, 2.0]);
        assert_eq!((even.median, even.min, even.max), (3.0, 2.0, 4.0));
        let none = Spread::of(&[f64::NAN]);
        assert_eq!(none.runs, 0);
        assert!(none.median.is_nan() && none.min.is_nan());
        assert_eq!(none.show(|v| format!("{v}")), "n/a");
        assert_eq!(Spread::of(&[7.0]).show(|v| format!("{v}")), "7");
        assert_eq!(s.show(|v| format!("{v}")), "3 (1–5)");
    }

    #[test]
    fn test_bytes_per_pair_divides_the_rss_delta_signed() {
        assert_eq!(bytes_per_pair(1_000_000, 3_048_000, 1_000), Some(2_048.0));
        assert_eq!(bytes_per_pair(3_000_000, 2_000_000, 500), Some(-2_000.0));
        assert_eq!(bytes_per_pair(1, 2, 0), None);
    }

    #[test]
    fn test_cpu_per_request_is_microseconds_and_nan_without_requests() {
        assert_eq!(cpu_us_per_request(1.5, 100_000), 15.0);
        assert!(cpu_us_per_request(1.0, 0).is_nan());
    }

    #[test]
    fn test_parse_count_is_decimal_and_names_bad_values() {
        assert_eq!(parse_count("0").ok(), Some(0));
        assert_eq!(parse_count("1k").ok(), Some(1_000));
        assert_eq!(parse_count("100K").ok(), Some(100_000));
        assert_eq!(parse_count("2m").ok(), Some(2_000_000));
        for bad in ["", "k", "1.5k", "-1", "10q"] {
            let err = parse_count(bad).expect_err(bad).0;
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn test_count_label_round_trips_through_parse_count() {
        for n in [0, 10, 300, 1_000, 10_000, 100_000, 1_000_000] {
            assert_eq!(parse_count(&count_label(n)).ok(), Some(n));
        }
        assert_eq!(count_label(100_000), "100k");
        assert_eq!(count_label(1_500), "1.5k");
        assert_eq!(count_label(1_234), "1234");
        assert_eq!(count_label(7), "7");
    }

    #[test]
    fn test_parse_counters_reads_unlabelled_totals_only() {
        let text =
            "# HELP edgefwd_polls_total epoll_wait calls\n# TYPE edgefwd_polls_total counter\n\
                    edgefwd_polls_total 12\nedgefwd_events_total 30\n\
                    edgefwd_closes_total{cause=\"client-fin\"} 4\nedgefwd_pairs_open 7\n";
        let c = parse_counters(text);
        assert_eq!(c.get("polls"), Some(&12));
        assert_eq!(c.get("events"), Some(&30));
        assert_eq!(c.len(), 2, "{c:?}");
        let after = parse_counters("edgefwd_polls_total 112\nedgefwd_events_total 430\n");
        assert_eq!(counter_per_request(&c, &after, "events", 200), 2.0);
        assert_eq!(counter_per_request(&c, &after, "polls", 50), 2.0);
        assert!(counter_per_request(&c, &after, "reads", 50).is_nan());
        assert!(counter_per_request(&c, &after, "polls", 0).is_nan());
    }

    #[test]
    fn test_largest_fitting_leaves_the_headroom_and_rounds_down() {
        assert_eq!(largest_fitting(20_000, 512, 2), 9_700);
        assert_eq!(largest_fitting(20_000, 512, 1), 19_400);
        assert_eq!(largest_fitting(300, 512, 2), 0);
        assert_eq!(largest_fitting(1_048_576, 512, 2), 524_000);
    }

    #[test]
    fn test_destinations_keep_each_under_its_port_budget() {
        assert_eq!(destinations_for(0, 20_000), 1);
        assert_eq!(destinations_for(20_000, 20_000), 1);
        assert_eq!(destinations_for(20_001, 20_000), 2);
        assert_eq!(destinations_for(100_100, 20_000), 6);
        assert_eq!(destinations_for(10, 0), 10);
    }
}

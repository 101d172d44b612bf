//! Small shared helpers: the harness's error type, number formatting and a UTC timestamp.
//!
//! The harness has no serde/chrono (they are not dependencies of the crate), so the few
//! things it needs from them are written out here.

use std::fmt;

use crate::support::clock::Utc;

/// Every fallible step of the harness ends in this: a message that says what was being
/// done and why it failed, printed once at the top and recorded per run in the results.
#[derive(Debug, Clone)]
pub struct BenchError(pub String);

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

pub type BenchResult<T> = Result<T, BenchError>;

/// Builds an error from a message (`fail!("...")` reads better than `Err(BenchError(..))`).
pub fn fail<T>(msg: impl Into<String>) -> BenchResult<T> {
    Err(BenchError(msg.into()))
}

/// Adds "what we were doing" to any displayable error, like anyhow's `context`.
pub trait Context<T> {
    fn ctx(self, what: &str) -> BenchResult<T>;
    fn with_ctx(self, what: impl FnOnce() -> String) -> BenchResult<T>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> BenchResult<T> {
        self.map_err(|e| BenchError(format!("{what}: {e}")))
    }

    fn with_ctx(self, what: impl FnOnce() -> String) -> BenchResult<T> {
        self.map_err(|e| BenchError(format!("{}: {e}", what())))
    }
}

/// Formats a number with about three significant digits: tables stay narrow and a reader
/// is not invited to trust digits that the run-to-run noise does not support.
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else if a == 0.0 {
        "0".to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// Thousands get a `k`, millions an `M` (request and connection rates).
pub fn human_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", sig3(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", sig3(v / 1e3))
    } else {
        sig3(v)
    }
}

/// Parses a size like `4096`, `16k`, `64K`, `1m`, `64KiB` (binary multiples), the same
/// grammar as edgefwd's `--buffer-size`, so one value can be passed to both.
pub fn parse_size(s: &str) -> BenchResult<usize> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    let n: usize = match num.parse() {
        Ok(n) => n,
        Err(_) => {
            return fail(format!(
                "bad size {s:?}: expected e.g. 4096, 16k, 64KiB, 1m"
            ))
        }
    };
    let mult = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return fail(format!("bad size suffix in {s:?}: use k, m, KiB or MiB")),
    };
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => fail(format!("bad size {s:?}: must be > 0 and fit in memory")),
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` and as a file-name-safe stamp.
pub fn utc_now() -> (String, String) {
    let Utc {
        year: y,
        month: mo,
        day: d,
        hour: h,
        minute: mi,
        second: s,
    } = Utc::now();
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
        format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}"),
    )
}

/// Percentile (0..=100, to a thousandth) of an already sorted slice, nearest-rank; NaN when empty.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // ceil(p / 100 * n) in integers: in floating point 99.9 / 100 * 1000 is 999.0000000000001,
    // and its ceiling would be one rank too high.
    let milli_percent = (p.clamp(0.0, 100.0) * 1000.0).round() as u128;
    let rank = (milli_percent * sorted.len() as u128).div_ceil(100_000) as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    f64::from(sorted[idx])
}

/// Median of the finite values; NaN when there are none. Repeats are reduced with this.
pub fn median(values: &mut [f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
#[allow(dead_code, unused_imports)] // see the note in benches/compare.rs
mod tests {
    use super::*;

    #[test]
    fn test_median_ignores_failed_runs_and_averages_the_middle_pair() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [f64::NAN, 5.0, f64::INFINITY]), 5.0);
        assert!(median(&mut [f64::NAN]).is_nan());
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn test_percentile_is_nearest_rank() {
        let sorted: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 50.0), 500.0);
        assert_eq!(percentile(&sorted, 99.0), 990.0);
        assert_eq!(percentile(&sorted, 99.9), 999.0);
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&[7], 99.9), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
        // On 1..=n a value is its own rank, so the answer must be ceil(p * n / 100) exactly, also
        // where p * n / 100 is a whole number that floating point overshoots.
        for n in [1_000u32, 20_000, 999_983] {
            let values: Vec<u32> = (1..=n).collect();
            for milli in [50_000u64, 55_000, 99_000, 99_900, 99_990, 100_000] {
                let expect = (milli * u64::from(n)).div_ceil(100_000) as f64;
                let p = milli as f64 / 1000.0;
                assert_eq!(percentile(&values, p), expect, "p{p} of {n}");
            }
        }
    }

    #[test]
    fn test_sig3_keeps_three_significant_digits() {
        assert_eq!(sig3(1234.4), "1234");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(1.2345), "1.23");
        assert_eq!(sig3(0.12345), "0.123");
        assert_eq!(sig3(0.0), "0");
        assert_eq!(sig3(0.001234), "1.23e-3");
        assert_eq!(sig3(f64::NAN), "n/a");
        assert_eq!(human_count(71_234.0), "71.2k");
        assert_eq!(human_count(2_500_000.0), "2.50M");
    }

    #[test]
    fn test_parse_size_takes_edgefwds_grammar_and_names_bad_values() {
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert_eq!(parse_size("64k").ok(), Some(65_536));
        assert_eq!(parse_size("64KiB").ok(), Some(65_536));
        assert_eq!(parse_size("1m").ok(), Some(1 << 20));
        for bad in ["", "k", "12q", "0", "-1"] {
            let err = parse_size(bad).expect_err(bad).0;
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}

//! A /metrics scrape of the child: counters, deltas between two scrapes, histogram summaries.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::{self};
use std::time::Duration;

use crate::fwd::Fwd;
use crate::{Ctx, R};

/// One /metrics exposition: `name{labels}` -> value.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample(BTreeMap<String, u64>);

impl Sample {
    pub(crate) fn scrape(addr: SocketAddr) -> R<Sample> {
        Sample::scrape_within(addr, Duration::from_secs(5))
    }

    pub(crate) fn scrape_within(addr: SocketAddr, timeout: Duration) -> R<Sample> {
        let what = format!("scrape http://{addr}/metrics");
        let mut stream = TcpStream::connect_timeout(&addr, timeout).ctx(&what)?;
        stream.set_read_timeout(Some(timeout)).ctx(&what)?;
        stream.set_write_timeout(Some(timeout)).ctx(&what)?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: edgefwd\r\n\r\n")
            .ctx(&what)?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ctx(&what)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{what}: no HTTP header in the reply"))?;
        if !head.lines().next().is_some_and(|l| l.contains(" 200")) {
            return Err(format!("{what}: {}", head.lines().next().unwrap_or("")));
        }
        let mut values = BTreeMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            if let Some((name, value)) = line.rsplit_once(' ') {
                if let Ok(value) = value.parse::<u64>() {
                    values.insert(name.to_string(), value);
                }
            }
        }
        if values.is_empty() {
            return Err(format!("{what}: no samples in the reply"));
        }
        Ok(Sample(values))
    }

    /// `self - before`, per series (gauges come out as the later value minus the earlier, floored at 0).
    pub(crate) fn since(&self, before: &Sample) -> Sample {
        Sample(
            self.0
                .iter()
                .map(|(name, value)| {
                    let old = before.0.get(name).copied().unwrap_or(0);
                    (name.clone(), value.saturating_sub(old))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// A counter by its short name: `reads` is `edgefwd_reads_total`.
    pub(crate) fn c(&self, short: &str) -> u64 {
        self.get(&format!("edgefwd_{short}_total"))
    }

    pub(crate) fn close(&self, cause: &str) -> u64 {
        self.get(&format!("edgefwd_closes_total{{cause=\"{cause}\"}}"))
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.get("edgefwd_bytes_total{direction=\"c2u\"}")
            + self.get("edgefwd_bytes_total{direction=\"u2c\"}")
    }

    /// Mean observation of histogram `name` (0 when it saw none).
    pub(crate) fn mean(&self, name: &str) -> f64 {
        let count = self.get(&format!("{name}_count"));
        ratio(self.get(&format!("{name}_sum")), count)
    }

    /// `(upper bound, cumulative count)` of histogram `name`, in bound order (`+Inf` last).
    fn buckets(&self, name: &str) -> Vec<(String, u64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, String, u64)> = self
            .0
            .iter()
            .filter_map(|(key, value)| {
                let le = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, le.to_string(), *value))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets.into_iter().map(|(_, le, n)| (le, n)).collect()
    }

    /// The upper bound of the bucket holding the median observation, e.g. `"<=8"`.
    pub(crate) fn median_bucket(&self, name: &str) -> String {
        let count = self.get(&format!("{name}_count"));
        if count == 0 {
            return "-".into();
        }
        self.buckets(name)
            .into_iter()
            .find(|(_, cumulative)| cumulative * 2 >= count)
            .map_or_else(|| "-".into(), |(le, _)| format!("<={le}"))
    }

    /// Observations of histogram `name` at or below `le` (a bucket bound as printed, e.g. `"1"`).
    pub(crate) fn at_or_below(&self, name: &str, le: &str) -> u64 {
        self.get(&format!("{name}_bucket{{le=\"{le}\"}}"))
    }
}

pub(crate) fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

pub(crate) fn pct(num: u64, den: u64) -> String {
    format!("{:.1}%", 100.0 * ratio(num, den))
}

/// What a no-load scrape costs the reactor, measured by two back-to-back scrapes, so every table can
/// say how much of its deltas is the measurement itself.
pub(crate) fn scrape_overhead(fwd: &Fwd) -> R<(Sample, String)> {
    let first = fwd.scrape()?;
    thread::sleep(Duration::from_millis(50));
    let second = fwd.scrape()?;
    let d = second.since(&first);
    let note = format!(
        "one scrape costs the reactor about {} polls, {} events, {} spurious wakeups (a no-load scrape-to-scrape delta; included in the figures)",
        d.c("polls"),
        d.c("events"),
        d.c("spurious_wakeups")
    );
    Ok((second, note))
}

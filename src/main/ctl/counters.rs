//! The byte counters of a `--metrics` exposition that `ctl top` reads when given `--metrics ADDR`:
//! every byte forwarded, closed pairs' included, which the live pairs' own counts cannot give.
//!
//! Three families: `edgefwd_bytes_total{direction}` (the whole process), and where the server exports
//! them `edgefwd_route_bytes_total{route,direction}` and `edgefwd_upstream_bytes_total{route,upstream,
//! direction}`. A family the server does not export is simply absent, and `top` measures that part from
//! the live pairs instead. Pure: exposition text in, numbers out.

use std::collections::BTreeMap;
use std::time::Duration;

/// A sample's labels, (key, value) in their order.
type Labels = Vec<(String, String)>;

/// Bytes (c2u, u2c) forwarded so far.
pub(crate) type Ways = [u64; 2];

/// One scrape's byte counters.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Counters {
    pub(crate) total: Ways,
    /// By route name.
    pub(crate) routes: BTreeMap<String, Ways>,
    /// By (route name, upstream address).
    pub(crate) upstreams: BTreeMap<(String, String), Ways>,
}

/// What the counters grew by per second between two scrapes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Rates {
    pub(crate) total: [f64; 2],
    pub(crate) routes: BTreeMap<String, [f64; 2]>,
    pub(crate) upstreams: BTreeMap<(String, String), [f64; 2]>,
}

impl Rates {
    /// An upstream address's rates. The metrics name an endpoint as its upstream was written when that
    /// is its address (an IP literal, a Unix socket), else `name (address)`: both are tried.
    pub(crate) fn upstream(&self, route: &str, address: &str, name: &str) -> Option<[f64; 2]> {
        let by = |label: String| self.upstreams.get(&(route.to_string(), label)).copied();
        by(address.to_string()).or_else(|| by(format!("{name} ({address})")))
    }
}

impl Counters {
    /// The counters of `exposition`; `None` if it has no `edgefwd_bytes_total` (not edgefwd's).
    pub(crate) fn parse(exposition: &str) -> Option<Counters> {
        let mut counters = Counters::default();
        let mut seen = false;
        for line in exposition.lines().filter(|line| !line.starts_with('#')) {
            let Some((name, labels, value)) = sample(line) else {
                continue;
            };
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            };
            let way = match label("direction").as_deref() {
                Some("c2u") => 0,
                Some("u2c") => 1,
                _ => continue,
            };
            let ways = match name {
                "edgefwd_bytes_total" => {
                    seen = true;
                    &mut counters.total
                }
                "edgefwd_route_bytes_total" => {
                    let Some(route) = label("route") else {
                        continue;
                    };
                    counters.routes.entry(route).or_default()
                }
                "edgefwd_upstream_bytes_total" => {
                    let (Some(route), Some(upstream)) = (label("route"), label("upstream")) else {
                        continue;
                    };
                    counters.upstreams.entry((route, upstream)).or_default()
                }
                _ => continue,
            };
            ways[way] += value;
        }
        seen.then_some(counters)
    }

    /// The growth from `before` to these over `elapsed`, per second. A series absent from `before`
    /// (new since) is left out rather than counted whole: its count may span far more than `elapsed`.
    pub(crate) fn rates_since(&self, before: &Counters, elapsed: Duration) -> Rates {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let per_second = |is: &Ways, was: &Ways| {
            [0, 1].map(|way| is[way].saturating_sub(was[way]) as f64 / seconds)
        };
        Rates {
            total: per_second(&self.total, &before.total),
            routes: self
                .routes
                .iter()
                .filter_map(|(key, is)| {
                    Some((key.clone(), per_second(is, before.routes.get(key)?)))
                })
                .collect(),
            upstreams: self
                .upstreams
                .iter()
                .filter_map(|(key, is)| {
                    Some((key.clone(), per_second(is, before.upstreams.get(key)?)))
                })
                .collect(),
        }
    }
}

/// `name{key="value",...} number` -> its parts; a sample without labels has none. `None` for a line
/// that is not a sample with a whole, non-negative value.
fn sample(line: &str) -> Option<(&str, Labels, u64)> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, rest) = labels(&line[open + 1..])?;
            (&line[..open], labels, rest)
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    (value.is_finite() && value >= 0.0).then_some((name, labels, value as u64))
}

/// The labels up to the closing `}`, and the text after it. Values are unescaped (`\"`, `\\`, `\n`).
fn labels(mut text: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (at, '"') => break at,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        text = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP edgefwd_bytes_total bytes forwarded
# TYPE edgefwd_bytes_total counter
edgefwd_bytes_total{direction=\"c2u\"} 100
edgefwd_bytes_total{direction=\"u2c\"} 7
edgefwd_bytes_totalx{direction=\"c2u\"} 1000
edgefwd_route_bytes_total{route=\"web\",direction=\"c2u\"} 60
edgefwd_route_bytes_total{route=\"w\\\"e,b}\",direction=\"c2u\"} 40
edgefwd_upstream_bytes_total{route=\"web\",upstream=\"[::1]:9000\",direction=\"u2c\"} 7
edgefwd_pairs_open 3
";

    #[test]
    fn test_parse_the_byte_families() {
        let counters = Counters::parse(EXPOSITION).expect("counters");
        assert_eq!(counters.total, [100, 7]);
        assert_eq!(counters.routes.get("web"), Some(&[60, 0]));
        assert_eq!(
            counters.routes.get("w\"e,b}"),
            Some(&[40, 0]),
            "{counters:?}"
        );
        assert_eq!(
            counters.upstreams.get(&("web".into(), "[::1]:9000".into())),
            Some(&[0, 7])
        );
        assert_eq!(Counters::parse("edgefwd_pairs_open 3\n"), None);
    }

    /// Growth per second; a series new since the scrape before is left out.
    #[test]
    fn test_rates_since() {
        let before = Counters::parse(EXPOSITION).expect("before");
        let mut now = before.clone();
        now.total = [100 + 4096, 7 + 2048];
        now.routes.insert("web".into(), [60 + 4096, 0]);
        now.routes.insert("new".into(), [1 << 30, 0]);
        let rates = now.rates_since(&before, Duration::from_secs(2));
        assert_eq!(rates.total, [2048.0, 1024.0]);
        assert_eq!(rates.routes.get("web"), Some(&[2048.0, 0.0]));
        assert_eq!(rates.routes.get("new"), None);
        assert_eq!(rates.upstreams.len(), 1);
    }

    /// A host-name upstream's series is labelled `name (address)`; an address's, the address.
    #[test]
    fn test_upstream_rates_by_address_or_label() {
        let mut rates = Rates::default();
        let key = |label: &str| (String::from("web"), label.to_string());
        rates.upstreams.insert(key("[::1]:9000"), [1.0, 2.0]);
        rates
            .upstreams
            .insert(key("app:80 (10.0.0.1:80)"), [3.0, 4.0]);
        assert_eq!(
            rates.upstream("web", "[::1]:9000", "[::1]:9000"),
            Some([1.0, 2.0])
        );
        assert_eq!(
            rates.upstream("web", "10.0.0.1:80", "app:80"),
            Some([3.0, 4.0])
        );
        assert_eq!(rates.upstream("web", "10.0.0.2:80", "app:80"), None);
        assert_eq!(rates.upstream("db", "[::1]:9000", "[::1]:9000"), None);
    }
}

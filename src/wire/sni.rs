//! SNI routing's choice: which of the routes sharing a listen address takes a ClientHello, by its
//! server name (and ALPN). Pure: the config builds a [`Table`] per shared address (which is where a
//! conflict is found and refused), and a connection asks it with the [`Hello`] it read.
//!
//! The rules (docs/tls-sni.md has them as a table):
//! - names are compared lowercased (the reader lowercases the hello's; [`Pattern::parse`] the
//!   config's), and a pattern is a host name by the reader's own rule ([`tls_hello::host_name`]), or
//!   `*.` and one: a wildcard that matches exactly one more label (`*.example.com` takes
//!   `a.example.com`, not `example.com` nor `a.b.example.com`);
//! - an exact name wins over a wildcard; for one pattern, a route whose `alpn` lists a protocol the
//!   client offers wins over one without `alpn` (the client's first offered protocol that a route
//!   lists decides between such routes); a route with `alpn` never takes a hello offering none of it;
//! - a hello that matches nothing, has no `server_name`, or is ECH (its name is the public one, not
//!   the one the client means) goes to the route marked `default`, and without one to none;
//! - one pattern on two routes of an address is a conflict when neither lists `alpn` or both do and
//!   share a protocol; so are two defaults, and a pattern a route lists twice: [`Table::build`] names
//!   the routes.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::tls_hello::{self, Hello};

/// What a client whose hello no route takes is sent before the close: a TLS record (alert, version
/// 3.3, length 2) holding a fatal (2) `unrecognized_name` (112) alert, RFC 8446 section 6.2.
pub const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// One entry of a route's `sni` list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// A host name, lowercased.
    Exact(String),
    /// `*.` and a host name (lowercased, stored without the `*.`): one more label in front.
    Wildcard(String),
}

impl Pattern {
    /// A config's `sni` entry; the error says why it is none.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (name, wildcard) = match text.strip_prefix("*.") {
            Some(suffix) => (suffix, true),
            None => (text, false),
        };
        let Some(name) = tls_hello::host_name(name.as_bytes()) else {
            return Err(format!(
                "'{text}' is neither a host name nor *. and one (letters, digits, inner hyphens; no IP address, no trailing dot)"
            ));
        };
        Ok(if wildcard {
            Pattern::Wildcard(name)
        } else {
            Pattern::Exact(name)
        })
    }
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Pattern, String> {
        Pattern::parse(text)
    }
}

/// A config's `alpn` entry: a protocol name as a client sends it (RFC 7301: 1 to 255 bytes; the config
/// takes visible ASCII, as every registered name is).
pub fn parse_protocol(text: &str) -> Result<String, String> {
    let visible = text.bytes().all(|b| b.is_ascii_graphic());
    if (1..=255).contains(&text.len()) && visible {
        Ok(text.to_string())
    } else {
        Err(format!(
            "'{text}' is not an ALPN protocol name (1 to 255 visible ASCII bytes, e.g. \"h2\")"
        ))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// What one route declares for SNI routing (`sni`, `alpn`, `default`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<Pattern>,
    /// Protocols of which the client must offer one; empty = any (or none).
    pub alpn: Vec<String>,
    /// Takes the hellos no route's names match.
    pub default: bool,
}

impl Rule {
    /// The route takes part in SNI routing.
    pub fn is_set(&self) -> bool {
        !self.names.is_empty() || self.default
    }
}

/// How [`Table::choose`] found a hello's route: the `by` label of `edgefwd_sni_routed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An `sni` pattern of the route matched the server name.
    Name = 0,
    /// The route is the default: no name, ECH, or no pattern matched.
    Default = 1,
}

/// The routes sharing one listen address, indexed by pattern; `R` is what names a route (its index
/// in the caller's list).
#[derive(Debug, Clone)]
pub struct Table<R> {
    exact: HashMap<String, Vec<Entry<R>>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Vec<Entry<R>>>,
    default: Option<R>,
}

/// A route under one pattern.
#[derive(Debug, Clone)]
struct Entry<R> {
    alpn: Vec<String>,
    route: R,
}

impl<R: Copy> Table<R> {
    /// The table of `routes` (each with the name a conflict message gives it), or the first conflict.
    pub fn build<'a>(
        routes: impl IntoIterator<Item = (R, &'a str, &'a Rule)>,
    ) -> Result<Self, String> {
        let mut table = Table {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        };
        let mut default_name = None;
        let mut owners: Vec<(&Pattern, &[String], &str)> = Vec::new();
        for (route, name, rule) in routes {
            if rule.default {
                if let Some(first) = default_name {
                    return Err(format!(
                        "route '{first}' and route '{name}' are both marked default"
                    ));
                }
                default_name = Some(name);
                table.default = Some(route);
            }
            for (index, pattern) in rule.names.iter().enumerate() {
                if rule.names[..index].contains(pattern) {
                    return Err(format!("sni '{pattern}' is listed twice by route '{name}'"));
                }
                if let Some((_, _, first)) = owners
                    .iter()
                    .find(|(seen, alpn, _)| *seen == pattern && overlap(alpn, &rule.alpn))
                {
                    return Err(format!(
                        "sni '{pattern}' is declared by route '{first}' and route '{name}'{}",
                        if rule.alpn.is_empty() {
                            String::new()
                        } else {
                            " with a shared alpn".to_string()
                        }
                    ));
                }
                owners.push((pattern, &rule.alpn, name));
                let (map, key) = match pattern {
                    Pattern::Exact(name) => (&mut table.exact, name),
                    Pattern::Wildcard(suffix) => (&mut table.wildcard, suffix),
                };
                map.entry(key.clone()).or_default().push(Entry {
                    alpn: rule.alpn.clone(),
                    route,
                });
            }
        }
        Ok(table)
    }

    /// The route for `hello`, or `None` (then the client gets an `unrecognized_name` alert).
    pub fn pick(&self, hello: &Hello) -> Option<R> {
        self.choose(hello).map(|(route, _)| route)
    }

    /// [`Table::pick`], saying whether the route took the hello by its name or as the default.
    pub fn choose(&self, hello: &Hello) -> Option<(R, Via)> {
        let name = hello.server_name.as_deref().filter(|_| !hello.has_ech);
        name.and_then(|name| {
            self.exact
                .get(name)
                .and_then(|entries| by_alpn(entries, &hello.alpn))
                .or_else(|| {
                    let (_, parent) = name.split_once('.')?;
                    by_alpn(self.wildcard.get(parent)?, &hello.alpn)
                })
        })
        .map(|route| (route, Via::Name))
        .or(self.default.map(|route| (route, Via::Default)))
    }
}

/// Two routes of one pattern conflict when neither lists `alpn`, or both do and share a protocol (a
/// route without `alpn` beside routes with it takes the hellos they do not).
fn overlap(a: &[String], b: &[String]) -> bool {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => true,
        (false, false) => a.iter().any(|protocol| b.contains(protocol)),
        _ => false,
    }
}

/// Among the routes of one pattern: the one listing the client's first offered protocol that any
/// lists, else the one without `alpn`.
fn by_alpn<R: Copy>(entries: &[Entry<R>], offered: &[Vec<u8>]) -> Option<R> {
    offered
        .iter()
        .find_map(|protocol| {
            entries.iter().find(|entry| {
                entry
                    .alpn
                    .iter()
                    .any(|listed| listed.as_bytes() == protocol)
            })
        })
        .or_else(|| entries.iter().find(|entry| entry.alpn.is_empty()))
        .map(|entry| entry.route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(names: &[&str], alpn: &[&str], default: bool) -> Rule {
        Rule {
            names: names.iter().map(|n| Pattern::parse(n).expect(n)).collect(),
            alpn: alpn.iter().map(|p| p.to_string()).collect(),
            default,
        }
    }

    fn table(rules: &[(&str, Rule)]) -> Result<Table<usize>, String> {
        Table::build(
            rules
                .iter()
                .enumerate()
                .map(|(i, (name, rule))| (i, *name, rule)),
        )
    }

    fn hello(name: Option<&str>, alpn: &[&str], has_ech: bool) -> Hello {
        Hello {
            server_name: name.map(str::to_string),
            alpn: alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
            has_ech,
            len: 0,
        }
    }

    fn pick(table: &Table<usize>, name: &str) -> Option<usize> {
        table.pick(&hello(Some(name), &[], false))
    }

    #[test]
    fn test_pattern_parse() {
        assert_eq!(
            Pattern::parse("API.Example.com"),
            Ok(Pattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            Pattern::parse("*.Example.com"),
            Ok(Pattern::Wildcard("example.com".into()))
        );
        assert_eq!(
            Pattern::parse("*.example.com").map(|p| p.to_string()),
            Ok("*.example.com".into())
        );
        for bad in [
            "", "*", "*.", "a.*.com", "*a.com", "**.a.com", "a.com.", "10.0.0.1", "a_b.com", "::1",
        ] {
            let err = Pattern::parse(bad).expect_err(bad);
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn test_exact_before_wildcard_and_one_label() {
        let t = table(&[
            ("wild", rule(&["*.example.com"], &[], false)),
            ("api", rule(&["api.example.com"], &[], false)),
            ("fallback", rule(&[], &[], true)),
        ])
        .expect("valid");
        assert_eq!(pick(&t, "api.example.com"), Some(1));
        assert_eq!(pick(&t, "www.example.com"), Some(0));
        assert_eq!(pick(&t, "example.com"), Some(2));
        assert_eq!(pick(&t, "a.b.example.com"), Some(2));
        assert_eq!(pick(&t, "api.example.org"), Some(2));
        assert_eq!(t.pick(&hello(None, &[], false)), Some(2));
        // An ECH hello's name is the public one: default, even when it matches.
        assert_eq!(t.pick(&hello(Some("api.example.com"), &[], true)), Some(2));
        // `choose` says how: a default route that a name matches was chosen by the name.
        let named = |name| t.choose(&hello(Some(name), &[], false));
        assert_eq!(named("api.example.com"), Some((1, Via::Name)));
        assert_eq!(named("www.example.com"), Some((0, Via::Name)));
        assert_eq!(named("example.com"), Some((2, Via::Default)));
        let t = table(&[("both", rule(&["a.example"], &[], true))]).expect("valid");
        let choose = |name: Option<&str>| t.choose(&hello(name, &[], false));
        assert_eq!(choose(Some("a.example")), Some((0, Via::Name)));
        assert_eq!(choose(None), Some((0, Via::Default)));
    }

    #[test]
    fn test_no_default_is_none() {
        let t = table(&[("api", rule(&["api.example.com"], &[], false))]).expect("valid");
        assert_eq!(pick(&t, "api.example.com"), Some(0));
        assert_eq!(pick(&t, "www.example.com"), None);
        assert_eq!(t.pick(&hello(None, &[], false)), None);
    }

    #[test]
    fn test_alpn() {
        let t = table(&[
            ("web", rule(&["x.example"], &[], false)),
            ("acme", rule(&["x.example"], &["acme-tls/1"], false)),
            ("h2", rule(&["*.example"], &["h2"], false)),
            ("h1", rule(&["*.example"], &["http/1.1"], false)),
        ])
        .expect("valid");
        let with = |name: &str, alpn: &[&str]| t.pick(&hello(Some(name), alpn, false));
        assert_eq!(with("x.example", &["acme-tls/1"]), Some(1));
        assert_eq!(with("x.example", &["h2"]), Some(0));
        assert_eq!(with("x.example", &[]), Some(0));
        assert_eq!(with("y.example", &["http/1.1", "h2"]), Some(3));
        assert_eq!(with("y.example", &["h2", "http/1.1"]), Some(2));
        // A route with alpn never takes a hello offering none of it.
        assert_eq!(with("y.example", &["spdy/3"]), None);
        assert_eq!(with("y.example", &[]), None);
    }

    #[test]
    fn test_conflicts_name_both_routes() {
        let err = table(&[
            ("a", rule(&["api.example.com"], &[], false)),
            ("b", rule(&["API.example.com"], &[], false)),
        ])
        .expect_err("same name");
        assert_eq!(
            err,
            "sni 'api.example.com' is declared by route 'a' and route 'b'"
        );
        let err = table(&[
            ("a", rule(&[], &[], true)),
            ("b", rule(&["x.y"], &[], true)),
        ])
        .expect_err("two defaults");
        assert_eq!(err, "route 'a' and route 'b' are both marked default");
        let err = table(&[("a", rule(&["x.y", "X.y"], &[], false))]).expect_err("twice");
        assert_eq!(err, "sni 'x.y' is listed twice by route 'a'");
        let err = table(&[
            ("a", rule(&["*.y"], &["h2", "http/1.1"], false)),
            ("b", rule(&["*.y"], &["http/1.1"], false)),
        ])
        .expect_err("shared alpn");
        assert!(
            err.contains("'*.y'") && err.contains("'a'") && err.contains("'b'"),
            "{err}"
        );
        // A wildcard and an exact name do not conflict, nor two disjoint alpn lists.
        table(&[
            ("a", rule(&["*.y", "x.y"], &["h2"], false)),
            ("b", rule(&["*.y"], &["http/1.1"], false)),
            ("c", rule(&["*.y"], &[], false)),
        ])
        .expect("valid");
    }

    /// Property: on random routes and hellos over a small universe of names, a table is refused exactly
    /// when two routes conflict, and otherwise picks what the rules, read plainly over the flat list of
    /// routes, pick; a picked route always lists a pattern matching the name, or is the default.
    #[test]
    fn test_property_never_a_wrong_route() {
        let mut g = crate::fuzz::Gen::new(0x5eed_0019);
        let labels = ["a", "b", "c"];
        let protocols = ["h2", "http/1.1", "acme-tls/1"];
        let name = |g: &mut crate::fuzz::Gen| {
            let depth = 1 + g.below(3);
            (0..depth)
                .map(|_| labels[g.below(3)])
                .collect::<Vec<_>>()
                .join(".")
        };
        let (mut built, mut picked) = (0, 0);
        for _ in 0..5_000 {
            let rules: Vec<(String, Rule)> = (0..1 + g.below(4))
                .map(|i| {
                    let names = (0..g.below(3))
                        .map(|_| {
                            let text = name(&mut g);
                            if g.below(3) == 0 {
                                Pattern::Wildcard(text)
                            } else {
                                Pattern::Exact(text)
                            }
                        })
                        .collect();
                    let alpn = protocols
                        .iter()
                        .filter(|_| g.below(4) == 0)
                        .map(|p| p.to_string())
                        .collect();
                    let rule = Rule {
                        names,
                        alpn,
                        default: g.below(5) == 0,
                    };
                    (format!("r{i}"), rule)
                })
                .collect();
            let repeated = rules.iter().any(|(_, rule)| {
                (0..rule.names.len()).any(|i| rule.names[..i].contains(&rule.names[i]))
            });
            let conflict = repeated
                || rules.iter().enumerate().any(|(i, (_, a))| {
                    rules[i + 1..].iter().any(|(_, b)| {
                        (a.default && b.default)
                            || a.names
                                .iter()
                                .any(|p| b.names.contains(p) && overlap(&a.alpn, &b.alpn))
                    })
                });
            let table = Table::build(
                rules
                    .iter()
                    .enumerate()
                    .map(|(i, (n, r))| (i, n.as_str(), r)),
            );
            assert_eq!(table.is_err(), conflict, "{rules:?}");
            let Ok(table) = table else { continue };
            built += 1;
            for _ in 0..20 {
                let offered: Vec<&str> = protocols
                    .iter()
                    .copied()
                    .filter(|_| g.below(3) == 0)
                    .collect();
                let mut offered = offered;
                if g.below(2) == 0 {
                    offered.reverse();
                }
                let server_name = (g.below(8) != 0).then(|| name(&mut g));
                let hello = hello(server_name.as_deref(), &offered, g.below(10) == 0);
                let expected = reference(&rules, &hello);
                assert_eq!(table.pick(&hello), expected, "{rules:?} {hello:?}");
                if let Some(route) = expected {
                    picked += 1;
                    let rule = &rules[route].1;
                    let listed = hello.server_name.as_deref().is_some_and(|n| {
                        rule.names.iter().any(|p| matches(p, n)) && !hello.has_ech
                    });
                    assert!(listed || rule.default, "{rules:?} {hello:?}");
                }
            }
        }
        assert!(
            built > 1_000 && picked > 10_000,
            "{built} tables, {picked} picks"
        );
    }

    fn matches(pattern: &Pattern, name: &str) -> bool {
        match pattern {
            Pattern::Exact(exact) => exact == name,
            Pattern::Wildcard(suffix) => name
                .strip_suffix(suffix.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }

    /// The rules of the module doc, over the flat list: exact names, then wildcards; within a tier, the
    /// client's protocols in its order, then a route without `alpn`; then the default.
    fn reference(rules: &[(String, Rule)], hello: &Hello) -> Option<usize> {
        let default = rules.iter().position(|(_, rule)| rule.default);
        let Some(name) = hello.server_name.as_deref().filter(|_| !hello.has_ech) else {
            return default;
        };
        for wildcard in [false, true] {
            let tier: Vec<usize> =
                (0..rules.len())
                    .filter(|&i| {
                        rules[i].1.names.iter().any(|p| {
                            matches!(p, Pattern::Wildcard(_)) == wildcard && matches(p, name)
                        })
                    })
                    .collect();
            for protocol in &hello.alpn {
                let listing = tier.iter().find(|&&i| {
                    rules[i]
                        .1
                        .alpn
                        .iter()
                        .any(|a| a.as_bytes() == protocol.as_slice())
                });
                if let Some(&i) = listing {
                    return Some(i);
                }
            }
            if let Some(&i) = tier.iter().find(|&&i| rules[i].1.alpn.is_empty()) {
                return Some(i);
            }
        }
        default
    }
}
